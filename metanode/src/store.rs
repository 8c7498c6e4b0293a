//! The Raft log and the state machine, both in one RocksDB (separate column families).
//!
//! - `logs`: log index (big-endian u64) -> entry. Appends, truncations and purges are
//!   synced before openraft is told they happened.
//! - `store`: the vote (synced), the committed log id, the last purged log id and the
//!   current snapshot.
//! - `sm`: the state machine, one key per datanode, stream, extent and tombstone (a
//!   deleted extent whose copies are not all confirmed gone), one per extent in a
//!   stream's list (`x` + stream + extent, empty: the stream's record is stored with
//!   an empty list, so that an allocation writes a few bytes however long its stream
//!   is; records from before are moved to this shape at open), plus the
//!   counters, the applied log id and the membership. Each `apply` writes the keys it
//!   changed and the applied log id in one batch, so the applied id never runs ahead of
//!   or behind the state. These writes are not synced: they are ordered behind the
//!   synced log in RocksDB's one WAL, and whatever a crash loses of them is applied
//!   again from the log, which is purged only up to a synced snapshot.
//!
//! openraft's `StorageError` is large (clippy's `result_large_err`); it is the trait's
//! error type, so it is allowed here rather than boxed.
//!
//! Reads go to an in-memory copy of the state ([`Shared`]), loaded at open and
//! updated by every apply.

#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership, Vote,
};
use parking_lot::RwLock;
use proto::meta::MemberId;
use proto::ExtentId;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::state::{Counters, Key, Reply, State};
use crate::TypeConfig;

type SErr = StorageError<MemberId>;

const CF_LOGS: &str = "logs";
const CF_STORE: &str = "store";
const CF_SM: &str = "sm";

const K_VOTE: &[u8] = b"vote";
const K_COMMITTED: &[u8] = b"committed";
const K_PURGED: &[u8] = b"last_purged";
const K_SNAPSHOT: &[u8] = b"snapshot";
const K_APPLIED: &[u8] = b"~applied";
const K_MEMBERSHIP: &[u8] = b"~membership";
const K_COUNTERS: &[u8] = b"c";
const K_FLAGS: &[u8] = b"f";

pub fn open_db(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(4);
    let cfs = [CF_LOGS, CF_STORE, CF_SM].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("in-memory encoding cannot fail")
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, AnyError> {
    postcard::from_bytes(b).map_err(|e| AnyError::new(&e))
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

type SIo = openraft::StorageIOError<MemberId>;
type Sig = Option<openraft::storage::SnapshotSignature<MemberId>>;

fn read_logs(e: impl Into<AnyError>) -> SErr {
    SIo::read_logs(e).into()
}
fn write_logs(e: impl Into<AnyError>) -> SErr {
    SIo::write_logs(e).into()
}
fn read_vote(e: impl Into<AnyError>) -> SErr {
    SIo::read_vote(e).into()
}
fn write_vote(e: impl Into<AnyError>) -> SErr {
    SIo::write_vote(e).into()
}
fn write_state_machine(e: impl Into<AnyError>) -> SErr {
    SIo::write_state_machine(e).into()
}
fn read_snapshot(sig: Sig, e: impl Into<AnyError>) -> SErr {
    SIo::read_snapshot(sig, e).into()
}
fn write_snapshot(sig: Sig, e: impl Into<AnyError>) -> SErr {
    SIo::write_snapshot(sig, e).into()
}

fn io<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

// ---------------------------------------------------------------------------------
// Raft log

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> LogStore {
        LogStore { db }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn get_store<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, AnyError> {
        match self.db.get_cf(self.cf(CF_STORE), key).map_err(io)? {
            Some(b) => Ok(Some(dec(&b)?)),
            None => Ok(None),
        }
    }

    fn put_store<T: Serialize>(&self, key: &[u8], v: &T, sync: bool) -> Result<(), rocksdb::Error> {
        let w = if sync { synced() } else { WriteOptions::default() };
        self.db.put_cf_opt(self.cf(CF_STORE), key, enc(v), &w)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let it = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::From(&start.to_be_bytes(), Direction::Forward));
        for kv in it {
            let (k, v) = kv.map_err(|e| read_logs(io(e)))?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().expect("8-byte log keys"));
            if !range.contains(&idx) {
                break;
            }
            out.push(dec(&v).map_err(read_logs)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let purged: Option<LogId<MemberId>> = self.get_store(K_PURGED).map_err(read_logs)?;
        let last = match self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End).next() {
            Some(kv) => {
                let (_, v) = kv.map_err(|e| read_logs(io(e)))?;
                let e: Entry<TypeConfig> = dec(&v).map_err(read_logs)?;
                Some(e.log_id)
            }
            None => purged,
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), SErr> {
        self.put_store(K_VOTE, vote, true).map_err(|e| write_vote(io(e)))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, SErr> {
        self.get_store(K_VOTE).map_err(read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<MemberId>>) -> Result<(), SErr> {
        self.put_store(K_COMMITTED, &committed, false).map_err(|e| write_logs(io(e)))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<MemberId>>, SErr> {
        Ok(self.get_store::<Option<LogId<MemberId>>>(K_COMMITTED).map_err(read_logs)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOGS);
        for e in entries {
            batch.put_cf(cf, e.log_id.index.to_be_bytes(), enc(&e));
        }
        let r = self.db.write_opt(batch, &synced()).map_err(std::io::Error::other);
        let failed = r.as_ref().err().map(|e| write_logs(io(std::io::Error::other(e.to_string()))));
        callback.log_io_completed(r);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId<MemberId>) -> Result<(), SErr> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        self.db.write_opt(batch, &synced()).map_err(|e| write_logs(io(e)))
    }

    async fn purge(&mut self, log_id: LogId<MemberId>) -> Result<(), SErr> {
        // Record the purge point first: a crash between the two leaves extra entries,
        // never a log that starts after its recorded start.
        self.put_store(K_PURGED, &log_id, true).map_err(|e| write_logs(io(e)))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes());
        self.db.write_opt(batch, &WriteOptions::default()).map_err(|e| write_logs(io(e)))
    }
}

// ---------------------------------------------------------------------------------
// State machine

/// The last applied log id and the membership it carries.
pub type Applied = (Option<LogId<MemberId>>, StoredMembership<MemberId, BasicNode>);

/// The applied state, shared with the API handlers for reads.
pub struct Shared {
    pub state: RwLock<State>,
    pub applied: RwLock<Applied>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBlob {
    state: State,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<MemberId, BasicNode>,
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    pub shared: Arc<Shared>,
}

/// A stream's record as stored: `StreamInfo` with its extent list left empty (each
/// extent is a key of its own). The same fields in the same order, so it decodes as a
/// `StreamInfo` (a test checks).
#[derive(Serialize)]
struct StreamRecord<'a> {
    id: proto::meta::StreamId,
    policy: proto::meta::Policy,
    epoch: proto::Epoch,
    writer: &'a Option<String>,
    extents: &'a [ExtentId],
    tail: Option<ExtentId>,
}

impl<'a> StreamRecord<'a> {
    fn of(s: &'a proto::meta::StreamInfo) -> StreamRecord<'a> {
        StreamRecord { id: s.id, policy: s.policy, epoch: s.epoch, writer: &s.writer, extents: &[], tail: s.tail }
    }
}

fn sm_key(k: Key) -> Vec<u8> {
    let (tag, id) = match k {
        Key::StreamExtent(s, e) => {
            let mut v = Vec::with_capacity(17);
            v.push(b'x');
            v.extend_from_slice(&s.0.to_be_bytes());
            v.extend_from_slice(&e.0.to_be_bytes());
            return v;
        }
        Key::Node(id) => (b'n', id.0),
        Key::Stream(id) => (b's', id.0),
        Key::Extent(id) => (b'e', id.0),
        Key::Tombstone(id) => (b't', id.0),
        Key::Repairs(id) => (b'r', id.0),
        Key::Created(token) => (b'c', token),
        Key::Counters => return K_COUNTERS.to_vec(),
        Key::Flags => return K_FLAGS.to_vec(),
    };
    let mut v = Vec::with_capacity(9);
    v.push(tag);
    v.extend_from_slice(&id.to_be_bytes());
    v
}

impl StateMachine {
    /// Loads the state machine column family into memory.
    pub fn open(db: Arc<DB>) -> Result<StateMachine, AnyError> {
        let mut state = State::default();
        let mut listed: Vec<(proto::meta::StreamId, ExtentId)> = Vec::new();
        let mut applied = None;
        let mut membership = StoredMembership::default();
        let cf = db.cf_handle(CF_SM).expect("column family created at open");
        for kv in db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = kv.map_err(io)?;
            match k.as_ref() {
                K_APPLIED => applied = dec(&v)?,
                K_MEMBERSHIP => membership = dec(&v)?,
                K_COUNTERS => state.counters = dec::<Counters>(&v)?,
                K_FLAGS => state.flags = dec(&v)?,
                [b'n', ..] => {
                    let n: proto::meta::NodeInfo = dec(&v)?;
                    state.nodes.insert(n.id, n);
                }
                [b's', ..] => {
                    let s: proto::meta::StreamInfo = dec(&v)?;
                    state.streams.insert(s.id, s);
                }
                [b'e', ..] => {
                    let e: proto::meta::ExtentInfo = dec(&v)?;
                    state.extents.insert(e.id, e);
                }
                [b't', ..] => {
                    let t: proto::meta::Tombstone = dec(&v)?;
                    state.tombstones.insert(t.extent, t);
                }
                [b'c', token @ ..] if token.len() == 8 => {
                    state.created.insert(u64::from_be_bytes(token.try_into().expect("8 bytes")), dec(&v)?);
                }
                [b'r', id @ ..] if id.len() == 8 => {
                    let id = ExtentId(u64::from_be_bytes(id.try_into().expect("8 bytes")));
                    state.repairs.insert(id, dec(&v)?);
                }
                [b'x', ids @ ..] if ids.len() == 16 => {
                    let s = u64::from_be_bytes(ids[..8].try_into().expect("8 bytes"));
                    let e = u64::from_be_bytes(ids[8..].try_into().expect("8 bytes"));
                    listed.push((proto::meta::StreamId(s), ExtentId(e)));
                }
                other => return Err(AnyError::error(format!("unknown state machine key {other:?}"))),
            }
        }
        // Records stored with their whole list (before the list had keys of its own)
        // move to the new shape in one batch.
        let mut batch = WriteBatch::default();
        let cf_sm = db.cf_handle(CF_SM).expect("column family created at open");
        let mut moved = 0;
        for s in state.streams.values().filter(|s| !s.extents.is_empty()) {
            for &e in &s.extents {
                batch.put_cf(cf_sm, sm_key(Key::StreamExtent(s.id, e)), []);
            }
            batch.put_cf(cf_sm, sm_key(Key::Stream(s.id)), enc(&StreamRecord::of(s)));
            moved += 1;
        }
        if moved > 0 {
            db.write(batch).map_err(io)?;
            tracing::info!("stored the extent lists of {moved} streams as keys of their own");
        }
        // Keys come in (stream, extent) order: each list in ascending extent order.
        for (s, e) in listed {
            match state.streams.get_mut(&s) {
                Some(st) if st.extents.last().is_none_or(|&l| l < e) => st.extents.push(e),
                Some(st) => {
                    if let Err(at) = st.extents.binary_search(&e) {
                        st.extents.insert(at, e);
                    }
                }
                None => tracing::error!("extent {e} is listed under stream {s}, which has no record; ignored"),
            }
        }
        let shared = Arc::new(Shared { state: RwLock::new(state), applied: RwLock::new((applied, membership)) });
        Ok(StateMachine { db, shared })
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_SM).expect("column family created at open")
    }

    fn put_value(&self, batch: &mut WriteBatch, state: &State, k: Key) {
        let cf = self.cf();
        let key = sm_key(k);
        let v = match k {
            Key::Node(id) => state.nodes.get(&id).map(enc),
            Key::Stream(id) => state.streams.get(&id).map(|s| enc(&StreamRecord::of(s))),
            Key::StreamExtent(s, e) => {
                state.streams.get(&s).filter(|st| st.extents.binary_search(&e).is_ok()).map(|_| Vec::new())
            }
            Key::Extent(id) => state.extents.get(&id).map(enc),
            Key::Tombstone(id) => state.tombstones.get(&id).map(enc),
            Key::Repairs(id) => state.repairs.get(&id).map(enc),
            Key::Created(token) => state.created.get(&token).map(enc),
            Key::Counters => Some(enc(&state.counters)),
            Key::Flags => Some(enc(&state.flags)),
        };
        match v {
            Some(v) => batch.put_cf(cf, key, v),
            None => batch.delete_cf(cf, key),
        }
    }

    fn save_snapshot(&self, s: &StoredSnapshot) -> Result<(), SErr> {
        let cf = self.db.cf_handle(CF_STORE).expect("column family created at open");
        self.db.put_cf_opt(cf, K_SNAPSHOT, enc(s), &synced()).map_err(|e| write_snapshot(None, io(e)))
    }

    /// Bytes of keys and values in the state machine column family, and the number of
    /// extents: the "state per extent" figure of the benchmark.
    pub fn state_bytes(&self) -> u64 {
        self.db.iterator_cf(self.cf(), IteratorMode::Start).flatten().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        // The state and its applied id are read under one lock, so they match.
        let (data, last_log_id, last_membership) = {
            let state = self.shared.state.read();
            let applied = self.shared.applied.read();
            (enc(&SnapshotBlob { state: state.clone() }), applied.0, applied.1.clone())
        };
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, data.len()),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.save_snapshot(&stored)?;
        tracing::info!("built snapshot {} ({} bytes)", meta.snapshot_id, stored.data.len());
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<Applied, SErr> {
        Ok(self.shared.applied.read().clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<crate::state::Outcome>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut batch = WriteBatch::default();
        let mut state = self.shared.state.write();
        let mut applied = self.shared.applied.write();
        let mut dirty = Vec::new();
        for e in entries {
            applied.0 = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Ok(Reply::Done)),
                EntryPayload::Normal(cmd) => out.push(state.apply(cmd, &mut dirty)),
                EntryPayload::Membership(m) => {
                    applied.1 = StoredMembership::new(Some(e.log_id), m);
                    batch.put_cf(self.cf(), K_MEMBERSHIP, enc(&applied.1));
                    out.push(Ok(Reply::Done));
                }
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        for k in dirty {
            self.put_value(&mut batch, &state, k);
        }
        batch.put_cf(self.cf(), K_APPLIED, enc(&applied.0));
        drop(applied);
        drop(state);
        self.db.write(batch).map_err(|e| write_state_machine(io(e)))?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<MemberId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let blob: SnapshotBlob = dec(&data).map_err(|e| read_snapshot(Some(meta.signature()), e))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(), [0u8].as_slice(), [0xffu8; 16].as_slice());
        let st = &blob.state;
        let keys = st
            .nodes
            .keys()
            .map(|&i| Key::Node(i))
            .chain(st.streams.keys().map(|&i| Key::Stream(i)))
            .chain(st.streams.values().flat_map(|s| s.extents.iter().map(|&e| Key::StreamExtent(s.id, e))))
            .chain(st.extents.keys().map(|&i| Key::Extent(i)))
            .chain(st.tombstones.keys().map(|&i| Key::Tombstone(i)))
            .chain(st.repairs.keys().map(|&i| Key::Repairs(i)))
            .chain(st.created.keys().map(|&t| Key::Created(t)))
            .chain([Key::Counters, Key::Flags]);
        for k in keys {
            self.put_value(&mut batch, st, k);
        }
        batch.put_cf(self.cf(), K_APPLIED, enc(&meta.last_log_id));
        batch.put_cf(self.cf(), K_MEMBERSHIP, enc(&meta.last_membership));
        {
            let mut state = self.shared.state.write();
            let mut applied = self.shared.applied.write();
            self.db.write(batch).map_err(|e| write_state_machine(io(e)))?;
            *state = blob.state;
            *applied = (meta.last_log_id, meta.last_membership.clone());
        }
        self.save_snapshot(&StoredSnapshot { meta: meta.clone(), data })?;
        tracing::info!("installed snapshot {}", meta.snapshot_id);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let cf = self.db.cf_handle(CF_STORE).expect("column family created at open");
        let Some(b) = self.db.get_cf(cf, K_SNAPSHOT).map_err(|e| read_snapshot(None, io(e)))? else {
            return Ok(None);
        };
        let s: StoredSnapshot = dec(&b).map_err(|e| read_snapshot(None, e))?;
        Ok(Some(Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, RaftLogReader};
    use proto::meta::StreamId;

    use super::*;
    use crate::state::Command;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
            payload: EntryPayload::Normal(Command::DeleteStream { id: StreamId(index) }),
        }
    }

    /// What is read back after a reopen is what was written: vote, committed, the purge
    /// point and the entries after it (the purge point was once stored in another shape
    /// than it was read in, which left a "hole" that failed the next start-up).
    #[tokio::test]
    async fn log_state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new_committed(3, 1);
        let committed = Some(LogId::new(CommittedLeaderId::new(3, 1), 40));
        {
            let mut log = LogStore::new(open_db(dir.path()).unwrap());
            let mut batch = WriteBatch::default();
            for i in 1..=50 {
                batch.put_cf(log.cf(CF_LOGS), u64::to_be_bytes(i), enc(&entry(i)));
            }
            log.db.write(batch).unwrap();
            log.save_vote(&vote).await.unwrap();
            log.save_committed(committed).await.unwrap();
            log.purge(entry(20).log_id).await.unwrap();
            log.truncate(entry(46).log_id).await.unwrap();
        }
        let mut log = LogStore::new(open_db(dir.path()).unwrap());
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), committed);
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(entry(20).log_id));
        assert_eq!(st.last_log_id, Some(entry(45).log_id));
        let got = log.try_get_log_entries(21..=45).await.unwrap();
        assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (21..=45).collect::<Vec<_>>());
        assert!(log.try_get_log_entries(..21).await.unwrap().is_empty());
    }

    fn stream_info(n: u64) -> proto::meta::StreamInfo {
        proto::meta::StreamInfo {
            id: StreamId(7),
            policy: "replica:3".parse().unwrap(),
            epoch: proto::Epoch(4),
            writer: Some("w".into()),
            extents: (1..=n).map(ExtentId).collect(),
            tail: Some(ExtentId(n + 5)),
        }
    }

    #[test]
    fn a_stored_stream_record_decodes_as_the_stream_with_an_empty_list() {
        let s = stream_info(3);
        let back: proto::meta::StreamInfo = dec(&enc(&StreamRecord::of(&s))).unwrap();
        assert_eq!(back, proto::meta::StreamInfo { extents: Vec::new(), ..s });
    }

    fn sm_value(db: &DB, k: Key) -> Option<Vec<u8>> {
        db.get_cf(db.cf_handle(CF_SM).unwrap(), sm_key(k)).unwrap()
    }

    /// A long stream's record stays a few bytes (its list is one key per extent), the
    /// list survives a reopen in order after allocations and deletions, and a record
    /// stored with its whole list (the shape before) is moved to the new one at open.
    #[tokio::test]
    async fn a_streams_extent_list_is_stored_a_key_per_extent_and_old_records_move_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let mut a = crate::statebench::Applier::new(StateMachine::open(db.clone()).unwrap());
        a.one_open_stream().await.unwrap();
        let mut after = None;
        let mut record_len = Vec::new();
        for _ in 0..2000 {
            after = Some(a.allocate_and_seal(after, 10).await.unwrap());
            record_len.push(sm_value(&db, Key::Stream(StreamId(1))).unwrap().len());
        }
        // (Its tail's id is a varint: a byte more past 127.)
        assert!(
            record_len[1999] <= record_len[0] + 1,
            "the stream's record grew: {} to {}",
            record_len[0],
            record_len[1999]
        );
        // GC deletes some, from the front and the middle.
        let gone: Vec<ExtentId> = (1..=2000).filter(|i| i % 3 == 0 || *i < 100).map(ExtentId).collect();
        a.apply(vec![Command::DeleteExtents { extents: gone.clone() }]).await.unwrap();
        let want = a.sm.shared.state.read().streams[&StreamId(1)].extents.clone();
        assert_eq!(want.len(), 2000 - gone.len());
        assert!(want.windows(2).all(|w| w[0] < w[1]));
        assert!(sm_value(&db, Key::StreamExtent(StreamId(1), gone[0])).is_none());
        drop(a);
        let sm = StateMachine::open(db.clone()).unwrap();
        assert_eq!(sm.shared.state.read().streams[&StreamId(1)].extents, want, "the list after a reopen");

        // The shape before: the whole list in the record, no keys of its own.
        let old = stream_info(50);
        let cf = db.cf_handle(CF_SM).unwrap();
        db.put_cf(cf, sm_key(Key::Stream(old.id)), enc(&old)).unwrap();
        drop(sm);
        let sm = StateMachine::open(db.clone()).unwrap();
        assert_eq!(sm.shared.state.read().streams[&old.id], old);
        let moved = sm_value(&db, Key::Stream(old.id)).unwrap();
        assert_eq!(dec::<proto::meta::StreamInfo>(&moved).unwrap().extents, Vec::new(), "moved to the new shape");
        assert!(sm_value(&db, Key::StreamExtent(old.id, ExtentId(50))).is_some());
        drop(sm);
        let sm = StateMachine::open(db).unwrap();
        assert_eq!(sm.shared.state.read().streams[&old.id], old, "and read back the same");
    }
}
