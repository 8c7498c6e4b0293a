//! The cluster under test: every process in its own network namespace, started,
//! killed (-9, the whole process group), stopped and continued by the run, and
//! restarted by the supervisor when it dies on its own (which is counted and logged).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::net::Net;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Sql,
    Meta,
    Data,
    Gateway,
    Gc,
}

pub struct Proc {
    pub name: String,
    pub role: Role,
    pub ns: String,
    pub ip: String,
    program: PathBuf,
    args: Vec<String>,
    /// Extra environment (e.g. a skewed clock for a gateway); replaced per start.
    pub env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub stopped: bool,
    /// Held down by a fault (not to be restarted by the supervisor).
    pub down: bool,
    pub starts: u32,
    pub last_start: Option<Instant>,
    /// Whether it must run as the `postgres` user.
    as_postgres: bool,
}

impl Proc {
    pub fn start(&mut self) -> Result<()> {
        // Never two of it: the old one would hold its port.
        self.kill9();
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]);
        if self.as_postgres {
            c.args(["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"]);
        }
        c.arg(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group, so that kill -9 takes its children too (PostgreSQL).
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        self.child = Some(c.spawn().with_context(|| format!("starting {}", self.name))?);
        self.stopped = false;
        self.last_start = Some(Instant::now());
        Ok(())
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill has no memory effects; a negative pid names the process group.
            unsafe { libc::kill(-(c.id() as i32), sig) };
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
        self.stopped = false;
    }

    pub fn stop(&mut self) {
        self.signal(libc::SIGSTOP);
        self.stopped = true;
    }

    pub fn cont(&mut self) {
        self.signal(libc::SIGCONT);
        self.stopped = false;
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// If it exited on its own: how.
    pub fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(st)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stopped {
            self.signal(libc::SIGCONT);
        }
        self.kill9();
    }
}

/// Where the binaries are and how the cluster is shaped.
pub struct Layout {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub metas: usize,
    pub datanodes: usize,
    pub gateways: usize,
    pub device: String,
    /// Bytes of the last datanode's loop device.
    pub small_device: u64,
}

pub const META_PORT: u16 = 7100;
pub const DATA_PORT: u16 = 7200;
pub const S3_PORT: u16 = 9000;
pub const SQL_PORT: u16 = 5432;

pub struct Cluster {
    pub procs: Vec<Proc>,
    pub net: Net,
    pub secrets: PathBuf,
    pub master_key: PathBuf,
    pub db_url: String,
    pub bin: PathBuf,
    /// Loop devices to detach at the end.
    loops: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Processes first: a loop device in use would not detach.
        self.procs.clear();
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

fn pg_bin(name: &str) -> Result<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (scripts/setup.sh installs it)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .collect();
    v.sort();
    v.pop().with_context(|| format!("no {name} under /usr/lib/postgresql"))
}

fn check(out: std::process::Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!("{what}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until `addr` accepts TCP connections from the workload's side.
pub fn wait_tcp(addr: &str, within: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        if std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if t.elapsed() > within {
            bail!("{addr} did not listen within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    pub fn start(l: &Layout, mut net: Net) -> Result<Cluster> {
        std::fs::create_dir_all(&l.dir)?;
        let bin = l.bin.clone();
        let secrets = l.dir.join("cluster.secrets");
        check(Command::new(bin.join("metanode")).arg("secrets").arg(&secrets).output()?, "metanode secrets")?;
        let master_key = l.dir.join("master.key");
        check(Command::new(bin.join("ogw")).arg("master-key-create").arg(&master_key).output()?, "master key")?;
        let env = vec![("STRATA_SECRETS_FILE".to_string(), secrets.display().to_string())];
        let mut procs = Vec::new();
        let mk = |net: &mut Net, name: &str, role: Role, program: PathBuf, args: Vec<String>| -> Result<Proc> {
            let (ns, ip) = net.add(name)?;
            let args = args.into_iter().map(|a| a.replace("{ip}", &ip)).collect();
            Ok(Proc {
                name: name.to_string(),
                role,
                ns,
                ip,
                program,
                args,
                env: env.clone(),
                log: l.dir.join(format!("{name}.log")),
                child: None,
                stopped: false,
                down: false,
                starts: 0,
                last_start: None,
                as_postgres: role == Role::Sql,
            })
        };

        // PostgreSQL, the gateways' catalog.
        let pgdir = l.dir.join("pg");
        std::fs::create_dir_all(&pgdir)?;
        check(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&pgdir).output()?, "chown")?;
        check(
            Command::new("setpriv")
                .args(["--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"])
                .arg(pg_bin("initdb")?)
                .args(["-A", "trust", "-U", "strata", "-D"])
                .arg(pgdir.join("data"))
                .current_dir("/")
                .output()?,
            "initdb",
        )?;
        // Gateways, GC and the admin CLI reach it from their own namespaces.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(pgdir.join("data/pg_hba.conf"))?
            .write_all(b"host all all 10.0.0.0/8 trust\n")?;
        let pg_args = vec![
            "-D".into(),
            pgdir.join("data").display().to_string(),
            "-c".into(),
            "listen_addresses={ip}".into(),
            "-p".into(),
            SQL_PORT.to_string(),
            "-k".into(),
            pgdir.display().to_string(),
            "-c".into(),
            "max_connections=300".into(),
        ];
        let mut sql = mk(&mut net, "sql", Role::Sql, pg_bin("postgres")?, pg_args)?;
        sql.start()?;
        let db_url = format!("postgres://strata@{}:{SQL_PORT}/postgres", sql.ip);
        wait_tcp(&format!("{}:{SQL_PORT}", sql.ip), Duration::from_secs(60))?;
        procs.push(sql);

        // Metanodes: addresses are known once their namespaces exist.
        let mut metas = Vec::new();
        for i in 1..=l.metas {
            let p = mk(&mut net, &format!("m{i}"), Role::Meta, bin.join("metanode"), vec![])?;
            metas.push(p);
        }
        let meta_addrs: Vec<String> = metas.iter().map(|m| format!("{}:{META_PORT}", m.ip)).collect();
        let init = metas.iter().enumerate().map(|(i, m)| format!("{}={}:{META_PORT}", i + 1, m.ip)).collect::<Vec<_>>();
        for (i, m) in metas.iter_mut().enumerate() {
            m.args = [
                "serve",
                "--id",
                &(i + 1).to_string(),
                "--listen",
                &format!("{}:{META_PORT}", m.ip),
                "--data",
                &l.dir.join(format!("m{}", i + 1)).display().to_string(),
                "--init",
                &init.join(","),
                "--heartbeat-ms",
                "100",
                "--election-ms",
                "500-1000",
                "--node-grace-ms",
                "3000",
                "--repair-delay-ms",
                "20000",
            ]
            .map(String::from)
            .to_vec();
            m.start()?;
        }
        for a in &meta_addrs {
            wait_tcp(a, Duration::from_secs(60))?;
        }
        procs.extend(metas);
        let meta = meta_addrs.join(",");

        let mut loops = Vec::new();
        for i in 1..=l.datanodes {
            // The last datanode's device is a small loop device, which fills up.
            let device = if i == l.datanodes {
                let file = l.dir.join(format!("d{i}.loop"));
                std::fs::File::create(&file)?.set_len(l.small_device)?;
                let out = check(Command::new("losetup").args(["-f", "--show"]).arg(&file).output()?, "losetup")?;
                let dev = out.trim().to_string();
                loops.push(dev.clone());
                dev
            } else {
                format!("{}:{}", l.dir.join(format!("d{i}.img")).display(), l.device)
            };
            let args = [
                "--node-id",
                &i.to_string(),
                "--listen",
                &format!("{{ip}}:{DATA_PORT}"),
                "--device",
                &device,
                "--format",
                "--no-zero-fill",
                "--meta",
                &meta,
                "--zone",
                &format!("z{i}"),
                "--heartbeat-ms",
                "500",
                "--scrub-rate",
                "32M",
                "--scrub-interval-ms",
                "20000",
            ]
            .map(String::from)
            .to_vec();
            let mut d = mk(&mut net, &format!("d{i}"), Role::Data, bin.join("datanode"), args)?;
            d.start()?;
            procs.push(d);
        }

        let db = |cmd: &str| -> Vec<String> {
            vec![cmd.into(), "--db".into(), db_url.clone(), "--master-key".into(), master_key.display().to_string()]
        };
        for i in 1..=l.gateways {
            let args = [
                db("serve"),
                [
                    "--meta",
                    &meta,
                    "--listen",
                    &format!("{{ip}}:{S3_PORT}"),
                    "--name",
                    &format!("g{i}"),
                    "--streams",
                    "2",
                    "--extent-size",
                    "16M",
                    "--idle-seal",
                    "2s",
                    "--policy",
                    "replica:3",
                    "--ec-policy",
                    "ec:2+1",
                ]
                .map(String::from)
                .to_vec(),
            ]
            .concat();
            let g = mk(&mut net, &format!("g{i}"), Role::Gateway, bin.join("ogw"), args)?;
            procs.push(g);
        }
        let gc_args = [
            "run",
            "--db",
            &db_url,
            "--meta",
            &meta,
            "--name",
            "gc",
            "--grace",
            "5s",
            "--interval",
            "2s",
            "--compact-below",
            "50%",
            // Uploads left incomplete (their completion failed or was never sent) are
            // aborted a minute on, so that their parts' space comes back in the run.
            "--upload-age",
            "60s",
        ]
        .map(String::from)
        .to_vec();
        procs.push(mk(&mut net, "gc", Role::Gc, bin.join("gc"), gc_args)?);
        Ok(Cluster { procs, net, secrets, master_key, db_url, bin, loops })
    }

    pub fn meta_addrs(&self) -> Vec<String> {
        self.of(Role::Meta).map(|p| format!("{}:{META_PORT}", p.ip)).collect()
    }

    pub fn gateway_endpoints(&self) -> Vec<String> {
        self.of(Role::Gateway).map(|p| format!("http://{}:{S3_PORT}", p.ip)).collect()
    }

    pub fn of(&self, role: Role) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(move |p| p.role == role)
    }

    pub fn by_name(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).expect("a process of the run")
    }

    /// The admin CLI of the gateway against the catalog: `ogw CMD --db --master-key ARGS`.
    pub fn ogw_admin(&self, cmd: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin.join("ogw"))
            .arg(cmd)
            .args(["--db", &self.db_url, "--master-key"])
            .arg(&self.master_key)
            .args(args)
            .output()?;
        check(out, &format!("ogw {cmd}"))
    }

    /// Starts the processes not started yet (gateways and GC, once the metanodes have a
    /// leader and the datanodes are registered).
    pub fn start_rest(&mut self) -> Result<()> {
        for p in self.procs.iter_mut().filter(|p| p.starts == 0) {
            p.start()?;
        }
        for g in self.gateway_endpoints() {
            wait_tcp(g.trim_start_matches("http://"), Duration::from_secs(120))?;
        }
        Ok(())
    }
}
