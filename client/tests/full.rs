//! A full cluster fails appends fast and clearly: each with `StreamError::NoSpace`
//! within 2 s, without the allocation loop that grew the metanode (issue 14, item 7),
//! and the same writer takes appends again once deleted extents are reclaimed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::limits::NOSPACE_ALLOCATIONS_MAX;
use client::{DataNodeClient, MetaClient, StreamClient, StreamConfig, StreamError, StreamWriter};
use proto::meta::Policy;
use proto::NodeId;
use testkit::{wait_datanodes_up, wait_for, Cluster, DataNode};

/// Failing appends counted before the test frees space.
const FAILURES: usize = 8;

/// Appends `chunk` until `FAILURES` appends were refused with `NoSpace`, each refusal
/// within 2 s; with `full_stays_full`, no append may succeed after the first refusal.
/// Returns the MiB acknowledged and the extents the metanode allocated from the first
/// refusal on.
async fn fill(w: &StreamWriter, meta: &MetaClient, chunk: &Bytes, full_stays_full: bool) -> (usize, usize) {
    let mut acked = 0usize;
    let mut failures = 0usize;
    let mut extents_at_first_failure = None;
    for _ in 0..200 {
        let t = Instant::now();
        match w.append(chunk.clone()).await {
            Ok(_) => {
                assert!(
                    failures == 0 || !full_stays_full,
                    "an append succeeded after the cluster was full and nothing was freed"
                );
                acked += 1;
            }
            Err(StreamError::NoSpace(why)) => {
                let took = t.elapsed();
                assert!(took < Duration::from_secs(2), "a refusal took {took:?}: {why}");
                if extents_at_first_failure.is_none() {
                    extents_at_first_failure = Some(meta.status().await.unwrap().extents);
                }
                failures += 1;
                if failures == FAILURES {
                    break;
                }
            }
            Err(e) => panic!("after {acked} appends: expected NoSpace, got {e:?}"),
        }
    }
    assert_eq!(failures, FAILURES, "the cluster never filled ({acked} MiB acknowledged)");
    let grown = meta.status().await.unwrap().extents - extents_at_first_failure.unwrap();
    println!("{acked} MiB acknowledged, then {FAILURES} refusals; {grown} extents allocated meanwhile");
    (acked, grown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_refuses_appends_fast_and_takes_them_again_once_space_is_freed() {
    let cl = Cluster::start(1, &[]);
    let meta = cl.client();
    let _dns: Vec<DataNode> =
        (1..=3).map(|i| DataNode::start_sized(cl.dir.path(), NodeId(i), &cl.addrs(), "48M", false)).collect();
    wait_datanodes_up(&meta, 3).await;
    let config = StreamConfig { extent_bytes_max: 4 << 20, ..Default::default() };
    let sc = StreamClient::new(meta.clone(), config);
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let chunk = Bytes::from(vec![5u8; 1 << 20]);

    let (acked, grown) = fill(&w, &meta, &chunk, true).await;
    assert!(acked >= 20, "only {acked} MiB fit on three 48 MiB devices");
    assert!(grown <= 4, "{grown} extents allocated during {FAILURES} refused appends");

    // GC's work by hand: delete the stream's sealed extents and their copies.
    let v = meta.stream(s.id).await.unwrap();
    let deleted = meta.delete_extents(&v.stream.extents).await.unwrap();
    let sealed: Vec<_> = v.extents.iter().filter(|e| e.sealed_len.is_some()).map(|e| e.id).collect();
    assert_eq!(deleted, sealed, "every sealed extent, the last too");
    let addrs: HashMap<NodeId, String> = meta.nodes().await.unwrap().into_iter().map(|n| (n.id, n.addr)).collect();
    for t in meta.tombstones().await.unwrap() {
        for r in &t.replicas {
            let c = DataNodeClient::connect(addrs[&r.node].as_str()).await.unwrap();
            c.delete(t.extent).await.unwrap();
        }
        let nodes: Vec<NodeId> = t.replicas.iter().map(|r| r.node).collect();
        meta.copies_gone(t.extent, &nodes).await.unwrap();
    }
    assert!(meta.tombstones().await.unwrap().is_empty());

    // The same writer takes appends again once heartbeats show the room.
    let slice = wait_for("an append accepted again", Duration::from_secs(20), || async {
        match w.append(chunk.clone()).await {
            Ok(s) => Some(s),
            Err(StreamError::NoSpace(_)) => None,
            Err(e) => panic!("expected NoSpace until space shows, got {e:?}"),
        }
    })
    .await;
    for _ in 0..10 {
        w.append(chunk.clone()).await.unwrap();
    }
    assert_eq!(sc.read(slice).await.unwrap(), chunk);
}

/// With heartbeats too rare to show the devices filling, the metanode keeps placing
/// extents on full devices and the datanodes refuse the appends: each refused append
/// still fails fast, and costs at most `NOSPACE_ALLOCATIONS_MAX` new extents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_by_full_datanodes_cost_a_bounded_number_of_extents() {
    let cl = Cluster::start(1, &["--node-grace-ms", "600000"]);
    let meta = cl.client();
    let _dns: Vec<DataNode> = (1..=3)
        .map(|i| DataNode::start_heartbeat(cl.dir.path(), NodeId(i), &cl.addrs(), "48M", false, 600_000))
        .collect();
    wait_datanodes_up(&meta, 3).await;
    let config = StreamConfig { extent_bytes_max: 4 << 20, ..Default::default() };
    let sc = StreamClient::new(meta.clone(), config);
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let chunk = Bytes::from(vec![6u8; 1 << 20]);
    // Datanodes that refused may take a later append (another extent, other devices).
    let (_, grown) = fill(&w, &meta, &chunk, false).await;
    assert!(
        grown <= FAILURES * NOSPACE_ALLOCATIONS_MAX as usize,
        "{grown} extents allocated during {FAILURES} refused appends"
    );
}
