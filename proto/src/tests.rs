use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::frame::{read_frame, FrameHeader, HEADER_BYTES};
use crate::msg::{decode_response, encode_response};
use crate::*;

fn join(parts: (BytesMut, Option<Bytes>)) -> Vec<u8> {
    let mut v = parts.0.to_vec();
    if let Some(t) = parts.1 {
        v.extend_from_slice(&t);
    }
    v
}

async fn roundtrip_request(req: Request) -> Request {
    let wire = join(req.encode(77));
    let (h, body) = read_frame(&mut &wire[..]).await.unwrap().unwrap();
    assert_eq!(h.request_id, 77);
    assert_eq!(h.body_len as usize, wire.len() - HEADER_BYTES);
    Request::decode(h.opcode, body).unwrap()
}

#[tokio::test]
async fn every_request_roundtrips() {
    let reqs = vec![
        Request::Create { extent: ExtentId(1), epoch: Epoch(2), device: msg::ANY_DEVICE },
        Request::Append {
            extent: ExtentId(3),
            expected_offset: 4096,
            epoch: Epoch(9),
            crc32c: crc32c(b"hello"),
            payload: Bytes::from_static(b"hello"),
        },
        Request::Read { extent: ExtentId(3), offset: 10, len: 20 },
        Request::Seal { extent: ExtentId(3), length: 4101 },
        Request::Fence { extent: ExtentId(3), epoch: Epoch(9) },
        Request::Delete { extent: ExtentId(3) },
        Request::Stat { extent: ExtentId(3) },
        Request::List,
        Request::NodeStat,
        Request::Records { extent: ExtentId(3) },
        Request::Rebuild(Rebuild {
            extent: ExtentId(3),
            epoch: Epoch(2),
            device: msg::ANY_DEVICE,
            length: 1 << 30,
            k: 4,
            m: 2,
            slot: 5,
            sources: vec![(0, NodeId(1), "10.0.0.1:7200".into()), (3, NodeId(9), "[::1]:7201".into())],
        }),
    ];
    for r in reqs {
        assert_eq!(roundtrip_request(r.clone()).await, r);
    }
}

#[tokio::test]
async fn every_response_and_error_roundtrips() {
    let stat = ExtentStat { extent: ExtentId(5), epoch: Epoch(6), length: 7, sealed: true, cut: true, device: 1 };
    let cases: Vec<(Opcode, Result<Response, ExtentError>)> = vec![
        (Opcode::Create, Ok(Response::Done)),
        (Opcode::Append, Ok(Response::Appended { length: 12 })),
        (Opcode::Read, Ok(Response::Data(Bytes::from_static(b"xyz")))),
        (Opcode::Stat, Ok(Response::Stat(stat))),
        (Opcode::List, Ok(Response::List(vec![stat, stat]))),
        (
            Opcode::Records,
            Ok(Response::Records(vec![
                RecordStat { offset: 0, len: 4096, crc: 7 },
                RecordStat { offset: 4096, len: 17, crc: 9 },
            ])),
        ),
        (Opcode::Records, Ok(Response::Records(vec![]))),
        (Opcode::Rebuild, Ok(Response::Stat(stat))),
        (
            Opcode::NodeStat,
            Ok(Response::NodeStat(NodeStat {
                node: NodeId(4),
                devices: vec![DeviceStat { device: 0, capacity_bytes: 10, used_bytes: 3, extents: 1 }],
            })),
        ),
        (Opcode::Append, Err(ExtentError::OffsetMismatch { expected_offset: 1, length: 2 })),
        (Opcode::Read, Err(ExtentError::OutOfRange { offset: 1, len: 9, length: 2 })),
        (Opcode::Append, Err(ExtentError::Failed("disk gone".into()))),
        (Opcode::Append, Err(ExtentError::StaleEpoch { epoch: Epoch(1), current: Epoch(2) })),
    ];
    for (op, r) in cases {
        let wire = join(encode_response(op as u8, 5, &r));
        let (h, body) = read_frame(&mut &wire[..]).await.unwrap().unwrap();
        assert_eq!(h.opcode, op as u8 | frame::RESPONSE_BIT);
        assert_eq!(decode_response(op as u8, body).unwrap(), r);
    }
}

#[test]
fn header_refuses_bad_magic_version_and_oversize() {
    let mut out = BytesMut::new();
    FrameHeader { opcode: 1, request_id: 9, body_len: FRAME_BODY_BYTES_MAX + 1 }.encode(&mut out);
    let mut h: [u8; HEADER_BYTES] = out[..].try_into().unwrap();
    match FrameHeader::decode(&h) {
        Err(FrameError::Protocol { request_id: 9, error: ExtentError::FrameTooLarge { .. } }) => {}
        other => panic!("{other:?}"),
    }
    h[2] = 99;
    assert!(matches!(
        FrameHeader::decode(&h),
        Err(FrameError::Protocol { error: ExtentError::UnsupportedVersion { version: 99 }, .. })
    ));
    h[0] = 0;
    assert!(matches!(FrameHeader::decode(&h), Err(FrameError::Protocol { error: ExtentError::Malformed(_), .. })));
}

#[test]
fn truncated_and_trailing_bodies_are_malformed() {
    assert!(matches!(Request::decode(1, Bytes::from_static(&[0; 19])), Err(ExtentError::Malformed(_))));
    assert!(matches!(Request::decode(1, Bytes::from_static(&[0; 21])), Err(ExtentError::Malformed(_))));
    assert!(matches!(Request::decode(200, Bytes::new()), Err(ExtentError::Malformed(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Garbage never panics the decoders: it is either a request or a typed error.
    #[test]
    fn request_decoder_never_panics(opcode in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = Request::decode(opcode, Bytes::from(body.clone()));
        let _ = decode_response(opcode, Bytes::from(body));
    }

    #[test]
    fn frame_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut r = &bytes[..];
            // Keep reading frames until the garbage runs out or is refused.
            while let Ok(Some((h, body))) = read_frame(&mut r).await {
                prop_assert_eq!(h.body_len as usize, body.len());
                let _ = Request::decode(h.opcode, body);
            }
            Ok(())
        })?;
    }

    /// A valid append frame with one byte flipped anywhere is refused or decoded, never a panic,
    /// and its payload is never longer than what the header announced.
    #[test]
    fn mutated_append_frames(pos in 0usize..64, val in any::<u8>(), len in 0usize..40) {
        let payload = Bytes::from(vec![7u8; len]);
        let req = Request::Append { extent: ExtentId(1), expected_offset: 0, epoch: Epoch(1), crc32c: crc32c(&payload), payload };
        let mut wire = join(req.encode(1));
        if pos < wire.len() { wire[pos] = val; }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            if let Ok(Some((h, body))) = read_frame(&mut &wire[..]).await {
                if let Ok(Request::Append { payload, .. }) = Request::decode(h.opcode, body) {
                    prop_assert!(payload.len() <= h.body_len as usize);
                }
            }
            Ok(())
        })?;
    }
}
