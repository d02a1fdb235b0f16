//! The flow-expiry task: every interval, one sweep of the pinned conntrack tables
//! (`datapath::gc`) in a blocking thread, never under the daemon's lock.

use super::ticker::Ticker;
use crate::datapath::{gc, pins::Pins};
use forwarder_common::Config;
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio_util::sync::CancellationToken;

/// A sweep still running after this long is logged (and left to finish: two sweeps at once
/// would race on the swept-flow count).
const SLOW_SWEEP: Duration = Duration::from_secs(30);

/// Sweeps every `every` until `stop` fires, each pass in a blocking thread on its own map
/// handles. `config` is called in that thread for the timeouts in force (it may wait for
/// the daemon's lock, which must not hold up the runtime). On stop, a running pass ends at
/// its next check, with what it removed counted.
pub async fn run<F>(pins: Pins, every: Duration, config: F, stop: CancellationToken)
where
    F: Fn() -> Config + Send + Sync + 'static,
{
    let config = Arc::new(config);
    let halt = Arc::new(AtomicBool::new(false));
    let mut ticker = Ticker::new(every, stop);
    while ticker.next().await {
        let (pins, config, h) = (pins.clone(), config.clone(), halt.clone());
        let mut job = tokio::task::spawn_blocking(move || {
            let cfg = config();
            gc::sweep_pinned(&pins, &cfg, &h)
        });
        let slow = tokio::time::sleep(SLOW_SWEEP);
        tokio::pin!(slow);
        let (mut warned, mut stopping) = (false, false);
        let result = loop {
            tokio::select! {
                r = &mut job => break r,
                _ = &mut slow, if !warned => {
                    warned = true;
                    tracing::warn!("flow expiry still running after {SLOW_SWEEP:?}");
                }
                _ = ticker.stop().cancelled(), if !stopping => {
                    stopping = true;
                    halt.store(true, Ordering::SeqCst);
                }
            }
        };
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(flows = n, "expired flows removed"),
            Ok(Err(e)) => tracing::warn!("flow expiry failed: {}", crate::error::chain(&e)),
            Err(e) => tracing::warn!("flow expiry failed: {e}"),
        }
        if stopping {
            return;
        }
    }
}
