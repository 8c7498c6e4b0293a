//! A datanode called from its own process (`Server::serve_locally`, as `ogw standalone`
//! serves its datanodes): every request gets the answer it gets over TCP, appends keep
//! their call order, and the calls do not go through the socket at all.

use std::sync::Arc;

use bytes::Bytes;
use client::{ClientError, DataNodeClient};
use datanode::blobstore::io::IoEngineKind;
use datanode::blobstore::portable::{PortableOptions, PortableStore};
use datanode::blobstore::BlobStore;
use datanode::extent::ExtentStore;
use datanode::server::Server;
use proto::msg::ANY_DEVICE;
use proto::{Epoch, ExtentId, NodeId, Request, Response, APPEND_BYTES_MAX, READ_BYTES_MAX};

/// Bytes that differ at every offset and between extents.
fn pattern(seed: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| ((i.wrapping_mul(2_654_435_761) >> 9) ^ seed.wrapping_mul(131)) as u8).collect()
}

/// What one request got, comparable across links (`Data` by its bytes).
fn answer(r: Result<Response, ClientError>) -> String {
    format!("{r:?}")
}

/// Runs the same requests on extent `e` through `c`, and returns every answer in order.
async fn script(c: &DataNodeClient, e: u64) -> Vec<String> {
    let x = ExtentId(e);
    let mut out = Vec::new();
    let mut call = async |req: Request| out.push(answer(c.call(req).await));
    call(Request::Create { extent: x, epoch: Epoch(3), device: ANY_DEVICE }).await;
    call(Request::Create { extent: x, epoch: Epoch(3), device: ANY_DEVICE }).await;
    call(Request::Create { extent: ExtentId(e + 100), epoch: Epoch(1), device: 9 }).await;
    // Pipelined appends, small and large (over 64 KiB: received into an aligned buffer
    // over TCP, copied into one here), submitted in order without waiting.
    let sizes = [5usize, 70_000, 1, 1 << 20, 300, (4 << 20) + 3, 64 << 10];
    let mut at = 0u64;
    let mut pending = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let p = pattern(i as u64, n);
        pending.push(c.submit(DataNodeClient::append_request(x, at, Epoch(3), p)));
        at += n as u64;
    }
    for p in pending {
        out.push(answer(p.await));
    }
    // Refusals: an offset behind, one ahead, an older epoch, a wrong CRC, too large.
    out.push(answer(c.call(DataNodeClient::append_request(x, 1, Epoch(3), pattern(1, 10))).await));
    out.push(answer(c.call(DataNodeClient::append_request(x, at + 1, Epoch(3), pattern(1, 10))).await));
    out.push(answer(c.call(DataNodeClient::append_request(x, at, Epoch(2), pattern(1, 10))).await));
    out.push(answer(
        c.call(Request::Append { extent: x, expected_offset: at, epoch: Epoch(3), crc32c: 7, payload: pattern(1, 10) })
            .await,
    ));
    out.push(answer(
        c.call(DataNodeClient::append_request(x, at, Epoch(3), pattern(1, APPEND_BYTES_MAX as usize + 1))).await,
    ));
    // Reads: whole, parts inside one record and across records, empty, out of range, too large.
    let mut reads = vec![(0, at), (5, 70_000), (3, 10), (70_004, 2 << 20), (at - 1, 1), (at, 0), (at - 2, 3)];
    reads.push((0, READ_BYTES_MAX as u64 + 1));
    for (off, len) in reads {
        let len = len.min(u32::MAX as u64) as u32;
        let r = c.call(Request::Read { extent: x, offset: off, len }).await;
        if let Ok(Response::Data(d)) = &r {
            let whole: Vec<u8> = sizes.iter().enumerate().flat_map(|(i, &n)| pattern(i as u64, n)).collect();
            assert_eq!(&d[..], &whole[off as usize..off as usize + len as usize], "extent {e}: bytes {off}+{len}");
            out.push(format!("{len} bytes"));
        } else {
            out.push(answer(r));
        }
    }
    out.push(answer(c.call(Request::Stat { extent: x }).await));
    out.push(answer(c.call(Request::Seal { extent: x, length: at + 1 }).await));
    out.push(answer(c.call(Request::Seal { extent: x, length: at - 1 }).await));
    out.push(answer(c.call(Request::Seal { extent: x, length: at }).await));
    out.push(answer(c.call(DataNodeClient::append_request(x, at, Epoch(3), pattern(1, 10))).await));
    out.push(answer(c.call(Request::Fence { extent: x, epoch: Epoch(4) }).await));
    out.push(answer(c.call(Request::Records { extent: x }).await));
    out.push(answer(c.call(Request::Delete { extent: x }).await));
    out.push(answer(c.call(Request::Read { extent: x, offset: 0, len: 1 }).await));
    out.push(answer(c.call(Request::Stat { extent: x }).await));
    // Answers name their extent: make the scripts of different extents comparable.
    out.iter().map(|a| a.replace(&format!("extent: {e}"), "extent: X")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_called_in_its_own_process_answers_as_over_tcp_and_uses_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PortableOptions {
        path: dir.path().join("dev"),
        create_bytes: 128 << 20,
        cluster_bytes: 1 << 20,
        format_existing: false,
        zero_fill: false,
        engine: IoEngineKind::Auto,
    };
    let blob: Arc<dyn BlobStore> = Arc::new(PortableStore::open(&opts).unwrap());
    let store = Arc::new(ExtentStore::with_stores(vec![blob], 64 << 20, APPEND_BYTES_MAX).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let srv = Arc::new(Server::new(store, NodeId(1)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(srv.clone().serve(l, async move {
        let _ = stopped.await;
    }));

    // Before it is served locally, `connect` goes over TCP.
    let tcp = DataNodeClient::connect(&addr).await.unwrap();
    let registration = srv.serve_locally(&addr);
    let local = DataNodeClient::connect(&addr).await.unwrap();
    let over_tcp = script(&tcp, 1001).await;
    let in_process = script(&local, 1002).await;
    assert_eq!(in_process.len(), over_tcp.len());
    for (i, (a, b)) in in_process.iter().zip(&over_tcp).enumerate() {
        assert_eq!(a, b, "request {i}: in process vs over TCP");
    }
    assert!(over_tcp.iter().any(|a| a.contains("Offset")), "the script includes refusals: {over_tcp:?}");

    // With the listener stopped and its connection closed, the local client still
    // works (it never used the socket) and a new `connect` still finds it ...
    drop(stop);
    serving.await.unwrap();
    drop(tcp);
    let c = DataNodeClient::connect(&addr).await.unwrap();
    assert_eq!(script(&local, 1003).await, over_tcp);
    assert_eq!(script(&c, 1004).await, over_tcp);
    // ... until it is no longer served locally: then `connect` tries TCP, and fails.
    proto::local::unregister(&addr, registration + 1);
    assert!(proto::local::get(&addr).is_some(), "only its own registration removes it");
    proto::local::unregister(&addr, registration);
    assert!(matches!(DataNodeClient::connect(&addr).await, Err(ClientError::Connection(_))));
}
