//! Repair (issue 15): the leader finds copies that need replacing and has a datanode
//! make each new copy from the others (`Request::Rebuild`, datanode to datanode).
//!
//! A copy needs replacing when its datanode has been down longer than the repair delay
//! (short outages are waited out), is unknown, is draining, or the copy was found bad.
//! Most-lost-first: extents with the fewest readable copies beyond what they need go
//! first. Each repair is two commands through Raft around the copy:
//! `BeginRepair` records the copy being made (a datanode never holds a copy the
//! metanode does not name: replicas, repairs in progress, tombstones), the target
//! datanode rebuilds, seals and reads the copy back, and only then `EndRepair` makes it
//! the replica; the copy it replaces becomes a stray in the extent's tombstone, deleted
//! from its datanode when reachable (here, or by GC).
//!
//! An open extent is its writer's: a live writer seals it and moves on when a copy
//! fails. One still open with a copy lost past the repair delay is taken for a dead
//! writer's: it is sealed the way a stream's next opener would (`MetaNode::seal_orphan`:
//! an open under a new epoch fences every copy, then the seal at the smallest whole
//! length), after which its lost copy is repaired like any other. A writer that was
//! alive after all finds itself fenced and reopens the stream.
//!
//! Repair never races GC into losing bytes: GC deletes only extents no row names, and
//! deleting an extent moves every copy repair is making into its tombstone, so a
//! repair that ends after the delete changes nothing (`State::end_repair`). Repair
//! never races a writer: only sealed extents are repaired, and their bytes never change.
//! Readers holding an older view find the replaced copy gone and read another.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::DataNodeClient;
use proto::meta::{Degraded, ExtentInfo, NodeState, Policy, RebalanceStatus, RepairStatus, Replica, Tombstone};
use proto::{ExtentId, NodeId, Rebuild};

use crate::limits::{
    REBALANCE_SHARE, REBUILD_TIMEOUT, REPAIR_PERIOD, REPAIR_RETRY_BACKOFF, REPAIR_WAKE_GAP, STRAYS_PER_ROUND,
    UNNAMED_SWEEP_PERIOD,
};
use crate::node::MetaNode;
use crate::placement;
use crate::state::{Command, State};

/// The leader's memory of repair.
#[derive(Default)]
pub struct RepairSoft {
    /// When this leader first saw each datanode down.
    down_since: HashMap<NodeId, Instant>,
    /// Repairs this leader started and has not ended.
    in_flight: HashSet<(ExtentId, u32)>,
    /// Extents whose last repair failed, with when to try again.
    retry_at: HashMap<ExtentId, Instant>,
    /// Open extents being sealed by `seal_orphan`.
    sealing: HashSet<ExtentId>,
    /// Copies the last sweep found on datanodes with nothing naming them, and when.
    unnamed: HashSet<(NodeId, ExtentId)>,
    swept: Option<Instant>,
    unnamed_deleted_total: u64,
    orphans_sealed_total: u64,
    done_total: u64,
    failed_total: u64,
    bytes_total: u64,
    moves_total: u64,
    moved_bytes_total: u64,
    last_error: Option<String>,
}

/// Why a copy is to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Its datanode is unknown, or down for longer than the delay.
    Gone,
    Bad,
    Draining,
    /// Moved from a fuller datanode to an emptier one (`plan_rebalance`).
    Rebalance,
}

/// One copy to replace.
#[derive(Debug, Clone)]
pub struct Job {
    pub extent: ExtentInfo,
    pub slot: u32,
    pub why: Why,
    /// Readable copies beyond the number the extent needs (1, or K for `ec:K+M`).
    pub margin: i64,
}

/// Copies of `policy` an extent needs readable to be read at all.
fn needed(policy: Policy) -> usize {
    match policy {
        Policy::Replica { .. } => 1,
        Policy::Ec { k, .. } => k as usize,
    }
}

/// Whether the copy of `e` in `slot` can be read (its node up or draining, not bad).
fn readable(st: &State, e: &ExtentInfo, slot: usize) -> bool {
    let r = e.replicas[slot];
    st.nodes.get(&r.node).is_some_and(|n| n.state != NodeState::Down) && !e.bad.contains(&r.node)
}

/// What repair sees in `st`: the copies to replace now, most lost first (`delay`
/// against `down_for`, how long each down node has been down), and the degraded
/// summary.
pub fn plan(st: &State, down_for: impl Fn(NodeId) -> Duration, delay: Duration) -> (Vec<Job>, Vec<Degraded>, usize) {
    let mut jobs = Vec::new();
    let mut degraded: BTreeMap<(String, usize), Degraded> = BTreeMap::new();
    let mut unreadable = 0;
    for e in st.extents.values() {
        let ok = (0..e.replicas.len()).filter(|&i| readable(st, e, i)).count();
        let missing = e.replicas.len() - ok;
        if missing > 0 {
            let d = degraded.entry((e.policy.to_string(), missing)).or_insert(Degraded {
                policy: e.policy,
                missing,
                extents: 0,
                bytes: 0,
            });
            d.extents += 1;
            d.bytes += e.sealed_len.unwrap_or(0);
            if ok < needed(e.policy) {
                unreadable += 1;
            }
        }
        // Open extents are the writer's (it seals and moves on, or its opener does).
        if e.sealed_len.is_none() {
            continue;
        }
        let repairing: Vec<u32> = st.repairs.get(&e.id).into_iter().flatten().map(|r| r.slot).collect();
        let margin = ok as i64 - needed(e.policy) as i64;
        for (i, r) in e.replicas.iter().enumerate() {
            if repairing.contains(&(i as u32)) {
                continue;
            }
            let why = match st.nodes.get(&r.node) {
                None => Some(Why::Gone),
                Some(n) if n.state == NodeState::Down && down_for(n.id) >= delay => Some(Why::Gone),
                Some(_) if e.bad.contains(&r.node) => Some(Why::Bad),
                Some(n) if n.draining && n.state != NodeState::Down => Some(Why::Draining),
                _ => None,
            };
            if let Some(why) = why {
                jobs.push(Job { extent: e.clone(), slot: i as u32, why, margin });
            }
        }
    }
    jobs.sort_by_key(|j| (j.margin, j.why == Why::Draining, j.extent.id));
    (jobs, degraded.into_values().collect(), unreadable)
}

/// Open extents with a copy whose datanode is unknown or down for longer than `delay`
/// (taken for dead writers' extents, to be sealed before repair), oldest first.
pub fn orphans(st: &State, down_for: impl Fn(NodeId) -> Duration, delay: Duration) -> Vec<ExtentId> {
    st.extents
        .values()
        .filter(|e| e.sealed_len.is_none())
        .filter(|e| {
            e.replicas.iter().any(|r| match st.nodes.get(&r.node) {
                None => true,
                Some(n) => n.state == NodeState::Down && down_for(n.id) >= delay,
            })
        })
        .map(|e| e.id)
        .collect()
}

/// A rebalancing move: the copy in `slot` of `extent` to datanode `to`.
#[derive(Debug, Clone)]
pub struct Move {
    pub extent: ExtentInfo,
    pub slot: u32,
    pub to: NodeId,
    pub bytes: u64,
}

/// What rebalancing would do now.
#[derive(Debug, Clone, Default)]
pub struct Balance {
    pub moves: Vec<Move>,
    /// The least bytes any plan must move to bring every datanode down to the mean
    /// fraction.
    pub min_bytes: u64,
    /// (max - min) / max of the datanodes' used fractions.
    pub spread: f64,
}

/// Each datanode's bytes of sealed copies (what the metanode placed, not what a
/// heartbeat saw: exact, and unaffected by strays not yet deleted).
fn placed_bytes(st: &State) -> HashMap<NodeId, u64> {
    let mut used: HashMap<NodeId, u64> = HashMap::new();
    for e in st.extents.values() {
        for r in &e.replicas {
            *used.entry(r.node).or_default() += e.sealed_len.unwrap_or(0);
        }
    }
    used
}

/// Plans moves of sealed copies from the fullest datanodes (by placed bytes over
/// capacity) to the emptiest, each move the largest that does not overshoot, until
/// the spread is within `threshold` or the imbalance is under `min_bytes`; none when a
/// repair is due (repair first). Up datanodes only, not draining.
pub fn plan_rebalance(st: &State, threshold: f64, min_bytes: u64) -> Balance {
    let nodes: Vec<NodeId> = st
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Up && !n.draining)
        .filter(|n| n.devices.iter().map(|d| d.capacity_bytes).sum::<u64>() > 0)
        .map(|n| n.id)
        .collect();
    if nodes.len() < 2 {
        return Balance::default();
    }
    let cap: HashMap<NodeId, f64> =
        nodes.iter().map(|n| (*n, st.nodes[n].devices.iter().map(|d| d.capacity_bytes).sum::<u64>() as f64)).collect();
    let placed = placed_bytes(st);
    let mut used: HashMap<NodeId, f64> =
        nodes.iter().map(|n| (*n, placed.get(n).copied().unwrap_or(0) as f64)).collect();
    let frac = |used: &HashMap<NodeId, f64>, n: &NodeId| used[n] / cap[n];
    let mean = used.values().sum::<f64>() / cap.values().sum::<f64>();
    let min_needed: f64 = nodes.iter().map(|n| (used[n] - mean * cap[n]).max(0.0)).sum();
    let spread_of = |used: &HashMap<NodeId, f64>| {
        let (hi, lo) = nodes.iter().map(|n| frac(used, n)).fold((0f64, f64::MAX), |(h, l), f| (h.max(f), l.min(f)));
        if hi > 0.0 {
            (hi - lo) / hi
        } else {
            0.0
        }
    };
    let mut b = Balance { moves: Vec::new(), min_bytes: min_needed as u64, spread: spread_of(&used) };
    if (min_needed as u64) < min_bytes {
        return b;
    }
    // Per extent, the slots this plan moves and the nodes it moves them to (one slot
    // of an extent may move while another does: distinct nodes all the same).
    let mut planned: HashMap<ExtentId, (Vec<usize>, Vec<NodeId>)> = HashMap::new();
    loop {
        if spread_of(&used) <= threshold {
            break;
        }
        let hi = *nodes.iter().max_by(|a, b| frac(&used, a).total_cmp(&frac(&used, b))).expect("two nodes");
        let lo = *nodes.iter().min_by(|a, b| frac(&used, a).total_cmp(&frac(&used, b))).expect("two nodes");
        // The largest copy on `hi` whose move leaves `hi` no emptier than `lo`.
        let room = (used[&hi] * cap[&lo] - used[&lo] * cap[&hi]) / (cap[&hi] + cap[&lo]);
        let pick = st
            .extents
            .values()
            .filter(|e| e.sealed_len.is_some_and(|l| l > 0 && l as f64 <= room) && !st.repairs.contains_key(&e.id))
            .filter(|e| !st.holders(e.id).contains(&lo) && !planned.get(&e.id).is_some_and(|p| p.1.contains(&lo)))
            .filter_map(|e| {
                let slot = e.replicas.iter().position(|r| r.node == hi)?;
                (!planned.get(&e.id).is_some_and(|p| p.0.contains(&slot))).then_some((e, slot))
            })
            .max_by_key(|(e, _)| (e.sealed_len, std::cmp::Reverse(e.id)));
        let Some((e, slot)) = pick else { break };
        let bytes = e.sealed_len.expect("sealed");
        *used.get_mut(&hi).expect("node") -= bytes as f64;
        *used.get_mut(&lo).expect("node") += bytes as f64;
        let p = planned.entry(e.id).or_default();
        p.0.push(slot);
        p.1.push(lo);
        b.moves.push(Move { extent: e.clone(), slot: slot as u32, to: lo, bytes });
    }
    b
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl MetaNode {
    /// One round on the leader: forget repairs an earlier leader left, then start
    /// repairs up to the concurrency allowed.
    pub(crate) async fn repair_round(self: &Arc<Self>) {
        let now = Instant::now();
        let is_leader = self.raft.metrics().borrow().current_leader == Some(self.id);
        if !is_leader {
            let mut soft = self.repair.lock();
            soft.down_since.clear();
            return;
        }
        // Repairs this leader did not start: their datanode's answer will never be
        // committed; the copy becomes a stray (deleted like any other).
        let abandoned: Vec<(ExtentId, u32, Replica)> = {
            let st = self.shared.state.read();
            let soft = self.repair.lock();
            st.repairs
                .iter()
                .flat_map(|(e, v)| v.iter().map(move |r| (*e, r.slot, r.copy)))
                .filter(|(e, s, _)| !soft.in_flight.contains(&(*e, *s)))
                .collect()
        };
        for (extent, slot, copy) in abandoned {
            tracing::info!("repair of extent {extent} slot {slot} on datanode {} was abandoned", copy.node);
            let _ = self.write(Command::EndRepair { extent, slot, copy, done: false }).await;
        }
        let orphan;
        let starts = {
            let st = self.shared.state.read();
            let mut soft = self.repair.lock();
            let down: HashSet<NodeId> =
                st.nodes.values().filter(|n| n.state == NodeState::Down).map(|n| n.id).collect();
            soft.down_since.retain(|n, _| down.contains(n));
            for n in down {
                soft.down_since.entry(n).or_insert(now);
            }
            let since = soft.down_since.clone();
            let down_for = |n| since.get(&n).map_or(Duration::ZERO, |t| now - *t);
            let (jobs, _, _) = plan(&st, down_for, self.settings.repair_delay);
            orphan = orphans(&st, down_for, self.settings.repair_delay)
                .into_iter()
                .find(|e| !soft.retry_at.contains_key(e) && !soft.sealing.contains(e));
            if let Some(e) = orphan {
                soft.sealing.insert(e);
            }
            let room = self.settings.repair_concurrency.saturating_sub(soft.in_flight.len());
            // Rebalance only when there is nothing to repair and nothing in flight (its
            // plan reads placements, which moves in flight are about to change), at
            // most `REBALANCE_SHARE` of the placed bytes at once.
            let mut jobs = jobs;
            let mut targets: HashMap<(ExtentId, u32), NodeId> = HashMap::new();
            if jobs.is_empty()
                && soft.in_flight.is_empty()
                && st.repairs.is_empty()
                && self.settings.rebalance_threshold > 0.0
                && !st.flags.rebalance_paused
            {
                let b = plan_rebalance(&st, self.settings.rebalance_threshold, self.settings.rebalance_min_bytes);
                let total: u64 = placed_bytes(&st).values().sum();
                let cap = ((total as f64 * REBALANCE_SHARE) as u64).max(1);
                let mut bytes = 0;
                for m in b.moves {
                    if bytes > 0 && bytes + m.bytes > cap {
                        break;
                    }
                    bytes += m.bytes;
                    targets.insert((m.extent.id, m.slot), m.to);
                    jobs.push(Job { extent: m.extent, slot: m.slot, why: Why::Rebalance, margin: 0 });
                }
            }
            let mut per_node: HashMap<NodeId, usize> = HashMap::new();
            for r in st.repairs.values().flatten() {
                *per_node.entry(r.copy.node).or_default() += 1;
            }
            let mut starts = Vec::new();
            let mut placed: HashMap<ExtentId, Vec<NodeId>> = HashMap::new();
            soft.retry_at.retain(|_, at| *at > now);
            for job in jobs {
                if starts.len() >= room {
                    break;
                }
                let e = &job.extent;
                if soft.retry_at.contains_key(&e.id) {
                    continue;
                }
                let sources: Vec<(u8, NodeId, String)> = (0..e.replicas.len())
                    .filter(|&i| i != job.slot as usize && readable(&st, e, i))
                    .map(|i| (i as u8, e.replicas[i].node, st.nodes[&e.replicas[i].node].addr.clone()))
                    .collect();
                if sources.len() < needed(e.policy) {
                    continue;
                }
                let mut exclude = st.holders(e.id);
                if let Some(to) = targets.get(&(e.id, job.slot)) {
                    // A rebalancing move goes to the datanode its plan chose.
                    exclude.extend(st.nodes.keys().filter(|n| *n != to));
                }
                exclude.extend(placed.get(&e.id).into_iter().flatten());
                let busy: Vec<NodeId> =
                    per_node.iter().filter(|(_, &c)| c >= self.settings.repair_per_node).map(|(n, _)| *n).collect();
                let others: Vec<&proto::meta::NodeInfo> = (0..e.replicas.len())
                    .filter(|&i| i != job.slot as usize)
                    .filter_map(|i| st.nodes.get(&e.replicas[i].node))
                    .collect();
                let cands: Vec<placement::Candidate<'_>> = self.candidates(&st);
                let bytes = e.sealed_len.unwrap_or(0);
                let all_excluded: Vec<NodeId> = exclude.iter().chain(&busy).copied().collect();
                let mut rng = self.rng.lock();
                let target =
                    match placement::place_one(&cands, &all_excluded, &others, e.replicas.len(), bytes, &mut *rng) {
                        Ok(t) => t,
                        // The only datanodes that could take it are writing as many copies
                        // as they may: it waits for a later round, with no backoff.
                        Err(_)
                            if !busy.is_empty()
                                && placement::place_one(
                                    &cands,
                                    &exclude,
                                    &others,
                                    e.replicas.len(),
                                    bytes,
                                    &mut *rng,
                                )
                                .is_ok() =>
                        {
                            continue;
                        }
                        Err(err) => {
                            soft.last_error = Some(format!(
                                "extent {}: no datanode to repair onto: {err} (datanodes: {})",
                                e.id,
                                placement::explain(&cands, &all_excluded)
                            ));
                            soft.retry_at.insert(e.id, now + REPAIR_RETRY_BACKOFF);
                            continue;
                        }
                    };
                placed.entry(e.id).or_default().push(target.node);
                *per_node.entry(target.node).or_default() += 1;
                soft.in_flight.insert((e.id, job.slot));
                starts.push((job, target, sources, st.nodes[&target.node].addr.clone()));
            }
            starts
        };
        // Copies repair replaced on a datanode that was down then: deleted once it is up.
        let strays: Vec<ExtentId> = {
            let st = self.shared.state.read();
            st.tombstones
                .values()
                .filter(|t| st.extents.contains_key(&t.extent))
                .filter(|t| {
                    t.replicas.iter().any(|r| st.nodes.get(&r.node).is_some_and(|n| n.state != NodeState::Down))
                })
                .map(|t| t.extent)
                .take(STRAYS_PER_ROUND)
                .collect()
        };
        for extent in strays {
            self.delete_strays(extent).await;
        }
        let sweep = {
            let mut soft = self.repair.lock();
            let due = soft.swept.is_none_or(|t| t.elapsed() >= UNNAMED_SWEEP_PERIOD);
            if due {
                soft.swept = Some(now);
            }
            due
        };
        if sweep {
            self.sweep_unnamed().await;
        }
        if let Some(extent) = orphan {
            let me = self.clone();
            tokio::spawn(async move {
                let r = me.seal_orphan(extent).await;
                let mut soft = me.repair.lock();
                soft.sealing.remove(&extent);
                match r {
                    Ok(()) => soft.orphans_sealed_total += 1,
                    Err(err) => {
                        tracing::warn!("sealing extent {extent}, open with a lost copy: {err}");
                        soft.retry_at.insert(extent, Instant::now() + REPAIR_RETRY_BACKOFF);
                        soft.last_error = Some(format!("sealing open extent {extent}: {err}"));
                    }
                }
            });
        }
        for (job, target, sources, addr) in starts {
            let (extent, slot) = (job.extent.id, job.slot);
            let begin = Command::BeginRepair { extent, slot, copy: target, at_ms: now_ms() };
            if let Err(e) = self.write(begin).await {
                tracing::warn!("repair of extent {extent} slot {slot}: {e}");
                let mut soft = self.repair.lock();
                soft.in_flight.remove(&(extent, slot));
                soft.last_error = Some(e.to_string());
                continue;
            }
            tracing::info!(
                "repairing extent {extent} slot {slot} ({:?}, {} copies to spare) onto datanode {}",
                job.why,
                job.margin,
                target.node
            );
            let me = self.clone();
            tokio::spawn(async move { me.run_repair(job, target, sources, addr).await });
        }
    }

    /// Has `target` rebuild the copy, then ends the repair (done only if the copy is
    /// sealed at the extent's length), and deletes the copy it replaced.
    async fn run_repair(self: Arc<Self>, job: Job, target: Replica, sources: Vec<(u8, NodeId, String)>, addr: String) {
        let e = &job.extent;
        let length = e.sealed_len.expect("only sealed extents are repaired");
        let (k, m) = match e.policy {
            Policy::Replica { .. } => (0, 0),
            Policy::Ec { k, m } => (k, m),
        };
        let req = Rebuild {
            extent: e.id,
            epoch: e.epoch,
            device: target.device,
            length,
            k,
            m,
            slot: job.slot as u8,
            sources,
        };
        let made = tokio::time::timeout(REBUILD_TIMEOUT, async {
            let c = DataNodeClient::connect_node(&addr, target.node).await?;
            c.rebuild(req).await
        })
        .await;
        let done = match &made {
            Ok(Ok(s)) => s.sealed && s.length == length,
            _ => false,
        };
        let why = match made {
            Ok(Ok(s)) if !done => format!("the copy is {} bytes{}", s.length, if s.sealed { "" } else { ", open" }),
            Ok(Ok(_)) => String::new(),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {REBUILD_TIMEOUT:?}"),
        };
        let ended = self.write(Command::EndRepair { extent: e.id, slot: job.slot, copy: target, done }).await;
        {
            let mut soft = self.repair.lock();
            soft.in_flight.remove(&(e.id, job.slot));
            if done && ended.is_ok() && job.why == Why::Rebalance {
                soft.moves_total += 1;
                soft.moved_bytes_total += length;
            } else if done && ended.is_ok() {
                soft.done_total += 1;
                soft.bytes_total += length;
            } else {
                soft.failed_total += 1;
                soft.retry_at.insert(e.id, Instant::now() + REPAIR_RETRY_BACKOFF);
                let err = if !why.is_empty() { why.clone() } else { format!("{:?}", ended.as_ref().err()) };
                soft.last_error = Some(format!("extent {} slot {} on datanode {}: {err}", e.id, job.slot, target.node));
            }
        }
        self.repair_wake.notify_one();
        match (done, ended) {
            (true, Ok(_)) => {
                tracing::info!("repaired extent {} slot {} onto datanode {}", e.id, job.slot, target.node);
                self.delete_strays(e.id).await;
            }
            (_, Err(err)) => tracing::warn!("ending the repair of extent {}: {err}", e.id),
            (false, _) => tracing::warn!("repair of extent {} slot {} failed: {why}", e.id, job.slot),
        }
    }

    /// Lists every up datanode's copies and deletes those nothing names (not a replica,
    /// a repair in progress or a tombstone's copy) in this sweep and the one before.
    /// Every copy is named before it is made (an allocation, `BeginRepair`) and until it
    /// is confirmed deleted, so an unnamed copy is a leak: a rebuild that finished after
    /// its abandoned repair's copy was deleted. Repairs begin only in `repair_round`,
    /// which runs this, so none begins between the check and the delete.
    async fn sweep_unnamed(&self) {
        let nodes: Vec<(NodeId, String)> = {
            let st = self.shared.state.read();
            st.nodes.values().filter(|n| n.state != NodeState::Down).map(|n| (n.id, n.addr.clone())).collect()
        };
        let mut found = HashSet::new();
        for (node, addr) in &nodes {
            let listed = tokio::time::timeout(Duration::from_secs(3), async {
                DataNodeClient::connect_node(addr, *node).await?.list().await
            })
            .await;
            let Ok(Ok(list)) = listed else { continue };
            let st = self.shared.state.read();
            found.extend(list.iter().filter(|x| !st.holders(x.extent).contains(node)).map(|x| (*node, x.extent)));
        }
        let before = std::mem::replace(&mut self.repair.lock().unnamed, found.clone());
        for &(node, extent) in found.intersection(&before) {
            let (named, addr) = {
                let st = self.shared.state.read();
                (st.holders(extent).contains(&node), st.nodes.get(&node).map(|n| n.addr.clone()))
            };
            let Some(addr) = addr.filter(|_| !named) else { continue };
            tracing::warn!(
                "datanode {node} holds a copy of extent {extent} that nothing names (a leaked rebuild): deleting it"
            );
            let deleted = tokio::time::timeout(Duration::from_secs(3), async {
                DataNodeClient::connect_node(&addr, node).await?.delete(extent).await
            })
            .await;
            if matches!(deleted, Ok(Ok(()))) {
                self.repair.lock().unnamed_deleted_total += 1;
            }
        }
    }

    /// Deletes the stray copies of a live extent from datanodes that answer, and
    /// records which are gone (GC does the same for every tombstone).
    async fn delete_strays(&self, extent: ExtentId) {
        let (t, addrs): (Option<Tombstone>, HashMap<NodeId, String>) = {
            let st = self.shared.state.read();
            (
                st.tombstones.get(&extent).cloned(),
                st.nodes.values().filter(|n| n.state != NodeState::Down).map(|n| (n.id, n.addr.clone())).collect(),
            )
        };
        let Some(t) = t else { return };
        let mut gone = Vec::new();
        for r in &t.replicas {
            let Some(addr) = addrs.get(&r.node) else { continue };
            let deleted = tokio::time::timeout(Duration::from_secs(3), async {
                let c = DataNodeClient::connect_node(addr, r.node).await?;
                c.delete(extent).await
            })
            .await;
            match deleted {
                Ok(Ok(())) | Ok(Err(client::ClientError::Extent(proto::ExtentError::NotFound { .. }))) => {
                    gone.push(r.node)
                }
                _ => {}
            }
        }
        if !gone.is_empty() {
            let _ = self.write(Command::CopiesGone { extent, nodes: gone }).await;
        }
    }

    /// Whether `node`'s copies will not answer again: it is unknown, or has been down
    /// longer than the repair delay (as this leader saw it).
    pub(crate) fn lost_for_good(&self, node: NodeId) -> bool {
        let known = self.shared.state.read().nodes.get(&node).map(|n| n.state);
        match known {
            None => true,
            Some(NodeState::Down) => {
                self.repair.lock().down_since.get(&node).is_some_and(|t| t.elapsed() >= self.settings.repair_delay)
            }
            Some(_) => false,
        }
    }

    /// What `GET /v1/repairs` answers.
    pub fn repair_status(&self) -> RepairStatus {
        let now = Instant::now();
        let st = self.shared.state.read();
        let soft = self.repair.lock();
        let down_for = |n| soft.down_since.get(&n).map_or(Duration::ZERO, |t| now - *t);
        let (jobs, degraded, unreadable) = plan(&st, down_for, self.settings.repair_delay);
        let in_flight_bytes: u64 = st
            .repairs
            .iter()
            .map(|(e, v)| v.len() as u64 * st.extents.get(e).and_then(|e| e.sealed_len).unwrap_or(0))
            .sum();
        RepairStatus {
            degraded,
            waiting: jobs.len(),
            waiting_bytes: jobs.iter().map(|j| j.extent.sealed_len.unwrap_or(0)).sum::<u64>() + in_flight_bytes,
            orphans: orphans(&st, down_for, self.settings.repair_delay).len(),
            orphans_sealed_total: soft.orphans_sealed_total,
            unreadable,
            in_flight: st.repairs.iter().flat_map(|(e, v)| v.iter().map(move |r| (*e, *r))).collect(),
            down_ms: {
                let mut v: Vec<(NodeId, u64)> =
                    soft.down_since.iter().map(|(n, t)| (*n, (now - *t).as_millis() as u64)).collect();
                v.sort_unstable();
                v
            },
            delay_ms: self.settings.repair_delay.as_millis() as u64,
            rebalance: {
                let b = plan_rebalance(&st, self.settings.rebalance_threshold, self.settings.rebalance_min_bytes);
                RebalanceStatus {
                    spread_permille: (b.spread * 1000.0) as u64,
                    planned_bytes: b.moves.iter().map(|m| m.bytes).sum(),
                    min_bytes: b.min_bytes,
                    moves_total: soft.moves_total,
                    moved_bytes_total: soft.moved_bytes_total,
                    paused: st.flags.rebalance_paused,
                }
            },
            draining: st
                .nodes
                .values()
                .filter(|n| n.draining)
                .map(|n| (n.id, st.extents.values().filter(|e| e.replicas.iter().any(|r| r.node == n.id)).count()))
                .collect(),
            done_total: soft.done_total,
            failed_total: soft.failed_total,
            bytes_total: soft.bytes_total,
            last_error: soft.last_error.clone(),
        }
    }
}

/// Repair rounds, one at a time: every `REPAIR_PERIOD`, or sooner once a repair ends
/// (its slot is free), though not within `REPAIR_WAKE_GAP`, nor within the last round's
/// own duration, of the last round's end: rounds that scan a large state do not run
/// back to back more than half the time.
pub(crate) async fn repair_loop(node: std::sync::Weak<MetaNode>) {
    let Some(wake) = node.upgrade().map(|n| n.repair_wake.clone()) else { return };
    loop {
        let took = match node.upgrade() {
            Some(n) => {
                let t = Instant::now();
                n.repair_round().await;
                t.elapsed()
            }
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(REPAIR_PERIOD) => {}
            _ = async {
                wake.notified().await;
                tokio::time::sleep(REPAIR_WAKE_GAP.max(took)).await;
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::meta::{DeviceInfo, RegisterNode};
    use proto::Epoch;

    use super::*;
    use crate::state::Reply;

    fn apply(st: &mut State, cmd: Command) -> Reply {
        st.apply(cmd, &mut Vec::new()).unwrap()
    }

    /// Datanodes 1..=`n` of 1 GiB; `extents` sealed extents of `len` on nodes 1, 2, 3.
    fn cluster(n: u64, extents: usize, len: u64) -> State {
        let mut st = State::default();
        for id in 1..=n {
            let r = RegisterNode {
                id: NodeId(id),
                addr: format!("127.0.0.1:{}", 9000 + id),
                zone: String::new(),
                rack: String::new(),
                devices: vec![DeviceInfo { id: 0, capacity_bytes: 1 << 30, free_bytes: 1 << 30, free_slots: None }],
            };
            apply(&mut st, Command::RegisterNode(r));
        }
        let Reply::Stream(s) = apply(&mut st, Command::CreateStream { policy: Policy::Replica { n: 3 } }) else {
            panic!()
        };
        apply(&mut st, Command::OpenStream { id: s.id, writer: "t".into() });
        let mut after = None;
        for _ in 0..extents {
            let replicas = (1..=3).map(|i| Replica { node: NodeId(i), device: 0 }).collect();
            let cmd = Command::AllocateExtent { stream: s.id, epoch: Epoch(1), after, replicas };
            let Reply::Extent(e) = apply(&mut st, cmd) else { panic!() };
            apply(&mut st, Command::SealExtent { extent: e.id, epoch: Epoch(1), length: len });
            after = Some(e.id);
        }
        st
    }

    #[test]
    fn rebalance_moves_little_more_than_the_minimum_and_evens_the_nodes_out() {
        // Three full nodes and two new ones: each old node must shed 2/5 of its copies.
        let mut st = cluster(5, 60, 8 << 20);
        let b = plan_rebalance(&st, 0.10, 0);
        assert_eq!(b.min_bytes, 3 * 60 * (8 << 20) * 2 / 5);
        let moved: u64 = b.moves.iter().map(|m| m.bytes).sum();
        assert!(moved as f64 <= 1.2 * b.min_bytes as f64, "moved {moved}, minimum {}", b.min_bytes);
        // Applied as repairs would: the spread ends within the threshold, every extent
        // keeps three copies on distinct nodes.
        for m in &b.moves {
            let copy = Replica { node: m.to, device: 0 };
            apply(&mut st, Command::BeginRepair { extent: m.extent.id, slot: m.slot, copy, at_ms: 1 });
            apply(&mut st, Command::EndRepair { extent: m.extent.id, slot: m.slot, copy, done: true });
        }
        for e in st.extents.values() {
            let nodes: HashSet<NodeId> = e.replicas.iter().map(|r| r.node).collect();
            assert_eq!(nodes.len(), 3, "{e:?}");
        }
        let after = plan_rebalance(&st, 0.10, 0);
        assert!(
            after.spread <= 0.10 && after.moves.is_empty(),
            "spread {} after, moves {:?}",
            after.spread,
            after.moves.len()
        );
        // Under the minimum worth moving, nothing is planned.
        let st = cluster(5, 60, 8 << 20);
        assert!(plan_rebalance(&st, 0.10, 1 << 40).moves.is_empty());
        // An even cluster plans nothing.
        let st = cluster(3, 10, 8 << 20);
        let b = plan_rebalance(&st, 0.10, 0);
        assert!(b.moves.is_empty() && b.min_bytes == 0 && b.spread == 0.0);
    }

    /// Executed one move at a time, as the leader does under its cap on bytes in
    /// flight, rebalancing ends: each move narrows the gap between the fullest and the
    /// emptiest node.
    #[test]
    fn rebalance_one_move_at_a_time_converges() {
        let mut st = cluster(5, 13, 4 << 20);
        let min = plan_rebalance(&st, 0.10, 0).min_bytes;
        let mut moved = 0;
        for round in 0.. {
            let b = plan_rebalance(&st, 0.10, 0);
            let Some(m) = b.moves.first() else { break };
            assert!(round < 100, "still moving after 100 moves ({moved} bytes, minimum {min})");
            let copy = Replica { node: m.to, device: 0 };
            apply(&mut st, Command::BeginRepair { extent: m.extent.id, slot: m.slot, copy, at_ms: 1 });
            apply(&mut st, Command::EndRepair { extent: m.extent.id, slot: m.slot, copy, done: true });
            moved += m.bytes;
        }
        assert!(moved as f64 <= 1.2 * min as f64, "moved {moved}, minimum {min}");
    }

    #[test]
    fn repair_goes_most_lost_first() {
        let mut st = cluster(5, 2, 8 << 20);
        let ids: Vec<ExtentId> = st.extents.keys().copied().collect();
        // Extent 0 loses one copy (node 1 bad); node 3 down for long: both lose one
        // more, so extent 0 has one readable copy left and goes first.
        apply(&mut st, Command::ReportBad { extent: ids[0], node: NodeId(1) });
        apply(&mut st, Command::NodeDown { id: NodeId(3) });
        let (jobs, degraded, unreadable) = plan(&st, |_| Duration::from_secs(3600), Duration::from_secs(600));
        assert_eq!(unreadable, 0);
        assert_eq!(jobs[0].extent.id, ids[0]);
        assert_eq!(jobs[0].margin, 0);
        assert_eq!(jobs.iter().filter(|j| j.extent.id == ids[0]).count(), 2);
        assert_eq!(jobs.last().unwrap().margin, 1);
        let missing: Vec<(usize, usize)> = degraded.iter().map(|d| (d.missing, d.extents)).collect();
        assert_eq!(missing, vec![(1, 1), (2, 1)]);
        // Down for less than the delay: degraded, nothing to do yet.
        let (jobs, _, _) = plan(&st, |_| Duration::from_secs(1), Duration::from_secs(600));
        assert!(jobs.iter().all(|j| j.why == Why::Bad), "{jobs:?}");
    }
}
