//! Long-lived TCP streams through the forwarder: each sends a numbered 1 KiB block, reads
//! its echo back and checks it, again and again, until told to stop. A stream that errs or
//! stalls for IO_TIMEOUT is broken; the tests that restart, reload and reconfigure the
//! daemon under these streams require zero broken ones. A [`StallMeter`] keeps the longest
//! time any stream made no progress.

use crate::{netns::Netns, traffic::connect};
use anyhow::Result;
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddrV4},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

const BLOCK: usize = 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const PAUSE: Duration = Duration::from_millis(20);
/// Every stream ends by itself after this long, stop or not (tests stay bounded); the soak
/// gives its streams a longer life ([`Streams::start_for`]).
const MAX_LIFETIME: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct StreamReport {
    pub to: SocketAddrV4,
    /// The broker address the echo server reported.
    pub reached: Option<Ipv4Addr>,
    pub rounds: u64,
    pub error: Option<String>,
}

pub struct Streams {
    stop: Arc<AtomicBool>,
    lifetime: Duration,
    rounds: Vec<Arc<AtomicU64>>,
    handles: Vec<JoinHandle<StreamReport>>,
}

impl Streams {
    /// Opens `per_target` streams to each target from inside `ns` and waits until every
    /// one has completed a round.
    pub fn start(ns: &Netns, targets: &[SocketAddrV4], per_target: usize) -> Result<Streams> {
        Self::start_for(ns, targets, per_target, MAX_LIFETIME)
    }

    /// [`Streams::start`] for streams that end by themselves after `lifetime` (not before).
    pub fn start_for(
        ns: &Netns,
        targets: &[SocketAddrV4],
        per_target: usize,
        lifetime: Duration,
    ) -> Result<Streams> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut s =
            Streams { stop: stop.clone(), lifetime, rounds: Vec::new(), handles: Vec::new() };
        for &to in targets {
            for i in 0..per_target {
                let conn = connect(ns, to)?;
                let rounds = Arc::new(AtomicU64::new(0));
                s.rounds.push(rounds.clone());
                let stop = stop.clone();
                let seed = (to.port() as u64) << 8 | i as u64;
                s.handles
                    .push(std::thread::spawn(move || run(conn, to, seed, stop, rounds, lifetime)));
            }
        }
        s.wait_progress()?;
        Ok(s)
    }

    /// Each stream's round counter, for a watcher that measures stalls from its own thread.
    pub fn counters(&self) -> Vec<Arc<AtomicU64>> {
        self.rounds.clone()
    }

    /// Total rounds so far, over all streams.
    pub fn rounds(&self) -> u64 {
        self.rounds.iter().map(|r| r.load(Ordering::Relaxed)).sum()
    }

    /// Waits until every stream has done at least one more round than now (bounded).
    pub fn wait_progress(&self) -> Result<()> {
        let before: Vec<u64> = self.rounds.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            if self.rounds.iter().zip(&before).all(|(r, b)| r.load(Ordering::Relaxed) > *b) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("some streams made no progress in {IO_TIMEOUT:?}")
    }

    /// Stops every stream and returns how each ended.
    pub fn finish(mut self) -> Vec<StreamReport> {
        self.stop.store(true, Ordering::Relaxed);
        std::mem::take(&mut self.handles)
            .into_iter()
            .map(|h| h.join().expect("stream thread"))
            .collect()
    }
}

impl Drop for Streams {
    /// Streams not finished (a failed test) stop at their next round.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Samples every stream's round counter every 5 ms and keeps the longest time any one of
/// them made no progress (a round is one 1 KiB echo, every ~20 ms when all is well).
pub struct StallMeter {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Duration>,
}

impl StallMeter {
    pub fn start(streams: &Streams) -> Self {
        let counters: Vec<Arc<AtomicU64>> = streams.counters();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // Bounded by the streams' own lifetime.
        let limit = Instant::now() + streams.lifetime;
        let handle = std::thread::spawn(move || {
            let mut last: Vec<(u64, Instant)> =
                counters.iter().map(|c| (c.load(Ordering::Relaxed), Instant::now())).collect();
            let mut worst = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) && Instant::now() < limit {
                std::thread::sleep(Duration::from_millis(5));
                for (c, (seen, at)) in counters.iter().zip(last.iter_mut()) {
                    let now = c.load(Ordering::Relaxed);
                    if now != *seen {
                        worst = worst.max(at.elapsed());
                        *seen = now;
                        *at = Instant::now();
                    }
                }
            }
            worst
        });
        StallMeter { stop, handle }
    }

    /// The longest stall seen.
    pub fn finish(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("stall meter")
    }
}

/// How many streams broke (erred, or never completed a round).
pub fn broken(reports: &[StreamReport]) -> usize {
    reports.iter().filter(|r| r.error.is_some() || r.rounds == 0).count()
}

/// Asserts every stream ended cleanly and reached `expect(target)`.
pub fn assert_all_intact(reports: &[StreamReport], expect: impl Fn(SocketAddrV4) -> Ipv4Addr) {
    let broken: Vec<&StreamReport> =
        reports.iter().filter(|r| r.error.is_some() || r.rounds == 0).collect();
    assert!(broken.is_empty(), "{} of {} streams broke: {broken:#?}", broken.len(), reports.len());
    for r in reports {
        assert_eq!(r.reached, Some(expect(r.to)), "stream to {} reached the wrong broker", r.to);
    }
}

fn run(
    mut conn: std::net::TcpStream,
    to: SocketAddrV4,
    seed: u64,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    lifetime: Duration,
) -> StreamReport {
    let mut report = StreamReport { to, reached: None, rounds: 0, error: None };
    let r = rounds_until_stopped(&mut conn, seed, &stop, &rounds, lifetime, &mut report);
    if let Err(e) = r {
        report.error = Some(format!("{e:#} after {} rounds", report.rounds));
    }
    report
}

fn rounds_until_stopped(
    conn: &mut std::net::TcpStream,
    seed: u64,
    stop: &AtomicBool,
    rounds: &AtomicU64,
    lifetime: Duration,
    report: &mut StreamReport,
) -> Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut header = [0u8; 10];
    conn.read_exact(&mut header)?;
    report.reached = Some(Ipv4Addr::new(header[6], header[7], header[8], header[9]));
    let started = Instant::now();
    let mut block = [0u8; BLOCK];
    let mut echo = [0u8; BLOCK];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < lifetime {
        let n = report.rounds;
        for (i, b) in block.iter_mut().enumerate() {
            *b = (seed.wrapping_mul(31).wrapping_add(n * 7 + i as u64) % 251) as u8;
        }
        conn.write_all(&block)?;
        conn.read_exact(&mut echo)?;
        anyhow::ensure!(echo == block, "echo of round {n} differs");
        report.rounds += 1;
        rounds.store(report.rounds, Ordering::Relaxed);
        std::thread::sleep(PAUSE);
    }
    conn.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)?;
    anyhow::ensure!(rest.is_empty(), "{} unexpected bytes at the end", rest.len());
    Ok(())
}
