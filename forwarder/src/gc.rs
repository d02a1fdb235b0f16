//! Flow expiry: removes timed-out flows (both halves) and orphaned halves from the
//! conntrack tables. The data path already ignores expired entries; this returns their
//! memory and their SNAT ports.

use aya::{
    maps::{HashMap, MapData},
    Ebpf,
};
use forwarder_common::{map_names, Config, CtEntry, FlowKey};

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// One pass over both tables; returns the number of flows removed.
pub fn sweep(ebpf: &mut Ebpf, cfg: &Config) -> anyhow::Result<usize> {
    let now = monotonic_ns();
    let mut removed = 0;
    for name in [map_names::CT_EMBRYONIC, map_names::CT_ESTABLISHED] {
        let map = ebpf.map_mut(name).ok_or_else(|| anyhow::anyhow!("map {name} missing"))?;
        let mut ct: HashMap<&mut MapData, FlowKey, CtEntry> = HashMap::try_from(map)?;
        let mut doomed: Vec<FlowKey> = Vec::new();
        let mut orphans: Vec<(FlowKey, FlowKey)> = Vec::new();
        let entries: Vec<(FlowKey, CtEntry)> = ct.iter().filter_map(Result::ok).collect();
        let keys: std::collections::HashSet<FlowKey> = entries.iter().map(|(k, _)| *k).collect();
        for (key, e) in &entries {
            if e.is_reply() {
                if !keys.contains(&e.peer) {
                    orphans.push((*key, e.peer));
                }
            } else if now.saturating_sub(e.last_seen_ns) > cfg.timeout_ns(e.state) {
                doomed.push(*key);
                doomed.push(e.peer);
                removed += 1;
            }
        }
        // The walk is not atomic: a flow created or promoted meanwhile can show its reply
        // half without its master. Delete an orphan only if its master is still missing.
        for (key, master) in orphans {
            if ct.get(&master, 0).is_err() {
                doomed.push(key);
            }
        }
        for k in doomed {
            // Already gone (the data path or LRU removed it) is fine.
            let _ = ct.remove(&k);
        }
    }
    Ok(removed)
}
