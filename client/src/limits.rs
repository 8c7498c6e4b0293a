//! The client's limits and defaults in one place, each with its reason, and the ways
//! they must relate, checked when the crate compiles. Wire limits (`APPEND_BYTES_MAX`,
//! `READ_BYTES_MAX`) are `proto`'s; the datanode's own limits are the datanode's.

use std::time::Duration;

use proto::{APPEND_BYTES_MAX, READ_BYTES_MAX};

// --- A stream's writer ---

/// Appends sent but not yet answered, per stream, at most: enough to keep every replica's
/// device busy with group commits while the answers to earlier ones travel back.
pub const WRITER_IN_FLIGHT_MAX: usize = 64;
/// Bytes of appends sent but not yet answered (payloads and parity), per stream, at
/// most: what a writer holds in memory to send again after a failure.
pub const WRITER_IN_FLIGHT_BYTES_MAX: usize = 64 << 20;

// --- `StreamConfig::default()` ---

/// A writer rotates to a new extent before an append would take one past this size.
pub const EXTENT_BYTES_MAX_DEFAULT: u64 = 256 << 20;
/// A replica that has not answered an append (or a read) within this is treated as failed.
pub const REPLICA_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// A datanode that did not answer a read is tried last by replica reads for this long
/// (then it gets its turn again: it may be back).
pub const SUSPECT_FOR: Duration = Duration::from_secs(10);
/// How long one append keeps sealing, allocating and retrying before giving up.
pub const APPEND_DEADLINE_DEFAULT: Duration = Duration::from_secs(30);
/// An EC read waits this long for its data shards before it also reads the parity shards.
pub const EC_HEDGE_DEFAULT: Duration = Duration::from_millis(250);
/// Connecting to a datanode gives up after this (the node is then treated as failed, and
/// its address asked for again).
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// After an allocation fails (no placement, or a replica could not create the extent),
/// the writer waits this long before it asks again.
pub const ALLOCATE_PAUSE_DEFAULT: Duration = Duration::from_millis(100);
/// Sealing an extent on its replicas is best effort (the metanode's seal is what counts),
/// so each replica gets this long, not a whole `replica_timeout`.
pub const SEAL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// A writer seals its open extent after this long without appends
/// (`StreamConfig::idle_seal`): the tail extent of a quiet writer holds bytes that may
/// be dead (deleted objects), and GC collects only sealed extents. Long enough that a
/// busy writer's pauses do not cut extents short.
pub const IDLE_SEAL_DEFAULT: Duration = Duration::from_secs(30);
/// Extents a writer allocates after a datanode refused an append or a create for lack
/// of space, before it fails the waiting appends with `NoSpace`: the metanode's free
/// space is a heartbeat old, so one new extent may still land on a device that just
/// filled; allocating on and on is the loop that made a full cluster grow the metanode.
pub const NOSPACE_ALLOCATIONS_MAX: u32 = 2;

// --- Reads ---

/// Reads of one replicated extent start at a replica chosen per this many bytes of offset,
/// so that readers of different parts of an extent spread over its copies.
pub const READ_SPREAD_BYTES: u64 = 4096;

// --- Connections ---

/// Read buffer of one datanode connection: many small responses per system call.
pub const CONN_READ_BUFFER_BYTES: usize = 64 << 10;

// --- The metanode client ---

/// Default time a metanode call keeps retrying (leader changes, unreachable members)
/// before it gives up with `Unavailable`.
pub const META_DEADLINE_DEFAULT: Duration = Duration::from_secs(15);
/// Longest one attempt waits for a member's answer; longer than the metanode's own
/// commit timeout (5 s) plus an opener's fence timeout (3 s).
pub const META_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(9);
/// Connecting to a metanode member: members are on the LAN, and another member is tried.
pub const META_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Idle pooled connections to metanodes are closed after this (below the metanode's
/// 60 s idle timeout, so that the client closes first).
pub const META_POOL_IDLE: Duration = Duration::from_secs(30);
/// `status_of` asks one member for its own view, without retrying.
pub const META_STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before the first retry; it doubles up to `META_BACKOFF_MAX`.
pub const META_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Short: during a failover the new leader is found within a few RTTs of its election.
pub const META_BACKOFF_MAX: Duration = Duration::from_millis(50);

// --- Erasure coding ---

/// Idle encoders (and decoders) a `Simd` codec keeps for reuse.
pub const CODERS_POOLED_MAX: usize = 8;

const fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// A writer's window holds at least one largest append, so any append can be sent.
const _: () = assert!(APPEND_BYTES_MAX as usize <= WRITER_IN_FLIGHT_BYTES_MAX);
// An append never spans extents: the largest one fits an empty extent.
const _: () = assert!(APPEND_BYTES_MAX as u64 <= EXTENT_BYTES_MAX_DEFAULT);
// A whole slice (and so any shard of one) is read back with one read request.
const _: () = assert!(APPEND_BYTES_MAX <= READ_BYTES_MAX);
// A hedge that waited as long as a failure takes would hedge nothing.
const _: () = assert!(ms(EC_HEDGE_DEFAULT) < ms(REPLICA_TIMEOUT_DEFAULT));
// Best-effort steps cost less than the replica failure that usually causes them.
const _: () = assert!(ms(SEAL_TIMEOUT_DEFAULT) <= ms(REPLICA_TIMEOUT_DEFAULT));
const _: () = assert!(ms(CONNECT_TIMEOUT_DEFAULT) <= ms(REPLICA_TIMEOUT_DEFAULT));
// The deadline counts from a replica's failure; it leaves room for at least one more
// extent: a best-effort seal, a new connection, the create on the new replicas, a pause.
const _: () = assert!(
    ms(SEAL_TIMEOUT_DEFAULT) + ms(CONNECT_TIMEOUT_DEFAULT) + ms(REPLICA_TIMEOUT_DEFAULT) + ms(ALLOCATE_PAUSE_DEFAULT)
        < ms(APPEND_DEADLINE_DEFAULT)
);
// One metanode attempt fits a default deadline, and retries back off upwards.
const _: () = assert!(ms(META_ATTEMPT_TIMEOUT) <= ms(META_DEADLINE_DEFAULT));
const _: () = assert!(ms(META_BACKOFF_MIN) <= ms(META_BACKOFF_MAX));
const _: () = assert!(ms(META_CONNECT_TIMEOUT) < ms(META_ATTEMPT_TIMEOUT));
