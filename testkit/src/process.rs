//! Real processes of the workspace's binaries: started with their stderr in a log file,
//! waited for by the "listening on ADDR" line every server prints on stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
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

pub fn spawn_listening_env(bin: &Path, args: &[String], log: &Path, envs: &[(String, String)]) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info,openraft=warn")
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
