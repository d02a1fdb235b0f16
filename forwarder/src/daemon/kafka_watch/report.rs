//! What the watch logs: each unmapped broker with the `rule add` that maps it, each gone
//! rule, each only when the set changes.

use crate::{
    config::{Settings, DEFAULT_PATH},
    kafka::{
        coverage::{self, Coverage, Taken},
        discover::Plan,
        render_missing::{rule_add_command, rule_inline},
        ClusterMetadata,
    },
};
use std::path::Path;

/// What was last logged: the unmapped brokers and the gone rules, as shown.
#[derive(PartialEq)]
pub(super) struct Logged {
    unmapped: Vec<String>,
    gone: Vec<String>,
}

/// Logs the unmapped brokers (with the rule that maps each) and the gone rules, when they
/// differ from the last round's.
pub(super) fn log_changes(
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
