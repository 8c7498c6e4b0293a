//! The replicated state and the commands that change it. `State::apply` is the
//! whole state machine: deterministic, validating every command against the state,
//! and reporting which keys it changed so the store persists exactly those in the
//! same RocksDB batch as the applied log id.

use std::collections::BTreeMap;

use proto::meta::{
    ExtentInfo, MetaError, NodeInfo, NodeState, Policy, RegisterNode, Repair, Replica, StreamId, StreamInfo,
    StreamView, Tombstone,
};
use proto::{Epoch, ExtentId, NodeId};
use serde::{Deserialize, Serialize};

/// A change proposed through Raft. Placement is chosen by the leader before proposing,
/// so applying is deterministic on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterNode(RegisterNode),
    /// An admin's decision: `Up` also ends draining, `Draining` starts it.
    SetNodeState {
        id: NodeId,
        state: NodeState,
    },
    /// The leader heard nothing from the node for the grace period.
    NodeDown {
        id: NodeId,
    },
    /// A down node heartbeats again: back up, or back to draining.
    NodeAlive {
        id: NodeId,
    },
    CreateStream {
        policy: Policy,
    },
    /// Bumps the epoch; the caller then seals the previous writer's open extent.
    OpenStream {
        id: StreamId,
        writer: String,
    },
    AllocateExtent {
        stream: StreamId,
        epoch: Epoch,
        after: Option<ExtentId>,
        replicas: Vec<Replica>,
    },
    SealExtent {
        extent: ExtentId,
        epoch: Epoch,
        length: u64,
    },
    /// The stream and its extents are forgotten; every extent becomes a tombstone.
    DeleteStream {
        id: StreamId,
    },
    /// A reader found `node`'s copy of `extent` bad.
    ReportBad {
        extent: ExtentId,
        node: NodeId,
    },
    // New variants go last: the log stores commands by variant index.
    /// GC found these extents dead: each sealed one becomes a tombstone; the others
    /// are skipped (see `State::delete_extents`).
    DeleteExtents {
        extents: Vec<ExtentId>,
    },
    /// `nodes` confirmed that their copy of the deleted `extent` is gone.
    CopiesGone {
        extent: ExtentId,
        nodes: Vec<NodeId>,
    },
    /// Repair starts making `copy` to replace the copy in `slot` of the sealed `extent`.
    BeginRepair {
        extent: ExtentId,
        slot: u32,
        copy: Replica,
        at_ms: u64,
    },
    /// An admin forgets a datanode that holds no copy any more (drained, or lost and
    /// repaired): the copies tombstones still name there are forgotten with it (its
    /// disk is gone, or is wiped before it joins again).
    RemoveNode {
        id: NodeId,
    },
    /// `CreateStream` that a retry with the same `token` answers with the same stream.
    CreateStreamOnce {
        policy: Policy,
        token: u64,
    },
    /// The repair of `extent`'s `slot` by `copy` ended: `done` (the copy is written,
    /// every record checked against its CRC, and sealed durably) makes it the replica
    /// and the old copy a stray to delete;
    /// otherwise the copy is a stray.
    EndRepair {
        extent: ExtentId,
        slot: u32,
        copy: Replica,
        done: bool,
    },
    /// An admin pauses rebalancing (`paused`) or lets it run again.
    SetRebalance {
        paused: bool,
    },
    /// `OpenStream`, only if the stream still ends with `tail` and `tail` is open
    /// (repair sealing a dead writer's extent must not fence a writer that moved on).
    OpenStreamIf {
        id: StreamId,
        tail: ExtentId,
        writer: String,
    },
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Node(NodeInfo),
    Stream(StreamInfo),
    Extent(ExtentInfo),
    /// The extents a `DeleteExtents` deleted, in the order asked.
    Deleted(Vec<ExtentId>),
    Done,
}

pub type Outcome = Result<Reply, MetaError>;

/// One key of the state machine's column family, changed by an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Node(NodeId),
    Stream(StreamId),
    /// One extent of a stream's list, stored apart from the stream's record so that an
    /// allocation writes a few bytes however long the stream is.
    StreamExtent(StreamId, ExtentId),
    Extent(ExtentId),
    Tombstone(ExtentId),
    Repairs(ExtentId),
    Created(u64),
    Counters,
    Flags,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub next_stream: StreamId,
    pub next_extent: ExtentId,
}

/// Cluster-wide switches an admin sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    pub rebalance_paused: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub streams: BTreeMap<StreamId, StreamInfo>,
    pub extents: BTreeMap<ExtentId, ExtentInfo>,
    /// Deleted extents whose copies are not all confirmed gone from their datanodes.
    #[serde(default)]
    pub tombstones: BTreeMap<ExtentId, Tombstone>,
    pub counters: Counters,
    /// Copies being made by repair, per extent (see `Repair`).
    #[serde(default)]
    pub repairs: BTreeMap<ExtentId, Vec<Repair>>,
    /// The stream each `CreateStreamOnce` token made (while the stream exists).
    #[serde(default)]
    pub created: BTreeMap<u64, StreamId>,
    #[serde(default)]
    pub flags: Flags,
}

impl State {
    /// Applies `cmd`; a refused command changes nothing. Changed keys are appended to
    /// `dirty`.
    pub fn apply(&mut self, cmd: Command, dirty: &mut Vec<Key>) -> Outcome {
        match cmd {
            Command::RegisterNode(r) => {
                validate_register(&r)?;
                if let Some(other) = self.nodes.values().find(|n| n.addr == r.addr && n.id != r.id) {
                    return Err(MetaError::conflict(format!(
                        "address {} already belongs to datanode {}",
                        r.addr, other.id
                    )));
                }
                let draining = self.nodes.get(&r.id).is_some_and(|n| n.draining);
                let state = if draining { NodeState::Draining } else { NodeState::Up };
                let node = NodeInfo {
                    id: r.id,
                    addr: r.addr,
                    zone: r.zone,
                    rack: r.rack,
                    devices: r.devices,
                    state,
                    draining,
                };
                self.nodes.insert(node.id, node.clone());
                dirty.push(Key::Node(node.id));
                Ok(Reply::Node(node))
            }
            Command::SetNodeState { id, state } => {
                let n = self.nodes.get_mut(&id).ok_or(MetaError::NoSuchNode { id })?;
                match state {
                    NodeState::Up => n.draining = false,
                    NodeState::Draining => n.draining = true,
                    NodeState::Down => {}
                }
                n.state = state;
                dirty.push(Key::Node(id));
                Ok(Reply::Node(n.clone()))
            }
            Command::NodeDown { id } => {
                let n = self.nodes.get_mut(&id).ok_or(MetaError::NoSuchNode { id })?;
                n.state = NodeState::Down;
                dirty.push(Key::Node(id));
                Ok(Reply::Node(n.clone()))
            }
            Command::NodeAlive { id } => {
                let n = self.nodes.get_mut(&id).ok_or(MetaError::NoSuchNode { id })?;
                n.state = if n.draining { NodeState::Draining } else { NodeState::Up };
                dirty.push(Key::Node(id));
                Ok(Reply::Node(n.clone()))
            }
            Command::CreateStream { policy } => {
                let need = policy.width();
                if need > self.nodes.len() {
                    return Err(MetaError::NotEnoughNodes { policy: policy.to_string(), need, have: self.nodes.len() });
                }
                self.counters.next_stream = self.counters.next_stream.next();
                let id = self.counters.next_stream;
                let s = StreamInfo { id, policy, epoch: Epoch(0), writer: None, extents: Vec::new(), tail: None };
                self.streams.insert(id, s.clone());
                dirty.extend([Key::Stream(id), Key::Counters]);
                Ok(Reply::Stream(s))
            }
            Command::OpenStream { id, writer } => {
                let s = self.streams.get_mut(&id).ok_or(MetaError::NoSuchStream { id })?;
                s.epoch = s.epoch.next();
                s.writer = Some(writer);
                dirty.push(Key::Stream(id));
                Ok(Reply::Stream(s.clone()))
            }
            Command::AllocateExtent { stream, epoch, after, replicas } => {
                self.allocate(stream, epoch, after, replicas, dirty)
            }
            Command::SealExtent { extent, epoch, length } => {
                let e = self.extents.get(&extent).ok_or(MetaError::NoSuchExtent { id: extent })?;
                let s = &self.streams[&e.stream];
                if epoch < s.epoch {
                    return Err(MetaError::Fenced { epoch, current: s.epoch });
                }
                if epoch > s.epoch {
                    return Err(MetaError::invalid(format!("epoch {epoch} is newer than the stream's {}", s.epoch)));
                }
                match e.sealed_len {
                    Some(l) if l == length => return Ok(Reply::Extent(e.clone())),
                    Some(l) => {
                        return Err(MetaError::conflict(format!("extent {extent} is sealed at {l}, not {length}")));
                    }
                    None => {}
                }
                let e = self.extents.get_mut(&extent).expect("checked");
                e.sealed_len = Some(length);
                dirty.push(Key::Extent(extent));
                Ok(Reply::Extent(e.clone()))
            }
            Command::ReportBad { extent, node } => {
                let e = self.extents.get_mut(&extent).ok_or(MetaError::NoSuchExtent { id: extent })?;
                if !e.replicas.iter().any(|r| r.node == node) {
                    return Err(MetaError::invalid(format!("datanode {node} holds no copy of extent {extent}")));
                }
                if !e.bad.contains(&node) {
                    e.bad.push(node);
                    dirty.push(Key::Extent(extent));
                }
                Ok(Reply::Extent(e.clone()))
            }
            Command::DeleteStream { id } => {
                let s = self.streams.remove(&id).ok_or(MetaError::NoSuchStream { id })?;
                dirty.push(Key::Stream(id));
                let tokens: Vec<u64> = self.created.iter().filter(|(_, s)| **s == id).map(|(t, _)| *t).collect();
                for t in tokens {
                    self.created.remove(&t);
                    dirty.push(Key::Created(t));
                }
                for e in s.extents {
                    dirty.push(Key::StreamExtent(id, e));
                    self.bury(e, dirty);
                }
                Ok(Reply::Done)
            }
            Command::DeleteExtents { extents } => Ok(Reply::Deleted(self.delete_extents(&extents, dirty))),
            Command::CopiesGone { extent, nodes } => {
                self.copies_gone(extent, &nodes, dirty);
                Ok(Reply::Done)
            }
            Command::BeginRepair { extent, slot, copy, at_ms } => self.begin_repair(extent, slot, copy, at_ms, dirty),
            Command::EndRepair { extent, slot, copy, done } => Ok(self.end_repair(extent, slot, copy, done, dirty)),
            Command::RemoveNode { id } => self.remove_node(id, dirty),
            Command::OpenStreamIf { id, tail, writer } => {
                let s = self.streams.get(&id).ok_or(MetaError::NoSuchStream { id })?;
                let open = self.extents.get(&tail).is_some_and(|e| e.sealed_len.is_none());
                if s.extents.last() != Some(&tail) || !open {
                    return Err(MetaError::conflict(format!(
                        "stream {id} no longer ends with open extent {tail}: its writer moved on"
                    )));
                }
                self.apply(Command::OpenStream { id, writer }, dirty)
            }
            Command::SetRebalance { paused } => {
                if self.flags.rebalance_paused != paused {
                    self.flags.rebalance_paused = paused;
                    dirty.push(Key::Flags);
                }
                Ok(Reply::Done)
            }
            Command::CreateStreamOnce { policy, token } => {
                if let Some(s) = self.created.get(&token).and_then(|id| self.streams.get(id)) {
                    return Ok(Reply::Stream(s.clone()));
                }
                let r = self.apply(Command::CreateStream { policy }, dirty)?;
                if let Reply::Stream(s) = &r {
                    self.created.insert(token, s.id);
                    dirty.push(Key::Created(token));
                }
                Ok(r)
            }
        }
    }

    /// The nodes that hold, or may hold, a copy of `extent`: its replicas, the copies
    /// repair is making, and those waiting for deletion.
    pub fn holders(&self, extent: ExtentId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> =
            self.extents.get(&extent).map(|e| e.replicas.iter().map(|r| r.node).collect()).unwrap_or_default();
        v.extend(self.repairs.get(&extent).into_iter().flatten().map(|r| r.copy.node));
        v.extend(self.tombstones.get(&extent).into_iter().flat_map(|t| t.replicas.iter().map(|r| r.node)));
        v
    }

    fn begin_repair(
        &mut self,
        extent: ExtentId,
        slot: u32,
        copy: Replica,
        at_ms: u64,
        dirty: &mut Vec<Key>,
    ) -> Outcome {
        let e = self.extents.get(&extent).ok_or(MetaError::NoSuchExtent { id: extent })?;
        if e.sealed_len.is_none() {
            return Err(MetaError::conflict(format!("extent {extent} is open: its writer seals it first")));
        }
        if slot as usize >= e.replicas.len() {
            return Err(MetaError::invalid(format!("extent {extent} has no slot {slot}")));
        }
        if self.repairs.get(&extent).is_some_and(|v| v.iter().any(|r| r.slot == slot)) {
            return Err(MetaError::conflict(format!("slot {slot} of extent {extent} is being repaired already")));
        }
        if self.holders(extent).contains(&copy.node) {
            return Err(MetaError::conflict(format!("datanode {} holds a copy of extent {extent} already", copy.node)));
        }
        self.check_copy(&copy)?;
        self.repairs.entry(extent).or_default().push(Repair { slot, copy, since_ms: at_ms });
        dirty.push(Key::Repairs(extent));
        Ok(Reply::Done)
    }

    /// See `Command::EndRepair`. An extent deleted meanwhile took the copy into its
    /// tombstone already, and a repair not in progress is a retry: both change nothing.
    fn end_repair(&mut self, extent: ExtentId, slot: u32, copy: Replica, done: bool, dirty: &mut Vec<Key>) -> Reply {
        let Some(v) = self.repairs.get_mut(&extent) else { return Reply::Done };
        let Some(i) = v.iter().position(|r| r.slot == slot && r.copy == copy) else { return Reply::Done };
        v.remove(i);
        if v.is_empty() {
            self.repairs.remove(&extent);
        }
        dirty.push(Key::Repairs(extent));
        let e = self.extents.get_mut(&extent).expect("repairs are dropped with their extent");
        let stray = if done {
            let old = std::mem::replace(&mut e.replicas[slot as usize], copy);
            e.bad.retain(|&n| n != old.node);
            dirty.push(Key::Extent(extent));
            old
        } else {
            copy
        };
        let (stream, policy, sealed_len) = (e.stream, e.policy, e.sealed_len);
        let reply = Reply::Extent(e.clone());
        self.add_strays(Tombstone { extent, stream, policy, replicas: vec![stray], sealed_len }, dirty);
        reply
    }

    fn remove_node(&mut self, id: NodeId, dirty: &mut Vec<Key>) -> Outcome {
        if !self.nodes.contains_key(&id) {
            return Err(MetaError::NoSuchNode { id });
        }
        let holds = self.extents.values().filter(|e| e.replicas.iter().any(|r| r.node == id)).count()
            + self.repairs.values().flatten().filter(|r| r.copy.node == id).count();
        if holds > 0 {
            return Err(MetaError::conflict(format!(
                "datanode {id} still holds {holds} copies: drain it, or wait until repair has replaced them"
            )));
        }
        self.nodes.remove(&id);
        dirty.push(Key::Node(id));
        let named: Vec<ExtentId> =
            self.tombstones.values().filter(|t| t.replicas.iter().any(|r| r.node == id)).map(|t| t.extent).collect();
        for extent in named {
            self.copies_gone(extent, &[id], dirty);
        }
        Ok(Reply::Done)
    }

    /// Adds `t`'s copies to the extent's tombstone (made if there is none).
    fn add_strays(&mut self, t: Tombstone, dirty: &mut Vec<Key>) {
        dirty.push(Key::Tombstone(t.extent));
        match self.tombstones.get_mut(&t.extent) {
            Some(have) => {
                for r in t.replicas {
                    if !have.replicas.contains(&r) {
                        have.replicas.push(r);
                    }
                }
                have.sealed_len = have.sealed_len.or(t.sealed_len);
            }
            None => {
                self.tombstones.insert(t.extent, t);
            }
        }
    }

    /// Deletes each extent of `ids` that is sealed, and returns those. The rest are
    /// skipped, not refused, so that one batch from GC is not undone by a single extent:
    /// unknown ids and tombstones (a retry: already deleted) and open extents (a writer
    /// may still append). A stream's last extent may go too once sealed: the stream's
    /// `tail` keeps its id for the next allocation to follow (and a sealed tail holding
    /// only deleted objects is exactly what idle sealing makes collectable).
    fn delete_extents(&mut self, ids: &[ExtentId], dirty: &mut Vec<Key>) -> Vec<ExtentId> {
        let mut deleted = Vec::new();
        let mut gone: BTreeMap<StreamId, Vec<ExtentId>> = BTreeMap::new();
        for &id in ids {
            let Some(e) = self.extents.get(&id) else { continue };
            if e.sealed_len.is_none() {
                continue;
            }
            gone.entry(e.stream).or_default().push(id);
            dirty.push(Key::StreamExtent(e.stream, id));
            self.bury(id, dirty);
            deleted.push(id);
        }
        // One pass over each stream's list (kept in ascending id order) however many of
        // its extents go.
        for (stream, mut ids) in gone {
            ids.sort_unstable();
            let s = self.streams.get_mut(&stream).expect("an extent's stream exists");
            s.extents.retain(|x| ids.binary_search(x).is_err());
        }
        deleted
    }

    /// Replaces extent `id` by its tombstone, which names every copy to delete: its
    /// replicas, the copies repair was making (whose repair ends with nothing to do)
    /// and the strays a repair left.
    fn bury(&mut self, id: ExtentId, dirty: &mut Vec<Key>) {
        let Some(e) = self.extents.remove(&id) else { return };
        dirty.push(Key::Extent(id));
        let mut replicas = e.replicas;
        if let Some(v) = self.repairs.remove(&id) {
            replicas.extend(v.iter().map(|r| r.copy));
            dirty.push(Key::Repairs(id));
        }
        let t = Tombstone { extent: id, stream: e.stream, policy: e.policy, replicas, sealed_len: e.sealed_len };
        self.add_strays(t, dirty);
    }

    /// Forgets the copies of `extent` on `nodes`, and the tombstone with its last copy.
    /// An unknown tombstone or node is a retry of a confirmation already applied.
    fn copies_gone(&mut self, extent: ExtentId, nodes: &[NodeId], dirty: &mut Vec<Key>) {
        let Some(t) = self.tombstones.get_mut(&extent) else { return };
        let before = t.replicas.len();
        t.replicas.retain(|r| !nodes.contains(&r.node));
        if t.replicas.len() == before {
            return;
        }
        if t.replicas.is_empty() {
            self.tombstones.remove(&extent);
        }
        dirty.push(Key::Tombstone(extent));
    }

    fn allocate(
        &mut self,
        stream: StreamId,
        epoch: Epoch,
        after: Option<ExtentId>,
        replicas: Vec<Replica>,
        dirty: &mut Vec<Key>,
    ) -> Outcome {
        let s = self.streams.get(&stream).ok_or(MetaError::NoSuchStream { id: stream })?;
        if epoch != s.epoch {
            return Err(if epoch < s.epoch {
                MetaError::Fenced { epoch, current: s.epoch }
            } else {
                MetaError::invalid(format!("epoch {epoch} is newer than the stream's {}", s.epoch))
            });
        }
        if s.epoch == Epoch(0) {
            return Err(MetaError::invalid(format!("stream {stream} is not open for writing")));
        }
        // A stream from before `tail` was kept: its last extent is its tail.
        let tail = s.tail.or(s.extents.last().copied());
        if tail != after {
            // A retry whose first attempt committed: answer with the extent it made,
            // the stream's last, which follows `after` (or is its first).
            let n = s.extents.len();
            let follows = match after {
                None => n == 1,
                Some(a) => n >= 2 && s.extents[n - 2] == a,
            };
            if let Some(&next) = s.extents.last().filter(|_| follows) {
                if Some(next) == tail && self.extents[&next].epoch == epoch {
                    return Ok(Reply::Extent(self.extents[&next].clone()));
                }
            }
            return Err(MetaError::conflict(format!(
                "stream {stream} ends with extent {tail:?}, not {after:?}; refresh and retry"
            )));
        }
        // A tail GC deleted was sealed.
        if let Some(t) = tail.filter(|t| self.extents.contains_key(t)) {
            if self.extents[&t].sealed_len.is_none() {
                return Err(MetaError::conflict(format!("extent {t} is still open: seal it before allocating")));
            }
        }
        let policy = s.policy;
        self.check_replicas(policy, &replicas)?;
        self.counters.next_extent = self.counters.next_extent.next();
        let id = self.counters.next_extent;
        let e = ExtentInfo { id, stream, policy, replicas, epoch, sealed_len: None, bad: Vec::new() };
        self.extents.insert(id, e.clone());
        let s = self.streams.get_mut(&stream).expect("checked");
        debug_assert!(s.extents.last().is_none_or(|&l| l < id), "a stream's extents are in ascending id order");
        s.extents.push(id);
        s.tail = Some(id);
        dirty.extend([Key::Extent(id), Key::Stream(stream), Key::StreamExtent(stream, id), Key::Counters]);
        Ok(Reply::Extent(e))
    }

    fn check_replicas(&self, policy: Policy, replicas: &[Replica]) -> Result<(), MetaError> {
        if replicas.len() != policy.width() {
            return Err(MetaError::invalid(format!(
                "{policy} needs {} replicas, got {}",
                policy.width(),
                replicas.len()
            )));
        }
        for (i, r) in replicas.iter().enumerate() {
            if replicas[..i].iter().any(|o| o.node == r.node) {
                return Err(MetaError::invalid(format!("datanode {} chosen twice", r.node)));
            }
            self.check_copy(r)?;
        }
        Ok(())
    }

    /// A new copy may go to `r`: its datanode is up and has that device.
    fn check_copy(&self, r: &Replica) -> Result<(), MetaError> {
        let n = self.nodes.get(&r.node).ok_or(MetaError::NoSuchNode { id: r.node })?;
        if n.state != NodeState::Up {
            return Err(MetaError::unavailable(format!("datanode {} is {:?}", r.node, n.state)));
        }
        if !n.devices.iter().any(|d| d.id == r.device) {
            return Err(MetaError::invalid(format!("datanode {} has no device {}", r.node, r.device)));
        }
        Ok(())
    }

    /// A stream with its extents and the datanodes they live on.
    pub fn stream_view(&self, id: StreamId) -> Result<StreamView, MetaError> {
        let stream = self.streams.get(&id).ok_or(MetaError::NoSuchStream { id })?.clone();
        let extents: Vec<ExtentInfo> = stream.extents.iter().map(|e| self.extents[e].clone()).collect();
        let mut ids: Vec<NodeId> = extents.iter().flat_map(|e| e.replicas.iter().map(|r| r.node)).collect();
        ids.sort_unstable();
        ids.dedup();
        let nodes = ids.iter().filter_map(|n| self.nodes.get(n).cloned()).collect();
        Ok(StreamView { stream, extents, nodes })
    }
}

fn validate_register(r: &RegisterNode) -> Result<(), MetaError> {
    if r.addr.parse::<std::net::SocketAddr>().is_err() && !r.addr.contains(':') {
        return Err(MetaError::invalid(format!("datanode address {:?} is not host:port", r.addr)));
    }
    if r.devices.is_empty() {
        return Err(MetaError::invalid("a datanode needs at least one device"));
    }
    for (i, d) in r.devices.iter().enumerate() {
        if r.devices[..i].iter().any(|o| o.id == d.id) {
            return Err(MetaError::invalid(format!("device {} listed twice", d.id)));
        }
        if d.free_bytes > d.capacity_bytes {
            return Err(MetaError::invalid(format!("device {} has more free bytes than capacity", d.id)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::meta::DeviceInfo;

    fn node(id: NodeId) -> RegisterNode {
        RegisterNode {
            id,
            addr: format!("127.0.0.1:{}", 9000 + id.0),
            zone: String::new(),
            rack: String::new(),
            devices: vec![DeviceInfo { id: 0, capacity_bytes: 1 << 30, free_bytes: 1 << 30, free_slots: None }],
        }
    }

    fn run(st: &mut State, cmd: Command) -> Outcome {
        let before = st.clone();
        let mut dirty = Vec::new();
        let r = st.apply(cmd, &mut dirty);
        if r.is_err() {
            assert_eq!(*st, before, "a refused command changed the state");
            assert!(dirty.is_empty());
        }
        r
    }

    fn replicas(nodes: &[u64]) -> Vec<Replica> {
        nodes.iter().map(|&node| Replica { node: NodeId(node), device: 0 }).collect()
    }

    #[test]
    fn a_conditional_open_fences_only_a_writer_still_on_that_open_extent() {
        let mut st = State::default();
        for id in 1..=3 {
            run(&mut st, Command::RegisterNode(node(NodeId(id)))).unwrap();
        }
        let Reply::Stream(s) = run(&mut st, Command::CreateStream { policy: "replica:3".parse().unwrap() }).unwrap()
        else {
            panic!()
        };
        run(&mut st, Command::OpenStream { id: s.id, writer: "w".into() }).unwrap();
        let alloc =
            |after| Command::AllocateExtent { stream: s.id, epoch: Epoch(1), after, replicas: replicas(&[1, 2, 3]) };
        let Reply::Extent(e1) = run(&mut st, alloc(None)).unwrap() else { panic!() };
        let cond = |tail| Command::OpenStreamIf { id: s.id, tail, writer: "repair".into() };
        // The writer sealed e1 and moved on to e2: refused, nothing changes.
        run(&mut st, Command::SealExtent { extent: e1.id, epoch: Epoch(1), length: 5 }).unwrap();
        assert!(matches!(run(&mut st, cond(e1.id)), Err(MetaError::Conflict { .. })), "sealed");
        let Reply::Extent(e2) = run(&mut st, alloc(Some(e1.id))).unwrap() else { panic!() };
        assert!(matches!(run(&mut st, cond(e1.id)), Err(MetaError::Conflict { .. })), "no longer the tail");
        assert_eq!(st.streams[&s.id].epoch, Epoch(1));
        // Still on e2, open: the epoch moves on (the writer is fenced).
        let Reply::Stream(after) = run(&mut st, cond(e2.id)).unwrap() else { panic!() };
        assert_eq!((after.epoch, after.writer.as_deref()), (Epoch(2), Some("repair")));
    }

    #[test]
    fn stream_lifecycle_with_fencing_and_idempotent_retries() {
        let mut st = State::default();
        for id in 1..=3 {
            run(&mut st, Command::RegisterNode(node(NodeId(id)))).unwrap();
        }
        let too_wide = run(&mut st, Command::CreateStream { policy: "ec:4+2".parse().unwrap() });
        assert!(matches!(too_wide, Err(MetaError::NotEnoughNodes { need: 6, have: 3, .. })), "{too_wide:?}");
        let Reply::Stream(s) = run(&mut st, Command::CreateStream { policy: "replica:3".parse().unwrap() }).unwrap()
        else {
            panic!()
        };
        let alloc =
            |epoch, after| Command::AllocateExtent { stream: s.id, epoch, after, replicas: replicas(&[1, 2, 3]) };
        assert!(matches!(run(&mut st, alloc(Epoch(0), None)), Err(MetaError::Invalid { .. })), "allocated before open");
        run(&mut st, Command::OpenStream { id: s.id, writer: "w1".into() }).unwrap();
        let Reply::Extent(e1) = run(&mut st, alloc(Epoch(1), None)).unwrap() else { panic!() };
        // The same allocation again (a retry) returns the same extent.
        assert_eq!(run(&mut st, alloc(Epoch(1), None)).unwrap(), Reply::Extent(e1.clone()));
        assert!(
            matches!(run(&mut st, alloc(Epoch(1), Some(e1.id))), Err(MetaError::Conflict { .. })),
            "tail still open"
        );
        run(&mut st, Command::SealExtent { extent: e1.id, epoch: Epoch(1), length: 100 }).unwrap();
        run(&mut st, Command::SealExtent { extent: e1.id, epoch: Epoch(1), length: 100 }).unwrap();
        assert!(matches!(
            run(&mut st, Command::SealExtent { extent: e1.id, epoch: Epoch(1), length: 50 }),
            Err(MetaError::Conflict { .. })
        ));
        let dup = Command::AllocateExtent {
            stream: s.id,
            epoch: Epoch(1),
            after: Some(e1.id),
            replicas: replicas(&[1, 1, 2]),
        };
        assert!(matches!(run(&mut st, dup), Err(MetaError::Invalid { .. })));
        let ghost = Command::AllocateExtent {
            stream: s.id,
            epoch: Epoch(1),
            after: Some(e1.id),
            replicas: replicas(&[1, 2, 7]),
        };
        assert!(matches!(run(&mut st, ghost), Err(MetaError::NoSuchNode { id: NodeId(7) })));
        let Reply::Extent(e2) = run(&mut st, alloc(Epoch(1), Some(e1.id))).unwrap() else { panic!() };
        // A second writer fences the first.
        run(&mut st, Command::OpenStream { id: s.id, writer: "w2".into() }).unwrap();
        assert!(matches!(
            run(&mut st, Command::SealExtent { extent: e2.id, epoch: Epoch(1), length: 10 }),
            Err(MetaError::Fenced { epoch: Epoch(1), current: Epoch(2) })
        ));
        assert!(matches!(run(&mut st, alloc(Epoch(1), Some(e2.id))), Err(MetaError::Fenced { .. })));
        run(&mut st, Command::SealExtent { extent: e2.id, epoch: Epoch(2), length: 10 }).unwrap();
        let view = st.stream_view(s.id).unwrap();
        assert_eq!(view.stream.extents, vec![e1.id, e2.id]);
        assert_eq!(view.extents.iter().map(|e| e.sealed_len).collect::<Vec<_>>(), vec![Some(100), Some(10)]);
        assert_eq!(view.nodes.len(), 3);
        // A bad copy is recorded once, and only for a node that holds one.
        let bad = |node| Command::ReportBad { extent: e1.id, node };
        assert!(matches!(run(&mut st, bad(NodeId(7))), Err(MetaError::Invalid { .. })));
        let Reply::Extent(e) = run(&mut st, bad(NodeId(2))).unwrap() else { panic!() };
        assert_eq!(e.bad, vec![NodeId(2)]);
        let mut dirty = Vec::new();
        st.apply(bad(NodeId(2)), &mut dirty).unwrap();
        assert!(dirty.is_empty(), "a second report of the same copy changes nothing");
        assert_eq!(st.extents[&e1.id].bad, vec![NodeId(2)]);
        // A down node takes no new extents.
        run(&mut st, Command::NodeDown { id: NodeId(3) }).unwrap();
        let r = run(&mut st, alloc(Epoch(2), Some(e2.id)));
        assert!(matches!(r, Err(MetaError::Unavailable { .. })), "{r:?}");
        run(&mut st, Command::DeleteStream { id: s.id }).unwrap();
        assert!(st.extents.is_empty() && st.streams.is_empty());
        assert!(matches!(run(&mut st, Command::DeleteStream { id: s.id }), Err(MetaError::NoSuchStream { .. })));
    }

    /// A stream of three replicated extents, the first two sealed, the last open.
    fn three_extents(st: &mut State) -> (StreamId, [ExtentId; 3]) {
        for id in 1..=3 {
            run(st, Command::RegisterNode(node(NodeId(id)))).unwrap();
        }
        let Reply::Stream(s) = run(st, Command::CreateStream { policy: "replica:3".parse().unwrap() }).unwrap() else {
            panic!()
        };
        run(st, Command::OpenStream { id: s.id, writer: "w".into() }).unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            let after = ids.last().copied();
            let alloc =
                Command::AllocateExtent { stream: s.id, epoch: Epoch(1), after, replicas: replicas(&[1, 2, 3]) };
            let Reply::Extent(e) = run(st, alloc).unwrap() else { panic!() };
            if i < 2 {
                run(st, Command::SealExtent { extent: e.id, epoch: Epoch(1), length: 10 * (i + 1) }).unwrap();
            }
            ids.push(e.id);
        }
        (s.id, [ids[0], ids[1], ids[2]])
    }

    /// Applies `cmd`, which must succeed without changing anything.
    fn no_change(st: &mut State, cmd: Command) -> Reply {
        let before = st.clone();
        let mut dirty = Vec::new();
        let r = st.apply(cmd, &mut dirty).unwrap();
        assert_eq!(*st, before, "a skipped command changed the state");
        assert!(dirty.is_empty(), "{dirty:?}");
        r
    }

    #[test]
    fn deleted_extents_become_tombstones_until_every_copy_is_gone() {
        let mut st = State::default();
        let (s, [e1, e2, e3]) = three_extents(&mut st);
        let del = |ids: &[ExtentId]| Command::DeleteExtents { extents: ids.to_vec() };
        // The open last extent, unknown ids and an empty list: nothing is deleted.
        assert_eq!(no_change(&mut st, del(&[e3, ExtentId(99)])), Reply::Deleted(vec![]));
        assert_eq!(no_change(&mut st, del(&[])), Reply::Deleted(vec![]));
        // One batch deletes what it may and skips the rest; the id twice counts once.
        assert_eq!(run(&mut st, del(&[e1, e3, e1, e2])).unwrap(), Reply::Deleted(vec![e1, e2]));
        assert_eq!(st.streams[&s].extents, vec![e3]);
        run(&mut st, Command::SealExtent { extent: e3, epoch: Epoch(1), length: 5 }).unwrap();
        assert!(!st.extents.contains_key(&e1) && !st.extents.contains_key(&e2));
        let t = &st.tombstones[&e2];
        assert_eq!((t.stream, t.sealed_len, t.replicas.clone()), (s, Some(20), replicas(&[1, 2, 3])));
        assert_eq!(st.stream_view(s).unwrap().extents.len(), 1);
        // A retry deletes nothing more.
        assert_eq!(no_change(&mut st, del(&[e1, e2])), Reply::Deleted(vec![]));
        // Copies confirmed gone leave the tombstone, the last one removes it.
        let gone =
            |extent, nodes: &[u64]| Command::CopiesGone { extent, nodes: nodes.iter().map(|&n| NodeId(n)).collect() };
        run(&mut st, gone(e1, &[1, 3])).unwrap();
        assert_eq!(st.tombstones[&e1].replicas, replicas(&[2]));
        no_change(&mut st, gone(e1, &[1, 3, 7]));
        run(&mut st, gone(e1, &[2])).unwrap();
        assert!(!st.tombstones.contains_key(&e1));
        no_change(&mut st, gone(e1, &[2]));
        no_change(&mut st, gone(ExtentId(99), &[1]));
        // The stream's later extents are allocated as before.
        let alloc =
            |after| Command::AllocateExtent { stream: s, epoch: Epoch(1), after, replicas: replicas(&[1, 2, 3]) };
        let Reply::Extent(e4) = run(&mut st, alloc(Some(e3))).unwrap() else { panic!() };
        assert_eq!(st.streams[&s].extents, vec![e3, e4.id]);
        // A sealed last extent may go too: the stream's tail still names it, and the
        // next allocation follows it.
        assert_eq!(no_change(&mut st, del(&[e4.id])), Reply::Deleted(vec![]), "open");
        run(&mut st, Command::SealExtent { extent: e4.id, epoch: Epoch(1), length: 1 }).unwrap();
        assert_eq!(run(&mut st, del(&[e4.id])).unwrap(), Reply::Deleted(vec![e4.id]));
        assert_eq!((st.streams[&s].extents.clone(), st.streams[&s].tail), (vec![e3], Some(e4.id)));
        assert!(matches!(run(&mut st, alloc(Some(e3))), Err(MetaError::Conflict { .. })), "e3 is not the tail");
        let Reply::Extent(e5) = run(&mut st, alloc(Some(e4.id))).unwrap() else { panic!() };
        assert_eq!(st.streams[&s].extents, vec![e3, e5.id]);
        // Deleting the stream buries every extent it had, the open one too.
        run(&mut st, Command::DeleteStream { id: s }).unwrap();
        assert!(st.extents.is_empty() && st.streams.is_empty());
        assert_eq!(st.tombstones.keys().copied().collect::<Vec<_>>(), vec![e2, e3, e4.id, e5.id]);
        assert_eq!(st.tombstones[&e5.id].sealed_len, None);
        assert_eq!(st.tombstones[&e3].sealed_len, Some(5));
    }

    #[test]
    fn repair_replaces_a_copy_only_when_done_and_gc_takes_what_repair_was_making() {
        let mut st = State::default();
        let (s, [e1, e2, e3]) = three_extents(&mut st);
        run(&mut st, Command::RegisterNode(node(NodeId(4)))).unwrap();
        run(&mut st, Command::RegisterNode(node(NodeId(5)))).unwrap();
        let begin = |extent, slot, n: u64| Command::BeginRepair {
            extent,
            slot,
            copy: Replica { node: NodeId(n), device: 0 },
            at_ms: 7,
        };
        let end = |extent, slot, n: u64, done| Command::EndRepair {
            extent,
            slot,
            copy: Replica { node: NodeId(n), device: 0 },
            done,
        };
        // Refused: an open extent, a slot out of range, a node holding a copy, an
        // unknown or down node; a refusal changes nothing (checked by `run`).
        assert!(matches!(run(&mut st, begin(e3, 0, 4)), Err(MetaError::Conflict { .. })), "open");
        assert!(matches!(run(&mut st, begin(e1, 3, 4)), Err(MetaError::Invalid { .. })));
        assert!(matches!(run(&mut st, begin(e1, 0, 2)), Err(MetaError::Conflict { .. })));
        assert!(matches!(run(&mut st, begin(e1, 0, 9)), Err(MetaError::NoSuchNode { .. })));
        run(&mut st, Command::NodeDown { id: NodeId(5) }).unwrap();
        assert!(matches!(run(&mut st, begin(e1, 0, 5)), Err(MetaError::Unavailable { .. })));
        run(&mut st, Command::NodeAlive { id: NodeId(5) }).unwrap();
        // Slot 0 of e1 (on node 1, found bad) repaired onto node 4.
        run(&mut st, Command::ReportBad { extent: e1, node: NodeId(1) }).unwrap();
        run(&mut st, begin(e1, 0, 4)).unwrap();
        assert!(matches!(run(&mut st, begin(e1, 0, 5)), Err(MetaError::Conflict { .. })), "slot busy");
        assert!(matches!(run(&mut st, begin(e1, 1, 4)), Err(MetaError::Conflict { .. })), "node 4 is making one");
        assert_eq!(st.extents[&e1].replicas, replicas(&[1, 2, 3]), "nothing changes before the end");
        let Reply::Extent(e) = run(&mut st, end(e1, 0, 4, true)).unwrap() else { panic!() };
        assert_eq!((e.replicas, e.bad), (replicas(&[4, 2, 3]), vec![]));
        assert!(st.repairs.is_empty());
        // The replaced copy is a stray to delete; a retried end changes nothing.
        assert_eq!(st.tombstones[&e1].replicas, replicas(&[1]));
        no_change(&mut st, end(e1, 0, 4, true));
        // A failed repair leaves its partial copy as a stray, and the replicas alone.
        run(&mut st, begin(e1, 1, 5)).unwrap();
        run(&mut st, end(e1, 1, 5, false)).unwrap();
        assert_eq!(st.extents[&e1].replicas, replicas(&[4, 2, 3]));
        assert_eq!(st.tombstones[&e1].replicas, replicas(&[1, 5]));
        // Node 1 and 5 still hold strays: no repair onto them until they are gone.
        assert!(matches!(run(&mut st, begin(e1, 1, 5)), Err(MetaError::Conflict { .. })));
        run(&mut st, Command::CopiesGone { extent: e1, nodes: vec![NodeId(1), NodeId(5)] }).unwrap();
        assert!(!st.tombstones.contains_key(&e1) && st.extents.contains_key(&e1), "the extent lives on");
        // GC deletes e2 while repair makes a copy on node 4: the copy goes into the
        // tombstone with the replicas, and the repair's end changes nothing.
        run(&mut st, begin(e2, 2, 4)).unwrap();
        assert_eq!(run(&mut st, Command::DeleteExtents { extents: vec![e2] }).unwrap(), Reply::Deleted(vec![e2]));
        assert_eq!(st.tombstones[&e2].replicas, replicas(&[1, 2, 3, 4]));
        assert!(st.repairs.is_empty());
        no_change(&mut st, end(e2, 2, 4, true));
        assert!(matches!(run(&mut st, begin(e2, 2, 5)), Err(MetaError::NoSuchExtent { .. })));
        // A stray tombstone of a live extent is merged when the extent is deleted.
        run(&mut st, begin(e1, 1, 5)).unwrap();
        run(&mut st, end(e1, 1, 5, true)).unwrap();
        assert_eq!(st.tombstones[&e1].replicas, replicas(&[2]));
        run(&mut st, Command::DeleteStream { id: s }).unwrap();
        assert_eq!(st.tombstones[&e1].replicas, replicas(&[2, 4, 5, 3]));
        assert_eq!(st.tombstones[&e1].sealed_len, Some(10));
        // A node holding no copy can go, with the strays named on it.
        assert!(matches!(run(&mut st, Command::RemoveNode { id: NodeId(9) }), Err(MetaError::NoSuchNode { .. })));
        run(&mut st, Command::RemoveNode { id: NodeId(2) }).unwrap();
        assert_eq!(st.tombstones[&e1].replicas, replicas(&[4, 5, 3]));
        assert!(!st.nodes.contains_key(&NodeId(2)));
    }

    #[test]
    fn a_node_holding_copies_cannot_be_removed() {
        let mut st = State::default();
        let (_, [e1, ..]) = three_extents(&mut st);
        assert!(matches!(run(&mut st, Command::RemoveNode { id: NodeId(1) }), Err(MetaError::Conflict { .. })));
        run(&mut st, Command::RegisterNode(node(NodeId(4)))).unwrap();
        let copy = Replica { node: NodeId(4), device: 0 };
        run(&mut st, Command::BeginRepair { extent: e1, slot: 0, copy, at_ms: 1 }).unwrap();
        assert!(matches!(run(&mut st, Command::RemoveNode { id: NodeId(4) }), Err(MetaError::Conflict { .. })));
    }

    #[test]
    fn a_create_retried_with_its_token_gets_the_same_stream() {
        let mut st = State::default();
        for id in 1..=3 {
            run(&mut st, Command::RegisterNode(node(NodeId(id)))).unwrap();
        }
        let once = |token| Command::CreateStreamOnce { policy: "replica:3".parse().unwrap(), token };
        let Reply::Stream(a) = run(&mut st, once(7)).unwrap() else { panic!() };
        // The retry changes nothing and answers the same stream.
        assert_eq!(no_change(&mut st, once(7)), Reply::Stream(a.clone()));
        let Reply::Stream(b) = run(&mut st, once(8)).unwrap() else { panic!() };
        assert_ne!(a.id, b.id);
        assert_eq!(st.streams.len(), 2);
        // Deleting the stream forgets its token.
        run(&mut st, Command::DeleteStream { id: a.id }).unwrap();
        assert!(!st.created.contains_key(&7));
        let too_wide = Command::CreateStreamOnce { policy: "ec:4+2".parse().unwrap(), token: 9 };
        assert!(matches!(run(&mut st, too_wide), Err(MetaError::NotEnoughNodes { .. })));
        assert!(!st.created.contains_key(&9), "a refused create records no token");
    }

    #[test]
    fn registration_is_validated() {
        let mut st = State::default();
        let mut r = node(NodeId(1));
        r.devices.clear();
        assert!(run(&mut st, Command::RegisterNode(r)).is_err());
        let mut r = node(NodeId(1));
        r.devices[0].free_bytes = u64::MAX;
        assert!(run(&mut st, Command::RegisterNode(r)).is_err());
        run(&mut st, Command::RegisterNode(node(NodeId(1)))).unwrap();
        let mut r = node(NodeId(2));
        r.addr = node(NodeId(1)).addr;
        assert!(matches!(run(&mut st, Command::RegisterNode(r)), Err(MetaError::Conflict { .. })));
        // Re-registering (a restart) keeps a draining node draining, and so does an
        // outage; an admin's `up` ends draining.
        run(&mut st, Command::SetNodeState { id: NodeId(1), state: NodeState::Draining }).unwrap();
        run(&mut st, Command::RegisterNode(node(NodeId(1)))).unwrap();
        assert_eq!(st.nodes[&NodeId(1)].state, NodeState::Draining);
        run(&mut st, Command::NodeDown { id: NodeId(1) }).unwrap();
        assert_eq!(st.nodes[&NodeId(1)].state, NodeState::Down);
        run(&mut st, Command::NodeAlive { id: NodeId(1) }).unwrap();
        assert_eq!(st.nodes[&NodeId(1)].state, NodeState::Draining);
        run(&mut st, Command::SetNodeState { id: NodeId(1), state: NodeState::Up }).unwrap();
        run(&mut st, Command::NodeDown { id: NodeId(1) }).unwrap();
        run(&mut st, Command::NodeAlive { id: NodeId(1) }).unwrap();
        assert_eq!(st.nodes[&NodeId(1)].state, NodeState::Up);
        assert!(matches!(
            run(&mut st, Command::NodeAlive { id: NodeId(9) }),
            Err(MetaError::NoSuchNode { id: NodeId(9) })
        ));
    }
}
