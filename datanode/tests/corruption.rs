//! A byte flipped in the backing file under a sealed extent makes reads of that range
//! fail with a checksum error, before and after a restart, while other ranges still read.

mod common;

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use client::ClientError;
use common::Node;
use proto::{Epoch, ExtentError, ExtentId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_under_a_sealed_extent_is_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev0.img");
    let mut node = Node::start(dir.path(), vec!["--device".into(), format!("{}:64M", dev.display())]);
    let c = node.client().await;
    c.create(ExtentId(1), Epoch(1), 0).await.unwrap();
    let first = Bytes::from(common::content(1, 1, 0, 10_000));
    let mut marked = b"CORRUPT-ME-HERE:".to_vec();
    marked.extend_from_slice(&common::content(1, 1, 10_000, 20_000));
    let third = Bytes::from(common::content(1, 1, 30_016, 5_000));
    let mut off = c.append(ExtentId(1), 0, Epoch(1), first.clone()).await.unwrap();
    off = c.append(ExtentId(1), off, Epoch(1), Bytes::from(marked.clone())).await.unwrap();
    off = c.append(ExtentId(1), off, Epoch(1), third.clone()).await.unwrap();
    // A 1 MiB record, stored with a CRC per 64 KiB chunk.
    let big_at = off;
    let mut big = b"CHUNKED-RECORD:!".to_vec();
    big.extend_from_slice(&common::content(1, 1, big_at + 16, (1 << 20) - 16));
    off = c.append(ExtentId(1), off, Epoch(1), Bytes::from(big.clone())).await.unwrap();
    c.seal(ExtentId(1), off).await.unwrap();
    assert_eq!(&c.read(ExtentId(1), 10_000, 20_016).await.unwrap()[..], &marked[..]);

    // Find the marked record in the device file and flip one byte inside it.
    let image = std::fs::read(&dev).unwrap();
    let at = image.windows(16).position(|w| w == b"CORRUPT-ME-HERE:").expect("record is on the device");
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    f.write_all_at(&[image[at + 5000] ^ 0x20], (at + 5000) as u64).unwrap();
    // And one byte inside chunk 5 of the big record.
    let big_phys = image.windows(16).position(|w| w == b"CHUNKED-RECORD:!").expect("big record on the device");
    let chunk5 = 5 * (64 << 10);
    f.write_all_at(&[image[big_phys + chunk5 + 100] ^ 0x01], (big_phys + chunk5 + 100) as u64).unwrap();
    f.sync_all().unwrap();

    let corrupt = |r: Result<Bytes, ClientError>| match r {
        Err(ClientError::Extent(ExtentError::ChecksumMismatch { offset })) => offset,
        other => panic!("expected a checksum error, got {other:?}"),
    };
    assert_eq!(corrupt(c.read(ExtentId(1), 12_000, 10).await), 10_000);
    assert_eq!(corrupt(c.read(ExtentId(1), 0, off as u32).await), 10_000);
    // The records around it are intact and still served.
    assert_eq!(c.read(ExtentId(1), 0, 10_000).await.unwrap(), first);
    assert_eq!(c.read(ExtentId(1), 30_016, 5_000).await.unwrap(), third);
    // Within the big record only reads that touch chunk 5 fail, and they name it.
    let chunk5 = 5 * (64 << 10) as u64;
    assert_eq!(c.read(ExtentId(1), big_at, chunk5 as u32).await.unwrap(), &big[..chunk5 as usize]);
    assert_eq!(
        &c.read(ExtentId(1), big_at + chunk5 + (64 << 10), 4096).await.unwrap()[..],
        &big[chunk5 as usize + (64 << 10)..][..4096]
    );
    assert_eq!(corrupt(c.read(ExtentId(1), big_at + chunk5 + 50, 100).await), big_at + chunk5);
    assert_eq!(corrupt(c.read(ExtentId(1), big_at + chunk5 - 10, 20).await), big_at + chunk5);

    // After a restart the sealed extent keeps its length and still refuses the bad range.
    drop(c);
    node.restart();
    let c = node.client().await;
    let s = c.stat(ExtentId(1)).await.unwrap();
    assert!(s.sealed);
    assert_eq!(s.length, off);
    assert_eq!(corrupt(c.read(ExtentId(1), 15_000, 100).await), 10_000);
    assert_eq!(c.read(ExtentId(1), 30_016, 5_000).await.unwrap(), third);
    assert!(node.log().contains("fail their checksum"), "recovery reports the corruption");
}
