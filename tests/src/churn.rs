//! New connections one after another through the NAT VM: from a client namespace, `workers`
//! at a time, `pause` apart, each proved by the echo server's header arriving, then closed.
//! Runs until stopped, bounded in time and count. The SYN flood's legitimate client and the
//! soak's steady trickle of short connections.

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

/// Covers the first SYN and its retransmission at 1 s: a SYN lost once still connects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How fast and for how long at most.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Connections in flight at once.
    pub workers: usize,
    /// Each worker's pause after each attempt.
    pub pause: Duration,
    pub max_time: Duration,
    pub max_attempts: usize,
}

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
    /// Starts the workers in `ns`; they take the targets in turn.
    pub fn start(ns: &Netns, targets: Vec<SocketAddrV4>, pace: Pace) -> anyhow::Result<Client> {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for w in 0..pace.workers {
            let (stop, attempts, targets) = (stop.clone(), attempts.clone(), targets.clone());
            workers.push(ns.spawn(move || {
                for i in w.. {
                    if stop.load(Ordering::Relaxed)
                        || t0.elapsed() > pace.max_time
                        || attempts.lock().unwrap().len() >= pace.max_attempts
                    {
                        return;
                    }
                    let a = attempt(t0, targets[i % targets.len()]);
                    attempts.lock().unwrap().push(a);
                    std::thread::sleep(pace.pause);
                }
            })?);
        }
        Ok(Client { t0, stop, attempts, workers })
    }

    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Successful and failed attempts so far.
    pub fn tally(&self) -> (usize, usize) {
        let attempts = self.attempts.lock().unwrap();
        let ok = attempts.iter().filter(|a| a.ok).count();
        (ok, attempts.len() - ok)
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
