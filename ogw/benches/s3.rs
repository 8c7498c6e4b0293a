//! `scripts/bench.sh s3`: Strata standalone against Garage (single node, same disk),
//! driven side by side by one neutral load generator (SigV4 via `aws-sigv4`,
//! `UNSIGNED-PAYLOAD`, reqwest over loopback; no SDK work such as payload hashing on
//! the client), with the disk's sequential write bandwidth measured in the same run.
//!
//! Cases (per system): put_64m_c16 / get_64m_c16 (64 MiB objects, 16 in flight,
//! MB/s), put_4k_c16 (ops/s) with put_4k_p50 / put_4k_p99 (µs), list_delim_p50 (a
//! ListObjectsV2 page with a delimiter over STRATA_BENCH_LIST_KEYS keys, µs).
//! Every object body is unique block by block (Garage deduplicates 1 MiB blocks).
//!
//! Env: STRATA_BENCH_SECS (per case, default 10), STRATA_BENCH_LIST_KEYS (default
//! 1000000), OGW_BIN (default: the release `ogw` beside this bench), GARAGE_BIN
//! (Garage is skipped, with a line saying so, when unset).

#[path = "../../client/benches/support/baseline.rs"]
mod baseline;
#[path = "s3/gc.rs"]
mod gc;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use baseline::emit;
use bytes::Bytes;
use serde_json::json;

struct Target {
    name: &'static str,
    endpoint: String,
    access: String,
    secret: String,
    /// Buckets are created by the generator (Strata) or by the admin CLI (Garage).
    create_bucket: bool,
    /// Strata standalone's metanode address.
    meta: Option<String>,
}

struct Gen {
    http: reqwest::Client,
    t: Arc<Target>,
}

impl Gen {
    fn new(t: Arc<Target>) -> Gen {
        proto::tls::install_provider();
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        Gen { http, t }
    }

    async fn send(&self, method: &str, path_query: &str, body: Bytes) -> reqwest::Response {
        self.send_with(method, path_query, &[], body).await
    }

    /// With extra headers, signed along with `host`.
    async fn send_with(
        &self,
        method: &str,
        path_query: &str,
        extra: &[(&str, &str)],
        body: Bytes,
    ) -> reqwest::Response {
        let url = format!("{}{}", self.t.endpoint, path_query);
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = Credentials::new(&self.t.access, &self.t.secret, None, None, "bench").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let host = url.split('/').nth(2).unwrap().to_string();
        let headers: Vec<(&str, &str)> =
            std::iter::once(("host", host.as_str())).chain(extra.iter().copied()).collect();
        let signable =
            SignableRequest::new(method, &url, headers.iter().copied(), SignableBody::UnsignedPayload).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = self.http.request(method.parse().unwrap(), &url).body(body);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{} {method} {url}: {e}", self.t.name));
        if !resp.status().is_success() {
            let status = resp.status();
            panic!("{} {method} {url}: {status}: {}", self.t.name, resp.text().await.unwrap_or_default());
        }
        resp
    }
}

/// A body of `len` bytes unique to `(seed, n)` in every 1 MiB block.
fn unique(base: &Bytes, len: usize, seed: u64, n: u64) -> Bytes {
    let mut v = base[..len].to_vec();
    for (i, block) in v.chunks_mut(1 << 20).enumerate() {
        let stamp = [seed.to_le_bytes(), n.to_le_bytes(), (i as u64).to_le_bytes()].concat();
        let k = stamp.len().min(block.len());
        block[..k].copy_from_slice(&stamp[..k]);
    }
    Bytes::from(v)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// Runs `op(i)` with `depth` in flight for `secs` or `max_ops` operations, whichever
/// ends first; returns (ops, elapsed, latencies µs).
async fn drive<F, Fut>(depth: usize, secs: f64, max_ops: u64, op: F) -> (u64, f64, Vec<f64>)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..depth)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while t.elapsed().as_secs_f64() < secs {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max_ops {
                        break;
                    }
                    let a = Instant::now();
                    op(i).await;
                    lat.push(a.elapsed().as_secs_f64() * 1e6);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    (lat.len() as u64, t.elapsed().as_secs_f64(), lat)
}

struct Results {
    put_64m: f64,
    get_64m: f64,
    put_4k: f64,
    put_4k_p50: f64,
    put_4k_p99: f64,
    list_p50: f64,
}

async fn run(t: Arc<Target>, secs: f64, list_keys: u64) -> Results {
    let g = Arc::new(Gen::new(t.clone()));
    let b = "bench";
    if t.create_bucket {
        g.send("PUT", &format!("/{b}"), Bytes::new()).await;
    }
    let base = Bytes::from((0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect::<Vec<u8>>());
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;

    let (g2, base2) = (g.clone(), base.clone());
    // At most 48 objects (3 GiB): every byte is on each of standalone's three devices.
    let (n, el, _) = drive(16, secs, 48, move |i| {
        let (g, body) = (g2.clone(), unique(&base2, 64 << 20, seed, i));
        async move {
            g.send("PUT", &format!("/{b}/big/{i}"), body).await;
        }
    })
    .await;
    let put_64m = n as f64 * 64.0 * 1.048_576 / el;
    let written = n;

    let g2 = g.clone();
    let got = Arc::new(AtomicU64::new(0));
    let got2 = got.clone();
    let (_, el, _) = drive(16, secs, u64::MAX, move |i| {
        let (g, got) = (g2.clone(), got2.clone());
        async move {
            let r = g.send("GET", &format!("/{b}/big/{}", i % written), Bytes::new()).await;
            let body = r.bytes().await.unwrap();
            assert_eq!(body.len(), 64 << 20);
            got.fetch_add(body.len() as u64, Ordering::Relaxed);
        }
    })
    .await;
    let get_64m = got.load(Ordering::Relaxed) as f64 / 1e6 / el;

    let (g2, base2) = (g.clone(), base.clone());
    let (n, el, mut lat) = drive(16, secs, u64::MAX, move |i| {
        let (g, body) = (g2.clone(), unique(&base2, 4096, seed, i));
        async move {
            g.send("PUT", &format!("/{b}/small/{i}"), body).await;
        }
    })
    .await;
    let put_4k = n as f64 / el;
    let put_4k_p50 = pct(&mut lat, 0.5);
    let put_4k_p99 = pct(&mut lat, 0.99);

    // A million (by default) empty objects under 1000 prefixes of 1000 keys each; a page
    // lists the prefixes, each standing for 1000 keys the server must not read.
    let t0 = Instant::now();
    let g2 = g.clone();
    let made = Arc::new(AtomicU64::new(0));
    let made2 = made.clone();
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let (g, made) = (g2.clone(), made2.clone());
            tokio::spawn(async move {
                let mut i = w;
                while i < list_keys {
                    g.send("PUT", &format!("/{b}/list/{:04}/{i:08}", i % 1000), Bytes::new()).await;
                    made.fetch_add(1, Ordering::Relaxed);
                    i += 64;
                }
            })
        })
        .collect();
    let mut last = Instant::now();
    for w in workers {
        while !w.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if last.elapsed() > Duration::from_secs(30) {
                eprintln!("{}: {} of {list_keys} keys made", t.name, made.load(Ordering::Relaxed));
                last = Instant::now();
            }
        }
        w.await.unwrap();
    }
    eprintln!("{}: {list_keys} keys made in {:.0} s", t.name, t0.elapsed().as_secs_f64());
    let mut lat = Vec::new();
    for _ in 0..20 {
        let a = Instant::now();
        let r =
            g.send("GET", &format!("/{b}?list-type=2&prefix=list%2F&delimiter=%2F&max-keys=1000"), Bytes::new()).await;
        let text = r.text().await.unwrap();
        lat.push(a.elapsed().as_secs_f64() * 1e6);
        let prefixes = text.matches("<CommonPrefixes>").count() as u64;
        assert_eq!(prefixes, list_keys.min(1000), "{}: a page of common prefixes", t.name);
    }
    let list_p50 = pct(&mut lat, 0.5);
    Results { put_64m, get_64m, put_4k, put_4k_p50, put_4k_p99, list_p50 }
}

/// A server process, killed when dropped (also when the bench panics).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn target_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn start_strata(dir: &Path, extra: &[&str]) -> (Proc, Target) {
    let bin = std::env::var_os("OGW_BIN").map(PathBuf::from).unwrap_or_else(|| target_dir().join("ogw"));
    let mut child = Command::new(&bin)
        .args(["standalone", "--s3-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data"])
        .arg(dir)
        .args(if extra.is_empty() { &["--device-size", "4G"][..] } else { extra })
        .env_remove("STRATA_ACCESS_KEY")
        .env_remove("STRATA_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.with_extension("log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let get = |p: &str| loop {
        let l =
            rx.recv().unwrap_or_else(|_| panic!("ogw standalone exited; see {}", dir.with_extension("log").display()));
        if let Some(v) = l.strip_prefix(p) {
            return v.trim().to_string();
        }
    };
    let up = get("Strata standalone is up: metanode ");
    let meta = up.split(',').next().map(str::to_string);
    let endpoint = get("S3 endpoint:");
    let access = get("Access key:");
    let secret = get("Secret key:");
    (Proc(child), Target { name: "strata", endpoint, access, secret, create_bucket: true, meta })
}

/// Garage, single node, with fsync of data and metadata on (as Strata always does).
fn start_garage(bin: &Path, dir: &Path) -> (Proc, Target) {
    std::fs::create_dir_all(dir).unwrap();
    let port = |()| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (s3, rpc, admin) = (port(()), port(()), port(()));
    let conf = dir.join("garage.toml");
    std::fs::write(
        &conf,
        format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "lmdb"
metadata_fsync = true
data_fsync = true
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            d = dir.display(),
            secret = "4425f5c26c5e11581d3223904324dcb5b5d5dfb14e5e7f35e38c595424f5f1e6"
        ),
    )
    .unwrap();
    let child = Proc(
        Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("garage.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let cli = |args: &[&str]| -> String {
        let t = Instant::now();
        loop {
            let out = Command::new(bin).arg("-c").arg(&conf).args(args).output().unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(t.elapsed() < Duration::from_secs(60), "garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let status = cli(&["status"]);
    let id = status
        .lines()
        .find_map(|l| l.split_whitespace().next().filter(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit())))
        .unwrap_or_else(|| panic!("no node id in garage status:\n{status}"));
    cli(&["layout", "assign", "-z", "dc1", "-c", "100G", id]);
    cli(&["layout", "apply", "--version", "1"]);
    let key = cli(&["key", "create", "bench"]);
    let field = |name: &str| {
        key.lines()
            .find_map(|l| l.split_once(name).map(|(_, v)| v.trim_start_matches(':').trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in:\n{key}"))
    };
    let (access, secret) = (field("Key ID"), field("Secret key"));
    cli(&["bucket", "create", "bench"]);
    cli(&["bucket", "allow", "--read", "--write", "--owner", "bench", "--key", "bench"]);
    let endpoint = format!("http://127.0.0.1:{s3}");
    (child, Target { name: "garage", endpoint, access, secret, create_bucket: false, meta: None })
}

/// A fresh data directory `bench-data/DIR` beside the target directory, the runtime the
/// load generator runs on, and the disk's sequential write bandwidth (printed).
fn setup(suite: &str, dir: &str, secs: f64) -> (PathBuf, tokio::runtime::Runtime, f64) {
    let root = target_dir().parent().unwrap().join("bench-data").join(dir);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let seq = baseline::device_seq_write(&root, secs.min(5.0));
    emit(json!({"suite": suite, "case": "device_seq_write", "value": seq, "unit": "MB/s"}));
    (root, rt, seq)
}

/// `STRATA_BENCH_S3_MODE=ec` (`scripts/bench.sh ec`): PUT throughput of 64 MiB objects,
/// 16 in flight, as STANDARD (`replica:3`) and as STANDARD_IA (`ec:4+2`) on one
/// standalone with 7 datanodes, in alternating rounds (replica, ec, replica, ec) so that
/// both see the same machine; with the device's sequential write bandwidth.
fn ec_compare(secs: f64) {
    let (root, rt, seq) = setup("ec", "s3-ec", secs);
    let (child, t) =
        start_strata(&root.join("strata"), &["--datanodes", "7", "--device-size", "4G", "--ec-policy", "ec:4+2"]);
    let g = Arc::new(Gen::new(Arc::new(t)));
    let base = Bytes::from((0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect::<Vec<u8>>());
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    rt.block_on(g.send("PUT", "/ecbench", Bytes::new()));
    // bytes and seconds per class, over the rounds
    let mut totals = [(0u64, 0f64); 2];
    for round in 0..4u64 {
        let which = (round % 2) as usize;
        let class = ["STANDARD", "STANDARD_IA"][which];
        let (g2, base2) = (g.clone(), base.clone());
        // At most 24 objects a round: 4 GiB devices hold every round of both classes.
        let (n, el, _) = rt.block_on(drive(16, secs / 2.0, 24, move |i| {
            let (g, body) = (g2.clone(), unique(&base2, 64 << 20, seed + round, i));
            async move {
                g.send_with("PUT", &format!("/ecbench/{class}/{round}/{i}"), &[("x-amz-storage-class", class)], body)
                    .await;
            }
        }));
        eprintln!("round {round}: {class}: {n} objects in {el:.1} s");
        totals[which].0 += n * (64 << 20);
        totals[which].1 += el;
    }
    drop(child);
    let mbps = |(b, s): (u64, f64)| b as f64 / 1e6 / s;
    let (replica, ec) = (mbps(totals[0]), mbps(totals[1]));
    emit(json!({"suite": "ec", "case": "s3_put_64m_c16_replica3", "value": replica, "unit": "MB/s",
        "device_seq_write_over_3": seq / 3.0, "ratio_to_device_over_3": replica / (seq / 3.0)}));
    emit(json!({"suite": "ec", "case": "s3_put_64m_c16_ec4+2", "value": ec, "unit": "MB/s",
        "baseline": "replica:3", "baseline_value": replica, "ratio": ec / replica, "target": 1.8,
        "device_seq_write_over_1.5": seq / 1.5, "ratio_to_device_over_1.5": ec / (seq / 1.5)}));
    let _ = std::fs::remove_dir_all(&root);
}

fn main() {
    let secs: f64 = std::env::var("STRATA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    match std::env::var("STRATA_BENCH_S3_MODE").as_deref() {
        Ok("ec") => return ec_compare(secs),
        Ok("gc") => return gc::bench(secs),
        _ => {}
    }
    let list_keys: u64 = std::env::var("STRATA_BENCH_LIST_KEYS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let (root, rt, seq) = setup("s3", "s3", secs);

    let garage = std::env::var_os("GARAGE_BIN").map(PathBuf::from);
    let peer = garage.map(|bin| {
        let (child, t) = start_garage(&bin, &root.join("garage"));
        let r = rt.block_on(run(Arc::new(t), secs, list_keys));
        drop(child);
        r
    });
    if peer.is_none() {
        eprintln!("GARAGE_BIN is not set: Strata only, no peer ratios (scripts/bench.sh s3 installs Garage)");
    }
    let _ = std::fs::remove_dir_all(root.join("garage"));
    let (child, t) = start_strata(&root.join("strata"), &[]);
    let me = rt.block_on(run(Arc::new(t), secs, list_keys));
    drop(child);

    let cases: [(&str, f64, Option<f64>, &str, bool); 6] = [
        ("put_64m_c16", me.put_64m, peer.as_ref().map(|p| p.put_64m), "MB/s", true),
        ("get_64m_c16", me.get_64m, peer.as_ref().map(|p| p.get_64m), "MB/s", true),
        ("put_4k_c16", me.put_4k, peer.as_ref().map(|p| p.put_4k), "ops/s", true),
        ("put_4k_p50", me.put_4k_p50, peer.as_ref().map(|p| p.put_4k_p50), "us", false),
        ("put_4k_p99", me.put_4k_p99, peer.as_ref().map(|p| p.put_4k_p99), "us", false),
        ("list_delim_p50", me.list_p50, peer.as_ref().map(|p| p.list_p50), "us", false),
    ];
    for (case, v, p, unit, higher) in cases {
        let mut o = json!({"suite": "s3", "case": case, "value": v, "unit": unit});
        if let Some(p) = p {
            o["baseline"] = json!("garage");
            o["baseline_value"] = json!(p);
            o["ratio"] = json!(if higher { v / p } else { p / v });
            o["target"] = json!(2.0);
        }
        if case == "put_64m_c16" {
            o["device_seq_write_over_3"] = json!(seq / 3.0);
            o["ratio_to_device_over_3"] = json!(v / (seq / 3.0));
        }
        if case == "list_delim_p50" {
            o["keys"] = json!(list_keys);
        }
        emit(o);
    }
    let _ = std::fs::remove_dir_all(&root);
}
