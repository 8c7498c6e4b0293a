//! Which backend serves the datanode's devices, and opening them: the one place above
//! which no code knows whether a device is a portable file or an SPDK bdev.

use std::path::PathBuf;
use std::sync::Arc;

use super::io::IoEngineKind;
use super::portable::{PortableOptions, PortableStore};
use super::BlobStore;

/// One device of the portable backend: a file (created when missing) or a block device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub path: PathBuf,
    /// Size of the file to create when `path` does not exist.
    pub create_bytes: u64,
    pub cluster_bytes: u64,
}

/// The SPDK backend's devices: bdevs made by `json`, each a BlobStore.
#[derive(Debug, Clone)]
pub struct SpdkConfig {
    /// SPDK JSON configuration (`{"subsystems": [...]}`) that creates the bdevs.
    pub json: String,
    pub bdevs: Vec<String>,
    /// Bdevs over files created just now: formatted without `--format`.
    pub fresh: Vec<String>,
    /// The file under each AIO or io_uring bdev (`--spdk-aio`, `--spdk-uring`): flushed
    /// with `fdatasync` from the flushing thread rather than by the bdev (SPDK's AIO bdev
    /// `fsync`s on the reactor, which stalls all I/O meanwhile; its io_uring bdev has no
    /// FLUSH at all).
    pub files: Vec<(String, std::path::PathBuf)>,
    pub mem_mb: u32,
    pub hugepages: bool,
    pub cluster_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// The portable backend's devices.
    pub devices: Vec<DeviceConfig>,
    /// The SPDK backend's bdevs instead of `devices` (feature `spdk`).
    pub spdk: Option<SpdkConfig>,
    /// Format existing devices that hold no superblock (erases them).
    pub format_existing: bool,
    /// Zero-fill device files created now (see `PortableOptions::zero_fill`).
    pub zero_fill: bool,
    pub engine: IoEngineKind,
}

/// Opens (formatting new files) every device, in order: device `i` of the datanode is
/// the `i`th store.
pub fn open(cfg: &BackendConfig) -> anyhow::Result<Vec<Arc<dyn BlobStore>>> {
    if let Some(spdk) = &cfg.spdk {
        return open_spdk(spdk, cfg.format_existing);
    }
    let mut stores: Vec<Arc<dyn BlobStore>> = Vec::new();
    for d in &cfg.devices {
        let s = PortableStore::open(&PortableOptions {
            path: d.path.clone(),
            create_bytes: d.create_bytes,
            cluster_bytes: d.cluster_bytes,
            format_existing: cfg.format_existing,
            zero_fill: cfg.zero_fill,
            engine: cfg.engine,
        })?;
        tracing::info!(
            "device {}: {} ({}, {})",
            stores.len(),
            d.path.display(),
            s.engine_name(),
            if s.is_direct() { "O_DIRECT" } else { "buffered" }
        );
        stores.push(Arc::new(s));
    }
    Ok(stores)
}

#[cfg(feature = "spdk")]
fn open_spdk(c: &SpdkConfig, format: bool) -> anyhow::Result<Vec<Arc<dyn BlobStore>>> {
    super::spdk::open_all(c, format)
}

#[cfg(not(feature = "spdk"))]
fn open_spdk(_: &SpdkConfig, _: bool) -> anyhow::Result<Vec<Arc<dyn BlobStore>>> {
    anyhow::bail!("this datanode was built without the `spdk` feature")
}
