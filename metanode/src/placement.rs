//! Where a new extent goes: a weighted random choice over healthy datanodes, weight
//! by room for new extents, never one node twice, and spread over distinct failure
//! domains (zones, else racks) whenever the cluster has enough of them.
//!
//! A device takes a new extent only if it has room for one: free bytes from its last
//! heartbeat, less a reservation for the extents placed on it since (which the
//! heartbeat does not show yet), of at least `DEVICE_ROOM_BYTES_MIN`, and a free
//! metadata slot when its store counts them. Without this a full cluster made writers
//! allocate extent after extent on devices that refused every append.

use std::collections::HashSet;

use proto::meta::{MetaError, NodeInfo, NodeState, Policy, Replica};
use proto::NodeId;
use rand::Rng;

use crate::limits::{DEVICE_ROOM_BYTES_MIN, PLACED_EXTENT_RESERVE_BYTES};

/// One device as placement sees it: the freshest report, and what was placed on it since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub id: u32,
    pub free_bytes: u64,
    /// `None` when the store does not count metadata slots.
    pub free_slots: Option<u64>,
    /// Extents placed on the device since its last heartbeat.
    pub placed: u64,
}

impl Device {
    /// Bytes a new extent can count on: each extent placed since the last heartbeat is
    /// charged `PLACED_EXTENT_RESERVE_BYTES`, and `DEVICE_ROOM_BYTES_MIN` is kept for the
    /// new one. Zero when the device cannot take a new extent.
    fn room(&self) -> u64 {
        let slots_left = self.free_slots.is_none_or(|s| s > self.placed);
        let room = self.free_bytes.saturating_sub(self.placed.saturating_mul(PLACED_EXTENT_RESERVE_BYTES));
        if slots_left && room >= DEVICE_ROOM_BYTES_MIN {
            room
        } else {
            0
        }
    }
}

/// A node as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub node: &'a NodeInfo,
    pub devices: Vec<Device>,
}

impl Candidate<'_> {
    /// The node's room for a new extent, over its devices; zero if none can take one.
    fn room(&self) -> u64 {
        self.devices.iter().map(Device::room).sum()
    }
}

/// The level at which replicas are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    Zone,
    Rack,
    Node,
}

fn domain(n: &NodeInfo, spread: Spread) -> (&str, &str, NodeId) {
    match spread {
        Spread::Zone => (&n.zone, "", NodeId(0)),
        Spread::Rack => (&n.zone, &n.rack, NodeId(0)),
        Spread::Node => ("", "", n.id),
    }
}

/// The widest spread the candidates allow for `width` replicas.
pub fn spread_for(cands: &[Candidate<'_>], width: usize) -> Spread {
    for spread in [Spread::Zone, Spread::Rack] {
        let domains: HashSet<_> = cands.iter().map(|c| domain(c.node, spread)).collect();
        if domains.len() >= width {
            return spread;
        }
    }
    Spread::Node
}

/// Chooses `policy.width()` replicas among the `Up` candidates with room for an
/// extent: `NotEnoughNodes` when too few are up, `NoSpace` when enough are up but too
/// few have room.
pub fn place(cands: &[Candidate<'_>], policy: Policy, rng: &mut impl Rng) -> Result<Vec<Replica>, MetaError> {
    let width = policy.width();
    let up = cands.iter().filter(|c| c.node.state == NodeState::Up).count();
    if up < width {
        return Err(MetaError::NotEnoughNodes { policy: policy.to_string(), need: width, have: up });
    }
    let healthy: Vec<&Candidate<'_>> = cands.iter().filter(|c| c.node.state == NodeState::Up && c.room() > 0).collect();
    if healthy.len() < width {
        return Err(MetaError::NoSpace { policy: policy.to_string(), need: width, have: healthy.len() });
    }
    let owned: Vec<Candidate<'_>> = healthy.iter().map(|c| (*c).clone()).collect();
    let spread = spread_for(&owned, width);
    let mut used_domains = HashSet::new();
    let mut chosen: Vec<Replica> = Vec::with_capacity(width);
    let mut left: Vec<&Candidate<'_>> = healthy;
    while chosen.len() < width {
        let eligible: Vec<&Candidate<'_>> =
            left.iter().copied().filter(|c| !used_domains.contains(&domain(c.node, spread))).collect();
        let c = weighted(&eligible, |c| c.room(), rng).expect("spread_for guarantees enough domains");
        used_domains.insert(domain(c.node, spread));
        let devices: Vec<&Device> = c.devices.iter().filter(|d| d.room() > 0).collect();
        let dev = weighted(&devices, Device::room, rng).expect("room() > 0");
        chosen.push(Replica { node: c.node.id, device: dev.id });
        left.retain(|o| o.node.id != c.node.id);
    }
    Ok(chosen)
}

/// Where a copy of `bytes` made by repair goes: an `Up` candidate with a device that
/// has room for it, not in `exclude` (the nodes holding, or about to hold, a copy of the
/// extent), in a failure domain none of `others` (the nodes of the copies that stay) is
/// in when there is one.
pub fn place_one(
    cands: &[Candidate<'_>],
    exclude: &[NodeId],
    others: &[&NodeInfo],
    width: usize,
    bytes: u64,
    rng: &mut impl Rng,
) -> Result<Replica, MetaError> {
    let fits = |d: &Device| d.room() > bytes;
    let healthy: Vec<&Candidate<'_>> = cands
        .iter()
        .filter(|c| c.node.state == NodeState::Up && !exclude.contains(&c.node.id) && c.devices.iter().any(fits))
        .collect();
    if healthy.is_empty() {
        return Err(MetaError::NoSpace { policy: format!("a copy of {bytes} bytes"), need: 1, have: 0 });
    }
    let spread = spread_for(cands, width);
    let taken: HashSet<_> = others.iter().map(|n| domain(n, spread)).collect();
    let apart: Vec<&Candidate<'_>> =
        healthy.iter().copied().filter(|c| !taken.contains(&domain(c.node, spread))).collect();
    let pool = if apart.is_empty() { &healthy } else { &apart };
    let c = weighted(pool, |c| c.room(), rng).expect("room() > 0");
    let devices: Vec<&Device> = c.devices.iter().filter(|d| fits(d)).collect();
    let dev = weighted(&devices, Device::room, rng).expect("room() > bytes");
    Ok(Replica { node: c.node.id, device: dev.id })
}

/// Why `place_one` found no datanode: each candidate's state, whether it was
/// excluded, and its devices' room (for the message an operator reads).
pub fn explain(cands: &[Candidate<'_>], exclude: &[NodeId]) -> String {
    cands
        .iter()
        .map(|c| {
            if exclude.contains(&c.node.id) {
                format!("{} excluded", c.node.id)
            } else if c.node.state != NodeState::Up {
                format!("{} {:?}", c.node.id, c.node.state)
            } else {
                let rooms: Vec<String> = c.devices.iter().map(|d| format!("{} MiB", d.room() >> 20)).collect();
                format!("{} room {}", c.node.id, rooms.join("/"))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One item drawn with probability proportional to its weight (all weights > 0).
fn weighted<'t, T>(items: &[&'t T], weight: impl Fn(&T) -> u64, rng: &mut impl Rng) -> Option<&'t T> {
    let total: u128 = items.iter().map(|i| weight(i) as u128).sum();
    if total == 0 {
        return None;
    }
    let mut x = rng.gen_range(0..total);
    for i in items {
        let w = weight(i) as u128;
        if x < w {
            return Some(i);
        }
        x -= w;
    }
    unreachable!("x < total")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proto::meta::DeviceInfo;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn nodes(spec: &[(u8, u8, u64, NodeState)]) -> Vec<NodeInfo> {
        spec.iter()
            .enumerate()
            .map(|(i, &(zone, rack, free, state))| NodeInfo {
                id: NodeId(i as u64 + 1),
                addr: format!("127.0.0.1:{}", 9000 + i),
                zone: format!("z{zone}"),
                rack: format!("r{rack}"),
                devices: vec![
                    DeviceInfo { id: 0, capacity_bytes: free, free_bytes: free / 2, free_slots: None },
                    DeviceInfo { id: 1, capacity_bytes: free, free_bytes: free - free / 2, free_slots: None },
                ],
                state,
                draining: state == NodeState::Draining,
            })
            .collect()
    }

    fn cands(ns: &[NodeInfo]) -> Vec<Candidate<'_>> {
        ns.iter()
            .map(|n| Candidate {
                node: n,
                devices: n
                    .devices
                    .iter()
                    .map(|d| Device { id: d.id, free_bytes: d.free_bytes, free_slots: None, placed: 0 })
                    .collect(),
            })
            .collect()
    }

    const MIB: u64 = 1 << 20;

    fn state() -> impl Strategy<Value = NodeState> {
        prop_oneof![4 => Just(NodeState::Up), 1 => Just(NodeState::Down), 1 => Just(NodeState::Draining)]
    }

    proptest! {
        #[test]
        fn replicas_are_distinct_healthy_and_spread(
            spec in prop::collection::vec((0u8..4, 0u8..3, (2 * DEVICE_ROOM_BYTES_MIN)..(1 << 40), state()), 1..16),
            width in 1u8..7,
            seed: u64,
        ) {
            let ns = nodes(&spec);
            let cs = cands(&ns);
            let policy = Policy::Replica { n: width };
            let mut rng = StdRng::seed_from_u64(seed);
            let healthy: Vec<&Candidate<'_>> = cs.iter().filter(|c| c.node.state == NodeState::Up).collect();
            match place(&cs, policy, &mut rng) {
                Err(MetaError::NotEnoughNodes { need, have, .. }) => {
                    prop_assert_eq!(need, width as usize);
                    prop_assert!(healthy.len() < need);
                    prop_assert_eq!(have, healthy.len());
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
                Ok(rs) => {
                    prop_assert_eq!(rs.len(), width as usize);
                    let ids: HashSet<NodeId> = rs.iter().map(|r| r.node).collect();
                    prop_assert_eq!(ids.len(), rs.len(), "a node twice: {:?}", rs);
                    for r in &rs {
                        let n = &ns[r.node.0 as usize - 1];
                        prop_assert_eq!(n.state, NodeState::Up);
                        prop_assert!(r.device < 2);
                    }
                    // As many distinct zones (else racks) as the healthy nodes allow.
                    let h: Vec<Candidate<'_>> = healthy.iter().map(|c| (*c).clone()).collect();
                    let spread = spread_for(&h, rs.len());
                    let doms: HashSet<_> = rs.iter().map(|r| domain(&ns[r.node.0 as usize - 1], spread)).collect();
                    prop_assert_eq!(doms.len(), rs.len());
                    if spread != Spread::Zone {
                        let zones: HashSet<&str> = healthy.iter().map(|c| c.node.zone.as_str()).collect();
                        prop_assert!(zones.len() < rs.len());
                    }
                }
            }
        }
    }

    #[test]
    fn draws_follow_free_space() {
        // One zone, so only weights matter: 1, 2, 3 and 4 units free.
        let spec: Vec<_> = (1..=4).map(|w| (0u8, 0u8, w * 1_000 * MIB, NodeState::Up)).collect();
        let ns = nodes(&spec);
        let cs = cands(&ns);
        let mut rng = StdRng::seed_from_u64(7);
        let draws = 100_000;
        let mut hits = [0u32; 4];
        for _ in 0..draws {
            let r = place(&cs, Policy::Replica { n: 1 }, &mut rng).unwrap();
            hits[r[0].node.0 as usize - 1] += 1;
        }
        for (i, &h) in hits.iter().enumerate() {
            let expect = draws as f64 * (i + 1) as f64 / 10.0;
            // Five standard deviations of a binomial count.
            let sd = (expect * (1.0 - (i + 1) as f64 / 10.0)).sqrt();
            assert!((h as f64 - expect).abs() < 5.0 * sd, "node {} drawn {h} times, expected {expect:.0}", i + 1);
        }
    }

    #[test]
    fn full_nodes_and_seeds() {
        let ns = nodes(&[
            (0, 0, 100 * MIB, NodeState::Up),
            (1, 0, 100 * MIB, NodeState::Up),
            (2, 0, 100 * MIB, NodeState::Up),
        ]);
        let mut cs = cands(&ns);
        cs[1].devices.iter_mut().for_each(|d| d.free_bytes = 0);
        let r = place(&cs, Policy::Replica { n: 3 }, &mut StdRng::seed_from_u64(1));
        assert!(matches!(r, Err(MetaError::NoSpace { need: 3, have: 2, .. })), "{r:?}");
        // Too few nodes up is another error than too few with room.
        let mut down = ns.clone();
        down[0].state = NodeState::Down;
        let r = place(&cands(&down), Policy::Replica { n: 3 }, &mut StdRng::seed_from_u64(1));
        assert!(matches!(r, Err(MetaError::NotEnoughNodes { need: 3, have: 2, .. })), "{r:?}");
        let cs = cands(&ns);
        let a = place(&cs, Policy::Ec { k: 1, m: 1 }, &mut StdRng::seed_from_u64(42)).unwrap();
        let b = place(&cs, Policy::Ec { k: 1, m: 1 }, &mut StdRng::seed_from_u64(42)).unwrap();
        assert_eq!(a, b, "the same seed places the same way");
    }

    /// A device with less than the minimum room, counting the extents placed on it
    /// since its last heartbeat, or with no metadata slot left, takes no new extent.
    #[test]
    fn room_counts_reservations_and_slots() {
        let dev = |free_bytes, free_slots, placed| Device { id: 0, free_bytes, free_slots, placed };
        assert_eq!(dev(DEVICE_ROOM_BYTES_MIN, None, 0).room(), DEVICE_ROOM_BYTES_MIN);
        assert_eq!(dev(DEVICE_ROOM_BYTES_MIN - 1, None, 0).room(), 0);
        let free = DEVICE_ROOM_BYTES_MIN + 3 * PLACED_EXTENT_RESERVE_BYTES;
        assert_eq!(dev(free, None, 3).room(), DEVICE_ROOM_BYTES_MIN);
        assert_eq!(dev(free, None, 4).room(), 0, "reserved for the extents placed since the heartbeat");
        assert_eq!(dev(free, Some(0), 0).room(), 0, "no metadata slot");
        assert_eq!(dev(free, Some(2), 2).room(), 0, "the slots left were taken since the heartbeat");
        assert!(dev(free, Some(3), 2).room() > 0);

        // On one node with two devices, placement picks the one with room, and after
        // enough placements without a heartbeat, none.
        let ns = nodes(&[(0, 0, 0, NodeState::Up)]);
        let mut cs = cands(&ns);
        cs[0].devices = vec![dev(0, None, 0), Device { id: 1, ..dev(free, Some(100), 0) }];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..4 {
            let r = place(&cs, Policy::Replica { n: 1 }, &mut rng).unwrap();
            assert_eq!(r, vec![Replica { node: NodeId(1), device: 1 }]);
            cs[0].devices[1].placed += 1;
        }
        let r = place(&cs, Policy::Replica { n: 1 }, &mut rng);
        assert!(matches!(r, Err(MetaError::NoSpace { need: 1, have: 0, .. })), "{r:?}");
        // A heartbeat (placed back to zero) that shows no slot left: still no room.
        cs[0].devices[1] = Device { id: 1, ..dev(free, Some(0), 0) };
        let r = place(&cs, Policy::Replica { n: 1 }, &mut rng);
        assert!(matches!(r, Err(MetaError::NoSpace { .. })), "{r:?}");
    }
}
