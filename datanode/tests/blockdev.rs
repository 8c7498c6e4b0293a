//! A datanode on a raw block device (a loop device over a file): refused until
//! `--format`, then extents survive a kill -9 and a restart like on a file device.
//!
//! Needs root and loop devices. Where `losetup` cannot attach, the test says so and
//! returns, unless STRATA_REQUIRE_LOOP=1 (set by `.ci/run`) makes that a failure.

mod common;

use std::process::Command;

use bytes::Bytes;
use common::Node;
use proto::{Epoch, ExtentId};

struct Loop(String);

impl Loop {
    fn attach(file: &std::path::Path) -> Option<Loop> {
        let out = Command::new("losetup").args(["-f", "--show"]).arg(file).output().ok()?;
        if !out.status.success() {
            eprintln!("losetup: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Loop(String::from_utf8(out.stdout).ok()?.trim().to_owned()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extents_on_a_raw_block_device() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    std::fs::write(&backing, vec![0xA5u8; 64 << 20]).unwrap();
    let Some(dev) = Loop::attach(&backing) else {
        assert!(
            std::env::var("STRATA_REQUIRE_LOOP").is_err(),
            "STRATA_REQUIRE_LOOP is set but no loop device could be attached"
        );
        eprintln!("no loop device could be attached: skipping the raw block device test");
        return;
    };
    // Without --format, a device that holds no superblock is refused and left alone.
    let out = Command::new(env!("CARGO_BIN_EXE_datanode"))
        .args(["--listen", "127.0.0.1:0", "--device", &dev.0])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
    assert!(std::fs::read(&backing).unwrap().iter().all(|&b| b == 0xA5), "a refused device is untouched");

    let mut node = Node::start(dir.path(), vec!["--device".into(), dev.0.clone(), "--format".into()]);
    assert!(node.log().contains("O_DIRECT"), "{}", node.log());
    let c = node.client().await;
    let n = c.node_stat().await.unwrap();
    assert_eq!(n.devices[0].capacity_bytes, 63 << 20, "capacity comes from the device's own size");
    c.create(ExtentId(1), Epoch(1), 0).await.unwrap();
    c.create(ExtentId(2), Epoch(1), 0).await.unwrap();
    let mut off = 0;
    for i in 0..20 {
        off = c
            .append(ExtentId(1), off, Epoch(1), Bytes::from(common::content(1, 1, off, 1000 + i * 3000)))
            .await
            .unwrap();
    }
    c.append(ExtentId(2), 0, Epoch(1), Bytes::from_static(b"sealed here")).await.unwrap();
    c.seal(ExtentId(2), 11).await.unwrap();
    drop(c);
    node.kill9();
    // Restart without --format: the superblock is found and nothing is erased.
    let mut node = Node::start(dir.path(), vec!["--device".into(), dev.0.clone()]);
    let c = node.client().await;
    assert_eq!(c.stat(ExtentId(1)).await.unwrap().length, off);
    let mut pos = 0u64;
    for i in 0..20 {
        let len = 1000 + i * 3000;
        assert_eq!(c.read(ExtentId(1), pos, len as u32).await.unwrap(), common::content(1, 1, pos, len));
        pos += len as u64;
    }
    let s = c.stat(ExtentId(2)).await.unwrap();
    assert!(s.sealed && s.length == 11);
    drop(c);
    node.kill9();
}
