//! Test support shared by every crate's tests and benchmarks: real processes started
//! on loopback ports and waited for by their "listening on" line (`process`), waiting
//! for a condition instead of sleeping (`wait_for`), and a metanode group with datanodes
//! (`cluster`).

pub mod cluster;
pub mod process;

pub use cluster::{collect_in_order, fake_datanode, signed, wait_datanodes_up, Cluster, DataNode, Member, RAFT_ARGS};
pub use process::{
    datanode_bin, free_port, log_tail, metanode_bin, secrets, secrets_env, sibling_bin, spawn_listening,
    spawn_listening_env, tls_env, tls_links, KillOnDrop, TlsFiles,
};

use std::time::{Duration, Instant};

/// Polls `f` until it yields a value, panicking after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// From a Prometheus text exposition: the sum of every sample of `name` whose labels
/// include all of `labels`, or `None` when there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (n, l) = series.split_once('{').unwrap_or((series, ""));
        if n == name && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}
