//! The metanode's limits, timeouts and defaults in one place, each with its reason, and
//! compile-time checks of how they relate (to each other and to the client's). The
//! defaults serve both `Settings::new` and the `metanode serve` flags.

use std::time::Duration;

use client::limits::META_ATTEMPT_TIMEOUT;
use proto::APPEND_BYTES_MAX;

/// Raft heartbeat interval (`--heartbeat-ms`): a follower learns of commits this often.
pub const HEARTBEAT_MS_DEFAULT: u64 = 50;
/// Raft election timeout range (`--election-ms`): a follower that stops hearing from the
/// leader waits the maximum (the leader's lease) plus a random pick in the range.
pub const ELECTION_MS_DEFAULT: (u64, u64) = (300, 600);
/// A datanode silent this long is marked down (`--node-grace-ms`); several heartbeats
/// (1 s apart by default) may be lost first.
pub const NODE_GRACE_DEFAULT: Duration = Duration::from_secs(10);
/// Build a snapshot, and purge the log before it, every this many entries
/// (`--snapshot-logs`).
pub const SNAPSHOT_LOGS_DEFAULT: u64 = 10_000;
/// Fewest entries between snapshots whatever is asked: a snapshot per few entries would
/// cost more than the log it saves.
pub const SNAPSHOT_LOGS_MIN: u64 = 10;
/// How long the opener of a stream waits for each replica's fence.
pub const FENCE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Longest a write or a linearizable read waits for a majority before answering
/// `NoQuorum` (so clients try elsewhere instead of hanging on a cut-off member).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest pause of the health loop (it runs every quarter of the grace otherwise).
pub const HEALTH_PERIOD_MIN: Duration = Duration::from_millis(50);
/// Connecting to a peer member: members are on the LAN, and a dead one must not hold up
/// replication to the others.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Idle connections to peers are kept this long for reuse.
pub const PEER_POOL_IDLE: Duration = Duration::from_secs(30);
/// A connection to the metanode that sends no request head for this long (new, between
/// requests, or half sent) is closed. Longer than the peers' and clients' pools keep
/// idle connections (`PEER_POOL_IDLE`; `MetaClient`'s), so they close theirs first.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Most extents one `POST /v1/extents/delete` names: one Raft entry carries them all,
/// and the entry is sent to every member and kept in the log until the next snapshot.
pub const DELETE_EXTENTS_MAX: usize = 10_000;
/// Free bytes a device must have, beyond what is reserved for extents placed on it
/// since its last heartbeat, to take a new extent: room for the first batch of the
/// largest append (`APPEND_BYTES_MAX`, 8 MiB) behind its header io unit, in whole
/// clusters of the portable store's default size (1 MiB, `CLUSTER_BYTES_DEFAULT`; see
/// `datanode/src/blobstore/portable/layout.rs`). With less, the first append to the
/// new extent may be refused with `NoSpace`, and the writer would allocate again.
pub const DEVICE_ROOM_BYTES_MIN: u64 = APPEND_BYTES_MAX as u64 + (1 << 20);
/// What an extent placed on a device since its last heartbeat is charged until the
/// next heartbeat reports the device's usage: its first cluster (a blob takes clusters
/// as it fills, which heartbeats then show). Charging a whole `DEVICE_ROOM_BYTES_MIN`
/// would let a small device take only a few extents per heartbeat, and writers that
/// rotate fast would see `NoSpace` on a device that has room.
pub const PLACED_EXTENT_RESERVE_BYTES: u64 = 1 << 20;

const fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// Heartbeats come well inside an election timeout, and the range is a range.
const _: () = assert!(HEARTBEAT_MS_DEFAULT < ELECTION_MS_DEFAULT.0 && ELECTION_MS_DEFAULT.0 < ELECTION_MS_DEFAULT.1);
// A client's single attempt outlasts the slowest answer a member gives: a commit that
// times out, after an opener's fence that timed out.
const _: () = assert!(ms(COMMIT_TIMEOUT) + ms(FENCE_TIMEOUT_DEFAULT) < ms(META_ATTEMPT_TIMEOUT));
// A peer that does not connect is given up before an election would be lost over it.
const _: () = assert!(ms(PEER_CONNECT_TIMEOUT) < ELECTION_MS_DEFAULT.1 as u128);
// The health loop looks several times within one grace period.
const _: () = assert!(4 * ms(HEALTH_PERIOD_MIN) <= ms(NODE_GRACE_DEFAULT));
const _: () = assert!(SNAPSHOT_LOGS_MIN <= SNAPSHOT_LOGS_DEFAULT);
// A device with the minimum room takes several extents between two heartbeats.
const _: () = assert!(4 * PLACED_EXTENT_RESERVE_BYTES <= DEVICE_ROOM_BYTES_MIN);

/// A datanode down this long has its copies repaired elsewhere: long enough to wait out
/// a restart or a short outage (Ceph and GFS wait minutes too), short enough that a
/// second loss rarely comes first.
pub const REPAIR_DELAY_DEFAULT: Duration = Duration::from_secs(600);
/// Repairs in flight at once, cluster-wide.
pub const REPAIR_CONCURRENCY_DEFAULT: usize = 4;
/// Repairs writing onto one datanode at once by default, so that one new node is not
/// flooded (each datanode also paces its rebuilds' bytes: `--rebuild-rate`).
pub const REPAIRS_PER_NODE_DEFAULT: usize = 2;
/// How often the leader looks for copies to repair.
pub const REPAIR_PERIOD: Duration = Duration::from_millis(500);
/// ... and sooner once a repair ends, but not within this of the last round (each round
/// scans every extent; many small repairs ending at once share one).
pub const REPAIR_WAKE_GAP: Duration = Duration::from_millis(20);
/// A datanode rebuilding one copy (at most an extent, 256 MiB by default) answers
/// within this, or the repair is dropped and tried again.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// Live extents whose stray copies (replaced by repair) one repair round deletes at most.
pub const STRAYS_PER_ROUND: usize = 16;
/// How often the leader lists every datanode's copies for ones nothing names (a
/// rebuild an earlier leader started and the next one abandoned can still finish after
/// its copy was deleted as a stray); a copy unnamed in two sweeps in a row is deleted.
pub const UNNAMED_SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// Rebalance while the datanodes' used fractions spread more than this ((max - min) /
/// max): 10 %, as the issue asks of the end state.
pub const REBALANCE_THRESHOLD_DEFAULT: f64 = 0.10;
/// ... and at least this much must move to even them out: less is not worth the I/O.
pub const REBALANCE_MIN_BYTES_DEFAULT: u64 = 1 << 30;
/// Rebalancing moves in flight hold at most this share of the placed bytes (at least
/// one move), so that clients keep the disks.
pub const REBALANCE_SHARE: f64 = 0.05;
/// An extent whose repair failed (or found no datanode with room) is tried again after
/// this, not every round.
pub const REPAIR_RETRY_BACKOFF: Duration = Duration::from_secs(5);
/// Bytes of snapshot per `InstallSnapshot` request (openraft's default is 3 MiB, which
/// as JSON passed the HTTP body limit once the state passed about 20k extents).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 512 << 10;
/// Time a member has to receive and install one snapshot chunk (about 2 MiB as JSON).
/// openraft's default, 200 ms, is less than a loaded or slow member needs: every chunk
/// then timed out, the leader started the snapshot over, and a new member never
/// caught up (seen on a 2-core machine with a debug build).
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// Body limit of the Raft routes: a snapshot chunk as JSON, or a batch of log entries.
pub const RAFT_BODY_BYTES_MAX: usize = 16 << 20;
/// Body limit of every other route (axum's default): the API's requests are small.
pub const API_BODY_BYTES_MAX: usize = 2 << 20;
/// Request bodies the metanode holds at once before their signatures are checked
/// (a body is read whole to check its hash): enough for a few snapshot chunks and
/// log batches of the members, bounded against whoever reaches the port.
pub const UNVERIFIED_BODIES_BYTES_MAX: usize = 64 << 20;
/// A request body must arrive within this.
pub const UNVERIFIED_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const _: () = assert!(UNVERIFIED_BODIES_BYTES_MAX >= 2 * RAFT_BODY_BYTES_MAX, "a member's largest RPC fits twice");
const _: () = assert!(IDLE_TIMEOUT_DEFAULT.as_secs() > PEER_POOL_IDLE.as_secs());
