//! Strata's bottom crate: ids, limits, the typed extent errors and the binary frame
//! protocol spoken between clients and datanodes. Everything above depends on this
//! crate; it depends on nothing of Strata's.

pub mod auth;
pub mod config;
pub mod error;
pub mod frame;
mod id;
pub mod local;
pub mod meta;
pub mod msg;
pub mod tls;

pub use error::ExtentError;
pub use frame::{FrameError, FrameHeader};
pub use id::{Epoch, ExtentId, NodeId, StreamId};
pub use msg::{DeviceStat, ExtentStat, NodeStat, Opcode, Rebuild, RecordStat, Request, Response};

/// Largest payload of one append, in bytes.
pub const APPEND_BYTES_MAX: u32 = 8 << 20;
/// Largest range one read may ask for, in bytes.
pub const READ_BYTES_MAX: u32 = 8 << 20;
/// Largest frame body accepted on the wire: an append's payload plus its fixed fields.
pub const FRAME_BODY_BYTES_MAX: u32 = APPEND_BYTES_MAX + 4096;

/// CRC32C (Castagnoli) as used for every append and every stored record.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

#[cfg(test)]
mod tests;

/// Ends the process with `code` at once, after flushing stdout and stderr, without
/// running exit handlers or C++ static destructors: for an error exit of a process
/// whose RocksDB (the metanode's, in process) may still have background threads, which
/// those destructors would pull the ground from under (a SIGSEGV or SIGABRT instead of
/// the exit status; seen with a standalone refusing its --device-size). Nothing it
/// holds needs a handler to be durable: what was acknowledged is already synced.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}
