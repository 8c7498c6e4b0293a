//! Blob xattrs that carry an extent's identity and state, so that start-up finds every
//! extent on its blob alone: its id, the epoch it was created at, its writer
//! incarnation, the epoch of its last fence and, once sealed, its sealed length (all
//! little-endian).

use proto::{Epoch, ExtentId};

pub const EXTENT: &str = "extent";
pub const EPOCH: &str = "epoch";
pub const INCARNATION: &str = "incarnation";
pub const SEALED: &str = "sealed";
/// The highest epoch a fence raised the extent to: after a restart, appends of older
/// writers stay refused.
pub const FENCE: &str = "fence";
/// When (ms since the Unix epoch) a sealed copy was last read whole and found intact by
/// scrub, or sealed: scrub visits copies in this order, so a restart resumes its pass.
pub const SCRUBBED: &str = "scrubbed";

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The incarnation of a new extent's first writer; each restart of an open extent
/// takes a higher one.
pub const INCARNATION_FIRST: u32 = 1;

pub fn initial(extent: ExtentId, epoch: Epoch) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (EXTENT, extent.0.to_le_bytes().to_vec()),
        (EPOCH, epoch.0.to_le_bytes().to_vec()),
        (INCARNATION, INCARNATION_FIRST.to_le_bytes().to_vec()),
    ]
}

pub fn u64_of(v: Option<&Vec<u8>>) -> Option<u64> {
    Some(u64::from_le_bytes(v?.as_slice().try_into().ok()?))
}

pub fn u32_of(v: Option<&Vec<u8>>) -> Option<u32> {
    Some(u32::from_le_bytes(v?.as_slice().try_into().ok()?))
}
