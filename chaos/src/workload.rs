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

/// Every block of a body starts with the header, so that a ranged read names its write.
const BLOCK: usize = 4096;

/// The body of write `w`: `len` bytes (at least the header).
pub fn content(w: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    let mut x = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        if v.len() % BLOCK == 0 {
            v.extend_from_slice(MAGIC);
            v.extend_from_slice(&w.to_le_bytes());
            v.extend_from_slice(&(len as u64).to_le_bytes());
        }
        // xorshift64*: fast, and the same for the same id.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The write a ranged read's bytes (`start..=end` of an object of `total` bytes) come
/// from, if they are exactly that write's bytes there. `Ok(None)`: the range holds no
/// block header, so it cannot say.
fn identify_range(body: &[u8], start: usize, total: usize, lens: &HashMap<u64, usize>) -> Result<Option<u64>, String> {
    let end = start + body.len();
    let b = start.div_ceil(BLOCK) * BLOCK;
    if b + HEADER > end {
        return Ok(None);
    }
    let h = &body[b - start..b - start + HEADER];
    if &h[..8] != MAGIC {
        return Err(format!("no block header at {b} in {start}..{end} of {total}"));
    }
    let w = u64::from_le_bytes(h[8..16].try_into().unwrap());
    match lens.get(&w) {
        None => Err(format!("bytes {start}..{end}: write {w} was never sent")),
        Some(&l) if l != total => Err(format!("bytes {start}..{end}: write {w} is {l} bytes, the object {total}")),
        Some(_) if content(w, total)[start..end] != *body => Err(format!("write {w}'s bytes {start}..{end} differ")),
        Some(_) => Ok(Some(w)),
    }
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
    /// Ranged reads that named their write, and keys DeleteObjects deleted.
    pub ranged: AtomicU64,
    pub multi_deleted: AtomicU64,
    /// Keys deleted at the end.
    pub deleted: AtomicU64,
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

    /// A ranged read of `key` (as analytics engines read columns), recorded as a read
    /// when the range names its write.
    async fn get_range(&self, gw: usize, key: &str, from: usize, len: usize) {
        let range = format!("bytes={from}-{}", from + len - 1);
        let start = self.now();
        let Ok(a) = self.s3.send(gw, "GET", &Ctx::path(key), &[("range", &range)], Bytes::new()).await else { return };
        let total = match a.status {
            404 => return self.record(key, Call::Get, Ret::Read(None), start),
            206 => a
                .headers
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit_once('/'))
                .and_then(|(_, t)| t.parse::<usize>().ok()),
            _ => return,
        };
        let lens = self.hist.lens.lock().unwrap().clone();
        let bad = |why: String| self.hist.corrupt.lock().unwrap().push(format!("GET {key} {range}: {why}"));
        let Some(total) = total else { return bad("206 without a Content-Range total".into()) };
        let expect = len.min(total.saturating_sub(from));
        if a.body.len() != expect {
            return bad(format!("{} bytes, expected {expect} of {total}", a.body.len()));
        }
        match identify_range(&a.body, from, total, &lens) {
            Ok(Some(w)) if self.hist.sent.lock().unwrap().contains(&(key.to_string(), w)) => {
                self.hist.ranged.fetch_add(1, Ordering::Relaxed);
                self.record(key, Call::Get, Ret::Read(Some(w)), start)
            }
            Ok(Some(w)) => bad(format!("write {w}, never sent to it")),
            Ok(None) => {}
            Err(e) => bad(e),
        }
    }

    /// DeleteObjects of a few keys: each key's outcome is in the answer.
    async fn delete_many(&self, gw: usize, keys: &[String]) {
        use base64::Engine;
        use md5::Digest;
        let xml = format!(
            "<Delete>{}</Delete>",
            keys.iter().map(|k| format!("<Object><Key>{k}</Key></Object>")).collect::<String>()
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml.as_bytes()));
        let start = self.now();
        let a =
            self.s3.send(gw, "POST", &format!("/{BUCKET}?delete"), &[("content-md5", &md5)], Bytes::from(xml)).await;
        let deleted: HashSet<String> = match &a {
            Ok(a) if a.status == 200 => String::from_utf8_lossy(&a.body)
                .split("<Deleted>")
                .skip(1)
                .filter_map(|d| xml_text(d.as_bytes(), "Key"))
                .collect(),
            _ => HashSet::new(),
        };
        let refused = matches!(&a, Ok(a) if (400..500).contains(&a.status));
        for k in keys {
            let ret = if deleted.contains(k) {
                self.hist.multi_deleted.fetch_add(1, Ordering::Relaxed);
                Ret::Ok
            } else if refused {
                Ret::Refused
            } else {
                Ret::Unknown
            };
            self.record(k, Call::Delete, ret, start);
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
                32..=53 => {
                    self.get(gw, &key).await;
                }
                54..=61 => {
                    // Mostly within the small objects most keys hold.
                    let from = if rng.gen_bool(0.8) { rng.gen_range(0..12 << 10) } else { rng.gen_range(0..4 << 20) };
                    self.get_range(gw, &key, from, rng.gen_range(BLOCK + HEADER..256 << 10)).await
                }
                62..=64 => self.delete(gw, &key).await,
                65..=66 => {
                    let keys: Vec<String> =
                        (0..rng.gen_range(2..5)).map(|_| format!("k/{}", rng.gen_range(0..KEYS))).collect();
                    let mut keys = keys;
                    keys.sort();
                    keys.dedup();
                    self.delete_many(gw, &keys).await
                }
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
            let answered = until(deadline, || {
                gw = (gw + 1) % self.s3.endpoints.len();
                let gw = gw;
                let key = &key;
                async move { self.get(gw, key).await.is_some() }
            })
            .await;
            if !answered {
                left.push(key);
            }
        }
        left
    }

    /// Deletes `keys` (for the GC check at the end); the ones that would not go.
    pub async fn delete_all(&self, keys: Vec<String>, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut left = Vec::new();
        for key in keys {
            let gone = until(deadline, || async {
                let start = self.now();
                let a = self.s3.send(0, "DELETE", &Ctx::path(&key), &[], Bytes::new()).await;
                let ret = Ctx::write_ret(&a);
                self.record(&key, Call::Delete, ret, start);
                ret == Ret::Ok
            })
            .await;
            if gone {
                self.hist.deleted.fetch_add(1, Ordering::Relaxed);
            } else {
                left.push(key);
            }
        }
        left
    }
}

/// Tries `f` until it says done (true) or `deadline` passes (false), 200 ms apart.
async fn until<F, Fut>(deadline: Instant, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    fn ranges_identify_their_write_and_nothing_else() {
        let lens: HashMap<u64, usize> = [(7, 50_000), (8, 50_000)].into();
        let body = content(7, 50_000);
        assert_eq!(identify_range(&body[1000..9000], 1000, 50_000, &lens), Ok(Some(7)));
        assert_eq!(identify_range(&body[4096..4120], 4096, 50_000, &lens), Ok(Some(7)));
        assert_eq!(identify_range(&body[1000..2000], 1000, 50_000, &lens), Ok(None), "no header inside");
        // Another write's bytes name that write; a mix of two, or the right write at the
        // wrong place, are refused.
        let other = content(8, 50_000);
        assert_eq!(identify_range(&other[1000..9000], 1000, 50_000, &lens), Ok(Some(8)));
        let mixed = [&body[1000..6000], &other[6000..9000]].concat();
        assert!(identify_range(&mixed, 1000, 50_000, &lens).is_err());
        assert!(identify_range(&body[1000..9000], 1024, 50_000, &lens).is_err());
        let mut torn = body[1000..9000].to_vec();
        torn[7000] ^= 1;
        assert!(identify_range(&torn, 1000, 50_000, &lens).is_err());
        assert!(identify_range(&body[1000..9000], 1000, 60_000, &lens).is_err(), "wrong total");
    }

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
