//! Buffers come from the allocator a backend registers (SPDK's DMA-able memory for an
//! NVMe device), go back to it when dropped, and come from the heap when it has none
//! left. Its own process: the allocator is set once per process.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datanode::align::{use_dma, AlignedBuf, BufPool, DmaAlloc, PooledBuf};

static LIVE: Mutex<Option<HashMap<usize, usize>>> = Mutex::new(None);
static FREED: AtomicUsize = AtomicUsize::new(0);
/// The fake DMA memory refuses anything larger (as when SPDK's memory runs out).
const BIGGEST: usize = 1 << 20;

fn layout(len: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(len, 4096).unwrap()
}

fn alloc(len: usize) -> Option<NonNull<u8>> {
    if len > BIGGEST {
        return None;
    }
    // SAFETY: non-zero size.
    let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout(len)) })?;
    LIVE.lock().unwrap().get_or_insert_default().insert(p.as_ptr() as usize, len);
    Some(p)
}

unsafe fn free(p: NonNull<u8>) {
    let len = LIVE.lock().unwrap().as_mut().unwrap().remove(&(p.as_ptr() as usize)).expect("freed once, ours");
    std::alloc::dealloc(p.as_ptr(), layout(len));
    FREED.fetch_add(1, Ordering::SeqCst);
}

fn live() -> usize {
    LIVE.lock().unwrap().as_ref().map_or(0, |m| m.len())
}

#[test]
fn buffers_come_from_the_registered_allocator_and_go_back_to_it() {
    let before = AlignedBuf::zeroed(8192);
    assert!(!before.is_dma());
    use_dma(DmaAlloc { alloc, free });

    let b = AlignedBuf::zeroed(64 << 10);
    assert!(b.is_dma() && b.iter().all(|&x| x == 0));
    assert_eq!(live(), 1);
    drop(b);
    assert_eq!((live(), FREED.load(Ordering::SeqCst)), (0, 1), "given back to the allocator");
    drop(before); // a heap buffer made earlier still goes back to the heap
    assert_eq!(FREED.load(Ordering::SeqCst), 1);

    // Through a pool, as the datanode receives payloads: kept while pooled, then freed.
    let pool = Arc::new(parking_lot::Mutex::new(BufPool::keeping(2 << 20)));
    let p = PooledBuf::take(&pool, 1 << 20);
    assert!(p.is_dma());
    drop(p);
    assert_eq!(live(), 1, "idle in the pool");
    assert!(PooledBuf::take(&pool, 512 << 10).is_dma(), "the pooled buffer again");
    assert_eq!(live(), 1);
    drop(pool);
    assert_eq!(live(), 0);

    // Larger than that memory has: the heap.
    let big = AlignedBuf::zeroed(2 << 20);
    assert!(!big.is_dma());
    drop(big);
    assert_eq!((live(), FREED.load(Ordering::SeqCst)), (0, 2));
}
