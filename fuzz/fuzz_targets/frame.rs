//! The datanode's frame decoder and request and response decoders on arbitrary bytes:
//! no panic, and whatever decodes encodes back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::frame::{FrameHeader, HEADER_BYTES};
use proto::msg::decode_response;
use proto::Request;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER_BYTES {
        return;
    }
    let head: [u8; HEADER_BYTES] = data[..HEADER_BYTES].try_into().unwrap();
    let body = bytes::Bytes::copy_from_slice(&data[HEADER_BYTES..]);
    if let Ok(h) = FrameHeader::decode(&head) {
        if let Ok(req) = Request::decode(h.opcode, body.clone()) {
            // What decodes re-encodes to a frame that decodes to the same request.
            let (fixed, tail) = req.encode(h.request_id);
            let mut whole = fixed.to_vec();
            whole.extend_from_slice(tail.as_deref().unwrap_or_default());
            let again: [u8; HEADER_BYTES] = whole[..HEADER_BYTES].try_into().unwrap();
            let h2 = FrameHeader::decode(&again).expect("an encoded frame's header decodes");
            let back = Request::decode(h2.opcode, bytes::Bytes::copy_from_slice(&whole[HEADER_BYTES..]));
            assert_eq!(back.as_ref(), Ok(&req));
        }
        let _ = decode_response(h.opcode & 0x7f, body);
    }
});
