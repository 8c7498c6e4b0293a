//! What the metanode reads from a request before and after checking it: the
//! `Authorization` header, every API body type, and secrets files. No panic, and a
//! header that parses is refused by a keyring it was not made with.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use proto::auth::{metanode_allows, HttpAuth, Keyring, ReplayGuard, Role};
use proto::meta::*;

fn ring() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(Keyring::generate)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(a) = HttpAuth::parse(text) {
            let guard = ReplayGuard::default();
            let r = a.verify(ring(), &guard, "POST", "/v1/streams", b"{}", proto::auth::unix_now());
            assert!(r.is_err(), "a made-up signature was accepted");
            for role in Role::ALL {
                let _ = metanode_allows(role, "POST", text);
            }
        }
        let _ = Keyring::parse(text);
        let _ = text.parse::<Policy>();
    }
    let _ = serde_json::from_slice::<CreateStream>(data);
    let _ = serde_json::from_slice::<OpenStream>(data);
    let _ = serde_json::from_slice::<AllocateExtent>(data);
    let _ = serde_json::from_slice::<SealExtent>(data);
    let _ = serde_json::from_slice::<ReportBad>(data);
    let _ = serde_json::from_slice::<DeleteExtents>(data);
    let _ = serde_json::from_slice::<CopiesGone>(data);
    let _ = serde_json::from_slice::<RegisterNode>(data);
    let _ = serde_json::from_slice::<Heartbeat>(data);
    let _ = serde_json::from_slice::<SetNodeState>(data);
    let _ = serde_json::from_slice::<SetRebalance>(data);
    let _ = serde_json::from_slice::<Member>(data);
});
