//! Hostile clients of a datanode with cluster secrets: connections that do not prove
//! they hold a secret are refused before any request, whatever the request; a client
//! may not ask for rebuilds; the datanode keeps serving authenticated clients.

mod common;

use bytes::{Bytes, BytesMut};
use client::{ClientError, DataNodeClient};
use common::{default_args, Node};
use proto::auth::{Keyring, Role};
use proto::frame::read_frame;
use proto::msg::{decode_response, ANY_DEVICE};
use proto::{Epoch, ExtentError, ExtentId, Rebuild, Request};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One request of every opcode, each of which would change or reveal something.
fn every_request() -> Vec<Request> {
    let e = ExtentId(1);
    vec![
        Request::Create { extent: ExtentId(77), epoch: Epoch(1), device: ANY_DEVICE },
        DataNodeClient::append_request(e, 5, Epoch(1), Bytes::from_static(b"evil")),
        Request::Read { extent: e, offset: 0, len: 5 },
        Request::Seal { extent: e, length: 0 },
        Request::Delete { extent: e },
        Request::Stat { extent: e },
        Request::List,
        Request::NodeStat,
        // What once left a stream unopenable until the datanode restarted.
        Request::Fence { extent: e, epoch: Epoch(u64::MAX) },
        Request::Records { extent: e },
        Request::Rebuild(rebuild(ExtentId(78), vec![])),
    ]
}

/// A rebuild of an empty replica of `extent` from `sources`.
fn rebuild(extent: ExtentId, sources: Vec<(u8, proto::NodeId, String)>) -> Rebuild {
    Rebuild { extent, epoch: Epoch(1), device: ANY_DEVICE, length: 0, k: 0, m: 0, slot: 0, sources }
}

/// Sends `req` as the first frame of a fresh connection (no handshake); returns the
/// refusal, after checking that the datanode closed the connection.
async fn unauthenticated(node: &Node, req: &Request) -> ExtentError {
    let mut s = TcpStream::connect(node.addr).await.unwrap();
    let (head, tail) = req.encode(1);
    let mut out = BytesMut::from(&head[..]);
    out.extend_from_slice(tail.as_deref().unwrap_or_default());
    let _ = s.write_all(&out).await;
    let mut refusal = None;
    loop {
        match read_frame(&mut s).await {
            Ok(Some((h, body))) => match decode_response(h.opcode & 0x7f, body) {
                Ok(Err(e)) => refusal = Some(e),
                other => panic!("{req:?} was answered without a handshake: {other:?}"),
            },
            Ok(None) | Err(_) => return refusal.unwrap_or_else(|| panic!("{req:?}: closed without a refusal")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_wrongly_keyed_peers_are_refused_for_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), default_args(dir.path()));
    let good = node.client().await;
    good.create(ExtentId(1), Epoch(1), ANY_DEVICE).await.unwrap();
    assert_eq!(good.append(ExtentId(1), 0, Epoch(1), Bytes::from_static(b"hello")).await.unwrap(), 5);
    let before = good.list().await.unwrap();

    for req in every_request() {
        // No handshake at all.
        let e = unauthenticated(&node, &req).await;
        assert!(matches!(&e, ExtentError::Unauthorized(m) if m.contains("handshake")), "{req:?}: {e:?}");
        // No secret, or another cluster's, of each role.
        let other = Keyring::generate();
        let creds = [None, other.credential(Role::Client), other.credential(Role::Node), other.credential(Role::Admin)];
        for cred in &creds {
            let r = DataNodeClient::connect_as(node.addr, cred.as_ref()).await;
            assert!(
                matches!(&r, Err(ClientError::Extent(ExtentError::Unauthorized(_)))),
                "{:?} {req:?}: {:?}",
                cred.as_ref().map(|c| c.role),
                r.as_ref().err()
            );
        }
        // The authenticated client is served meanwhile.
        assert_eq!(&good.read(ExtentId(1), 0, 5).await.unwrap()[..], b"hello");
    }
    // Nothing changed: no extent made, fenced, sealed, appended to or deleted.
    assert_eq!(good.list().await.unwrap(), before);
    assert_eq!(good.append(ExtentId(1), 5, Epoch(1), Bytes::from_static(b" world")).await.unwrap(), 11);
    let log = node.log();
    assert!(log.contains("handshake refused"), "the datanode logs refusals:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_not_ask_for_a_rebuild_but_a_node_may() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), default_args(dir.path()));
    let keys = Keyring::load(testkit::secrets()).unwrap();
    // Where a hostile client would point the datanode.
    let rebuild = rebuild(ExtentId(9), vec![(0, proto::NodeId(2), "127.0.0.1:1".into())]);
    let client = DataNodeClient::connect_as(node.addr, keys.credential(Role::Client).as_ref()).await.unwrap();
    let r = client.rebuild(rebuild.clone()).await;
    assert!(matches!(&r, Err(ClientError::Extent(ExtentError::Forbidden(_)))), "{r:?}");
    // The refusal leaves the connection up, and everything else a client does works.
    client.create(ExtentId(3), Epoch(1), ANY_DEVICE).await.unwrap();
    assert_eq!(client.append(ExtentId(3), 0, Epoch(1), Bytes::from_static(b"x")).await.unwrap(), 1);
    assert!(client.list().await.unwrap().iter().all(|s| s.extent != ExtentId(9)));
    // A node's rebuild request is taken (and fails on its own terms: no source answers).
    let peer = DataNodeClient::connect_as(node.addr, keys.credential(Role::Node).as_ref()).await.unwrap();
    let r = peer.rebuild(rebuild).await;
    assert!(!matches!(&r, Err(ClientError::Extent(ExtentError::Forbidden(_) | ExtentError::Unauthorized(_)))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_handshake_cannot_crowd_out_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), default_args(dir.path()));
    // 300 connections from another address that never say a word.
    let mut silent = Vec::new();
    for _ in 0..300 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        silent.push(s.connect(node.addr).await.unwrap());
    }
    // The cluster's own peers connect and are served meanwhile.
    for _ in 0..20 {
        let c = node.client().await;
        c.node_stat().await.unwrap();
    }
    // All but a few were closed at once; those within the handshake timeout.
    let start = std::time::Instant::now();
    let waits: Vec<_> = silent
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                let within = proto::auth::HANDSHAKE_TIMEOUT * 3;
                let r = tokio::time::timeout(within, tokio::io::AsyncReadExt::read(&mut s, &mut b)).await;
                assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "a silent connection stayed open {within:?}");
                start.elapsed()
            })
        })
        .collect();
    let mut closed_at_once = 0;
    for w in waits {
        if w.await.unwrap() < proto::auth::HANDSHAKE_TIMEOUT / 2 {
            closed_at_once += 1;
        }
    }
    assert!(closed_at_once >= 200, "only {closed_at_once} of 300 were refused at once");
    assert!(node.log().contains("too many connections from it"), "{}", node.log());
}
