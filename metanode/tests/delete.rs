//! Deleting extents against real datanodes: a deleted extent leaves its stream at once
//! and stays as a tombstone naming its copies until every datanode's deletion is
//! reported; open extents are never deleted, a sealed last one may be.

use std::collections::HashMap;

use bytes::Bytes;
use client::{DataNodeClient, StreamClient, StreamConfig};
use proto::meta::{Policy, Tombstone};
use proto::{ExtentId, NodeId};
use testkit::Cluster;

/// Deletes `t`'s copy on `node` and reports it.
async fn delete_copy(meta: &client::MetaClient, addrs: &HashMap<NodeId, String>, t: &Tombstone, node: NodeId) {
    let c = DataNodeClient::connect(addrs[&node].as_str()).await.unwrap();
    c.delete(t.extent).await.unwrap();
    meta.copies_gone(t.extent, &[node]).await.unwrap();
}

async fn listed(addr: &str) -> Vec<ExtentId> {
    let c = DataNodeClient::connect(addr).await.unwrap();
    c.list().await.unwrap().iter().map(|s| s.extent).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_extents_stay_tombstones_until_every_copy_is_gone() {
    let cl = Cluster::start(1, &[]);
    let meta = cl.client();
    let _dns = cl.datanodes(3).await;
    let sc = StreamClient::new(meta.clone(), StreamConfig::default());
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let mut slices = Vec::new();
    for i in 0..3u8 {
        slices.push(w.append(Bytes::from(vec![i; 1000 + i as usize])).await.unwrap());
        w.seal().await.unwrap();
    }
    let ids: Vec<ExtentId> = slices.iter().map(|s| s.extent).collect();
    let tail = w.append(Bytes::from_static(b"tail")).await.unwrap();
    assert!(ids.windows(2).all(|p| p[0] < p[1]) && ids[2] < tail.extent, "{ids:?} then {tail:?}");

    // The open last extent is never deleted, nor an unknown one.
    assert_eq!(meta.delete_extents(&[tail.extent, ExtentId(9999)]).await.unwrap(), vec![]);
    assert!(meta.tombstones().await.unwrap().is_empty());

    let before: Vec<_> = [ids[0], ids[1]].iter().map(|&id| sc.meta.extent(id)).collect();
    let mut infos = Vec::new();
    for f in before {
        infos.push(f.await.unwrap());
    }
    assert_eq!(meta.delete_extents(&ids[..2]).await.unwrap(), ids[..2].to_vec());
    assert_eq!(meta.delete_extents(&ids[..2]).await.unwrap(), vec![], "a retry deletes nothing more");
    let tombs = meta.tombstones().await.unwrap();
    assert_eq!(tombs.iter().map(|t| t.extent).collect::<Vec<_>>(), ids[..2].to_vec());
    for (t, e) in tombs.iter().zip(&infos) {
        assert_eq!((t.stream, t.policy, &t.replicas, t.sealed_len), (s.id, e.policy, &e.replicas, e.sealed_len));
    }
    assert_eq!(meta.status().await.unwrap().tombstones, 2);
    let v = meta.stream(s.id).await.unwrap();
    assert_eq!(v.stream.extents, vec![ids[2], tail.extent]);
    assert_eq!(sc.read(slices[2]).await.unwrap(), Bytes::from(vec![2u8; 1002]));

    // Every copy deleted and reported: the tombstone goes with the last one.
    let addrs: HashMap<NodeId, String> = meta.nodes().await.unwrap().into_iter().map(|n| (n.id, n.addr)).collect();
    let t = &tombs[0];
    delete_copy(&meta, &addrs, t, t.replicas[0].node).await;
    let left = meta.tombstones().await.unwrap();
    assert_eq!(left[0].replicas, t.replicas[1..].to_vec(), "one copy is gone");
    for t in &tombs {
        for r in &t.replicas {
            if (t.extent, r.node) != (tombs[0].extent, tombs[0].replicas[0].node) {
                delete_copy(&meta, &addrs, t, r.node).await;
            }
        }
    }
    assert!(meta.tombstones().await.unwrap().is_empty());
    meta.copies_gone(ids[0], &[t.replicas[0].node]).await.unwrap(); // a retry
    for addr in addrs.values() {
        let have = listed(addr).await;
        assert!(!have.contains(&ids[0]) && !have.contains(&ids[1]), "{addr} still lists {have:?}");
        assert!(have.contains(&ids[2]) && have.contains(&tail.extent), "{addr} lost a live extent: {have:?}");
    }

    // Once sealed, the last extent may go too, and the same writer appends after it.
    w.seal().await.unwrap();
    assert_eq!(meta.delete_extents(&[tail.extent]).await.unwrap(), vec![tail.extent]);
    let next = w.append(Bytes::from_static(b"after the deleted tail")).await.unwrap();
    assert!(next.extent > tail.extent);
    assert_eq!(sc.read(next).await.unwrap(), Bytes::from_static(b"after the deleted tail"));

    // Deleting the stream turns its remaining extents into tombstones.
    drop(w);
    meta.delete_stream(s.id).await.unwrap();
    let tombs = meta.tombstones().await.unwrap();
    assert_eq!(tombs.iter().map(|t| t.extent).collect::<Vec<_>>(), vec![ids[2], tail.extent, next.extent]);
    assert!(tombs.iter().all(|t| t.replicas.len() == 3 && t.stream == s.id));
}
