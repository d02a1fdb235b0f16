//! What the accept loops (control socket, health probe, metrics) do when `accept` fails.
//!
//! Most accept errors are about one connection and gone at the next call, but some persist:
//! out of file descriptors (EMFILE, ENFILE) or memory, the pending connection stays queued
//! and the listener stays readable, so retrying at once spins on one CPU without end. Each
//! failure therefore waits, 100 ms doubling up to 1 s, and is logged at most every 10 s.

use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The back-off state of one accept loop.
pub struct Backoff {
    /// The listener, as the log names it.
    what: &'static str,
    delay: Duration,
    /// Failures since the last accepted connection.
    failures: u64,
    /// Failures not logged since the last log line.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Backoff {
    pub fn new(what: &'static str) -> Self {
        Self { what, delay: FIRST_DELAY, failures: 0, unlogged: 0, last_log: None }
    }

    /// A connection was accepted: the next failure starts over from the shortest wait.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(listener = self.what, failures = self.failures, "accepting again");
        }
        self.delay = FIRST_DELAY;
        self.failures = 0;
        self.unlogged = 0;
        self.last_log = None;
    }

    /// The next connection `accept` gives, every failure on the way waited out and logged.
    pub async fn accept<T, F, Fut>(&mut self, mut accept: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::io::Result<T>>,
    {
        loop {
            match accept().await {
                Ok(accepted) => {
                    self.succeeded();
                    return accepted;
                }
                Err(e) => self.failed(&e).await,
            }
        }
    }

    /// Logs the failure (rate-limited) and waits before the next `accept`.
    pub async fn failed(&mut self, err: &std::io::Error) {
        self.failures += 1;
        self.unlogged += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                listener = self.what,
                failures = self.unlogged,
                "accept failed: {err}; retrying in {:?}",
                self.delay
            );
            self.unlogged = 0;
            self.last_log = Some(Instant::now());
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_double_up_to_a_second_and_reset_on_success() {
        let err = std::io::Error::from_raw_os_error(libc::EMFILE);
        let mut b = Backoff::new("test");
        let mut waits = Vec::new();
        for _ in 0..6 {
            let t = tokio::time::Instant::now();
            b.failed(&err).await;
            waits.push(t.elapsed().as_millis());
        }
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        let t = tokio::time::Instant::now();
        b.failed(&err).await;
        assert_eq!(t.elapsed().as_millis(), 100);
    }
}
