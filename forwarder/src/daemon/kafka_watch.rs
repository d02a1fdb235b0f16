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

use crate::{
    config::{kafka::KafkaWatch, Settings, DEFAULT_PATH},
    daemon::live::Shared,
    kafka::{
        coverage::{self, Coverage, Taken},
        discover::Plan,
        render_missing::{rule_add_command, rule_inline},
        ClusterMetadata, KafkaError, SetupError,
    },
};
use std::{
    path::Path,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the settings are looked at while there is no `[kafka]` section.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// What the metrics show, updated after each round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub mapped: u64,
    pub unmapped: u64,
    pub gone: u64,
    /// Rounds that did not get the metadata.
    pub failures: u64,
    /// When a round last got it (Unix time); 0 until one does.
    pub last_success_unix: f64,
}

/// The watch's results, read by the metrics without the daemon's lock.
#[derive(Default)]
pub struct View {
    counts: Mutex<Option<Counts>>,
}

impl View {
    /// `None` while no `[kafka]` section is configured.
    pub fn counts(&self) -> Option<Counts> {
        self.counts.lock().expect("kafka view lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.counts.lock().expect("kafka view lock");
        f(c.get_or_insert_with(Counts::default))
    }

    fn clear(&self) {
        *self.counts.lock().expect("kafka view lock") = None;
    }
}

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
    let mut last_logged: Option<Logged> = None;
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
                last_logged = None;
                IDLE_CHECK
            }
            Some(k) if hung.as_ref().is_some_and(|h| !h.is_finished()) => {
                tracing::debug!("kafka watch: round skipped, the abandoned one still runs");
                k.interval
            }
            Some(k) => {
                let every = k.interval;
                tokio::select! {
                    left = round(&settings, k, &view, &mut last_logged) => hung = left,
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

/// One fetch and comparison; returns the fetch if it was abandoned.
async fn round(
    settings: &Settings,
    k: &KafkaWatch,
    view: &View,
    last_logged: &mut Option<Logged>,
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
            return None;
        }
        Err(_) => {
            tracing::warn!(
                bootstrap = ?k.bootstrap,
                "kafka watch: no metadata within {limit:?}; fetch abandoned, the last counts stay"
            );
            view.update(|c| c.failures += 1);
            return Some(fetch);
        }
    };
    match fetched {
        Ok((bootstrap, meta)) => {
            let coverage = coverage::compare(&meta.brokers, &settings.rule_targets());
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            view.update(|c| {
                c.mapped = coverage.mapped.len() as u64;
                c.unmapped = coverage.unmapped.len() as u64;
                c.gone = coverage.gone.len() as u64;
                c.last_success_unix = now.as_secs_f64();
            });
            log_changes(settings, &bootstrap, &meta, &coverage, last_logged);
        }
        Err(e) => {
            view.update(|c| c.failures += 1);
            tracing::warn!(bootstrap = ?k.bootstrap, "kafka watch: {e}; the last counts stay");
        }
    }
    None
}

/// What was last logged: the unmapped brokers and the gone rules, as shown.
#[derive(PartialEq)]
struct Logged {
    unmapped: Vec<String>,
    gone: Vec<String>,
}

/// Logs the unmapped brokers (with the rule that maps each) and the gone rules, when they
/// differ from the last round's.
fn log_changes(
    settings: &Settings,
    bootstrap: &str,
    meta: &ClusterMetadata,
    coverage: &Coverage,
    last: &mut Option<Logged>,
) {
    let now = Logged {
        unmapped: coverage.unmapped.iter().map(|b| format!("{} {}", b.id, b.address())).collect(),
        gone: coverage.gone.iter().map(|r| r.name.clone()).collect(),
    };
    if last.as_ref() == Some(&now) {
        return;
    }
    let advertised = coverage.mapped.len() + coverage.unmapped.len();
    if coverage.unmapped.is_empty() && coverage.gone.is_empty() {
        tracing::info!(
            bootstrap,
            brokers = advertised,
            "kafka watch: every advertised broker has a rule"
        );
    }
    match missing_plan(settings, bootstrap, meta, coverage) {
        Ok(plan) => {
            let flag =
                (settings.path != Path::new(DEFAULT_PATH)).then_some(settings.path.as_path());
            for b in &plan.brokers {
                tracing::warn!(
                    broker = b.broker.id,
                    advertised = %b.broker.address(),
                    "kafka broker {} ({}) is advertised but no rule forwards to it: clients \
                     hang on the partitions it leads. Run `{}` (or add {} to {} and reload), and \
                     create its Azure resources: `forwarder kafka discover --config {}`",
                    b.broker.id,
                    b.broker.address(),
                    rule_add_command(b, flag),
                    rule_inline(b),
                    settings.path.display(),
                    settings.path.display(),
                );
            }
        }
        Err(e) => {
            for b in &coverage.unmapped {
                tracing::warn!(
                    broker = b.id,
                    advertised = %b.address(),
                    "kafka broker {} ({}) is advertised but no rule forwards to it; no rule can \
                     be suggested: {e}",
                    b.id,
                    b.address()
                );
            }
        }
    }
    for r in &coverage.gone {
        tracing::warn!(
            rule = %r.name,
            "kafka watch: rule {} forwards to {}:{}, which the cluster no longer advertises",
            r.name,
            r.host,
            r.port
        );
    }
    *last = Some(now);
}

/// The rules `kafka discover --config` would print for the unmapped brokers.
fn missing_plan(
    settings: &Settings,
    bootstrap: &str,
    meta: &ClusterMetadata,
    coverage: &Coverage,
) -> Result<Plan, crate::kafka::discover::PlanError> {
    let port = |p: u16| settings.listen_port_taken(p);
    let names = settings.rules.iter().map(|r| r.name.as_str()).collect();
    let taken = Taken { names, port: &port };
    coverage::plan_missing(bootstrap, meta, coverage, &taken, settings.next_listen_port())
}
