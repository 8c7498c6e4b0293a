//! MD5 of many bodies at once. Every PUT's ETag is the MD5 of its bytes: a serial hash
//! of about 4.5 cycles a byte, a third of the gateway's CPU under large PUTs (a `perf`
//! profile of 64 MiB PUTs, 16 in flight). Where the CPU has AVX-512, one thread hashes
//! every large body in flight, 16 at a time: each 32-bit lane of a 512-bit register
//! holds one body's MD5 state, so one pass of the compression function advances 16
//! bodies by a block each. A PUT queues its pieces (`Job::feed`, no copy) as they pass
//! and waits for its digest at the end (`Job::finish`). Small bodies, and CPUs without
//! AVX-512, hash inline as before.
//!
//! The thread wakes when a body has `WAKE_BYTES` queued or is finishing, and each round
//! takes the set of bodies that gives the most work to one pass (the k bodies with the
//! most blocks queued, for the k that maximises k times the k-th one's blocks). With
//! fewer than three such bodies it hashes them one by one (the 16-lane pass costs about
//! what two scalar ones do). A body with `LIMIT_BYTES` queued holds its PUT back
//! (`Job::poll_room`), so a hashing thread that falls behind slows PUTs instead of
//! holding their bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::counter::Counter;

/// A body queues at most this much before its PUT waits for the hasher.
pub const LIMIT_BYTES: usize = 4 << 20;
/// The hasher wakes when a body has this much queued (or is finishing).
const WAKE_BYTES: usize = 256 << 10;
/// Blocks of each body in one 16-lane pass (the staging area is 16 times this).
const PASS_BLOCKS: usize = 256;
/// A finishing body with less than this queued is hashed to its end at once, alone.
const FINISH_ALONE_BYTES: usize = 4 << 10;

/// What the hashing thread did, for `/metrics`.
#[derive(Default)]
struct Counters {
    passes: Counter,
    pass_lanes: Counter,
    pass_bytes: Counter,
    single_bytes: Counter,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::default);

/// Registers the hashing thread's counters.
pub fn register_metrics(r: &mut prometheus_client::registry::Registry) {
    let c = &*COUNTERS;
    r.register("strata_md5_lane_passes", "16-lane MD5 passes of the hashing thread", c.passes.clone());
    r.register(
        "strata_md5_lane_pass_bodies",
        "Bodies those passes advanced (over the passes: bodies hashed at once)",
        c.pass_lanes.clone(),
    );
    r.register(
        "strata_md5_lane_pass_bytes",
        "Bytes the hashing thread hashed 16 bodies at a time",
        c.pass_bytes.clone(),
    );
    r.register(
        "strata_md5_lane_single_bytes",
        "Bytes the hashing thread hashed one body at a time (too few bodies queued)",
        c.single_bytes.clone(),
    );
}

/// MD5's initial state.
const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The additive constants, `floor(abs(sin(i + 1)) * 2^32)`.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501, 0x698098d8,
    0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87,
    0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039,
    0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
    0xeb86d391,
];

/// The left rotation of each step.
const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15,
    21,
];

/// The message word step `i` adds.
const fn word(i: usize) -> usize {
    match i / 16 {
        0 => i,
        1 => (5 * i + 1) % 16,
        2 => (3 * i + 5) % 16,
        _ => (7 * i) % 16,
    }
}

/// One body's MD5 a block at a time, on this thread.
mod scalar {
    /// Runs the 64-byte blocks of `data` (a whole number of them) through `state`.
    pub fn compress(state: &mut [u32; 4], data: &[u8]) {
        let (blocks, rest) = data.as_chunks::<64>();
        debug_assert!(rest.is_empty());
        md5::block_api::compress(state, blocks);
    }

    /// The digest of a body whose whole blocks went through `state`, `tail` (under a
    /// block) being the rest, `total` bytes in all.
    pub fn finish(mut state: [u32; 4], tail: &[u8], total: u64) -> [u8; 16] {
        debug_assert!(tail.len() < 64);
        let mut last = [0u8; 128];
        last[..tail.len()].copy_from_slice(tail);
        last[tail.len()] = 0x80;
        let end = if tail.len() < 56 { 64 } else { 128 };
        last[end - 8..end].copy_from_slice(&total.wrapping_mul(8).to_le_bytes());
        compress(&mut state, &last[..end]);
        let mut out = [0u8; 16];
        for (o, s) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&s.to_le_bytes());
        }
        out
    }
}

/// Sixteen bodies' MD5 at once with AVX-512.
#[cfg(target_arch = "x86_64")]
mod x16 {
    use std::arch::x86_64::*;

    use super::{word, K, S};

    /// Runs `blocks` 64-byte blocks of each of 16 bodies through their states, word `w`
    /// of lane `l` in `states[w][l]`; lane `l`'s bytes start at `base + l * stride`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `base + l * stride + blocks * 64` is readable for every
    /// lane, and `16 * stride` fits an `i32`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn compress(states: &mut [[u32; 16]; 4], base: *const u8, stride: usize, blocks: usize) {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let starts = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride as i32));
        let load = |s: &[u32; 16]| unsafe { _mm512_loadu_si512(s.as_ptr().cast()) };
        let (mut a, mut b, mut c, mut d) = (load(&states[0]), load(&states[1]), load(&states[2]), load(&states[3]));
        for j in 0..blocks {
            let m: [__m512i; 16] = std::array::from_fn(|w| {
                let at = _mm512_add_epi32(starts, _mm512_set1_epi32((j * 64 + w * 4) as i32));
                unsafe { _mm512_i32gather_epi32::<1>(at, base.cast()) }
            });
            let (a0, b0, c0, d0) = (a, b, c, d);
            // F, G, H and I as ternary-logic tables over (b, c, d).
            macro_rules! round {
                ($table:literal, $r:literal) => {
                    for i in 16 * $r..16 * $r + 16 {
                        let f = _mm512_ternarylogic_epi32::<$table>(b, c, d);
                        let t = _mm512_add_epi32(
                            _mm512_add_epi32(f, a),
                            _mm512_add_epi32(m[word(i)], _mm512_set1_epi32(K[i] as i32)),
                        );
                        (a, d, c) = (d, c, b);
                        b = _mm512_add_epi32(b, _mm512_rolv_epi32(t, _mm512_set1_epi32(S[i] as i32)));
                    }
                };
            }
            round!(0xCA, 0);
            round!(0xE4, 1);
            round!(0x96, 2);
            round!(0x39, 3);
            a = _mm512_add_epi32(a, a0);
            b = _mm512_add_epi32(b, b0);
            c = _mm512_add_epi32(c, c0);
            d = _mm512_add_epi32(d, d0);
        }
        for (s, v) in states.iter_mut().zip([a, b, c, d]) {
            _mm512_storeu_si512(s.as_mut_ptr().cast(), v);
        }
    }
}

/// A body's MD5 on the hashing thread.
pub struct Job(Arc<Lane>, &'static Hasher);

struct Lane(Mutex<Queue>);

#[derive(Default)]
struct Queue {
    /// Fed and not hashed yet, oldest first; `skip` bytes of the first are hashed.
    pieces: VecDeque<Bytes>,
    skip: usize,
    queued: usize,
    total: u64,
    state: [u32; 4],
    /// Set by `finish`: where the digest goes once every byte is hashed.
    done: Option<tokio::sync::oneshot::Sender<[u8; 16]>>,
    /// The job was dropped unfinished.
    abandoned: bool,
    /// A PUT waiting for room (`poll_room`).
    waiting: Option<Waker>,
    /// The round that last hashed some of it: of bodies with as much queued, the one
    /// served longest ago goes first, so none waits while 16 others keep being served.
    served: u64,
}

impl Queue {
    /// Moves the next `out.len()` queued bytes into `out`.
    fn take(&mut self, out: &mut [u8]) {
        let mut at = 0;
        while at < out.len() {
            let front = &self.pieces[0][self.skip..];
            let n = front.len().min(out.len() - at);
            out[at..at + n].copy_from_slice(&front[..n]);
            at += n;
            self.skip += n;
            if self.skip == self.pieces[0].len() {
                self.pieces.pop_front();
                self.skip = 0;
            }
        }
        self.queued -= out.len();
    }

    fn blocks(&self) -> usize {
        self.queued / 64
    }
}

struct Hasher {
    jobs: Mutex<Vec<Arc<Lane>>>,
    work: Condvar,
    /// The thread is gone (a panic: a bug). Jobs in flight fail, new bodies hash inline.
    dead: AtomicBool,
}

/// Marks the hasher dead when its thread ends, failing the jobs it held: a finishing
/// PUT gets an error instead of waiting forever, one waiting for room goes on.
struct Dying(&'static Hasher);

impl Drop for Dying {
    fn drop(&mut self) {
        self.0.dead.store(true, Ordering::SeqCst);
        for l in std::mem::take(&mut *self.0.jobs.lock()) {
            let mut q = l.0.lock();
            q.done = None;
            if let Some(w) = q.waiting.take() {
                w.wake();
            }
        }
    }
}

/// The hashing thread died; the PUT whose digest it owed fails.
#[derive(Debug, thiserror::Error)]
#[error("the MD5 thread stopped")]
pub struct HasherGone;

/// The hashing thread, started by the first large body; `None` without AVX-512.
fn hasher() -> Option<&'static Hasher> {
    static H: OnceLock<Option<&'static Hasher>> = OnceLock::new();
    H.get_or_init(|| {
        if !simd() {
            return None;
        }
        let h = Hasher::leaked();
        std::thread::Builder::new()
            .name("md5-lanes".into())
            .spawn(move || {
                let _dying = Dying(h);
                h.run()
            })
            .expect("spawning md5-lanes");
        Some(h)
    })
    .filter(|h| !h.dead.load(Ordering::SeqCst))
}

#[cfg(target_arch = "x86_64")]
fn simd() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn simd() -> bool {
    false
}

impl Job {
    /// A job on the hashing thread, or `None` where there is none (no AVX-512): hash
    /// inline then.
    pub fn start() -> Option<Job> {
        Some(hasher()?.job())
    }

    /// Queues `b` (the next bytes of the body) for hashing.
    pub fn feed(&self, b: &Bytes) {
        if b.is_empty() {
            return;
        }
        if self.1.dead.load(Ordering::SeqCst) {
            return; // `finish` fails
        }
        let wake = {
            let mut q = self.0 .0.lock();
            let before = q.queued;
            q.pieces.push_back(b.clone());
            q.queued += b.len();
            q.total += b.len() as u64;
            before < WAKE_BYTES && q.queued >= WAKE_BYTES
        };
        if wake {
            self.1.notify();
        }
    }

    /// Ready when fewer than `LIMIT_BYTES` wait to be hashed; else wakes `cx` when so.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = self.0 .0.lock();
        if q.queued < LIMIT_BYTES || self.1.dead.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        q.waiting = Some(cx.waker().clone());
        drop(q);
        // Over the wake mark by far: the hasher is awake or about to be.
        self.1.notify();
        Poll::Pending
    }

    /// The MD5 of every byte fed.
    pub async fn finish(self) -> Result<[u8; 16], HasherGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0 .0.lock().done = Some(tx);
        let h = self.1;
        // Checked after `done` is set: `Dying` either sees it (and drops it) or ran
        // before, and then `dead` is set.
        if h.dead.load(Ordering::SeqCst) {
            return Err(HasherGone);
        }
        h.notify();
        drop(self);
        rx.await.map_err(|_| HasherGone)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let mut q = self.0 .0.lock();
        if q.done.is_none() {
            q.abandoned = true;
            q.pieces.clear();
            q.queued = 0;
            drop(q);
            self.1.notify();
        }
    }
}

impl Hasher {
    fn leaked() -> &'static Hasher {
        Box::leak(Box::new(Hasher { jobs: Mutex::new(Vec::new()), work: Condvar::new(), dead: AtomicBool::new(false) }))
    }

    fn job(&'static self) -> Job {
        let lane = Arc::new(Lane(Mutex::new(Queue { state: IV, ..Queue::default() })));
        self.jobs.lock().push(lane.clone());
        Job(lane, self)
    }

    fn notify(&self) {
        // Under the lock: the thread checks for work and sleeps holding it.
        let _g = self.jobs.lock();
        self.work.notify_one();
    }

    fn run(&self) {
        let mut staging = vec![0u8; 16 * PASS_BLOCKS * 64];
        for round in 1.. {
            // Jobs with work: finishing, abandoned, or over the wake mark.
            let lanes: Vec<Arc<Lane>> = {
                let mut jobs = self.jobs.lock();
                loop {
                    jobs.retain(|l| !l.0.lock().abandoned);
                    let due = jobs.iter().any(|l| {
                        let q = l.0.lock();
                        q.done.is_some() || q.queued >= WAKE_BYTES
                    });
                    if due {
                        break;
                    }
                    self.work.wait(&mut jobs);
                }
                jobs.clone()
            };
            self.round(round, &lanes, &mut staging);
        }
    }

    /// One round: small finishing bodies to their end, then one pass of the bodies that
    /// give it the most work.
    fn round(&self, round: u64, lanes: &[Arc<Lane>], staging: &mut [u8]) {
        let mut finished = Vec::new();
        // (finishing, whole blocks queued up to a pass, round last served, body)
        let mut cands: Vec<(bool, usize, u64, &Arc<Lane>)> = Vec::new();
        for l in lanes {
            let mut q = l.0.lock();
            if q.done.is_some() && q.queued < FINISH_ALONE_BYTES {
                let mut state = q.state;
                let mut rest = [0u8; FINISH_ALONE_BYTES];
                let n = q.queued;
                q.take(&mut rest[..n]);
                let whole = n / 64 * 64;
                scalar::compress(&mut state, &rest[..whole]);
                let digest = scalar::finish(state, &rest[whole..n], q.total);
                COUNTERS.single_bytes.inc_by(n as u64);
                let _ = q.done.take().expect("done").send(digest);
                finished.push(Arc::as_ptr(l));
            } else if q.blocks() > 0 {
                cands.push((q.done.is_some(), q.blocks().min(PASS_BLOCKS), q.served, l));
            }
        }
        if !finished.is_empty() {
            self.jobs.lock().retain(|l| !finished.contains(&Arc::as_ptr(l)));
        }
        if cands.is_empty() {
            return;
        }
        // Finishing bodies first (a PUT waits on them), then those with most queued, and
        // of those the one served longest ago.
        cands.sort_by_key(|c| (std::cmp::Reverse((c.0, c.1)), c.2));
        cands.truncate(16);
        // Producers only add bytes (and a dropped body is skipped below), so each still
        // has at least the blocks counted.
        let counts: Vec<usize> = cands.iter().map(|c| c.1).collect();
        // The k that gives one pass the most blocks: k bodies, each as far as the least.
        let (k, n) = (1..=counts.len())
            .map(|k| (k, counts[..k].iter().copied().min().unwrap_or(0)))
            .max_by_key(|&(k, n)| k * n)
            .expect("candidates");
        if k < 3 || !cfg!(target_arch = "x86_64") {
            for (_, _, _, l) in &cands[..k] {
                let mut q = l.0.lock();
                let len = q.blocks().min(PASS_BLOCKS) * 64;
                let mut state = q.state;
                q.take(&mut staging[..len]);
                q.served = round;
                drop(q);
                scalar::compress(&mut state, &staging[..len]);
                COUNTERS.single_bytes.inc_by(len as u64);
                self.store(l, state);
            }
            return;
        }
        let stride = PASS_BLOCKS * 64;
        let mut states = [[0u32; 16]; 4];
        let mut hashed = 0;
        for (i, (_, _, _, l)) in cands[..k].iter().enumerate() {
            let mut q = l.0.lock();
            if q.abandoned {
                // Dropped since it was counted: its lane hashes stale bytes, unused (and
                // not counted in the metrics).
                continue;
            }
            hashed += 1;
            let s = q.state;
            for w in 0..4 {
                states[w][i] = s[w];
            }
            q.take(&mut staging[i * stride..i * stride + n * 64]);
            q.served = round;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd()` saw AVX-512F before this thread started; every lane has
        // `n * 64 <= stride` bytes in `staging` (lanes past `k` hash stale bytes, unused).
        unsafe {
            x16::compress(&mut states, staging.as_ptr(), stride, n)
        };
        COUNTERS.passes.inc();
        COUNTERS.pass_lanes.inc_by(hashed as u64);
        COUNTERS.pass_bytes.inc_by((hashed * n * 64) as u64);
        for (i, (_, _, _, l)) in cands[..k].iter().enumerate() {
            self.store(l, [states[0][i], states[1][i], states[2][i], states[3][i]]);
        }
    }

    /// Puts back `l`'s state after a pass, and wakes its PUT if it has room again.
    fn store(&self, l: &Lane, state: [u32; 4]) {
        let waker = {
            let mut q = l.0.lock();
            q.state = state;
            if q.queued < LIMIT_BYTES {
                q.waiting.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    /// The MD5 of `data` by this module's scalar path.
    fn digest(data: &[u8]) -> [u8; 16] {
        let mut state = IV;
        let whole = data.len() / 64 * 64;
        scalar::compress(&mut state, &data[..whole]);
        scalar::finish(state, &data[whole..], data.len() as u64)
    }

    fn reference(data: &[u8]) -> [u8; 16] {
        md5::Md5::digest(data).into()
    }

    fn body(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn constants_are_md5s() {
        for (i, k) in K.iter().enumerate() {
            assert_eq!(*k, ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32, "K[{i}]");
        }
    }

    #[test]
    fn scalar_matches_the_reference_at_every_tail_length() {
        for len in (0..300).chain([4095, 4096, 4097, 1 << 20]) {
            let b = body(len as u64, len);
            assert_eq!(digest(&b), reference(&b), "length {len}");
        }
    }

    /// Forty bodies at once from four threads, fed in uneven pieces (some at once over
    /// the room a body has, which holds its feeder back until the hasher catches up),
    /// some dropped half way: each finished one has the reference's digest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_bodies_get_their_own_digests() {
        if Job::start().is_none() {
            eprintln!("no AVX-512 here: no hashing thread to test");
            return;
        }
        let sizes = [0, 1, 63, 64, 65, 4095, 100_000, 1 << 20, (3 << 20) + 17, 9 << 20];
        let tasks: Vec<_> = (0..40u64)
            .map(|i| {
                tokio::spawn(async move {
                    let data = Bytes::from(body(i, sizes[i as usize % sizes.len()]));
                    let job = Job::start().expect("a hashing thread");
                    let (mut at, mut x) = (0, i + 1);
                    while at < data.len() {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        let n = match x >> 61 {
                            0 => 5 << 20,
                            1 | 2 => 1 + (x >> 20) as usize % 100,
                            _ => 1 + (x >> 20) as usize % 70_000,
                        };
                        let n = n.min(data.len() - at);
                        std::future::poll_fn(|cx| job.poll_room(cx)).await;
                        job.feed(&data.slice(at..at + n));
                        at += n;
                        if i % 7 == 3 && at > data.len() / 2 {
                            return None;
                        }
                        if x & 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    Some((i, job.finish().await.expect("a digest") == reference(&data)))
                })
            })
            .collect();
        let mut finished = 0;
        for t in tasks {
            if let Some((i, same)) = t.await.unwrap() {
                assert!(same, "body {i}: wrong digest");
                finished += 1;
            }
        }
        assert!(finished >= 34, "{finished} bodies finished");
        assert!(COUNTERS.passes.get() > 0, "no 16-lane pass ran");
        // Dropped ones are gone from the thread's list.
        let h = hasher().unwrap();
        let t = std::time::Instant::now();
        while !h.jobs.lock().is_empty() {
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "jobs left on the hashing thread");
            h.notify();
            std::thread::yield_now();
        }
    }

    /// When the hashing thread ends (a panic), no PUT waits forever and none gets a
    /// digest: one waiting for room is woken and goes on, one waiting for its digest
    /// gets an error, one finishing after gets an error at once.
    #[tokio::test]
    async fn a_dead_hasher_fails_its_jobs_instead_of_hanging() {
        let h = Hasher::leaked(); // no thread: nothing hashes
        let (full, waiting, late) = (h.job(), h.job(), h.job());
        full.feed(&Bytes::from(vec![1u8; LIMIT_BYTES + 1]));
        let room = tokio::spawn(async move {
            std::future::poll_fn(|cx| full.poll_room(cx)).await;
            full
        });
        waiting.feed(&Bytes::from_static(b"some bytes"));
        let digest = tokio::spawn(waiting.finish());
        late.feed(&Bytes::from_static(b"more bytes"));
        // Both tasks are parked on the hasher (checked below: they end only after it dies).
        tokio::task::yield_now().await;
        assert!(!room.is_finished() && !digest.is_finished());
        drop(Dying(h));
        let ten = std::time::Duration::from_secs(10);
        let digest = tokio::time::timeout(ten, digest).await.expect("an answer").unwrap();
        assert!(digest.is_err(), "a digest from a dead hasher");
        let full = tokio::time::timeout(ten, room).await.expect("woken").unwrap();
        drop(full);
        assert!(late.finish().await.is_err());
        assert!(h.jobs.lock().is_empty());
    }

    /// With more than 16 bodies queued deep, every one is served within two rounds
    /// (of bodies with as much queued, the one served longest ago goes first): none
    /// waits on its full queue while 16 others keep being served.
    #[test]
    fn more_than_sixteen_deep_bodies_are_all_served() {
        if !simd() {
            eprintln!("no AVX-512 here: rounds are not run");
            return;
        }
        let h = Hasher::leaked(); // no thread: rounds are run here
        let jobs: Vec<Job> = (0..20).map(|_| h.job()).collect();
        for j in &jobs {
            j.feed(&Bytes::from(vec![3u8; 64 << 10]));
        }
        let mut staging = vec![0u8; 16 * PASS_BLOCKS * 64];
        for round in 1..=2 {
            let lanes = h.jobs.lock().clone();
            h.round(round, &lanes, &mut staging);
        }
        let unserved = jobs.iter().filter(|j| j.0 .0.lock().served == 0).count();
        assert_eq!(unserved, 0, "bodies never served after two rounds");
    }

    /// MB/s of the reference crate, the scalar code here, and a 16-lane pass (all 16
    /// lanes counted): `cargo test --release -p ogw --lib md5lanes -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let data = body(1, 16 * PASS_BLOCKS * 64);
        let rounds = 200;
        let rate = |f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                f();
            }
            (rounds * data.len()) as f64 / 1e6 / t.elapsed().as_secs_f64()
        };
        let reference = rate(&mut || {
            std::hint::black_box(reference(&data));
        });
        let here = rate(&mut || {
            std::hint::black_box(digest(&data));
        });
        eprintln!("md-5 crate {reference:.0} MB/s, scalar here {here:.0} MB/s");
        #[cfg(target_arch = "x86_64")]
        if simd() {
            let mut states = [[0u32; 16]; 4];
            let lanes = rate(&mut || unsafe {
                x16::compress(&mut states, data.as_ptr(), PASS_BLOCKS * 64, PASS_BLOCKS);
                std::hint::black_box(&states);
            });
            eprintln!("16 lanes {lanes:.0} MB/s ({:.1}x the crate)", lanes / reference);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_lanes_match_sixteen_scalar_runs() {
        if !simd() {
            eprintln!("no AVX-512 here: the 16-lane pass is not tested");
            return;
        }
        let (stride, blocks) = (3 * 64, 3);
        let data = body(7, 16 * stride);
        let mut states = [[0u32; 16]; 4];
        for (w, s) in states.iter_mut().enumerate() {
            *s = [IV[w]; 16];
        }
        unsafe { x16::compress(&mut states, data.as_ptr(), stride, blocks) };
        for l in 0..16 {
            let mut one = IV;
            scalar::compress(&mut one, &data[l * stride..l * stride + blocks * 64]);
            assert_eq!([states[0][l], states[1][l], states[2][l], states[3][l]], one, "lane {l}");
        }
    }
}
