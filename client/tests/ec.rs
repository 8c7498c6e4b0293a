//! Erasure-coded LogStreams (`ec:4+2`) against a real cluster: a metanode and seven
//! datanode processes (K+M+1). A shard's datanode killed with -9 in the middle of
//! pipelined appends (the writer seals and goes on on healthy nodes), reads with up to
//! M shards' datanodes dead (byte-identical), with M+1 dead (a clear error, never wrong
//! bytes) and after they come back, a shard corrupted on disk (decoded around and
//! reported), and a second writer fencing the first.

use std::time::{Duration, Instant};

use bytes::Bytes;
use client::ec::shard_len;
use client::{Slice, StreamClient, StreamConfig, StreamError};
use proto::meta::{MetaError, Policy};
use proto::NodeId;
use testkit::Cluster;

/// Record `i`: sizes from 1 byte to ~200 KiB, most not a multiple of K.
fn record(i: u32) -> Bytes {
    let len = match i % 5 {
        0 => 1 + i as usize % 7,
        1 => 4096,
        _ => 100 + (i as usize * 7919) % 200_000,
    };
    Bytes::from((0..len).map(|j| (i as usize * 131 + j * 7 + (j >> 8)) as u8).collect::<Vec<u8>>())
}

async fn check_all(sc: &StreamClient, acked: &[(Slice, Bytes)], when: &str) {
    for (slice, data) in acked {
        let got = sc.read(*slice).await.unwrap_or_else(|e| panic!("{slice:?} {when}: {e}"));
        assert!(got == *data, "{slice:?} {when}: wrong bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_4_2_slices_survive_m_dead_shards_and_fail_clearly_past_m() {
    let cl = Cluster::start(1, &["--node-grace-ms", "1000"]);
    let sc = StreamClient::new(
        cl.client(),
        // Shard extents of 1 MiB: an extent holds 4 MiB of data, so the stream rotates.
        // A replica timeout far above the hedge: a read that waited for a stopped shard
        // would take at least this long.
        StreamConfig { extent_bytes_max: 1 << 20, replica_timeout: Duration::from_secs(10), ..Default::default() },
    );
    let mut dns = cl.datanodes(7).await;
    // Wider than the cluster: refused when the stream is created.
    let wide = sc.create_stream(Policy::Ec { k: 6, m: 3 }).await;
    assert!(matches!(wide, Err(StreamError::Meta(MetaError::NotEnoughNodes { need: 9, have: 7, .. }))), "{wide:?}");

    let s = sc.create_stream(Policy::Ec { k: 4, m: 2 }).await.unwrap();
    let w = sc.open_writer(s.id, "ec-test").await.unwrap();
    let mut acked: Vec<(Slice, Bytes)> = Vec::new();
    for i in 0..60u32 {
        acked.push((w.append(record(i)).await.unwrap(), record(i)));
    }
    let e = sc.meta.extent(acked.last().unwrap().0.extent).await.unwrap();
    assert_eq!(e.policy, Policy::Ec { k: 4, m: 2 });
    assert_eq!(e.replicas.len(), 6, "one shard per datanode");

    // Kill one shard's datanode while 64 appends are on the wire: every one is
    // acknowledged, in order, the ones after the kill on a new extent without it.
    let current = e.id;
    let v1 = e.replicas[0].node;
    let futs: Vec<_> = (60..124u32).map(|i| (w.submit(record(i)), record(i))).collect();
    dns[v1.0 as usize - 1].kill9();
    testkit::collect_in_order(futs, &mut acked).await;
    for i in 124..160u32 {
        acked.push((w.append(record(i)).await.unwrap(), record(i)));
    }
    let last = sc.meta.extent(acked.last().unwrap().0.extent).await.unwrap();
    assert_ne!(last.id, current, "appends after the kill moved to a new extent");
    assert!(last.replicas.iter().all(|r| r.node != v1), "the new extent avoids the dead datanode");
    let view = sc.meta.stream(s.id).await.unwrap();
    assert!(view.extents.len() >= 3, "rotation by size and by failure: {} extents", view.extents.len());
    check_all(&sc, &acked, "with one shard's datanode dead").await;

    // M = 2 dead: a second datanode of the extent that was open at the first kill.
    let e_kill = sc.meta.extent(current).await.unwrap();
    let others: Vec<NodeId> = e_kill.replicas.iter().map(|r| r.node).filter(|&n| n != v1).collect();
    let (v2, v3) = (others[0], others[1]);
    dns[v2.0 as usize - 1].kill9();
    check_all(&sc, &acked, "with two shards' datanodes dead").await;
    // Parts of slices (ranged reads) across shard boundaries, also decoded around.
    for (slice, data) in acked.iter().filter(|(s, _)| s.len > 1000).take(12) {
        let (off, len) = (slice.len as u64 / 3, slice.len as u64 / 2);
        let part = sc.read_part(*slice, off, len).await.unwrap();
        assert_eq!(&part[..], &data[off as usize..(off + len) as usize], "{slice:?} part {off}+{len}");
    }

    // M + 1 = 3 dead: a slice whose bytes all lie on live data shards still reads (a
    // short one fills only the first shards); any other slice of an extent with three
    // dead shards fails with a clear error. No read ever returns wrong bytes.
    dns[v3.0 as usize - 1].kill9();
    let dead = [v1, v2, v3];
    let (mut failed, mut read) = (0, 0);
    for (slice, data) in &acked {
        let e = sc.meta.extent(slice.extent).await.unwrap();
        let lost = e.replicas.iter().filter(|r| dead.contains(&r.node)).count();
        let holding = (slice.len as usize).div_ceil(shard_len(slice.len as usize, 4));
        let direct = e.replicas[..holding].iter().all(|r| !dead.contains(&r.node));
        let readable = direct || lost <= 2;
        match sc.read(*slice).await {
            Ok(got) => {
                assert!(got == *data, "{slice:?}: wrong bytes with {lost} shards lost");
                assert!(readable, "{slice:?} read with {lost} of 6 shards gone, one of its data shards among them");
                read += 1;
            }
            Err(StreamError::Unreadable { why, .. }) => {
                assert!(!readable, "{slice:?} unreadable with {lost} shards lost: {why}");
                assert!(why.contains("only 3 good shards, 4 needed"), "{why}");
                failed += 1;
            }
            Err(other) => panic!("{slice:?}: {other}"),
        }
    }
    assert!(failed > 0, "the extent open at the first kill has all three dead");
    println!("with 3 of 7 datanodes dead: {read} slices read, {failed} refused");

    // The datanodes come back: everything reads again.
    for v in dead {
        dns[v.0 as usize - 1].spawn();
    }
    testkit::wait_datanodes_up(&sc.meta, 7).await;
    check_all(&sc, &acked, "after the datanodes came back").await;

    // A slow shard (its datanode stopped, connections open, nothing answered): reads
    // decode from the other shards after `ec_hedge` instead of waiting it out.
    let (slice, data) = acked.iter().rev().find(|(s, _)| s.len > 100_000).unwrap().clone();
    let e = sc.meta.extent(slice.extent).await.unwrap();
    let slow = e.replicas[0].node;
    sc.read(slice).await.unwrap(); // connections to every shard's datanode are open
    dns[slow.0 as usize - 1].signal("STOP");
    let t = Instant::now();
    assert_eq!(sc.read(slice).await.unwrap(), data);
    let part = sc.read_part(slice, 10, 1000).await.unwrap();
    assert_eq!(&part[..], &data[10..1010]);
    let took = t.elapsed();
    dns[slow.0 as usize - 1].signal("CONT");
    assert!(took < sc.config.replica_timeout, "reads around a stopped shard took {took:?}");
    println!("two reads around a stopped shard took {took:?}");

    // A shard corrupted on disk: the datanode refuses it (CRC), the reader decodes
    // from the others and reports the bad copy to the metanode.
    let marker: Vec<u8> = (0..4 * 8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let slice = w.append(Bytes::from(marker.clone())).await.unwrap();
    let e = sc.meta.extent(slice.extent).await.unwrap();
    let victim = e.replicas[1].node; // data shard 1: bytes 8192..16384
    let dev = cl.dir.path().join(format!("d{victim}.img"));
    let img = std::fs::read(&dev).unwrap();
    let shard = &marker[8192..16384];
    // The device may hold the shard twice: the append can first go to an extent whose
    // connections died with the restarts above (written on some shards, then sealed
    // below it) and then to a new one. Corrupt every copy, so the one read is among them.
    let copies: Vec<usize> =
        img.windows(shard.len()).enumerate().filter(|(_, w)| *w == shard).map(|(at, _)| at).collect();
    assert!(!copies.is_empty(), "shard 1 is on its datanode's device");
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    for at in copies {
        std::os::unix::fs::FileExt::write_at(&f, &[img[at + 100] ^ 0xff], (at + 100) as u64).unwrap();
    }
    f.sync_all().unwrap();
    // A read that decodes from the first K shards to arrive (the hedge, on a loaded
    // machine) may not wait for the bad one: read until one meets it. Every read must
    // return the right bytes.
    testkit::wait_for("the bad shard reported", Duration::from_secs(30), || async {
        assert_eq!(sc.read(slice).await.unwrap().as_ref(), &marker[..]);
        let e = sc.meta.extent(slice.extent).await.ok()?;
        e.bad.contains(&victim).then_some(())
    })
    .await;

    // A second writer fences the first; the first's open extent is sealed by the
    // opener at a length that keeps every acknowledged slice.
    acked.push((slice, Bytes::from(marker)));
    let w2 = sc.open_writer(s.id, "second").await.unwrap();
    let r = w.append(record(999)).await;
    assert!(matches!(r, Err(StreamError::Fenced(_) | StreamError::Meta(_))), "{r:?}");
    let s2 = w2.append(record(1000)).await.unwrap();
    acked.push((s2, record(1000)));
    let view = sc.meta.stream(s.id).await.unwrap();
    for e in &view.extents[..view.extents.len() - 1] {
        let end = acked
            .iter()
            .filter(|(a, _)| a.extent == e.id)
            .map(|(a, _)| a.offset + shard_len(a.len as usize, 4) as u64)
            .max()
            .unwrap_or(0);
        assert!(e.sealed_len.expect("sealed") >= end, "extent {} sealed below an acknowledged slice", e.id);
    }
    check_all(&sc, &acked, "after the second writer opened").await;
}
