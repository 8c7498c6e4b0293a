//! Malformed, oversized and random frames get a refusal and lose their connection; the
//! server keeps serving every other connection.

mod common;

use bytes::{Bytes, BytesMut};
use common::{default_args, Node};
use proto::frame::{read_frame, FrameHeader, HEADER_BYTES};
use proto::msg::{decode_response, ANY_DEVICE};
use proto::{Epoch, ExtentError, ExtentId, FRAME_BODY_BYTES_MAX};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Sends `bytes` on a fresh connection; returns the refusal it got (if any) and checks
/// the server closed the connection.
async fn send_raw(node: &Node, bytes: &[u8]) -> Option<ExtentError> {
    let mut s = TcpStream::connect(node.addr).await.unwrap();
    proto::auth::client_handshake(&mut s, proto::auth::default_credential().as_ref()).await.unwrap();
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut refusal = None;
    loop {
        match read_frame(&mut s).await {
            Ok(Some((h, body))) => {
                if let Ok(Err(e)) = decode_response(h.opcode & 0x7f, body) {
                    refusal = Some(e);
                }
            }
            Ok(None) | Err(_) => return refusal,
        }
    }
}

fn header(opcode: u8, id: u64, body_len: u32) -> BytesMut {
    let mut b = BytesMut::new();
    FrameHeader { opcode, request_id: id, body_len }.encode(&mut b);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_refused_and_only_their_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), default_args(dir.path()));
    let good = node.client().await;
    good.create(ExtentId(1), Epoch(1), ANY_DEVICE).await.unwrap();

    // Oversized: refused from the header alone.
    let h = header(2, 9, FRAME_BODY_BYTES_MAX + 1);
    assert!(matches!(send_raw(&node, &h).await, Some(ExtentError::FrameTooLarge { .. })));
    // Wrong version, wrong magic.
    let mut h = header(2, 9, 0);
    h[2] = 77;
    assert_eq!(send_raw(&node, &h).await, Some(ExtentError::UnsupportedVersion { version: 77 }));
    let mut h = header(2, 9, 0);
    h[0] = 0;
    assert!(matches!(send_raw(&node, &h).await, Some(ExtentError::Malformed(_))));
    // Unknown opcode, truncated body, trailing bytes.
    assert!(matches!(send_raw(&node, &header(99, 1, 0)).await, Some(ExtentError::Malformed(_))));
    let mut h = header(1, 1, 4);
    h.extend_from_slice(&[0; 4]);
    assert!(matches!(send_raw(&node, &h).await, Some(ExtentError::Malformed(_))));
    let mut h = header(6, 1, 9);
    h.extend_from_slice(&[0; 9]);
    assert!(matches!(send_raw(&node, &h).await, Some(ExtentError::Malformed(_))));

    // Random garbage, from a printed seed: never a crash.
    let seed: u64 = rand::random();
    println!("garbage seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..200 {
        let n = rng.gen_range(1..200);
        let mut g: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        if rng.gen_bool(0.5) && g.len() >= HEADER_BYTES {
            // Valid magic and version so the body parsers see the garbage too.
            g[0..3].copy_from_slice(&[0x54, 0x53, 1]);
            let body = (g.len() - HEADER_BYTES) as u32;
            g[12..16].copy_from_slice(&body.to_le_bytes());
        }
        send_raw(&node, &g).await;
    }

    // The well-behaved connection opened before all this still works, as do new ones.
    assert_eq!(good.append(ExtentId(1), 0, Epoch(1), Bytes::from_static(b"still here")).await.unwrap(), 10);
    let fresh = node.client().await;
    assert_eq!(&fresh.read(ExtentId(1), 0, 10).await.unwrap()[..], b"still here");
    assert!(!node.log().contains("panicked"), "server log shows a panic");
}
