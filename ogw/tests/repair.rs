//! Self-healing seen through S3 (issue 15): a metanode, six datanodes and a gateway
//! (replica:3 for STANDARD, ec:2+1 for STANDARD_IA) as separate processes. Datanodes
//! are lost for good one at a time (kill -9, device removed); after each loss the
//! metanode repairs every copy and every object reads back byte-identical
//! (`tests/clients/repair_s3.py`).

mod harness;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::*;
use proto::NodeId;
use rand::{Rng, SeedableRng};
use testkit::{spawn_listening, wait_for, Cluster, DataNode};

/// The seed of this run (`STRATA_SEED` replays one).
fn seed() -> u64 {
    let seed: u64 = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with STRATA_SEED={seed})");
    seed
}

/// A metanode started with `meta_flags`, `n` datanodes of 256 MiB, a SQLite catalog
/// with a tenant, and the arguments of `ogw serve` on them with `gw_flags`.
struct Setup {
    cl: Cluster,
    dns: Vec<DataNode>,
    meta: client::MetaClient,
    access: String,
    secret: String,
    args: Vec<String>,
}

async fn setup(meta_flags: &[&str], n: u64, gw_flags: &[&str]) -> Setup {
    let cl = Cluster::start(1, meta_flags);
    let dns: Vec<DataNode> =
        (1..=n).map(|i| DataNode::start_sized(cl.dir.path(), NodeId(i), &cl.addrs(), "256M", false)).collect();
    let meta = cl.client();
    testkit::wait_datanodes_up(&meta, n as usize).await;
    let db = sqlite_db(cl.dir.path());
    let (access, secret) = other_tenant(&db, "t1");
    let args: Vec<String> = [
        &["serve".to_string()][..],
        &db[..],
        &["--meta", &cl.addrs().join(","), "--listen", "127.0.0.1:0", "--name", "gw"].map(String::from)[..],
        &gw_flags.iter().map(|f| f.to_string()).collect::<Vec<_>>()[..],
    ]
    .concat();
    Setup { cl, dns, meta, access, secret, args }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_survive_datanodes_lost_for_good_one_at_a_time() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Setup { cl, mut dns, meta, access: a, secret: s, args } = setup(
        &["--node-grace-ms", "1000", "--repair-delay-ms", "1000"],
        6,
        &["--extent-size", "8M", "--idle-seal", "1s", "--policy", "replica:3", "--ec-policy", "ec:2+1"],
    )
    .await;
    let (gw, addr) = spawn_listening(&ogw_bin(), &args, &cl.dir.path().join("gw.log"));
    let _gw = testkit::KillOnDrop(gw);
    let mut py = Command::new(python())
        .arg(suite("repair_s3.py"))
        .args([&format!("http://{addr}"), &a, &s, &seed.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = py.stdin.take().unwrap();
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines().map_while(Result::ok);
    assert!(lines.by_ref().any(|l| l.starts_with("written")), "the objects were not written");
    let mut dead = Vec::new();
    for round in 1..=3 {
        // Every extent sealed, then a victim among the datanodes holding copies.
        let holding = holders_once_sealed(&meta, Duration::from_secs(30)).await;
        let victim = holding[rng.gen_range(0..holding.len())];
        dns[victim.0 as usize - 1].kill9();
        std::fs::remove_file(cl.dir.path().join(format!("d{victim}.img"))).unwrap();
        dead.push(victim);
        wait_repaired(&meta, victim, &dead).await;
        writeln!(stdin).unwrap();
        let checked = lines.by_ref().find(|l| l.starts_with("checked"));
        assert!(checked.is_some(), "round {round}: the objects did not read back");
        eprintln!("round {round}: datanode {victim} lost, repaired: {}", checked.unwrap());
    }
    drop(stdin);
    assert!(lines.any(|l| l == "repair s3 passed"));
    assert!(py.wait().unwrap().success());
}

/// A gateway restarted while one of its streams cannot be opened (the last extent's
/// only copy, replica:1, is on a datanode that is down) starts, serves PUTs and GETs
/// with the streams that open, and opens the other in the background once its
/// datanode is back; then every object reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_and_serves_while_one_of_its_streams_cannot_be_opened() {
    let seed = seed();
    // Idle extents stay open, so the dead gateway's are still open at the restart.
    let Setup { cl, mut dns, meta, access: a, secret: s, args } = setup(
        &["--node-grace-ms", "1000"],
        3,
        &["--streams", "3", "--idle-seal", "0s", "--policy", "replica:1", "--ec-policy", "ec:2+1"],
    )
    .await;
    let (gw, addr) = spawn_listening(&ogw_bin(), &args, &cl.dir.path().join("gw.log"));
    let mut gw = testkit::KillOnDrop(gw);
    let mut py = Command::new(python())
        .arg(suite("lanes_s3.py"))
        .args([&a, &s, &seed.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = py.stdin.take().unwrap();
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines().map_while(Result::ok);
    let mut ask = |cmd: String, want: &str| {
        writeln!(stdin, "{cmd}").unwrap();
        let got = lines.by_ref().find(|l| !l.starts_with("ok "));
        assert!(got.as_deref().is_some_and(|l| l.starts_with(want)), "{cmd}: {got:?}");
    };
    ask(format!("put http://{addr} before 30"), "put 30");
    gw.kill().unwrap(); // SIGKILL: its streams' last extents stay open
    gw.wait().unwrap();

    // The datanode holding the open last extent of one stream goes down.
    let mut tails = Vec::new();
    for st in meta.streams().await.unwrap() {
        let v = meta.stream(st.id).await.unwrap();
        let last = v.extents.last().expect("every lane was written").clone();
        assert_eq!(last.sealed_len, None, "stream {}: its last extent is open", st.id);
        tails.push((st.id, last.id, last.replicas[0].node));
    }
    assert_eq!(tails.len(), 3, "{tails:?}");
    let victim = tails[0].2;
    let stuck: Vec<_> = tails.iter().filter(|t| t.2 == victim).map(|t| t.0).collect();
    eprintln!("streams and the datanodes of their open tails: {tails:?}; datanode {victim} goes down");
    dns[victim.0 as usize - 1].kill9();
    wait_for("the datanode seen down", Duration::from_secs(30), || async {
        let n = meta.nodes().await.ok()?;
        n.iter().any(|n| n.id == victim && n.state == proto::meta::NodeState::Down).then_some(())
    })
    .await;

    let log = cl.dir.path().join("gw2.log");
    let (gw, addr) = spawn_listening(&ogw_bin(), &args, &log);
    let _gw = testkit::KillOnDrop(gw);
    ask(format!("put http://{addr} during 20"), "put 20");
    let text = std::fs::read_to_string(&log).unwrap();
    for id in &stuck {
        assert!(text.contains(&format!("stream {id}: cannot be opened now")), "stream {id} not reported:\n{text}");
        let v = meta.stream(*id).await.unwrap();
        assert_eq!(v.extents.last().unwrap().sealed_len, None, "stream {id} was not opened");
    }

    // The datanode comes back: the gateway opens its stream (sealing the old tail).
    dns[victim.0 as usize - 1].spawn();
    for &id in &stuck {
        let tail = tails.iter().find(|t| t.0 == id).unwrap().1;
        wait_for("the stream opened in the background", Duration::from_secs(60), || async {
            meta.extent(tail).await.ok()?.sealed_len.map(|_| ())
        })
        .await;
    }
    // The old tail is sealed inside the reopening, a moment before the lane is added
    // and logged.
    wait_for("the lane logged as back", Duration::from_secs(30), || async {
        std::fs::read_to_string(&log).ok()?.contains("a lane of replica:1 again").then_some(())
    })
    .await;
    ask(format!("put http://{addr} after 20"), "put 20");
    ask(format!("check http://{addr}"), "checked 70");
    drop(stdin);
    assert!(lines.any(|l| l == "lanes s3 passed"));
    assert!(py.wait().unwrap().success());
}
