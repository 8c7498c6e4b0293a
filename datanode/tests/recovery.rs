//! Recovery of a torn final write, end to end: the datanode is killed, the last batch of
//! an open extent is garbled on disk as a torn write would leave it, and the restarted
//! datanode drops exactly that batch, takes new appends over it, and after another
//! restart serves the old and new bytes with nothing of the torn batch.

mod common;

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use common::Node;
use proto::{Epoch, ExtentId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_final_batch_is_dropped_and_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev0.img");
    let mut node = Node::start(dir.path(), vec!["--device".into(), format!("{}:64M", dev.display())]);
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(1), 0).await.unwrap();
    let first = Bytes::from(common::content(1, 1, 0, 6000));
    let mut torn = b"THIS-BATCH-TEARS".to_vec();
    torn.extend_from_slice(&common::content(1, 2, 6000, 30_000));
    assert_eq!(c.append(ExtentId(1), 0, Epoch(1), first.clone()).await.unwrap(), 6000);
    assert_eq!(c.append(ExtentId(1), 6000, Epoch(1), Bytes::from(torn.clone())).await.unwrap(), 36_016);
    drop(c);
    node.kill9();

    // Garble the middle of the last batch's payload, as a torn write leaves it.
    let image = std::fs::read(&dev).unwrap();
    let at = image.windows(16).position(|w| w == b"THIS-BATCH-TEARS").expect("batch on the device");
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    f.write_all_at(&[0u8; 8192], (at + 12_000) as u64).unwrap();
    f.sync_all().unwrap();

    node.restart();
    assert!(node.log().contains("dropped a torn final write of 30016 bytes"), "{}", node.log());
    let c = node.client().await;
    assert_eq!(c.stat(ExtentId(1)).await.unwrap().length, 6000, "the torn batch is gone, the one before it stays");
    // New appends go where the torn batch was, under a new incarnation.
    let next = Bytes::from(common::content(1, 3, 6000, 700));
    assert_eq!(c.append(ExtentId(1), 6000, Epoch(1), next.clone()).await.unwrap(), 6700);
    drop(c);
    node.restart();
    let c = node.client().await;
    let s = c.stat(ExtentId(1)).await.unwrap();
    assert_eq!(s.length, 6700, "leftovers of the torn batch beyond the new one never rejoin the chain");
    let all = c.read(ExtentId(1), 0, 6700).await.unwrap();
    assert_eq!(&all[..6000], &first[..]);
    assert_eq!(&all[6000..], &next[..]);
    assert!(!node.log().contains("dropped a torn"), "nothing torn the second time");
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_datanode")).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no devices"), "{err}");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = 7100\n").unwrap();
    let (code, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml") && err.contains("listen"), "{err}");
    let existing = dir.path().join("not-strata.img");
    std::fs::write(&existing, vec![7u8; 8 << 20]).unwrap();
    let (code, err) = run(&["--device", existing.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--format"), "{err}");
    assert_eq!(std::fs::read(&existing).unwrap(), vec![7u8; 8 << 20], "a refused device is left untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), common::default_args(dir.path()));
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(1), 0).await.unwrap();
    let mut off = 0;
    for i in 0..50 {
        off = c.append(ExtentId(1), off, Epoch(1), Bytes::from(common::content(1, 1, off, 100 + i))).await.unwrap();
    }
    let status = node.terminate(std::time::Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
    assert!(node.log().contains("shutting down"));
    node.start_again();
    // SPDK's blobstores were unloaded at the SIGTERM: this load finds them clean.
    assert!(!node.log().contains(SPDK_RECOVERY), "{}", node.log());
    let c = node.client().await;
    assert_eq!(c.stat(ExtentId(1)).await.unwrap().length, off);
    assert_eq!(c.read(ExtentId(1), 0, 100).await.unwrap(), common::content(1, 1, 0, 100));
}

/// What SPDK logs when it loads a blobstore that was not unloaded (a crash).
const SPDK_RECOVERY: &str = "Performing recovery on blobstore";

/// A start that fails once the devices are open (here its port is taken) exits 2 with
/// the reason, after closing them: SPDK's reactor is stopped and its blobstores
/// unloaded first (before issue 21 this exited by SIGSEGV, 139), and the devices load
/// cleanly at the next start with what they held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_exits_2_with_the_reason_and_leaves_the_devices_clean() {
    let dir = tempfile::tempdir().unwrap();
    let args = common::default_args(dir.path());
    let mut node = Node::start(dir.path(), args.clone());
    let c = node.client().await;
    c.create(ExtentId(7), Epoch(1), 0).await.unwrap();
    let data = common::content(7, 1, 0, 5000);
    assert_eq!(c.append(ExtentId(7), 0, Epoch(1), Bytes::from(data.clone())).await.unwrap(), 5000);
    drop(c);
    let taken = node.addr;
    assert!(node.terminate(std::time::Duration::from_secs(30)).success());
    let _holder = std::net::TcpListener::bind(taken).expect("the port the datanode left is free");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_datanode"))
        .args(&args)
        .args(["--listen", &taken.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status {}: {err}", out.status);
    assert!(err.contains(&format!("cannot listen on {taken}")), "{err}");
    assert!(!err.contains(SPDK_RECOVERY), "the devices were clean at this start: {err}");
    node.start_again();
    assert!(!node.log().contains(SPDK_RECOVERY), "the failed start closed the devices: {}", node.log());
    let c = node.client().await;
    assert_eq!(c.stat(ExtentId(7)).await.unwrap().length, 5000);
    assert_eq!(c.read(ExtentId(7), 0, 5000).await.unwrap(), data);
}
