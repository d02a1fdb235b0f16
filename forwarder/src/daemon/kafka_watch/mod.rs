//! The `[kafka]` watch: the cluster's metadata fetched every `interval`, in a task of its
//! own, and compared with the rules (`kafka::coverage`). A broker the cluster advertises
//! and no rule forwards to is where clients hang; the watch exports the counts
//! (`forwarder_kafka_brokers{state}`) and logs, when they change, which brokers are
//! unmapped and the `rule add` that maps each.
//!
//! The blocking client runs in a blocking thread, every step bounded by `[kafka].timeout`,
//! the whole round by [`round_limit`]; a round that overruns is abandoned and no new one
//! starts while it still runs, so a silent cluster never piles up threads. The daemon's
//! lock is taken only to read the settings. A failure to reach the cluster is counted
//! (`forwarder_kafka_watch_failures_total`) and logged, never more: forwarding, health and
//! every other task go on, and the last counts stay.
//!
//! The settings are read at every round: a reload that adds, changes or removes `[kafka]`
//! (or the rules) applies from the next round.
//!
//! This file is the task; [`view`] what the metrics read, [`report`] what the log says.

mod report;
mod view;

pub use view::{Counts, View};

use crate::{
    config::{kafka::KafkaWatch, Settings},
    daemon::live::Shared,
    kafka::{coverage, ClusterMetadata, KafkaError, SetupError},
};
use report::{log_changes, Logged};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the settings are looked at while there is no `[kafka]` section.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// The longest one round may take: every step of the client within `timeout`, at most
/// eight of them (resolve, connect, TLS, ApiVersions, SaslHandshake, two SaslAuthenticate
/// rounds, Metadata) per bootstrap address tried, and a second to spare.
fn round_limit(k: &KafkaWatch) -> Duration {
    k.timeout * 8 * k.bootstrap.len().max(1) as u32 + Duration::from_secs(1)
}

/// Why a round got no metadata. As the Kafka client's errors, the cause is in the text.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("a file [kafka] names: {0}")]
    Setup(SetupError),
    #[error(transparent)]
    Kafka(KafkaError),
}

type Fetched = Result<(String, ClusterMetadata), RoundError>;

/// Runs rounds until `stop` fires: the first at once, then every `[kafka].interval`.
pub async fn run(shared: Shared, view: std::sync::Arc<View>, stop: CancellationToken) {
    let mut memory = Memory::default();
    let mut hung: Option<JoinHandle<Fetched>> = None;
    loop {
        let settings = {
            let s = shared.clone();
            match tokio::task::spawn_blocking(move || s.lock().expect("lock").settings.clone())
                .await
            {
                Ok(settings) => settings,
                Err(_) => return,
            }
        };
        let wait = match &settings.kafka {
            None => {
                view.clear();
                memory = Memory::default();
                IDLE_CHECK
            }
            Some(k) if hung.as_ref().is_some_and(|h| !h.is_finished()) => {
                tracing::debug!("kafka watch: round skipped, the abandoned one still runs");
                k.interval
            }
            Some(k) => {
                let every = k.interval;
                tokio::select! {
                    left = round(&settings, k, &view, &mut memory) => hung = left,
                    _ = stop.cancelled() => return,
                }
                every
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The brokers against the rules, the names of both looked up in a blocking thread (bounded
/// by `plan::RESOLVE_TIMEOUT` per name; a lookup that fails leaves names to compare).
async fn resolved(settings: &Settings, meta: &ClusterMetadata) -> coverage::Coverage {
    let (s, brokers) = (settings.clone(), meta.brokers.clone());
    let lookup = tokio::task::spawn_blocking(move || crate::plan::kafka_coverage(&s, &brokers));
    match tokio::time::timeout(crate::plan::RESOLVE_TIMEOUT * 2, lookup).await {
        Ok(Ok(c)) => c,
        _ => {
            tracing::warn!("kafka watch: looking up the names timed out; comparing names only");
            coverage::compare(&meta.brokers, &settings.rule_targets(), &|_, _| None)
        }
    }
}

/// What the log said so far, so that it speaks only of changes.
#[derive(Default)]
struct Memory {
    /// The unmapped brokers and gone rules last logged.
    logged: Option<Logged>,
    /// Rounds without metadata since the last that got it.
    failed_rounds: u64,
}

/// One fetch and comparison; returns the fetch if it was abandoned.
async fn round(
    settings: &Settings,
    k: &KafkaWatch,
    view: &View,
    memory: &mut Memory,
) -> Option<JoinHandle<Fetched>> {
    let watch = k.clone();
    let mut fetch = tokio::task::spawn_blocking(move || {
        let security = watch.security().map_err(RoundError::Setup)?;
        crate::kafka::discover::fetch_first(&watch.bootstrap, &security, watch.timeout)
            .map_err(RoundError::Kafka)
    });
    let limit = round_limit(k);
    let fetched = match tokio::time::timeout(limit, &mut fetch).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!("kafka watch: the fetch task failed: {e}");
            view.update(|c| c.failures += 1);
            memory.failed_rounds += 1;
            return None;
        }
        Err(_) => {
            tracing::warn!(
                bootstrap = ?k.bootstrap,
                "kafka watch: no metadata within {limit:?}; fetch abandoned, the last counts stay"
            );
            view.update(|c| c.failures += 1);
            memory.failed_rounds += 1;
            return Some(fetch);
        }
    };
    match fetched {
        Ok((bootstrap, meta)) => {
            let coverage = resolved(settings, &meta).await;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            view.update(|c| {
                c.mapped = coverage.mapped.len() as u64;
                c.unmapped = coverage.unmapped.len() as u64;
                c.gone = coverage.gone.len() as u64;
                c.last_success_unix = now.as_secs_f64();
            });
            if memory.failed_rounds > 0 {
                let failed = std::mem::take(&mut memory.failed_rounds);
                tracing::info!(
                    bootstrap,
                    "kafka watch: metadata again, after {failed} failed round(s)"
                );
            }
            log_changes(settings, &bootstrap, &meta, &coverage, &mut memory.logged);
        }
        Err(e) => {
            view.update(|c| c.failures += 1);
            memory.failed_rounds += 1;
            tracing::warn!(bootstrap = ?k.bootstrap, "kafka watch: {e}; the last counts stay");
        }
    }
    None
}
