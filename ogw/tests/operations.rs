//! What an operator sees of a running standalone: the admin listener (`/health`,
//! `/ready`, `/metrics` behind its token), metrics from every component moving with
//! real S3 traffic, `strata status` on one screen, and a real Prometheus scraping it.

mod harness;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::Standalone;

use testkit::metric;

async fn scrape(s: &Standalone) -> String {
    let r =
        reqwest::Client::new().get(format!("{}/metrics", s.admin)).bearer_auth(s.metrics_token()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

async fn put_get_miss(c: &aws_sdk_s3::Client, bucket: &str, n: usize, body: &[u8]) {
    for i in 0..n {
        let key = format!("k{i}");
        c.put_object().bucket(bucket).key(&key).body(body.to_vec().into()).send().await.unwrap();
        let got = c.get_object().bucket(bucket).key(&key).send().await.unwrap();
        assert_eq!(got.body.collect().await.unwrap().into_bytes().len(), body.len());
        assert!(c.get_object().bucket(bucket).key("missing").send().await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_admin_listener_shows_health_readiness_and_metrics_of_every_component() {
    let s = Standalone::start_in(tempfile::tempdir().unwrap(), &["--gc-interval", "1s", "--gc-grace", "1s"]);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", s.admin)).send();
    let health = get("/health").await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = get("/ready").await.unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);

    // /metrics asks for the token, exactly.
    assert_eq!(get("/metrics").await.unwrap().status(), 401);
    let wrong = http.get(format!("{}/metrics", s.admin)).bearer_auth("not-the-token").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let before = scrape(&s).await;
    assert_eq!(metric(&before, "strata_s3_requests_total", &[("op", "PutObject")]), None, "no PUT yet");

    let c = s.sdk();
    c.create_bucket().bucket("ops").send().await.unwrap();
    let body = vec![7u8; 300_000];
    put_get_miss(&c, "ops", 3, &body).await;
    c.delete_object().bucket("ops").key("k0").send().await.unwrap();

    let text = scrape(&s).await;
    // The gateway: by operation and status, bytes both ways, latency.
    assert_eq!(metric(&text, "strata_s3_requests_total", &[("op", "PutObject"), ("status", "200")]), Some(3.0));
    assert_eq!(metric(&text, "strata_s3_requests_total", &[("op", "GetObject"), ("status", "200")]), Some(3.0));
    assert_eq!(metric(&text, "strata_s3_requests_total", &[("op", "GetObject"), ("status", "404")]), Some(3.0));
    assert_eq!(metric(&text, "strata_s3_requests_total", &[("op", "CreateBucket"), ("status", "200")]), Some(1.0));
    assert!(metric(&text, "strata_s3_received_bytes_total", &[]).unwrap() >= 3.0 * body.len() as f64);
    assert!(metric(&text, "strata_s3_sent_bytes_total", &[]).unwrap() >= 3.0 * body.len() as f64);
    assert_eq!(metric(&text, "strata_s3_request_seconds_count", &[("op", "PutObject")]), Some(3.0));
    assert_eq!(metric(&text, "strata_s3_requests_in_flight", &[]), Some(0.0));
    // The datanodes: every byte three times (replica:3), flushed by group commit.
    let appended = metric(&text, "strata_datanode_appended_bytes_total", &[]).unwrap();
    assert!(appended >= 9.0 * body.len() as f64, "{appended}");
    for node in ["1", "2", "3"] {
        assert!(metric(&text, "strata_datanode_appends_total", &[("node", node)]).unwrap() >= 3.0, "node {node}");
        let cap = metric(&text, "strata_datanode_device_capacity_bytes", &[("node", node)]).unwrap();
        let free = metric(&text, "strata_datanode_device_free_bytes", &[("node", node)]).unwrap();
        assert!(cap >= 512.0 * 1024.0 * 1024.0 * 0.9 && free < cap, "node {node}: {free} of {cap}");
    }
    assert!(metric(&text, "strata_datanode_flushes_total", &[]).unwrap() >= 1.0);
    assert!(metric(&text, "strata_datanode_reads_total", &[]).unwrap() >= 3.0);
    assert_eq!(metric(&text, "strata_datanode_device_errors_total", &[]), Some(0.0));
    assert!(metric(&text, "strata_datanode_flush_seconds_count", &[]).unwrap() >= 1.0);
    // The metanode: leader of its one-member group, three datanodes up, extents open.
    assert_eq!(metric(&text, "strata_meta_raft_leader", &[("member", "1")]), Some(1.0));
    assert_eq!(metric(&text, "strata_meta_datanodes", &[("state", "up")]), Some(3.0));
    assert_eq!(metric(&text, "strata_meta_datanodes", &[("state", "down")]), Some(0.0));
    assert!(metric(&text, "strata_meta_extents", &[("policy", "replica:3"), ("state", "open")]).unwrap() >= 1.0);
    assert!(metric(&text, "strata_meta_raft_applied_index", &[]).unwrap() >= 1.0);
    assert_eq!(metric(&text, "strata_meta_unreadable_extents", &[]), Some(0.0));
    // The process.
    assert!(metric(&text, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(metric(&text, "process_open_fds", &[]).unwrap() > 10.0);
    // GC, once a pass has run.
    let gc = testkit::wait_for("a GC pass in the metrics", Duration::from_secs(30), || async {
        let t = scrape(&s).await;
        (metric(&t, "strata_gc_passes_total", &[]).unwrap_or(0.0) >= 1.0).then_some(t)
    })
    .await;
    assert!(metric(&gc, "strata_gc_last_pass_timestamp_seconds", &[]).unwrap() > 1.7e9);
    assert_eq!(metric(&gc, "strata_gc_pass_failures_total", &[]), Some(0.0));
    assert!(metric(&gc, "strata_gc_pass_seconds_count", &[]).unwrap() >= 1.0);

    // Every series the Grafana dashboard queries is one the services export.
    let dash = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/strata.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut names = 0;
    for e in &exprs {
        for (i, _) in e.match_indices("strata_").chain(e.match_indices("process_")) {
            let name: String = e[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let exported = gc.lines().any(|l| {
                l.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with(['{', ' ']))
                    || l.starts_with(&format!("# TYPE {name} "))
            });
            assert!(exported, "the dashboard queries {name}, which no service exports");
            names += 1;
        }
    }
    assert!(names >= exprs.len());
}

fn strata_bin() -> PathBuf {
    testkit::sibling_bin("strata")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_status_shows_the_cluster_and_its_s3_rates_on_one_screen() {
    let s = Standalone::start();
    let data = s.dir.path().join("data");
    let c = s.sdk();
    c.create_bucket().bucket("stat").send().await.unwrap();
    // Traffic while status samples its rates.
    let busy = tokio::spawn({
        let c = c.clone();
        async move {
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_secs(6) {
                // Larger than --inline-max: written to an extent, as the check below wants.
                put_get_miss(&c, "stat", 1, &[7u8; 8192]).await;
            }
        }
    });
    let out = tokio::task::spawn_blocking({
        let data = data.clone();
        move || Command::new(strata_bin()).args(["status", "--json", "--data"]).arg(data).output().unwrap()
    })
    .await
    .unwrap();
    busy.await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["health"]["status"], "ok", "{r:#}");
    assert_eq!(r["leader"], 1);
    assert_eq!(r["metanodes"].as_array().unwrap().len(), 1);
    assert_eq!(r["metanodes"][0]["role"], "leader");
    let dns = r["datanodes"].as_array().unwrap();
    assert_eq!(dns.len(), 3);
    assert!(dns.iter().all(|d| d["state"] == "up" && d["free_bytes"].as_u64().unwrap() > 0), "{r:#}");
    let ext = r["extents"].as_array().unwrap();
    assert!(ext.iter().any(|e| e["policy"] == "replica:3" && e["open"].as_u64().unwrap() >= 1), "{r:#}");
    assert_eq!(r["repair"]["unreadable"], 0);
    assert!(r["s3"]["requests_per_second"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["s3"]["by_operation"]["PutObject"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["gc"].is_object(), "{r:#}");

    // The screen for people says the same.
    let out = Command::new(strata_bin()).args(["status", "--data"]).arg(&data).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("health:     OK"), "{text}");
    assert!(text.contains("datanodes:  3 up, 0 down, 0 draining"), "{text}");

    // A stopped cluster is an error, said plainly, with exit status 2.
    let mut s = s;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let out = Command::new(strata_bin()).args(["status", "--data"]).arg(&data).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("health:     ERROR") && text.contains("no leader"), "{text}");
}

/// Debian's Prometheus (installed by scripts/setup.sh) scrapes the admin listener with
/// the bearer token; a PromQL rate over its HTTP API sees the S3 traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_standalone_and_sees_its_request_rate() {
    let bin = PathBuf::from(std::env::var("STRATA_PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into()));
    assert!(bin.exists(), "{} is missing: scripts/setup.sh installs Debian's prometheus", bin.display());
    let s = Standalone::start();
    let dir = tempfile::tempdir().unwrap();
    let target = s.admin.trim_start_matches("http://");
    let token = s.dir.path().join("data/metrics-token");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: strata\n    \
         authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n",
        token.display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = testkit::free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _child = testkit::KillOnDrop(child);
    let c = s.sdk();
    c.create_bucket().bucket("prom").send().await.unwrap();
    let busy = tokio::spawn({
        let c = c.clone();
        async move {
            loop {
                put_get_miss(&c, "prom", 1, b"prometheus").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let http = reqwest::Client::new();
    let query = |q: &'static str| {
        let http = http.clone();
        async move {
            let q: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
            let r = http.get(format!("http://127.0.0.1:{port}/api/v1/query?query={q}")).send().await.ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()
        }
    };
    let rate = testkit::wait_for("Prometheus to see S3 requests", Duration::from_secs(90), || async {
        query("sum(rate(strata_s3_requests_total{op=\"PutObject\"}[5s]))").await.filter(|r| *r > 0.0)
    })
    .await;
    busy.abort();
    assert!(rate > 0.0);
    assert_eq!(
        query("up{job=\"strata\"}").await,
        Some(1.0),
        "{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap()
    );
    let p99 = query("histogram_quantile(0.99, sum by (le) (rate(strata_s3_request_seconds_bucket[10s])))").await;
    assert!(p99.is_some_and(|v| v > 0.0 && v < 10.0), "{p99:?}");
}

/// Each service starts from its example file in deploy/config/ with what differs on this
/// machine given as STRATA_* variables, which win over the file (its addresses cannot
/// be bound here), and the cluster they make serves S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_starts_from_its_example_config_with_variables_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let example = |name: &str| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config").join(name);
        vec!["--config".to_string(), p.display().to_string()]
    };
    let secrets = testkit::secrets().display().to_string();
    let vars = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        v.push(("STRATA_SECRETS".into(), secrets.clone()));
        v
    };
    let maddr = format!("127.0.0.1:{}", testkit::free_port());
    let (m, _) = testkit::spawn_listening_env(
        &testkit::metanode_bin(),
        &[vec!["serve".to_string()], example("metanode.toml")].concat(),
        &d.join("metanode.log"),
        &vars(&[
            ("STRATA_ID", "1".into()),
            ("STRATA_LISTEN", maddr.clone()),
            ("STRATA_DATA", d.join("meta").display().to_string()),
            ("STRATA_INIT", format!("1={maddr}")),
        ]),
    );
    let _m = testkit::KillOnDrop(m);
    let mut dns = Vec::new();
    for i in 1..=3 {
        let (dn, _) = testkit::spawn_listening_env(
            &testkit::datanode_bin(),
            &example("datanode.toml"),
            &d.join(format!("datanode{i}.log")),
            &vars(&[
                ("STRATA_NODE_ID", i.to_string()),
                ("STRATA_LISTEN", "127.0.0.1:0".into()),
                ("STRATA_ADMIN_ADDR", "127.0.0.1:0".into()),
                ("STRATA_DEVICE", format!("{}:96M", d.join(format!("dev{i}.img")).display())),
                ("STRATA_NO_ZERO_FILL", "true".into()),
                ("STRATA_META", maddr.clone()),
                ("STRATA_ZONE", format!("z{i}")),
            ]),
        );
        dns.push(testkit::KillOnDrop(dn));
    }
    testkit::wait_datanodes_up(&client::MetaClient::new([maddr.clone()]), 3).await;

    let db = harness::sqlite_db(d);
    let (access, secret) = harness::other_tenant(&db, "acme");
    let admin = format!("127.0.0.1:{}", testkit::free_port());
    let (gw, s3) = testkit::spawn_listening_env(
        &harness::ogw_bin(),
        &[vec!["serve".to_string()], example("ogw.toml")].concat(),
        &d.join("ogw.log"),
        &vars(&[
            ("STRATA_DB", db[1].clone()),
            ("STRATA_MASTER_KEY", db[3].clone()),
            ("STRATA_META", maddr.clone()),
            ("STRATA_LISTEN", "127.0.0.1:0".into()),
            ("STRATA_ADMIN_ADDR", admin.clone()),
        ]),
    );
    let _gw = testkit::KillOnDrop(gw);
    let c = harness::sdk_at(&format!("http://{s3}"), &access, &secret);
    c.create_bucket().bucket("configured").send().await.unwrap();
    c.put_object().bucket("configured").key("k").body(b"from the example files".to_vec().into()).send().await.unwrap();
    let got = c.get_object().bucket("configured").key("k").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"from the example files");
    let ready = reqwest::get(format!("http://{admin}/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);

    let (gc, gc_admin) = testkit::spawn_listening_env(
        &harness::gc_bin(),
        &[vec!["run".to_string()], example("gc.toml")].concat(),
        &d.join("gc.log"),
        &vars(&[
            ("STRATA_DB", db[1].clone()),
            ("STRATA_META", maddr.clone()),
            ("STRATA_ADMIN_ADDR", "127.0.0.1:0".into()),
            ("STRATA_INTERVAL", "1s".into()),
        ]),
    );
    let _gc = testkit::KillOnDrop(gc);
    testkit::wait_for("a pass of the GC started from gc.toml", Duration::from_secs(30), || async {
        let t = reqwest::get(format!("{gc_admin}/metrics")).await.ok()?.text().await.ok()?;
        (metric(&t, "strata_gc_passes_total", &[]).unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
}

/// The web console, end to end in Debian's Chromium (driven by playwright-core from
/// ogw/tests/console, installed by scripts/setup.sh): login is enforced, the pages load
/// from the admin listener alone, the overview shows the cluster and the bucket's
/// objects, and the plots draw the request rate the traffic made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_console_asks_for_the_token_and_plots_live_traffic_in_chromium() {
    let s = Standalone::start_in(tempfile::tempdir().unwrap(), &[]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // Without the token nothing but the login form and its assets.
    let page = http.get(format!("{}/console", s.admin)).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/console/login");
    for api in ["overview", "series"] {
        let r = http.get(format!("{}/console/api/{api}", s.admin)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{api}");
        let r = http.get(format!("{}/console/api/{api}", s.admin)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status(), 401, "{api}");
    }
    let token = s.metrics_token();
    let r = http.get(format!("{}/console/api/series", s.admin)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));

    // Traffic, still going while the browser looks.
    let c = s.sdk();
    c.create_bucket().bucket("console-demo").send().await.unwrap();
    let body = vec![5u8; 200_000];
    put_get_miss(&c, "console-demo", 6, &body).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (c, stop, body) = (c.clone(), stop.clone(), body.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                put_get_miss(&c, "console-demo", 1, &body).await;
            }
        })
    };

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {} (run scripts/setup.sh)",
        dir.display()
    );
    let shot = s.dir.path().join("console.png");
    let mut node = Command::new("node");
    node.arg(dir.join("check.mjs")).args([&s.admin, &token, "console-demo"]).arg(&shot);
    let out = tokio::task::spawn_blocking(move || node.output()).await.unwrap().expect("node (run scripts/setup.sh)");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("the browser saw {seen:#}");
    if let Ok(keep) = std::env::var("STRATA_CONSOLE_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    assert_eq!(seen["unauthenticated_page"], "/console/login");
    assert_eq!(seen["unauthenticated_api_status"], 401);
    assert_eq!(seen["wrong_token_page"], "/console/login");
    assert_eq!(seen["wrong_token_message"], "That is not the admin token.");
    assert_eq!(seen["logged_in_page"], "/console");
    assert_eq!(seen["health"], "OK");
    assert_eq!(seen["datanode_rows"], 3);
    assert_eq!(seen["metanode_rows"], 1);
    // tenant, bucket, objects (k0..k5), bytes, older versions, their bytes.
    let row = seen["bucket_row"].as_array().unwrap();
    assert_eq!(row[1], "console-demo");
    assert_eq!(row[2], "6", "{row:?}");
    assert_eq!(row[3], "1.1 MiB", "{row:?}");
    for plot in ["requests", "throughput", "capacity", "latency"] {
        let p = &seen["plots"][plot];
        assert!(p["points"].as_u64().unwrap() >= 1, "{plot}: {p}");
        assert!(p["max"].as_f64().unwrap() > 0.0, "{plot}: {p}");
        assert!(p["line_pixels"].as_u64().unwrap() > 0, "{plot}: nothing drawn: {p}");
    }
    assert_eq!(seen["after_logout_api_status"], 401);
    assert_eq!(seen["replayed_cookie_status_before_logout"], 200);
    assert_eq!(seen["replayed_cookie_status"], 401, "the session must end on the server");
    assert_eq!(seen["session_cookie"], serde_json::json!({ "http_only": true, "same_site": "Lax" }));
    assert_eq!(seen["foreign_requests"], serde_json::json!([]), "the console must work offline");
    assert_eq!(seen["page_errors"], serde_json::json!([]));
}

/// Standalone sizes its device files from the disk unless told, says what they hold at
/// start, and refuses, making nothing, a size the disk cannot hold.
/// Starts a standalone with `args` that must refuse to start: exit status 2 and no
/// device file made. Returns what it said.
fn refused_standalone(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(harness::ogw_bin())
        .args(["standalone", "--s3-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(args)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    let made: Vec<_> = std::fs::read_dir(&data).into_iter().flatten().flatten().map(|e| e.file_name()).collect();
    assert!(!made.iter().any(|f| f.to_string_lossy().ends_with(".img")), "device files made: {made:?}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_capacity_follows_the_disk_and_a_size_too_large_is_refused() {
    let err = refused_standalone(&["--device-size", "100T"]);
    assert!(err.contains("3 new device files of 100.0 TiB need 300.0 TiB") && err.contains("free"), "{err}");

    // As asked, and said at start.
    let s = Standalone::start_in(tempfile::tempdir().unwrap(), &["--device-size", "600M"]);
    assert!(
        s.capacity.starts_with("1.8 GiB on 3 device files: about 600.0 MiB of objects at replica:3"),
        "{}",
        s.capacity
    );
    drop(s);
    // From the disk: half its free space, shared among the three (64 GiB each at most).
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_in(dir, &["--device-size", "auto"]);
    let sizes: Vec<u64> =
        (1..=3).map(|i| std::fs::metadata(s.dir.path().join(format!("data/datanode{i}.img"))).unwrap().len()).collect();
    assert!(sizes.iter().all(|&z| z == sizes[0] && (512 << 20..=64 << 30).contains(&z)), "{sizes:?}");
    let stat = Command::new("df").args(["-B1", "--output=avail"]).arg(s.dir.path()).output().unwrap();
    let avail: u64 = String::from_utf8_lossy(&stat.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    // Made from what was free before they were: half of (what is free now + what they
    // took), give or take what tests running beside this one wrote meanwhile (a sixth
    // of it: under 1 GiB).
    let before = avail + 3 * sizes[0];
    assert!(sizes[0] == 64 << 30 || sizes[0].abs_diff(before / 6) < 1 << 30, "{sizes:?} of {before} free");
    let c = s.sdk();
    c.create_bucket().bucket("cap").send().await.unwrap();
    put_get_miss(&c, "cap", 1, b"fits").await;
}

/// `--policy` chooses how STANDARD objects are kept (issue 19): with replica:1 every
/// extent the gateway writes has one copy, as the banner and the metanode say, and
/// objects read back; a policy wider than the datanodes is refused before anything
/// starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_policy_sets_the_copies_of_standard_objects() {
    let err = refused_standalone(&["--policy", "replica:4"]);
    assert!(err.contains("--policy replica:4 needs 4 datanodes; --datanodes is 3"), "{err}");

    let s = Standalone::start_in(tempfile::tempdir().unwrap(), &["--device-size", "600M", "--policy", "replica:1"]);
    assert!(
        s.capacity.starts_with("1.8 GiB on 3 device files: about 1.8 GiB of objects at replica:1"),
        "{}",
        s.capacity
    );
    let c = s.sdk();
    c.create_bucket().bucket("one").send().await.unwrap();
    // Larger than --inline-max: written to extents, whose copies are checked below.
    put_get_miss(&c, "one", 3, &[1u8; 8192]).await;
    let out = Command::new(strata_bin())
        .args(["status", "--json", "--data"])
        .arg(s.dir.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ext = r["extents"].as_array().unwrap();
    assert!(ext.iter().any(|e| e["policy"] == "replica:1" && e["open"].as_u64().unwrap() >= 1), "{r:#}");
    assert!(!ext.iter().any(|e| e["policy"] == "replica:3"), "no extent keeps three copies: {r:#}");
    // Its gateway called its datanodes in the process, not over loopback TCP.
    let log = std::fs::read_to_string(s.dir.path().join("ogw.log")).unwrap();
    assert!(log.contains(": served in this process, called directly"), "{log}");
}
