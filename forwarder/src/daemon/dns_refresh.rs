//! Re-resolving hostname targets every `dns_refresh`, in a task of its own.
//!
//! The lookups run in a blocking thread, a few names at a time (`plan::Resolutions`), each
//! bounded by `plan::RESOLVE_TIMEOUT` (`host::resolve`: getaddrinfo cannot be cancelled, a
//! silent resolver costs one abandoned thread per name), the whole round by LOOKUP_TIMEOUT;
//! nothing else waits for them. The daemon's lock is taken only to read the targets and to
//! apply the results.

use crate::daemon::live::{ResolvedTarget, Shared};
use crate::daemon::ticker::Ticker;
use crate::plan::Resolutions;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest wait for one round of lookups; glibc's own default gives up on a silent name
/// server after 2 x 5 s.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

type Resolved = Vec<ResolvedTarget>;

/// Refreshes every `every` until `stop` fires. No new round starts while an abandoned one
/// still hangs, so a dead resolver never piles up threads.
pub async fn run(every: Duration, shared: Shared, stop: CancellationToken) {
    let mut ticker = Ticker::new(every, stop);
    // The first tick is immediate; targets were just resolved.
    if !ticker.next().await {
        return;
    }
    let mut hung: Option<JoinHandle<Resolved>> = None;
    while ticker.next().await {
        if hung.as_ref().is_some_and(|h| !h.is_finished()) {
            tracing::debug!("DNS refresh skipped: the abandoned lookup still hangs");
            continue;
        }
        tokio::select! {
            left = refresh(&shared) => hung = left,
            _ = ticker.stop().cancelled() => return,
        }
    }
}

/// One round; returns the lookup if it was abandoned.
async fn refresh(shared: &Shared) -> Option<JoinHandle<Resolved>> {
    let s = shared.clone();
    let targets = tokio::task::spawn_blocking(move || s.lock().expect("lock").hostname_targets())
        .await
        .unwrap_or_default();
    if targets.is_empty() {
        return None;
    }
    let hosts: Vec<String> = targets.iter().map(|(_, h, _)| h.clone()).collect();
    let mut lookup = tokio::task::spawn_blocking(move || {
        let answers = Resolutions::of_targets(targets.iter().map(|(_, h, p)| (h.as_str(), *p)));
        let address = |host: &str, port| answers.get(host, port).and_then(Result::ok);
        targets
            .iter()
            .map(|(rule, host, port)| ResolvedTarget {
                rule: rule.clone(),
                host: host.clone(),
                port: *port,
                addr: address(host, *port),
            })
            .collect()
    });
    let resolved = match tokio::time::timeout(LOOKUP_TIMEOUT, &mut lookup).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!("DNS refresh failed: {e}; the last addresses stay");
            return None;
        }
        Err(_) => {
            tracing::warn!(
                ?hosts,
                "DNS refresh: no answer within {LOOKUP_TIMEOUT:?}; lookup abandoned to the \
                 resolver, the last addresses stay"
            );
            return Some(lookup);
        }
    };
    let s = shared.clone();
    let _ = tokio::task::spawn_blocking(move || s.lock().expect("lock").apply_resolved(&resolved))
        .await;
    None
}
