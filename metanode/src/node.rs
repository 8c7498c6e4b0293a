//! One metanode: the Raft instance, the shared state it applies to, the leader's soft
//! state (heartbeats), and the operations the HTTP API exposes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::DataNodeClient;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, SnapshotPolicy};
use parking_lot::Mutex;
use proto::auth::Role;
use proto::meta::{
    AllocateExtent, DeviceInfo, ExtentInfo, Heartbeat, Member, MemberId, MetaError, NodeInfo, NodeState, OpenStream,
    Policy, RegisterNode, ReportBad, SealExtent, Status, StreamId, StreamInfo, StreamView, Tombstone,
};
use proto::{Epoch, ExtentError, ExtentId, NodeId};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::limits::{
    COMMIT_TIMEOUT, DELETE_EXTENTS_MAX, ELECTION_MS_DEFAULT, FENCE_TIMEOUT_DEFAULT, HEALTH_PERIOD_MIN,
    HEARTBEAT_MS_DEFAULT, NODE_GRACE_DEFAULT, SNAPSHOT_LOGS_DEFAULT,
};
use crate::network::Network;
use crate::placement::{self, Candidate};
use crate::state::{Command, Reply};
use crate::store::{self, LogStore, Shared, StateMachine};
use crate::TypeConfig;

/// Everything a metanode process is started with.
/// What a fence found of one copy of an open extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// Its record chain recovered whole: it holds every append it acknowledged.
    Whole,
    /// Its chain was cut short by damage (`ExtentStat::cut`).
    Cut,
    /// The datanode does not have it.
    Absent,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub id: MemberId,
    /// Address peers and clients reach this metanode at.
    pub advertise: String,
    pub data_dir: PathBuf,
    /// The founding members: the one with the smallest id initializes the cluster
    /// if it has never been initialized. Empty for a member added later.
    pub init: BTreeMap<MemberId, String>,
    pub heartbeat_ms: u64,
    pub election_ms: (u64, u64),
    /// A datanode silent this long is marked down (through Raft).
    pub node_grace: Duration,
    /// Build a snapshot (and purge the log before it) every this many entries.
    pub snapshot_logs: u64,
    pub placement_seed: Option<u64>,
    /// How long the opener of a stream waits for each replica's fence.
    pub fence_timeout: Duration,
    /// The cluster secrets every request must be signed with (`None`: requests are
    /// not checked, which the binary allows on loopback only). Its member secret signs
    /// this member's Raft RPCs.
    pub keyring: Option<proto::auth::Keyring>,
    /// A datanode down this long has its copies repaired elsewhere.
    pub repair_delay: Duration,
    /// Repairs in flight at once, cluster-wide.
    pub repair_concurrency: usize,
    /// Repairs writing onto one datanode at once.
    pub repair_per_node: usize,
    /// Rebalance while (max - min) / max of the datanodes' used fractions is above
    /// this (0: never).
    pub rebalance_threshold: f64,
    /// ... and the bytes that must move to even them out reach this.
    pub rebalance_min_bytes: u64,
}

impl Settings {
    pub fn new(id: MemberId, advertise: String, data_dir: PathBuf) -> Settings {
        Settings {
            id,
            advertise,
            data_dir,
            init: BTreeMap::new(),
            heartbeat_ms: HEARTBEAT_MS_DEFAULT,
            election_ms: ELECTION_MS_DEFAULT,
            node_grace: NODE_GRACE_DEFAULT,
            snapshot_logs: SNAPSHOT_LOGS_DEFAULT,
            placement_seed: None,
            fence_timeout: FENCE_TIMEOUT_DEFAULT,
            keyring: None,
            repair_delay: crate::limits::REPAIR_DELAY_DEFAULT,
            repair_concurrency: crate::limits::REPAIR_CONCURRENCY_DEFAULT,
            repair_per_node: crate::limits::REPAIRS_PER_NODE_DEFAULT,
            rebalance_threshold: crate::limits::REBALANCE_THRESHOLD_DEFAULT,
            rebalance_min_bytes: crate::limits::REBALANCE_MIN_BYTES_DEFAULT,
        }
    }
}

/// Heartbeat soft state, in the leader's memory only.
#[derive(Default)]
struct Soft {
    /// When this member last became leader; silence is measured from here at most.
    leader_since: Option<Instant>,
    seen: HashMap<NodeId, (Instant, Vec<DeviceInfo>)>,
    /// Extents placed per (node, device) since the node's last heartbeat: placement
    /// reserves room for them until a heartbeat shows what they took.
    placed: HashMap<(NodeId, u32), u64>,
}

impl Soft {
    /// A fresh report of `node`'s devices, which shows the extents placed before it.
    fn report(&mut self, node: NodeId, devices: Vec<DeviceInfo>) {
        self.seen.insert(node, (Instant::now(), devices));
        self.placed.retain(|k, _| k.0 != node);
    }
}

pub struct MetaNode {
    pub id: MemberId,
    pub raft: Raft<TypeConfig>,
    pub shared: Arc<Shared>,
    sm: StateMachine,
    pub(crate) settings: Settings,
    soft: Mutex<Soft>,
    pub(crate) rng: Mutex<StdRng>,
    pub(crate) repair: Mutex<crate::repair::RepairSoft>,
    /// Wakes the repair loop before its period is up: a repair ended, so its slot is
    /// free for the next.
    pub(crate) repair_wake: Arc<tokio::sync::Notify>,
    replay: proto::auth::ReplayGuard,
    /// Budget of request bodies read before their signature is checked, in KiB.
    unverified: Arc<tokio::sync::Semaphore>,
}

pub type Result<T> = std::result::Result<T, MetaError>;

fn not_leader(f: ForwardToLeader<u64, BasicNode>) -> MetaError {
    let leader = f.leader_id.zip(f.leader_node).map(|(id, n)| Member { id, addr: n.addr });
    MetaError::NotLeader { leader }
}

impl MetaNode {
    pub async fn start(settings: Settings) -> anyhow::Result<Arc<MetaNode>> {
        std::fs::create_dir_all(&settings.data_dir)?;
        // The store is the metanode's alone: its directory is 0700 (RocksDB makes its
        // files with the process's umask).
        std::fs::set_permissions(&settings.data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let db = store::open_db(&settings.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot open the metanode store in {}: {e}", settings.data_dir.display()))?;
        let log = LogStore::new(db.clone());
        let sm = StateMachine::open(db).map_err(|e| anyhow::anyhow!("cannot load the state machine: {e}"))?;
        let shared = sm.shared.clone();
        let config = openraft::Config {
            cluster_name: "strata-meta".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_ms.0,
            election_timeout_max: settings.election_ms.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_logs),
            max_in_snapshot_log_to_keep: 1000,
            // Chunks go as JSON (a byte array is a list of numbers, up to 4 bytes of
            // text per byte): small enough that a chunk's request stays well under the
            // Raft routes' body limit whatever the state's size.
            snapshot_max_chunk_size: crate::limits::SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: crate::limits::SNAPSHOT_CHUNK_TIMEOUT.as_millis() as u64,
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::new(
            settings.id,
            Arc::new(config),
            Network::new(settings.keyring.as_ref().and_then(|k| k.credential(Role::Member))),
            log,
            sm.clone(),
        )
        .await?;
        let rng = match settings.placement_seed {
            Some(s) => StdRng::seed_from_u64(s ^ settings.id),
            None => StdRng::from_entropy(),
        };
        let node = Arc::new(MetaNode {
            id: settings.id,
            raft,
            shared,
            sm,
            settings,
            soft: Mutex::new(Soft::default()),
            rng: Mutex::new(rng),
            repair: Mutex::default(),
            repair_wake: Arc::default(),
            replay: Default::default(),
            unverified: Arc::new(tokio::sync::Semaphore::new(crate::limits::UNVERIFIED_BODIES_BYTES_MAX / 1024)),
        });
        node.maybe_initialize().await?;
        tokio::spawn(health_loop(Arc::downgrade(&node)));
        tokio::spawn(crate::repair::repair_loop(Arc::downgrade(&node)));
        Ok(node)
    }

    async fn maybe_initialize(&self) -> anyhow::Result<()> {
        let Some((&first, _)) = self.settings.init.iter().next() else { return Ok(()) };
        if !self.settings.init.contains_key(&self.id) {
            anyhow::bail!("--init lists members {:?} but not this metanode's id {}", self.settings.init, self.id);
        }
        if first != self.id || self.raft.is_initialized().await? {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> =
            self.settings.init.iter().map(|(&id, addr)| (id, BasicNode { addr: addr.clone() })).collect();
        tracing::info!("initializing the cluster with members {members:?}");
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => {
                tracing::info!("not initializing: {e}");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn keyring(&self) -> Option<&proto::auth::Keyring> {
        self.settings.keyring.as_ref()
    }

    /// What request bodies read before their signatures are checked may hold, in KiB.
    pub fn unverified_bodies(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.unverified
    }

    /// Signed requests seen lately (a replayed one is refused).
    pub fn replay_guard(&self) -> &proto::auth::ReplayGuard {
        &self.replay
    }

    /// Proposes `cmd` and waits until it is committed and applied.
    pub async fn write(&self, cmd: Command) -> Result<Reply> {
        self.require_voter()?;
        let r = tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(cmd)).await.map_err(|_| {
            MetaError::NoQuorum { msg: format!("metanode {}: no commit within {COMMIT_TIMEOUT:?}", self.id) }
        })?;
        match r {
            Ok(r) => r.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(f)),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(MetaError::invalid(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(MetaError::unavailable(f.to_string())),
        }
    }

    /// Waits until this member's state reflects everything committed before the call
    /// (a read index confirmed by a quorum): reads after it are linearizable.
    pub async fn linearizable(&self) -> Result<()> {
        self.require_voter()?;
        let r = tokio::time::timeout(COMMIT_TIMEOUT, self.raft.ensure_linearizable()).await.map_err(|_| {
            MetaError::NoQuorum { msg: format!("metanode {}: no read index within {COMMIT_TIMEOUT:?}", self.id) }
        })?;
        match r {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(not_leader(f)),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(MetaError::NoQuorum { msg: e.to_string() })
            }
            Err(RaftError::Fatal(f)) => Err(MetaError::unavailable(f.to_string())),
        }
    }

    /// A member removed from the group (or not yet added) serves nothing: it would
    /// wait for a commit that never comes.
    fn require_voter(&self) -> Result<()> {
        let m = self.raft.metrics().borrow().clone();
        if m.membership_config.membership().voter_ids().any(|v| v == self.id) {
            Ok(())
        } else {
            Err(self.leader_hint())
        }
    }

    fn leader_hint(&self) -> MetaError {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader.filter(|&l| l != self.id).and_then(|l| {
            m.membership_config.membership().get_node(&l).map(|n| Member { id: l, addr: n.addr.clone() })
        });
        MetaError::NotLeader { leader }
    }

    fn require_leader(&self) -> Result<()> {
        if self.raft.metrics().borrow().current_leader == Some(self.id) {
            Ok(())
        } else {
            Err(self.leader_hint())
        }
    }

    // ---- datanodes

    pub async fn register(&self, r: RegisterNode) -> Result<NodeInfo> {
        let devices = r.devices.clone();
        let id = r.id;
        let Reply::Node(n) = self.write(Command::RegisterNode(r)).await? else { unreachable!() };
        self.soft.lock().report(id, devices);
        Ok(n)
    }

    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<()> {
        self.require_leader()?;
        let state = self.shared.state.read().nodes.get(&hb.id).map(|n| n.state);
        let Some(state) = state else { return Err(MetaError::NoSuchNode { id: hb.id }) };
        self.soft.lock().report(hb.id, hb.devices);
        if state == NodeState::Down {
            tracing::info!("datanode {} is back up", hb.id);
            self.write(Command::NodeAlive { id: hb.id }).await?;
        }
        Ok(())
    }

    pub async fn set_node_state(&self, id: NodeId, state: NodeState) -> Result<NodeInfo> {
        let Reply::Node(n) = self.write(Command::SetNodeState { id, state }).await? else { unreachable!() };
        Ok(n)
    }

    /// Pauses rebalancing, or lets it run again (repair and drain go on either way).
    pub async fn set_rebalance(&self, paused: bool) -> Result<()> {
        self.write(Command::SetRebalance { paused }).await.map(|_| ())
    }

    /// Forgets a datanode that holds no copy any more.
    pub async fn remove_node(&self, id: NodeId) -> Result<()> {
        self.write(Command::RemoveNode { id }).await?;
        self.soft.lock().seen.remove(&id);
        Ok(())
    }

    /// The datanodes, each with the device usage of its last heartbeat to this leader
    /// (the replicated state holds what it registered with; heartbeats are not logged).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.linearizable().await?;
        let mut nodes: Vec<NodeInfo> = self.shared.state.read().nodes.values().cloned().collect();
        self.with_reported_devices(&mut nodes);
        Ok(nodes)
    }

    /// Puts in `nodes` the devices their last heartbeat to this member reported, where
    /// one did (a leader hears them; a follower keeps what the nodes registered with).
    /// Takes no lock of the state: call it without one.
    pub(crate) fn with_reported_devices(&self, nodes: &mut [NodeInfo]) {
        let soft = self.soft.lock();
        for n in nodes {
            if let Some((_, devices)) = soft.seen.get(&n.id) {
                n.devices = devices.clone();
            }
        }
    }

    // ---- streams and extents

    /// Creates a stream; with a `token`, a retry with the same token gets the same one.
    pub async fn create_stream(&self, policy: Policy, token: Option<u64>) -> Result<StreamInfo> {
        let cmd = match token {
            Some(token) => Command::CreateStreamOnce { policy, token },
            None => Command::CreateStream { policy },
        };
        let Reply::Stream(s) = self.write(cmd).await? else { unreachable!() };
        Ok(s)
    }

    pub async fn stream(&self, id: StreamId) -> Result<StreamView> {
        self.linearizable().await?;
        self.shared.state.read().stream_view(id)
    }

    pub async fn streams(&self) -> Result<Vec<StreamInfo>> {
        self.linearizable().await?;
        Ok(self.shared.state.read().streams.values().cloned().collect())
    }

    pub async fn extent(&self, id: ExtentId) -> Result<ExtentInfo> {
        self.linearizable().await?;
        self.shared.state.read().extents.get(&id).cloned().ok_or(MetaError::NoSuchExtent { id })
    }

    pub async fn delete_stream(&self, id: StreamId) -> Result<()> {
        self.write(Command::DeleteStream { id }).await.map(|_| ())
    }

    /// Deletes the sealed extents of `ids`; answers those it deleted. Their copies stay on the datanodes, named by tombstones.
    pub async fn delete_extents(&self, ids: Vec<ExtentId>) -> Result<Vec<ExtentId>> {
        if ids.len() > DELETE_EXTENTS_MAX {
            return Err(MetaError::invalid(format!("at most {DELETE_EXTENTS_MAX} extents per delete")));
        }
        let Reply::Deleted(d) = self.write(Command::DeleteExtents { extents: ids }).await? else { unreachable!() };
        Ok(d)
    }

    pub async fn tombstones(&self) -> Result<Vec<Tombstone>> {
        self.linearizable().await?;
        Ok(self.shared.state.read().tombstones.values().cloned().collect())
    }

    /// Records that `nodes` deleted their copy of the deleted `extent`.
    pub async fn copies_gone(&self, extent: ExtentId, nodes: Vec<NodeId>) -> Result<()> {
        if nodes.len() > proto::meta::POLICY_WIDTH_MAX as usize {
            return Err(MetaError::invalid(format!("an extent has at most {} copies", proto::meta::POLICY_WIDTH_MAX)));
        }
        self.write(Command::CopiesGone { extent, nodes }).await.map(|_| ())
    }

    /// Chooses replicas on the leader (placement needs its heartbeat soft state) and
    /// commits the allocation.
    pub async fn allocate(&self, stream: StreamId, req: AllocateExtent) -> Result<ExtentInfo> {
        self.require_leader()?;
        let replicas = {
            let st = self.shared.state.read();
            let s = st.streams.get(&stream).ok_or(MetaError::NoSuchStream { id: stream })?;
            let mut soft = self.soft.lock();
            let cands: Vec<Candidate<'_>> = st.nodes.values().map(|n| candidate(&soft, n)).collect();
            let replicas = placement::place(&cands, s.policy, &mut *self.rng.lock())?;
            for r in &replicas {
                *soft.placed.entry((r.node, r.device)).or_default() += 1;
            }
            replicas
        };
        let cmd = Command::AllocateExtent { stream, epoch: req.epoch, after: req.after, replicas };
        let Reply::Extent(e) = self.write(cmd).await? else { unreachable!() };
        Ok(e)
    }

    pub async fn seal(&self, extent: ExtentId, req: SealExtent) -> Result<ExtentInfo> {
        let Reply::Extent(e) = self.write(Command::SealExtent { extent, epoch: req.epoch, length: req.length }).await?
        else {
            unreachable!()
        };
        Ok(e)
    }

    /// Records that a reader found `node`'s copy of `extent` bad.
    pub async fn report_bad(&self, extent: ExtentId, req: ReportBad) -> Result<ExtentInfo> {
        if req.why.len() > 4096 {
            return Err(MetaError::invalid("a report's reason is at most 4096 bytes"));
        }
        tracing::warn!("extent {extent}: datanode {} has a bad copy: {}", req.node, req.why);
        let Reply::Extent(e) = self.write(Command::ReportBad { extent, node: req.node }).await? else { unreachable!() };
        Ok(e)
    }

    /// Opens `id` for writing: bumps its epoch, then seals the previous writer's open
    /// extent at the smallest length among the replicas it can reach, after fencing
    /// each of them (see `ExtentStore::fence`).
    pub async fn open(&self, id: StreamId, req: OpenStream) -> Result<StreamView> {
        if req.writer.len() > 256 {
            return Err(MetaError::invalid("writer names are at most 256 bytes"));
        }
        self.open_by(id, Command::OpenStream { id, writer: req.writer }).await
    }

    /// Commits `cmd` (an open of stream `id`), then seals the previous writer's open
    /// extent.
    async fn open_by(&self, id: StreamId, cmd: Command) -> Result<StreamView> {
        let Reply::Stream(s) = self.write(cmd).await? else { unreachable!() };
        if let Some(&tail) = s.extents.last() {
            let (e, nodes) = {
                let st = self.shared.state.read();
                let e = st.extents.get(&tail).cloned().ok_or(MetaError::NoSuchExtent { id: tail })?;
                let nodes: HashMap<NodeId, String> =
                    e.replicas.iter().filter_map(|r| st.nodes.get(&r.node).map(|n| (n.id, n.addr.clone()))).collect();
                (e, nodes)
            };
            if e.sealed_len.is_none() {
                self.seal_abandoned(&e, &nodes, s.epoch).await?;
            }
        }
        self.shared.state.read().stream_view(id)
    }

    /// Seals `extent` if it is still open, the way its stream's next opener would: an
    /// open under a new epoch fences every copy, then the seal at the smallest whole
    /// length. For repair, when the extent's writer is taken for dead (see `repair.rs`).
    pub(crate) async fn seal_orphan(&self, extent: ExtentId) -> Result<()> {
        let stream = {
            let st = self.shared.state.read();
            match st.extents.get(&extent) {
                Some(e) if e.sealed_len.is_none() => e.stream,
                _ => return Ok(()),
            }
        };
        tracing::warn!("extent {extent} of stream {stream}: open with a copy lost; fencing its writer and sealing it");
        let writer = format!("repair: sealing extent {extent}, open with a copy lost");
        match self.open_by(stream, Command::OpenStreamIf { id: stream, tail: extent, writer }).await {
            Ok(_) => Ok(()),
            // Its writer sealed it and moved on meanwhile: nothing to do.
            Err(MetaError::Conflict { .. })
                if self.shared.state.read().extents.get(&extent).is_none_or(|e| e.sealed_len.is_some()) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Fences every copy of `e` at `epoch` and seals it at the length every
    /// acknowledged append lies below (see the rules inside).
    async fn seal_abandoned(&self, e: &ExtentInfo, nodes: &HashMap<NodeId, String>, epoch: Epoch) -> Result<()> {
        let timeout = self.settings.fence_timeout;
        let extent = e.id;
        let fences = e.replicas.iter().map(|r| {
            let (node, addr) = (r.node, nodes.get(&r.node).cloned());
            async move {
                let addr = addr.ok_or_else(|| format!("datanode {node} unknown"))?;
                let fence = async {
                    let c = DataNodeClient::connect_node(&addr, node).await.map_err(|e| e.to_string())?;
                    match c.fence(extent, epoch).await {
                        Ok(st) if st.cut => Ok((Some(c), st.length, Copy::Cut)),
                        Ok(st) => Ok((Some(c), st.length, Copy::Whole)),
                        Err(client::ClientError::Extent(ExtentError::NotFound { .. })) => Ok((None, 0, Copy::Absent)),
                        Err(err) => Err(err.to_string()),
                    }
                };
                tokio::time::timeout(timeout, fence).await.map_err(|_| format!("fence timed out after {timeout:?}"))?
            }
        });
        let results = client::join_all(fences).await;
        // (node, connection if the copy exists, its length, what it is) of each answer.
        let mut answers = Vec::new();
        let mut waiting = 0;
        for (r, res) in e.replicas.iter().zip(results) {
            match res {
                Ok((c, l, copy)) => answers.push((r.node, c, l, copy)),
                Err(why) => {
                    tracing::warn!("extent {}: replica on datanode {} unreachable: {why}", e.id, r.node);
                    if !self.lost_for_good(r.node) {
                        waiting += 1;
                    }
                }
            }
        }
        // Every acknowledged byte is on every copy: any one whole replica holds them all;
        // an EC extent needs K whole shards to be sure that what lies below the smallest
        // length can be decoded. A cut copy (a damaged batch header found by its
        // datanode's recovery) may hold less than was acknowledged, and an absent one (a
        // datanode back without it: a replaced disk) holds nothing, so neither counts:
        // the length is the smallest among the whole ones. Without enough of those, the
        // open waits (is refused, to be retried) while a copy that may come back has not
        // answered; once none can, the smallest length of the copies there is taken,
        // and whatever was acknowledged past it is lost (an error says so).
        let need = match e.policy {
            Policy::Replica { .. } => 1,
            Policy::Ec { k, .. } => k as usize,
        };
        let whole = answers.iter().filter(|a| a.3 == Copy::Whole).count();
        let length = if whole >= need {
            answers.iter().filter(|a| a.3 == Copy::Whole).map(|a| a.2).min().unwrap_or(0)
        } else if waiting == 0 {
            let l = answers.iter().filter(|a| a.3 != Copy::Absent).map(|a| a.2).min().unwrap_or(0);
            tracing::error!(
                "extent {}: only {whole} whole copies ({need} needed) and no other can answer; sealing at the smallest \
                 length there is, {l}: appends acknowledged past it are lost",
                e.id
            );
            l
        } else {
            return Err(MetaError::unavailable(format!(
                "{} of the {} copies of extent {} ({}) answered, {whole} of them whole; {need} whole ones are needed to \
                 seal it, or every copy that may come back; retry the open",
                answers.len(),
                e.replicas.len(),
                e.id,
                e.policy
            )));
        };
        // Copies short of the length are bad: reported first, so that a crash before the
        // seal is committed leaves them marked (repair replaces them once sealed).
        let short = |a: &(NodeId, Option<DataNodeClient>, u64, Copy)| a.3 != Copy::Whole && a.2 < length;
        for a in answers.iter().filter(|a| short(a)) {
            tracing::error!(
                "extent {}: the copy on datanode {} holds {} of {length} bytes; repair replaces it",
                e.id,
                a.0,
                a.2
            );
            self.write(Command::ReportBad { extent: e.id, node: a.0 }).await?;
        }
        let reached: Vec<DataNodeClient> = answers.into_iter().filter(|a| !short(a)).filter_map(|a| a.1).collect();
        for c in reached {
            match tokio::time::timeout(timeout, c.seal(e.id, length)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!("extent {}: sealing a replica at {length} failed: {err}", e.id),
                Err(_) => tracing::warn!("extent {}: sealing a replica at {length} timed out", e.id),
            }
        }
        tracing::info!("extent {} of stream {} sealed at {length} by the opener (epoch {epoch})", e.id, e.stream);
        self.write(Command::SealExtent { extent: e.id, epoch, length }).await?;
        Ok(())
    }

    // ---- membership and status

    pub async fn add_member(&self, m: Member) -> Result<()> {
        self.require_leader()?;
        let map = |e: RaftError<u64, ClientWriteError<u64, BasicNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f),
            other => MetaError::conflict(other.to_string()),
        };
        self.raft.add_learner(m.id, BasicNode { addr: m.addr.clone() }, true).await.map_err(map)?;
        let mut voters = std::collections::BTreeSet::new();
        voters.insert(m.id);
        self.raft.change_membership(ChangeMembers::AddVoterIds(voters), false).await.map_err(map)?;
        tracing::info!("metanode {} ({}) is a voter", m.id, m.addr);
        Ok(())
    }

    pub async fn remove_member(&self, id: MemberId) -> Result<()> {
        self.require_leader()?;
        let voter = self.raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == id);
        if !voter {
            return Err(MetaError::invalid(format!("metanode {id} is not a voter")));
        }
        let voters: std::collections::BTreeSet<u64> = [id].into();
        self.raft.change_membership(ChangeMembers::RemoveVoters(voters), false).await.map_err(|e| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f),
            other => MetaError::conflict(other.to_string()),
        })?;
        tracing::info!("metanode {id} removed from the voters");
        Ok(())
    }

    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let member = |id: &u64| Member { id: *id, addr: mem.get_node(id).map(|n| n.addr.clone()).unwrap_or_default() };
        let voters: Vec<Member> = mem.voter_ids().map(|id| member(&id)).collect();
        let learners: Vec<Member> = mem.learner_ids().map(|id| member(&id)).collect();
        let st = self.shared.state.read();
        Status {
            id: self.id,
            leader: m.current_leader.map(|l| member(&l)),
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            voters,
            learners,
            nodes: st.nodes.len(),
            streams: st.streams.len(),
            extents: st.extents.len(),
            tombstones: st.tombstones.len(),
        }
    }

    /// Extents by policy and state, as this member's state has them.
    pub fn extent_counts(&self) -> Vec<proto::meta::ExtentCounts> {
        let st = self.shared.state.read();
        let mut by: std::collections::BTreeMap<String, proto::meta::ExtentCounts> = Default::default();
        for e in st.extents.values() {
            let c = by.entry(e.policy.to_string()).or_insert(proto::meta::ExtentCounts {
                policy: e.policy,
                open: 0,
                sealed: 0,
                sealed_bytes: 0,
            });
            match e.sealed_len {
                Some(l) => {
                    c.sealed += 1;
                    c.sealed_bytes += l;
                }
                None => c.open += 1,
            }
        }
        by.into_values().collect()
    }

    /// Every datanode as placement sees it now.
    pub(crate) fn candidates<'a>(&self, st: &'a crate::state::State) -> Vec<Candidate<'a>> {
        let soft = self.soft.lock();
        st.nodes.values().map(|n| candidate(&soft, n)).collect()
    }

    /// Bytes of RocksDB keys and values the state machine holds.
    pub fn state_bytes(&self) -> u64 {
        self.sm.state_bytes()
    }

    /// One round of the leader's health check: marks silent datanodes down.
    async fn check_health(&self) {
        let is_leader = self.raft.metrics().borrow().current_leader == Some(self.id);
        let now = Instant::now();
        let silent: Vec<NodeId> = {
            let mut soft = self.soft.lock();
            if !is_leader {
                // Heartbeats received in an earlier term say nothing about the next one.
                *soft = Soft::default();
                return;
            }
            let since = *soft.leader_since.get_or_insert(now);
            let st = self.shared.state.read();
            st.nodes
                .values()
                .filter(|n| n.state != NodeState::Down)
                .filter(|n| {
                    let last = soft.seen.get(&n.id).map_or(since, |s| s.0.max(since));
                    now.duration_since(last) > self.settings.node_grace
                })
                .map(|n| n.id)
                .collect()
        };
        for id in silent {
            tracing::warn!("datanode {id} silent for more than {:?}: marking it down", self.settings.node_grace);
            if let Err(e) = self.write(Command::NodeDown { id }).await {
                tracing::warn!("marking datanode {id} down failed: {e}");
            }
        }
    }
}

/// `n` as placement sees it: the devices of its last heartbeat (else of its
/// registration) and the extents placed on each since.
fn candidate<'a>(soft: &Soft, n: &'a NodeInfo) -> Candidate<'a> {
    let devices = soft.seen.get(&n.id).map_or(&n.devices, |s| &s.1);
    let devices = devices
        .iter()
        .map(|d| placement::Device {
            id: d.id,
            free_bytes: d.free_bytes,
            free_slots: d.free_slots,
            placed: soft.placed.get(&(n.id, d.id)).copied().unwrap_or(0),
        })
        .collect();
    Candidate { node: n, devices }
}

async fn health_loop(node: std::sync::Weak<MetaNode>) {
    loop {
        let period = match node.upgrade() {
            Some(n) => {
                n.check_health().await;
                n.settings.node_grace / 4
            }
            None => return,
        };
        tokio::time::sleep(period.max(HEALTH_PERIOD_MIN)).await;
    }
}
