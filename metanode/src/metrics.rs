//! The metanode's metrics, read at each scrape: Raft (term, leadership, log and apply
//! indexes), the cluster it maps (datanodes by state, extents by policy and state,
//! capacity), and on the leader, repair and rebalance (degraded extents, copies waiting
//! and being made, bytes still to write). Followers report what every member knows;
//! repair figures come from the leader only, as only it plans repairs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::registry::Unit;

use crate::MetaNode;

pub fn collector(node: Arc<MetaNode>) -> Box<dyn Collector> {
    telemetry::collector("metanode", move |s| encode(&node, s))
}

fn encode(n: &MetaNode, s: &mut telemetry::Scrape<'_>) -> fmt::Result {
    let m = n.raft.metrics().borrow().clone();
    let leader = m.current_leader == Some(n.id);
    let member = [("member", n.id.to_string())];
    s.gauges("strata_meta_raft_term", "Current Raft term", None, [(member.clone(), m.current_term as f64)])?;
    s.gauges(
        "strata_meta_raft_leader",
        "1 on the Raft leader, else 0",
        None,
        [(member.clone(), f64::from(u8::from(leader)))],
    )?;
    s.gauges(
        "strata_meta_raft_leader_id",
        "The member this one takes for leader (0: none known)",
        None,
        [(member.clone(), m.current_leader.unwrap_or(0) as f64)],
    )?;
    s.gauges(
        "strata_meta_raft_last_log_index",
        "Index of the last entry in this member's log",
        None,
        [(member.clone(), m.last_log_index.unwrap_or(0) as f64)],
    )?;
    s.gauges(
        "strata_meta_raft_applied_index",
        "Index of the last entry applied to this member's state machine",
        None,
        [(member.clone(), m.last_applied.map_or(0, |l| l.index) as f64)],
    )?;
    s.gauges(
        "strata_meta_raft_snapshot_index",
        "Index of the last entry in this member's snapshot",
        None,
        [(member.clone(), m.snapshot.map_or(0, |l| l.index) as f64)],
    )?;
    let mem = m.membership_config.membership();
    s.gauges(
        "strata_meta_raft_members",
        "Members of the Raft group by role",
        None,
        [
            ([("member", n.id.to_string()), ("role", "voter".into())], mem.voter_ids().count() as f64),
            ([("member", n.id.to_string()), ("role", "learner".into())], mem.learner_ids().count() as f64),
        ],
    )?;
    if let Some(ms) = m.millis_since_quorum_ack {
        s.gauges(
            "strata_meta_raft_quorum_ack_age",
            "Time since a quorum last acknowledged this leader",
            Some(Unit::Seconds),
            [(member.clone(), ms as f64 / 1000.0)],
        )?;
    }
    cluster(n, s)?;
    if leader {
        repairs(n, s)?;
    }
    Ok(())
}

/// What the replicated state says: every member reports the same.
fn cluster(n: &MetaNode, s: &mut telemetry::Scrape<'_>) -> fmt::Result {
    let mut nodes: Vec<_> = n.shared.state.read().nodes.values().cloned().collect();
    n.with_reported_devices(&mut nodes);
    let st = n.shared.state.read();
    let mut by_state: BTreeMap<&'static str, u64> = [("up", 0), ("down", 0), ("draining", 0)].into();
    let (mut capacity, mut free) = (0u64, 0u64);
    for node in &nodes {
        let key = node.shown_state();
        *by_state.get_mut(key).expect("listed") += 1;
        capacity += node.devices.iter().map(|d| d.capacity_bytes).sum::<u64>();
        free += node.devices.iter().map(|d| d.free_bytes).sum::<u64>();
    }
    s.gauges(
        "strata_meta_datanodes",
        "Datanodes by state",
        None,
        by_state.into_iter().map(|(k, v)| ([("state", k)], v as f64)),
    )?;
    s.gauge("strata_meta_capacity", "Capacity of every datanode device", Some(Unit::Bytes), capacity as f64)?;
    s.gauge("strata_meta_free", "Bytes free on every datanode device", Some(Unit::Bytes), free as f64)?;
    let mut extents: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for e in st.extents.values() {
        let state = if e.sealed_len.is_some() { "sealed" } else { "open" };
        *extents.entry((e.policy.to_string(), state)).or_default() += 1;
    }
    s.gauges(
        "strata_meta_extents",
        "Extents by policy and state",
        None,
        extents.into_iter().map(|((p, st), v)| ([("policy", p), ("state", st.to_string())], v as f64)),
    )?;
    s.gauge("strata_meta_streams", "LogStreams", None, st.streams.len() as f64)?;
    s.gauge(
        "strata_meta_tombstones",
        "Deleted extents with copies not yet confirmed gone (GC's queue)",
        None,
        st.tombstones.len() as f64,
    )
}

/// The leader's repair and rebalance figures.
fn repairs(n: &MetaNode, s: &mut telemetry::Scrape<'_>) -> fmt::Result {
    let r = n.repair_status();
    s.gauges(
        "strata_meta_degraded_extents",
        "Extents missing copies, by policy and copies missing",
        None,
        r.degraded
            .iter()
            .map(|d| ([("policy", d.policy.to_string()), ("missing", d.missing.to_string())], d.extents as f64)),
    )?;
    s.gauge(
        "strata_meta_unreadable_extents",
        "Extents with fewer readable copies than they need",
        None,
        r.unreadable as f64,
    )?;
    s.gauge("strata_meta_repair_waiting", "Copies to replace, not yet begun", None, r.waiting as f64)?;
    s.gauge("strata_meta_repair_in_flight", "Copies being made", None, r.in_flight.len() as f64)?;
    s.gauge(
        "strata_meta_repair_remaining",
        "Bytes repair and drain still have to write",
        Some(Unit::Bytes),
        r.waiting_bytes as f64,
    )?;
    s.counter("strata_meta_repairs_done", "Copies made by repair since this member became leader", None, r.done_total)?;
    s.counter(
        "strata_meta_repairs_failed",
        "Repairs that failed since this member became leader",
        None,
        r.failed_total,
    )?;
    s.counter(
        "strata_meta_repaired",
        "Bytes written by repair since this member became leader",
        Some(Unit::Bytes),
        r.bytes_total,
    )?;
    s.gauges(
        "strata_meta_draining_copies",
        "Copies still on each draining datanode",
        None,
        r.draining.iter().map(|(node, c)| ([("node", node.0.to_string())], *c as f64)),
    )?;
    s.gauge(
        "strata_meta_rebalance_planned",
        "Bytes rebalancing would move now",
        Some(Unit::Bytes),
        r.rebalance.planned_bytes as f64,
    )?;
    s.gauge(
        "strata_meta_rebalance_spread",
        "Spread of used fractions across datanodes (fullest minus emptiest)",
        None,
        r.rebalance.spread_permille as f64 / 1000.0,
    )?;
    s.counter(
        "strata_meta_rebalanced",
        "Bytes moved by rebalancing since this member became leader",
        Some(Unit::Bytes),
        r.rebalance.moved_bytes_total,
    )
}
