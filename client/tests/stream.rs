//! The client's LogStream writer against a real cluster (3 metanodes, 4 datanodes):
//! a datanode killed with -9 during appends, rotation by size, CRC checks on reads, and
//! fencing by a second writer. Every acknowledged slice reads back byte-identical.

use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Slice, StreamClient, StreamConfig, StreamError};
use proto::meta::Policy;
use proto::ExtentId;
use testkit::{sibling_bin, Cluster};

fn record(i: u32) -> Bytes {
    let len = 100 + (i as usize * 7919) % 20_000;
    Bytes::from((0..len).map(|j| (i as usize * 31 + j) as u8).collect::<Vec<u8>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_a_datanode_kill9_and_read_back_identical() {
    let cl = Cluster::start(3, &["--node-grace-ms", "1000"]);
    let sc = StreamClient::new(
        cl.client(),
        StreamConfig { extent_bytes_max: 1 << 20, replica_timeout: Duration::from_secs(2), ..Default::default() },
    );
    let mut dns = cl.datanodes(4).await;
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let mut acked: Vec<(Slice, Bytes)> = Vec::new();
    for i in 0..150u32 {
        let data = record(i);
        acked.push((w.append(data.clone()).await.unwrap(), data));
    }
    // Kill a datanode holding the current extent; appends carry on elsewhere.
    let current = acked.last().unwrap().0.extent;
    let victim = sc.meta.extent(current).await.unwrap().replicas[0].node;
    dns[victim.0 as usize - 1].kill9();
    let killed = Instant::now();
    let first = w.append(record(150)).await.unwrap();
    let resumed = killed.elapsed();
    assert_ne!(first.extent, current, "the append after the kill went to a new extent");
    acked.push((first, record(150)));
    // Many appends in flight at once: they land in the order they were submitted.
    let futs: Vec<_> = (151..300u32).map(|i| (w.submit(record(i)), record(i))).collect();
    testkit::collect_in_order(futs, &mut acked).await;
    println!("appends resumed {resumed:?} after the kill");
    // The first victim comes back (four nodes again), then a second kill while 64
    // appends are on the wire: every one is acknowledged once, in order.
    dns[victim.0 as usize - 1].spawn();
    testkit::wait_datanodes_up(&sc.meta, 4).await;
    let current = acked.last().unwrap().0.extent;
    let victim2 = sc.meta.extent(current).await.unwrap().replicas.iter().map(|r| r.node).find(|&n| n != victim);
    let futs: Vec<_> = (300..364u32).map(|i| (w.submit(record(i)), record(i))).collect();
    dns[victim2.unwrap().0 as usize - 1].kill9();
    testkit::collect_in_order(futs, &mut acked).await;
    let v = sc.meta.stream(s.id).await.unwrap();
    assert!(v.extents.len() >= 3, "rotation by size and by failure: {} extents", v.extents.len());
    assert!(v.extents[..v.extents.len() - 1].iter().all(|e| e.sealed_len.is_some()));
    for (slice, data) in &acked {
        assert_eq!(&sc.read(*slice).await.unwrap(), data, "{slice:?}");
    }

    // Bytes that do not match the slice's CRC are never served: every replica is
    // tried, then a clear error.
    let (slice, data) = acked[10].clone();
    let bad = Slice { crc: slice.crc ^ 1, ..slice };
    assert!(matches!(sc.read(bad).await, Err(StreamError::Unreadable { .. })));
    assert_eq!(sc.read(slice).await.unwrap(), data);

    // A second writer fences the first: its next append fails, nothing interleaves.
    let w2 = sc.open_writer(s.id, "second").await.unwrap();
    let r = w.append(record(999)).await;
    assert!(matches!(r, Err(StreamError::Fenced(_) | StreamError::Meta(_))), "{r:?}");
    let s2 = w2.append(record(1000)).await.unwrap();
    assert_eq!(sc.read(s2).await.unwrap(), record(1000));
    for (slice, data) in &acked {
        assert_eq!(&sc.read(*slice).await.unwrap(), data, "{slice:?} after the second writer opened");
    }
}

/// Byte `i` of the test input stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2654435761) >> 13) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_with_kill9_loses_no_acknowledged_slice() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let cl = Cluster::start(3, &["--node-grace-ms", "600000"]);
    let sc = StreamClient::new(cl.client(), StreamConfig::default());
    let _dns = cl.datanodes(4).await;
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    const CHUNK: u64 = 4096;
    let mut child = Command::new(sibling_bin("strata"))
        .envs(testkit::secrets_env())
        .args(["--meta", &cl.addrs().join(","), "stream", "put", &s.id.to_string(), "--chunk", "4096"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Feed the writer an endless pattern; it stops when the process dies.
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let mut pos = 0u64;
        loop {
            let buf: Vec<u8> = (pos..pos + 65536).map(pattern).collect();
            if stdin.write_all(&buf).is_err() {
                return;
            }
            pos += 65536;
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < 60 {
        let l = lines.next().expect("the writer printed a slice").unwrap();
        let f: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
        acked.push(Slice { extent: ExtentId(f[0]), offset: f[1], len: f[2] as u32, crc: f[3] as u32 });
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever the dead writer printed after our 60 was acknowledged too.
    for l in lines.map_while(Result::ok) {
        let f: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
        acked.push(Slice { extent: ExtentId(f[0]), offset: f[1], len: f[2] as u32, crc: f[3] as u32 });
    }

    // A new writer: higher epoch, the old extent sealed at or past every acked byte.
    let w = sc.open_writer(s.id, "successor").await.unwrap();
    let v = sc.meta.stream(s.id).await.unwrap();
    assert_eq!(v.stream.epoch, w.epoch);
    for e in &v.extents {
        let end = acked.iter().filter(|a| a.extent == e.id).map(|a| a.offset + a.len as u64).max().unwrap_or(0);
        let sealed = e.sealed_len.expect("every extent of the dead writer is sealed");
        assert!(sealed >= end, "extent {} sealed at {sealed}, below acknowledged end {end}", e.id);
    }
    for (k, slice) in acked.iter().enumerate() {
        let expect: Vec<u8> = (k as u64 * CHUNK..(k as u64 + 1) * CHUNK).map(pattern).collect();
        assert_eq!(sc.read(*slice).await.unwrap().as_ref(), &expect[..], "slice {k}: {slice:?}");
    }
    let next = w.append(Bytes::from_static(b"after the takeover")).await.unwrap();
    assert_eq!(sc.read(next).await.unwrap().as_ref(), b"after the takeover");
    println!("{} slices acknowledged by the killed writer, all intact", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_resume_after_the_metanode_leader_is_killed_and_a_corrupt_replica_is_read_around() {
    let mut cl = Cluster::start(3, &["--node-grace-ms", "600000"]);
    // Small extents: appends keep needing the metanode (seal, allocate) while it fails over.
    let sc = StreamClient::new(cl.client(), StreamConfig { extent_bytes_max: 64 << 10, ..Default::default() });
    let dns = cl.datanodes(4).await;
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let mut acked = Vec::new();
    let futs: Vec<_> = (0..40u32).map(|i| (w.submit(record(i)), record(i))).collect();
    let leader = cl.leader().await;
    cl.member_mut(leader).kill9();
    let killed = Instant::now();
    for (f, data) in futs {
        acked.push((f.await.unwrap(), data));
    }
    for i in 40..80u32 {
        acked.push((w.append(record(i)).await.unwrap(), record(i)));
    }
    println!("80 appends across a leader kill in {:?}", killed.elapsed());
    let v = sc.meta.stream(s.id).await.unwrap();
    assert!(v.extents.len() > 10, "rotations went on through the failover: {} extents", v.extents.len());

    // Corrupt one replica's copy on disk: find the slice's bytes in that datanode's
    // device file and flip one. The datanode refuses them (CRC) and the reader takes
    // another replica.
    let marker: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let slice = w.append(Bytes::from(marker.clone())).await.unwrap();
    let e = sc.meta.extent(slice.extent).await.unwrap();
    // The replica the reader asks first (the client spreads reads by offset and extent).
    let first = (slice.offset / 4096 + slice.extent.0) as usize % e.replicas.len();
    let victim = e.replicas[first].node;
    let dev = cl.dir.path().join(format!("d{victim}.img"));
    let img = std::fs::read(&dev).unwrap();
    let at = img.windows(marker.len()).position(|w| w == &marker[..]).expect("the slice's bytes are on that device");
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &[img[at + 100] ^ 0xff], (at + 100) as u64).unwrap();
    f.sync_all().unwrap();
    assert_eq!(sc.read(slice).await.unwrap().as_ref(), &marker[..]);
    // The reader reported the bad copy; the metanode keeps it with the extent.
    let meta = sc.meta.clone();
    testkit::wait_for("the bad copy to be recorded", Duration::from_secs(10), || {
        let meta = meta.clone();
        async move { meta.extent(slice.extent).await.ok().filter(|e| e.bad == vec![victim]) }
    })
    .await;
    // A range inside the slice (no slice CRC to check: the datanode's own CRCs catch it).
    let part = sc.read_range(slice.extent, slice.offset + 50, 4000).await.unwrap();
    assert_eq!(part.as_ref(), &marker[50..4050]);
    let bad = client::DataNodeClient::connect(dns[victim.0 as usize - 1].addr.as_str()).await.unwrap();
    let r = bad.read(slice.extent, slice.offset, slice.len).await;
    assert!(matches!(r, Err(client::ClientError::Extent(proto::ExtentError::ChecksumMismatch { .. }))), "{r:?}");
    for (slice, data) in &acked {
        assert_eq!(&sc.read(*slice).await.unwrap(), data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_cluster_cannot_take_fails_clearly_within_the_deadline() {
    let cl = Cluster::start(1, &["--node-grace-ms", "500"]);
    let deadline = Duration::from_secs(3);
    let sc = StreamClient::new(cl.client(), StreamConfig { append_deadline: deadline, ..Default::default() });
    let mut dns = cl.datanodes(3).await;
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let ok = w.append(record(1)).await.unwrap();
    // Three datanodes for replica:3, and one dies: no extent can be placed any more.
    dns[2].kill9();
    let t = Instant::now();
    let r = w.append(record(2)).await;
    let took = t.elapsed();
    match &r {
        Err(StreamError::Unavailable { last, .. }) => {
            assert!(last.contains("datanode"), "the error names the cause: {last}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(took >= deadline && took < deadline + Duration::from_secs(10), "gave up after {took:?}");
    // What was acknowledged before is intact.
    assert_eq!(sc.read(ok).await.unwrap(), record(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_close_list_stat_and_range_reads() {
    let cl = Cluster::start(1, &[]);
    let sc = StreamClient::new(cl.client(), StreamConfig::default());
    let _dns = cl.datanodes(3).await;
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let a = w.append(record(1)).await.unwrap();
    let b = w.append(record(2)).await.unwrap();
    assert_eq!((a.extent, a.offset + a.len as u64), (b.extent, b.offset), "appends are contiguous");
    // A range across both appends reads back their concatenation.
    let both = sc.read_range(a.extent, a.offset, (a.len + b.len) as u64).await.unwrap();
    assert_eq!(both, [record(1), record(2)].concat());
    // Seal: the extent ends where the acknowledged appends end; the next append
    // starts a new extent.
    let pending = w.submit(record(3));
    w.seal().await.unwrap();
    let c = pending.await.unwrap();
    assert_eq!(c.extent, a.extent, "an append submitted before the seal lands before it");
    let d = w.append(record(4)).await.unwrap();
    assert_ne!(d.extent, a.extent);
    let v = sc.stat(s.id).await.unwrap();
    assert_eq!(v.extents[0].sealed_len, Some(c.offset + c.len as u64));
    assert_eq!(v.extents[1].sealed_len, None);
    // Close seals the tail; a later writer finds nothing to fence.
    w.close().await.unwrap();
    let v = sc.stat(s.id).await.unwrap();
    assert_eq!(v.extents[1].sealed_len, Some(d.offset + d.len as u64));
    assert!(sc.list_streams().await.unwrap().iter().any(|x| x.id == s.id));
    let w2 = sc.open_writer(s.id, "second").await.unwrap();
    let e = w2.append(record(5)).await.unwrap();
    for (slice, i) in [(a, 1), (b, 2), (c, 3), (d, 4), (e, 5)] {
        assert_eq!(sc.read(slice).await.unwrap(), record(i));
    }
    // A range past the end is refused, not padded.
    let r = sc.read_range(d.extent, d.offset, d.len as u64 + 1).await;
    assert!(matches!(r, Err(StreamError::Unreadable { .. })), "{r:?}");
    sc.delete_stream(s.id).await.unwrap();
    assert!(!sc.list_streams().await.unwrap().iter().any(|x| x.id == s.id));
}
