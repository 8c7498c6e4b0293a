//! Buffers in SPDK's DMA-able memory go to a bdev that needs such memory without a copy;
//! heap buffers are copied through DMA buffers (feature `spdk`). The store is opened
//! without `host_buffers`, as for an NVMe controller, on an AIO bdev over a file.
#![cfg(feature = "spdk")]

mod common;

use spdk_ffi::dma;

#[test]
fn dma_buffers_are_written_and_read_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (r, bs) = common::aio_store(dir.path(), "spdk-ffi-dma", 64 << 20, false);
    let id = bs.create_blob(&[], 2).unwrap();

    const LEN: usize = 1 << 20;
    let p = dma::zalloc(LEN, 4096).expect("DMA memory");
    // SAFETY: LEN bytes from zalloc, freed at the end of the test.
    let dma_buf = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), LEN) };
    for (i, x) in dma_buf.iter_mut().enumerate() {
        *x = (i * 31 + i / 4096) as u8;
    }
    let mut heap = vec![0u8; LEN + 4096];
    let at = heap.as_ptr().align_offset(4096);
    let heap_buf = &mut heap[at..at + LEN];
    assert!(dma::is_dma(dma_buf) && dma::is_dma(&dma_buf[4096..8192]));
    assert!(!dma::is_dma(heap_buf), "heap memory is not registered with SPDK");

    // A write from DMA memory: no copy.
    let before = dma::copied_bytes();
    let res = bs.write_batch(&[(id, 0, vec![&dma_buf[..LEN / 2], &dma_buf[LEN / 2..]])]);
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    assert_eq!(dma::copied_bytes(), before, "DMA memory went to the bdev as it was");
    // The same bytes from the heap: copied once.
    heap_buf.copy_from_slice(dma_buf);
    let res = bs.write_batch(&[(id, LEN as u64, vec![&*heap_buf])]);
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    assert_eq!(dma::copied_bytes(), before + LEN as u64, "heap memory went through a DMA buffer");

    // Reads: into the heap through a DMA buffer, into DMA memory directly.
    heap_buf.fill(0);
    bs.read(id, 0, heap_buf).unwrap();
    assert_eq!(dma::copied_bytes(), before + 2 * LEN as u64);
    let expect = heap_buf.to_vec();
    dma_buf.fill(0);
    bs.read(id, LEN as u64, dma_buf).unwrap();
    assert_eq!(dma::copied_bytes(), before + 2 * LEN as u64, "read into DMA memory directly");
    assert!(dma_buf[..] == expect[..], "both halves hold the same bytes, whichever way they went");
    assert!(expect.iter().enumerate().all(|(i, &x)| x == (i * 31 + i / 4096) as u8), "and the bytes written");
    bs.close().unwrap();
    // SAFETY: from zalloc above, not used after this.
    unsafe { dma::free(p) };
    r.stop();
}
