//! `scripts/bench.sh s3`: Strata standalone side by side with Ceph RGW (one BlueStore
//! OSD on a file, pool size 1, made by `scripts/ceph-rgw.sh`) and Garage (single node),
//! one after the other on the same disk, driven by one neutral load generator (SigV4 via
//! `aws-sigv4`, `UNSIGNED-PAYLOAD`, reqwest over loopback; no SDK work such as payload
//! hashing on the client). Strata runs as replica:1 (like for like: the peers write each
//! byte once), replica:3 and ec:4+2. The machine's limits (device sequential write and
//! read, fdatasync rate, memcpy, loopback TCP) are measured in the same run.
//!
//! Cases per system (`CASES`): PUT and GET of 64 MiB and 1 MiB objects, a 70/30 GET/PUT
//! mix of 1 MiB, 16 in flight (MB/s); 4 KiB PUTs at 16 in flight (ops/s) and one at a
//! time (p50 µs); over STRATA_BENCH_LIST_KEYS keys (default 20,000) in 100 prefixes, a
//! top-level page with a delimiter, a page inside one prefix, and a full listing 1,000
//! keys a page (p50 µs); DeleteObjects of those keys 1,000 a request (keys/s); server
//! CPU seconds per GiB of 64 MiB PUTs. GETs follow a drop of the page cache. Every object
//! body is unique block by block (Garage deduplicates 1 MiB blocks).
//!
//! Env: STRATA_BENCH_SECS (per case, default 10), STRATA_BENCH_SYSTEMS (a comma list of
//! ceph, garage, strata, strata-r3, strata-ec4+2; default all), OGW_BIN (default: the
//! release `ogw` beside this bench), GARAGE_BIN (Garage is skipped, with a line saying
//! so, when unset). `STRATA_BENCH_S3_MODE=ec` and `=gc` run the `ec` and `gc` suites.

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
    /// The server's processes, whose CPU time the bench counts.
    pids: Vec<u32>,
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

    async fn send(&self, method: &str, path_query: &str, body: impl Into<Body>) -> reqwest::Response {
        self.send_with(method, path_query, &[], body).await
    }

    /// With extra headers, signed along with `host`.
    async fn send_with(
        &self,
        method: &str,
        path_query: &str,
        extra: &[(&str, &str)],
        body: impl Into<Body>,
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
        // Content-Length always, also 0: RGW answers 411 to a PUT without one.
        let body = body.into();
        let len = body.len();
        let mut req = self.http.request(method.parse().unwrap(), &url).header("content-length", len).body(body.sent());
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

/// A request body: its pieces, sent one after another as they are (the generator
/// copies no body: on this 2-core machine its copies took CPU from the server).
#[derive(Clone, Default)]
struct Body(Vec<Bytes>);

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body(vec![b])
    }
}

impl Body {
    fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    fn sent(self) -> reqwest::Body {
        match <[Bytes; 1]>::try_from(self.0) {
            Ok([one]) => reqwest::Body::from(one),
            Err(pieces) => {
                reqwest::Body::wrap_stream(futures::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>)))
            }
        }
    }
}

/// A body of `len` bytes of `base` unique to `(seed, n)` in every 1 MiB block: each
/// block starts with a 24-byte stamp of the three (Garage deduplicates equal blocks).
fn unique(base: &Bytes, len: usize, seed: u64, n: u64) -> Body {
    let mut pieces = Vec::new();
    for (i, at) in (0..len).step_by(1 << 20).enumerate() {
        let end = (at + (1 << 20)).min(len);
        let stamp = [seed.to_le_bytes(), n.to_le_bytes(), (i as u64).to_le_bytes()].concat();
        let k = stamp.len().min(end - at);
        pieces.push(Bytes::copy_from_slice(&stamp[..k]));
        if at + k < end {
            pieces.push(base.slice(at + k..end));
        }
    }
    Body(pieces)
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

/// What one system measured, by case name (see `CASES`).
type Results = std::collections::HashMap<&'static str, f64>;

/// Which peer a case's ratio is taken against.
#[derive(Clone, Copy, PartialEq)]
enum Vs {
    /// The better of Ceph RGW and Garage on this case.
    Best,
    /// Ceph RGW (the issue's targets name it for small PUTs and CPU).
    Ceph,
}

/// The cases: name, unit, higher is better, the peer, and the target ratio for Strata
/// replica:1 against that peer (higher is better; for latencies and CPU the ratio is
/// the peer's figure over Strata's).
const CASES: &[(&str, &str, bool, Vs, Option<f64>)] = &[
    ("put_64m_c16", "MB/s", true, Vs::Best, Some(2.0)),
    ("get_64m_c16", "MB/s", true, Vs::Best, Some(1.5)),
    ("put_1m_c16", "MB/s", true, Vs::Best, Some(2.0)),
    ("get_1m_c16", "MB/s", true, Vs::Best, Some(1.5)),
    ("mix_1m_c16", "MB/s", true, Vs::Best, None),
    ("put_4k_c16", "ops/s", true, Vs::Ceph, Some(3.0)),
    ("put_4k_c1_p50", "us", false, Vs::Ceph, Some(4.0)),
    ("list_top_p50", "us", false, Vs::Best, Some(2.0)),
    ("list_prefix_p50", "us", false, Vs::Best, Some(2.0)),
    ("list_full_p50", "us", false, Vs::Best, Some(2.0)),
    ("delete_objects", "keys/s", true, Vs::Best, None),
    ("cpu_s_per_gib_put", "s/GiB", false, Vs::Ceph, Some(2.0)),
];

/// Prefixes the listing keys are spread over.
const LIST_PREFIXES: u64 = 100;

/// CPU seconds (user + system, all threads) used so far by these processes.
fn cpu_secs(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            // Fields after the command name: state is the first, utime the 12th, stime the 13th.
            let rest: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
            (rest[11].parse::<f64>().unwrap() + rest[12].parse::<f64>().unwrap()) / tick
        })
        .sum()
}

/// Writes dirty pages and drops the page cache so that GETs read the device; false when
/// this user may not (the GET figures then may come from memory).
fn drop_caches() -> bool {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text between the first `<tag>` and `</tag>`.
fn between<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let i = text.find(&open)? + open.len();
    Some(&text[i..i + text[i..].find(&format!("</{tag}>"))?])
}

/// Reads a response's body to its end as it comes and returns its length: the
/// generator does not gather the bytes into one buffer (a copy of every GET body, which
/// on two cores takes CPU from whichever server is under test).
async fn drain(mut resp: reqwest::Response) -> usize {
    let mut len = 0;
    while let Some(piece) = resp.chunk().await.unwrap() {
        len += piece.len();
    }
    len
}

/// Times `n` runs of `f`, µs each, and returns the median.
async fn p50_of<F, Fut>(n: usize, f: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut lat = Vec::new();
    for _ in 0..n {
        let a = Instant::now();
        f().await;
        lat.push(a.elapsed().as_secs_f64() * 1e6);
    }
    pct(&mut lat, 0.5)
}

async fn run(t: Arc<Target>, secs: f64, list_keys: u64) -> Results {
    let g = Arc::new(Gen::new(t.clone()));
    let b = "bench";
    if t.create_bucket {
        g.send("PUT", &format!("/{b}"), Bytes::new()).await;
    }
    let mut r = Results::new();
    let base = Bytes::from((0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect::<Vec<u8>>());
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let step = |what: &str| eprintln!("{}: {what}", t.name);

    // PUT, then GET from the device, at `size`: at most `max` objects under `dir/`.
    let put_get = |size: usize, dir: &'static str, max: u64| {
        let (g, base, t) = (g.clone(), base.clone(), t.clone());
        async move {
            let cpu0 = cpu_secs(&t.pids);
            let (g2, base2) = (g.clone(), base.clone());
            let (n, el, _) = drive(16, secs, max, move |i| {
                let (g, body) = (g2.clone(), unique(&base2, size, seed, i));
                async move {
                    g.send("PUT", &format!("/{b}/{dir}/{i}"), body).await;
                }
            })
            .await;
            let put = (n * size as u64) as f64 / 1e6 / el;
            let cpu_per_gib = (cpu_secs(&t.pids) - cpu0) / ((n * size as u64) as f64 / (1u64 << 30) as f64);
            if !drop_caches() {
                eprintln!("{}: cannot drop the page cache (not root?): GETs may read memory", t.name);
            }
            let got = Arc::new(AtomicU64::new(0));
            let (g2, got2) = (g.clone(), got.clone());
            let (_, el, _) = drive(16, secs, u64::MAX, move |i| {
                let (g, got) = (g2.clone(), got2.clone());
                async move {
                    let len = drain(g.send("GET", &format!("/{b}/{dir}/{}", i % n), Bytes::new()).await).await;
                    assert_eq!(len, size);
                    got.fetch_add(len as u64, Ordering::Relaxed);
                }
            })
            .await;
            (put, got.load(Ordering::Relaxed) as f64 / 1e6 / el, cpu_per_gib, n)
        }
    };
    step("64 MiB PUT and GET");
    // At most 32 objects (2 GiB) and 1024 of 1 MiB: the replica:3 run keeps every byte
    // on each of its three device files.
    let (put, get, cpu, _) = put_get(64 << 20, "big", 32).await;
    r.insert("put_64m_c16", put);
    r.insert("get_64m_c16", get);
    r.insert("cpu_s_per_gib_put", cpu);
    step("1 MiB PUT and GET");
    let (put, get, _, n1m) = put_get(1 << 20, "mid", 1024).await;
    r.insert("put_1m_c16", put);
    r.insert("get_1m_c16", get);

    step("1 MiB 70/30 GET/PUT");
    let (g2, base2) = (g.clone(), base.clone());
    let (n, el, _) = drive(16, secs, 1024, move |i| {
        let (g, base) = (g2.clone(), base2.clone());
        async move {
            if i % 10 < 7 {
                let len = drain(g.send("GET", &format!("/{b}/mid/{}", i % n1m), Bytes::new()).await).await;
                assert_eq!(len, 1 << 20);
            } else {
                g.send("PUT", &format!("/{b}/mix/{i}"), unique(&base, 1 << 20, seed + 1, i)).await;
            }
        }
    })
    .await;
    r.insert("mix_1m_c16", (n << 20) as f64 / 1e6 / el);

    step("4 KiB PUT");
    let (g2, base2) = (g.clone(), base.clone());
    let (n, el, _) = drive(16, secs, u64::MAX, move |i| {
        let (g, body) = (g2.clone(), unique(&base2, 4096, seed, i));
        async move {
            g.send("PUT", &format!("/{b}/small/{i}"), body).await;
        }
    })
    .await;
    r.insert("put_4k_c16", n as f64 / el);
    let (g2, base2) = (g.clone(), base.clone());
    let (_, _, mut lat) = drive(1, secs / 2.0, 2000, move |i| {
        let (g, body) = (g2.clone(), unique(&base2, 4096, seed + 2, i));
        async move {
            g.send("PUT", &format!("/{b}/one/{i}"), body).await;
        }
    })
    .await;
    r.insert("put_4k_c1_p50", pct(&mut lat, 0.5));

    // `list_keys` empty objects under LIST_PREFIXES prefixes.
    let t0 = Instant::now();
    let key = |i: u64| format!("list/{:04}/{i:08}", i % LIST_PREFIXES);
    let made = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let (g, made) = (g.clone(), made.clone());
            tokio::spawn(async move {
                let mut i = w;
                while i < list_keys {
                    g.send("PUT", &format!("/{b}/{}", key(i)), Bytes::new()).await;
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
                step(&format!("{} of {list_keys} keys made", made.load(Ordering::Relaxed)));
                last = Instant::now();
            }
        }
        w.await.unwrap();
    }
    step(&format!("{list_keys} keys made in {:.0} s; listing", t0.elapsed().as_secs_f64()));
    let list = |query: String| {
        let g = g.clone();
        async move { g.send("GET", &format!("/{b}?list-type=2&{query}"), Bytes::new()).await.text().await.unwrap() }
    };
    let top = p50_of(20, || async {
        let text = list("prefix=list%2F&delimiter=%2F&max-keys=1000".into()).await;
        assert_eq!(text.matches("<CommonPrefixes>").count() as u64, LIST_PREFIXES, "{}: top-level page", t.name);
    })
    .await;
    r.insert("list_top_p50", top);
    let per_prefix = list_keys / LIST_PREFIXES;
    let inside = p50_of(20, || async {
        let text = list("prefix=list%2F0042%2F&max-keys=1000".into()).await;
        assert_eq!(text.matches("<Key>").count() as u64, per_prefix.min(1000), "{}: in-prefix page", t.name);
    })
    .await;
    r.insert("list_prefix_p50", inside);
    let full = p50_of(15, || async {
        let (mut keys, mut token) = (0, None::<String>);
        loop {
            let cont = token.as_deref().map(|c| format!("&continuation-token={}", enc(c))).unwrap_or_default();
            let text = list(format!("prefix=list%2F&max-keys=1000{cont}")).await;
            keys += text.matches("<Key>").count() as u64;
            token = between(&text, "NextContinuationToken").map(str::to_string);
            if between(&text, "IsTruncated") != Some("true") {
                break;
            }
        }
        assert_eq!(keys, list_keys, "{}: a full listing", t.name);
    })
    .await;
    r.insert("list_full_p50", full);

    step("DeleteObjects");
    let batches = list_keys.div_ceil(1000);
    let (_, el, _) = drive(4, f64::MAX, batches, move |batch| {
        let g = g.clone();
        async move {
            let mut xml = String::from("<Delete><Quiet>true</Quiet>");
            for i in batch * 1000..((batch + 1) * 1000).min(list_keys) {
                xml += &format!("<Object><Key>{}</Key></Object>", key(i));
            }
            xml += "</Delete>";
            use base64::Engine;
            use md5::Digest;
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml.as_bytes()));
            let text = g
                .send_with("POST", &format!("/{b}?delete"), &[("content-md5", md5.as_str())], Bytes::from(xml))
                .await
                .text()
                .await
                .unwrap();
            assert!(!text.contains("<Error>"), "DeleteObjects: {text}");
        }
    })
    .await;
    r.insert("delete_objects", list_keys as f64 / el);
    r
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
    let pids = vec![child.id()];
    (Proc(child), Target { name: "strata", endpoint, access, secret, create_bucket: true, meta, pids })
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
    let pids = vec![child.0.id()];
    (child, Target { name: "garage", endpoint, access, secret, create_bucket: false, meta: None, pids })
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

/// A one-node Ceph RGW made by `scripts/ceph-rgw.sh` in `dir` (outside the repository),
/// stopped when dropped.
struct Ceph(PathBuf);

impl Drop for Ceph {
    fn drop(&mut self) {
        let _ = Command::new(ceph_script()).arg("stop").arg(&self.0).status();
    }
}

fn ceph_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ceph-rgw.sh")
}

fn start_ceph(dir: &Path) -> (Ceph, Target) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(ceph_script()).arg("start").arg(dir).arg(port.to_string()).output().unwrap();
    let guard = Ceph(dir.to_path_buf());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ceph-rgw.sh start: {}{}", text, String::from_utf8_lossy(&out.stderr));
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {name}= in ceph-rgw.sh's output:\n{text}"))
            .trim()
            .to_string()
    };
    let pids = field("pids").split_whitespace().map(|p| p.parse().unwrap()).collect();
    let t = Target {
        name: "ceph",
        endpoint: field("endpoint"),
        access: field("access"),
        secret: field("secret"),
        create_bucket: true,
        meta: None,
        pids,
    };
    (guard, t)
}

/// Bytes free to an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: `path` is a valid C string and `st` a valid out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0, "statvfs {}", dir.display());
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Each system in turn on the same disk with the same generator: the peers (Ceph RGW and
/// Garage, each writing every byte once), then Strata standalone as replica:1 (like for
/// like), replica:3 and ec:4+2. Prints the machine's limits, then every case of every
/// system; Strata's lines carry the ratio to the peer the case names.
fn side_by_side(secs: f64) {
    let list_keys: u64 = std::env::var("STRATA_BENCH_LIST_KEYS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let only: Option<Vec<String>> =
        std::env::var("STRATA_BENCH_SYSTEMS").ok().map(|s| s.split(',').map(str::to_string).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|w| w == name));
    let (root, rt, seq) = setup("s3", "s3", secs);
    // The largest Strata run's device files (5 GiB per datanode) must fit, or that run
    // fails after the others took a quarter of an hour and every result is lost.
    let need_gib = [("strata", 1u64), ("strata-r3", 3), ("strata-ec4+2", 6)]
        .iter()
        .filter(|(n, _)| wanted(n))
        .map(|(_, datanodes)| datanodes * 5 + 1)
        .max()
        .unwrap_or(0);
    let free_gib = free_bytes(&root) >> 30;
    if free_gib < need_gib {
        eprintln!(
            "bench: {} has {free_gib} GiB free; the Strata runs need {need_gib} GiB (5 GiB device files): free some \
             space or choose fewer systems with STRATA_BENCH_SYSTEMS",
            root.display()
        );
        std::process::exit(2);
    }
    let read = baseline::device_seq_read(&root, secs.min(5.0));
    let sync = baseline::device_fdatasync_4k(&root, secs.min(3.0));
    let mem = baseline::memcpy_gbps(secs.min(2.0));
    let lo = baseline::loopback_tcp(secs.min(2.0));
    emit(json!({"suite": "s3", "case": "device_seq_read", "value": read, "unit": "MB/s"}));
    emit(json!({"suite": "s3", "case": "device_fdatasync_4k", "value": sync, "unit": "ops/s"}));
    emit(json!({"suite": "s3", "case": "memcpy", "value": mem, "unit": "GB/s"}));
    emit(json!({"suite": "s3", "case": "loopback_tcp", "value": lo, "unit": "MB/s"}));

    let mut all: Vec<(&str, Results)> = Vec::new();
    if wanted("ceph") {
        if Command::new("radosgw").arg("--version").output().is_ok() {
            let (guard, t) = start_ceph(&root.join("ceph"));
            all.push(("ceph", rt.block_on(run(Arc::new(t), secs, list_keys))));
            drop(guard);
        } else {
            eprintln!("radosgw is not installed: no Ceph RGW (scripts/bench.sh s3 installs it)");
        }
        let _ = std::fs::remove_dir_all(root.join("ceph"));
    }
    if wanted("garage") {
        if let Some(bin) = std::env::var_os("GARAGE_BIN").map(PathBuf::from) {
            let (child, t) = start_garage(&bin, &root.join("garage"));
            all.push(("garage", rt.block_on(run(Arc::new(t), secs, list_keys))));
            drop(child);
        } else {
            eprintln!("GARAGE_BIN is not set: no Garage (scripts/bench.sh s3 installs it)");
        }
        let _ = std::fs::remove_dir_all(root.join("garage"));
    }
    let stratas: [(&str, &[&str]); 3] = [
        ("strata", &["--policy", "replica:1"]),
        ("strata-r3", &["--policy", "replica:3"]),
        ("strata-ec4+2", &["--datanodes", "6", "--policy", "ec:4+2"]),
    ];
    for (name, args) in stratas {
        if !wanted(name) {
            continue;
        }
        let dir = root.join(name);
        let (child, mut t) = start_strata(&dir, &[&["--device-size", "5G"][..], args].concat());
        t.name = name;
        all.push((name, rt.block_on(run(Arc::new(t), secs, list_keys))));
        drop(child);
        let _ = std::fs::remove_dir_all(&dir);
    }

    let get = |sys: &str, case: &str| all.iter().find(|(n, _)| *n == sys).and_then(|(_, r)| r.get(case).copied());
    for &(case, unit, higher, vs, target) in CASES {
        // The peer a Strata line is compared with: the named one, or the better of the two.
        let peer =
            match vs {
                Vs::Ceph => get("ceph", case).map(|v| ("ceph", v)),
                Vs::Best => ["ceph", "garage"]
                    .into_iter()
                    .filter_map(|p| get(p, case).map(|v| (p, v)))
                    .reduce(|a, b| if (b.1 > a.1) == higher { b } else { a }),
            };
        for (sys, res) in &all {
            let v = res[case];
            let name = if *sys == "strata" { case.to_string() } else { format!("{sys}/{case}") };
            let mut o = json!({"suite": "s3", "case": name, "value": v, "unit": unit});
            let ratio = |p: f64| if higher { v / p } else { p / v };
            if sys.starts_with("strata") {
                if let Some((p, pv)) = peer {
                    o["baseline"] = json!(p);
                    o["baseline_value"] = json!(pv);
                    o["ratio"] = json!(ratio(pv));
                    if *sys == "strata" {
                        if let Some(t) = target {
                            o["target"] = json!(t);
                        }
                    }
                }
            }
            // ec:4+2 writes 1.5 bytes for each byte replica:3 writes 3 of.
            if *sys == "strata-ec4+2" && case.starts_with("put_") && case.ends_with("m_c16") {
                if let Some(r3) = get("strata-r3", case) {
                    o["baseline"] = json!("strata-r3");
                    o["baseline_value"] = json!(r3);
                    o["ratio"] = json!(ratio(r3));
                    o["target"] = json!(1.8);
                }
            }
            if case == "put_64m_c16" {
                // Each system's ceiling: the device's bandwidth over the bytes it writes
                // for each byte sent.
                let copies = match *sys {
                    "strata-r3" => 3.0,
                    "strata-ec4+2" => 1.5,
                    _ => 1.0,
                };
                o["device_seq_write_over_copies"] = json!(seq / copies);
                o["ratio_to_device"] = json!(v / (seq / copies));
            }
            if sys.starts_with("strata") && case == "get_64m_c16" {
                o["device_seq_read"] = json!(read);
                o["ratio_to_device"] = json!(v / read);
                o["target_to_device"] = json!(0.9);
            }
            emit(o);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn main() {
    let secs: f64 = std::env::var("STRATA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    match std::env::var("STRATA_BENCH_S3_MODE").as_deref() {
        Ok("ec") => ec_compare(secs),
        Ok("gc") => gc::bench(secs),
        _ => side_by_side(secs),
    }
}
