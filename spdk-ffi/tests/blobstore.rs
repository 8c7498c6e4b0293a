//! The wrappers against a real SPDK (feature `spdk`): a BlobStore on an AIO bdev over a
//! file, without hugepages. Create blobs with xattrs, grow them, write and read at
//! io-unit offsets, flush, delete; then unload, load again and find the same blobs. Once
//! through DMA buffers, once with the caller's own buffers (`host_buffers`), each from
//! io-unit aligned and from unaligned memory (which goes through DMA buffers anyway).
#![cfg(feature = "spdk")]

use std::sync::Arc;

use spdk_ffi::{Blobstore, BlobstoreOptions, EnvOptions, Reactor};

#[test]
fn blobs_survive_an_unload_and_load_on_an_aio_bdev() {
    let dir = tempfile::tempdir().unwrap();
    let mut bdevs = Vec::new();
    for name in ["aio0", "aio1"] {
        let file = dir.path().join(format!("{name}.img"));
        std::fs::File::create(&file).unwrap().set_len(256 << 20).unwrap();
        bdevs.push(format!(
            r#"{{"method": "bdev_aio_create", "params": {{"name": "{name}", "filename": "{}", "block_size": 4096}}}}"#,
            file.display()
        ));
    }
    let r = Reactor::start(&EnvOptions { name: "spdk-ffi-test".into(), ..Default::default() }).unwrap();
    r.load_config(&format!(r#"{{"subsystems": [{{"subsystem": "bdev", "config": [{}]}}]}}"#, bdevs.join(","))).unwrap();
    one_store(&r, "aio0", false);
    one_store(&r, "aio1", true);
}

/// `len` bytes at an io-unit (4 KiB) aligned address inside `store`.
fn aligned(store: &mut Vec<u8>, len: usize) -> &mut [u8] {
    *store = vec![0u8; len + 4096];
    let at = store.as_ptr().align_offset(4096);
    &mut store[at..at + len]
}

fn one_store(r: &Arc<Reactor>, bdev: &str, host_buffers: bool) {
    let opts = BlobstoreOptions { bdev: bdev.into(), cluster_bytes: 1 << 20, format: false, host_buffers };
    let refused = Blobstore::open(r.clone(), &opts).err().expect("an empty bdev is not a blobstore");
    assert!(refused.to_string().contains("format"), "{refused}");
    let (bs, blobs) = Blobstore::open(r.clone(), &BlobstoreOptions { format: true, ..opts.clone() }).unwrap();
    assert!(blobs.is_empty());
    assert_eq!(bs.io_unit_bytes(), 4096);
    assert_eq!(bs.cluster_bytes(), 1 << 20);
    let (total, free) = bs.clusters();
    assert!(total > 200 && free == total, "{total} {free}");

    let a = bs.create_blob(&[("extent", b"7"), ("epoch", b"\x01\x02")], 1).unwrap();
    let b = bs.create_blob(&[("extent", b"8")], 2).unwrap();
    bs.resize(a, 3).unwrap();
    assert_eq!(bs.info(a).unwrap().clusters, 3);
    let mut data_store = Vec::new();
    let data = aligned(&mut data_store, 3 << 20);
    for (i, x) in data.iter_mut().enumerate() {
        *x = (i * 7 + i / 4096) as u8;
    }
    let data = &*data;
    // Blob a from aligned pieces, blob b from an unaligned copy.
    let unaligned: Vec<u8> = [&[0u8][..], &data[..8192]].concat();
    let pieces: Vec<&[u8]> = data.chunks(1 << 20).collect();
    let res = bs.write_batch(&[(a, 0, pieces), (b, 4096, vec![&unaligned[1..]])]);
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    bs.flush().unwrap();
    let mut back_store = Vec::new();
    let back = aligned(&mut back_store, 3 << 20);
    bs.read(a, 0, back).unwrap();
    assert!(back == data, "blob a reads back what was written");
    let mut small = vec![0u8; 8193];
    bs.read(b, 4096, &mut small[1..]).unwrap();
    assert_eq!(&small[1..], &data[..8192]);
    // Unaligned I/O is refused, not rounded.
    assert!(bs.read(a, 100, &mut vec![0u8; 4096]).is_err());
    bs.set_xattr(b, "sealed", b"1").unwrap();
    bs.sync_md(b).unwrap();
    let c = bs.create_blob(&[], 1).unwrap();
    bs.delete_blob(c).unwrap();
    assert!(bs.info(c).is_err());
    bs.close().unwrap();

    let (bs, mut blobs) = Blobstore::open(r.clone(), &opts).unwrap();
    blobs.sort_by_key(|b| b.id);
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    assert_eq!(blobs[0].clusters, 3);
    let x = |i: usize, n: &str| blobs[i].xattrs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(x(0, "extent").as_deref(), Some(&b"7"[..]));
    assert_eq!(x(0, "epoch").as_deref(), Some(&b"\x01\x02"[..]));
    assert_eq!(x(1, "sealed").as_deref(), Some(&b"1"[..]));
    let mut back = vec![0u8; 3 << 20];
    bs.read(a, 0, &mut back).unwrap();
    assert!(back == data, "blob a after reload");
    let back = aligned(&mut back_store, 3 << 20);
    bs.read(a, 0, back).unwrap();
    assert!(back == data, "blob a after reload, into aligned memory");
    bs.close().unwrap();
}
