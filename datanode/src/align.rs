//! Buffers aligned for O_DIRECT (and SPDK DMA) I/O: from the heap, or from the memory
//! an I/O backend registered with [`use_dma`] (SPDK's DMA-able memory for an NVMe
//! device, which can then write received payloads and read into pooled buffers with no
//! copy through memory of its own).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::OnceLock;

use crate::limits::POOL_BYTES_MAX;

/// The io unit every backend reads and writes in, in bytes.
pub const IO_UNIT_BYTES: u64 = 4096;

pub fn align_up(v: u64, unit: u64) -> u64 {
    debug_assert!(unit.is_power_of_two());
    (v + unit - 1) & !(unit - 1)
}

pub fn align_down(v: u64, unit: u64) -> u64 {
    debug_assert!(unit.is_power_of_two());
    v & !(unit - 1)
}

/// Where new buffers come from instead of the heap, set once by the backend at start.
#[derive(Clone, Copy)]
pub struct DmaAlloc {
    /// Zeroed memory of the given length, aligned to [`IO_UNIT_BYTES`]; None when that
    /// memory is exhausted (the buffer then comes from the heap).
    pub alloc: fn(usize) -> Option<NonNull<u8>>,
    /// Frees what `alloc` returned.
    pub free: unsafe fn(NonNull<u8>),
}

static DMA: OnceLock<DmaAlloc> = OnceLock::new();

/// Takes every buffer made from now on from `a` (once per process; a second call is
/// ignored). Buffers made before stay on the heap.
pub fn use_dma(a: DmaAlloc) {
    let _ = DMA.set(a);
}

/// A zero-initialised buffer whose address and length are multiples of `IO_UNIT_BYTES`.
/// Its length can be set anywhere up to the capacity it was allocated with, so one
/// allocation serves many writes (fresh large allocations cost a page fault per page).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    /// From [`DMA`]'s allocator, not the heap.
    dma: bool,
}

// The buffer is plain owned memory.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        assert!(len > 0 && (len as u64).is_multiple_of(IO_UNIT_BYTES), "unaligned buffer length {len}");
        if let Some(ptr) = DMA.get().and_then(|a| (a.alloc)(len)) {
            debug_assert!((ptr.as_ptr() as u64).is_multiple_of(IO_UNIT_BYTES));
            return AlignedBuf { ptr, len, cap: len, dma: true };
        }
        let layout = Self::layout(len);
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len, cap: len, dma: false }
    }

    /// Whether the buffer is in the memory of [`use_dma`]'s allocator.
    pub fn is_dma(&self) -> bool {
        self.dma
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length (aligned, at most the capacity). Bytes keep whatever they held.
    pub fn set_len(&mut self, len: usize) {
        assert!(len > 0 && len <= self.cap && (len as u64).is_multiple_of(IO_UNIT_BYTES), "bad length {len}");
        self.len = len;
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, IO_UNIT_BYTES as usize).expect("valid layout")
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for the buffer's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        match self.dma {
            // SAFETY: from this allocator (set once, never replaced), freed once.
            true => unsafe { (DMA.get().expect("set before the buffer was made").free)(self.ptr) },
            // SAFETY: allocated in `zeroed` with this layout.
            false => unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) },
        }
    }
}

/// Recycles aligned buffers: between group-commit rounds, and between reads.
pub struct BufPool {
    free: Vec<AlignedBuf>,
    free_bytes: usize,
    /// Idle bytes kept at most.
    max: usize,
}

impl Default for BufPool {
    fn default() -> BufPool {
        BufPool::keeping(POOL_BYTES_MAX)
    }
}

impl BufPool {
    /// A pool that keeps at most `max` bytes of idle buffers.
    pub fn keeping(max: usize) -> BufPool {
        BufPool { free: Vec::new(), free_bytes: 0, max }
    }

    /// A buffer of exactly `len` bytes (aligned); its contents are unspecified. The
    /// smallest idle one that fits, so that small needs leave the large buffers to large
    /// ones.
    pub fn take(&mut self, len: usize) -> AlignedBuf {
        let fits = self.free.iter().enumerate().filter(|(_, b)| b.capacity() >= len);
        match fits.min_by_key(|(_, b)| b.capacity()).map(|(i, _)| i) {
            Some(i) => {
                let mut b = self.free.swap_remove(i);
                self.free_bytes -= b.capacity();
                b.set_len(len);
                b
            }
            None => {
                // Round up so buffers fit later batches of similar size.
                let cap = if len <= 1 << 20 { len.next_power_of_two() } else { align_up(len as u64, 1 << 20) as usize };
                AlignedBuf::zeroed(cap).tap_len(len)
            }
        }
    }

    /// Keeps `b` for reuse. When the pool is full, smaller idle buffers make room for
    /// it (a burst of small needs does not keep large ones out for good).
    pub fn give(&mut self, b: AlignedBuf) {
        if b.capacity() > self.max {
            return;
        }
        while self.free_bytes + b.capacity() > self.max {
            let smallest =
                self.free.iter().enumerate().min_by_key(|(_, f)| f.capacity()).map(|(i, f)| (i, f.capacity()));
            match smallest {
                Some((i, cap)) if cap < b.capacity() => {
                    self.free_bytes -= cap;
                    self.free.swap_remove(i);
                }
                _ => return,
            }
        }
        self.free_bytes += b.capacity();
        self.free.push(b);
    }
}

impl AlignedBuf {
    fn tap_len(mut self, len: usize) -> AlignedBuf {
        self.set_len(len);
        self
    }
}

/// A buffer from a shared pool that goes back to it when dropped.
pub struct PooledBuf {
    buf: Option<AlignedBuf>,
    pool: std::sync::Arc<parking_lot::Mutex<BufPool>>,
}

impl PooledBuf {
    pub fn take(pool: &std::sync::Arc<parking_lot::Mutex<BufPool>>, len: usize) -> PooledBuf {
        let buf = pool.lock().take(len);
        PooledBuf { buf: Some(buf), pool: pool.clone() }
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = AlignedBuf;
    fn deref(&self) -> &AlignedBuf {
        self.buf.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut AlignedBuf {
        self.buf.as_mut().expect("present until drop")
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.lock().give(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AlignedBuf, BufPool};

    #[test]
    fn a_pool_gives_the_smallest_idle_buffer_that_fits_and_keeps_at_most_its_bytes() {
        let mut pool = BufPool::keeping(6 << 20);
        pool.give(AlignedBuf::zeroed(4 << 20));
        pool.give(AlignedBuf::zeroed(1 << 20));
        pool.give(AlignedBuf::zeroed(8 << 20)); // more than the pool keeps at all: dropped
        let small = pool.take(512 << 10);
        assert_eq!((small.len(), small.capacity()), (512 << 10, 1 << 20), "the 1 MiB buffer, not the 4 MiB one");
        let large = pool.take(3 << 20);
        assert_eq!(large.capacity(), 4 << 20);
        // Empty now: a fresh buffer, rounded up to whole MiB past 1 MiB.
        assert_eq!(pool.take((2 << 20) + 4096).capacity(), 3 << 20);
        // Full of small buffers, the pool drops them to keep a large one.
        for _ in 0..6 {
            pool.give(AlignedBuf::zeroed(1 << 20));
        }
        pool.give(AlignedBuf::zeroed(4 << 20));
        assert_eq!(pool.take(3 << 20).capacity(), 4 << 20, "kept in place of four small ones");
        assert_eq!(pool.take(1 << 20).capacity(), 1 << 20);
        assert_eq!(pool.take(1 << 20).capacity(), 1 << 20);
        assert_eq!(pool.take(4096).capacity(), 4096, "only two small ones were left");
    }
}
