//! Starts the real `datanode` binary on a loopback port over files in a temp dir.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use client::DataNodeClient;

pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    args: Vec<String>,
    starts: u32,
}

/// Two 64 MiB devices with 1 MiB clusters.
pub fn default_args(dir: &Path) -> Vec<String> {
    device_args(dir, &[("dev0.img", "64M"), ("dev1.img", "64M")])
}

/// Whether the tests run against the SPDK backend (`STRATA_TEST_BACKEND=spdk`, on AIO
/// bdevs, or `spdk-uring`, on io_uring bdevs).
pub fn spdk_backend() -> bool {
    spdk_bdev_flag().is_some()
}

fn spdk_bdev_flag() -> Option<&'static str> {
    match std::env::var("STRATA_TEST_BACKEND").as_deref() {
        Ok("spdk") => Some("--spdk-aio"),
        Ok("spdk-uring") => Some("--spdk-uring"),
        _ => None,
    }
}

/// Devices as files under `dir` for the backend under test: the portable one, or
/// SPDK's (AIO or io_uring bdevs over the same files) when `STRATA_TEST_BACKEND` says
/// so and the datanode was built with `--features spdk`.
pub fn device_args(dir: &Path, devices: &[(&str, &str)]) -> Vec<String> {
    let spdk = spdk_bdev_flag();
    let mut args: Vec<String> = if spdk.is_some() { vec!["--backend".into(), "spdk".into()] } else { Vec::new() };
    for (name, size) in devices {
        args.push(spdk.unwrap_or("--device").into());
        args.push(format!("{}:{size}", dir.join(name).display()));
    }
    args
}

impl Node {
    pub fn start(dir: &Path, args: Vec<String>) -> Node {
        let mut n = Node { child: None, addr: "127.0.0.1:0".parse().unwrap(), dir: dir.to_owned(), args, starts: 0 };
        n.spawn();
        n
    }

    /// Starts the binary and waits for its "listening on" line.
    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("datanode-{}.log", self.starts));
        let mut args = self.args.clone();
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        let (child, addr) = testkit::spawn_listening(Path::new(env!("CARGO_BIN_EXE_datanode")), &args, &log);
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then waits (up to `within`) for the process to exit; returns its status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: plain syscall on our child's pid.
        assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGTERM) }, 0);
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                panic!("datanode did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the process again (after `kill9` or `terminate`).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The running process's resident memory, bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
        kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() << 10
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("datanode-{}.log", self.starts))).unwrap_or_default()
    }

    pub async fn client(&self) -> DataNodeClient {
        DataNodeClient::connect(self.addr).await.expect("connect")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Deterministic bytes for (extent, generation, offset): what a writer sent is
/// reproducible from its record alone.
pub fn content(extent: u64, gen: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut x =
        extent.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ gen.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ offset.rotate_left(17)
            | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
