//! The writer's floor (the smallest extent id a new append can land in, which GC must
//! not delete from) and its sealing of an idle open extent.

use std::time::Duration;

use bytes::Bytes;
use client::{StreamClient, StreamConfig};
use proto::meta::Policy;
use proto::ExtentId;
use testkit::{wait_for, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_follows_allocation_rotation_and_seal() {
    let cl = Cluster::start(1, &[]);
    let _dns = cl.datanodes(3).await;
    let config = StreamConfig { extent_bytes_max: 8192, idle_seal: None, ..Default::default() };
    let sc = StreamClient::new(cl.client(), config);
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    assert_eq!(w.floor(), ExtentId(0), "a stream without extents");
    let a = w.append(Bytes::from(vec![1u8; 5000])).await.unwrap();
    assert_eq!(w.floor(), a.extent, "the open extent");
    // The next append does not fit: rotation seals `a` and opens a later extent.
    let b = w.append(Bytes::from(vec![2u8; 5000])).await.unwrap();
    assert!(b.extent > a.extent);
    assert_eq!(w.floor(), b.extent);
    w.seal().await.unwrap();
    assert_eq!(w.floor(), b.extent.next(), "sealed: the next extent comes after");
    let c = w.append(Bytes::from(vec![3u8; 10])).await.unwrap();
    assert!(c.extent >= b.extent.next());
    assert_eq!(w.floor(), c.extent);
    // A new writer starts past the stream's last extent (its open sealed it).
    let w2 = sc.open_writer(s.id, "second").await.unwrap();
    assert_eq!(w2.floor(), c.extent.next());
    let d = w2.append(Bytes::from_static(b"d")).await.unwrap();
    assert!(d.extent >= w2.floor());
    for (slice, byte) in [(a, 1u8), (b, 2), (c, 3)] {
        assert!(sc.read(slice).await.unwrap().iter().all(|&x| x == byte));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_open_extent_is_sealed_and_the_next_append_opens_another() {
    let cl = Cluster::start(1, &[]);
    let _dns = cl.datanodes(3).await;
    let config = StreamConfig { idle_seal: Some(Duration::from_secs(1)), ..Default::default() };
    let sc = StreamClient::new(cl.client(), config);
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let a = w.append(Bytes::from(vec![7u8; 3000])).await.unwrap();
    // The writer raises its floor only after the metanode committed the seal, so
    // wait for the floor: the seal is then visible on the metanode too.
    wait_for("the writer's floor past the idle extent", Duration::from_secs(20), || async {
        (w.floor() == a.extent.next()).then_some(())
    })
    .await;
    let sealed = sc.meta.extent(a.extent).await.unwrap().sealed_len;
    assert_eq!(sealed, Some(a.len as u64), "sealed at what was acknowledged");
    // Sealing allocated nothing: the stream still ends with `a`.
    assert_eq!(sc.meta.stream(s.id).await.unwrap().stream.extents, vec![a.extent]);
    let b = w.append(Bytes::from(vec![8u8; 2000])).await.unwrap();
    assert!(b.extent > a.extent, "{b:?} after the seal of {a:?}");
    assert_eq!(sc.read(a).await.unwrap(), Bytes::from(vec![7u8; 3000]));
    assert_eq!(sc.read(b).await.unwrap(), Bytes::from(vec![8u8; 2000]));
}
