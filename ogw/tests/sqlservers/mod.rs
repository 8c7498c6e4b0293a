//! Real PostgreSQL and MariaDB servers for tests: Debian's packages (installed by
//! `scripts/setup.sh`), each started here on a fresh data directory and a free
//! loopback port, and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/setup.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_port(port: u16, child: &mut Child, log: &Path) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the server did not listen within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (run scripts/setup.sh)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
}

/// A PostgreSQL server (run as the `postgres` user when we are root, as it requires).
pub fn postgres() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pg");
    let as_postgres = |bin: PathBuf| {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        c.current_dir("/");
        c
    };
    if is_root() {
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()));
    }
    run(as_postgres(pg_bin("initdb")).args(["-A", "trust", "-U", "strata", "-D"]).arg(&data));
    let port = free_port();
    let log = dir.path().join("pg.log");
    let mut child = as_postgres(pg_bin("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_port(port, &mut child, &log);
    Server { child, _dir: dir, url: format!("postgres://strata@127.0.0.1:{port}/postgres") }
}

/// A MariaDB server with a `strata` database (grant tables skipped: a throwaway server).
pub fn mariadb() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    run(Command::new("mariadb-install-db")
        .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"])
        .arg(format!("--datadir={}", data.display())));
    let port = free_port();
    let log = dir.path().join("mariadb.log");
    let mut child = Command::new("mariadbd")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.path().join("sock").display()))
        .arg(format!("--port={port}"))
        .args(["--bind-address=127.0.0.1", "--skip-grant-tables", "--user=root", "--innodb-flush-log-at-trx-commit=1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("mariadbd: {e} (run scripts/setup.sh)"));
    wait_port(port, &mut child, &log);
    run(Command::new("mariadb").args([
        "--no-defaults",
        "-h",
        "127.0.0.1",
        "-P",
        &port.to_string(),
        "-u",
        "root",
        "-e",
        "CREATE DATABASE strata",
    ]));
    Server { child, _dir: dir, url: format!("mysql://root@127.0.0.1:{port}/strata") }
}
