//! Both sides of the datanode handshake against a peer that sends arbitrary bytes: no
//! panic, and no arbitrary peer is ever admitted by a server with secrets.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use proto::auth::{client_handshake, server_handshake, Keyring, Role};

fn ring() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(Keyring::generate)
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    rt().block_on(async {
        let mut peer = tokio::io::join(data, tokio::io::sink());
        let admitted = server_handshake(&mut peer, Some(ring())).await;
        // Random bytes cannot hold a proof of a secret they never saw.
        assert!(admitted.is_err(), "{admitted:?}");
        let mut peer = tokio::io::join(data, tokio::io::sink());
        let _ = client_handshake(&mut peer, ring().credential(Role::Client).as_ref()).await;
    });
});
