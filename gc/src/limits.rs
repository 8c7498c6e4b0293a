//! GC's defaults and limits, each with its reason.

use std::time::Duration;

/// A cluster's grace between dooming an extent and deleting it: a read looked up its
/// slices before the object was deleted may still be reading them (a slow client
/// streaming a large GET); an hour covers any read a gateway serves.
pub const GRACE_CLUSTER: Duration = Duration::from_secs(3600);
/// `ogw standalone`'s grace: one process, whose GETs of a few GiB finish well within a
/// minute, and a user who deleted data to make room expects it back within minutes.
pub const GRACE_STANDALONE: Duration = Duration::from_secs(60);
/// Time between two passes in a cluster.
pub const INTERVAL_CLUSTER: Duration = Duration::from_secs(60);
/// Time between two passes in `ogw standalone`: with its grace, space comes back within
/// about two minutes of a delete (the issue asks for five).
pub const INTERVAL_STANDALONE: Duration = Duration::from_secs(15);
/// Multipart uploads older than this are aborted (S3 has no default; a week is what
/// MinIO and most lifecycle rules use).
pub const UPLOAD_AGE_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long one GC process holds the lease without renewing it: several passes, so a
/// live holder renews in time, short enough that a killed one is replaced soon.
pub const LEASE_PASSES: u32 = 3;
/// How long a lifecycle day lasts (shortened only to watch rules work in tests).
pub const LIFECYCLE_DAY: Duration = Duration::from_secs(24 * 3600);
/// One datanode delete (connect and answer) gives up after this; the copy is deleted on
/// a later pass.
pub const DATANODE_TIMEOUT: Duration = Duration::from_secs(3);
/// Sealed extents with less than this fraction of their bytes still named are
/// compacted: at most 2x space for live data in sparse extents, and each compaction
/// frees at least as much as it writes.
pub const COMPACT_BELOW_DEFAULT: f64 = 0.5;
/// Extents compacted in one pass at most, so a pass (which holds no lock but the lease)
/// ends in bounded time and deletions are not held up behind a long rewrite.
pub const COMPACTIONS_PER_PASS: usize = 16;
/// An extent whose compaction failed is tried again after this many passes (at least
/// `COMPACT_RETRY_FIRST_MIN`), then twice as long after each further failure, up to
/// `COMPACT_RETRY_MAX`: soon enough that one caught by an outage (its copies or GC's
/// own stream unreachable for a while) is compacted after it, while an extent that
/// cannot be read takes a pass's compaction slot ever more rarely.
pub const COMPACT_RETRY_FIRST_PASSES: u32 = 2;
pub const COMPACT_RETRY_FIRST_MIN: Duration = Duration::from_secs(1);
pub const COMPACT_RETRY_MAX: Duration = Duration::from_secs(3600);
/// Bytes transition rules rewrite in one pass at most (more wait for the next pass):
/// a pass ends in bounded time, and the rewrite takes a bounded share of the devices.
pub const TRANSITION_BYTES_PER_PASS: u64 = 1 << 30;
/// Object rows one transition scan looks at, per rule and pass.
pub const TRANSITION_SCAN_ROWS: usize = 1000;
/// A pass that copies (compaction, transitions) saves its counters so far at most this
/// often, so `gc status` shows it move.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Extents given to the metanode in one delete command.
pub const DELETE_BATCH_MAX: usize = 256;
/// Datanode deletes in flight at once.
pub const DELETES_IN_FLIGHT: usize = 8;

const _: () = assert!(GRACE_STANDALONE.as_secs() + 2 * INTERVAL_STANDALONE.as_secs() < 300);
const _: () = assert!(LEASE_PASSES >= 2);
