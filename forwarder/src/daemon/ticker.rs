//! The clock of the daemon's periodic tasks (flow expiry, DNS refresh, the attachment
//! check, the drop log): a tick every interval, the first at once, a late one delayed rather
//! than bunched up with the next, until the daemon's stop signal.

use std::time::Duration;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub struct Ticker {
    tick: Interval,
    stop: CancellationToken,
}

impl Ticker {
    pub fn new(every: Duration, stop: CancellationToken) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { tick, stop }
    }

    /// Waits for the next tick; false once the daemon stops.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.tick.tick() => true,
            _ = self.stop.cancelled() => false,
        }
    }

    /// The stop signal, for work that must notice it while it runs.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }
}
