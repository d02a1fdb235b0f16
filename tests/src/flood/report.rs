//! The figures of one flood run, and the paragraph that puts the forwarder's beside
//! iptables' (printed by the test, for RELIABILITY.md).

use super::{bed::Contender, legit, watch::Samples, Options};
use crate::bench::rate::sender::SenderKind;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct Report {
    pub contender: Contender,
    pub opts: Options,
    /// What sent the flood.
    pub sender: SenderKind,
    pub syns_sent: u64,
    /// Of them, refused at the router's end because the NAT VM's receive ring was full.
    pub syns_refused: u64,
    pub flood_secs: f64,
    /// Packets the NAT VM's NIC received during the run (flood, streams, client).
    pub reached_nat: u64,
    pub legit: legit::Figures,
    pub streams: usize,
    pub streams_broken: usize,
    pub stream_rounds: u64,
    pub stream_errors: Vec<String>,
    /// The forwarder's counters over the run, summed over its rules.
    pub counters: BTreeMap<String, u64>,
    pub samples: Samples,
    /// Netfilter's conntrack statistics at the end (iptables).
    pub conntrack_stats: BTreeMap<String, u64>,
    /// Forwarder: when the idle established flows beside the flood expired.
    pub idle_expiry: IdleExpiry,
    pub seconds: f64,
}

/// When the idle flows left the established table, in seconds after their last packet
/// (None: still there when the watch ended), and how many of them left while the flood ran.
#[derive(Clone, Debug, Default)]
pub struct IdleExpiry {
    pub gone_after: Vec<Option<f64>>,
    pub during_flood: usize,
}

impl IdleExpiry {
    pub fn of(
        idle: Option<&super::idle::Idle>,
        gone: &[Option<std::time::Duration>],
        flood: (std::time::Instant, std::time::Instant),
    ) -> Self {
        let Some(idle) = idle else { return Self::default() };
        let during_flood = gone
            .iter()
            .flatten()
            .filter(|d| (flood.0..=flood.1).contains(&(idle.since + **d)))
            .count();
        Self { gone_after: gone.iter().map(|d| d.map(|d| d.as_secs_f64())).collect(), during_flood }
    }

    /// The latest expiry, if every flow expired.
    pub fn latest(&self) -> Option<f64> {
        self.gone_after.iter().copied().collect::<Option<Vec<f64>>>()?.into_iter().reduce(f64::max)
    }

    pub fn text(&self) -> String {
        let n = self.gone_after.len();
        match self.latest() {
            Some(latest) => format!(
                "{n} idle established flows (timeout {}s) all expired, the last {latest:.1} s \
                 after its last packet ({} of them while the flood ran)",
                super::idle::TIMEOUT.as_secs(),
                self.during_flood
            ),
            None => format!(
                "{} of {n} idle established flows still tracked at the end",
                self.gone_after.iter().filter(|g| g.is_none()).count()
            ),
        }
    }
}

/// `after - before` of each counter.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .collect()
}

fn phase(p: &legit::Phase) -> String {
    format!(
        "{}/{} ({:.0} %, {:.1}/s, median {:.1} ms)",
        p.ok,
        p.attempts,
        p.ratio() * 100.0,
        p.rate(),
        p.median_ms
    )
}

impl Report {
    /// Every figure of the run, for the test's output.
    pub fn details(&self) -> String {
        let s = &self.samples;
        let mut out = format!(
            "{}: {} spoofed SYNs by the {} sender in {:.1} s ({:.0}/s offered, {} refused at \
             the NAT VM's full ring), {} packets reached the NAT VM; \
             new connections before {}, during {}, after {}; streams {} broken of {} \
             ({} rounds); {} samples; run {:.1} s\n",
            self.contender.name(),
            self.syns_sent,
            self.sender.name(),
            self.flood_secs,
            self.offered_rate(),
            self.syns_refused,
            self.reached_nat,
            phase(&self.legit.before),
            phase(&self.legit.during),
            phase(&self.legit.after),
            self.streams_broken,
            self.streams,
            self.stream_rounds,
            s.taken,
            self.seconds,
        );
        if !self.counters.is_empty() {
            let nonzero: Vec<String> = self
                .counters
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out += &format!("  counters: {}\n", nonzero.join(" "));
            out += &format!(
                "  table fill (max of samples): status {} flows of {}; metrics {:?}\n",
                s.max_active_flows, s.flows_capacity, s.tables
            );
            out += &format!("  {}\n", self.idle_expiry.text());
        }
        if self.contender == Contender::Iptables {
            let st = &self.conntrack_stats;
            let g = |k: &str| st.get(k).copied().unwrap_or(0);
            out += &format!(
                "  conntrack: max {} entries of nf_conntrack_max {}; insert_failed {} drop {} early_drop {}\n",
                s.conntrack_max_count,
                s.conntrack_max,
                g("insert_failed"),
                g("drop"),
                g("early_drop")
            );
        }
        for (what, p) in [("during", &self.legit.during), ("after", &self.legit.after)] {
            if !p.errors.is_empty() {
                out += &format!("  failed connections {what}: {:?}\n", p.errors);
            }
        }
        for e in &self.stream_errors {
            out += &format!("  broken stream: {e}\n");
        }
        out
    }

    /// SYNs per second the flood actually offered.
    pub fn offered_rate(&self) -> f64 {
        self.syns_sent as f64 / self.flood_secs.max(1e-9)
    }

    fn counter(&self, k: &str) -> u64 {
        self.counters.get(k).copied().unwrap_or(0)
    }
}

/// One paragraph: the forwarder's figures, then iptables' in the same bed.
pub fn summary(fwd: &Report, ipt: &Report) -> String {
    let o = &fwd.opts;
    format!(
        "SYN flood (tests/tests/syn_flood.rs): {} spoofed SYNs from 10.2.0.0/16 paced to {}/s \
         to the three listen ports by the {} sender (offered: {:.0}/s to the forwarder, {:.0}/s \
         to iptables), {} live streams running, a client opening new connections \
         throughout. Forwarder (xdp, max_flows {}): {} streams broken; new connections during \
         the flood {}, before it {}; counters new_conns {}, drop_no_snat_port {}, \
         drop_table_full {}, not_allowed {}; table fill at most {} flows of {} (metrics {:?}); \
         {}. \
         iptables (ip_fwd.sh DNAT + MASQUERADE): {} streams broken; new connections during the \
         flood {}, after it {}; conntrack at most {} entries (nf_conntrack_max {}), \
         insert_failed {}, drop {}, early_drop {}. Runs {:.0} s and {:.0} s.",
        fwd.syns_sent,
        o.rate,
        fwd.sender.name(),
        fwd.offered_rate(),
        ipt.offered_rate(),
        fwd.streams,
        o.max_flows,
        fwd.streams_broken,
        phase(&fwd.legit.during),
        phase(&fwd.legit.before),
        fwd.counter("new_conns"),
        fwd.counter("drop_no_snat_port"),
        fwd.counter("drop_table_full"),
        fwd.counter("not_allowed"),
        fwd.samples.max_active_flows,
        fwd.samples.flows_capacity,
        fwd.samples.tables,
        fwd.idle_expiry.text(),
        ipt.streams_broken,
        phase(&ipt.legit.during),
        phase(&ipt.legit.after),
        ipt.samples.conntrack_max_count,
        ipt.samples.conntrack_max,
        ipt.conntrack_stats.get("insert_failed").copied().unwrap_or(0),
        ipt.conntrack_stats.get("drop").copied().unwrap_or(0),
        ipt.conntrack_stats.get("early_drop").copied().unwrap_or(0),
        fwd.seconds,
        ipt.seconds,
    )
}
