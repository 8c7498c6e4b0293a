//! Opening a portable device: the file or block device (O_DIRECT where the filesystem
//! allows it, `flock`ed by one process), creating and zero-filling a new file,
//! formatting, and loading the slots back at open.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::alloc::{SlotState, State};
use super::layout::*;
use super::{PortableOptions, PortableStore};
use crate::align::{AlignedBuf, IO_UNIT_BYTES};
use crate::blobstore::io::{fdatasync, pread_exact, pwrite_all_at, IoEngine};
use crate::blobstore::{BlobError, Result};
use crate::limits::DEVICE_LOCK_WAIT;

fn open_file(path: &Path, create: bool) -> std::io::Result<(File, bool)> {
    let mut o = OpenOptions::new();
    // A device file made here is the datanode's alone (mode 0600).
    o.read(true).write(true).create(create).mode(0o600);
    match o.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!("{}: O_DIRECT refused by the filesystem; using buffered I/O", path.display());
            Ok((o.open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// Writes zeros over `[from, to)` and syncs them, reporting progress on long runs.
fn write_zeros(file: &File, path: &Path, from: u64, to: u64) -> std::io::Result<()> {
    let zero = AlignedBuf::zeroed(4 << 20);
    let mut reported = Instant::now();
    let mut off = from;
    while off < to {
        // A multiple of the io unit, or the file's tail.
        let n = (to - off).min(zero.len() as u64) as usize;
        pwrite_all_at(file.as_raw_fd(), &zero[..n], off)?;
        off += n as u64;
        if reported.elapsed().as_secs() >= 2 {
            tracing::info!("{}: zero-filled {} of {} MiB", path.display(), (off - from) >> 20, (to - from) >> 20);
            reported = Instant::now();
        }
    }
    fdatasync(file.as_raw_fd())
}

/// One datanode per device: a second opener would corrupt it. A process killed with
/// SIGKILL can hold the lock a moment longer (its io_uring is torn down asynchronously),
/// so a restart waits for it, up to `DEVICE_LOCK_WAIT`.
fn lock_device(file: &File, path: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + DEVICE_LOCK_WAIT;
    let mut told = false;
    loop {
        // SAFETY: plain syscall on an owned descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) || Instant::now() >= deadline {
            return Err(e);
        }
        if !told {
            tracing::info!("{}: waiting for the device lock", path.display());
            told = true;
        }
        std::thread::sleep(Duration::from_millis(20));
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
                let started = Instant::now();
                write_zeros(&file, &opts.path, 0, len).map_err(|e| ctx("zero-fill", e))?;
                let took = started.elapsed().as_secs_f64();
                tracing::info!("{}: zero-filled {} MiB in {took:.1}s", opts.path.display(), len >> 20);
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
        // Zero the metadata region so no slot of an earlier life survives.
        write_zeros(&file, &opts.path, MD_OFFSET, geo.data_offset())?;
        let sb = geo.encode();
        for copy in 0..2u64 {
            pwrite_all_at(file.as_raw_fd(), &sb, copy * IO_UNIT_BYTES)?;
        }
        fdatasync(file.as_raw_fd())?;
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
        let mut st = State::new(geo.md_slots, geo.clusters_total);
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
                if let Err(cl) = st.claim(&c.md.clusters, geo.clusters_total) {
                    return Err(BlobError::Format(format!(
                        "{}: cluster {cl} of blob {:#x} is out of range or claimed twice; refusing to open a corrupt device",
                        path.display(),
                        c.id
                    )));
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
}
