//! `metanode bench-state` (run by `scripts/bench.sh metanode`): the state machine's
//! cost per allocation as one stream grows to a million extents, on a RocksDB in a
//! directory of the caller's. Commands are applied as committed entries straight to
//! the `StateMachine` (no Raft round trips, which would hide the cost in network time
//! and make a million allocations take hours). Prints one JSON line per case.

use std::path::Path;
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use proto::meta::{DeviceInfo, RegisterNode, Replica, StreamId};
use proto::{Epoch, ExtentId, NodeId};
use serde_json::json;

use crate::state::{Command, Reply};
use crate::store::{open_db, StateMachine};
use crate::TypeConfig;

/// Allocations (each followed by its seal) timed per sample.
const SAMPLE: u64 = 10_000;

/// Applies commands to a state machine as committed entries, as Raft would (shared
/// with `store`'s tests).
pub(crate) struct Applier {
    pub(crate) sm: StateMachine,
    index: u64,
}

impl Applier {
    pub(crate) fn new(sm: StateMachine) -> Applier {
        Applier { sm, index: 0 }
    }

    /// Applies `cmds` in one batch; any refusal is an error.
    pub(crate) async fn apply(&mut self, cmds: Vec<Command>) -> anyhow::Result<Vec<Reply>> {
        let entries: Vec<Entry<TypeConfig>> = cmds
            .into_iter()
            .map(|c| {
                self.index += 1;
                Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index), payload: EntryPayload::Normal(c) }
            })
            .collect();
        let out = self.sm.apply(entries).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        out.into_iter().map(|r| r.map_err(|e| anyhow::anyhow!("{e}"))).collect()
    }

    /// Three datanodes (1 TiB each) and stream 1 (`replica:3`) open at epoch 1.
    pub(crate) async fn one_open_stream(&mut self) -> anyhow::Result<()> {
        let mut setup: Vec<Command> = (1..=3)
            .map(|i| {
                Command::RegisterNode(RegisterNode {
                    id: NodeId(i),
                    addr: format!("127.0.0.1:{}", 9000 + i),
                    zone: String::new(),
                    rack: String::new(),
                    devices: vec![DeviceInfo { id: 0, capacity_bytes: 1 << 40, free_bytes: 1 << 40, free_slots: None }],
                })
            })
            .collect();
        setup.push(Command::CreateStream { policy: "replica:3".parse().map_err(anyhow::Error::msg)? });
        setup.push(Command::OpenStream { id: StreamId(1), writer: "bench".into() });
        self.apply(setup).await.map(|_| ())
    }

    /// Allocates the next extent of stream 1 (after `after`) and seals it at `length`.
    pub(crate) async fn allocate_and_seal(&mut self, after: Option<ExtentId>, length: u64) -> anyhow::Result<ExtentId> {
        let replicas: Vec<Replica> = (1..=3).map(|n| Replica { node: NodeId(n), device: 0 }).collect();
        let alloc = Command::AllocateExtent { stream: StreamId(1), epoch: Epoch(1), after, replicas };
        let Reply::Extent(e) = self.apply(vec![alloc]).await?.remove(0) else {
            anyhow::bail!("allocation answered no extent")
        };
        self.apply(vec![Command::SealExtent { extent: e.id, epoch: Epoch(1), length }]).await?;
        Ok(e.id)
    }
}

pub async fn run(dir: &Path, extents: u64) -> anyhow::Result<()> {
    anyhow::ensure!(extents >= 2 * SAMPLE, "--extents must be at least {}", 2 * SAMPLE);
    let db = open_db(dir)?;
    let sm = StateMachine::open(db).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut a = Applier::new(sm);
    a.one_open_stream().await?;
    let mut after: Option<ExtentId> = None;
    let mut first_us = 0.0;
    let mut last_us = 0.0;
    let started = Instant::now();
    let mut sample = Instant::now();
    for i in 1..=extents {
        after = Some(a.allocate_and_seal(after, 1 << 20).await?);
        if i % SAMPLE == 0 {
            let us = sample.elapsed().as_secs_f64() * 1e6 / SAMPLE as f64;
            if i == SAMPLE {
                first_us = us;
            }
            last_us = us;
            sample = Instant::now();
            if i % (10 * SAMPLE) == 0 {
                eprintln!("{i} extents, {us:.1} us per allocation and seal, {:.0} s", started.elapsed().as_secs_f64());
            }
        }
    }
    let emit = |case: &str, value: f64, unit: &str, extra: serde_json::Value| {
        let mut v = json!({"suite": "metanode", "case": case, "value": (value * 100.0).round() / 100.0, "unit": unit});
        if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(x.clone());
        }
        println!("{v}");
    };
    emit("alloc_seal_us_first_10k", first_us, "us", json!({}));
    // Higher is better: the cost at the first 10k over the cost at the last.
    emit(
        &format!("alloc_seal_us_at_{extents}"),
        last_us,
        "us",
        json!({"baseline": "alloc_seal_us_first_10k", "baseline_value": (first_us * 100.0).round() / 100.0,
               "ratio": ((first_us / last_us) * 100.0).round() / 100.0, "target": 0.8}),
    );
    // GC deleting from the front of the long stream: 1,000 extents per command.
    let t = Instant::now();
    let rounds = 20u64;
    for r in 0..rounds {
        let ids = (r * 1000 + 1..=(r + 1) * 1000).map(ExtentId).collect();
        a.apply(vec![Command::DeleteExtents { extents: ids }]).await?;
    }
    emit("delete_1000_ms_at_long_stream", t.elapsed().as_secs_f64() * 1e3 / rounds as f64, "ms", json!({}));
    Ok(())
}
