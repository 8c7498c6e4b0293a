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
