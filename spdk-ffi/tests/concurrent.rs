//! Many threads call one blobstore at once (feature `spdk`): each waiting caller polls
//! the SPDK thread itself when no other thread does, and hands over to the others or
//! the reactor thread when one does. Every write reads back as written, from each
//! thread, with small I/O (answered while the caller polls) and large (long enough
//! that callers give up polling and block).
#![cfg(feature = "spdk")]

use std::sync::Arc;

mod common;

#[test]
fn concurrent_callers_each_get_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (r, bs) = common::aio_store(dir.path(), "spdk-ffi-concurrent", 256 << 20, true);
    let bs = Arc::new(bs);
    let threads: Vec<_> = (0..6u8)
        .map(|t| {
            let bs = bs.clone();
            std::thread::spawn(move || {
                let id = bs.create_blob(&[("thread", &[t])], 8).unwrap();
                let mut buf = vec![0u8; (4 << 20) + 4096];
                let at = buf.as_ptr().align_offset(4096);
                for round in 0..60u32 {
                    // 4 KiB to 4 MiB: both sides of the callers' polling budget.
                    let len = 4096usize << (round % 11);
                    let off = (round as u64 % 4) << 20;
                    let data = &mut buf[at..at + len];
                    data.iter_mut().enumerate().for_each(|(i, x)| *x = (i as u32 ^ round ^ (t as u32 * 7919)) as u8);
                    let res = bs.write_batch(&[(id, off, vec![&data[..]])]);
                    assert!(res[0].is_ok(), "{res:?}");
                    let expect = data.to_vec();
                    data.fill(0);
                    bs.read(id, off, data).unwrap();
                    assert!(data[..] == expect[..], "thread {t} round {round}: {len} bytes at {off} read back");
                    let (total, free) = bs.clusters();
                    assert!(free < total);
                }
                id
            })
        })
        .collect();
    let ids: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (t, id) in ids.iter().enumerate() {
        let info = bs.info(*id).unwrap();
        assert_eq!((info.clusters, info.xattrs[0].1.clone()), (8, vec![t as u8]));
    }
    Arc::try_unwrap(bs).ok().expect("one owner left").close().unwrap();
    r.stop();
}
