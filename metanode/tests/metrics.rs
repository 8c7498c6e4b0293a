//! `/metrics` on every member of a real three-member group: one leader, the same term
//! everywhere, the datanodes and extents the group maps, and repair figures from the
//! leader only.

use std::time::Duration;

use proto::meta::Policy;
use testkit::Cluster;

use testkit::metric;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_exports_raft_cluster_and_repair_metrics() {
    let c = Cluster::start_env(3, &[], &[("STRATA_METRICS_TOKEN", "meta-token")]);
    let _dns = c.datanodes(3).await;
    let mc = c.client();
    let s = mc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
    let epoch = mc.open_stream(s.id, "metrics-test").await.unwrap().stream.epoch;
    let e = mc.allocate_extent(s.id, epoch, None).await.unwrap();
    mc.seal_extent(e.id, epoch, 4096).await.unwrap();
    mc.allocate_extent(s.id, epoch, Some(e.id)).await.unwrap();
    let leader = c.leader().await;

    let http = reqwest::Client::new();
    let plain = http.get(format!("http://{}/metrics", c.addrs()[0])).send().await.unwrap();
    assert_eq!(plain.status(), 401, "the token is asked for, not the cluster's request signature");
    // Every member applies the allocations; then each reports the same map.
    let texts = testkit::wait_for("every member to apply the last allocation", Duration::from_secs(20), || async {
        let mut texts = Vec::new();
        for a in c.addrs() {
            let r = http.get(format!("http://{a}/metrics")).bearer_auth("meta-token").send().await.ok()?;
            let t = r.text().await.ok()?;
            (metric(&t, "strata_meta_extents", &[("state", "open")]) == Some(1.0)).then_some(())?;
            texts.push(t);
        }
        Some(texts)
    })
    .await;
    let leaders: f64 = texts.iter().map(|t| metric(t, "strata_meta_raft_leader", &[]).unwrap()).sum();
    assert_eq!(leaders, 1.0);
    let terms: Vec<f64> = texts.iter().map(|t| metric(t, "strata_meta_raft_term", &[]).unwrap()).collect();
    assert!(terms.iter().all(|t| *t == terms[0] && *t >= 1.0), "{terms:?}");
    for (i, t) in texts.iter().enumerate() {
        let id = (i + 1).to_string();
        assert_eq!(metric(t, "strata_meta_raft_leader_id", &[("member", &id)]), Some(leader as f64));
        assert_eq!(metric(t, "strata_meta_raft_members", &[("role", "voter")]), Some(3.0));
        assert_eq!(metric(t, "strata_meta_datanodes", &[("state", "up")]), Some(3.0));
        assert_eq!(metric(t, "strata_meta_extents", &[("policy", "replica:3"), ("state", "sealed")]), Some(1.0));
        assert_eq!(metric(t, "strata_meta_streams", &[]), Some(1.0));
        assert!(metric(t, "strata_meta_capacity_bytes", &[]).unwrap() >= 3.0 * 30.0 * 1048576.0);
        assert!(metric(t, "strata_meta_raft_applied_index", &[]).unwrap() >= 4.0);
        // Repair figures: the leader's alone.
        let repair = metric(t, "strata_meta_repair_waiting", &[]);
        assert_eq!(repair.is_some(), i as u64 + 1 == leader, "member {id}: {repair:?}");
    }
    let lt = &texts[leader as usize - 1];
    assert_eq!(metric(lt, "strata_meta_unreadable_extents", &[]), Some(0.0));
    assert!(metric(lt, "strata_meta_raft_quorum_ack_age_seconds", &[]).is_some());
}
