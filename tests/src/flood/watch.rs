//! Samples of the contender's table fill while the flood runs: for the forwarder what
//! `forwarder status --json` and the metrics endpoint report (each within its capacity on
//! every sample), for iptables netfilter's conntrack count.

use super::bed::{Bed, Contender};
use crate::daemon_tests::{gauges, scrape_metrics, METRICS};
use anyhow::{Context, Result};
use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

const EVERY: Duration = Duration::from_millis(500);
const MAX_SAMPLES: usize = 2000;

#[derive(Clone, Debug, Default)]
pub struct Samples {
    pub taken: usize,
    /// Forwarder: the most flows `status --json` reported, and the most the tables hold
    /// (max_flows established plus the embryonic table's flows).
    pub max_active_flows: u64,
    pub flows_capacity: u64,
    /// Forwarder: per table, the most entries the metrics reported, and the capacity.
    pub tables: BTreeMap<String, (u64, u64)>,
    /// Samples that reported more than a capacity (must stay empty).
    pub over: Vec<String>,
    /// iptables: the most conntrack entries seen, and nf_conntrack_max.
    pub conntrack_max_count: u64,
    pub conntrack_max: u64,
}

/// Samples every EVERY until `stop` (bounded in count).
pub fn sample(bed: &Bed, stop: &AtomicBool) -> Result<Samples> {
    let mut s = Samples::default();
    if bed.contender == Contender::Iptables {
        s.conntrack_max = bed.natvm_sysctl("net.netfilter.nf_conntrack_max")?;
    }
    while !stop.load(Ordering::Relaxed) && s.taken < MAX_SAMPLES {
        let t = Instant::now();
        match bed.contender {
            Contender::ForwarderXdp => forwarder(bed, &mut s)?,
            Contender::Iptables => {
                let n = bed.natvm_sysctl("net.netfilter.nf_conntrack_count")?;
                s.conntrack_max_count = s.conntrack_max_count.max(n);
            }
        }
        s.taken += 1;
        std::thread::sleep(EVERY.saturating_sub(t.elapsed()));
    }
    Ok(s)
}

fn forwarder(bed: &Bed, s: &mut Samples) -> Result<()> {
    let status = bed.cli_json(&["status", "--json"])?;
    let active = status["active_flows"].as_u64().context("status: no active_flows")?;
    s.max_active_flows = s.max_active_flows.max(active);
    let metrics = scrape_metrics(&bed.topo.natvm, METRICS)?;
    let used = gauges(&metrics, "forwarder_conntrack_entries", "table");
    let cap = gauges(&metrics, "forwarder_conntrack_capacity", "table");
    anyhow::ensure!(!cap.is_empty(), "the metrics report no conntrack capacity:\n{metrics}");
    for (table, c) in &cap {
        let u = used.get(table).copied().unwrap_or(0);
        let e = s.tables.entry(table.clone()).or_insert((0, *c));
        e.0 = e.0.max(u);
        if u > *c {
            s.over.push(format!("metrics: {table} holds {u} entries of {c}"));
        }
    }
    // Two entries (halves) per flow.
    s.flows_capacity = cap.values().sum::<u64>() / 2;
    if active > s.flows_capacity {
        s.over.push(format!("status: {active} flows, the tables hold {}", s.flows_capacity));
    }
    Ok(())
}
