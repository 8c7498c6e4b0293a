//! What the tests of real processes share: the binaries, the Python clients, an
//! `ogw standalone` started and read from, the admin CLI, and the Python suites.
#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn gc_bin() -> PathBuf {
    env!("CARGO_BIN_EXE_gc").into()
}

pub fn ogw_bin() -> PathBuf {
    env!("CARGO_BIN_EXE_ogw").into()
}

pub fn home_cache(rel: &str) -> PathBuf {
    Path::new(&std::env::var("HOME").unwrap()).join(".cache/strata").join(rel)
}

pub fn python() -> PathBuf {
    std::env::var_os("STRATA_PYTHON").map(PathBuf::from).unwrap_or_else(|| home_cache("venv/bin/python"))
}

pub fn awscli_v1() -> PathBuf {
    std::env::var_os("STRATA_AWSCLI1").map(PathBuf::from).unwrap_or_else(|| home_cache("venv-awscli1/bin/aws"))
}

pub fn suite(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(name)
}

/// A running `ogw standalone` and what it printed.
pub struct Standalone {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    /// What the banner says the device files hold.
    pub capacity: String,
    /// The admin listener, `http://HOST:PORT`.
    pub admin: String,
    pub access: String,
    pub secret: String,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Standalone {
    pub fn start() -> Standalone {
        Standalone::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// Starts (or restarts) on the data under `dir`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Standalone {
        // The test's own plain reqwest clients need a rustls provider installed.
        proto::tls::install_provider();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("ogw.log")).unwrap();
        let mut child = Command::new(ogw_bin())
            .args(["standalone", "--s3-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--no-zero-fill", "--data"])
            .arg(dir.path().join("data"))
            .args(if extra.contains(&"--device-size") { &[][..] } else { &["--device-size", "512M"][..] })
            .args(extra)
            .env("RUST_LOG", "info,openraft=warn")
            .env_remove("STRATA_ACCESS_KEY")
            .env_remove("STRATA_SECRET_KEY")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let get = |prefix: &str| loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(l) => {
                    if let Some(v) = l.strip_prefix(prefix) {
                        return v.trim().to_string();
                    }
                }
                Err(_) => {
                    let log = std::fs::read_to_string(dir.path().join("ogw.log")).unwrap_or_default();
                    panic!("ogw standalone did not print {prefix:?}; its log:\n{log}");
                }
            }
        };
        let endpoint = get("S3 endpoint:");
        let capacity = get("Capacity:");
        let admin = get("Admin:").split_whitespace().next().unwrap().to_string();
        let access = get("Access key:");
        let secret = get("Secret key:");
        Standalone { child, dir, endpoint, capacity, admin, access, secret }
    }

    /// The bearer token its `/metrics` asks for.
    pub fn metrics_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/metrics-token")).unwrap().trim().to_string()
    }

    /// An AWS SDK client with its credentials, path style.
    pub fn sdk(&self) -> aws_sdk_s3::Client {
        sdk_at(&self.endpoint, &self.access, &self.secret)
    }

    pub fn db_args(&self) -> Vec<String> {
        let data = self.dir.path().join("data");
        vec![
            "--db".into(),
            format!("sqlite://{}", data.join("ogw.db").display()),
            "--master-key".into(),
            data.join("master.key").display().to_string(),
        ]
    }
}

/// An AWS SDK client for `endpoint` with these credentials, path style.
pub fn sdk_at(endpoint: &str, access: &str, secret: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{Credentials, Region};
    let conf = aws_sdk_s3::Config::builder()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access, secret, None, None, "test"))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Runs the admin CLI; returns its stdout.
pub fn admin(args: &[String]) -> String {
    let out = Command::new(ogw_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "ogw {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A master key and a SQLite database under `dir` for gateways of a cluster: the flags
/// (`--db`, `--master-key`) that `serve` and the admin commands take.
pub fn sqlite_db(dir: &Path) -> Vec<String> {
    let key = dir.join("master.key");
    admin(&["master-key-create".into(), key.display().to_string()]);
    vec![
        "--db".to_string(),
        format!("sqlite://{}", dir.join("ogw.db").display()),
        "--master-key".into(),
        key.display().to_string(),
    ]
}

/// A second tenant with its own key: (access, secret).
pub fn other_tenant(db: &[String], name: &str) -> (String, String) {
    admin(&[&["tenant-create".to_string()][..], db, &[name.to_string()]].concat());
    let out = admin(&[&["key-create".to_string()][..], db, &[name.to_string()]].concat());
    let mut it = out.split_whitespace();
    (it.next().unwrap().to_string(), it.next().unwrap().to_string())
}

/// Runs a Python suite of `tests/clients/` and checks that it printed `passed`; on
/// failure the message ends with the last lines of the gateway's log (`log`), which say
/// why the server answered as it did.
pub fn run_python_suite(name: &str, args: &[&str], passed: &str, log: &Path) {
    run_python_suite_env(name, args, &[], passed, log)
}

/// As [`run_python_suite`], with environment variables (e.g. `AWS_CA_BUNDLE`).
pub fn run_python_suite_env(name: &str, args: &[&str], env: &[(&str, &str)], passed: &str, log: &Path) {
    let py = python();
    let out = Command::new(&py)
        .arg(suite(name))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", py.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{name} failed:\n{text}\n--- gateway log (last 40 lines) ---\n{}", tail.join("\n"));
    }
    assert!(text.contains(passed), "{text}");
}

/// Polls `cond` (a check that runs a process, so not too often) until it holds or
/// `within` has passed; whether it held.
pub fn poll_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The datanodes holding copies (sorted, once each), once every extent is sealed (the
/// gateway's idle writers seal theirs).
pub async fn holders_once_sealed(meta: &client::MetaClient, within: Duration) -> Vec<proto::NodeId> {
    testkit::wait_for("every extent sealed", within, || async {
        let mut holding = Vec::new();
        for st in meta.streams().await.ok()? {
            for e in meta.stream(st.id).await.ok()?.extents {
                e.sealed_len?;
                holding.extend(e.replicas.iter().map(|r| r.node));
            }
        }
        holding.sort_unstable();
        holding.dedup();
        Some(holding)
    })
    .await
}

/// Waits until the metanode has seen `lost` down and replaced every copy it held, then
/// checks that no extent names a datanode of `dead`.
pub async fn wait_repaired(meta: &client::MetaClient, lost: proto::NodeId, dead: &[proto::NodeId]) {
    testkit::wait_for("the loss repaired", Duration::from_secs(120), || async {
        let r = meta.repairs().await.ok()?;
        let down = r.down_ms.iter().any(|(n, _)| *n == lost);
        (down && r.degraded.is_empty() && r.waiting == 0 && r.in_flight.is_empty()).then_some(())
    })
    .await;
    for st in meta.streams().await.unwrap() {
        for e in meta.stream(st.id).await.unwrap().extents {
            assert!(e.replicas.iter().all(|r| !dead.contains(&r.node)), "extent {} on a dead datanode", e.id);
        }
    }
}
