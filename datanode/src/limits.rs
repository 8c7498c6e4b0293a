//! The datanode's limits and size defaults in one place, each with its reason, and
//! compile-time assertions of how they relate. The wire limits (`APPEND_BYTES_MAX`,
//! `READ_BYTES_MAX`, `FRAME_BODY_BYTES_MAX`) are `proto`'s; the on-disk formats keep
//! their own sizes (`record::RECORD_CHUNK_BYTES`, a portable slot's `BLOB_CLUSTERS_MAX`).

use std::time::Duration;

use proto::{APPEND_BYTES_MAX, FRAME_BODY_BYTES_MAX};

use crate::align::IO_UNIT_BYTES;

// Extents and devices.

/// Default cap on one extent's logical size (`--extent-bytes-max`).
pub const EXTENT_BYTES_MAX_DEFAULT: u64 = 256 << 20;
/// Cluster size of devices formatted without `--cluster-bytes`: a blob grows by whole
/// clusters, so this is the unit of contiguity on the device.
pub const CLUSTER_BYTES_DEFAULT: u64 = 1 << 20;
/// Most clusters one resize adds beyond what is needed now: blobs grow by doubling up to
/// this step, so a growing extent stays mostly contiguous while small extents stay small.
pub const GROW_CLUSTERS_MAX: u64 = 8;
/// How long opening a device waits for its lock, held by a process that is going away
/// (a process killed with SIGKILL tears its io_uring down asynchronously).
pub const DEVICE_LOCK_WAIT: Duration = Duration::from_millis(if cfg!(test) { 200 } else { 10_000 });

// Group commit (`extent::device`).

/// Most payload bytes one round takes before it writes.
pub const ROUND_BYTES_MAX: u64 = 64 << 20;
/// Most payload bytes of one extent in one batch; the rest waits for the next round, so
/// that an extent's batches are written strictly one after another.
pub const BATCH_BYTES_MAX: u64 = 16 << 20;
/// Written rounds waiting for a flush before the writer waits too.
pub const ROUNDS_UNFLUSHED_MAX: usize = 4;
/// Bytes of idle batch buffers kept for reuse at most (one full round's worth and a
/// half): fresh large allocations cost a page fault per page.
pub const POOL_BYTES_MAX: usize = 96 << 20;
/// Bytes of idle read buffers kept for reuse at most (eight 4 MiB reads).
pub const READ_POOL_BYTES_MAX: usize = 32 << 20;
/// io_uring depth: the most writes in flight at once.
pub const URING_ENTRIES: u32 = 128;
/// Size of the read window recovery scans a blob's batch chain with.
pub const SCAN_WINDOW_BYTES: u64 = 4 << 20;

// Connections (`server`).

/// Requests one connection may have in flight before the server stops reading from it.
pub const CONNECTION_IN_FLIGHT_MAX: usize = 1024;
/// Bytes one connection may have in flight before the server stops reading from it:
/// request bodies read and not yet answered, and reads' answers not yet written to the
/// peer (a peer that asks and never reads holds at most this).
pub const CONNECTION_IN_FLIGHT_BYTES_MAX: usize = 64 << 20;
/// The same over all connections together: what the datanode's buffers of requests
/// and answers can take at most.
pub const SERVER_IN_FLIGHT_BYTES_MAX: usize = 1 << 30;
/// Connections open at once past their handshake; more are closed.
pub const CONNECTIONS_MAX: usize = 4096;
/// Connections still in their handshake (`proto::auth::HANDSHAKE_TIMEOUT` at most), from
/// one peer address and in all: whoever reaches the port without a secret can hold no
/// more than these.
pub const UNPROVEN_PER_ADDRESS_MAX: usize = 64;
pub const UNPROVEN_MAX: usize = 1024;
/// A peer that takes no bytes of an answer for this long has stopped reading: its
/// connection is closed, which frees what it held.
pub const ANSWER_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed accept (out of file descriptors), instead of spinning.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Granularity of the byte budget.
pub const BUDGET_UNIT_BYTES: usize = 4096;
/// A connection's read buffer: small frames arrive many to a syscall.
pub const READ_BUFFER_BYTES: usize = 64 << 10;
/// Appends at least this large are received into aligned buffers and written without a
/// copy; smaller ones are packed together into one image per batch.
pub const ALIGNED_PAYLOAD_BYTES_MIN: usize = 64 << 10;

// How they relate.

// A batch fits a round, and the largest append fits a batch: no append is ever split or
// written alone past the batch cap.
const _: () = assert!(BATCH_BYTES_MAX <= ROUND_BYTES_MAX);
const _: () = assert!(APPEND_BYTES_MAX as u64 <= BATCH_BYTES_MAX);
// An extent holds at least the largest append.
const _: () = assert!(APPEND_BYTES_MAX as u64 <= EXTENT_BYTES_MAX_DEFAULT);
// The buffer pool keeps a whole round's buffers, so steady rounds allocate nothing.
const _: () = assert!(POOL_BYTES_MAX as u64 >= ROUND_BYTES_MAX);
// Clusters are whole io units (the portable store and SPDK both require it).
const _: () = assert!(CLUSTER_BYTES_DEFAULT.is_power_of_two() && CLUSTER_BYTES_DEFAULT >= IO_UNIT_BYTES);
// Any single frame fits a connection's byte budget, so waiting for budget can never
// deadlock.
// The same with a read's answer, which is held beside its request.
const _: () = assert!(CONNECTION_IN_FLIGHT_BYTES_MAX >= FRAME_BODY_BYTES_MAX as usize + BUDGET_UNIT_BYTES);
const _: () = assert!(CONNECTION_IN_FLIGHT_BYTES_MAX >= (proto::READ_BYTES_MAX as usize + 2 * BUDGET_UNIT_BYTES) * 2);
const _: () = assert!(SERVER_IN_FLIGHT_BYTES_MAX >= CONNECTION_IN_FLIGHT_BYTES_MAX);
// A payload received aligned is at least a read buffer long, so it is read past the
// buffer rather than copied through it.
const _: () = assert!(ALIGNED_PAYLOAD_BYTES_MIN >= READ_BUFFER_BYTES);

/// A rebuild (repair) gives up on a source that does not connect within this.
pub const REBUILD_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// ... or answer one read (of at most `REBUILD_SPAN_BYTES`) within this.
pub const REBUILD_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a rebuild reads from each source and appends at once: whole records up to
/// this (one record may be longer), so memory per rebuild stays bounded.
pub const REBUILD_SPAN_BYTES: u64 = 4 << 20;
/// Spans a rebuild has appended and not yet seen durable while it reads the next:
/// reading overlaps writing, and group commit syncs several spans at once. Memory per
/// rebuild is at most this many spans plus the one being read.
pub const REBUILD_SPANS_IN_FLIGHT: usize = 4;
/// Spans a rebuild reads from its sources at once (requests pipelined on each
/// connection), so that a source's disk and the network are kept busy.
pub const REBUILD_READS_AHEAD: usize = 3;

/// Scrub's default read rate: a 4 TB device is re-read in about three days, at a
/// small share of a disk's bandwidth.
pub const SCRUB_RATE_DEFAULT: u64 = 16 << 20;
/// Scrub's default time between pass starts (a pass slower than this starts the next
/// right away): every sealed copy re-read about weekly, as Ceph's deep scrub does.
pub const SCRUB_INTERVAL_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Bytes scrub reads at once.
pub const SCRUB_SPAN_BYTES: u64 = 4 << 20;
/// Rebuilds (repair) write at most this many bytes per second on one datanode by
/// default, so clients keep most of the disk and CPU while a lost node is re-protected;
/// a 10 TB node's copies spread over 100 others still rebuild within hours.
pub const REBUILD_RATE_DEFAULT: u64 = 32 << 20;
/// ... and, by default, this share of it while clients append to the datanode
/// (`--rebuild-rate-busy`).
pub const REBUILD_BUSY_SHARE: u64 = 4;
