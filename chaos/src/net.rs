//! The run's network: a bridge in the root namespace (the workload's side) and one
//! network namespace per node, joined to it by a veth pair. Faults are real: nftables
//! rules inside a node's namespace drop what a partition cuts (both directions, since
//! every packet of that node passes its own rules) or a random share of packets (loss),
//! and a token bucket on the node's veth makes a slow link (this kernel has no netem, so
//! there is no fixed delay: a link slowed so queues instead).

use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct Net {
    tag: String,
    bridge: String,
    /// 10.N.0.0/24.
    net: u8,
    nodes: Vec<String>,
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("{args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Net {
    /// A bridge `{tag}br` with 10.`net`.0.1/24 (the workload's address).
    pub fn new(tag: &str, net: u8) -> Result<Net> {
        let bridge = format!("{tag}br");
        let _ = run(&["ip", "link", "del", &bridge]);
        run(&["ip", "link", "add", &bridge, "type", "bridge"]).context("creating the bridge (needs root)")?;
        run(&["ip", "addr", "add", &format!("10.{net}.0.1/24"), "dev", &bridge])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        Ok(Net { tag: tag.to_string(), bridge, net, nodes: Vec::new() })
    }

    pub fn host_ip(&self) -> String {
        format!("10.{}.0.1", self.net)
    }

    fn veth(&self, idx: usize) -> String {
        format!("{}v{idx}", self.tag)
    }

    /// A namespace for node `name`, reachable at the returned address.
    pub fn add(&mut self, name: &str) -> Result<(String, String)> {
        let idx = self.nodes.len();
        let ns = format!("{}-{name}", self.tag);
        let ip = format!("10.{}.0.{}", self.net, 10 + idx);
        let _ = run(&["ip", "netns", "del", &ns]);
        run(&["ip", "netns", "add", &ns])?;
        let (a, b) = (self.veth(idx), format!("{}p{idx}", self.tag));
        let _ = run(&["ip", "link", "del", &a]);
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        run(&["ip", "link", "set", &a, "master", &self.bridge])?;
        run(&["ip", "link", "set", &a, "up"])?;
        run(&["ip", "link", "set", &b, "netns", &ns])?;
        let inns = |args: &[&str]| run(&[&["ip", "netns", "exec", &ns][..], args].concat());
        inns(&["ip", "link", "set", &b, "name", "eth0"])?;
        inns(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        inns(&["ip", "link", "set", "eth0", "up"])?;
        inns(&["ip", "link", "set", "lo", "up"])?;
        inns(&["nft", "add", "table", "inet", "chaos"])?;
        inns(&["nft", "add chain inet chaos input { type filter hook input priority 0 ; }"])?;
        inns(&["nft", "add chain inet chaos output { type filter hook output priority 0 ; }"])?;
        self.nodes.push(ns.clone());
        Ok((ns, ip))
    }

    fn nft(&self, ns: &str, rule: &str) -> Result<()> {
        run(&["ip", "netns", "exec", ns, "nft", rule])
    }

    /// Cuts node `ns` off from `peers` (addresses), both ways.
    pub fn cut(&self, ns: &str, peers: &[String]) -> Result<()> {
        let set = peers.join(", ");
        self.nft(ns, &format!("add rule inet chaos input ip saddr {{ {set} }} drop"))?;
        self.nft(ns, &format!("add rule inet chaos output ip daddr {{ {set} }} drop"))
    }

    /// Drops `pct` % of node `ns`'s packets at random, each way.
    pub fn loss(&self, ns: &str, pct: u32) -> Result<()> {
        self.nft(
            ns,
            &format!("add rule inet chaos input ip saddr != {} numgen random mod 100 < {pct} drop", self.host_ip()),
        )?;
        self.nft(
            ns,
            &format!("add rule inet chaos output ip daddr != {} numgen random mod 100 < {pct} drop", self.host_ip()),
        )
    }

    /// Limits node `idx`'s link to `kbit` kbit/s each way, queueing up to `ms` of it.
    pub fn slow(&self, ns: &str, kbit: u32, ms: u32) -> Result<()> {
        let idx = self.nodes.iter().position(|n| n == ns).context("no such node")?;
        let (rate, latency) = (format!("{kbit}kbit"), format!("{ms}ms"));
        let tbf = |dev_cmd: &[&str]| {
            run(&[dev_cmd, &["root", "tbf", "rate", &rate, "burst", "32kb", "latency", &latency]].concat())
        };
        tbf(&["tc", "qdisc", "replace", "dev", &self.veth(idx)])?;
        tbf(&["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0"])
    }

    /// Removes every fault on node `ns`.
    pub fn heal(&self, ns: &str) -> Result<()> {
        self.nft(ns, "flush chain inet chaos input")?;
        self.nft(ns, "flush chain inet chaos output")?;
        if let Some(idx) = self.nodes.iter().position(|n| n == ns) {
            let _ = run(&["tc", "qdisc", "del", "dev", &self.veth(idx), "root"]);
            let _ = run(&["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.nodes {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}
