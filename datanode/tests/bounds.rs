//! Resource bounds against authenticated but hostile peers: a peer that asks for reads
//! and never reads its socket holds at most its connection's byte budget of answers.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{default_args, Node};
use proto::msg::ANY_DEVICE;
use proto::{Epoch, ExtentId, Request, READ_BYTES_MAX};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The connection's budget (`CONNECTION_IN_FLIGHT_BYTES_MAX`, 64 MiB) plus room for the
/// socket buffers, the good client's reads and allocator slack.
const GROWTH_BYTES_MAX: u64 = 160 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_flood_from_a_peer_that_never_reads_keeps_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), default_args(dir.path()));
    let good = node.client().await;
    let e = ExtentId(1);
    good.create(e, Epoch(1), ANY_DEVICE).await.unwrap();
    let data = Bytes::from((0..READ_BYTES_MAX).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    good.append(e, 0, Epoch(1), data.clone()).await.unwrap();
    good.seal(e, data.len() as u64).await.unwrap();
    assert_eq!(good.read(e, 0, READ_BYTES_MAX).await.unwrap(), data);
    let before = node.rss_bytes();

    // 400 reads of 8 MiB (3.2 GB of answers) asked at once, none of them read.
    const READS: u64 = 400;
    let mut flood = TcpStream::connect(node.addr).await.unwrap();
    proto::auth::client_handshake(&mut flood, proto::auth::default_credential().as_ref()).await.unwrap();
    let mut out = BytesMut::new();
    for id in 1..=READS {
        let (head, _) = Request::Read { extent: e, offset: 0, len: READ_BYTES_MAX }.encode(id);
        out.extend_from_slice(&head);
    }
    flood.write_all(&out).await.unwrap();

    // While the datanode serves a good client 20 full reads (and at least 3 s, in which
    // an unbounded datanode reads gigabytes for the flood), its memory stays bounded.
    let start = Instant::now();
    let mut reads = 0;
    let mut peak = before;
    while reads < 20 || start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        assert_eq!(good.read(e, 0, READ_BYTES_MAX).await.unwrap(), data);
        assert!(t.elapsed() < Duration::from_secs(5), "a good read took {:?} during the flood", t.elapsed());
        reads += 1;
        peak = peak.max(node.rss_bytes());
        assert!(
            peak - before.min(peak) < GROWTH_BYTES_MAX,
            "the datanode grew by {} MiB (from {} MiB) under the flood",
            (peak - before) >> 20,
            before >> 20
        );
    }
    eprintln!("rss before {} MiB, peak {} MiB over {reads} good reads", before >> 20, peak >> 20);
    drop(flood);
}
