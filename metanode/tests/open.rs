//! Opening a stream whose writer died, against real datanode processes that register
//! and heartbeat: the open extent is fenced and sealed at the smallest length among the
//! reachable replicas; the old writer is fenced; silent datanodes go down and come back.

use std::time::Duration;

use bytes::Bytes;
use client::{ClientError, DataNodeClient, MetaClient};
use proto::meta::{MetaError, NodeState, Policy};
use proto::{Epoch, ExtentError, ExtentId, NodeId};
use testkit::{wait_for, Cluster};

async fn append(
    c: &DataNodeClient,
    extent: ExtentId,
    offset: u64,
    epoch: Epoch,
    data: &[u8],
) -> Result<u64, ClientError> {
    c.append(extent, offset, epoch, Bytes::copy_from_slice(data)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_fences_and_seals_the_dead_writers_extent_at_the_smallest_reachable_length() {
    let cl = Cluster::start(3, &["--node-grace-ms", "1500"]);
    let meta = MetaClient::new(cl.addrs());
    let mut dns = cl.datanodes(4).await;

    // Writer A: allocate, create on every replica, append to all (acknowledged).
    let s = meta.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let a = meta.open_stream(s.id, "writer-a").await.unwrap();
    let epoch_a = a.stream.epoch;
    let e = meta.allocate_extent(s.id, epoch_a, None).await.unwrap();
    let nodes = meta.nodes().await.unwrap();
    let addr = |node: NodeId| nodes.iter().find(|n| n.id == node).unwrap().addr.clone();
    let mut conns = Vec::new();
    for r in &e.replicas {
        let c = DataNodeClient::connect(addr(r.node).as_str()).await.unwrap();
        c.create(e.id, epoch_a, r.device).await.unwrap();
        conns.push(c);
    }
    let mut acked = 0u64;
    for i in 0..5u8 {
        let data = vec![i; 1000 + i as usize * 100];
        for c in &conns {
            append(c, e.id, acked, epoch_a, &data).await.unwrap();
        }
        acked += data.len() as u64;
    }
    // A partial append that reached only the first two replicas: never acknowledged.
    for c in &conns[..2] {
        append(c, e.id, acked, epoch_a, b"not acknowledged").await.unwrap();
    }

    // Writer B opens: the extent is sealed at the smallest length, the acked one.
    let b = meta.open_stream(s.id, "writer-b").await.unwrap();
    let epoch_b = b.stream.epoch;
    assert_eq!(epoch_b, epoch_a.next());
    assert_eq!(b.extents[0].sealed_len, Some(acked));
    for c in &conns {
        let st = c.stat(e.id).await.unwrap();
        assert!(st.sealed && st.length == acked, "replica {st:?}, expected sealed at {acked}");
    }
    // Writer A is fenced everywhere.
    let r = append(&conns[2], e.id, acked, epoch_a, b"late").await;
    assert!(
        matches!(r, Err(ClientError::Extent(ExtentError::StaleEpoch { .. } | ExtentError::Sealed { .. }))),
        "{r:?}"
    );
    assert!(matches!(meta.allocate_extent(s.id, epoch_a, Some(e.id)).await, Err(MetaError::Fenced { .. })));

    // B writes a second extent; then B dies with one replica's node dead too.
    let e2 = meta.allocate_extent(s.id, epoch_b, Some(e.id)).await.unwrap();
    let mut conns2 = Vec::new();
    for r in &e2.replicas {
        let c = DataNodeClient::connect(addr(r.node).as_str()).await.unwrap();
        c.create(e2.id, epoch_b, r.device).await.unwrap();
        conns2.push(c);
    }
    for c in &conns2 {
        append(c, e2.id, 0, epoch_b, &[7u8; 3000]).await.unwrap();
    }
    // The extra (unacknowledged) append reaches replica 0 only; replica 2's node dies.
    append(&conns2[0], e2.id, 3000, epoch_b, &[8u8; 500]).await.unwrap();
    let dead = e2.replicas[2].node;
    dns[dead.0 as usize - 1].kill9();
    let c = meta.open_stream(s.id, "writer-c").await.unwrap();
    assert_eq!(c.extents[1].sealed_len, Some(3000), "min over the reachable replicas");

    // The silent datanode is marked down; placement then avoids it; restart brings it up.
    wait_for("dead datanode marked down", Duration::from_secs(30), || async {
        let n = meta.nodes().await.ok()?;
        n.iter().any(|n| n.id == dead && n.state == NodeState::Down).then_some(())
    })
    .await;
    for _ in 0..5 {
        let s2 = meta.create_stream(Policy::Replica { n: 3 }).await.unwrap();
        let v = meta.open_stream(s2.id, "w").await.unwrap();
        let x = meta.allocate_extent(s2.id, v.stream.epoch, None).await.unwrap();
        assert!(x.replicas.iter().all(|r| r.node != dead), "placed on a down node: {x:?}");
    }
    dns[dead.0 as usize - 1].spawn();
    wait_for("restarted datanode back up", Duration::from_secs(30), || async {
        let n = meta.nodes().await.ok()?;
        n.iter().any(|n| n.id == dead && n.state == NodeState::Up).then_some(())
    })
    .await;
}
