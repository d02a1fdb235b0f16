//! Says in the log when the data path refuses new connections or drops packets for a reason
//! an operator can act on, per rule, at most once per interval: the counters only count, and
//! a NAT VM out of SNAT ports at 3 a.m. should say so in the journal. Reads the pinned
//! per-rule counters on its own, never under the daemon's lock.

use crate::daemon::ticker::Ticker;
use crate::datapath::{
    handles::{MapAccessError, RuleStatsMap},
    pins::Pins,
    stats::Totals,
};
use forwarder_common::Counter;
use std::{collections::BTreeMap, time::Duration};
use tokio_util::sync::CancellationToken;

/// The counters that mean "an operator should hear about this", with what to do.
const WATCHED: [(Counter, &str); 3] = [
    (
        Counter::DropNoSnatPort,
        "new connections dropped: every SNAT port tried was taken (widen snat_ports)",
    ),
    (
        Counter::DropTableFull,
        "new connections refused: max_flows connections are established (raise max_flows)",
    ),
    (Counter::DropNoRoute, "packets dropped: the FIB has no route to the target"),
];

/// Per rule id: its name, as the log should show it.
pub type RuleNames = Box<dyn Fn() -> BTreeMap<u16, String> + Send + Sync>;

/// `names` takes the daemon's lock: it is called in the blocking thread that reads the
/// counters, never on the runtime's.
pub async fn run(pins: Pins, every: Duration, names: RuleNames, stop: CancellationToken) {
    let rule_names = std::sync::Arc::new(names);
    let mut ticker = Ticker::new(every, stop);
    let mut last: Option<BTreeMap<u16, Totals>> = None;
    // Rules that logged drops in the last interval, to say when they stop.
    let mut dropping: BTreeMap<u16, bool> = BTreeMap::new();
    while ticker.next().await {
        let (p, n) = (pins.clone(), rule_names.clone());
        let job = tokio::task::spawn_blocking(move || {
            let names = n();
            let ids: Vec<u16> = names.keys().copied().collect();
            read(&p, &ids).map(|now| (names, now))
        });
        let (names, now) = match job.await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                tracing::debug!("reading the drop counters: {}", crate::error::chain(&e));
                continue;
            }
            Err(_) => continue,
        };
        if let Some(before) = &last {
            for (id, stats) in &now {
                let Some(prev) = before.get(id) else { continue };
                let name = names.get(id).map_or("?", String::as_str);
                let mut any = false;
                for (counter, what) in WATCHED {
                    let n = stats.get(counter).saturating_sub(prev.get(counter));
                    if n > 0 {
                        any = true;
                        tracing::warn!(rule = name, reason = counter.name(), count = n, "{what}");
                    }
                }
                if !any && dropping.get(id).copied().unwrap_or(false) {
                    tracing::info!(rule = name, "no more drops since the last look");
                }
                dropping.insert(*id, any);
            }
        }
        last = Some(now);
    }
}

/// The rules' counters summed over the CPUs, from the pinned map.
fn read(pins: &Pins, ids: &[u16]) -> Result<BTreeMap<u16, Totals>, MapAccessError> {
    let stats = RuleStatsMap::open_pinned(pins)?;
    ids.iter().map(|&id| Ok((id, stats.totals(id)?))).collect()
}
