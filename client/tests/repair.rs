//! Repair against real processes (issue 15): a metanode and six datanodes, with a
//! replica:3 and an ec:2+1 stream of sealed extents.
//! - Datanodes lost for good one at a time (kill -9 and the device file removed): after
//!   each loss every extent is back to full redundancy on live datanodes, every copy
//!   the metanode names is on its datanode sealed at the extent's length, replicas
//!   hold the same bytes, every stripe's parity is what its data shards encode to, and
//!   every acknowledged slice reads back byte-identical.
//! - A copy reported bad is replaced and deleted from its datanode; a draining
//!   datanode ends with no copy.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use client::ec::{Codec, Simd};
use client::{DataNodeClient, MetaClient, Slice, StreamClient, StreamConfig};
use proto::meta::{NodeState, Policy, RepairStatus};
use proto::NodeId;
use rand::{Rng, SeedableRng};
use testkit::{wait_datanodes_up, wait_for, Cluster, DataNode};

const NODES: u64 = 6;

fn seed() -> u64 {
    let s = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {s} (replay with STRATA_SEED={s})");
    s
}

/// Waits until the metanode lists datanode `id` at `addr` (a restarted datanode listens
/// on a new port, and the metanode learns it at the next registration).
async fn wait_registered(meta: &MetaClient, id: NodeId, addr: &str) {
    wait_for("the datanode registered at its new address", Duration::from_secs(30), || async {
        meta.nodes().await.ok()?.iter().any(|n| n.id == id && n.addr == addr).then_some(())
    })
    .await;
}

/// A cluster whose leader repairs a copy 1 s after its datanode went down.
async fn cluster() -> (Cluster, Vec<DataNode>, MetaClient) {
    cluster_with("1000", &[]).await
}

/// A cluster with a repair delay of `delay_ms`, datanodes started with `extra` flags.
async fn cluster_with(delay_ms: &str, extra: &[&str]) -> (Cluster, Vec<DataNode>, MetaClient) {
    cluster_of(1, delay_ms, extra).await
}

/// As `cluster_with`, with `members` metanodes.
async fn cluster_of(members: u64, delay_ms: &str, extra: &[&str]) -> (Cluster, Vec<DataNode>, MetaClient) {
    let cl = Cluster::start(members, &["--node-grace-ms", "1000", "--repair-delay-ms", delay_ms]);
    let meta = cl.client();
    let dns: Vec<DataNode> = (1..=NODES)
        .map(|i| DataNode::start_with(cl.dir.path(), NodeId(i), &cl.addrs(), "64M", false, 100, extra))
        .collect();
    wait_datanodes_up(&meta, NODES as usize).await;
    (cl, dns, meta)
}

/// Appends records of seeded sizes to a new stream of `policy` (1 MiB extents, so it
/// has many) and seals its last extent.
async fn fill(sc: &StreamClient, policy: Policy, rng: &mut impl Rng) -> Vec<(Slice, Bytes)> {
    let s = sc.create_stream(policy).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let mut acked = Vec::new();
    for _ in 0..60 {
        let len = match rng.gen_range(0..4) {
            0 => rng.gen_range(1..64),
            1 => 4096,
            _ => rng.gen_range(1000..200_000),
        };
        let data = Bytes::from((0..len).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>());
        acked.push((w.append(data.clone()).await.unwrap(), data));
    }
    w.seal().await.unwrap();
    acked
}

/// Waits until repair has nothing left: no degraded extent, nothing waiting or in
/// flight, and no stray copy on a datanode that is up.
async fn healed(meta: &MetaClient, within: Duration) -> RepairStatus {
    let mut last = None;
    let r = tokio::time::timeout(within, async {
        loop {
            if let Ok(r) = meta.repairs().await {
                let done = r.degraded.is_empty() && r.waiting == 0 && r.in_flight.is_empty();
                last = Some(r.clone());
                if done {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("not healed within {within:?}; last status {last:?}"))
}

/// Every extent of every stream has all its copies on live datanodes, each sealed at
/// the extent's length there, with the same bytes (replicas) or consistent parity
/// (erasure-coded); and every slice reads back.
async fn check(meta: &MetaClient, sc: &StreamClient, dead: &HashSet<NodeId>, acked: &[(Slice, Bytes)]) {
    let nodes = meta.nodes().await.unwrap();
    let addr = |n: NodeId| nodes.iter().find(|x| x.id == n).unwrap().addr.clone();
    for s in meta.streams().await.unwrap() {
        let v = meta.stream(s.id).await.unwrap();
        for e in &v.extents {
            let len = e.sealed_len.expect("every extent is sealed");
            let holders: HashSet<NodeId> = e.replicas.iter().map(|r| r.node).collect();
            assert_eq!(holders.len(), e.policy.width(), "extent {}: {:?}", e.id, e.replicas);
            let mut copies = Vec::new();
            for r in &e.replicas {
                assert!(!dead.contains(&r.node), "extent {} still names dead datanode {}", e.id, r.node);
                let c = DataNodeClient::connect(addr(r.node).as_str()).await.unwrap();
                let st = c.stat(e.id).await.unwrap_or_else(|err| panic!("extent {} on {}: {err}", e.id, r.node));
                assert!(st.sealed && st.length == len, "extent {} on {}: {st:?}, want sealed at {len}", e.id, r.node);
                copies.push((c.read(e.id, 0, len as u32).await.unwrap(), c.records(e.id).await.unwrap()));
            }
            match e.policy {
                // Every replica holds the same bytes.
                Policy::Replica { .. } => assert!(copies.iter().all(|c| c.0 == copies[0].0), "extent {}", e.id),
                // Every stripe's parity is what its data shards encode to.
                Policy::Ec { k, m } => {
                    let codec = Simd::new(k as usize, m as usize).unwrap();
                    for x in &copies[0].1 {
                        let (a, b) = (x.offset as usize, (x.offset + x.len as u64) as usize);
                        let data: Vec<&[u8]> = copies[..k as usize].iter().map(|c| &c.0[a..b]).collect();
                        let parity = codec.encode(&data).unwrap();
                        for (i, p) in parity.iter().enumerate() {
                            assert_eq!(&copies[k as usize + i].0[a..b], &p[..], "extent {} stripe at {a}", e.id);
                        }
                    }
                }
            }
        }
    }
    for (slice, data) in acked {
        assert_eq!(&sc.read(*slice).await.unwrap(), data, "{slice:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datanodes_lost_for_good_are_repaired_through_three_losses() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cl, mut dns, meta) = cluster().await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let mut acked = fill(&sc, Policy::Replica { n: 3 }, &mut rng).await;
    acked.extend(fill(&sc, Policy::Ec { k: 2, m: 1 }, &mut rng).await);
    let mut dead = HashSet::new();
    check(&meta, &sc, &dead, &acked).await;
    for round in 1..=3 {
        // A victim among the datanodes holding copies.
        let mut holding = Vec::new();
        for s in meta.streams().await.unwrap() {
            for e in meta.stream(s.id).await.unwrap().extents {
                holding.extend(e.replicas.iter().map(|r| r.node.0));
            }
        }
        holding.sort_unstable();
        holding.dedup();
        let victim = holding[rng.gen_range(0..holding.len())];
        let before = meta.repairs().await.unwrap().done_total;
        dns[victim as usize - 1].kill9();
        std::fs::remove_file(cl.dir.path().join(format!("d{victim}.img"))).unwrap();
        dead.insert(NodeId(victim));
        eprintln!("round {round}: datanode {victim} lost for good");
        wait_for("the loss to show", Duration::from_secs(20), || async {
            let r = meta.repairs().await.map_err(|e| eprintln!("repairs: {e}")).ok()?;
            (!r.degraded.is_empty() || r.done_total > before).then_some(())
        })
        .await;
        let r = healed(&meta, Duration::from_secs(120)).await;
        eprintln!(
            "round {round}: healed: {} copies made ({} bytes), {} failed",
            r.done_total, r.bytes_total, r.failed_total
        );
        check(&meta, &sc, &dead, &acked).await;
    }
    let r = meta.repairs().await.unwrap();
    assert!(r.done_total > 0 && r.unreadable == 0, "{r:?}");
    // The lost datanodes can go now, and the strays named on them with them; one
    // holding a copy cannot.
    let alive = (1..=NODES).map(NodeId).find(|n| !dead.contains(n)).unwrap();
    assert!(matches!(meta.remove_node(alive).await, Err(proto::meta::MetaError::Conflict { .. })));
    for n in &dead {
        meta.remove_node(*n).await.unwrap();
    }
    assert!(meta.tombstones().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_copy_is_replaced_and_a_draining_datanode_is_emptied() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cl, _dns, meta) = cluster().await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let mut acked = fill(&sc, Policy::Replica { n: 3 }, &mut rng).await;
    acked.extend(fill(&sc, Policy::Ec { k: 2, m: 1 }, &mut rng).await);
    let nodes = meta.nodes().await.unwrap();
    // A connection checks who answers: another datanode at the address is refused.
    let n1 = &nodes[0];
    DataNodeClient::connect_node(&n1.addr, n1.id).await.unwrap();
    let other = DataNodeClient::connect_node(&n1.addr, NodeId(99)).await.err().expect("refused");
    assert!(other.to_string().contains(&format!("is datanode {} now", n1.id)), "{other}");
    let conn = |n: NodeId| {
        let addr = nodes.iter().find(|x| x.id == n).unwrap().addr.clone();
        async move { DataNodeClient::connect(addr.as_str()).await.unwrap() }
    };
    // A copy nothing names (as a rebuild an abandoned repair started can leave): the
    // leader's sweep deletes it (checked at the end).
    let leak = proto::ExtentId(1 << 40);
    let leaked_on = n1.id;
    conn(leaked_on).await.create(leak, proto::Epoch(1), proto::msg::ANY_DEVICE).await.unwrap();
    // A reader's report: the copy is replaced, and deleted from its datanode.
    let s = &meta.streams().await.unwrap()[0];
    let e = meta.extent(s.extents[0]).await.unwrap();
    let bad = e.replicas[1].node;
    meta.report_bad(e.id, bad, "test").await.unwrap();
    healed(&meta, Duration::from_secs(60)).await;
    let now = meta.extent(e.id).await.unwrap();
    assert!(!now.replicas.iter().any(|r| r.node == bad) && now.bad.is_empty(), "{now:?}");
    assert_eq!(now.replicas[0], e.replicas[0], "the other copies stay where they were");
    let gone = wait_for("the bad copy deleted", Duration::from_secs(20), || async {
        conn(bad).await.stat(e.id).await.is_err().then_some(())
    });
    gone.await;
    check(&meta, &sc, &HashSet::new(), &acked).await;
    // Draining with `metanode drain --wait`, while a writer appends and every slice is
    // read back: every copy moves off, and the datanode ends empty.
    let drained = NodeId(rng.gen_range(1..=NODES));
    let io = {
        let (sc, meta) = (sc.clone(), meta.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 1);
        let reads: Vec<(Slice, Bytes)> = acked.clone();
        tokio::spawn(async move {
            let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
            let w = sc.open_writer(s.id, "during the drain").await.unwrap();
            let mut written = Vec::new();
            let mut n = 0;
            loop {
                let data = Bytes::from((0..rng.gen_range(1..200_000)).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>());
                written.push((w.append(data.clone()).await.unwrap(), data));
                let (slice, want) = &reads[n % reads.len()];
                assert_eq!(&sc.read(*slice).await.unwrap(), want, "read during the drain");
                n += 1;
                let draining = meta.repairs().await.unwrap().draining;
                if n >= 20 && draining.iter().all(|d| d.1 == 0) {
                    break;
                }
            }
            w.close().await.unwrap();
            written
        })
    };
    let out = std::process::Command::new(testkit::metanode_bin())
        .envs(testkit::secrets_env())
        .args(["drain", &drained.to_string(), "--wait", "--meta", &cl.addrs().join(",")])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("metanode drain: {stdout}{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("datanode {drained} is empty")), "{stdout}");
    assert!(stderr.contains("100%  0 copies left"), "progress shown: {stderr}");
    let written = io.await.unwrap();
    eprintln!("{} appends and reads while draining", written.len());
    acked.extend(written);
    let r = healed(&meta, Duration::from_secs(120)).await;
    assert_eq!(r.draining, vec![(drained, 0)], "the drained datanode says it is empty");
    wait_for("the drained datanode empty", Duration::from_secs(30), || async {
        conn(drained).await.list().await.unwrap().is_empty().then_some(())
    })
    .await;
    check(&meta, &sc, &[drained].into_iter().collect(), &acked).await;
    assert!(meta.tombstones().await.unwrap().is_empty(), "every stray copy deleted");
    wait_for("the copy nothing names deleted", Duration::from_secs(60), || async {
        conn(leaked_on).await.stat(leak).await.is_err().then_some(())
    })
    .await;
}

/// A byte flipped on disk under one copy of a sealed extent: scrub finds it without
/// any client reading, the copy is replaced and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_a_flipped_byte_and_repair_heals_it_unread() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cl, _dns, meta) = cluster_with("1000", &["--scrub-rate", "64M", "--scrub-interval-ms", "300"]).await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let marker = Bytes::from((0..65536).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>());
    let slice = w.append(marker.clone()).await.unwrap();
    w.seal().await.unwrap();
    let e = meta.extent(slice.extent).await.unwrap();
    let victim = e.replicas[rng.gen_range(0..3)].node;
    let dev = cl.dir.path().join(format!("d{victim}.img"));
    let img = std::fs::read(&dev).unwrap();
    let at = img.windows(marker.len()).position(|w| *w == marker[..]).expect("the record is on the device");
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    let flip = at + rng.gen_range(0..marker.len());
    std::os::unix::fs::FileExt::write_at(&f, &[img[flip] ^ 0x20], flip as u64).unwrap();
    f.sync_all().unwrap();
    eprintln!("flipped byte {flip} of datanode {victim}'s device, in extent {}", e.id);
    wait_for("the bad copy replaced", Duration::from_secs(60), || async {
        let now = meta.extent(e.id).await.ok()?;
        (!now.replicas.iter().any(|r| r.node == victim)).then_some(())
    })
    .await;
    let r = healed(&meta, Duration::from_secs(60)).await;
    eprintln!("healed: {r:?}");
    assert!(r.done_total >= 1, "{r:?}");
    wait_for("the bad copy deleted", Duration::from_secs(20), || async {
        meta.tombstones().await.ok()?.is_empty().then_some(())
    })
    .await;
    check(&meta, &sc, &HashSet::new(), &[(slice, marker)]).await;
}

/// Kills a datanode holding `extent` for good (kill -9, device removed); returns it and
/// the datanode its copy of `extent` was rebuilt on.
async fn lose_a_holder(
    cl: &Cluster,
    dns: &mut [DataNode],
    meta: &MetaClient,
    extent: proto::ExtentId,
    rng: &mut impl Rng,
) -> (NodeId, NodeId) {
    let e = meta.extent(extent).await.unwrap();
    let victim = e.replicas[rng.gen_range(0..e.replicas.len())].node;
    dns[victim.0 as usize - 1].kill9();
    let _ = std::fs::remove_file(cl.dir.path().join(format!("d{victim}.img")));
    let before: HashSet<NodeId> = e.replicas.iter().map(|r| r.node).collect();
    let target = wait_for("the lost copy rebuilt", Duration::from_secs(60), || async {
        let now = meta.extent(e.id).await.ok()?;
        now.replicas.iter().find(|r| !before.contains(&r.node)).map(|r| r.node)
    })
    .await;
    (victim, target)
}

/// A rebuilt copy is read back from its device by scrub at once, not an interval (an
/// hour here) after its seal: the rebuild checked its bytes in memory on their way to
/// the device, and scrub is what reads what the device kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_copy_is_read_back_by_scrub_at_once() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cl, mut dns, meta) = cluster_with("1000", &["--scrub-rate", "256M", "--scrub-interval-ms", "3600000"]).await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let acked = fill(&sc, Policy::Replica { n: 3 }, &mut rng).await;
    let (victim, target) = lose_a_holder(&cl, &mut dns, &meta, acked[0].0.extent, &mut rng).await;
    // No copy was due at the target's start, and its own copies are due an hour after
    // their seals: passes there read the rebuilt copies, every one of them.
    healed(&meta, Duration::from_secs(60)).await;
    let log = cl.dir.path().join(format!("d{target}.log"));
    let text = wait_for("scrub passes over every rebuilt copy", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        (scrubbed_copies(&text) >= text.matches("rebuilt extent").count()).then_some(text)
    })
    .await;
    let passes: Vec<&str> = text.lines().filter(|l| l.contains("scrub pass:")).collect();
    eprintln!("datanode {target}: {} rebuilt, {passes:?}", text.matches("rebuilt extent").count());
    assert!(!passes.is_empty() && passes.iter().all(|l| l.contains(", 0 bad copies found")), "{passes:?}");
    check(&meta, &sc, &HashSet::from([victim]), &acked).await;
}

/// The sealed copies scrub passes read, summed over a datanode's log.
fn scrubbed_copies(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("scrub pass:"))
        .filter_map(|l| l.split("bytes of ").nth(1)?.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// A rebuilt copy stays due for scrub across a restart until scrub has read it: here
/// scrub is off while copies are rebuilt, and on (with an hour's interval) after the
/// rebuilding datanode is killed -9 and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_copy_stays_due_for_scrub_across_a_restart() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cl, mut dns, meta) = cluster_with("1000", &["--scrub-rate", "0"]).await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let acked = fill(&sc, Policy::Replica { n: 3 }, &mut rng).await;
    let (victim, target) = lose_a_holder(&cl, &mut dns, &meta, acked[0].0.extent, &mut rng).await;
    healed(&meta, Duration::from_secs(60)).await;
    let log = cl.dir.path().join(format!("d{target}.log"));
    let rebuilt = std::fs::read_to_string(&log).unwrap().matches("rebuilt extent").count();
    assert!(rebuilt >= 1);
    let i = target.0 as usize - 1;
    dns[i].kill9();
    let scrub = ["--scrub-rate", "256M", "--scrub-interval-ms", "3600000"];
    dns[i] = DataNode::start_with(cl.dir.path(), target, &cl.addrs(), "64M", false, 100, &scrub);
    let due = wait_for("scrub's start after the restart", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().find(|l| l.contains("sealed copies due now")).map(str::to_string)
    })
    .await;
    eprintln!("datanode {target}, {rebuilt} copies rebuilt: {due}");
    assert!(due.contains(&format!("scrub: {rebuilt} of ")), "the rebuilt copies, and only they, are due: {due}");
    wait_for("a scrub pass over them", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        (scrubbed_copies(&text) >= rebuilt).then_some(())
    })
    .await;
    wait_registered(&meta, target, &dns[i].addr).await;
    check(&meta, &sc, &HashSet::from([victim]), &acked).await;
}

/// A datanode stopped (SIGSTOP) for less than the repair delay is waited out: nothing
/// is repaired. Stopped for longer, its copies are repaired elsewhere, and once it
/// runs again the copies it still holds are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_outage_is_waited_out_and_a_long_one_repaired() {
    let t0 = std::time::Instant::now();
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_cl, dns, meta) = cluster_with("4000", &[]).await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let mut acked = fill(&sc, Policy::Replica { n: 3 }, &mut rng).await;
    acked.extend(fill(&sc, Policy::Ec { k: 2, m: 1 }, &mut rng).await);
    let s = &meta.streams().await.unwrap()[0];
    let victim = meta.extent(s.extents[0]).await.unwrap().replicas[0].node;
    let state = |want: NodeState| {
        let meta = meta.clone();
        async move {
            let n = meta.nodes().await.ok()?.into_iter().find(|n| n.id == victim)?;
            (n.state == want).then_some(())
        }
    };
    // Short: down for half the delay (many repair rounds), degraded, nothing repaired;
    // then back up.
    dns[victim.0 as usize - 1].signal("STOP");
    let r = wait_for("the stopped datanode down for half the delay", Duration::from_secs(20), || async {
        let r = meta.repairs().await.ok()?;
        r.down_ms.iter().any(|&(n, ms)| n == victim && ms >= r.delay_ms / 2).then_some(r)
    })
    .await;
    eprintln!("{:?} down", t0.elapsed());
    assert!(!r.degraded.is_empty() && r.waiting == 0 && r.in_flight.is_empty() && r.done_total == 0, "{r:?}");
    dns[victim.0 as usize - 1].signal("CONT");
    wait_for("the datanode up again", Duration::from_secs(20), || state(NodeState::Up)).await;
    eprintln!("{:?} up", t0.elapsed());
    let r = healed(&meta, Duration::from_secs(10)).await;
    assert_eq!((r.done_total, r.failed_total), (0, 0), "a short outage was repaired: {r:?}");
    // Long: repaired elsewhere while it is stopped.
    dns[victim.0 as usize - 1].signal("STOP");
    wait_for("the stopped datanode down", Duration::from_secs(20), || state(NodeState::Down)).await;
    eprintln!("{:?} down", t0.elapsed());
    let r = healed(&meta, Duration::from_secs(120)).await;
    assert!(r.done_total > 0, "{r:?}");
    eprintln!("{:?} healed", t0.elapsed());
    check(&meta, &sc, &[victim].into_iter().collect(), &acked).await;
    // Back: what it still holds is stray, and deleted.
    dns[victim.0 as usize - 1].signal("CONT");
    wait_for("its stray copies deleted", Duration::from_secs(30), || async {
        meta.tombstones().await.ok()?.is_empty().then_some(())
    })
    .await;
    let nodes = meta.nodes().await.unwrap();
    let addr = nodes.iter().find(|n| n.id == victim).unwrap().addr.clone();
    let left = DataNodeClient::connect(addr.as_str()).await.unwrap().list().await.unwrap();
    for x in left {
        let e = meta.extent(x.extent).await.unwrap();
        assert!(e.replicas.iter().any(|r| r.node == victim), "datanode {victim} keeps extent {} it lost", x.extent);
    }
}

/// The metanode leader and a datanode making a copy are killed with -9 in the middle of
/// repairs (rebuilds slowed to 4 MiB/s per datanode so they are caught in flight): a
/// new leader ends the abandoned repairs, repairs again and completes; no copy is
/// committed that is not on disk, and the partial copy is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_survives_the_leader_and_the_rebuilding_datanode_killed() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut cl, mut dns, meta) = cluster_of(3, "500", &["--rebuild-rate", "4M"]).await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let mut acked = fill(&sc, Policy::Replica { n: 3 }, &mut rng).await;
    acked.extend(fill(&sc, Policy::Ec { k: 2, m: 1 }, &mut rng).await);
    // The datanode holding the most copies is lost for good.
    let mut count = std::collections::HashMap::new();
    for s in meta.streams().await.unwrap() {
        for e in meta.stream(s.id).await.unwrap().extents {
            for r in e.replicas {
                *count.entry(r.node).or_insert(0) += 1;
            }
        }
    }
    let lost = *count.iter().max_by_key(|(n, c)| (**c, n.0)).unwrap().0;
    dns[lost.0 as usize - 1].kill9();
    std::fs::remove_file(cl.dir.path().join(format!("d{lost}.img"))).unwrap();
    let r = wait_for("repairs in flight", Duration::from_secs(30), || async {
        let r = meta.repairs().await.ok()?;
        (!r.in_flight.is_empty()).then_some(r)
    })
    .await;
    let rebuilding = r.in_flight[0].1.copy.node;
    let leader = cl.leader().await;
    eprintln!("killing metanode {leader} and datanode {rebuilding} with {} repairs in flight", r.in_flight.len());
    cl.member_mut(leader).kill9();
    dns[rebuilding.0 as usize - 1].kill9();
    dns[rebuilding.0 as usize - 1].spawn();
    cl.member_mut(leader).start();
    let r = healed(&meta, Duration::from_secs(180)).await;
    eprintln!("healed: {} copies made, {} failed", r.done_total, r.failed_total);
    wait_registered(&meta, rebuilding, &dns[rebuilding.0 as usize - 1].addr).await;
    check(&meta, &sc, &[lost].into_iter().collect(), &acked).await;
    // The lost datanode is forgotten (with the strays named on it), and the partial
    // copy the killed datanode was making is deleted.
    meta.remove_node(lost).await.unwrap();
    wait_for("no stray copy left", Duration::from_secs(30), || async {
        meta.tombstones().await.ok()?.is_empty().then_some(())
    })
    .await;
    let nodes = meta.nodes().await.unwrap();
    assert!(!nodes.iter().any(|n| n.id == lost));
    // A rebuild the killed leader started can finish after the new leader deleted its
    // copy as a stray; the leader's sweep deletes such a copy that nothing names.
    wait_for("every datanode holds only the copies it is named for", Duration::from_secs(60), || async {
        for n in &nodes {
            let c = DataNodeClient::connect(n.addr.as_str()).await.ok()?;
            for x in c.list().await.ok()? {
                let e = meta.extent(x.extent).await.ok()?;
                if !e.replicas.iter().any(|r| r.node == n.id) {
                    eprintln!("datanode {} keeps extent {} it does not hold", n.id, x.extent);
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
}

/// Two empty datanodes join three full ones: rebalancing moves copies until the used
/// fractions are within 10 % of each other, moving at most 1.2 times the minimum; every
/// byte still reads back and the moved copies are deleted from their old datanodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_new_datanodes_are_filled_by_rebalancing_with_little_more_than_the_minimum_moved() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cl = Cluster::start(
        1,
        &[
            "--node-grace-ms",
            "1000",
            "--repair-delay-ms",
            "1000",
            "--rebalance-threshold-pct",
            "10",
            "--rebalance-min-mib",
            "1",
        ],
    );
    let meta = cl.client();
    let start = |i: u64| DataNode::start_with(cl.dir.path(), NodeId(i), &cl.addrs(), "256M", false, 100, &[]);
    let mut dns: Vec<DataNode> = (1..=3).map(start).collect();
    wait_datanodes_up(&meta, 3).await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "test").await.unwrap();
    let mut acked = Vec::new();
    for _ in 0..200 {
        let data = Bytes::from((0..256 << 10).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>());
        acked.push((w.append(data.clone()).await.unwrap(), data));
    }
    w.seal().await.unwrap();
    assert_eq!(meta.repairs().await.unwrap().rebalance.planned_bytes, 0, "three nodes holding everything are even");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(testkit::metanode_bin())
            .envs(testkit::secrets_env())
            .args(args)
            .args(["--meta", &cl.addrs().join(",")])
            .output()
            .unwrap();
        let (o, e) =
            (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
        assert!(out.status.success(), "metanode {args:?}: {e}");
        (o, e)
    };
    // Paused before the datanodes join: the plan shows the bytes to move, none move.
    cli(&["rebalance", "stop"]);
    dns.extend((4..=5).map(start));
    wait_datanodes_up(&meta, 5).await;
    let before = meta.repairs().await.unwrap().rebalance;
    eprintln!("two datanodes joined: {before:?}");
    assert!(before.spread_permille > 900 && before.min_bytes > 0 && before.planned_bytes > 0, "{before:?}");
    assert!(before.paused, "{before:?}");
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        let r = meta.repairs().await.unwrap();
        assert!(r.in_flight.is_empty() && r.rebalance.moves_total == 0, "moved while paused: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (out, err) = cli(&["rebalance", "start", "--wait"]);
    eprintln!("metanode rebalance start --wait: {out}{err}");
    assert!(out.starts_with("balanced"), "{out}");
    assert!(err.contains("rebalance [") && err.contains("100%"), "progress shown: {err}");
    let r = wait_for("the datanodes even", Duration::from_secs(120), || async {
        let r = meta.repairs().await.ok()?;
        (r.rebalance.spread_permille <= 100 && r.in_flight.is_empty()).then_some(r)
    })
    .await;
    eprintln!("balanced: {:?}", r.rebalance);
    let moved = r.rebalance.moved_bytes_total;
    assert!(moved as f64 <= 1.2 * before.min_bytes as f64, "moved {moved}, minimum {}", before.min_bytes);
    assert_eq!(r.done_total, 0, "nothing was repaired, only moved");
    wait_for("the moved copies deleted", Duration::from_secs(30), || async {
        meta.tombstones().await.ok()?.is_empty().then_some(())
    })
    .await;
    check(&meta, &sc, &HashSet::new(), &acked).await;
}

/// A copy of a dead writer's open extent whose record chain lost a batch header in the
/// middle (its datanode's recovery finds a later batch past the break) may hold less
/// than was acknowledged: the stream's next opener seals at the length of the whole
/// copies, not at the cut one's, and repair replaces the cut copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_cut_short_by_a_damaged_header_does_not_shorten_the_seal() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cl, mut dns, meta) = cluster().await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { idle_seal: None, ..Default::default() });
    let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let w = sc.open_writer(s.id, "doomed").await.unwrap();
    let mut acked = Vec::new();
    // One append at a time: each lands in a batch of its own (small ones are packed,
    // the header right before the payload).
    for _ in 0..8 {
        let data = Bytes::from((0..rng.gen_range(1000..8000)).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>());
        acked.push((w.append(data.clone()).await.unwrap(), data));
    }
    let extent = acked[0].0.extent;
    assert!(acked.iter().all(|(s, _)| s.extent == extent));
    let end = acked.iter().map(|(s, _)| s.offset + s.len as u64).max().unwrap();
    drop(w); // the writer dies: its extent stays open
    let e = meta.extent(extent).await.unwrap();
    assert_eq!(e.sealed_len, None);
    let victim = e.replicas[rng.gen_range(0..3)].node;
    dns[victim.0 as usize - 1].kill9();
    // Damage the header of the batch holding a middle record on the victim's device.
    let dev = cl.dir.path().join(format!("d{victim}.img"));
    let img = std::fs::read(&dev).unwrap();
    let marker = &acked[rng.gen_range(2..6)].1;
    let at = img.windows(marker.len()).position(|w| *w == marker[..]).expect("the record is on the device");
    let header =
        (0..=at / 4096).rev().map(|u| u * 4096).find(|&p| img[p..p + 4] == *b"STBX").expect("its batch header");
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &[img[header + 24] ^ 0x01], (header + 24) as u64).unwrap();
    f.sync_all().unwrap();
    eprintln!("damaged the batch header at byte {header} of datanode {victim}'s device (extent {extent})");
    dns[victim.0 as usize - 1].spawn();
    wait_datanodes_up(&meta, NODES as usize).await;
    let addr = dns[victim.0 as usize - 1].addr.clone();
    wait_registered(&meta, victim, &addr).await;
    let c = DataNodeClient::connect_node(&addr, victim).await.unwrap();
    let st = c.stat(extent).await.unwrap();
    assert!(st.cut && st.length < end, "the victim's copy is cut short: {st:?}");

    let _successor = sc.open_writer(s.id, "successor").await.unwrap();
    let sealed = meta.extent(extent).await.unwrap().sealed_len;
    assert_eq!(sealed, Some(end), "sealed at every acknowledged byte, not at the cut copy's {}", st.length);
    wait_for("the cut copy replaced", Duration::from_secs(60), || async {
        let now = meta.extent(extent).await.ok()?;
        (!now.replicas.iter().any(|r| r.node == victim)).then_some(())
    })
    .await;
    healed(&meta, Duration::from_secs(60)).await;
    check(&meta, &sc, &HashSet::new(), &acked).await;
}

/// A dead writer's open extents (a replica:3 and an ec:2+1 stream) lose a copy for
/// good: once the repair delay has passed, repair fences and seals each at every
/// acknowledged byte, as the stream's next opener would, then replaces the lost copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_open_extents_are_sealed_and_their_lost_copies_repaired() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cl, mut dns, meta) = cluster().await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { idle_seal: None, ..Default::default() });
    let mut acked = Vec::new();
    let mut open = Vec::new();
    for policy in [Policy::Replica { n: 3 }, Policy::Ec { k: 2, m: 1 }] {
        let s = sc.create_stream(policy).await.unwrap();
        let w = sc.open_writer(s.id, "doomed").await.unwrap();
        let futs: Vec<_> = (0..20)
            .map(|_| {
                let data = Bytes::from((0..rng.gen_range(1..20_000)).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>());
                (w.submit(data.clone()), data)
            })
            .collect();
        testkit::collect_in_order(futs, &mut acked).await;
        let last = acked.last().unwrap().0.extent;
        open.push((last, acked.iter().filter(|a| a.0.extent == last).map(|a| a.0.offset + a.0.len as u64).max()));
        drop(w); // the writer dies: its extent stays open
    }
    // A datanode holding a copy of both open extents, if one does; else (their copies
    // on disjoint datanodes, 3 of 6 each: about one run in 20) one holder of each, so
    // that each extent loses exactly one copy either way. An open extent that loses
    // none is left open: nothing tells repair its writer is dead.
    let mut holders: Vec<Vec<NodeId>> = Vec::new();
    for &(e, _) in &open {
        holders.push(meta.extent(e).await.unwrap().replicas.iter().map(|r| r.node).collect());
    }
    let (a, b) = (&holders[0], &holders[1]);
    let victims: HashSet<NodeId> = match a.iter().find(|n| b.contains(n)) {
        Some(&n) => HashSet::from([n]),
        None => HashSet::from([a[0], b[0]]),
    };
    for &victim in &victims {
        dns[victim.0 as usize - 1].kill9();
        std::fs::remove_file(cl.dir.path().join(format!("d{victim}.img"))).unwrap();
    }
    eprintln!("datanodes {victims:?} lost; open extents {open:?}");
    for &(e, end) in &open {
        let sealed = wait_for("the open extent sealed", Duration::from_secs(60), || async {
            meta.extent(e).await.ok()?.sealed_len
        })
        .await;
        if meta.extent(e).await.unwrap().policy == (Policy::Replica { n: 3 }) {
            assert_eq!(Some(sealed), end, "extent {e} sealed at every acknowledged byte");
        }
    }
    let r = healed(&meta, Duration::from_secs(90)).await;
    assert!(r.orphans_sealed_total >= 1 && r.orphans == 0, "{r:?}");
    check(&meta, &sc, &victims, &acked).await;
}

/// Scrub records every copy it found intact: a datanode restarted after passes every
/// 300 ms (kill -9) with a 2 s interval reads nothing again, though every copy was
/// sealed more than 2 s before (a record of the seal alone would make them all due).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_resumes_after_a_restart_without_reading_intact_copies_again() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cl, mut dns, meta) = cluster_with("600000", &["--scrub-rate", "256M", "--scrub-interval-ms", "300"]).await;
    let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 1 << 20, ..Default::default() });
    let acked = fill(&sc, Policy::Replica { n: 3 }, &mut rng).await;
    let sealed = std::time::Instant::now();
    let e = meta.extent(acked[0].0.extent).await.unwrap();
    let victim = e.replicas[0].node;
    let log = cl.dir.path().join(format!("d{victim}.log"));
    // Scrub passes there (copies fall due 300 ms after their seal, then 300 ms after
    // each pass that found them intact).
    let copies = meta.streams().await.unwrap().iter().flat_map(|s| s.extents.clone()).collect::<Vec<_>>();
    let mut held = 0;
    for id in copies {
        if meta.extent(id).await.unwrap().replicas.iter().any(|r| r.node == victim) {
            held += 1;
        }
    }
    wait_for("scrub passes", Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        (scrubbed_copies(&text) >= 2 * held && sealed.elapsed() > Duration::from_secs(3)).then_some(())
    })
    .await;
    dns[victim.0 as usize - 1].kill9();
    dns[victim.0 as usize - 1] = DataNode::start_with(
        cl.dir.path(),
        victim,
        &cl.addrs(),
        "64M",
        false,
        100,
        &["--scrub-rate", "256M", "--scrub-interval-ms", "2000"],
    );
    let due = wait_for("scrub's start after the restart", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        let l = text.lines().find(|l| l.contains("sealed copies due now"))?.to_string();
        Some(l)
    })
    .await;
    assert!(due.contains(&format!("scrub: 0 of {held} sealed copies due now")), "{due}");
    wait_registered(&meta, victim, &dns[victim.0 as usize - 1].addr).await;
    check(&meta, &sc, &HashSet::new(), &acked).await;
}
