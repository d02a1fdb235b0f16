//! Filling the maps from a [`Plan`]: the config, the rules, the listen addresses and the
//! allowed sources, each synced in place (stale keys out before new ones in, so a table near
//! its capacity can still be swapped), and the next-hop generation.
//!
//! [`RuleMaps`] is what a rule change writes, as a trait: the one seam between
//! `daemon::change::commit` and the kernel, so that the commit's order and its undo are
//! tested with a fake (as cilium's `NatMap` interface has one).

use super::{
    handles::{of, MapAccessError},
    Datapath, DatapathError,
};
use crate::plan::Plan;
use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};
use forwarder_common::{map_names, ne_addr, Config, Rule, CONFIG_FLAG_MIGRATING};
use std::collections::HashSet;

/// The maps a rule change writes: the plan's tables, and a rule's counters when its id
/// goes to a new rule.
pub trait RuleMaps {
    /// Makes the maps hold `plan`; on an error they may hold part of it.
    fn apply(&mut self, plan: &Plan) -> Result<(), DatapathError>;
    /// Sets a rule's counters to zero.
    fn reset_rule_stats(&mut self, rule_id: u16) -> Result<(), MapAccessError>;
}

impl RuleMaps for Datapath {
    fn apply(&mut self, plan: &Plan) -> Result<(), DatapathError> {
        Datapath::apply(self, plan)
    }

    fn reset_rule_stats(&mut self, rule_id: u16) -> Result<(), MapAccessError> {
        Datapath::reset_rule_stats(self, rule_id)
    }
}

impl Datapath {
    /// Makes the maps hold `plan`: rules, listen addresses and allowed sources first, the
    /// global config last, so the program never sees a config without its rules.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), DatapathError> {
        let maps = &mut self.maps;
        let rules: Vec<(u16, Rule)> =
            plan.rules.iter().filter_map(|r| r.map_value().map(|v| (r.listen, v))).collect();
        sync_hash(&mut maps.rules, map_names::RULES, &rules)?;

        let listen: Vec<(u32, u8)> =
            plan.listen_addrs.iter().flatten().map(|a| (ne_addr(*a), 1)).collect();
        sync_hash(&mut maps.listen_addrs, map_names::LISTEN_ADDRS, &listen)?;

        sync_allowed(&mut maps.allowed_sources, plan.allowed_sources.as_deref().unwrap_or(&[]))?;

        let mut value = Config { max_flows: self.max_flows, ..plan.config() };
        if self.migration.is_some() {
            value.flags |= CONFIG_FLAG_MIGRATING;
        }
        maps.config.set(0, value, 0).map_err(of(map_names::CONFIG))?;
        self.config = value;
        Ok(())
    }

    /// Records the devices under each of `interfaces` (the accelerated-networking VF under
    /// hv_netvsc's eth0), where native XDP on the interface runs with the device's ifindex
    /// as ingress; see INGRESS_MASTER in forwarder-ebpf. Returns the pairs, by name.
    pub fn set_ingress_masters(
        &mut self,
        interfaces: &[String],
    ) -> Result<Vec<(String, String)>, DatapathError> {
        let mut named = Vec::new();
        let mut want = Vec::new();
        for iface in interfaces {
            let Ok(master) = crate::host::netif::ifindex(iface) else { continue };
            for lower in crate::host::nic::lower_devices(iface) {
                if let Ok(index) = crate::host::netif::ifindex(&lower) {
                    want.push((index, master));
                    named.push((lower, iface.clone()));
                }
            }
        }
        sync_hash(&mut self.maps.ingress_master, map_names::INGRESS_MASTER, &want)?;
        Ok(named)
    }

    /// Invalidates every next hop cached in the flows: their next packet looks its route
    /// up again.
    pub fn bump_nexthop_gen(&mut self) -> Result<(), DatapathError> {
        bump_nexthop_gen(&mut self.maps.nexthop_gen).map_err(of(map_names::NEXTHOP_GEN))?;
        Ok(())
    }
}

/// Removes every key not in `want`, then inserts `want`. Stale keys go first: the maps
/// are full size (the config is checked against their capacity), so a change that
/// replaces most keys at once, near capacity, only fits once the old ones are gone.
/// A kept key is updated in place, so its packets never see it missing.
fn sync_hash<K, V>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    want: &[(K, V)],
) -> Result<(), MapAccessError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod,
{
    let keep: HashSet<&K> = want.iter().map(|(k, _)| k).collect();
    let stale: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
    for k in stale {
        map.remove(&k).map_err(of(name))?;
    }
    for (k, v) in want {
        map.insert(k, v, 0).map_err(of(name))?;
    }
    Ok(())
}

/// As [`sync_hash`] for the allowed-sources trie: stale prefixes first.
fn sync_allowed(
    trie: &mut LpmTrie<MapData, u32, u8>,
    nets: &[ipnet::Ipv4Net],
) -> Result<(), MapAccessError> {
    let name = map_names::ALLOWED_SOURCES;
    let want: Vec<(u32, u32)> =
        nets.iter().map(|n| (n.prefix_len() as u32, ne_addr(n.network()))).collect();
    let stale: Vec<Key<u32>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains(&(k.prefix_len(), k.data())))
        .collect();
    for k in stale {
        trie.remove(&k).map_err(of(name))?;
    }
    for (len, addr) in &want {
        trie.insert(&Key::new(*len, *addr), 1, 0).map_err(of(name))?;
    }
    Ok(())
}

/// Adds one to the NEXTHOP_GEN value (wrapping) and returns the new one. The daemon is its
/// only writer, the program only compares it.
pub fn bump_nexthop_gen(arr: &mut Array<MapData, u32>) -> Result<u32, aya::maps::MapError> {
    let gen = arr.get(&0, 0)?.wrapping_add(1);
    arr.set(0, gen, 0)?;
    Ok(gen)
}
