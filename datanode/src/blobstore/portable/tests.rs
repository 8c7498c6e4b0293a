use std::os::unix::fs::FileExt;

use super::*;

fn opts(dir: &Path, engine: IoEngineKind) -> PortableOptions {
    PortableOptions {
        path: dir.join("dev.img"),
        create_bytes: 64 << 20,
        cluster_bytes: 1 << 20,
        format_existing: false,
        zero_fill: false,
        engine,
    }
}

fn pattern(len: usize, seed: u8) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(len);
    b.iter_mut().enumerate().for_each(|(i, x)| *x = (i as u8).wrapping_mul(31).wrapping_add(seed));
    b
}

fn roundtrip(engine: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), engine);
    let data = pattern(3 << 20, 7); // spans three clusters
    let id = {
        let s = PortableStore::open(&o).unwrap();
        let free0 = s.capacity().clusters_free;
        let id = s.create_blob(&[("extent", b"42")], 1).unwrap();
        s.resize(id, 3).unwrap();
        assert_eq!(s.capacity().clusters_free, free0 - 3);
        // Two pieces gathered into one write.
        let (a, b) = data.split_at(1 << 20);
        let r = s.write_batch(&[BlobWrite { blob: id, offset: 0, bufs: vec![a, b] }]);
        assert!(r.iter().all(|r| r.is_ok()));
        s.set_xattr(id, "sealed", b"yes").unwrap();
        s.sync_md(id).unwrap();
        s.flush().unwrap();
        id
    };
    let s = PortableStore::open(&o).unwrap();
    let blobs = s.blobs();
    assert_eq!(blobs.len(), 1);
    assert_eq!((blobs[0].id, blobs[0].clusters), (id, 3));
    assert_eq!(blobs[0].xattrs.get("extent").unwrap(), b"42");
    assert_eq!(blobs[0].xattrs.get("sealed").unwrap(), b"yes");
    let mut back = AlignedBuf::zeroed(data.len());
    s.read(id, 0, &mut back).unwrap();
    assert!(back[..] == data[..]);
    // Unaligned and out-of-range I/O is refused.
    let mut small = AlignedBuf::zeroed(4096);
    assert!(matches!(s.read(id, 3 << 20, &mut small), Err(BlobError::BadRange { .. })));
    assert!(matches!(s.read(id, 100, &mut small), Err(BlobError::BadRange { .. })));
}

#[test]
fn blobs_survive_reopen_with_uring() {
    roundtrip(IoEngineKind::Uring);
}

#[test]
fn blobs_survive_reopen_with_pwrite() {
    roundtrip(IoEngineKind::Sync);
}

#[test]
fn deleted_clusters_are_reused_only_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let s = PortableStore::open(&opts(dir.path(), IoEngineKind::Auto)).unwrap();
    let total = s.capacity().clusters_free;
    let a = s.create_blob(&[], total).unwrap_or_else(|_| s.create_blob(&[], BLOB_CLUSTERS_MAX.min(total)).unwrap());
    let used = total - s.capacity().clusters_free;
    assert!(used > 0);
    s.delete_blob(a).unwrap();
    assert_eq!(s.capacity().clusters_free, total - used, "freed only at the next flush");
    assert!(matches!(s.create_blob(&[], total - used + 1), Err(BlobError::NoSpace)));
    s.flush().unwrap();
    assert_eq!(s.capacity().clusters_free, total);
    drop(s);
    let s = PortableStore::open(&opts(dir.path(), IoEngineKind::Auto)).unwrap();
    assert!(s.blobs().is_empty());
    assert_eq!(s.capacity().clusters_free, total);
}

#[test]
fn a_torn_metadata_write_falls_back_to_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), IoEngineKind::Auto);
    let s = PortableStore::open(&o).unwrap();
    let id = s.create_blob(&[("v", b"1")], 1).unwrap();
    s.set_xattr(id, "v", b"2").unwrap();
    s.sync_md(id).unwrap();
    s.flush().unwrap();
    let slot = s.state.lock().slots[blob_slot(id) as usize];
    let newest = s.geo.slot_copy_offset(blob_slot(id), slot.active);
    drop(s);
    // Tear the newest copy: half old bytes, half garbage.
    let f = std::fs::OpenOptions::new().write(true).open(&o.path).unwrap();
    f.write_all_at(&[0xAB; 2048], newest + 2048).unwrap();
    let s = PortableStore::open(&o).unwrap();
    assert_eq!(s.blobs()[0].xattrs.get("v").unwrap(), b"1");
}

#[test]
fn existing_files_without_a_superblock_and_second_openers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), IoEngineKind::Auto);
    std::fs::write(&o.path, vec![1u8; 16 << 20]).unwrap();
    let e = PortableStore::open(&o).err().unwrap().to_string();
    assert!(e.contains("--format"), "{e}");
    o.format_existing = true;
    let s = PortableStore::open(&o).unwrap();
    assert!(s.blobs().is_empty());
    let e = PortableStore::open(&o).err().unwrap().to_string();
    assert!(e.contains("in use"), "{e}");
}

#[test]
fn too_small_devices_and_bad_cluster_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), IoEngineKind::Auto);
    o.create_bytes = 1 << 20;
    assert!(PortableStore::open(&o).err().unwrap().to_string().contains("too small"));
    o.path = dir.path().join("b.img");
    o.create_bytes = 64 << 20;
    o.cluster_bytes = 3000;
    assert!(PortableStore::open(&o).err().unwrap().to_string().contains("power of two"));
}
