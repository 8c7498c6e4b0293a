//! Extent semantics over the RPC against a real datanode process, every refusal included.

mod common;

use bytes::Bytes;
use client::{ClientError, DataNodeClient};
use common::{default_args, Node};
use proto::msg::ANY_DEVICE;
use proto::{Epoch, ExtentError, ExtentId, Request, APPEND_BYTES_MAX, READ_BYTES_MAX};

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> ExtentError {
    match r {
        Err(ClientError::Extent(e)) => e,
        other => panic!("expected a typed refusal, got {other:?}"),
    }
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_seal_delete_and_every_refusal() {
    every_operation_and_refusal(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_the_pwrite_engine() {
    every_operation_and_refusal(&["--io-engine", "sync"]).await;
}

async fn every_operation_and_refusal(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = default_args(dir.path());
    args.extend(extra.iter().map(|s| s.to_string()));
    let node = Node::start(dir.path(), args);
    let engine = match (common::spdk_backend(), extra.is_empty()) {
        (true, _) => "SPDK bdev",
        (false, true) => "io_uring",
        (false, false) => "pwrite",
    };
    assert!(node.log().contains(engine), "datanode runs on {engine}:\n{}", node.log());
    let c = node.client().await;

    c.create(ExtentId(1), Epoch(5), ANY_DEVICE).await.unwrap();
    assert_eq!(
        refused(c.create(ExtentId(1), Epoch(5), ANY_DEVICE).await),
        ExtentError::AlreadyExists { extent: ExtentId(1) }
    );
    assert_eq!(refused(c.create(ExtentId(2), Epoch(1), 7).await), ExtentError::NoSuchDevice { device: 7 });

    assert_eq!(c.append(ExtentId(1), 0, Epoch(5), b(b"hello ")).await.unwrap(), 6);
    assert_eq!(c.append(ExtentId(1), 6, Epoch(5), b(b"world")).await.unwrap(), 11);
    assert_eq!(&c.read(ExtentId(1), 0, 11).await.unwrap()[..], b"hello world");
    assert_eq!(&c.read(ExtentId(1), 3, 5).await.unwrap()[..], b"lo wo");
    assert_eq!(c.read(ExtentId(1), 11, 0).await.unwrap().len(), 0);

    // Offsets: behind, ahead.
    assert_eq!(
        refused(c.append(ExtentId(1), 3, Epoch(5), b(b"xx")).await),
        ExtentError::OffsetMismatch { expected_offset: 3, length: 11 }
    );
    assert_eq!(
        refused(c.append(ExtentId(1), 12, Epoch(5), b(b"xx")).await),
        ExtentError::OffsetMismatch { expected_offset: 12, length: 11 }
    );
    // Offsets whose end would pass u64::MAX are just wrong offsets (and the server lives on).
    let near_max = u64::MAX - 1;
    assert_eq!(
        refused(c.append(ExtentId(1), near_max, Epoch(5), b(b"xx")).await),
        ExtentError::OffsetMismatch { expected_offset: near_max, length: 11 }
    );
    // A retry of an applied append is acknowledged, not duplicated.
    assert_eq!(c.append(ExtentId(1), 6, Epoch(5), b(b"world")).await.unwrap(), 11);
    assert_eq!(c.stat(ExtentId(1)).await.unwrap().length, 11);
    // ...but a different append at that offset is not a retry.
    assert!(matches!(
        refused(c.append(ExtentId(1), 6, Epoch(5), b(b"WORLD")).await),
        ExtentError::OffsetMismatch { .. }
    ));

    // Epochs: older refused, newer accepted and then binding.
    assert_eq!(
        refused(c.append(ExtentId(1), 11, Epoch(4), b(b"!")).await),
        ExtentError::StaleEpoch { epoch: Epoch(4), current: Epoch(5) }
    );
    assert_eq!(c.append(ExtentId(1), 11, Epoch(6), b(b"!")).await.unwrap(), 12);
    assert_eq!(
        refused(c.append(ExtentId(1), 12, Epoch(5), b(b"?")).await),
        ExtentError::StaleEpoch { epoch: Epoch(5), current: Epoch(6) }
    );
    assert_eq!(c.stat(ExtentId(1)).await.unwrap().epoch, Epoch(6));

    // Payload checksum, size limits, empty appends.
    let bad =
        Request::Append { extent: ExtentId(1), expected_offset: 12, epoch: Epoch(6), crc32c: 1234, payload: b(b"abc") };
    assert!(matches!(refused(c.call(bad).await), ExtentError::PayloadChecksum { sent: 1234, .. }));
    let big = Bytes::from(vec![0u8; APPEND_BYTES_MAX as usize + 1]);
    assert!(matches!(refused(c.append(ExtentId(1), 12, Epoch(6), big).await), ExtentError::AppendTooLarge { .. }));
    assert!(matches!(refused(c.append(ExtentId(1), 12, Epoch(6), Bytes::new()).await), ExtentError::Malformed(_)));

    // Reads past the end or too large.
    assert_eq!(refused(c.read(ExtentId(1), 10, 5).await), ExtentError::OutOfRange { offset: 10, len: 5, length: 12 });
    assert!(matches!(refused(c.read(ExtentId(1), 0, READ_BYTES_MAX + 1).await), ExtentError::ReadTooLarge { .. }));
    assert!(matches!(refused(c.read(ExtentId(1), u64::MAX, 1).await), ExtentError::OutOfRange { .. }));

    // Seals: beyond the end, off a boundary, then for real, then conflicting.
    assert_eq!(refused(c.seal(ExtentId(1), 13).await), ExtentError::SealBeyondEnd { requested: 13, length: 12 });
    assert_eq!(refused(c.seal(ExtentId(1), 8).await), ExtentError::NotAppendBoundary { requested: 8, boundary: 6 });
    c.seal(ExtentId(1), 11).await.unwrap();
    c.seal(ExtentId(1), 11).await.unwrap(); // idempotent
    assert_eq!(refused(c.seal(ExtentId(1), 6).await), ExtentError::SealConflict { requested: 6, length: 11 });
    assert_eq!(refused(c.append(ExtentId(1), 12, Epoch(6), b(b"x")).await), ExtentError::Sealed { length: 11 });
    assert_eq!(refused(c.append(ExtentId(1), 11, Epoch(6), b(b"x")).await), ExtentError::Sealed { length: 11 });
    let s = c.stat(ExtentId(1)).await.unwrap();
    assert!(s.sealed);
    assert_eq!(s.length, 11, "sealing below the end cuts the extent");
    assert_eq!(refused(c.read(ExtentId(1), 0, 12).await), ExtentError::OutOfRange { offset: 0, len: 12, length: 11 });

    // Unknown extents.
    assert_eq!(
        refused(c.append(ExtentId(9), 0, Epoch(1), b(b"x")).await),
        ExtentError::NotFound { extent: ExtentId(9) }
    );
    assert_eq!(refused(c.read(ExtentId(9), 0, 1).await), ExtentError::NotFound { extent: ExtentId(9) });
    assert_eq!(refused(c.seal(ExtentId(9), 0).await), ExtentError::NotFound { extent: ExtentId(9) });
    assert_eq!(refused(c.stat(ExtentId(9)).await), ExtentError::NotFound { extent: ExtentId(9) });

    // List, node stats, delete.
    c.create(ExtentId(2), Epoch(1), 1).await.unwrap();
    let l = c.list().await.unwrap();
    assert_eq!(
        l.iter().map(|s| (s.extent, s.sealed)).collect::<Vec<_>>(),
        vec![(ExtentId(1), true), (ExtentId(2), false)]
    );
    assert_eq!(l[1].device, 1);
    let n = c.node_stat().await.unwrap();
    assert_eq!(n.devices.len(), 2);
    assert!(n.devices[l[0].device as usize].used_bytes > 0, "extent 1 holds a cluster");
    assert_eq!(n.devices.iter().map(|d| d.extents).sum::<u32>(), 2);
    c.delete(ExtentId(1)).await.unwrap();
    assert_eq!(refused(c.delete(ExtentId(1)).await), ExtentError::NotFound { extent: ExtentId(1) });
    assert_eq!(refused(c.read(ExtentId(1), 0, 1).await), ExtentError::NotFound { extent: ExtentId(1) });
    let after = c.node_stat().await.unwrap();
    assert_eq!(after.devices.iter().map(|d| d.used_bytes).sum::<u64>(), 0, "a deleted extent's clusters are free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), default_args(dir.path()));
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(3), 0).await.unwrap();
    c.create(ExtentId(2), Epoch(3), 1).await.unwrap();
    c.create(ExtentId(3), Epoch(3), 1).await.unwrap();
    let mut off = 0;
    for i in 0..50u64 {
        off = c
            .append(ExtentId(1), off, Epoch(3), Bytes::from(common::content(1, 0, off, 100 + i as usize * 37)))
            .await
            .unwrap();
    }
    c.append(ExtentId(2), 0, Epoch(4), b(b"abcdef")).await.unwrap();
    c.append(ExtentId(2), 6, Epoch(4), b(b"ghi")).await.unwrap();
    c.seal(ExtentId(2), 6).await.unwrap();
    c.delete(ExtentId(3)).await.unwrap();
    drop(c);
    node.restart();
    let c = node.client().await;
    let s1 = c.stat(ExtentId(1)).await.unwrap();
    assert_eq!((s1.length, s1.epoch, s1.sealed, s1.device), (off, Epoch(3), false, 0));
    let all = c.read(ExtentId(1), 0, off as u32).await.unwrap();
    let mut want = Vec::new();
    let mut o = 0;
    for i in 0..50u64 {
        let p = common::content(1, 0, o, 100 + i as usize * 37);
        o += p.len() as u64;
        want.extend_from_slice(&p);
    }
    assert!(all == want);
    let s2 = c.stat(ExtentId(2)).await.unwrap();
    assert_eq!((s2.length, s2.epoch, s2.sealed, s2.device), (6, Epoch(4), true, 1));
    assert_eq!(refused(c.append(ExtentId(2), 6, Epoch(4), b(b"x")).await), ExtentError::Sealed { length: 6 });
    assert_eq!(refused(c.stat(ExtentId(3)).await), ExtentError::NotFound { extent: ExtentId(3) });
    // The open extent takes appends again where it left off.
    assert_eq!(c.append(ExtentId(1), off, Epoch(3), b(b"more")).await.unwrap(), off + 4);
    assert_eq!(
        refused(c.append(ExtentId(1), off + 4, Epoch(2), b(b"x")).await),
        ExtentError::StaleEpoch { epoch: Epoch(2), current: Epoch(3) }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_on_one_connection_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), default_args(dir.path()));
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(1), ANY_DEVICE).await.unwrap();
    let mut futs = Vec::new();
    let mut off = 0u64;
    for i in 0..300u64 {
        // Mostly small appends with a large one now and then, so that batches mix
        // packed payloads with ones received into aligned buffers.
        let len = if i % 7 == 3 { 70_000 + i as usize } else { 1 + (i as usize * 997) % 20000 };
        let p = common::content(1, 1, off, len);
        let len = p.len() as u64;
        futs.push(c.submit(DataNodeClient::append_request(ExtentId(1), off, Epoch(1), Bytes::from(p))));
        off += len;
    }
    let mut ends = Vec::new();
    for f in futs {
        ends.push(client::conn::appended(f.await.unwrap()).unwrap());
    }
    assert!(ends.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*ends.last().unwrap(), off);
    assert_eq!(c.stat(ExtentId(1)).await.unwrap().length, off);
    // Every byte reads back as sent, before and after a restart (recovery parses both layouts).
    let check = |c: client::DataNodeClient| async move {
        let mut pos = 0u64;
        for i in 0..300u64 {
            let len = if i % 7 == 3 { 70_000 + i as usize } else { 1 + (i as usize * 997) % 20000 };
            assert_eq!(
                c.read(ExtentId(1), pos, len as u32).await.unwrap(),
                common::content(1, 1, pos, len),
                "append {i}"
            );
            pos += len as u64;
        }
    };
    check(c).await;
    node.restart();
    check(node.client().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_full_extents_and_full_devices_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--device".into(),
        format!("{}:8M", dir.path().join("small.img").display()),
        "--extent-bytes-max".into(),
        "3M".into(),
    ];
    let node = Node::start(dir.path(), args);
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(1), 0).await.unwrap();
    let mb = Bytes::from(vec![7u8; 1 << 20]);
    let mut off = 0;
    for _ in 0..3 {
        off = c.append(ExtentId(1), off, Epoch(1), mb.clone()).await.unwrap();
    }
    assert_eq!(
        refused(c.append(ExtentId(1), off, Epoch(1), b(b"x")).await),
        ExtentError::ExtentFull { length: 3 << 20, limit: 3 << 20 }
    );
    // Fill the device with a second extent until it refuses with NoSpace.
    c.create(ExtentId(2), Epoch(1), 0).await.unwrap();
    let mut off2 = 0;
    let err = loop {
        match c.append(ExtentId(2), off2, Epoch(1), mb.clone()).await {
            Ok(n) => off2 = n,
            Err(e) => break e,
        }
        assert!(off2 < 64 << 20, "an 8 MiB device cannot hold this much");
    };
    match err {
        ClientError::Extent(ExtentError::NoSpace { device: 0 }) => {}
        other => panic!("expected NoSpace, got {other:?}"),
    }
    // What was acknowledged before is still readable.
    assert_eq!(c.read(ExtentId(2), 0, 1 << 20).await.unwrap(), mb);
    assert_eq!(c.read(ExtentId(1), 2 << 20, 1 << 20).await.unwrap(), mb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_pipelining_more_than_its_byte_budget_is_slowed_not_stuck() {
    // 24 appends of 4 MiB in flight at once: 96 MiB, more than a connection may hold
    // (CONNECTION_IN_FLIGHT_BYTES_MAX), so the server stops reading until answers go out.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), vec!["--device".into(), format!("{}:256M", dir.path().join("d.img").display())]);
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(1), 0).await.unwrap();
    let payload = Bytes::from(vec![3u8; 4 << 20]);
    let futs: Vec<_> = (0..24u64)
        .map(|i| c.submit(DataNodeClient::append_request(ExtentId(1), i * (4 << 20), Epoch(1), payload.clone())))
        .collect();
    for (i, f) in futs.into_iter().enumerate() {
        assert_eq!(client::conn::appended(f.await.unwrap()).unwrap(), (i as u64 + 1) * (4 << 20));
    }
    assert_eq!(c.read(ExtentId(1), 95 << 20, 4096).await.unwrap(), vec![3u8; 4096]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_refuses_older_epochs_and_reports_every_accepted_append() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), default_args(dir.path()));
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(1), ANY_DEVICE).await.unwrap();
    // Many appends in flight on one connection, then a fence on another: the fence's
    // length covers every append accepted before it, and none after it is accepted.
    let mut pending = Vec::new();
    let mut off = 0u64;
    for i in 0..200u32 {
        let data = Bytes::from(vec![i as u8; 1000 + (i as usize % 7) * 300]);
        pending.push(c.submit(DataNodeClient::append_request(ExtentId(1), off, Epoch(1), data.clone())));
        off += data.len() as u64;
    }
    let fencer = node.client().await;
    let st = fencer.fence(ExtentId(1), Epoch(2)).await.unwrap();
    let mut acked = 0u64;
    for p in pending {
        if let Ok(r) = p.await {
            acked = acked.max(client::conn::appended(r).unwrap());
        }
    }
    assert_eq!(st.length, acked, "the fence reports exactly the appends that were accepted before it");
    assert_eq!(st.epoch, Epoch(2));
    assert!(matches!(
        refused(c.append(ExtentId(1), st.length, Epoch(1), b(b"late")).await),
        ExtentError::StaleEpoch { epoch: Epoch(1), current: Epoch(2) }
    ));
    assert!(matches!(refused(fencer.fence(ExtentId(1), Epoch(1)).await), ExtentError::StaleEpoch { .. }));
    assert!(matches!(refused(fencer.fence(ExtentId(99), Epoch(2)).await), ExtentError::NotFound { .. }));
    // The fenced length is durable and readable; sealing there and fencing again agree.
    assert_eq!(c.read(ExtentId(1), 0, st.length as u32).await.unwrap().len() as u64, st.length);
    c.seal(ExtentId(1), st.length).await.unwrap();
    assert_eq!(fencer.fence(ExtentId(1), Epoch(3)).await.unwrap().length, st.length);
}

/// A fence holds across a kill -9 and restart: the writer it fenced stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), default_args(dir.path()));
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(1), ANY_DEVICE).await.unwrap();
    c.append(ExtentId(1), 0, Epoch(1), b(b"before")).await.unwrap();
    let st = c.fence(ExtentId(1), Epoch(5)).await.unwrap();
    assert_eq!((st.length, st.epoch), (6, Epoch(5)));
    node.kill9();
    node.start_again();
    let c = node.client().await;
    assert!(matches!(
        refused(c.append(ExtentId(1), 6, Epoch(4), b(b"late")).await),
        ExtentError::StaleEpoch { epoch: Epoch(4), current: Epoch(5) }
    ));
    c.append(ExtentId(1), 6, Epoch(5), b(b"after")).await.unwrap();
    assert_eq!(&c.read(ExtentId(1), 0, 11).await.unwrap()[..], b"beforeafter");
}
