//! The metanode's data model and API types, shared by the metanode (server) and the
//! client library. The metanode speaks JSON over HTTP; every type here is the JSON
//! body of a request or a response (see `metanode/API.md`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::StreamId;
use crate::{Epoch, ExtentId, NodeId};

/// Id of a metanode (a Raft member). Independent of datanode ids.
pub type MemberId = u64;

/// Widest redundancy policy accepted (replicas, or data plus parity shards).
pub const POLICY_WIDTH_MAX: u8 = 32;

/// A stream's redundancy policy: `replica:N` or `ec:K+M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Policy {
    Replica { n: u8 },
    Ec { k: u8, m: u8 },
}

impl Policy {
    /// Number of datanodes one extent of this policy occupies.
    pub fn width(&self) -> usize {
        match *self {
            Policy::Replica { n } => n as usize,
            Policy::Ec { k, m } => k as usize + m as usize,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Replica { n } => write!(f, "replica:{n}"),
            Policy::Ec { k, m } => write!(f, "ec:{k}+{m}"),
        }
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Policy, String> {
        let bad = || format!("bad redundancy policy {s:?}: expected replica:N (1..={POLICY_WIDTH_MAX}) or ec:K+M");
        let num = |v: &str| v.parse::<u8>().map_err(|_| bad());
        let p = if let Some(n) = s.strip_prefix("replica:") {
            Policy::Replica { n: num(n)? }
        } else if let Some(km) = s.strip_prefix("ec:") {
            let (k, m) = km.split_once('+').ok_or_else(bad)?;
            Policy::Ec { k: num(k)?, m: num(m)? }
        } else {
            return Err(bad());
        };
        let ok = match p {
            Policy::Replica { n } => n >= 1,
            Policy::Ec { k, m } => k >= 1 && m >= 1,
        };
        if !ok || p.width() > POLICY_WIDTH_MAX as usize {
            return Err(bad());
        }
        Ok(p)
    }
}

impl TryFrom<String> for Policy {
    type Error = String;
    fn try_from(s: String) -> Result<Policy, String> {
        s.parse()
    }
}

impl From<Policy> for String {
    fn from(p: Policy) -> String {
        p.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeating; receives new extents.
    Up,
    /// Missed heartbeats for longer than the grace period.
    Down,
    /// Up, but receives no new extents (an admin is emptying it).
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: u32,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    /// Metadata slots left for new extents, when the device's store has a fixed number
    /// of them (the portable store): a device can run out of slots before bytes, and
    /// placement skips it then. `None`: no such limit, or an older datanode.
    #[serde(default)]
    pub free_slots: Option<u64>,
}

/// A datanode as registered with the metanode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// `host:port` of its extent RPC listener.
    pub addr: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub rack: String,
    pub devices: Vec<DeviceInfo>,
    pub state: NodeState,
    /// An admin asked to drain it; kept while it is down, so it comes back draining.
    #[serde(default)]
    pub draining: bool,
}

impl NodeInfo {
    /// Its state as operators see it: `down`, `draining` (asked to, or set so) or `up`.
    pub fn shown_state(&self) -> &'static str {
        match (self.state, self.draining) {
            (NodeState::Down, _) => "down",
            (NodeState::Draining, _) | (_, true) => "draining",
            (NodeState::Up, false) => "up",
        }
    }
}

/// Body of `POST /v1/nodes/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNode {
    pub id: NodeId,
    pub addr: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub rack: String,
    pub devices: Vec<DeviceInfo>,
}

/// Body of `POST /v1/nodes/heartbeat`: soft state, kept in the leader's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: NodeId,
    pub devices: Vec<DeviceInfo>,
}

/// One copy (or one shard) of an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Replica {
    pub node: NodeId,
    pub device: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentInfo {
    pub id: ExtentId,
    pub stream: StreamId,
    /// The stream's policy: how an append's bytes lie on `replicas`.
    pub policy: Policy,
    /// Replicas in order; for `ec:K+M`, shard i is on `replicas[i]` (data shards first).
    pub replicas: Vec<Replica>,
    /// The stream epoch the extent was allocated under.
    pub epoch: Epoch,
    /// `Some(len)` once sealed: the extent's final length, immutable. For `ec:K+M` it is
    /// the length of each shard (every shard of an extent has the same length).
    pub sealed_len: Option<u64>,
    /// Datanodes whose copy a reader found bad (checksum mismatch or corruption the
    /// datanode reported): readers try them last, and repair will replace them.
    #[serde(default)]
    pub bad: Vec<NodeId>,
}

/// A copy being made (by repair) to replace the copy in `slot` of an extent's
/// replicas. Until it is committed it is no replica: readers and writers never see it,
/// and if the extent is deleted meanwhile, the copy goes with it (into the tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub slot: u32,
    pub copy: Replica,
    /// When the repair began (ms since the epoch, the leader's clock).
    pub since_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub id: StreamId,
    pub policy: Policy,
    /// Bumped by every open for writing; only the newest writer may allocate or seal.
    pub epoch: Epoch,
    /// Who opened the stream last (free text: host, process, purpose).
    pub writer: Option<String>,
    /// Extent ids in stream order; only the last may be open. GC removes sealed ones
    /// once nothing names their bytes, the last one too.
    pub extents: Vec<ExtentId>,
    /// The last extent allocated, still in `extents` or deleted by GC since: the next
    /// allocation follows it.
    #[serde(default)]
    pub tail: Option<ExtentId>,
}

/// A stream with its extents' locations: the answer of get and open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamView {
    pub stream: StreamInfo,
    pub extents: Vec<ExtentInfo>,
    /// Addresses of the datanodes the extents live on.
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateStream {
    pub policy: Policy,
    /// A token the caller chose for this creation: the same token again (a retry after
    /// a lost answer) answers the stream it made instead of a second one.
    #[serde(default)]
    pub token: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenStream {
    pub writer: String,
}

/// Body of `POST /v1/streams/{id}/extents`. `after` names the extent the new one
/// follows (None for a stream's first), which makes a retried allocation idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateExtent {
    pub epoch: Epoch,
    pub after: Option<ExtentId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealExtent {
    pub epoch: Epoch,
    pub length: u64,
}

/// Body of `POST /v1/extents/{id}/bad`: a reader found `node`'s copy bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBad {
    pub node: NodeId,
    /// What the reader saw, for the metanode's log.
    pub why: String,
}

/// Body of `POST /v1/extents/delete`: sealed extents GC found dead. The answer lists
/// the ids this call deleted; open extents are never deleted (a sealed last one may be:
/// the stream's `tail` keeps its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteExtents {
    pub extents: Vec<ExtentId>,
}

/// Body of `POST /v1/tombstones/{id}/gone`: these datanodes no longer hold a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiesGone {
    pub nodes: Vec<NodeId>,
}

/// Copies of an extent to delete from their datanodes: every copy of a deleted extent,
/// or the copies repair replaced (or abandoned) of one that lives on. It lives until
/// every copy's deletion is confirmed (`CopiesGone`), so that no copy is forgotten
/// while its bytes still take space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub extent: ExtentId,
    pub stream: StreamId,
    pub policy: Policy,
    /// The copies not yet confirmed deleted on their datanode.
    pub replicas: Vec<Replica>,
    /// The extent's length when it was deleted (`None`: deleted with its stream while open).
    pub sealed_len: Option<u64>,
}

/// Extents of one policy by state (`GET /v1/extents/counts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentCounts {
    pub policy: Policy,
    pub open: u64,
    pub sealed: u64,
    /// Sealed bytes per copy (for `ec:K+M`, per shard).
    pub sealed_bytes: u64,
}

/// Degraded extents of one policy with the same number of copies not readable (on a
/// down or unknown datanode, or found bad).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degraded {
    pub policy: Policy,
    pub missing: usize,
    pub extents: usize,
    /// Their sealed bytes per copy (open extents count 0).
    pub bytes: u64,
}

/// Rebalancing: how uneven the datanodes are, and what it would move.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RebalanceStatus {
    /// (max - min) / max of the datanodes' placed bytes over capacity, in thousandths.
    pub spread_permille: u64,
    /// What the plan would move now (before the cap on bytes in flight).
    pub planned_bytes: u64,
    /// The least any plan must move to bring every datanode down to the mean.
    pub min_bytes: u64,
    /// Since this member became leader.
    pub moves_total: u64,
    pub moved_bytes_total: u64,
    /// An admin paused rebalancing (`metanode rebalance stop`).
    #[serde(default)]
    pub paused: bool,
}

/// `GET /v1/repairs`: what repair sees and does (from the leader).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepairStatus {
    /// Extents missing copies, by policy and copies missing.
    pub degraded: Vec<Degraded>,
    /// Copies to replace now (down longer than the delay, bad, or draining), not yet begun.
    pub waiting: usize,
    /// Bytes of the copies `waiting` and `in_flight`: what repair and drain still have
    /// to write (progress and ETA are computed from it and `bytes_total`).
    #[serde(default)]
    pub waiting_bytes: u64,
    /// Open extents with a copy lost past the delay, to be sealed (their writer taken for
    /// dead) before their copy is repaired; and how many were sealed so.
    #[serde(default)]
    pub orphans: usize,
    #[serde(default)]
    pub orphans_sealed_total: u64,
    /// Extents with fewer readable copies than they need (data lost until a datanode
    /// comes back).
    pub unreadable: usize,
    /// Copies being made.
    pub in_flight: Vec<(ExtentId, Repair)>,
    /// Datanodes down, with how long (ms) as the leader saw it: their copies are
    /// repaired once this passes the repair delay.
    pub down_ms: Vec<(NodeId, u64)>,
    /// The repair delay, ms.
    pub delay_ms: u64,
    /// Draining datanodes, with the copies still on each (0: empty, it can go).
    pub draining: Vec<(NodeId, usize)>,
    pub rebalance: RebalanceStatus,
    /// Since this member became leader: copies made, failed, and bytes written.
    pub done_total: u64,
    pub failed_total: u64,
    pub bytes_total: u64,
    pub last_error: Option<String>,
}

/// Body of `POST /v1/admin/rebalance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRebalance {
    pub paused: bool,
}

/// Body of `POST /v1/admin/nodes/{id}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetNodeState {
    pub state: NodeState,
}

/// A metanode (Raft member) address, for membership changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    pub addr: String,
}

/// `GET /v1/status`: one metanode's view of the Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: MemberId,
    pub leader: Option<Member>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub voters: Vec<Member>,
    pub learners: Vec<Member>,
    pub nodes: usize,
    pub streams: usize,
    pub extents: usize,
    /// Deleted extents with copies not yet confirmed gone.
    #[serde(default)]
    pub tombstones: usize,
}

/// Every refusal of the metanode. Serialized as `{"code": "...", ...fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code")]
pub enum MetaError {
    #[error("not the leader; leader is {leader:?}")]
    NotLeader { leader: Option<Member> },
    #[error("no such datanode {id}")]
    NoSuchNode { id: NodeId },
    #[error("no such stream {id}")]
    NoSuchStream { id: StreamId },
    #[error("no such extent {id}")]
    NoSuchExtent { id: ExtentId },
    #[error("fenced: epoch {epoch} is older than the stream's epoch {current}")]
    Fenced { epoch: Epoch, current: Epoch },
    #[error("not enough datanodes for {policy}: need {need}, {have} available")]
    NotEnoughNodes { policy: String, need: usize, have: usize },
    /// Enough datanodes are up, but too few have room for a new extent: the cluster is
    /// full until deleted data is reclaimed.
    #[error("no space for {policy}: need {need} datanodes with room, {have} have it")]
    NoSpace { policy: String, need: usize, have: usize },
    #[error("conflict: {msg}")]
    Conflict { msg: String },
    #[error("invalid request: {msg}")]
    Invalid { msg: String },
    #[error("unavailable: {msg}")]
    Unavailable { msg: String },
    /// This member could not reach a majority in time (an election, a partition, or a
    /// member removed from the group): ask again, or ask another member.
    #[error("no quorum: {msg}")]
    NoQuorum { msg: String },
    #[error("unauthorized: {msg}")]
    Unauthorized { msg: String },
    /// Authenticated, but the caller's role may not do this.
    #[error("forbidden: {msg}")]
    Forbidden { msg: String },
}

impl MetaError {
    /// HTTP status the metanode answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            MetaError::NotLeader { .. } => 421,
            MetaError::NoSuchNode { .. } | MetaError::NoSuchStream { .. } | MetaError::NoSuchExtent { .. } => 404,
            MetaError::Fenced { .. } | MetaError::Conflict { .. } => 409,
            MetaError::NotEnoughNodes { .. } | MetaError::Unavailable { .. } | MetaError::NoQuorum { .. } => 503,
            MetaError::NoSpace { .. } => 507,
            MetaError::Invalid { .. } => 400,
            MetaError::Unauthorized { .. } => 401,
            MetaError::Forbidden { .. } => 403,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> MetaError {
        MetaError::Invalid { msg: msg.into() }
    }

    pub fn conflict(msg: impl Into<String>) -> MetaError {
        MetaError::Conflict { msg: msg.into() }
    }

    pub fn unavailable(msg: impl Into<String>) -> MetaError {
        MetaError::Unavailable { msg: msg.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_shows_down_then_draining_then_up() {
        let n = |state, draining| NodeInfo {
            id: NodeId(1),
            addr: String::new(),
            zone: String::new(),
            rack: String::new(),
            devices: vec![],
            state,
            draining,
        };
        assert_eq!(n(NodeState::Down, true).shown_state(), "down");
        assert_eq!(n(NodeState::Up, true).shown_state(), "draining", "asked to drain");
        assert_eq!(n(NodeState::Draining, false).shown_state(), "draining");
        assert_eq!(n(NodeState::Up, false).shown_state(), "up");
    }

    #[test]
    fn policies_parse_and_print() {
        for s in ["replica:1", "replica:3", "ec:4+2", "ec:8+4"] {
            let p: Policy = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{s}\""));
        }
        assert_eq!("ec:6+3".parse::<Policy>().unwrap().width(), 9);
        for bad in ["", "replica:0", "replica:x", "ec:4", "ec:0+2", "ec:4+0", "ec:30+3", "raid:5", "replica:-1"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad} accepted");
        }
        assert!(serde_json::from_str::<Policy>("\"ec:4+\"").is_err());
    }

    #[test]
    fn errors_carry_their_code() {
        let e = MetaError::Fenced { epoch: Epoch(3), current: Epoch(4) };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(j, r#"{"code":"Fenced","epoch":3,"current":4}"#);
        assert_eq!(serde_json::from_str::<MetaError>(&j).unwrap(), e);
    }
}
