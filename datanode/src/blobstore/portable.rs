//! The portable BlobStore: SPDK's blob model in Rust over one large file or raw block
//! device, opened O_DIRECT.
//!
//! On-disk layout (every structure a multiple of the 4 KiB io unit):
//!
//! ```text
//! 0        4 KiB      8 KiB                           data_offset
//! | super A | super B | slot 0 A | slot 0 B | slot 1 A | ... | cluster 0 | cluster 1 | ...
//! ```
//!
//! Each blob owns one metadata slot with two copies. A metadata write goes to the copy
//! that does not hold the newest version, with a higher sequence number and a CRC32C,
//! so a torn metadata write leaves the previous version intact. At open the valid copy
//! with the highest sequence wins; the cluster allocator is rebuilt from the live
//! blobs, and a cluster claimed twice is refused as corruption.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::io::{fdatasync, pread_exact, IoEngine, IoEngineKind, Segment};
use super::{check_clusters, BlobError, BlobId, BlobInfo, BlobStore, BlobWrite, Capacity, Result};
use crate::align::{AlignedBuf, IO_UNIT_BYTES};

const SUPER_MAGIC: &[u8; 8] = b"STRATASB";
const SLOT_MAGIC: &[u8; 8] = b"STRBLOB1";
const FORMAT_VERSION: u32 = 1;
const UNIT: usize = IO_UNIT_BYTES as usize;
const MD_OFFSET: u64 = 2 * IO_UNIT_BYTES;
const CRC_AT: usize = UNIT - 4;
const XATTR_AT: usize = 40;
pub const XATTR_BYTES_MAX: usize = 512;
const CLUSTERS_AT: usize = XATTR_AT + XATTR_BYTES_MAX;
/// Clusters one blob can hold: what fits in a metadata slot.
pub const BLOB_CLUSTERS_MAX: u64 = ((CRC_AT - CLUSTERS_AT) / 4) as u64;
const SLOTS_MAX: u64 = 1 << 20;
const STATE_LIVE: u32 = 1;
const STATE_DELETED: u32 = 2;
pub const CLUSTER_BYTES_DEFAULT: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    cluster_bytes: u64,
    device_bytes: u64,
    md_slots: u64,
    clusters_total: u64,
}

impl Geometry {
    fn plan(device_bytes: u64, cluster_bytes: u64) -> Result<Geometry> {
        if cluster_bytes < IO_UNIT_BYTES || !cluster_bytes.is_power_of_two() {
            return Err(BlobError::Format(format!(
                "cluster size {cluster_bytes} must be a power of two of at least {IO_UNIT_BYTES}"
            )));
        }
        let usable = device_bytes.saturating_sub(MD_OFFSET);
        let md_slots = (usable / (cluster_bytes + 2 * IO_UNIT_BYTES)).min(SLOTS_MAX);
        let g = Geometry { cluster_bytes, device_bytes, md_slots, clusters_total: 0 };
        let clusters_total = device_bytes.saturating_sub(g.data_offset()) / cluster_bytes;
        if md_slots < 1 || clusters_total < 2 {
            return Err(BlobError::Format(format!(
                "device of {device_bytes} bytes is too small for clusters of {cluster_bytes} bytes"
            )));
        }
        Ok(Geometry { clusters_total, ..g })
    }

    fn data_offset(&self) -> u64 {
        MD_OFFSET + self.md_slots * 2 * IO_UNIT_BYTES
    }

    fn slot_copy_offset(&self, slot: u32, copy: u8) -> u64 {
        MD_OFFSET + (slot as u64 * 2 + copy as u64) * IO_UNIT_BYTES
    }

    fn encode(&self) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(UNIT);
        b[0..8].copy_from_slice(SUPER_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(IO_UNIT_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.cluster_bytes.to_le_bytes());
        b[24..32].copy_from_slice(&self.device_bytes.to_le_bytes());
        b[32..40].copy_from_slice(&self.md_slots.to_le_bytes());
        b[40..48].copy_from_slice(&self.clusters_total.to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Geometry> {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        if &b[0..8] != SUPER_MAGIC
            || u32::from_le_bytes(b[CRC_AT..UNIT].try_into().expect("4")) != crc32c::crc32c(&b[..CRC_AT])
            || u32::from_le_bytes(b[8..12].try_into().expect("4")) != FORMAT_VERSION
            || u32::from_le_bytes(b[12..16].try_into().expect("4")) as u64 != IO_UNIT_BYTES
        {
            return None;
        }
        Some(Geometry {
            cluster_bytes: u64_at(16),
            device_bytes: u64_at(24),
            md_slots: u64_at(32),
            clusters_total: u64_at(40),
        })
    }
}

#[derive(Debug, Clone, Default)]
struct BlobMd {
    clusters: Vec<u32>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SlotState {
    /// Highest sequence number written to either copy.
    seq: u64,
    /// Generation of the newest blob in this slot (blob ids are `gen << 32 | slot`).
    gen: u32,
    /// Copy (0 or 1) holding `seq`.
    active: u8,
}

struct State {
    slots: Vec<SlotState>,
    blobs: HashMap<BlobId, BlobMd>,
    free_slots: BTreeSet<u32>,
    used: Vec<u64>,
    clusters_free: u64,
    alloc_hint: u32,
    /// Freed by deletions; reusable after the next successful flush.
    pending_clusters: Vec<u32>,
    pending_slots: Vec<u32>,
}

fn blob_slot(id: BlobId) -> u32 {
    id as u32
}

impl State {
    fn is_used(&self, c: u32) -> bool {
        self.used[c as usize / 64] & (1 << (c % 64)) != 0
    }
    fn set_used(&mut self, c: u32, used: bool) {
        let w = &mut self.used[c as usize / 64];
        if used {
            *w |= 1 << (c % 64);
        } else {
            *w &= !(1 << (c % 64));
        }
    }

    /// Allocates `n` clusters, preferring the one after `near` so blobs stay contiguous.
    fn alloc(&mut self, n: u64, near: Option<u32>, total: u64) -> Result<Vec<u32>> {
        if self.clusters_free < n {
            return Err(BlobError::NoSpace);
        }
        let mut out = Vec::with_capacity(n as usize);
        let mut next = near.map(|c| c + 1);
        for _ in 0..n {
            let c = match next.filter(|&c| (c as u64) < total && !self.is_used(c)) {
                Some(c) => c,
                None => self.find_free(total).ok_or(BlobError::NoSpace)?,
            };
            self.set_used(c, true);
            self.clusters_free -= 1;
            out.push(c);
            next = Some(c + 1);
        }
        Ok(out)
    }

    fn find_free(&mut self, total: u64) -> Option<u32> {
        let words = self.used.len();
        let start = self.alloc_hint as usize / 64;
        for i in 0..=words {
            let w = (start + i) % words;
            if self.used[w] != u64::MAX {
                let c = w as u64 * 64 + (!self.used[w]).trailing_zeros() as u64;
                if c < total {
                    self.alloc_hint = c as u32;
                    return Some(c as u32);
                }
            }
        }
        None
    }

    fn release(&mut self, clusters: &[u32]) {
        for &c in clusters {
            debug_assert!(self.is_used(c));
            self.set_used(c, false);
            self.clusters_free += 1;
        }
    }
}

fn encode_xattrs(x: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&(x.len() as u16).to_le_bytes());
    for (k, v) in x {
        if k.len() > 255 || v.len() > u16::MAX as usize {
            return Err(BlobError::XattrsTooLarge { bytes: k.len() + v.len(), max: XATTR_BYTES_MAX });
        }
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
    }
    if out.len() > XATTR_BYTES_MAX {
        return Err(BlobError::XattrsTooLarge { bytes: out.len(), max: XATTR_BYTES_MAX });
    }
    Ok(out)
}

fn decode_xattrs(b: &[u8]) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut x = BTreeMap::new();
    let n = u16::from_le_bytes(b.get(0..2)?.try_into().ok()?);
    let mut p = 2;
    for _ in 0..n {
        let kl = *b.get(p)? as usize;
        let k = std::str::from_utf8(b.get(p + 1..p + 1 + kl)?).ok()?.to_owned();
        p += 1 + kl;
        let vl = u16::from_le_bytes(b.get(p..p + 2)?.try_into().ok()?) as usize;
        x.insert(k, b.get(p + 2..p + 2 + vl)?.to_vec());
        p += 2 + vl;
    }
    Some(x)
}

struct SlotCopy {
    seq: u64,
    id: BlobId,
    state: u32,
    md: BlobMd,
}

fn encode_slot(seq: u64, id: BlobId, state: u32, md: &BlobMd) -> Result<AlignedBuf> {
    let x = encode_xattrs(&md.xattrs)?;
    assert!(md.clusters.len() as u64 <= BLOB_CLUSTERS_MAX);
    let mut b = AlignedBuf::zeroed(UNIT);
    b[0..8].copy_from_slice(SLOT_MAGIC);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&id.to_le_bytes());
    b[24..28].copy_from_slice(&state.to_le_bytes());
    b[28..32].copy_from_slice(&(md.clusters.len() as u32).to_le_bytes());
    b[32..36].copy_from_slice(&(x.len() as u32).to_le_bytes());
    b[XATTR_AT..XATTR_AT + x.len()].copy_from_slice(&x);
    for (i, c) in md.clusters.iter().enumerate() {
        b[CLUSTERS_AT + i * 4..CLUSTERS_AT + i * 4 + 4].copy_from_slice(&c.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    Ok(b)
}

fn decode_slot(b: &[u8]) -> Option<SlotCopy> {
    if &b[0..8] != SLOT_MAGIC || u32::from_le_bytes(b[CRC_AT..UNIT].try_into().ok()?) != crc32c::crc32c(&b[..CRC_AT]) {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
    let n = u32_at(28) as usize;
    let xl = u32_at(32) as usize;
    if n as u64 > BLOB_CLUSTERS_MAX || xl > XATTR_BYTES_MAX {
        return None;
    }
    let clusters = (0..n).map(|i| u32_at(CLUSTERS_AT + i * 4)).collect();
    Some(SlotCopy {
        seq: u64::from_le_bytes(b[8..16].try_into().ok()?),
        id: u64::from_le_bytes(b[16..24].try_into().ok()?),
        state: u32_at(24),
        md: BlobMd { clusters, xattrs: decode_xattrs(&b[XATTR_AT..XATTR_AT + xl])? },
    })
}

/// How to open (and, where allowed, format) a portable device.
#[derive(Debug, Clone)]
pub struct PortableOptions {
    pub path: PathBuf,
    /// Size of the file to create when `path` does not exist.
    pub create_bytes: u64,
    pub cluster_bytes: u64,
    /// Format an existing file or block device that holds no Strata superblock.
    pub format_existing: bool,
    /// Write zeros over a file created here. On ext4 and XFS a fallocated but never
    /// written range is "unwritten": the first write to each piece makes the next
    /// fdatasync commit a journal transaction, which costs more than the write.
    /// Zero-filling once at creation makes every later flush a plain cache flush
    /// (PostgreSQL zero-fills WAL segments for the same reason).
    pub zero_fill: bool,
    pub engine: IoEngineKind,
}

pub struct PortableStore {
    file: File,
    geo: Geometry,
    state: Mutex<State>,
    engine: Mutex<IoEngine>,
    direct: bool,
}

fn open_file(path: &Path, create: bool) -> std::io::Result<(File, bool)> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(create);
    match o.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!("{}: O_DIRECT refused by the filesystem; using buffered I/O", path.display());
            Ok((o.open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// Writes zeros over the whole file, reporting progress on long runs.
fn zero_fill(file: &File, path: &Path, len: u64) -> std::io::Result<()> {
    let zero = AlignedBuf::zeroed(4 << 20);
    let started = std::time::Instant::now();
    let mut reported = started;
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(zero.len() as u64) as usize;
        // SAFETY: `zero` outlives the call; `n` is a multiple of the io unit or the tail.
        unsafe { super::io::pwrite_all(file.as_raw_fd(), zero.as_ptr(), n, off)? };
        off += n as u64;
        if reported.elapsed().as_secs() >= 2 {
            tracing::info!("{}: zero-filled {} of {} MiB", path.display(), off >> 20, len >> 20);
            reported = std::time::Instant::now();
        }
    }
    fdatasync(file.as_raw_fd())?;
    tracing::info!("{}: zero-filled {} MiB in {:.1}s", path.display(), len >> 20, started.elapsed().as_secs_f64());
    Ok(())
}

/// How long to wait for a device lock held by a process that is going away.
const DEVICE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(if cfg!(test) { 200 } else { 10_000 });

/// One datanode per device: a second opener would corrupt it. A process killed with
/// SIGKILL can hold the lock a moment longer (its io_uring is torn down asynchronously),
/// so a restart waits for it, up to `DEVICE_LOCK_WAIT`.
fn lock_device(file: &File, path: &Path) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + DEVICE_LOCK_WAIT;
    let mut told = false;
    loop {
        // SAFETY: plain syscall on an owned descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) || std::time::Instant::now() >= deadline {
            return Err(e);
        }
        if !told {
            tracing::info!("{}: waiting for the device lock", path.display());
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn device_len(f: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::End(0))
}

impl PortableStore {
    pub fn open(opts: &PortableOptions) -> Result<PortableStore> {
        let ctx = |what: &str, e: std::io::Error| BlobError::Format(format!("{}: {what}: {e}", opts.path.display()));
        let exists = opts.path.exists();
        let (file, direct) = open_file(&opts.path, !exists).map_err(|e| ctx("cannot open", e))?;
        lock_device(&file, &opts.path).map_err(|e| ctx("device is in use by another process", e))?;
        let is_block = file.metadata().map_err(|e| ctx("stat", e))?.file_type().is_block_device();
        let mut len = device_len(&file).map_err(|e| ctx("size", e))?;
        if !exists || (len == 0 && !is_block) {
            // SAFETY: fallocate on an owned descriptor; reserves the space up front so a
            // full filesystem is reported now, not as a failed append later.
            let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, opts.create_bytes as libc::off_t) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                if !exists {
                    let _ = std::fs::remove_file(&opts.path);
                }
                return Err(ctx(&format!("cannot reserve {} bytes", opts.create_bytes), e));
            }
            len = opts.create_bytes;
            if opts.zero_fill {
                zero_fill(&file, &opts.path, len).map_err(|e| ctx("zero-fill", e))?;
            }
            let engine = IoEngine::new(opts.engine)?;
            let store = Self::format(opts, file, len, direct, engine)?;
            return Ok(store);
        }
        let mut sb = AlignedBuf::zeroed(2 * UNIT);
        pread_exact(file.as_raw_fd(), &mut sb, 0).map_err(|e| ctx("read superblock", e))?;
        let geo = Geometry::decode(&sb[..UNIT]).or_else(|| Geometry::decode(&sb[UNIT..]));
        let engine = IoEngine::new(opts.engine)?;
        match geo {
            Some(geo) => {
                if geo.device_bytes > len {
                    return Err(BlobError::Format(format!(
                        "{}: formatted for {} bytes but only {len} are there",
                        opts.path.display(),
                        geo.device_bytes
                    )));
                }
                Self::load(opts.path.clone(), file, geo, direct, engine)
            }
            None if opts.format_existing => Self::format(opts, file, len, direct, engine),
            None => Err(BlobError::Format(format!(
                "{}: no Strata superblock; pass --format to initialise it (this erases it)",
                opts.path.display()
            ))),
        }
    }

    fn format(opts: &PortableOptions, file: File, len: u64, direct: bool, engine: IoEngine) -> Result<PortableStore> {
        let geo = Geometry::plan(len, opts.cluster_bytes)?;
        let fd = file.as_raw_fd();
        // Zero the metadata region so no slot of an earlier life survives.
        let zero = AlignedBuf::zeroed(1 << 20);
        let mut off = MD_OFFSET;
        while off < geo.data_offset() {
            let n = (geo.data_offset() - off).min(zero.len() as u64) as usize;
            // SAFETY: `zero` outlives the call.
            unsafe { super::io::pwrite_all(fd, zero.as_ptr(), n, off)? };
            off += n as u64;
        }
        fdatasync(fd)?;
        let sb = geo.encode();
        for copy in 0..2u64 {
            // SAFETY: `sb` outlives the call.
            unsafe { super::io::pwrite_all(fd, sb.as_ptr(), UNIT, copy * IO_UNIT_BYTES)? };
        }
        fdatasync(fd)?;
        tracing::info!(
            "formatted {}: {} clusters of {} bytes, {} metadata slots",
            opts.path.display(),
            geo.clusters_total,
            geo.cluster_bytes,
            geo.md_slots
        );
        Self::load(opts.path.clone(), file, geo, direct, engine)
    }

    fn load(path: PathBuf, file: File, geo: Geometry, direct: bool, engine: IoEngine) -> Result<PortableStore> {
        let fd = file.as_raw_fd();
        let mut st = State {
            slots: vec![SlotState::default(); geo.md_slots as usize],
            blobs: HashMap::new(),
            free_slots: BTreeSet::new(),
            used: vec![0; (geo.clusters_total as usize).div_ceil(64)],
            clusters_free: geo.clusters_total,
            alloc_hint: 0,
            pending_clusters: Vec::new(),
            pending_slots: Vec::new(),
        };
        let chunk_slots = 128u64;
        let mut buf = AlignedBuf::zeroed((chunk_slots * 2) as usize * UNIT);
        let mut slot = 0u64;
        while slot < geo.md_slots {
            let n = chunk_slots.min(geo.md_slots - slot);
            let b = &mut buf[..(n * 2) as usize * UNIT];
            pread_exact(fd, b, geo.slot_copy_offset(slot as u32, 0))?;
            for i in 0..n as usize {
                let s = (slot + i as u64) as u32;
                let copies = [
                    decode_slot(&b[2 * i * UNIT..(2 * i + 1) * UNIT]),
                    decode_slot(&b[(2 * i + 1) * UNIT..(2 * i + 2) * UNIT]),
                ];
                let best = match (&copies[0], &copies[1]) {
                    (Some(a), Some(b)) => Some(if b.seq > a.seq { 1 } else { 0 }),
                    (Some(_), None) => Some(0),
                    (None, Some(_)) => Some(1),
                    (None, None) => None,
                };
                let Some(active) = best else {
                    st.free_slots.insert(s);
                    continue;
                };
                let c = copies[active].as_ref().expect("chosen copy is valid");
                if blob_slot(c.id) != s {
                    return Err(BlobError::Format(format!("{}: slot {s} names blob {:#x}", path.display(), c.id)));
                }
                st.slots[s as usize] = SlotState { seq: c.seq, gen: (c.id >> 32) as u32, active: active as u8 };
                if c.state != STATE_LIVE {
                    st.free_slots.insert(s);
                    continue;
                }
                for &cl in &c.md.clusters {
                    if cl as u64 >= geo.clusters_total || st.is_used(cl) {
                        return Err(BlobError::Format(format!(
                            "{}: cluster {cl} of blob {:#x} is out of range or claimed twice; refusing to open a corrupt device",
                            path.display(),
                            c.id
                        )));
                    }
                    st.set_used(cl, true);
                    st.clusters_free -= 1;
                }
                st.blobs.insert(c.id, c.md.clone());
            }
            slot += n;
        }
        tracing::info!(
            "opened {}: {} blobs, {}/{} clusters free",
            path.display(),
            st.blobs.len(),
            st.clusters_free,
            geo.clusters_total
        );
        Ok(PortableStore { file, geo, state: Mutex::new(st), engine: Mutex::new(engine), direct })
    }

    pub fn engine_name(&self) -> &'static str {
        self.engine.lock().name()
    }

    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Writes a slot's next version to the copy that does not hold the newest one.
    fn write_md(&self, st: &mut State, id: BlobId, state: u32, md: &BlobMd) -> Result<()> {
        let s = blob_slot(id);
        let cur = st.slots[s as usize];
        let seq = cur.seq + 1;
        let copy = 1 - cur.active;
        let buf = encode_slot(seq, id, state, md)?;
        // SAFETY: `buf` outlives the call.
        unsafe { super::io::pwrite_all(self.fd(), buf.as_ptr(), UNIT, self.geo.slot_copy_offset(s, copy))? };
        st.slots[s as usize] = SlotState { seq, gen: (id >> 32) as u32, active: copy };
        Ok(())
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Device segments for `len` bytes at `offset` of a blob.
    fn map(&self, st: &State, blob: BlobId, offset: u64, len: u64, out: &mut Vec<(u64, u64)>) -> Result<()> {
        let md = st.blobs.get(&blob).ok_or(BlobError::NotFound(blob))?;
        let size = md.clusters.len() as u64 * self.geo.cluster_bytes;
        if !offset.is_multiple_of(IO_UNIT_BYTES) || !len.is_multiple_of(IO_UNIT_BYTES) || offset + len > size {
            return Err(BlobError::BadRange { offset, len, size });
        }
        let cb = self.geo.cluster_bytes;
        let mut pos = offset;
        while pos < offset + len {
            let c = md.clusters[(pos / cb) as usize] as u64;
            let within = pos % cb;
            let n = (cb - within).min(offset + len - pos);
            let dev = self.geo.data_offset() + c * cb + within;
            match out.last_mut() {
                Some((o, l)) if *o + *l == dev => *l += n,
                _ => out.push((dev, n)),
            }
            pos += n;
        }
        Ok(())
    }
}

impl BlobStore for PortableStore {
    fn io_unit_bytes(&self) -> u64 {
        IO_UNIT_BYTES
    }

    fn cluster_bytes(&self) -> u64 {
        self.geo.cluster_bytes
    }

    fn blob_clusters_max(&self) -> u64 {
        BLOB_CLUSTERS_MAX
    }

    fn capacity(&self) -> Capacity {
        let st = self.state.lock();
        Capacity {
            cluster_bytes: self.geo.cluster_bytes,
            clusters_total: self.geo.clusters_total,
            clusters_free: st.clusters_free,
        }
    }

    fn blobs(&self) -> Vec<BlobInfo> {
        let st = self.state.lock();
        let mut v: Vec<BlobInfo> = st
            .blobs
            .iter()
            .map(|(&id, md)| BlobInfo { id, clusters: md.clusters.len() as u64, xattrs: md.xattrs.clone() })
            .collect();
        v.sort_by_key(|b| b.id);
        v
    }

    fn create_blob(&self, xattrs: &[(&str, &[u8])], clusters: u64) -> Result<BlobId> {
        check_clusters(clusters, BLOB_CLUSTERS_MAX)?;
        let md =
            BlobMd { clusters: Vec::new(), xattrs: xattrs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect() };
        encode_xattrs(&md.xattrs)?;
        let mut st = self.state.lock();
        let slot = *st.free_slots.iter().next().ok_or(BlobError::NoSlots)?;
        let id = ((st.slots[slot as usize].gen as u64 + 1) << 32) | slot as u64;
        let mut md = md;
        md.clusters = st.alloc(clusters, None, self.geo.clusters_total)?;
        if let Err(e) = self.write_md(&mut st, id, STATE_LIVE, &md) {
            st.release(&md.clusters);
            return Err(e);
        }
        st.free_slots.remove(&slot);
        st.blobs.insert(id, md);
        Ok(id)
    }

    fn resize(&self, blob: BlobId, clusters: u64) -> Result<()> {
        check_clusters(clusters, BLOB_CLUSTERS_MAX)?;
        let mut st = self.state.lock();
        let mut md = st.blobs.get(&blob).ok_or(BlobError::NotFound(blob))?.clone();
        let have = md.clusters.len() as u64;
        if clusters <= have {
            return Ok(());
        }
        let new = st.alloc(clusters - have, md.clusters.last().copied(), self.geo.clusters_total)?;
        md.clusters.extend_from_slice(&new);
        if let Err(e) = self.write_md(&mut st, blob, STATE_LIVE, &md) {
            st.release(&new);
            return Err(e);
        }
        st.blobs.insert(blob, md);
        Ok(())
    }

    fn set_xattr(&self, blob: BlobId, name: &str, value: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        let md = st.blobs.get_mut(&blob).ok_or(BlobError::NotFound(blob))?;
        let mut x = md.xattrs.clone();
        x.insert(name.to_owned(), value.to_vec());
        encode_xattrs(&x)?;
        md.xattrs = x;
        Ok(())
    }

    fn sync_md(&self, blob: BlobId) -> Result<()> {
        let mut st = self.state.lock();
        let md = st.blobs.get(&blob).ok_or(BlobError::NotFound(blob))?.clone();
        self.write_md(&mut st, blob, STATE_LIVE, &md)
    }

    fn write_batch(&self, writes: &[BlobWrite<'_>]) -> Vec<Result<()>> {
        let mut segs = Vec::new();
        let mut owner = Vec::new();
        let mut results: Vec<Result<()>> = Vec::with_capacity(writes.len());
        {
            let st = self.state.lock();
            let mut ranges = Vec::new();
            for (i, w) in writes.iter().enumerate() {
                let mut offset = w.offset;
                let mut result = Ok(());
                for buf in &w.bufs {
                    assert_eq!(buf.as_ptr() as u64 % IO_UNIT_BYTES, 0, "unaligned write buffer");
                    ranges.clear();
                    if let Err(e) = self.map(&st, w.blob, offset, buf.len() as u64, &mut ranges) {
                        result = Err(e);
                        break;
                    }
                    let mut done = 0usize;
                    for &(dev, n) in &ranges {
                        // SAFETY: `done + n <= buf.len()` by construction of `map`.
                        let ptr = unsafe { buf.as_ptr().add(done) };
                        segs.push(Segment { offset: dev, ptr, len: n as usize });
                        owner.push(i);
                        done += n as usize;
                    }
                    offset += buf.len() as u64;
                }
                results.push(result);
            }
        }
        // SAFETY: every buffer is borrowed from `writes`, which outlives this call.
        let seg_results = unsafe { self.engine.lock().write_all(self.fd(), &segs) };
        for (i, r) in owner.into_iter().zip(seg_results) {
            if let Err(e) = r {
                if results[i].is_ok() {
                    results[i] = Err(BlobError::Io(e));
                }
            }
        }
        results
    }

    fn read(&self, blob: BlobId, offset: u64, buf: &mut AlignedBuf) -> Result<()> {
        let mut ranges = Vec::new();
        self.map(&self.state.lock(), blob, offset, buf.len() as u64, &mut ranges)?;
        let mut done = 0usize;
        for (dev, n) in ranges {
            pread_exact(self.fd(), &mut buf[done..done + n as usize], dev)?;
            done += n as usize;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        // Only deletions made before the sync are known durable after it; others may
        // be written while it runs and must wait for the next flush.
        let (clusters, slots) = {
            let mut st = self.state.lock();
            (std::mem::take(&mut st.pending_clusters), std::mem::take(&mut st.pending_slots))
        };
        if let Err(e) = fdatasync(self.fd()) {
            let mut st = self.state.lock();
            st.pending_clusters.extend_from_slice(&clusters);
            st.pending_slots.extend_from_slice(&slots);
            return Err(e.into());
        }
        let mut st = self.state.lock();
        st.release(&clusters);
        st.free_slots.extend(slots);
        Ok(())
    }

    fn delete_blob(&self, blob: BlobId) -> Result<()> {
        let mut st = self.state.lock();
        let md = st.blobs.get(&blob).ok_or(BlobError::NotFound(blob))?.clone();
        self.write_md(&mut st, blob, STATE_DELETED, &BlobMd::default())?;
        st.blobs.remove(&blob);
        st.pending_clusters.extend_from_slice(&md.clusters);
        st.pending_slots.push(blob_slot(blob));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
