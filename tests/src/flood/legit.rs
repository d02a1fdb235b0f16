//! The legitimate client: from the client's namespace, new connections one after another
//! (WORKERS at a time, PAUSE apart), each proved by the echo server's header arriving through
//! the NAT VM, then closed. Runs until stopped, bounded in time and count.

use crate::netns::Netns;
use std::{
    io::Read,
    net::{SocketAddrV4, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

const WORKERS: usize = 2;
/// Covers the first SYN and its retransmission at 1 s: a SYN lost once still connects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const PAUSE: Duration = Duration::from_millis(20);
const MAX_TIME: Duration = Duration::from_secs(600);
const MAX_ATTEMPTS: usize = 100_000;

/// One connection attempt: when it started (since the client started), whether the header
/// came, how long that took, and why not.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Duration,
    pub ok: bool,
    pub took: Duration,
    pub error: Option<String>,
}

pub struct Client {
    t0: Instant,
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Client {
    pub fn start(ns: &Netns, targets: Vec<SocketAddrV4>) -> anyhow::Result<Client> {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let (stop, attempts, targets) = (stop.clone(), attempts.clone(), targets.clone());
            workers.push(ns.spawn(move || {
                for i in w.. {
                    if stop.load(Ordering::Relaxed)
                        || t0.elapsed() > MAX_TIME
                        || attempts.lock().unwrap().len() >= MAX_ATTEMPTS
                    {
                        return;
                    }
                    let a = attempt(t0, targets[i % targets.len()]);
                    attempts.lock().unwrap().push(a);
                    std::thread::sleep(PAUSE);
                }
            })?);
        }
        Ok(Client { t0, stop, attempts, workers })
    }

    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Stops the workers (after their attempt in progress) and returns every attempt.
    pub fn finish(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        std::mem::take(&mut *self.attempts.lock().unwrap())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn attempt(t0: Instant, to: SocketAddrV4) -> Attempt {
    let at = t0.elapsed();
    let r = TcpStream::connect_timeout(&to.into(), CONNECT_TIMEOUT).and_then(|mut c| {
        c.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let mut header = [0u8; 10];
        c.read_exact(&mut header)
    });
    Attempt { at, ok: r.is_ok(), took: t0.elapsed() - at, error: r.err().map(|e| e.to_string()) }
}

/// Successes and attempts of one phase, and the rate of successes over its length.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub ok: usize,
    pub attempts: usize,
    pub secs: f64,
    /// Median time to the header of the successful ones, ms.
    pub median_ms: f64,
    pub errors: Vec<String>,
}

impl Phase {
    pub fn ratio(&self) -> f64 {
        self.ok as f64 / self.attempts.max(1) as f64
    }
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub before: Phase,
    /// Attempts started while the flood was being sent.
    pub during: Phase,
    pub after: Phase,
}

impl Figures {
    pub fn of(attempts: &[Attempt], flood_start: Duration, flood_end: Duration) -> Figures {
        let phase = |from: Duration, to: Duration| {
            let mut p = Phase { secs: (to - from).as_secs_f64(), ..Phase::default() };
            let mut took: Vec<f64> = Vec::new();
            for a in attempts.iter().filter(|a| a.at >= from && a.at < to) {
                p.attempts += 1;
                if a.ok {
                    p.ok += 1;
                    took.push(a.took.as_secs_f64() * 1e3);
                } else if p.errors.len() < 5 {
                    p.errors.push(a.error.clone().unwrap_or_default());
                }
            }
            took.sort_by(f64::total_cmp);
            p.median_ms = took.get(took.len() / 2).copied().unwrap_or(0.0);
            p
        };
        let end = attempts.iter().map(|a| a.at).max().unwrap_or(flood_end).max(flood_end);
        Figures {
            before: phase(Duration::ZERO, flood_start),
            during: phase(flood_start, flood_end),
            after: phase(flood_end, end + Duration::from_nanos(1)),
        }
    }
}
