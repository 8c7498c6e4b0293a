//! A BlobStore on an SPDK bdev, driven from any thread through the [`Reactor`].
//!
//! Blobs stay open while the store is (their handles are kept in a map used only on the
//! reactor thread). I/O uses the caller's io-unit aligned buffers as they are where the
//! bdev takes them: with `host_buffers` (bdevs over files or memory, which take any
//! memory), or when they are DMA-able memory ([`crate::dma`]; what an NVMe controller
//! needs). Otherwise (NVMe and heap memory, or unaligned buffers) data goes through
//! DMA-able buffers (`spdk_dma_malloc`), one copy each way, counted by
//! [`crate::dma::copied_bytes`]. Durability: SPDK's blobstore never
//! flushes the device, so [`Blobstore::flush`] sends a FLUSH to the bdev through a
//! descriptor of its own (the AIO bdev turns it into `fsync`; the malloc bdev is
//! volatile anyway; a bdev without FLUSH, such as io_uring's, is only as durable as
//! the device's write path).

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::reactor::{done_errno, Done, Ptr, Reactor};
use crate::{dma, sys, SpdkError};

/// The blobstore type Strata writes into the superblock (`bstype`).
const BSTYPE: &[u8] = b"STRATA";

#[derive(Debug, Clone)]
pub struct BlobstoreOptions {
    /// The bdev (made by a configuration loaded with [`Reactor::load_config`]).
    pub bdev: String,
    /// Cluster size for a new blobstore, bytes.
    pub cluster_bytes: u32,
    /// Make a new, empty blobstore when the bdev holds none (it erases the bdev).
    pub format: bool,
    /// The bdev takes ordinary memory (AIO, io_uring and malloc bdevs; not NVMe, whose
    /// controller needs DMA-able memory): writes and reads use the caller's buffers,
    /// which must then be io-unit aligned, with no copy through DMA buffers. Without it,
    /// only buffers in DMA-able memory ([`crate::dma::zalloc`]) go without a copy.
    pub host_buffers: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub id: u64,
    pub clusters: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

pub struct Blobstore {
    r: Arc<Reactor>,
    bs: Ptr<sys::spdk_blob_store>,
    ch: Ptr<sys::spdk_io_channel>,
    /// Descriptor and channel for FLUSH, and the bdev's block count (None: no FLUSH).
    flush: Option<(Ptr<sys::spdk_bdev_desc>, Ptr<sys::spdk_io_channel>, u64)>,
    /// Open blobs: used only on the reactor thread.
    open: Arc<Mutex<HashMap<u64, Ptr<sys::spdk_blob>>>>,
    io_unit: u64,
    cluster: u64,
    host_buffers: bool,
}

unsafe extern "C" fn bdev_event(_t: sys::spdk_bdev_event_type, _b: *mut sys::spdk_bdev, _ctx: *mut c_void) {
    // Hot removal and resize are not handled: I/O to a removed bdev fails.
}

unsafe extern "C" fn done_bs(arg: *mut c_void, bs: *mut sys::spdk_blob_store, rc: i32) {
    Done::<(i32, Ptr<sys::spdk_blob_store>)>::from_raw(arg).send((rc, Ptr(bs)))
}

unsafe extern "C" fn done_id(arg: *mut c_void, id: sys::spdk_blob_id, rc: i32) {
    Done::<(i32, u64)>::from_raw(arg).send((rc, id))
}

unsafe extern "C" fn done_blob(arg: *mut c_void, blob: *mut sys::spdk_blob, rc: i32) {
    Done::<(i32, Ptr<sys::spdk_blob>)>::from_raw(arg).send((rc, Ptr(blob)))
}

/// A write of a batch: sends `(index, errno)` to the batch's channel.
unsafe extern "C" fn done_indexed(arg: *mut c_void, rc: i32) {
    let (tx, i) = *Box::from_raw(arg as *mut (std::sync::mpsc::SyncSender<(usize, i32)>, usize));
    let _ = tx.send((i, rc));
}

unsafe extern "C" fn done_bdev_io(io: *mut sys::spdk_bdev_io, ok: bool, arg: *mut c_void) {
    sys::spdk_bdev_free_io(io);
    Done::<bool>::from_raw(arg).send(ok)
}

/// The values of a new blob's xattrs, looked up by name while the blob is created.
struct XattrCtx<'a> {
    xattrs: &'a [(CString, Vec<u8>)],
}

unsafe extern "C" fn xattr_value(ctx: *mut c_void, name: *const c_char, value: *mut *const c_void, len: *mut usize) {
    let ctx = &*(ctx as *const XattrCtx);
    let name = CStr::from_ptr(name);
    let (_, v) = ctx.xattrs.iter().find(|(n, _)| n.as_c_str() == name).expect("SPDK asks for names it was given");
    *value = v.as_ptr() as *const c_void;
    *len = v.len();
}

/// What one write of a batch sends: a copy in DMA memory, or the caller's own buffers.
enum Payload {
    Dma(DmaBuf),
    Host(HostIov),
}

/// iovecs into the caller's buffers (`host_buffers`).
struct HostIov(Vec<sys::iovec>);
// SAFETY: the pointers are only handed to SPDK on the reactor thread; the buffers they
// point into are the caller's, borrowed for the whole `write_batch` call.
unsafe impl Send for HostIov {}

/// A DMA-able buffer (freed on drop, from any thread).
struct DmaBuf {
    ptr: Ptr<u8>,
    len: usize,
}

impl DmaBuf {
    fn new(len: usize, align: usize) -> Result<DmaBuf, SpdkError> {
        // SAFETY: spdk_dma_malloc is thread-safe; a null result is checked.
        let p = unsafe { sys::spdk_dma_malloc(len, align, std::ptr::null_mut()) } as *mut u8;
        if p.is_null() {
            return Err(SpdkError::Other(format!("spdk_dma_malloc({len}) failed: DMA memory exhausted")));
        }
        Ok(DmaBuf { ptr: Ptr(p), len })
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes allocated above, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.0, self.len) }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by spdk_dma_malloc, freed once.
        unsafe { sys::spdk_dma_free(self.ptr.0 as *mut c_void) }
    }
}

/// Reads a blob's id, size and xattrs (on the reactor thread).
unsafe fn blob_info(blob: *mut sys::spdk_blob) -> BlobInfo {
    let mut names: *mut sys::spdk_xattr_names = std::ptr::null_mut();
    let mut xattrs = Vec::new();
    if sys::spdk_blob_get_xattr_names(blob, &mut names) == 0 {
        for i in 0..sys::spdk_xattr_names_get_count(names) {
            let name = sys::spdk_xattr_names_get_name(names, i);
            let mut v: *const c_void = std::ptr::null();
            let mut len = 0usize;
            if sys::spdk_blob_get_xattr_value(blob, name, &mut v, &mut len) == 0 {
                let value = std::slice::from_raw_parts(v as *const u8, len).to_vec();
                xattrs.push((CStr::from_ptr(name).to_string_lossy().into_owned(), value));
            }
        }
        sys::spdk_xattr_names_free(names);
    }
    BlobInfo { id: sys::spdk_blob_get_id(blob), clusters: sys::spdk_blob_get_num_clusters(blob), xattrs }
}

impl Blobstore {
    /// Loads the blobstore on `o.bdev` (or makes one when it holds none and `o.format`),
    /// opens every blob and returns them with the store.
    pub fn open(r: Arc<Reactor>, o: &BlobstoreOptions) -> Result<(Blobstore, Vec<BlobInfo>), SpdkError> {
        let name = CString::new(o.bdev.clone()).map_err(|_| SpdkError::Other("NUL in the bdev name".into()))?;
        let start = |init: bool, cluster: u32| {
            let name = name.clone();
            r.call(move |done: Done<(i32, Ptr<sys::spdk_blob_store>)>| unsafe {
                let mut dev: *mut sys::spdk_bs_dev = std::ptr::null_mut();
                let rc =
                    sys::spdk_bdev_create_bs_dev_ext(name.as_ptr(), Some(bdev_event), std::ptr::null_mut(), &mut dev);
                if rc != 0 {
                    return done.send((rc, Ptr(std::ptr::null_mut())));
                }
                let mut opts: sys::spdk_bs_opts = std::mem::zeroed();
                sys::spdk_bs_opts_init(&mut opts, std::mem::size_of::<sys::spdk_bs_opts>());
                for (d, s) in opts.bstype.bstype.iter_mut().zip(BSTYPE) {
                    *d = *s as c_char;
                }
                if init {
                    opts.cluster_sz = cluster;
                    sys::spdk_bs_init(dev, &mut opts, Some(done_bs), done.into_raw())
                } else {
                    sys::spdk_bs_load(dev, &mut opts, Some(done_bs), done.into_raw())
                }
            })
        };
        let (rc, bs) = start(false, 0);
        let bs = match rc {
            0 => bs,
            _ if o.format => {
                let (rc, bs) = start(true, o.cluster_bytes);
                SpdkError::check("spdk_bs_init", rc)?;
                bs
            }
            rc => {
                return Err(SpdkError::Other(format!(
                    "bdev {} holds no Strata blobstore ({}); format it to make one (this erases it)",
                    o.bdev,
                    std::io::Error::from_raw_os_error(rc.abs())
                )))
            }
        };
        let (ch, flush, io_unit, cluster) = r.call(move |done| unsafe {
            let ch = sys::spdk_bs_alloc_io_channel(bs.get());
            let mut desc: *mut sys::spdk_bdev_desc = std::ptr::null_mut();
            let mut flush = None;
            if sys::spdk_bdev_open_ext(name.as_ptr(), true, Some(bdev_event), std::ptr::null_mut(), &mut desc) == 0 {
                let bdev = sys::spdk_bdev_desc_get_bdev(desc);
                if sys::spdk_bdev_io_type_supported(bdev, sys::spdk_bdev_io_type_SPDK_BDEV_IO_TYPE_FLUSH) {
                    let fch = sys::spdk_bdev_get_io_channel(desc);
                    flush = Some((Ptr(desc), Ptr(fch), sys::spdk_bdev_get_num_blocks(bdev)));
                } else {
                    sys::spdk_bdev_close(desc);
                }
            }
            done.send((
                Ptr(ch),
                flush,
                sys::spdk_bs_get_io_unit_size(bs.get()),
                sys::spdk_bs_get_cluster_size(bs.get()),
            ))
        });
        if ch.get().is_null() {
            return Err(SpdkError::Other("spdk_bs_alloc_io_channel failed".into()));
        }
        let store =
            Blobstore { r, bs, ch, flush, open: Arc::default(), io_unit, cluster, host_buffers: o.host_buffers };
        let blobs = store.enumerate()?;
        Ok((store, blobs))
    }

    /// Every blob (`spdk_bs_iter_first/next`), then each opened and kept open.
    fn enumerate(&self) -> Result<Vec<BlobInfo>, SpdkError> {
        let bs = self.bs;
        let mut infos = Vec::new();
        let mut cur: Option<Ptr<sys::spdk_blob>> = None;
        loop {
            let (rc, blob) = self.r.call(move |done: Done<(i32, Ptr<sys::spdk_blob>)>| unsafe {
                // The iterator closes `cur` itself.
                match cur {
                    None => sys::spdk_bs_iter_first(bs.get(), Some(done_blob), done.into_raw()),
                    Some(b) => sys::spdk_bs_iter_next(bs.get(), b.get(), Some(done_blob), done.into_raw()),
                }
            });
            if rc != 0 {
                break; // -ENOENT: no more blobs
            }
            // SAFETY: the iterator's blob stays open until the next step.
            infos.push(self.r.call(move |done| unsafe { done.send(blob_info(blob.get())) }));
            cur = Some(blob);
        }
        for i in &infos {
            let id = i.id;
            let (rc, blob) = self.r.call(move |done: Done<(i32, Ptr<sys::spdk_blob>)>| unsafe {
                sys::spdk_bs_open_blob(bs.get(), id, Some(done_blob), done.into_raw())
            });
            SpdkError::check("spdk_bs_open_blob", rc)?;
            self.open.lock().insert(id, blob);
        }
        Ok(infos)
    }

    pub fn io_unit_bytes(&self) -> u64 {
        self.io_unit
    }

    pub fn cluster_bytes(&self) -> u64 {
        self.cluster
    }

    /// (total, free) data clusters.
    pub fn clusters(&self) -> (u64, u64) {
        let bs = self.bs;
        // SAFETY: counters of a live blobstore, read on the reactor thread.
        self.r.call(move |done| unsafe {
            done.send((sys::spdk_bs_total_data_cluster_count(bs.get()), sys::spdk_bs_free_cluster_count(bs.get())))
        })
    }

    fn blob(&self, id: u64) -> Result<Ptr<sys::spdk_blob>, SpdkError> {
        self.open.lock().get(&id).copied().ok_or(SpdkError::Call { call: "blob lookup", errno: libc::ENOENT })
    }

    /// Creates a blob of `clusters` clusters with `xattrs`, all persisted together.
    pub fn create_blob(&self, xattrs: &[(&str, &[u8])], clusters: u64) -> Result<u64, SpdkError> {
        let owned: Vec<(CString, Vec<u8>)> = xattrs
            .iter()
            .map(|(n, v)| {
                Ok((CString::new(*n).map_err(|_| SpdkError::Other("NUL in an xattr name".into()))?, v.to_vec()))
            })
            .collect::<Result<_, SpdkError>>()?;
        let bs = self.bs;
        let (rc, id) = self.r.call(move |done: Done<(i32, u64)>| unsafe {
            let ctx = XattrCtx { xattrs: &owned };
            let mut names: Vec<*mut c_char> = owned.iter().map(|(n, _)| n.as_ptr() as *mut c_char).collect();
            let mut opts: sys::spdk_blob_opts = std::mem::zeroed();
            sys::spdk_blob_opts_init(&mut opts, std::mem::size_of::<sys::spdk_blob_opts>());
            opts.num_clusters = clusters;
            opts.xattrs.count = names.len();
            opts.xattrs.names = names.as_mut_ptr();
            opts.xattrs.ctx = &ctx as *const XattrCtx as *mut c_void;
            opts.xattrs.get_value = Some(xattr_value);
            // The xattrs are copied into the new blob before this returns.
            sys::spdk_bs_create_blob_ext(bs.get(), &opts, Some(done_id), done.into_raw());
        });
        SpdkError::check("spdk_bs_create_blob_ext", rc)?;
        let (rc, blob) = self.r.call(move |done: Done<(i32, Ptr<sys::spdk_blob>)>| unsafe {
            sys::spdk_bs_open_blob(bs.get(), id, Some(done_blob), done.into_raw())
        });
        SpdkError::check("spdk_bs_open_blob", rc)?;
        self.open.lock().insert(id, blob);
        Ok(id)
    }

    /// Grows (or shrinks) a blob to `clusters` and persists its metadata.
    pub fn resize(&self, id: u64, clusters: u64) -> Result<(), SpdkError> {
        let b = self.blob(id)?;
        let rc = self.r.call(move |done: Done<i32>| unsafe {
            sys::spdk_blob_resize(b.get(), clusters, Some(done_errno), done.into_raw())
        });
        SpdkError::check("spdk_blob_resize", rc)?;
        self.sync_md(id)
    }

    /// Sets an xattr in memory; [`Blobstore::sync_md`] persists it.
    pub fn set_xattr(&self, id: u64, name: &str, value: &[u8]) -> Result<(), SpdkError> {
        let b = self.blob(id)?;
        let name = CString::new(name).map_err(|_| SpdkError::Other("NUL in an xattr name".into()))?;
        let value = value.to_vec();
        let rc = self.r.call(move |done: Done<i32>| unsafe {
            done.send(sys::spdk_blob_set_xattr(
                b.get(),
                name.as_ptr(),
                value.as_ptr() as *const c_void,
                value.len() as u16,
            ))
        });
        SpdkError::check("spdk_blob_set_xattr", rc)
    }

    pub fn sync_md(&self, id: u64) -> Result<(), SpdkError> {
        let b = self.blob(id)?;
        let rc = self
            .r
            .call(move |done: Done<i32>| unsafe { sys::spdk_blob_sync_md(b.get(), Some(done_errno), done.into_raw()) });
        SpdkError::check("spdk_blob_sync_md", rc)
    }

    /// Writes each `(blob, byte offset, pieces)` (io-unit aligned and sized), all at
    /// once; one result each.
    pub fn write_batch(&self, writes: &[(u64, u64, Vec<&[u8]>)]) -> Vec<Result<(), SpdkError>> {
        let unit = self.io_unit;
        let mut jobs = Vec::new();
        let mut out: Vec<Option<Result<(), SpdkError>>> = (0..writes.len()).map(|_| None).collect();
        for (i, (id, offset, bufs)) in writes.iter().enumerate() {
            let len: usize = bufs.iter().map(|b| b.len()).sum();
            let b = match self.blob(*id) {
                Ok(b) => b,
                Err(e) => {
                    out[i] = Some(Err(e));
                    continue;
                }
            };
            if !offset.is_multiple_of(unit) || !(len as u64).is_multiple_of(unit) || len == 0 {
                out[i] = Some(Err(SpdkError::Call { call: "spdk_blob_io_write (alignment)", errno: libc::EINVAL }));
                continue;
            }
            let aligned = |p: &&[u8]| (p.as_ptr() as u64).is_multiple_of(unit) && (p.len() as u64).is_multiple_of(unit);
            let direct = bufs.iter().all(aligned) && (self.host_buffers || bufs.iter().all(|p| dma::is_dma(p)));
            let data = if direct {
                let iov = bufs.iter().map(|p| sys::iovec { iov_base: p.as_ptr() as *mut c_void, iov_len: p.len() });
                Payload::Host(HostIov(iov.collect()))
            } else {
                let mut buf = match DmaBuf::new(len, unit as usize) {
                    Ok(b) => b,
                    Err(e) => {
                        out[i] = Some(Err(e));
                        continue;
                    }
                };
                let mut at = 0;
                for p in bufs {
                    buf.bytes_mut()[at..at + p.len()].copy_from_slice(p);
                    at += p.len();
                }
                dma::count_copy(len);
                Payload::Dma(buf)
            };
            jobs.push((i, b, offset / unit, len as u64 / unit, data));
        }
        let ch = self.ch;
        let (tx, rx) = sync_channel::<(usize, i32)>(jobs.len().max(1));
        let submitted: Vec<(usize, Payload)> = self.r.call(move |done: Done<Vec<(usize, Payload)>>| {
            let mut keep = Vec::new();
            for (i, b, off, n, mut data) in jobs {
                let arg = Box::into_raw(Box::new((tx.clone(), i))) as *mut c_void;
                // SAFETY: live blob and channel on the reactor thread; the payload (the
                // DMA buffer, or the iovecs and the caller's buffers they point into)
                // outlives the write: the caller keeps it, and blocks, until every
                // completion arrived.
                unsafe {
                    match &mut data {
                        Payload::Dma(buf) => sys::spdk_blob_io_write(
                            b.get(),
                            ch.get(),
                            buf.ptr.0 as *mut c_void,
                            off,
                            n,
                            Some(done_indexed),
                            arg,
                        ),
                        Payload::Host(iov) => sys::spdk_blob_io_writev(
                            b.get(),
                            ch.get(),
                            iov.0.as_mut_ptr(),
                            iov.0.len() as i32,
                            off,
                            n,
                            Some(done_indexed),
                            arg,
                        ),
                    }
                };
                keep.push((i, data));
            }
            done.send(keep)
        });
        for _ in 0..submitted.len() {
            let (i, rc) = self.r.wait(&rx);
            out[i] = Some(SpdkError::check("spdk_blob_io_write", rc));
        }
        drop(submitted);
        out.into_iter().map(|r| r.expect("every write answered")).collect()
    }

    /// Reads `buf.len()` bytes (io-unit aligned and sized) at byte `offset` of a blob.
    pub fn read(&self, id: u64, offset: u64, buf: &mut [u8]) -> Result<(), SpdkError> {
        let unit = self.io_unit;
        if !offset.is_multiple_of(unit) || !(buf.len() as u64).is_multiple_of(unit) || buf.is_empty() {
            return Err(SpdkError::Call { call: "spdk_blob_io_read (alignment)", errno: libc::EINVAL });
        }
        let b = self.blob(id)?;
        // Into `buf` itself where the bdev takes it, else through a DMA buffer.
        let direct = (buf.as_ptr() as u64).is_multiple_of(unit) && (self.host_buffers || dma::is_dma(buf));
        let bounce = match direct {
            true => None,
            false => Some(DmaBuf::new(buf.len(), unit as usize)?),
        };
        let p = bounce.as_ref().map_or(Ptr(buf.as_mut_ptr()), |d| d.ptr);
        let (n, ch) = (buf.len() as u64 / unit, self.ch);
        // SAFETY: the target (`buf` or `bounce`) outlives the read: this call waits for its
        // completion.
        let rc = self.r.call(move |done: Done<i32>| unsafe {
            sys::spdk_blob_io_read(
                b.get(),
                ch.get(),
                p.get() as *mut c_void,
                offset / unit,
                n,
                Some(done_errno),
                done.into_raw(),
            )
        });
        SpdkError::check("spdk_blob_io_read", rc)?;
        if let Some(bounce) = bounce {
            // SAFETY: `bounce` holds `buf.len()` bytes the read filled.
            buf.copy_from_slice(unsafe { std::slice::from_raw_parts(bounce.ptr.0, buf.len()) });
            dma::count_copy(buf.len());
        }
        Ok(())
    }

    /// Makes every completed write durable (bdev FLUSH), where the bdev can.
    pub fn flush(&self) -> Result<(), SpdkError> {
        let Some((desc, ch, blocks)) = self.flush else { return Ok(()) };
        let ok = self.r.call(move |done: Done<bool>| unsafe {
            let arg = done.into_raw();
            let rc = sys::spdk_bdev_flush_blocks(desc.get(), ch.get(), 0, blocks, Some(done_bdev_io), arg);
            if rc != 0 {
                Done::<bool>::from_raw(arg).send(false);
            }
        });
        if ok {
            Ok(())
        } else {
            Err(SpdkError::Call { call: "spdk_bdev_flush_blocks", errno: libc::EIO })
        }
    }

    /// Closes and deletes a blob (its clusters are free once the deletion's metadata is
    /// written).
    pub fn delete_blob(&self, id: u64) -> Result<(), SpdkError> {
        let b = self.open.lock().remove(&id).ok_or(SpdkError::Call { call: "blob lookup", errno: libc::ENOENT })?;
        let rc = self
            .r
            .call(move |done: Done<i32>| unsafe { sys::spdk_blob_close(b.get(), Some(done_errno), done.into_raw()) });
        SpdkError::check("spdk_blob_close", rc)?;
        let bs = self.bs;
        let rc = self.r.call(move |done: Done<i32>| unsafe {
            sys::spdk_bs_delete_blob(bs.get(), id, Some(done_errno), done.into_raw())
        });
        SpdkError::check("spdk_bs_delete_blob", rc)
    }

    /// Closes every blob, frees the channels and unloads the blobstore (writing its
    /// clean-shutdown state); the bdev stays.
    pub fn close(self) -> Result<(), SpdkError> {
        let blobs: Vec<Ptr<sys::spdk_blob>> = self.open.lock().drain().map(|(_, b)| b).collect();
        for b in blobs {
            let rc = self.r.call(move |done: Done<i32>| unsafe {
                sys::spdk_blob_close(b.get(), Some(done_errno), done.into_raw())
            });
            SpdkError::check("spdk_blob_close", rc)?;
        }
        let (bs, ch, flush) = (self.bs, self.ch, self.flush);
        let rc = self.r.call(move |done: Done<i32>| unsafe {
            sys::spdk_bs_free_io_channel(ch.get());
            if let Some((desc, fch, _)) = flush {
                sys::spdk_put_io_channel(fch.get());
                sys::spdk_bdev_close(desc.get());
            }
            sys::spdk_bs_unload(bs.get(), Some(done_errno), done.into_raw())
        });
        SpdkError::check("spdk_bs_unload", rc)
    }

    /// A blob's current size and xattrs.
    pub fn info(&self, id: u64) -> Result<BlobInfo, SpdkError> {
        let b = self.blob(id)?;
        Ok(self.r.call(move |done| unsafe { done.send(blob_info(b.get())) }))
    }
}
