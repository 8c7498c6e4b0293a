//! Registration with the metanode group and heartbeats of device usage.

use std::sync::Arc;
use std::time::Duration;

use client::MetaClient;
use proto::meta::{DeviceInfo, Heartbeat, MetaError, RegisterNode};
use proto::NodeId;

use crate::config::MetaConfig;
use crate::extent::ExtentStore;

/// What placement needs of each device: free bytes, and free metadata slots where the
/// store can run out of them before it runs out of bytes.
pub fn devices(store: &ExtentStore) -> Vec<DeviceInfo> {
    let slots = store.free_slots();
    store
        .device_stats()
        .iter()
        .map(|d| DeviceInfo {
            id: d.device,
            capacity_bytes: d.capacity_bytes,
            free_bytes: d.capacity_bytes.saturating_sub(d.used_bytes),
            free_slots: slots.get(d.device as usize).copied().flatten(),
        })
        .collect()
}

/// Registers with the metanode group (again whenever it forgets this node) and sends
/// device usage every heartbeat interval. Failures are logged and retried: the
/// datanode serves extents whether or not a metanode is reachable.
pub async fn run(store: Arc<ExtentStore>, id: NodeId, addr: String, meta: MetaConfig) {
    let period = Duration::from_millis(meta.heartbeat_ms);
    let c = MetaClient::with_deadline(meta.addrs.clone(), period.max(Duration::from_secs(2)));
    let mut registered = false;
    loop {
        if !registered {
            let r = RegisterNode {
                id,
                addr: addr.clone(),
                zone: meta.zone.clone(),
                rack: meta.rack.clone(),
                devices: devices(&store),
            };
            match c.register_node(&r).await {
                Ok(_) => {
                    tracing::info!("registered with the metanode as datanode {id} at {addr}");
                    registered = true;
                }
                Err(e) => tracing::warn!("registering with the metanode failed: {e}"),
            }
        } else {
            match c.heartbeat(&Heartbeat { id, devices: devices(&store) }).await {
                Ok(()) => {}
                Err(MetaError::NoSuchNode { .. }) => registered = false,
                Err(e) => tracing::warn!("heartbeat to the metanode failed: {e}"),
            }
        }
        tokio::time::sleep(period).await;
    }
}
