//! Real processes of the workspace's binaries: started with their stderr in a log file,
//! waited for by the "listening on ADDR" line every server prints on stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};

use proto::auth::{Keyring, Role, SECRETS_FILE_ENV};
use std::time::Duration;

/// How long a process may take to print its "listening on" line: a datanode formats
/// its device first, which on a loaded machine takes a while.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Spawns `bin` with `args`, waits for its "listening on" line and returns the child
/// and the address it printed. Its stderr goes to `log`.
pub fn spawn_listening(bin: &Path, args: &[String], log: &Path) -> (Child, String) {
    spawn_listening_env(bin, args, log, &[])
}

/// As [`spawn_listening`], with environment variables (after the test secrets', so
/// they can replace them).
pub fn spawn_listening_env(bin: &Path, args: &[String], log: &Path, envs: &[(String, String)]) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info,openraft=warn")
        .envs(secrets_env())
        .envs(tls_env())
        .envs(envs.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.split("listening on ").nth(1) {
                let _ = tx.send(a.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(a) => (child, a),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not start; its log:\n{}", bin.display(), std::fs::read_to_string(log).unwrap_or_default());
        }
    }
}

/// The cluster secrets every process the tests start is given (one file per machine
/// and user, made by the first test that needs it). The first call also makes this
/// process present the admin secret ([`proto::auth::set_default`]), which reaches
/// every endpoint but Raft's.
pub fn secrets() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    // This process's plain reqwest clients need a rustls provider installed.
    proto::tls::install_provider();
    PATH.get_or_init(|| {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let path = std::env::temp_dir().join(format!("strata-test-{uid}-v2.secrets"));
        if !path.exists() {
            // Made aside and linked into place: of racing test processes, one file wins
            // and every process reads that one.
            let aside = path.with_extension(format!("{}.new", std::process::id()));
            let _ = std::fs::remove_file(&aside);
            Keyring::generate().write_new(&aside).expect("write the test secrets");
            let _ = std::fs::hard_link(&aside, &path);
            let _ = std::fs::remove_file(&aside);
        }
        let k = Keyring::load(&path).unwrap_or_else(|e| panic!("test secrets: {e}"));
        proto::auth::set_default(k.credential(Role::Admin));
        path
    })
}

/// The environment that gives a process the test secrets ([`secrets`]).
pub fn secrets_env() -> [(String, String); 1] {
    [(SECRETS_FILE_ENV.to_string(), secrets().display().to_string())]
}

/// A child process killed (and reaped) when this is dropped, so a failing or finished
/// test leaves no server running.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and a certificate it signs for `127.0.0.1` and `localhost`, made once per
/// machine and user.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

static TLS: OnceLock<TlsFiles> = OnceLock::new();

/// Runs this test's cluster links over TLS: every process started from now on serves
/// TLS (metanodes, datanodes) and trusts only the test CA on its links, and so does
/// this process (call it before its first link).
pub fn tls_links() -> &'static TlsFiles {
    proto::tls::install_provider();
    TLS.get_or_init(|| {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::temp_dir().join(format!("strata-test-{uid}-tls"));
        if !dir.join("ca.pem").exists() {
            // Made aside and renamed into place: of racing test processes, one
            // directory wins and every process reads that one.
            let aside = dir.with_extension(format!("{}.new", std::process::id()));
            let _ = std::fs::remove_dir_all(&aside);
            proto::tls::self_signed(&aside, &["127.0.0.1".into(), "localhost".into()]).expect("make the test CA");
            if std::fs::rename(&aside, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&aside);
            }
        }
        let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        proto::tls::set_client_ca(Some(&files.ca)).expect("tls_links is called before this process's first link");
        files
    })
}

/// The environment of a process started by a test that called [`tls_links`] (empty
/// otherwise).
pub fn tls_env() -> Vec<(String, String)> {
    let Some(t) = TLS.get() else { return Vec::new() };
    [(proto::tls::CA_ENV, &t.ca), (proto::tls::CERT_ENV, &t.cert), (proto::tls::KEY_ENV, &t.key)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect()
}

/// The last `n` lines of a log file (for the message of a failing test).
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A binary of the workspace in the profile directory this test or benchmark runs
/// from (`target/<profile>/deps/<exe>` -> `target/<profile>/<name>`). Tests of the whole
/// workspace (`cargo nextest run --workspace`) build every binary first.
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests of the whole workspace (cargo nextest run --workspace), which builds it",
        p.display()
    );
    p
}

pub fn metanode_bin() -> PathBuf {
    sibling_bin("metanode")
}

pub fn datanode_bin() -> PathBuf {
    sibling_bin("datanode")
}
