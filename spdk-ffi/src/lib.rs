//! spdk-ffi: SPDK's env, threads, bdevs and BlobStore for the datanode (issue 7).
//!
//! With the cargo feature `spdk`, `build.rs` generates bindings (`sys`) with bindgen from
//! an installed SPDK v25.09 (`SPDK_DIR` or `pkg-config`) and links it statically. On top
//! of them:
//! - [`Reactor`]: SPDK's environment and one SPDK thread. Every SPDK call runs on it,
//!   sent as a message (`spdk_thread_send_msg`); its completion callback answers
//!   through a channel. The caller waiting for the answer polls the SPDK thread itself
//!   while no other thread does (for up to 300 µs: its message, submission and
//!   completion all run on its own thread), then blocks on the channel, and a dedicated
//!   reactor thread polls whenever no caller does (parked while nobody waits). Never
//!   two threads at once.
//! - [`Blobstore`]: a BlobStore on a bdev made from a JSON bdev configuration (an NVMe
//!   controller for users; AIO, io_uring or malloc bdevs for tests): create blobs with
//!   xattrs, resize, set xattrs and sync metadata, write and read at io-unit offsets,
//!   flush the bdev, delete, and enumerate at load.
//! - [`dma`]: SPDK's DMA-able memory, so that buffers received into it go to an NVMe
//!   device without a copy.
//!
//! Without the feature this crate is empty and nothing needs SPDK.

#[cfg(feature = "spdk")]
#[allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, clippy::all)]
pub mod sys {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

#[cfg(feature = "spdk")]
mod blob;
#[cfg(feature = "spdk")]
pub mod dma;
#[cfg(feature = "spdk")]
mod reactor;

#[cfg(feature = "spdk")]
pub use blob::{BlobInfo, Blobstore, BlobstoreOptions};
#[cfg(feature = "spdk")]
pub use reactor::{EnvOptions, Reactor};

/// What an SPDK call refused, with the call and its negated errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpdkError {
    #[error("{call}: {}", std::io::Error::from_raw_os_error(*errno))]
    Call { call: &'static str, errno: i32 },
    #[error("{0}")]
    Other(String),
}

impl SpdkError {
    /// From a negative errno as SPDK returns them (0 is success).
    pub fn check(call: &'static str, rc: i32) -> Result<(), SpdkError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(SpdkError::Call { call, errno: rc.abs() })
        }
    }
}
