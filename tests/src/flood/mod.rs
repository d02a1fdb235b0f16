//! A SYN flood against the NAT VM, with live streams and new legitimate connections beside
//! it, for the forwarder in `xdp` mode and for iptables as `ip_fwd.sh` writes it (issue 11).
//!
//! - `bed`: the e2e topology with echo brokers, the spoofed network's route, and the
//!   contender (the daemon with a realistic config, or the two iptables rules per port).
//! - `syns`: the flood itself: the bench sender's SYN mode (live frames, or a packet socket
//!   where the kernel refuses them) from the router's end of the NAT VM's link, paced to a
//!   rate that every contender is offered alike.
//! - `legit`: the legitimate client's pace (`crate::churn`), and its connections before,
//!   during and after the flood.
//! - `watch`: samples of the table fill during the flood (status, metrics, conntrack).
//! - `idle`: idle established flows beside the flood, which the sweep must expire on time.
//! - `report`: the figures of one run and the summary of both.
//!
//! The spoofed sources are in 10.2.0.0/16, a network the config allows (another spoke of the
//! VNet) and the router holds a blackhole route for: the SYN-ACKs to them die there, as they
//! would on the way to hosts that never sent the SYNs. Nothing leaves the test's namespaces.

mod bed;
pub mod idle;
mod legit;
pub mod report;
pub mod syns;
mod watch;

use anyhow::{Context, Result};
pub use bed::Contender;
use report::Report;
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// How big a flood, how fast, against how large a table.
#[derive(Clone, Debug)]
pub struct Options {
    pub syns: u64,
    /// SYNs per second the generator is paced to.
    pub rate: u64,
    pub max_flows: u32,
    /// Live streams per listen port, running through the whole flood.
    pub streams_per_port: usize,
}

impl Options {
    /// The defaults overridden by FWT_FLOOD_SYNS, FWT_FLOOD_RATE and FWT_FLOOD_MAX_FLOWS
    /// (`cargo xtask stress` sets the first).
    pub fn from_env(defaults: Options) -> Result<Options> {
        let var = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(v) => v.parse().with_context(|| format!("{name}={v}: expected a number")),
                Err(_) => Ok(default),
            }
        };
        Ok(Options {
            syns: var("FWT_FLOOD_SYNS", defaults.syns)?,
            rate: var("FWT_FLOOD_RATE", defaults.rate)?.max(1),
            max_flows: var("FWT_FLOOD_MAX_FLOWS", defaults.max_flows as u64)? as u32,
            ..defaults
        })
    }
}

/// Time the legitimate client runs before the flood and after it.
const CALM: Duration = Duration::from_secs(1);

/// One contender in a fresh bed: streams up, the legitimate client and the sampler started,
/// a calm second, the flood, a calm second, then everything stopped and counted.
pub fn run(tag: &str, contender: Contender, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let bed = bed::Bed::new(tag, contender, opts.max_flows)?;
    let streams = crate::streams::Streams::start(
        &bed.topo.client,
        &bed.listen_addrs(),
        opts.streams_per_port,
    )?;
    let counters_before = bed.counters()?;
    let n0_before = bed.n0_rx()?;
    let idle = match contender {
        Contender::ForwarderXdp => Some(idle::open(&bed)?),
        Contender::Iptables => None,
    };
    let client = crate::churn::Client::start(&bed.topo.client, bed.listen_addrs(), legit::PACE)?;
    let stop = AtomicBool::new(false);
    let mut flood_window = (Instant::now(), Instant::now());
    let (samples, idle_gone, flood) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch::sample(&bed, &stop));
        let idle_watcher = idle.as_ref().map(|i| s.spawn(|| i.watch(&bed, &stop)));
        std::thread::sleep(CALM);
        let start = client.elapsed();
        flood_window.0 = Instant::now();
        let sent = syns::flood(&bed, opts).context("the flood");
        flood_window.1 = Instant::now();
        let end = client.elapsed();
        std::thread::sleep(CALM);
        stop.store(true, Ordering::Relaxed);
        let samples = watcher.join().map_err(|_| anyhow::anyhow!("the sampler panicked"));
        let idle_gone = idle_watcher
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("the idle watcher panicked")))
            .transpose();
        (samples, idle_gone, sent.map(|sent| (sent, start, end)))
    });
    let (sent, flood_start, flood_end) = flood?;
    let samples = samples?.context("sampling the table fill")?;
    let idle_gone = idle_gone?.transpose().context("watching the idle flows")?.unwrap_or_default();
    let idle_expiry = report::IdleExpiry::of(idle.as_ref(), &idle_gone, flood_window);

    let attempts = client.finish();
    let streams_total = streams.rounds();
    let reports = streams.finish();
    let mut r = Report {
        contender,
        opts: opts.clone(),
        sender: sent.sender,
        syns_sent: sent.frames,
        syns_refused: sent.refused,
        flood_secs: (flood_end - flood_start).as_secs_f64(),
        reached_nat: bed.n0_rx()?.saturating_sub(n0_before),
        legit: legit::Figures::of(&attempts, flood_start, flood_end),
        streams: reports.len(),
        streams_broken: crate::streams::broken(&reports),
        stream_rounds: streams_total,
        stream_errors: reports.iter().filter_map(|r| r.error.clone()).collect(),
        counters: report::delta(&counters_before, &bed.counters()?),
        samples,
        conntrack_stats: bed.conntrack_stats()?,
        idle_expiry,
        seconds: 0.0,
    };
    bed.finish()?;
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}
