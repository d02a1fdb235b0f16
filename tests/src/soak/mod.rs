//! The soak (issue 11): for FWT_SOAK_SECS the NAT VM carries, all at once,
//! - live TCP streams, two per echo rule, that must never break ([`crate::streams`]);
//! - a steady trickle of new short connections ([`crate::churn`], about 35 a second);
//! - Kafka against a real broker (tansu): a long-lived connection of the project's client
//!   producing and reading back, and kafka-python round trips on new connections (`kafka`);
//! - rule changes beside the rules in use: `rule add` / `rule remove` of another rule every
//!   second, a `reload` every tenth (`rules`);
//!
//! while the daemon's RSS, the conntrack tables' fill and the load's progress are sampled
//! every few seconds (`sample`). Then the short connections stop and the tables must come
//! back to the live flows alone once swept. `report` renders the figures and the table
//! (target/soak/soak.md); tests/tests/soak.rs asserts on them.
//!
//! - `bed`: the e2e topology, echo servers as brokers 2 and 3, tansu as broker 1, the daemon.

mod bed;
mod kafka;
pub mod report;
mod rules;
pub mod sample;

use crate::{
    churn::{self, Pace},
    streams::{StallMeter, Streams},
};
use anyhow::{Context, Result};
use bed::Bed;
use report::{Counts, Report};
use sample::{Fill, Progress, Sample};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

const STREAMS_PER_PORT: usize = 2;
/// The short connections: two at a time, each worker pausing this long after each.
const CHURN_PAUSE: Duration = Duration::from_millis(50);
/// How long after the load the tables get to come back to the live flows: the closing
/// timeout (2 s), one sweep interval (10 s) and a margin.
const SWEEP_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long the load runs.
    pub run: Duration,
    pub sample_every: Duration,
}

impl Options {
    /// FWT_SOAK_SECS, else `default_secs`; a sample every 2 s up to two minutes, every 10 s
    /// in longer runs.
    pub fn from_env(default_secs: u64) -> Result<Options> {
        let secs = match std::env::var("FWT_SOAK_SECS") {
            Ok(v) => v.parse().with_context(|| format!("FWT_SOAK_SECS={v}: expected seconds"))?,
            Err(_) => default_secs,
        };
        anyhow::ensure!(secs >= 10, "FWT_SOAK_SECS={secs}: at least 10 s");
        let every = if secs <= 120 { 2 } else { 10 };
        Ok(Options { run: Duration::from_secs(secs), sample_every: Duration::from_secs(every) })
    }
}

/// Progress of one load loop, shared with the sampler: what succeeded, what failed, and
/// the first errors.
#[derive(Default)]
pub struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

const KEPT_ERRORS: usize = 5;

impl Tally {
    pub fn ok(&self, n: u64) {
        self.ok.fetch_add(n, Ordering::Relaxed);
    }

    pub fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < KEPT_ERRORS {
            errors.push(error);
        }
    }

    pub fn record(&self, r: Result<()>) {
        match r {
            Ok(()) => self.ok(1),
            Err(e) => self.fail(format!("{e:#}")),
        }
    }

    pub fn done(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            ok: self.done(),
            failed: self.failed.load(Ordering::Relaxed),
            errors: self.errors.lock().unwrap().clone(),
        }
    }
}

/// Runs the soak in namespaces tagged `tag` and returns what it saw; fails only when the bed
/// or the sampling fails (what the load met is in the report, for the test to judge).
pub fn run(tag: &str, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let bed = Bed::new(tag)?;
    let lifetime = opts.run + SWEEP_LIMIT + Duration::from_secs(120);
    let streams =
        Streams::start_for(&bed.topo.client, &bed.echo_listens(), STREAMS_PER_PORT, lifetime)?;
    let meter = StallMeter::start(&streams);
    let mut live = kafka::Live::open(&bed)?;
    let (_, capacity) = sample::fill(&bed.topo.natvm)?;
    let pace = Pace {
        workers: 2,
        pause: CHURN_PAUSE,
        max_time: lifetime,
        max_attempts: opts.run.as_secs() as usize * 100,
    };
    let churn = churn::Client::start(&bed.topo.client, bed.echo_listens(), pace)?;

    let t0 = Instant::now();
    let until = t0 + opts.run;
    let (live_tally, py_tally, rule_tally) = (Tally::default(), Tally::default(), Tally::default());
    let stop = AtomicBool::new(false);
    let progress = || {
        let (conns_ok, conns_failed) = churn.tally();
        Progress {
            conns_ok: conns_ok as u64,
            conns_failed: conns_failed as u64,
            kafka_msgs: live_tally.done() * kafka::LIVE_BATCH as u64
                + py_tally.done() * kafka::PY_MESSAGES as u64,
            rule_ops: rule_tally.done(),
        }
    };
    let (samples, live_ended) = std::thread::scope(|s| {
        let live_loop = s.spawn(|| live.run(&stop, until, &live_tally));
        s.spawn(|| kafka::python_loop(&bed, &stop, until, &py_tally));
        s.spawn(|| rules::run(&bed, &stop, until, &rule_tally));
        let samples = sample_until(&bed, t0, opts, &progress);
        stop.store(true, Ordering::Relaxed);
        let live_ended = live_loop.join().expect("the live Kafka loop panicked");
        (samples, live_ended)
    });
    let samples = samples?;
    let mut at_end = progress();
    let conns = Counts::of(&churn.finish());
    (at_end.conns_ok, at_end.conns_failed) = (conns.ok, conns.failed);

    // Left: the streams and the live Kafka connection.
    let live_flows = streams.counters().len() as u64 + 1;
    let (end, swept_in) = sweep_wait(&bed, t0, live_flows, at_end)?;
    let live_verified = live.verify();
    drop(live);
    let stall = meter.finish();
    let streams = streams.finish();
    bed.finish()?;
    Ok(Report {
        opts: *opts,
        samples,
        end,
        swept_in,
        capacity,
        live_flows,
        streams,
        stall,
        conns,
        kafka_live: live_tally.counts(),
        kafka_live_error: live_ended.err().map(|e| format!("{e:#}")),
        kafka_live_verified: live_verified.map_err(|e| format!("{e:#}")),
        kafka_python: py_tally.counts(),
        rules: rule_tally.counts(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How often the fill is read. The sweep runs every 10 s, so reads 10 s apart would all meet
/// the tables at the same point of its cycle; each row keeps the peak of the reads since the
/// row before.
const PROBE_EVERY: Duration = Duration::from_secs(1);

fn take(bed: &Bed, t0: Instant, fill: Fill, peak_flows: u64, progress: Progress) -> Result<Sample> {
    let (rss_kib, anon_kib) = sample::rss_kib(bed.daemon().pid())?;
    Ok(Sample { at: t0.elapsed(), rss_kib, anon_kib, fill, peak_flows, progress })
}

/// A sample at the start and every `sample_every` until the run is over, the fill read every
/// PROBE_EVERY in between.
fn sample_until(
    bed: &Bed,
    t0: Instant,
    opts: &Options,
    progress: &dyn Fn() -> Progress,
) -> Result<Vec<Sample>> {
    let probes = (opts.run.as_millis() / PROBE_EVERY.as_millis()) as u32 + 1;
    let per_row = (opts.sample_every.as_millis() / PROBE_EVERY.as_millis()).max(1) as u32;
    let mut samples = Vec::new();
    let mut peak = 0;
    for k in 0..probes {
        std::thread::sleep((t0 + PROBE_EVERY * k).saturating_duration_since(Instant::now()));
        let (fill, _) = sample::fill(&bed.topo.natvm)?;
        peak = peak.max(fill.flows);
        if k % per_row == 0 {
            samples.push(take(bed, t0, fill, peak, progress())?);
            peak = 0;
        }
    }
    Ok(samples)
}

/// Samples every 500 ms until the tables hold the live flows alone (both halves of each in
/// the established table, nothing embryonic), at most SWEEP_LIMIT: the last sample, and how
/// long it took when they did.
fn sweep_wait(
    bed: &Bed,
    t0: Instant,
    live_flows: u64,
    progress: Progress,
) -> Result<(Sample, Option<Duration>)> {
    let want = Fill { flows: live_flows, established: 2 * live_flows, embryonic: 0 };
    let from = Instant::now();
    loop {
        let (fill, _) = sample::fill(&bed.topo.natvm)?;
        let s = take(bed, t0, fill.clone(), fill.flows, progress)?;
        if s.fill == want {
            return Ok((s, Some(from.elapsed())));
        }
        if from.elapsed() > SWEEP_LIMIT {
            return Ok((s, None));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
