//! The workload: workers doing PUT, GET, DELETE, copy, multipart, `If-None-Match: *`
//! races and `If-Match` compare-and-swap counters through both gateways, on replicated
//! and erasure-coded classes, recording every operation's call, outcome and times.
//!
//! Every body is self-describing: a header with its write id and length, then bytes
//! that follow from the id alone. A read is checked byte for byte before it enters the
//! history, so torn, mixed or foreign bytes are caught as corrupt, and a read's value
//! is the id of the write it returned.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::{Call, Op, Ret};
use crate::s3::{xml_text, S3};

const MAGIC: &[u8; 8] = b"STRATA-C";
const HEADER: usize = 24;
pub const BUCKET: &str = "chaos";
/// Keys of the plain register workload, the CAS counters, and the copy sources.
pub const KEYS: usize = 48;
pub const COUNTERS: usize = 4;
pub const SOURCES: usize = 4;
const PART: usize = 5 << 20;

/// The body of write `w`: `len` bytes (at least the header).
pub fn content(w: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&w.to_le_bytes());
    v.extend_from_slice(&(len as u64).to_le_bytes());
    let mut x = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        // xorshift64*: fast, and the same for the same id.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The write a body claims to be, if it is that write's bytes exactly.
fn identify(body: &[u8], lens: &HashMap<u64, usize>) -> Result<u64, String> {
    if body.len() < HEADER || &body[..8] != MAGIC {
        return Err(format!("{} bytes with no write header", body.len()));
    }
    let w = u64::from_le_bytes(body[8..16].try_into().unwrap());
    let len = u64::from_le_bytes(body[16..24].try_into().unwrap()) as usize;
    match lens.get(&w) {
        None => Err(format!("write {w} was never sent")),
        Some(&l) if l != len || l != body.len() => {
            Err(format!("write {w} is {l} bytes; got {} claiming {len}", body.len()))
        }
        Some(_) if content(w, len) != body => Err(format!("write {w}'s {len} bytes differ")),
        Some(_) => Ok(w),
    }
}

#[derive(Default)]
pub struct History {
    pub ops: Mutex<Vec<(String, Op)>>,
    /// Reads that returned bytes never written for their key.
    pub corrupt: Mutex<Vec<String>>,
    /// Write id -> length, for every write sent.
    lens: Mutex<HashMap<u64, usize>>,
    /// (key, write) pairs ever sent: a key may only return these.
    sent: Mutex<HashSet<(String, u64)>>,
    next: AtomicU64,
    /// Listings of `k/`: (start, end, the keys listed).
    pub lists: Mutex<Vec<(u64, u64, Vec<String>)>>,
}

pub struct Ctx {
    pub s3: S3,
    pub hist: History,
    pub stop: AtomicBool,
    pub t0: Instant,
    pub seed: u64,
    /// Copy sources: (key, write), written once before the workers start.
    pub sources: Mutex<Vec<(String, u64)>>,
}

impl Ctx {
    pub fn new(s3: S3, seed: u64) -> Ctx {
        Ctx {
            s3,
            hist: History::default(),
            stop: AtomicBool::new(false),
            t0: Instant::now(),
            seed,
            sources: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn record(&self, key: &str, call: Call, ret: Ret, start: u64) {
        let op = Op { call, ret, start, end: self.now() };
        self.hist.ops.lock().unwrap().push((key.to_string(), op));
    }

    /// A new write of `len` bytes meant for `key`.
    fn new_write(&self, key: &str, len: usize) -> u64 {
        let w = self.hist.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.hist.lens.lock().unwrap().insert(w, len);
        self.hist.sent.lock().unwrap().insert((key.to_string(), w));
        w
    }

    fn path(key: &str) -> String {
        format!("/{BUCKET}/{key}")
    }

    /// The outcome of a write from its answer: refused when the server says nothing
    /// changed (4xx), unknown on a 5xx or no answer.
    fn write_ret(a: &Result<crate::s3::Answer, String>) -> Ret {
        match a {
            Ok(a) if (200..300).contains(&a.status) => Ret::Ok,
            Ok(a) if (400..500).contains(&a.status) => Ret::Refused,
            _ => Ret::Unknown,
        }
    }

    pub async fn put(&self, gw: usize, key: &str, call: Call, len: usize, class: &str, etag: Option<&str>) -> Ret {
        let w = match call {
            Call::Put(w) | Call::Create(w) | Call::Cas { w, .. } => w,
            _ => unreachable!("not a write"),
        };
        let mut headers = vec![("x-amz-storage-class", class)];
        match call {
            Call::Create(_) => headers.push(("if-none-match", "*")),
            Call::Cas { .. } => headers.push(("if-match", etag.expect("an etag"))),
            _ => {}
        }
        let start = self.now();
        let a = self.s3.send(gw, "PUT", &Ctx::path(key), &headers, Bytes::from(content(w, len))).await;
        let ret = Ctx::write_ret(&a);
        self.record(key, call, ret, start);
        ret
    }

    /// Reads `key`; the write it holds (and its ETag), if the answer was definite.
    pub async fn get(&self, gw: usize, key: &str) -> Option<(Option<u64>, String)> {
        let start = self.now();
        let a = self.s3.send(gw, "GET", &Ctx::path(key), &[], Bytes::new()).await.ok()?;
        match a.status {
            404 => {
                self.record(key, Call::Get, Ret::Read(None), start);
                Some((None, String::new()))
            }
            200 => {
                let lens = self.hist.lens.lock().unwrap().clone();
                let w = match identify(&a.body, &lens) {
                    Ok(w) if self.hist.sent.lock().unwrap().contains(&(key.to_string(), w)) => w,
                    Ok(w) => {
                        self.hist.corrupt.lock().unwrap().push(format!("GET {key}: write {w}, never sent to it"));
                        return None;
                    }
                    Err(e) => {
                        self.hist.corrupt.lock().unwrap().push(format!("GET {key} from gateway {gw}: {e}"));
                        return None;
                    }
                };
                self.record(key, Call::Get, Ret::Read(Some(w)), start);
                let etag = a.headers.get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                Some((Some(w), etag))
            }
            _ => None,
        }
    }

    async fn delete(&self, gw: usize, key: &str) {
        let start = self.now();
        let a = self.s3.send(gw, "DELETE", &Ctx::path(key), &[], Bytes::new()).await;
        self.record(key, Call::Delete, Ctx::write_ret(&a), start);
    }

    /// Lists the plain keys (`k/`, one page holds them all).
    async fn list(&self, gw: usize) {
        let start = self.now();
        let Ok(a) = self.s3.send(gw, "GET", &format!("/{BUCKET}?list-type=2&prefix=k/"), &[], Bytes::new()).await
        else {
            return;
        };
        if a.status != 200 || xml_text(&a.body, "IsTruncated").as_deref() != Some("false") {
            return;
        }
        let text = String::from_utf8_lossy(&a.body);
        let keys =
            text.split("<Key>").skip(1).filter_map(|t| t.split_once("</Key>")).map(|(k, _)| k.to_string()).collect();
        self.hist.lists.lock().unwrap().push((start, self.now(), keys));
    }

    /// A server-side copy of a source object onto `key`: a write of the source's bytes.
    async fn copy(&self, gw: usize, key: &str, src: &str, w: u64) {
        self.hist.sent.lock().unwrap().insert((key.to_string(), w));
        let from = Ctx::path(src);
        let start = self.now();
        let a = self.s3.send(gw, "PUT", &Ctx::path(key), &[("x-amz-copy-source", &from)], Bytes::new()).await;
        let ret = match &a {
            // A copy may fail after its 200 has gone out: the error is in the body.
            Ok(a) if a.status == 200 && xml_text(&a.body, "ETag").is_some() => Ret::Ok,
            Ok(a) if a.status == 404 => {
                // NoSuchKey: the source, written once and never deleted, is gone.
                self.record(src, Call::Get, Ret::Read(None), start);
                Ret::Refused
            }
            other => Ctx::write_ret(other).max_unknown(),
        };
        self.record(key, Call::Put(w), ret, start);
    }

    /// A multipart upload of two parts (5 MiB and a little) onto `key`.
    async fn multipart(&self, gw: usize, key: &str, len: usize, class: &str) {
        let w = self.new_write(key, len);
        let body = Bytes::from(content(w, len));
        let path = Ctx::path(key);
        let Ok(a) =
            self.s3.send(gw, "POST", &format!("{path}?uploads"), &[("x-amz-storage-class", class)], Bytes::new()).await
        else {
            return;
        };
        let Some(id) = xml_text(&a.body, "UploadId").filter(|_| a.status == 200) else { return };
        let mut etags = Vec::new();
        for (n, part) in [body.slice(..PART), body.slice(PART..)].into_iter().enumerate() {
            let q = format!("{path}?partNumber={}&uploadId={id}", n + 1);
            match self.s3.send(gw, "PUT", &q, &[], part).await {
                Ok(a) if a.status == 200 => {
                    etags.push(a.headers.get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string())
                }
                _ => {
                    let _ = self.s3.send(gw, "DELETE", &format!("{path}?uploadId={id}"), &[], Bytes::new()).await;
                    return;
                }
            }
        }
        let xml = format!(
            "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
            etags
                .iter()
                .enumerate()
                .map(|(n, e)| format!("<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>", n + 1))
                .collect::<String>()
        );
        let start = self.now();
        let a = self.s3.send(gw, "POST", &format!("{path}?uploadId={id}"), &[], Bytes::from(xml)).await;
        let ret = match &a {
            Ok(a) if a.status == 200 && xml_text(&a.body, "ETag").is_some() => Ret::Ok,
            other => Ctx::write_ret(other).max_unknown(),
        };
        self.record(key, Call::Put(w), ret, start);
    }

    /// Writes the copy sources (retrying until each is acknowledged).
    pub async fn setup(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.s3.send(0, "PUT", &format!("/{BUCKET}"), &[], Bytes::new()).await {
                Ok(a) if a.status == 200 || a.status == 409 => break,
                r if Instant::now() > deadline => anyhow::bail!("creating the bucket: {:?}", r.map(|a| a.status)),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        for j in 0..SOURCES {
            let key = format!("src/{j}");
            let w = self.new_write(&key, 100_000 + j * 77_777);
            loop {
                if self.put(0, &key, Call::Put(w), 100_000 + j * 77_777, "STANDARD", None).await == Ret::Ok {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "the copy sources could not be written");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            self.sources.lock().unwrap().push((key, w));
        }
        Ok(())
    }

    /// One worker: operations chosen by its own seeded generator until told to stop.
    pub async fn worker(self: Arc<Ctx>, id: u64) {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id);
        let gws = self.s3.endpoints.len();
        while !self.stop.load(Ordering::Relaxed) {
            let gw = rng.gen_range(0..gws);
            let key = format!("k/{}", rng.gen_range(0..KEYS));
            let class = if rng.gen_bool(0.5) { "STANDARD" } else { "STANDARD_IA" };
            let len = match rng.gen_range(0..100) {
                0..=69 => rng.gen_range(HEADER..16 << 10),
                70..=94 => rng.gen_range(16 << 10..1 << 20),
                _ => rng.gen_range(1 << 20..4 << 20),
            };
            match rng.gen_range(0..100) {
                0..=31 => {
                    let w = self.new_write(&key, len);
                    self.put(gw, &key, Call::Put(w), len, class, None).await;
                }
                32..=61 => {
                    self.get(gw, &key).await;
                }
                62..=66 => self.delete(gw, &key).await,
                67..=69 => self.list(gw).await,
                70..=74 => {
                    let (src, w) = {
                        let s = self.sources.lock().unwrap();
                        s[rng.gen_range(0..s.len())].clone()
                    };
                    self.copy(gw, &key, &src, w).await;
                }
                75..=76 => self.multipart(gw, &key, PART + rng.gen_range(1..512 << 10), class).await,
                77..=91 => {
                    // A counter: read it, then swap in the next value if nobody else did.
                    let key = format!("c/{}", rng.gen_range(0..COUNTERS));
                    let len = rng.gen_range(HEADER..4096);
                    match self.get(gw, &key).await {
                        Some((None, _)) => {
                            let w = self.new_write(&key, len);
                            self.put(gw, &key, Call::Create(w), len, class, None).await;
                        }
                        Some((Some(expect), etag)) if !etag.is_empty() => {
                            let w = self.new_write(&key, len);
                            self.put(gw, &key, Call::Cas { expect, w }, len, class, Some(&etag)).await;
                        }
                        _ => {}
                    }
                }
                _ => {
                    // Every worker racing in the same 3-second window races for one key.
                    let key = format!("race/{}", self.t0.elapsed().as_secs() / 3);
                    let w = self.new_write(&key, 64 + id as usize);
                    self.put(gw, &key, Call::Create(w), 64 + id as usize, class, None).await;
                }
            }
        }
    }

    /// Every key ever written or read, for the sweeps.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.hist.ops.lock().unwrap().iter().map(|(k, _)| k.clone()).collect();
        k.sort();
        k.dedup();
        k
    }

    /// Reads every key once with a definite answer (retrying within `within`); the keys
    /// that gave none.
    pub async fn sweep(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut left = Vec::new();
        for (i, key) in self.keys().into_iter().enumerate() {
            let mut gw = i;
            loop {
                gw = (gw + 1) % self.s3.endpoints.len();
                if self.get(gw, &key).await.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    left.push(key);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        left
    }

    /// Deletes every key (for the GC check at the end); the ones that would not go.
    pub async fn delete_all(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut left = Vec::new();
        for key in self.keys() {
            loop {
                let start = self.now();
                let a = self.s3.send(0, "DELETE", &Ctx::path(&key), &[], Bytes::new()).await;
                let ret = Ctx::write_ret(&a);
                self.record(&key, Call::Delete, ret, start);
                if ret == Ret::Ok {
                    break;
                }
                if Instant::now() > deadline {
                    left.push(key);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        left
    }
}

trait MaxUnknown {
    fn max_unknown(self) -> Ret;
}

impl MaxUnknown for Ret {
    /// A copy or a completion answered with a 4xx changed nothing; anything else that is
    /// not a clean success may or may not have.
    fn max_unknown(self) -> Ret {
        if self == Ret::Refused {
            Ret::Refused
        } else {
            Ret::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_identify_their_write_and_nothing_else() {
        let lens: HashMap<u64, usize> = [(7, 5000), (8, 5000), (9, 30)].into();
        assert_eq!(identify(&content(7, 5000), &lens), Ok(7));
        assert_eq!(identify(&content(9, 30), &lens), Ok(9));
        let mut torn = content(7, 5000);
        torn[4000] ^= 1;
        assert!(identify(&torn, &lens).is_err());
        // Mixed: the head of one write and the tail of another of the same length.
        let mut mixed = content(7, 5000);
        mixed[4096..].copy_from_slice(&content(8, 5000)[4096..]);
        assert!(identify(&mixed, &lens).is_err());
        assert!(identify(&content(7, 5000)[..4096], &lens).is_err());
        assert!(identify(&content(10, 5000), &lens).is_err(), "never sent");
        assert!(identify(b"", &lens).is_err());
    }
}
