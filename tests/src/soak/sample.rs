//! One sample of the soak: the daemon's resident memory (/proc/PID/status VmRSS), the
//! conntrack tables' fill and the flows the metrics endpoint reports, and how far the load
//! has come. And what "flat" means for a series of them.

use crate::{
    bench::median,
    daemon_tests::{gauges, scrape_metrics, METRICS},
    netns::Netns,
};
use anyhow::{Context, Result};
use std::{collections::BTreeMap, time::Duration};

/// Entries (halves of flows) in each conntrack table, and the flows of all rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fill {
    pub flows: u64,
    pub established: u64,
    pub embryonic: u64,
}

/// Capacity of each conntrack table, in entries, by table.
pub type Capacity = BTreeMap<String, u64>;

/// The fill the metrics endpoint of the daemon in `ns` reports, and the capacities.
pub fn fill(ns: &Netns) -> Result<(Fill, Capacity)> {
    let text = scrape_metrics(ns, METRICS)?;
    let used = gauges(&text, "forwarder_conntrack_entries", "table");
    let capacity = gauges(&text, "forwarder_conntrack_capacity", "table");
    anyhow::ensure!(!capacity.is_empty(), "the metrics report no conntrack tables:\n{text}");
    let table = |t: &str| used.get(t).copied().unwrap_or(0);
    let fill = Fill {
        flows: gauges(&text, "forwarder_active_flows", "rule").values().sum(),
        established: table("ct_established"),
        embryonic: table("ct_embryonic"),
    };
    Ok((fill, capacity))
}

/// The resident memory of process `pid`, KiB: all of it (VmRSS), and the anonymous part
/// (RssAnon: the heap and stacks, without the pages of the binary read in as code runs).
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}

/// Where the load stood at a sample (totals since the start).
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub conns_ok: u64,
    pub conns_failed: u64,
    pub kafka_msgs: u64,
    pub rule_ops: u64,
}

#[derive(Clone, Debug)]
pub struct Sample {
    /// Since the load started.
    pub at: Duration,
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub fill: Fill,
    /// The most flows any read of the fill since the sample before saw (this one's too).
    pub peak_flows: u64,
    pub progress: Progress,
}

/// The daemon's memory over the run: the median after warm-up (the samples in WARM_UP..
/// BASELINE_END of the run) against the median of the last quarter.
#[derive(Clone, Copy, Debug)]
pub struct Flatness {
    pub baseline_kib: u64,
    pub end_kib: u64,
    /// How much more the end may hold: 10 % of the baseline or 4 MiB, the larger.
    pub allowed_kib: u64,
}

const WARM_UP: f64 = 0.20;
const BASELINE_END: f64 = 0.45;
const LAST_QUARTER: f64 = 0.75;

impl Flatness {
    pub fn of(samples: &[Sample], run: Duration) -> Flatness {
        let between = |from: f64, to: f64| -> u64 {
            let mut v: Vec<f64> = samples
                .iter()
                .filter(|s| {
                    let f = s.at.as_secs_f64() / run.as_secs_f64();
                    f >= from && f < to
                })
                .map(|s| s.rss_kib as f64)
                .collect();
            median(&mut v) as u64
        };
        let baseline_kib = between(WARM_UP, BASELINE_END);
        Flatness {
            baseline_kib,
            end_kib: between(LAST_QUARTER, f64::INFINITY),
            allowed_kib: (baseline_kib / 10).max(4096),
        }
    }

    pub fn growth_kib(&self) -> i64 {
        self.end_kib as i64 - self.baseline_kib as i64
    }

    pub fn flat(&self) -> bool {
        self.baseline_kib > 0 && self.end_kib <= self.baseline_kib + self.allowed_kib
    }
}
