//! Noticing that someone else took the program off an interface (`bpftool link detach`,
//! another XDP tool, a script cleaning up): every second each configured interface's pinned
//! link is checked. A missing attachment makes the daemon unhealthy at once (the load
//! balancer stops sending new flows), is logged and re-attached; the daemon is healthy again
//! only once the next check finds the new attachment still in place, so an attachment that
//! keeps being removed keeps the VM out of the pool instead of flapping.

use crate::daemon::live::{Live, Shared};
use crate::daemon::ticker::Ticker;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Checks every `every` until `stop` fires.
pub async fn run(every: Duration, shared: Shared, stop: CancellationToken) {
    let mut ticker = Ticker::new(every, stop);
    while ticker.next().await {
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || check(&mut s.lock().expect("lock"))).await;
    }
}

/// One round over the attached interfaces; records what is wrong in `live.attach_faults`.
pub fn check(live: &mut Live) {
    // Once the daemon stops (and perhaps `unload` detached everything), nothing is put back.
    if live.stopping {
        return;
    }
    let before = live.attach_faults.clone();
    for (iface, how) in live.dp.attached() {
        let Some(problem) = live.dp.attachment_problem(&iface, how) else {
            if live.attach_faults.remove(&iface).is_some() {
                tracing::info!(iface, mode = how.name(), "attachment confirmed; healthy again");
            }
            continue;
        };
        let fault = match live.dp.reattach(&iface, how) {
            Ok(()) => format!("{problem}; re-attached, confirming at the next check"),
            Err(e) => format!("{problem}; re-attaching failed: {}", crate::error::chain(&e)),
        };
        if live.attach_faults.get(&iface) != Some(&fault) {
            tracing::error!(iface, mode = how.name(), "the program is not attached: {fault}");
        }
        live.attach_faults.insert(iface, fault);
    }
    if live.attach_faults != before {
        live.update_health();
    }
}
