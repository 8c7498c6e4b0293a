//! Crash loop: concurrent pipelined appends to a real datanode, SIGKILL at a random
//! moment, restart, and check that every acknowledged byte is there and intact, that
//! each extent ends exactly on the end of an append that was sent (no torn append is
//! served), and that sealed lengths hold. Writers then continue on the same extents, so
//! later runs write over the torn tails earlier runs left.
//!
//! Replays from a seed: STRATA_CRASH_SEED=<n> (printed), STRATA_CRASH_RUNS=<n>.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use client::{ClientError, DataNodeClient};
use common::{content, Node};
use parking_lot::Mutex;
use proto::msg::ANY_DEVICE;
use proto::{Epoch, ExtentError, ExtentId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

const WRITERS: usize = 4;
const PIPELINE_DEPTH: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Seg {
    start: u64,
    len: u64,
    gen: u64,
}

#[derive(Debug, Default)]
struct Model {
    extent: u64,
    /// Every append sent, in order; those past `acked` may or may not have landed.
    segs: Vec<Seg>,
    acked: u64,
    sealed: Option<u64>,
    /// A seal was sent but its answer not seen.
    seal_sent: Option<u64>,
    deleted: bool,
    delete_sent: bool,
}

fn payload_len(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..100) {
        0..=29 => rng.gen_range(1..100),
        30..=69 => rng.gen_range(100..8192),
        70..=94 => rng.gen_range(8192..256 << 10),
        _ => rng.gen_range(256 << 10..1 << 20),
    }
}

async fn verify(c: &DataNodeClient, m: &mut Model, seed: u64) {
    let e = m.extent;
    let ctx = format!("seed {seed}, extent {e}");
    if m.deleted || m.delete_sent {
        match c.stat(ExtentId(e)).await {
            Err(ClientError::Extent(ExtentError::NotFound { .. })) => {
                m.deleted = true;
                return;
            }
            Ok(_) if !m.deleted => m.delete_sent = false, // the delete never landed
            other => panic!("{ctx}: deleted extent answers {other:?}"),
        }
    }
    let s = c.stat(ExtentId(e)).await.unwrap_or_else(|err| panic!("{ctx}: stat {err}"));
    let len = s.length;
    assert!(len >= m.acked, "{ctx}: length {len} lost acknowledged bytes (acked {})", m.acked);
    assert!(
        len == 0 || m.segs.iter().any(|g| g.start + g.len == len),
        "{ctx}: length {len} is not the end of any append sent: a torn append is served"
    );
    match (m.sealed, m.seal_sent, s.sealed) {
        (Some(l), _, true) => assert_eq!(len, l, "{ctx}: sealed length moved"),
        (Some(_), _, false) => panic!("{ctx}: a sealed extent came back open"),
        (None, Some(l), true) => {
            assert_eq!(len, l, "{ctx}: sealed at a length never asked for");
            m.sealed = Some(l);
        }
        (None, _, true) => panic!("{ctx}: sealed without a seal"),
        (None, _, false) => m.seal_sent = None,
    }
    m.segs.retain(|g| g.start + g.len <= len);
    m.acked = len;
    let mut off = 0;
    for g in &m.segs {
        assert_eq!(g.start, off);
        off += g.len;
    }
    assert_eq!(off, len);
    // Read everything back in chunks that straddle append boundaries.
    let mut want = Vec::with_capacity(len as usize);
    for g in &m.segs {
        want.extend_from_slice(&content(e, g.gen, g.start, g.len as usize));
    }
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(3 << 20) as u32;
        let got = c.read(ExtentId(e), pos, n).await.unwrap_or_else(|err| panic!("{ctx}: read {pos}+{n}: {err}"));
        assert!(got[..] == want[pos as usize..(pos + n as u64) as usize], "{ctx}: bytes differ in {pos}+{n}");
        pos += n as u64;
    }
}

/// Appends to one extent until the connection dies; maybe seals it on the way.
async fn writer(
    c: DataNodeClient,
    model: Arc<Mutex<Vec<Model>>>,
    i: usize,
    gen: u64,
    seed: u64,
    acks: watch::Sender<u64>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (extent, mut off) = {
        let m = &model.lock()[i];
        (m.extent, m.segs.last().map_or(0, |g| g.start + g.len))
    };
    let seal_after = if rng.gen_bool(0.15) { Some(rng.gen_range(1..60)) } else { None };
    let mut inflight: VecDeque<(u64, _)> = VecDeque::new();
    let mut sent = 0;
    loop {
        while inflight.len() < PIPELINE_DEPTH && seal_after.is_none_or(|n| sent < n) {
            let len = payload_len(&mut rng);
            model.lock()[i].segs.push(Seg { start: off, len: len as u64, gen });
            let p = Bytes::from(content(extent, gen, off, len));
            inflight.push_back((
                off + len as u64,
                c.submit(DataNodeClient::append_request(ExtentId(extent), off, Epoch(gen), p)),
            ));
            off += len as u64;
            sent += 1;
        }
        let Some((end, f)) = inflight.pop_front() else { break };
        match f.await {
            Ok(r) => {
                assert_eq!(client::conn::appended(r).unwrap(), end);
                let mut m = model.lock();
                m[i].acked = m[i].acked.max(end);
                drop(m);
                acks.send_modify(|n| *n += 1);
            }
            Err(ClientError::Connection(_)) => return,
            Err(e) => panic!("seed {seed}: extent {extent}: append refused: {e}"),
        }
    }
    // Everything sent is acknowledged: seal at the end.
    model.lock()[i].seal_sent = Some(off);
    match c.seal(ExtentId(extent), off).await {
        Ok(()) => model.lock()[i].sealed = Some(off),
        Err(ClientError::Connection(_)) => {}
        Err(e) => panic!("seed {seed}: seal {extent} at {off}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_appends_never_loses_an_acknowledged_byte() {
    let seed: u64 = std::env::var("STRATA_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let runs: u64 = std::env::var("STRATA_CRASH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    println!("crash loop: seed {seed}, {runs} runs (replay with STRATA_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let args = common::device_args(dir.path(), &[("dev0.img", "256M"), ("dev1.img", "256M")]);
    let mut node = Node::start(dir.path(), args);
    let model: Arc<Mutex<Vec<Model>>> = Arc::new(Mutex::new(Vec::new()));
    let mut next_extent = 1u64;
    let (mut acked_total, mut bytes_checked) = (0u64, 0u64);
    for run in 0..runs {
        let c = node.client().await;
        // Check everything earlier runs were told.
        let mut ms = std::mem::take(&mut *model.lock());
        for m in ms.iter_mut() {
            verify(&c, m, seed).await;
            bytes_checked += m.acked;
        }
        // Sometimes delete a sealed extent (the answer may be cut off by the kill).
        if let Some(m) = ms.iter_mut().find(|m| m.sealed.is_some() && !m.deleted && !m.delete_sent) {
            if rng.gen_bool(0.3) {
                m.delete_sent = true;
                c.delete(ExtentId(m.extent)).await.unwrap();
                m.deleted = true;
            }
        }
        // Writers continue up to WRITERS open extents, creating new ones as needed.
        let mut chosen: Vec<usize> = (0..ms.len())
            .filter(|&i| ms[i].sealed.is_none() && ms[i].seal_sent.is_none() && !ms[i].deleted && !ms[i].delete_sent)
            .collect();
        chosen.truncate(WRITERS);
        while chosen.len() < WRITERS {
            c.create(ExtentId(next_extent), Epoch(0), ANY_DEVICE).await.unwrap();
            ms.push(Model { extent: next_extent, ..Default::default() });
            chosen.push(ms.len() - 1);
            next_extent += 1;
        }
        *model.lock() = ms;
        let (acks, mut acks_rx) = watch::channel(0u64);
        let gen = run + 1; // a new epoch and new content every run
        let mut tasks = tokio::task::JoinSet::new();
        for &i in &chosen {
            let c = node.client().await;
            let (m, s, a) = (model.clone(), rng.gen(), acks.clone());
            tasks.spawn(writer(c, m, i, gen, s, a));
        }
        // Kill at a random point: after a random number of acknowledgements.
        let kill_after: u64 = if rng.gen_bool(0.1) { 0 } else { rng.gen_range(1..150) };
        let all_done = async {
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        };
        tokio::select! {
            r = acks_rx.wait_for(|&n| n >= kill_after) => { r.unwrap(); }
            _ = all_done => {}
        }
        acked_total += *acks_rx.borrow();
        node.kill9();
        while let Some(r) = tasks.join_next().await {
            r.unwrap(); // writers stop on the lost connection; a failed check panics here
        }
        node.restart();
    }
    let c = node.client().await;
    let mut ms = std::mem::take(&mut *model.lock());
    for m in ms.iter_mut() {
        verify(&c, m, seed).await;
        bytes_checked += m.acked;
    }
    println!(
        "crash loop: {runs} kills, {acked_total} acknowledged appends, {bytes_checked} bytes verified, {} extents",
        ms.len()
    );
    assert!(acked_total > 0);
}
