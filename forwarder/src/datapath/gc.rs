//! Flow expiry: removes timed-out flows (both halves) and orphaned halves from the
//! conntrack tables. The data path already ignores expired entries; this returns their
//! memory and their SNAT ports.
//!
//! The daemon sweeps in a task of its own (`daemon::flow_expiry`), on map handles opened
//! from the pins, so a long sweep (a million flows) holds no lock and delays neither signals
//! nor control requests.

use crate::{
    datapath::{
        batch,
        handles::{of, Conntrack, MapAccessError},
        pins::Pins,
    },
    host::clock::monotonic_ns,
};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError};
use forwarder_common::{map_names, Config, CtEntry, FlowKey, CT_COUNT_KERNEL, CT_COUNT_SWEPT};
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

/// How many flows a sweep removes between two looks at its stop flag (and per count update).
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
    /// One pass over both tables, the established one first; returns the number of flows
    /// removed. Stops early, with what it removed counted, once `halt` is set.
    ///
    /// Established first: under a SYN flood the embryonic table is full and churning, and
    /// idle established flows must still expire on time (a key walk of the churning table,
    /// as this was before the batch reads, could keep starting over and never get there).
    pub fn sweep(&mut self, cfg: &Config, halt: &AtomicBool) -> Result<usize, MapAccessError> {
        let now = monotonic_ns();
        let kernel_before = self.count.get(&CT_COUNT_KERNEL, 0).map_err(of(map_names::CT_COUNT))?;
        let established = sweep_table(
            map_names::CT_ESTABLISHED,
            &mut self.established,
            Some(&mut self.count),
            cfg,
            now,
            halt,
        )?;
        if let Some(left) = established.originals_left {
            reconcile(&mut self.count, kernel_before, left)?;
        }
        let embryonic =
            sweep_table(map_names::CT_EMBRYONIC, &mut self.embryonic, None, cfg, now, halt)?;
        Ok(established.removed + embryonic.removed)
    }
}

/// What a pass over one table did.
struct TableSweep {
    removed: usize,
    /// Original halves the table still holds by the walk's account, when the pass ran to
    /// its end.
    originals_left: Option<u64>,
}

/// One pass over one table. With `count` (the established table), each batch of removed
/// flows is added to the swept count before the removals: a daemon killed between the two
/// leaves the count low, which costs nothing (the table's own size is the limit), where
/// the other order left it high for good (SYNs refused as "table full" with room in the
/// table). The next sweep's [`reconcile`] puts it right either way.
fn sweep_table(
    name: &'static str,
    ct: &mut BpfHashMap<MapData, FlowKey, CtEntry>,
    mut count: Option<&mut Array<MapData, u64>>,
    cfg: &Config,
    now: u64,
    halt: &AtomicBool,
) -> Result<TableSweep, MapAccessError> {
    let halted = || halt.load(Ordering::Relaxed);
    // A batch read visits each bucket once (see `batch`).
    let entries: HashMap<FlowKey, CtEntry> = batch::table(name, ct)?.0.into_iter().collect();
    if halted() {
        return Ok(TableSweep { removed: 0, originals_left: None });
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
    // without the other. Delete an orphan only if its other half is still missing from
    // both tables, or is another flow's; it goes alone (that flow stays), and an original
    // half is counted as its flow.
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
    let originals = entries.values().filter(|e| !e.is_reply()).count() as u64;
    let mut removed = 0;
    let mut finished = true;
    for batch in doomed.chunks(STOP_CHECK_EVERY) {
        if halted() {
            finished = false;
            break;
        }
        let originals_here = batch.iter().filter(|d| d.original).count() as u64;
        if let Some(c) = count.as_deref_mut() {
            count_swept(c, originals_here as i64).map_err(of(map_names::CT_COUNT))?;
        }
        let mut gone_already = 0;
        for d in batch {
            // The original first, as the data path does. Already gone (the data path
            // removed it, and counted it) is fine, and then it is not counted twice.
            match ct.remove(&d.key) {
                Ok(()) if d.original => removed += 1,
                Ok(()) => {}
                Err(_) if d.original => gone_already += 1,
                Err(_) => {}
            }
            if let Some(reply) = d.then {
                let _ = ct.remove(&reply);
            }
        }
        if let Some(c) = count.as_deref_mut() {
            if gone_already > 0 {
                count_swept(c, -gone_already).map_err(of(map_names::CT_COUNT))?;
            }
        }
    }
    let originals_left = finished.then(|| originals.saturating_sub(removed as u64));
    Ok(TableSweep { removed, originals_left })
}

/// Puts the established-flow count right when it disagrees with the table: a daemon
/// killed between removing flows and counting them (before the count came first), or a
/// count damaged some other way. The table's original halves are the truth; the program's
/// slot changes only by its own atomic adds, so the daemon's slot takes the difference.
/// Only when the program's slot did not move during the walk (no promotion or deletion by
/// the data path raced it); otherwise the next sweep tries again.
fn reconcile(
    count: &mut Array<MapData, u64>,
    kernel_before: u64,
    originals: u64,
) -> Result<(), MapAccessError> {
    let kernel = count.get(&CT_COUNT_KERNEL, 0).map_err(of(map_names::CT_COUNT))?;
    let swept = count.get(&CT_COUNT_SWEPT, 0).map_err(of(map_names::CT_COUNT))?;
    let counted = kernel.wrapping_sub(swept);
    if kernel != kernel_before || counted == originals {
        return Ok(());
    }
    count
        .set(CT_COUNT_SWEPT, kernel.wrapping_sub(originals), 0)
        .map_err(of(map_names::CT_COUNT))?;
    tracing::warn!(
        counted = counted as i64,
        in_table = originals,
        "the established-flow count disagreed with the table; set to the table's"
    );
    Ok(())
}

/// Adds `n` (negative: takes back) to the established-flow count's daemon slot, which the
/// program subtracts from its own.
fn count_swept(count: &mut Array<MapData, u64>, n: i64) -> Result<(), MapError> {
    let swept = count.get(&CT_COUNT_SWEPT, 0)?;
    count.set(CT_COUNT_SWEPT, swept.wrapping_add_signed(n), 0)
}
