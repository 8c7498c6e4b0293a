//! The gateway's limits, each with its reason, and compile-time checks of how they
//! relate. Sizes end in `_BYTES`, counts in `_MAX`/`_MIN`, durations are `Duration`s.

use std::ops::RangeInclusive;
use std::time::Duration;

// ---- What S3 allows (clients and SDKs are written against these).

/// Largest object a single PUT takes, and largest part (S3: 5 GiB).
pub const PUT_BYTES_MAX: u64 = 5 << 30;
/// Smallest part but the last of a multipart upload (S3: 5 MiB).
pub const PART_BYTES_MIN: u64 = 5 << 20;
/// Parts of one multipart upload, numbered 1 to this (S3: 10,000).
pub const PARTS_MAX: i32 = 10_000;
/// Longest key, in bytes (S3: 1,024; also the width of MySQL's key column).
pub const KEY_BYTES_MAX: usize = 1024;
/// Bucket name lengths (S3: 3 to 63).
pub const BUCKET_NAME_BYTES: RangeInclusive<usize> = 3..=63;
/// User metadata of one object, names and values together (S3: 2 KB).
pub const USER_METADATA_BYTES_MAX: usize = 2 << 10;
/// Keys one DeleteObjects request may name (S3: 1,000).
pub const DELETE_KEYS_MAX: usize = 1000;
/// Entries of one listing page: keys and common prefixes, parts, or uploads (S3: 1,000).
pub const LIST_ENTRIES_MAX: i32 = 1000;

// ---- The gateway's own.

/// Tenant names (also the owner id and display name S3 answers with).
pub const TENANT_NAME_BYTES: RangeInclusive<usize> = 1..=128;
/// Access key ids.
pub const ACCESS_KEY_BYTES: RangeInclusive<usize> = 3..=128;
/// Secret keys.
pub const SECRET_KEY_BYTES: RangeInclusive<usize> = 8..=128;

/// Largest header block a request may send (431 beyond): S3 allows 2 KB of user
/// metadata, and SigV4 headers and long keys need more.
pub const HEADER_BYTES_MAX: usize = 64 << 10;
/// Largest file a form POST (POST Object, for browsers) may upload. s3s reads the file
/// into memory before the form's policy and signature are checked, so this bounds what
/// an anonymous POST can make a gateway hold (AWS allows 5 GB: larger uploads here use
/// PUT or multipart, which stream).
pub const POST_OBJECT_BYTES_MAX: u64 = 32 << 20;
/// A form POST's other fields together (the policy, its signature, metadata).
pub const FORM_FIELDS_BYTES_MAX: usize = 1 << 20;
/// Connections open at once; more are closed as they arrive.
pub const CONNECTIONS_MAX: usize = 16_384;
/// Default for `--idle-timeout`: a connection that sends no request head for this long
/// (new, or kept alive between requests), or leaves the body it is sending idle this
/// long, is closed (what slowloris relies on).
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (out of file descriptors), instead of spinning.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// How long an access key's tenant, once looked up, is used for the requests it signs.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long a looked-up access key's secret checks signatures before it is looked up
/// again: a key deleted (or its secret changed) goes on working this long on gateways
/// that used it, as a bucket's cached policy does (`s3/policy.rs`).
pub const KEY_SECRET_TTL: Duration = Duration::from_secs(1);
/// Bytes of an object's body per append (one slice): large enough that the LogStream's
/// per-append costs vanish, small enough to keep `PUT_WINDOW` of them in memory.
pub const OBJECT_CHUNK_BYTES: usize = 4 << 20;
/// Objects written whole with at most this many bytes are kept in their catalog row
/// (`catalog::Layout::Inline`), unless `--inline-max` says otherwise: one durable
/// commit, no append to the datanodes.
pub const INLINE_MAX_DEFAULT: u64 = 4096;
/// The most `--inline-max` may be: such a body is held whole in memory before its row
/// is written, and GC's transition scan reads a page of rows with their bytes.
pub const INLINE_MAX_LIMIT: u64 = 64 << 10;
/// Chunks of one PUT on the wire at once: memory per PUT is at most this many chunks
/// (plus the one being filled).
pub const PUT_WINDOW: usize = 4;
/// How long a gateway waits for one of its streams to open at start before serving
/// without it (it keeps trying in the background, every `STREAM_REOPEN_PERIOD`).
pub const STREAM_OPEN_WAIT: Duration = Duration::from_secs(15);
pub const STREAM_REOPEN_PERIOD: Duration = Duration::from_secs(2);
/// Attempts of one chunk (a writer that stopped is reopened between attempts).
pub const CHUNK_ATTEMPTS: usize = 3;
/// How often a gateway publishes its low-water mark for GC (only when it moved): GC
/// collects nothing at or above the last one published, so a late one only delays GC.
pub const LOW_WATER_PERIOD: Duration = Duration::from_secs(1);
/// Slices read ahead of the one being sent, per GET.
pub const GET_AHEAD: usize = 3;
/// Rows of a listing's first query with a delimiter: a batch that runs into a common
/// prefix is cut there, so batches start small...
pub const LIST_BATCH_MIN: usize = 8;
/// ...and grow by this factor while they yield keys, up to a page.
pub const LIST_BATCH_GROWTH: usize = 4;
/// Attempts of a conditional SQL transaction that lost a race (unique key, deadlock,
/// serialization): losing them all means another conditional writer won.
pub const TX_ATTEMPTS: usize = 5;
/// Attempts of an unconditional one: a client's plain PUT or DELETE must not fail
/// because others wrote the same keys at once (InnoDB picks deadlock victims among
/// writers of neighbouring keys, several times in a row under contention).
pub const TX_ATTEMPTS_UNCONDITIONAL: usize = 12;
/// The pause before a transaction's retry is drawn from 1 ms to this, doubled at each
/// attempt up to `TX_BACKOFF_MAX_MS`: enough for the winner of a lock to commit.
pub const TX_BACKOFF_MS: u64 = 5;
pub const TX_BACKOFF_MAX_MS: u64 = 200;
/// SQL connections per gateway: SQLite has one writer at a time (they queue in the
/// gateway), so a few connections serve its readers; a server database takes more.
pub const SQLITE_CONNECTIONS_MAX: u32 = 8;
pub const SQL_CONNECTIONS_MAX: u32 = 32;
/// How long a request waits for a SQL connection before it fails.
pub const SQL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `ogw standalone` waits for its datanodes to register.
pub const DATANODES_UP_TIMEOUT: Duration = Duration::from_secs(60);

// ---- How they relate.

const _: () = assert!(OBJECT_CHUNK_BYTES <= proto::APPEND_BYTES_MAX as usize, "an object chunk is one append");
const _: () = assert!(PART_BYTES_MIN <= PUT_BYTES_MAX, "a part may be as small as the smallest part");
const _: () = assert!(
    USER_METADATA_BYTES_MAX + KEY_BYTES_MAX < HEADER_BYTES_MAX,
    "the largest metadata and key fit a request's header block"
);
const _: () = assert!(
    *TENANT_NAME_BYTES.end() <= 255 && *ACCESS_KEY_BYTES.end() <= 255 && *BUCKET_NAME_BYTES.end() <= 255,
    "names fit MySQL's VARCHAR(255) id columns"
);
const _: () = assert!(LIST_BATCH_MIN <= LIST_ENTRIES_MAX as usize, "a listing batch starts within a page");
const _: () = assert!(LIST_BATCH_GROWTH > 1, "listing batches grow");
const _: () = assert!(
    PUT_WINDOW >= 1
        && GET_AHEAD >= 1
        && CHUNK_ATTEMPTS >= 1
        && TX_ATTEMPTS >= 1
        && TX_ATTEMPTS_UNCONDITIONAL >= TX_ATTEMPTS,
    "every pipeline and retry loop makes progress"
);
