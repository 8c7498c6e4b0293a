//! DMA-able memory: SPDK's allocator, for buffers that a device behind a PCI driver
//! (NVMe) reads and writes directly, and the check that a buffer lies in such memory.
//! A write or read whose buffers are DMA-able goes to the device as it is; any other,
//! on a bdev that needs DMA memory, is copied through a DMA buffer (counted here).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys;

/// Zeroed DMA-able memory (`spdk_dma_zmalloc`): `len` bytes aligned to `align`. None
/// when SPDK's memory is exhausted. Only once SPDK's environment started
/// ([`crate::Reactor::start`]); callable from any thread.
pub fn zalloc(len: usize, align: usize) -> Option<NonNull<u8>> {
    // SAFETY: thread-safe allocator of the started environment; null is checked.
    NonNull::new(unsafe { sys::spdk_dma_zmalloc(len, align, std::ptr::null_mut()) } as *mut u8)
}

/// Frees memory from [`zalloc`].
///
/// # Safety
/// `p` came from [`zalloc`] and is freed once, before the process exits.
pub unsafe fn free(p: NonNull<u8>) {
    sys::spdk_dma_free(p.as_ptr() as *mut std::ffi::c_void)
}

/// Whether every byte of `buf` is memory SPDK can hand to a device (`spdk_vtophys`
/// translates it: SPDK's own allocations, or memory registered with it).
pub fn is_dma(buf: &[u8]) -> bool {
    let (mut at, end) = (buf.as_ptr() as u64, buf.as_ptr() as u64 + buf.len() as u64);
    while at < end {
        let mut size = end - at;
        // SAFETY: a lookup in SPDK's memory map; it reads nothing at the address.
        let pa = unsafe { sys::spdk_vtophys(at as *const std::ffi::c_void, &mut size) };
        if pa == u64::MAX || size == 0 {
            return false;
        }
        at += size;
    }
    !buf.is_empty()
}

static COPIED: AtomicU64 = AtomicU64::new(0);

/// Bytes copied into DMA buffers for writes and out of them for reads, since the
/// process started: 0 while every buffer handed to a device was usable as it was.
pub fn copied_bytes() -> u64 {
    COPIED.load(Ordering::Relaxed)
}

pub(crate) fn count_copy(bytes: usize) {
    COPIED.fetch_add(bytes as u64, Ordering::Relaxed);
}
