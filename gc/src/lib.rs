//! gc: gives the space of deleted, overwritten and failed writes back.
//!
//! An extent is garbage when no row of the catalog names any of its bytes. GC finds the
//! candidates in the metanode (sealed extents of the gateways' streams, below each
//! gateway's low-water mark), **dooms** those the catalog finds unnamed (a transaction
//! that also makes any later write naming them fail: `ogw/src/catalog/refs.rs`), and
//! after a grace period deletes them: from the metanode (through Raft, leaving a
//! tombstone per copy) and then from every datanode holding a copy. Stale multipart
//! uploads are aborted. Every step is idempotent and its state is in the catalog or the
//! metanode, so a GC killed at any point loses nothing and the next pass resumes.
//!
//! The catalog is reached through the [`Catalog`] trait (the gateway's SQL catalog
//! implements it; `ogw` runs this crate in `ogw standalone` and as the `gc` binary), so
//! this crate does not depend on the gateway.

mod engine;
pub mod limits;
pub mod metrics;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use client::Slice;
use proto::meta::{MetaError, Policy, StreamId};
use proto::ExtentId;
use serde::{Deserialize, Serialize};

pub use engine::{Gc, PassReport};

/// What GC needs of the catalog. Every method is one transaction (or a read).
pub trait Catalog: Send + Sync + 'static {
    /// Takes or renews the GC lease for `holder` until `ttl` from now; false when
    /// another holder's lease has not run out.
    fn try_lease(&self, holder: &str, ttl: Duration) -> impl Future<Output = Result<bool, GcError>> + Send;
    /// Each writer's (gateway's) low-water mark: every write it has in flight names
    /// only extents at or above it.
    fn writers(&self) -> impl Future<Output = Result<HashMap<String, ExtentId>, GcError>> + Send;
    /// The streams writers own, with their owner.
    fn streams(&self) -> impl Future<Output = Result<Vec<(StreamId, String)>, GcError>> + Send;
    /// Extents that some row names (and that are not doomed), with the bytes named in
    /// each: not candidates for deletion, and for compaction when sparse.
    fn live(&self) -> impl Future<Output = Result<HashMap<ExtentId, u64>, GcError>> + Send;
    /// Every row that names bytes of `extent`, with all the slices it names.
    fn naming(&self, extent: ExtentId) -> impl Future<Output = Result<Vec<Named>, GcError>> + Send;
    /// Makes the row `owner` name `new` instead of `old`, if it still names exactly
    /// `old` (a compare-and-swap: a concurrent overwrite wins); whether it did.
    fn switch(&self, owner: &str, old: &[Slice], new: &[Slice]) -> impl Future<Output = Result<bool, GcError>> + Send;
    /// Publishes a writer's low-water mark (GC's own, for its compaction writes).
    fn set_low_water(&self, writer: &str, low: ExtentId) -> impl Future<Output = Result<(), GcError>> + Send;
    /// Records that `owner` owns stream `id`.
    fn add_stream(&self, id: StreamId, owner: &str) -> impl Future<Output = Result<(), GcError>> + Send;
    /// Dooms `extent` if no row names it; whether it is doomed now (by this call or an
    /// earlier one).
    fn doom(&self, extent: ExtentId, now_ms: i64) -> impl Future<Output = Result<bool, GcError>> + Send;
    /// Doomed extents not yet deleted, with when they were doomed.
    fn doomed(&self) -> impl Future<Output = Result<Vec<(ExtentId, i64)>, GcError>> + Send;
    /// Records that `extents` are deleted from the metanode.
    fn mark_deleted(&self, extents: &[ExtentId], now_ms: i64) -> impl Future<Output = Result<(), GcError>> + Send;
    /// Multipart uploads created before `before_ms`.
    fn stale_uploads(&self, before_ms: i64) -> impl Future<Output = Result<Vec<String>, GcError>> + Send;
    /// Aborts an upload (its parts' bytes become garbage); false if it is gone already.
    fn abort_upload(&self, id: &str) -> impl Future<Output = Result<bool, GcError>> + Send;
    /// Every rule that moves old objects to another policy (`ogw bucket-transition`;
    /// lifecycle Transition rules).
    fn transitions(&self) -> impl Future<Output = Result<Vec<Transition>, GcError>> + Send;
    /// Objects `rule` says to move: in its bucket, under its prefix, with keys after
    /// `after` (from the prefix's start when None), last modified before `before_ms`, and
    /// not stored with the rule's policy; at most `limit` rows are looked at. Returns them
    /// and the key to go on after next time (None when the scan reached the end).
    fn due(
        &self,
        rule: &Transition,
        after: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Due>, Option<String>), GcError>> + Send;
    /// `switch` for an object moved by `rule`: the row also records the rule's policy
    /// and storage class. Whether it did (false: the object changed meanwhile).
    fn transit(
        &self,
        owner: &str,
        old: &[Slice],
        new: &[Slice],
        rule: &Transition,
    ) -> impl Future<Output = Result<bool, GcError>> + Send;
    /// One pass of the buckets' lifecycle rules at `now_ms`, a day lasting `day_ms`.
    fn lifecycle(&self, now_ms: i64, day_ms: i64) -> impl Future<Output = Result<Lifecycled, GcError>> + Send;
    fn load_status(&self) -> impl Future<Output = Result<Option<Status>, GcError>> + Send;
    fn save_status(&self, s: &Status) -> impl Future<Output = Result<(), GcError>> + Send;
}

/// What a lifecycle pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycled {
    /// Current versions expired (deleted, or hidden by a delete marker when versioned).
    pub expired: u64,
    /// Noncurrent versions (and noncurrent delete markers) deleted.
    pub noncurrent_deleted: u64,
    /// Delete markers removed once they were their key's only version.
    pub markers_removed: u64,
    pub uploads_aborted: u64,
    /// Versions a rule would delete that Object Lock keeps.
    pub locked: u64,
}

/// A row of the catalog that names slices (an object or a part), by its owner name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub owner: String,
    pub slices: Vec<Slice>,
}

/// "Objects of `bucket` under `prefix` move to `policy` once `after` old": the bucket
/// setting "erasure-code objects older than N days" and lifecycle Transition rules. The
/// bytes are rewritten by GC (copy, then a compare-and-swap of the row), never
/// converted in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub bucket: String,
    pub prefix: String,
    pub after: Duration,
    pub policy: Policy,
    /// The S3 storage class the moved objects report (`STANDARD_IA`).
    pub class: String,
}

/// An object a transition rule says to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Its row (`o:RID`).
    pub owner: String,
    pub key: String,
    pub size: u64,
    pub slices: Vec<Slice>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GcError {
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("metanode: {0}")]
    Meta(#[from] MetaError),
    #[error("stream: {0}")]
    Stream(#[from] client::StreamError),
}

/// The writer name GC's own streams (compaction output) are recorded under.
pub const GC_WRITER: &str = "gc";

/// How GC runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This process's name in the lease (host and pid, say).
    pub holder: String,
    /// Time between passes.
    pub interval: Duration,
    /// Time between dooming an extent and deleting it.
    pub grace: Duration,
    /// Multipart uploads older than this are aborted.
    pub upload_age: Duration,
    /// Sealed extents whose named bytes are below this fraction of their size have
    /// them rewritten elsewhere (0 never compacts; 1 compacts any extent with a dead
    /// byte).
    pub compact_below: f64,
    /// How long a lifecycle day lasts: a day, unless shortened to watch rules work.
    pub lifecycle_day: Duration,
}

impl Config {
    /// The defaults of a cluster's GC service.
    pub fn cluster(holder: String) -> Config {
        Config {
            holder,
            interval: limits::INTERVAL_CLUSTER,
            grace: limits::GRACE_CLUSTER,
            upload_age: limits::UPLOAD_AGE_DEFAULT,
            compact_below: limits::COMPACT_BELOW_DEFAULT,
            lifecycle_day: limits::LIFECYCLE_DAY,
        }
    }

    /// The defaults inside `ogw standalone`.
    pub fn standalone() -> Config {
        Config {
            holder: format!("standalone-{}", std::process::id()),
            interval: limits::INTERVAL_STANDALONE,
            grace: limits::GRACE_STANDALONE,
            upload_age: limits::UPLOAD_AGE_DEFAULT,
            compact_below: limits::COMPACT_BELOW_DEFAULT,
            lifecycle_day: limits::LIFECYCLE_DAY,
        }
    }

    pub fn lease(&self) -> Duration {
        self.interval * limits::LEASE_PASSES
    }
}

/// What GC did and has left, saved by every pass (`gc status` prints it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// Who ran the last pass.
    pub holder: String,
    /// When the last pass ended (ms since the epoch).
    pub last_pass_ms: i64,
    pub passes: u64,
    pub extents_doomed_total: u64,
    pub extents_deleted_total: u64,
    pub copies_deleted_total: u64,
    /// Device bytes freed by the copies deleted.
    pub bytes_reclaimed_total: u64,
    pub uploads_aborted_total: u64,
    /// Versions lifecycle rules deleted (current ones expired, noncurrent ones, lone
    /// delete markers).
    pub lifecycle_deleted_total: u64,
    /// Sparse extents whose named bytes were rewritten elsewhere.
    pub extents_compacted_total: u64,
    /// Bytes those rewrites copied.
    pub bytes_compacted_total: u64,
    /// Objects moved to another policy by a transition rule, and their bytes.
    pub objects_transitioned_total: u64,
    pub bytes_transitioned_total: u64,
    /// Time passes spent compacting, and moving objects by transition rules (the
    /// copying rates are the bytes over these).
    pub compaction_ms_total: u64,
    pub transition_ms_total: u64,
    /// Doomed extents waiting for their grace period to end.
    pub extents_pending: u64,
    /// Device bytes the doomed extents hold (all copies).
    pub bytes_pending: u64,
    /// When the oldest doomed extent was doomed.
    pub oldest_pending_ms: Option<i64>,
    /// Copies of deleted extents still on a datanode (down or unreachable).
    pub copies_pending: u64,
    /// The last pass's error, if it failed.
    pub last_error: Option<String>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A fraction as operators write it: a percentage (`50%`, `100%`) or a number from 0
/// to 1 (`0.5`).
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let bad = || format!("bad fraction {s:?}: write a percentage (50%) or a number from 0 to 1");
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => t.parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(bad());
    }
    Ok(v)
}

/// A duration as operators write it: a number and a unit, `ms`, `s`, `m`, `h` or `d`
/// (`90s`, `5m`, `1h`, `7d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("bad duration {s:?}: write a number and a unit (ms, s, m, h, d), e.g. 90s or 1h");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_unit_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        for bad in ["", "s", "10", "1.5h", "-1s", "10 years", "99999999999999999999d", "1w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fractions_parse_as_percentages_or_numbers() {
        assert_eq!(parse_fraction("50%"), Ok(0.5));
        assert_eq!(parse_fraction("100%"), Ok(1.0));
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert_eq!(parse_fraction("0"), Ok(0.0));
        for bad in ["", "%", "101%", "1.5", "-0.1", "half", "NaN"] {
            assert!(parse_fraction(bad).is_err(), "{bad:?} accepted");
        }
    }
}
