//! A metanode group of real processes (`Cluster`, `Member`) and datanode processes
//! registered with it (`DataNode`), on loopback ports under one temporary directory.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use client::MetaClient;
use proto::meta::{DeviceInfo, RegisterNode};
use proto::NodeId;

use crate::process::{datanode_bin, free_port, metanode_bin, spawn_listening, spawn_listening_env};
use crate::wait_for;

/// LAN-tuned Raft timing used by the tests and the benchmark.
pub const RAFT_ARGS: &[&str] = &["--heartbeat-ms", "50", "--election-ms", "300-600"];

pub struct Member {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Member {
    pub fn start(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("metanode-{}-{}.log", self.id, self.starts));
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--id".into(),
            self.id.to_string(),
            "--listen".into(),
            self.addr.clone(),
            "--data".into(),
            self.dir.join("db").display().to_string(),
        ];
        args.extend(self.args.iter().cloned());
        let (child, _) = spawn_listening_env(&metanode_bin(), &args, &log, &self.envs);
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
}

impl Cluster {
    /// `n` founding members, each with `extra` flags.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_env(n, extra, &[])
    }

    /// As `start`, with environment variables for every member.
    pub fn start_env(n: u64, extra: &[&str], envs: &[(&str, &str)]) -> Cluster {
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<(u64, String)> = (1..=n).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
        let init = addrs.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        let mut members = Vec::new();
        for (id, addr) in addrs {
            let mut args: Vec<String> = vec!["--init".into(), init.clone()];
            args.extend(RAFT_ARGS.iter().chain(extra).map(|s| s.to_string()));
            let mut m = Cluster::member(dir.path(), id, addr, args);
            m.envs = envs.clone();
            members.push(m);
        }
        for m in &mut members {
            m.start();
        }
        Cluster { dir, members }
    }

    fn member(root: &Path, id: u64, addr: String, args: Vec<String>) -> Member {
        let dir = root.join(format!("m{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        Member { id, addr, dir, child: None, starts: 0, args, envs: Vec::new() }
    }

    /// A new member that is not part of the founding set (to be added by an admin).
    pub fn add_process(&mut self, id: u64, extra: &[&str]) -> &mut Member {
        let addr = format!("127.0.0.1:{}", free_port());
        let args = RAFT_ARGS.iter().chain(extra).map(|s| s.to_string()).collect();
        let m = Cluster::member(self.dir.path(), id, addr, args);
        self.members.push(m);
        let m = self.members.last_mut().unwrap();
        m.start();
        m
    }

    /// Datanodes 1..=`n` (32 MiB devices) registered with this group, once all are up.
    pub async fn datanodes(&self, n: u64) -> Vec<DataNode> {
        let dns = (1..=n).map(|i| DataNode::start(self.dir.path(), NodeId(i), &self.addrs())).collect();
        wait_datanodes_up(&self.client(), n as usize).await;
        dns
    }

    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn client(&self) -> MetaClient {
        MetaClient::new(self.addrs())
    }

    pub fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members.iter_mut().find(|m| m.id == id).unwrap()
    }

    /// The leader every running member agrees on, once there is one.
    pub async fn leader(&self) -> u64 {
        let c = self.client();
        wait_for("an agreed leader", Duration::from_secs(30), || async {
            let mut leader = None;
            for m in self.members.iter().filter(|m| m.running()) {
                let s = c.status_of(&m.addr).await.ok()?;
                let l = s.leader?.id;
                if leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            leader
        })
        .await
    }
}

impl Drop for Cluster {
    /// On a failing test, prints the end of every member's logs (the directory goes away).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for m in &self.members {
            for n in 1..=m.starts {
                let p = m.dir.join(format!("metanode-{}-{n}.log", m.id));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("==== {} (last 40 lines)", p.display());
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Waits until the metanode group reports exactly `n` datanodes up.
pub async fn wait_datanodes_up(meta: &MetaClient, n: usize) {
    wait_for(&format!("{n} datanodes up"), Duration::from_secs(60), || async {
        let nodes = meta.nodes().await.ok()?;
        (nodes.iter().filter(|d| d.state == proto::meta::NodeState::Up).count() == n).then_some(())
    })
    .await
}

/// A datanode as the metanode sees it, without a process behind it (for tests of
/// metadata alone). Registered with one 1 TiB device.
pub fn fake_datanode(id: NodeId, zone: &str) -> RegisterNode {
    RegisterNode {
        id,
        addr: format!("127.0.0.2:{}", 20000 + id.0),
        zone: zone.into(),
        rack: String::new(),
        devices: vec![DeviceInfo { id: 0, capacity_bytes: 1 << 40, free_bytes: 1 << 40, free_slots: None }],
    }
}

/// A real datanode process with one 32 MiB device, registered with the metanodes.
pub struct DataNode {
    child: Option<Child>,
    /// Where it listens (a new port after each start).
    pub addr: String,
    args: Vec<String>,
    log: std::path::PathBuf,
}

impl DataNode {
    pub fn start(dir: &std::path::Path, id: NodeId, meta: &[String]) -> DataNode {
        DataNode::start_sized(dir, id, meta, "32M", false)
    }

    /// With a device of `size`, zero-filled when created if `zero_fill`.
    pub fn start_sized(dir: &std::path::Path, id: NodeId, meta: &[String], size: &str, zero_fill: bool) -> DataNode {
        DataNode::start_heartbeat(dir, id, meta, size, zero_fill, 100)
    }

    /// As `start_sized`, heartbeating every `heartbeat_ms` (a long period keeps the
    /// metanode's view of the device's free space stale).
    pub fn start_heartbeat(
        dir: &std::path::Path,
        id: NodeId,
        meta: &[String],
        size: &str,
        zero_fill: bool,
        heartbeat_ms: u64,
    ) -> DataNode {
        DataNode::start_with(dir, id, meta, size, zero_fill, heartbeat_ms, &[])
    }

    /// As `start_heartbeat`, with `extra` flags.
    pub fn start_with(
        dir: &std::path::Path,
        id: NodeId,
        meta: &[String],
        size: &str,
        zero_fill: bool,
        heartbeat_ms: u64,
        extra: &[&str],
    ) -> DataNode {
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--device".into(),
            format!("{}:{size}", dir.join(format!("d{id}.img")).display()),
            "--meta".into(),
            meta.join(","),
            "--heartbeat-ms".into(),
            heartbeat_ms.to_string(),
            "--zone".into(),
            format!("z{id}"),
        ];
        if !zero_fill {
            // Skip the zero-fill (it only speeds up flushes on filesystems with
            // unwritten extents).
            args.push("--no-zero-fill".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut d = DataNode { child: None, addr: String::new(), args, log: dir.join(format!("d{id}.log")) };
        d.spawn();
        d
    }

    /// A placeholder for a datanode lost for good (no process; `kill9` does nothing).
    pub fn dead() -> DataNode {
        DataNode { child: None, addr: String::new(), args: Vec::new(), log: std::path::PathBuf::new() }
    }

    pub fn spawn(&mut self) {
        let (child, addr) = spawn_listening(&datanode_bin(), &self.args, &self.log);
        self.child = Some(child);
        self.addr = addr;
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process: a stopped datanode keeps its
    /// connections open and answers nothing (a slow node, not a dead one).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(ok.success(), "kill -{signal} {pid}");
    }
}

impl Drop for DataNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Awaits appends submitted together, checking that each landed after the one before
/// (in stream order), and records each acknowledged slice with its bytes in `acked`.
pub async fn collect_in_order<F>(futs: Vec<(F, bytes::Bytes)>, acked: &mut Vec<(client::Slice, bytes::Bytes)>)
where
    F: std::future::Future<Output = Result<client::Slice, client::StreamError>>,
{
    let mut prev = acked.last().map(|(s, _)| *s);
    for (f, data) in futs {
        let s = f.await.unwrap();
        if let Some(p) = prev {
            assert!((s.extent, s.offset) > (p.extent, p.offset), "{s:?} landed before {p:?}");
        }
        prev = Some(s);
        acked.push((s, data));
    }
}

/// A raw HTTP request to the metanode at `addr`, signed with this process's credential
/// (the admin secret of [`crate::secrets`]), for tests of what `MetaClient` never sends.
pub fn signed(http: &reqwest::Client, method: &str, addr: &str, path: &str, body: &str) -> reqwest::RequestBuilder {
    crate::secrets();
    let cred = proto::auth::default_credential().expect("the test secrets are installed");
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    http.request(m, format!("http://{addr}{path}"))
        .header("authorization", proto::auth::sign_http(&cred, method, path, body.as_bytes()))
        .body(body.to_owned())
}
