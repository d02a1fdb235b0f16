//! The legitimate client of the flood: new connections from the client's namespace
//! ([`crate::churn`]) at this pace, before, during and after the flood, and their figures
//! per phase.

use crate::churn::{Attempt, Pace};
use std::time::Duration;

pub const PACE: Pace = Pace {
    workers: 2,
    pause: Duration::from_millis(20),
    max_time: Duration::from_secs(600),
    max_attempts: 100_000,
};

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
