//! SPDK started for one test process, with one AIO bdev `aio0` over a file.
#![allow(dead_code)]

use std::sync::Arc;

use spdk_ffi::{Blobstore, BlobstoreOptions, EnvOptions, Reactor};

/// Starts SPDK (once per process) with bdev `aio0` over a new file of `bytes` in `dir`,
/// and formats a blobstore on it with 1 MiB clusters.
pub fn aio_store(dir: &std::path::Path, name: &str, bytes: u64, host_buffers: bool) -> (Arc<Reactor>, Blobstore) {
    let file = dir.join("dev.img");
    std::fs::File::create(&file).unwrap().set_len(bytes).unwrap();
    let r = Reactor::start(&EnvOptions { name: name.into(), ..Default::default() }).unwrap();
    r.load_config(&format!(
        r#"{{"subsystems": [{{"subsystem": "bdev", "config": [{{"method": "bdev_aio_create",
            "params": {{"name": "aio0", "filename": "{}", "block_size": 4096}}}}]}}]}}"#,
        file.display()
    ))
    .unwrap();
    let opts = BlobstoreOptions { bdev: "aio0".into(), cluster_bytes: 1 << 20, format: true, host_buffers };
    let (bs, _) = Blobstore::open(r.clone(), &opts).unwrap();
    (r, bs)
}
