//! The datanode's admin listener (`--admin-addr`): `/health`, and `/metrics` behind the
//! bearer token counting what the process really did.

mod common;

use std::path::Path;

use client::DataNodeClient;
use proto::msg::ANY_DEVICE;
use proto::{Epoch, ExtentId};

use testkit::metric;

#[tokio::test]
async fn the_admin_listener_counts_appends_reads_and_flushes_behind_its_token() {
    proto::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", testkit::free_port());
    let mut args = common::default_args(dir.path());
    args.extend([
        "--node-id".into(),
        "4".into(),
        "--admin-addr".into(),
        admin.clone(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let envs = [("STRATA_METRICS_TOKEN".to_string(), "dn-token".to_string())];
    let (child, addr) = testkit::spawn_listening_env(
        Path::new(env!("CARGO_BIN_EXE_datanode")),
        &args,
        &dir.path().join("dn.log"),
        &envs,
    );
    let _child = testkit::KillOnDrop(child);
    let c = DataNodeClient::connect(addr.as_str()).await.unwrap();
    c.create(ExtentId(9), Epoch(1), ANY_DEVICE).await.unwrap();
    let mut off = 0;
    for i in 0..5u8 {
        off = c.append(ExtentId(9), off, Epoch(1), vec![i; 4096].into()).await.unwrap();
    }
    assert_eq!(c.read(ExtentId(9), 4096, 8192).await.unwrap().len(), 8192);

    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("http://{admin}/health")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("http://{admin}/metrics")).send().await.unwrap().status(), 401);
    let r = http.get(format!("http://{admin}/metrics")).bearer_auth("dn-token").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let node = [("node", "4")];
    assert_eq!(metric(&text, "strata_datanode_appends_total", &node), Some(5.0), "{text}");
    assert_eq!(metric(&text, "strata_datanode_appended_bytes_total", &node), Some(5.0 * 4096.0));
    assert_eq!(metric(&text, "strata_datanode_reads_total", &node), Some(1.0));
    assert_eq!(metric(&text, "strata_datanode_read_bytes_total", &node), Some(8192.0));
    let flushes = metric(&text, "strata_datanode_flushes_total", &node).unwrap();
    // One flush per append sent one at a time, and one for the extent's creation.
    assert_eq!(flushes, 6.0, "{flushes} flushes for a creation and 5 appends one at a time");
    assert_eq!(metric(&text, "strata_datanode_appends_per_flush_sum", &node), Some(5.0));
    assert_eq!(metric(&text, "strata_datanode_flush_seconds_count", &node), Some(flushes));
    // Two 64 MiB devices, one extent on one of them.
    for d in ["0", "1"] {
        let cap = metric(&text, "strata_datanode_device_capacity_bytes", &[("node", "4"), ("device", d)]).unwrap();
        assert!(cap > 60.0 * 1048576.0 && cap <= 64.0 * 1048576.0, "device {d}: {cap}");
        assert_eq!(metric(&text, "strata_datanode_device_failed", &[("node", "4"), ("device", d)]), Some(0.0));
    }
    assert_eq!(metric(&text, "strata_datanode_device_extents", &node), Some(1.0));
    assert_eq!(metric(&text, "strata_datanode_device_errors_total", &node), Some(0.0));
}
