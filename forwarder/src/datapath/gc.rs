//! Flow expiry: removes timed-out flows (both halves) and orphaned halves from the
//! conntrack tables. The data path already ignores expired entries; this returns their
//! memory and their SNAT ports.
//!
//! The daemon sweeps in a task of its own (`daemon::flow_expiry`), on map handles opened
//! from the pins, so a long sweep (a million flows) holds no lock and delays neither signals
//! nor control requests.

use crate::{
    datapath::{
        handles::{of, Conntrack, MapAccessError},
        pins::Pins,
    },
    host::clock::monotonic_ns,
};
use aya::maps::{Array, MapData, MapError};
use forwarder_common::{map_names, Config, CtEntry, FlowKey, CT_COUNT_SWEPT};
use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

/// A half the sweep deletes: `original` halves count as a flow removed; `then` is the
/// reply half of an expired flow, deleted after its original.
struct Doomed {
    key: FlowKey,
    original: bool,
    then: Option<FlowKey>,
}

/// How many entries a sweep handles between two looks at its stop flag.
const STOP_CHECK_EVERY: usize = 1024;

impl crate::datapath::Datapath {
    /// One expiry pass over both tables; returns the number of flows removed.
    pub fn sweep(&mut self, cfg: &Config) -> Result<usize, MapAccessError> {
        self.maps.conntrack.sweep(cfg, &AtomicBool::new(false))
    }
}

/// One pass over the tables pinned at `pins`, on handles of its own (no lock, no `Ebpf`):
/// what the daemon's flow-expiry task runs in a blocking thread. Stops early, with what it
/// removed counted, once `halt` is set.
pub fn sweep_pinned(pins: &Pins, cfg: &Config, halt: &AtomicBool) -> Result<usize, MapAccessError> {
    Conntrack::open_pinned(pins)?.sweep(cfg, halt)
}

impl Conntrack {
    /// One pass over both tables; returns the number of flows removed. Stops early, with
    /// what it removed counted, once `halt` is set.
    pub fn sweep(&mut self, cfg: &Config, halt: &AtomicBool) -> Result<usize, MapAccessError> {
        let t = self;
        let now = monotonic_ns();
        let mut removed = 0;
        let mut removed_established = 0u64;
        let halted = || halt.load(Ordering::Relaxed);
        for (name, ct) in [
            (map_names::CT_EMBRYONIC, &mut t.embryonic),
            (map_names::CT_ESTABLISHED, &mut t.established),
        ] {
            let mut entries: HashMap<FlowKey, CtEntry> = HashMap::new();
            for (i, kv) in ct.iter().enumerate() {
                if i % STOP_CHECK_EVERY == 0 && halted() {
                    break;
                }
                if let Ok((k, v)) = kv {
                    entries.insert(k, v);
                }
            }
            // A partial walk would take halves whose peer it has not reached for orphans.
            if halted() {
                break;
            }
            let mut doomed: Vec<Doomed> = Vec::new();
            let mut orphans: Vec<(FlowKey, FlowKey)> = Vec::new();
            for (key, e) in &entries {
                match entries.get(&e.peer) {
                    // Missing, or another flow's half now (a new flow took the key after this
                    // half's partner went): this half is alone.
                    None => orphans.push((*key, e.peer)),
                    Some(peer) if peer.peer != *key => orphans.push((*key, e.peer)),
                    // Each half stamps its own direction: idle means both are.
                    Some(peer) if !e.is_reply() => {
                        let last = e.last_seen_ns.max(peer.last_seen_ns);
                        if now.saturating_sub(last) > cfg.timeout_ns(e.state) {
                            doomed.push(Doomed { key: *key, original: true, then: Some(e.peer) });
                        }
                    }
                    Some(_) => {}
                }
            }
            // The walk is not atomic: a flow created or promoted meanwhile can show one half
            // without the other. Delete an orphan only if its other half is still missing
            // from both tables, or is another flow's; it goes alone (that flow stays), and
            // an original half is counted as its flow.
            for (key, peer) in orphans {
                let alone = match ct.get(&peer, 0) {
                    Err(_) => true,
                    Ok(p) => p.peer != key,
                };
                if alone {
                    let original = entries.get(&key).is_some_and(|e| !e.is_reply());
                    doomed.push(Doomed { key, original, then: None });
                }
            }
            for (i, d) in doomed.into_iter().enumerate() {
                if i % STOP_CHECK_EVERY == 0 && halted() {
                    break;
                }
                // The original first, as the data path does. Already gone (the data path
                // removed it) is fine, and then it is not counted twice.
                if ct.remove(&d.key).is_ok() && d.original {
                    removed += 1;
                    if name == map_names::CT_ESTABLISHED {
                        removed_established += 1;
                    }
                }
                if let Some(reply) = d.then {
                    let _ = ct.remove(&reply);
                }
            }
        }
        if removed_established > 0 {
            count_swept(&mut t.count, removed_established).map_err(of(map_names::CT_COUNT))?;
        }
        Ok(removed)
    }
}

/// Adds to the established-flow count's daemon slot (the program subtracts it).
fn count_swept(count: &mut Array<MapData, u64>, n: u64) -> Result<(), MapError> {
    let swept = count.get(&CT_COUNT_SWEPT, 0)?;
    count.set(CT_COUNT_SWEPT, swept + n, 0)
}
