//! Flow expiry: removes timed-out flows (both halves) and orphaned halves from the
//! conntrack tables. The data path already ignores expired entries; this returns their
//! memory and their SNAT ports.

use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use forwarder_common::{map_names, Config, CtEntry, FlowKey, CT_COUNT_SWEPT};
use std::collections::HashMap as StdHashMap;

/// CLOCK_MONOTONIC_COARSE in ns, the clock of `bpf_ktime_get_coarse_ns` that stamps the
/// conntrack entries.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .expect("CLOCK_MONOTONIC_COARSE is always available");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// One pass over both tables; returns the number of flows removed.
pub fn sweep(ebpf: &mut Ebpf, cfg: &Config) -> anyhow::Result<usize> {
    let now = monotonic_ns();
    let mut removed = 0;
    let mut removed_established = 0u64;
    for name in [map_names::CT_EMBRYONIC, map_names::CT_ESTABLISHED] {
        let map = ebpf.map_mut(name).ok_or_else(|| anyhow::anyhow!("map {name} missing"))?;
        let mut ct: HashMap<&mut MapData, FlowKey, CtEntry> = HashMap::try_from(map)?;
        let entries: StdHashMap<FlowKey, CtEntry> = ct.iter().filter_map(Result::ok).collect();
        let mut doomed: Vec<(FlowKey, FlowKey)> = Vec::new();
        let mut orphans: Vec<(FlowKey, FlowKey)> = Vec::new();
        for (key, e) in &entries {
            match entries.get(&e.peer) {
                None => orphans.push((*key, e.peer)),
                // Each half stamps its own direction: idle means both are.
                Some(peer) if !e.is_reply() => {
                    let last = e.last_seen_ns.max(peer.last_seen_ns);
                    if now.saturating_sub(last) > cfg.timeout_ns(e.state) {
                        doomed.push((*key, e.peer));
                    }
                }
                Some(_) => {}
            }
        }
        // The walk is not atomic: a flow created or promoted meanwhile can show one half
        // without the other. Delete an orphan only if its other half is still missing
        // from both tables.
        for (key, peer) in orphans {
            if ct.get(&peer, 0).is_err() {
                // An original half goes as its flow (and is counted); a reply half alone.
                let original = entries.get(&key).is_some_and(|e| !e.is_reply());
                doomed.push(if original { (key, peer) } else { (key, key) });
            }
        }
        for (orig, reply) in doomed {
            // The original first, as the data path does. Already gone (the data path
            // removed it) is fine, and then it is not counted twice.
            if ct.remove(&orig).is_ok() && orig != reply {
                removed += 1;
                if name == map_names::CT_ESTABLISHED {
                    removed_established += 1;
                }
            }
            let _ = ct.remove(&reply);
        }
    }
    if removed_established > 0 {
        count_swept(ebpf, removed_established)?;
    }
    Ok(removed)
}

/// Adds to the established-flow count's daemon slot (the program subtracts it).
fn count_swept(ebpf: &mut Ebpf, n: u64) -> anyhow::Result<()> {
    let name = map_names::CT_COUNT;
    let map = ebpf.map_mut(name).ok_or_else(|| anyhow::anyhow!("map {name} missing"))?;
    let mut count: Array<&mut MapData, u64> = Array::try_from(map)?;
    let swept = count.get(&CT_COUNT_SWEPT, 0)?;
    count.set(CT_COUNT_SWEPT, swept + n, 0)?;
    Ok(())
}
