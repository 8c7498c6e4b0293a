//! `strata`: the cluster's status on one screen (`strata status`), a small
//! command-line client for a datanode's extent API, and a demo of a replicated stream
//! through the metanode.

mod status;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use client::{DataNodeClient, MetaClient};
use proto::meta::StreamId;
use proto::msg::ANY_DEVICE;
use proto::{Epoch, ExtentId};

#[derive(Parser)]
#[command(name = "strata", about = "Show a Strata cluster's status; talk to its datanodes and LogStreams")]
struct Cli {
    /// Datanode address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    datanode: String,
    /// Metanode addresses (for `status`, `stream` and `demo-stream`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7100")]
    meta: Vec<String>,
    /// The cluster secrets file (default: $STRATA_SECRETS_FILE, else
    /// $STRATA_CLIENT_SECRET): `strata` presents the client secret.
    #[arg(long)]
    secrets: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole cluster on one screen: health, metanodes, datanodes, extents, repair,
    /// and with --admin (or --data) GC and S3 request rates. Exits 2 when the health is
    /// `error`.
    Status {
        /// A gateway's or GC's admin listener (http://HOST:PORT), for S3 rates and GC
        /// progress; repeatable. Its metrics token comes from STRATA_METRICS_TOKEN.
        #[arg(long)]
        admin: Vec<String>,
        /// An `ogw standalone` data directory: its metanode, secrets, admin listener and
        /// metrics token are read from there.
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an extent.
    Create {
        extent: ExtentId,
        #[arg(long, default_value_t = Epoch(1))]
        epoch: Epoch,
    },
    /// Append TEXT at OFFSET.
    Append {
        extent: ExtentId,
        offset: u64,
        text: String,
        #[arg(long, default_value_t = Epoch(1))]
        epoch: Epoch,
    },
    /// Read LEN bytes at OFFSET and print them.
    Read {
        extent: ExtentId,
        offset: u64,
        len: u32,
    },
    Seal {
        extent: ExtentId,
        length: u64,
    },
    Delete {
        extent: ExtentId,
    },
    Stat {
        extent: ExtentId,
    },
    List,
    /// Device capacity and usage.
    Node,
    /// Create an extent, append to it, read it back, seal it and show what is stored.
    Demo {
        #[arg(long, default_value_t = ExtentId(1))]
        extent: ExtentId,
    },
    /// Through the metanode: a replica:3 stream, one extent on three datanodes, appends
    /// to every replica, then a second writer that fences the first and seals.
    DemoStream,
    /// LogStreams through the metanode (replicated by this client).
    #[command(subcommand)]
    Stream(StreamCmd),
}

#[derive(Subcommand)]
enum StreamCmd {
    /// Create a stream; prints its id.
    Create {
        #[arg(long, default_value = "replica:3")]
        policy: String,
    },
    /// Open STREAM for writing and append standard input in chunks of --chunk bytes;
    /// prints one line per acknowledged slice: EXTENT OFFSET LEN CRC.
    Put {
        stream: StreamId,
        #[arg(long, default_value_t = 1 << 20)]
        chunk: usize,
        #[arg(long, default_value = "strata-cli")]
        writer: String,
    },
    /// Read a slice (as printed by put) to standard output, CRC-checked.
    Get { extent: ExtentId, offset: u64, len: u32, crc: u32 },
    /// Show a stream with its extents and their replicas.
    Stat { stream: StreamId },
    /// List streams: ID POLICY EPOCH EXTENTS.
    List,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = proto::config::parse(proto::config::Style { commands: &[], no_env: &[], file: false });
    if let Cmd::Status { admin, data, json } = cli.cmd {
        return status_cmd(cli.meta, admin, data, cli.secrets, json).await;
    }
    client::present_client_secret("strata", cli.secrets.as_deref())?;
    match cli.cmd {
        Cmd::DemoStream => return demo_stream(&MetaClient::new(cli.meta)).await,
        Cmd::Stream(c) => return stream_cmd(MetaClient::new(cli.meta), c).await,
        _ => {}
    }
    let c = DataNodeClient::connect(&cli.datanode).await.with_context(|| format!("datanode {}", cli.datanode))?;
    match cli.cmd {
        Cmd::Create { extent, epoch } => c.create(extent, epoch, ANY_DEVICE).await?,
        Cmd::Append { extent, offset, text, epoch } => {
            println!("length {}", c.append(extent, offset, epoch, Bytes::from(text)).await?)
        }
        Cmd::Read { extent, offset, len } => {
            println!("{}", String::from_utf8_lossy(&c.read(extent, offset, len).await?))
        }
        Cmd::Seal { extent, length } => c.seal(extent, length).await?,
        Cmd::Delete { extent } => c.delete(extent).await?,
        Cmd::Stat { extent } => println!("{:?}", c.stat(extent).await?),
        Cmd::List => c.list().await?.iter().for_each(|s| println!("{s:?}")),
        Cmd::Node => println!("{:?}", c.node_stat().await?),
        Cmd::Demo { extent } => demo(&c, extent).await?,
        Cmd::Status { .. } | Cmd::DemoStream | Cmd::Stream(_) => unreachable!("handled above"),
    }
    Ok(())
}

async fn status_cmd(
    mut meta: Vec<String>,
    mut admin: Vec<String>,
    data: Option<std::path::PathBuf>,
    secrets: Option<std::path::PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let mut metrics_token = std::env::var("STRATA_METRICS_TOKEN").ok().filter(|t| !t.is_empty());
    if let Some(d) = data {
        let file = d.join("endpoints.toml");
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!("cannot read {} (is {} a standalone's data directory?)", file.display(), d.display())
        })?;
        let e: Endpoints = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
        meta = vec![e.metanode];
        admin.push(e.admin);
        client::present_client_secret("strata", Some(&secrets.unwrap_or_else(|| d.join("cluster.secrets"))))?;
        if metrics_token.is_none() {
            metrics_token = std::fs::read_to_string(d.join("metrics-token")).ok().map(|t| t.trim().to_string());
        }
    } else {
        client::present_client_secret("strata", secrets.as_deref())?;
    }
    let r = client::status::report(&client::status::Target { meta, admin, metrics_token }).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        status::print(&r);
    }
    if r.health.status == "error" {
        std::process::exit(2);
    }
    Ok(())
}

/// What `ogw standalone` writes to DATA/endpoints.toml at every start.
#[derive(serde::Deserialize)]
struct Endpoints {
    metanode: String,
    admin: String,
}

async fn demo(c: &DataNodeClient, extent: ExtentId) -> anyhow::Result<()> {
    c.create(extent, Epoch(1), ANY_DEVICE).await?;
    println!("created extent {extent}");
    let lines = ["first log line\n", "second log line\n", "third log line\n"];
    let mut off = 0;
    for l in lines {
        off = c.append(extent, off, Epoch(1), Bytes::from_static(l.as_bytes())).await?;
        println!("appended {:>2} bytes, extent length {off}", l.len());
    }
    match c.append(extent, 0, Epoch(1), Bytes::from_static(b"late")).await {
        Err(e) => println!("an append at a stale offset is refused: {e}"),
        Ok(_) => bail!("stale append was accepted"),
    }
    let all = c.read(extent, 0, off as u32).await?;
    anyhow::ensure!(all == lines.concat().as_bytes(), "read back differs");
    print!("read back:\n{}", String::from_utf8_lossy(&all));
    c.seal(extent, off).await?;
    println!("sealed: {:?}", c.stat(extent).await?);
    println!("node: {:?}", c.node_stat().await?);
    Ok(())
}

async fn demo_stream(meta: &MetaClient) -> anyhow::Result<()> {
    let s = meta.create_stream("replica:3".parse().map_err(anyhow::Error::msg)?).await?;
    let v = meta.open_stream(s.id, "strata-demo").await?;
    let epoch = v.stream.epoch;
    let e = meta.allocate_extent(s.id, epoch, None).await?;
    println!("stream {} (replica:3) open at epoch {epoch}; extent {} placed on {:?}", s.id, e.id, e.replicas);
    let nodes = meta.nodes().await?;
    let mut conns = Vec::new();
    for r in &e.replicas {
        let addr = &nodes.iter().find(|n| n.id == r.node).context("replica on an unknown datanode")?.addr;
        let c = DataNodeClient::connect(addr.as_str()).await.with_context(|| format!("datanode {addr}"))?;
        c.create(e.id, epoch, r.device).await?;
        conns.push(c);
    }
    let mut off = 0u64;
    for l in ["first log line\n", "second log line\n"] {
        for c in &conns {
            c.append(e.id, off, epoch, Bytes::from_static(l.as_bytes())).await?;
        }
        off += l.len() as u64;
    }
    println!("appended {off} bytes to all three replicas");
    let v2 = meta.open_stream(s.id, "strata-demo-2").await?;
    println!(
        "a second writer opened the stream at epoch {}: extent {} sealed at {:?}",
        v2.stream.epoch, e.id, v2.extents[0].sealed_len
    );
    match conns[0].append(e.id, off, epoch, Bytes::from_static(b"late\n")).await {
        Err(err) => println!("the first writer's next append is refused: {err}"),
        Ok(_) => bail!("a fenced writer's append was accepted"),
    }
    for (c, r) in conns.iter().zip(&e.replicas) {
        let data = c.read(e.id, 0, off as u32).await?;
        println!("datanode {}: {:?}", r.node, String::from_utf8_lossy(&data));
    }
    Ok(())
}

async fn stream_cmd(meta: MetaClient, cmd: StreamCmd) -> anyhow::Result<()> {
    use std::io::{Read, Write};

    use client::{Slice, StreamClient, StreamConfig};
    let sc = StreamClient::new(meta, StreamConfig::default());
    match cmd {
        StreamCmd::Create { policy } => {
            let p = policy.parse().map_err(anyhow::Error::msg)?;
            println!("{}", sc.create_stream(p).await?.id);
        }
        StreamCmd::Put { stream, chunk, writer } => {
            if chunk == 0 || chunk > proto::APPEND_BYTES_MAX as usize {
                bail!("--chunk must be 1..={} bytes", proto::APPEND_BYTES_MAX);
            }
            let w = sc.open_writer(stream, &writer).await?;
            let mut input = std::io::stdin().lock();
            let mut out = std::io::stdout().lock();
            loop {
                // Blocking reads are fine here: this command does nothing else meanwhile.
                let mut buf = vec![0u8; chunk];
                let mut n = 0;
                while n < chunk {
                    match input.read(&mut buf[n..])? {
                        0 => break,
                        k => n += k,
                    }
                }
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                let s = w.append(Bytes::from(buf)).await?;
                writeln!(out, "{} {} {} {}", s.extent, s.offset, s.len, s.crc)?;
                out.flush()?;
            }
            w.close().await?;
        }
        StreamCmd::Get { extent, offset, len, crc } => {
            let b = sc.read(Slice { extent, offset, len, crc }).await?;
            std::io::stdout().write_all(&b)?;
        }
        StreamCmd::Stat { stream } => {
            let v = sc.meta.stream(stream).await?;
            println!(
                "stream {} {} epoch {} writer {:?}",
                v.stream.id, v.stream.policy, v.stream.epoch, v.stream.writer
            );
            for e in v.extents {
                println!("  extent {} sealed {:?} replicas {:?} bad {:?}", e.id, e.sealed_len, e.replicas, e.bad);
            }
        }
        StreamCmd::List => {
            for s in sc.list_streams().await? {
                println!("{} {} {} {}", s.id, s.policy, s.epoch, s.extents.len());
            }
        }
    }
    Ok(())
}
