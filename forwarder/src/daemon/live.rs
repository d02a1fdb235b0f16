//! The running daemon's state, what it reports (status, stats, flows) and the small
//! changes made under its lock: drain, DNS refresh results. Reload and rule add / remove
//! look names up first, without the lock (`change`).

use crate::{
    config::Settings,
    daemon::control::{Attachment, FlowRow, Probe, RuleInfo, RuleStatsRow, Status},
    daemon::state::{Drain, State},
    datapath::{flows, handles::Conntrack, Datapath},
    plan::Plan,
};
use forwarder_common::Counter;
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// A refused change, with the exit code the CLI reports (2: invalid, 1: runtime failure).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ChangeError {
    pub exit_code: u8,
    pub message: String,
}

/// A message, not an error: an error goes through `*_because`, which shows its sources (a
/// `to_string` would show only its own part).
impl ChangeError {
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self { exit_code: 2, message: message.into() }
    }
    pub(super) fn runtime(message: impl Into<String>) -> Self {
        Self { exit_code: 1, message: message.into() }
    }
    /// Invalid because of `e`, which is shown with its sources: the answer is text.
    pub(super) fn invalid_because(e: impl std::error::Error) -> Self {
        Self::invalid(crate::error::chain(&e))
    }
    /// A runtime failure, `e` shown with its sources.
    pub(super) fn runtime_because(e: impl std::error::Error) -> Self {
        Self::runtime(crate::error::chain(&e))
    }
}

/// One hostname target looked up again by the DNS refresh: the rule, the host and port it
/// named when the lookup started, and the answer (`None`: it did not resolve).
pub struct ResolvedTarget {
    pub rule: String,
    pub host: String,
    pub port: u16,
    pub addr: Option<std::net::Ipv4Addr>,
}

/// What the health endpoint reads on every probe, without taking the daemon's lock.
#[derive(Default)]
pub struct HealthView {
    pub healthy: AtomicBool,
    pub last_probe: Mutex<Option<(SystemTime, SocketAddr)>>,
    /// Probes accepted since the daemon started (the metrics' counter).
    pub probes: AtomicU64,
}

/// The daemon's state as its tasks share it.
pub type Shared = Arc<Common>;

/// The state behind its lock, and the two things beside it that must be reached without
/// that lock.
pub struct Common {
    live: Mutex<Live>,
    /// Held by the rule change under way (reload, rule add / remove) from its first read of
    /// the file to its commit, outside the state's lock: changes take turns (`change`).
    pub changes: Mutex<()>,
    /// Handles of their own on the pinned conntrack tables, for the readers (status, stats,
    /// flows, metrics) to walk them without the state's lock: a walk takes time in
    /// proportion to the flows tracked, and holding the lock for it would stall every other
    /// request and task.
    pub tables: Conntrack,
}

impl Common {
    pub fn new(live: Live, tables: Conntrack) -> Shared {
        Arc::new(Common { live: Mutex::new(live), changes: Mutex::new(()), tables })
    }

    /// The state, locked.
    pub fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, Live>> {
        self.live.lock()
    }
}

pub struct Live {
    pub settings: Settings,
    pub plan: Plan,
    pub dp: Datapath,
    pub state: State,
    pub state_path: PathBuf,
    pub allow_unresolved: bool,
    pub health: Arc<HealthView>,
    /// The `[kafka]` watch's counts, for the metrics.
    pub kafka_watch: Arc<crate::daemon::kafka_watch::View>,
    /// The `[azure]` scheduled events' counts, for the metrics.
    pub azure_events: Arc<crate::daemon::azure_events::View>,
    /// Interfaces whose attachment someone else removed, and what was done about it
    /// (`attach_watch`); empty while all is well.
    pub attach_faults: std::collections::BTreeMap<String, String>,
    /// Set once the daemon stops: a change still preparing then commits nothing (an unload
    /// may have removed the pins and the state file).
    pub stopping: bool,
}

impl Live {
    /// Why the load balancer must not send new connections here, if it must not.
    pub fn unhealthy_reason(&self) -> Option<String> {
        unhealthy_reason_of(
            !self.dp.attached().is_empty(),
            &self.attach_faults,
            &self.plan,
            self.state.drain_reason(),
        )
    }

    /// Publishes the health for the probe endpoint; call after every change.
    pub fn update_health(&self) {
        self.health.healthy.store(self.unhealthy_reason().is_none(), Ordering::SeqCst);
    }

    pub(super) fn save_state(&self) -> Result<(), ChangeError> {
        self.state.save(&self.state_path).map_err(ChangeError::runtime_because)
    }

    pub(super) fn refuse_if_stopping(&self) -> Result<(), ChangeError> {
        if self.stopping {
            return Err(ChangeError::runtime("the daemon is stopping; nothing was applied"));
        }
        Ok(())
    }

    /// An operator's drain (`forwarder drain` / `undrain`): a drain for an Azure event
    /// becomes the operator's, and `undrain` lifts either.
    pub fn drain(&mut self, on: bool) -> Result<String, ChangeError> {
        self.refuse_if_stopping()?;
        let msg = match (on, self.state.drained_since) {
            (true, Some(_)) => "already drained".to_string(),
            (true, None) => {
                self.state.drained_since = Some(crate::host::clock::unix_now());
                "drained: the health probe now fails; existing connections keep working".into()
            }
            (false, None) => "not drained".to_string(),
            (false, Some(_)) => {
                self.state.drained_since = None;
                "undrained: the health probe answers again".into()
            }
        };
        self.state.drained_for_event = None;
        self.save_state()?;
        self.update_health();
        Ok(msg)
    }

    /// Drains for Azure event `id`, unless the VM already is drained (then the drain stays
    /// whose it was). Returns whether it drained.
    pub fn drain_for_event(&mut self, id: &str) -> Result<bool, ChangeError> {
        self.refuse_if_stopping()?;
        if self.state.drained_since.is_some() {
            return Ok(false);
        }
        self.state.drained_since = Some(crate::host::clock::unix_now());
        self.state.drained_for_event = Some(id.to_string());
        self.save_state()?;
        self.update_health();
        Ok(true)
    }

    /// Lifts a drain made for an Azure event, never an operator's; returns the event's id
    /// if it did.
    pub fn lift_event_drain(&mut self) -> Result<Option<String>, ChangeError> {
        let Drain::Event(id) = self.state.drain() else { return Ok(None) };
        self.refuse_if_stopping()?;
        self.state.drained_since = None;
        self.state.drained_for_event = None;
        self.save_state()?;
        self.update_health();
        Ok(Some(id))
    }

    /// Re-resolves hostname targets; a new address serves new connections only (existing
    /// flows keep the target in their conntrack entry). `resolved` holds the lookups the
    /// caller made without holding this state; one whose rule has since changed its target
    /// (a reload or rule change in between) is stale and skipped. Nothing is applied once
    /// the daemon stops.
    pub fn apply_resolved(&mut self, resolved: &[ResolvedTarget]) {
        if self.stopping {
            return;
        }
        // A name that moves to this host's own address would expose its services; the
        // change is refused like a file naming that address would be.
        let host = crate::host::netif::host_ipv4_addrs().unwrap_or_default();
        let mut changed = false;
        for ResolvedTarget { rule: name, host: looked_up, port, addr } in resolved {
            let Some(rule) = self.plan.rules.iter_mut().find(|r| &r.name == name) else {
                continue;
            };
            let Some(spec) = self.settings.rules.iter().find(|r| &r.name == name) else {
                continue;
            };
            if spec.target.host != *looked_up || spec.target.port != *port {
                continue;
            }
            let new = addr.map(|a| (a, spec.target.port));
            if let Some(iface) = addr.and_then(|a| crate::host::netif::interface_of(&host, a)) {
                tracing::warn!(rule = %name, target = %spec.target, "re-resolved to an address of this host ({iface}); keeping the last address");
                continue;
            }
            match (rule.target, new) {
                (old, Some(n)) if old != Some(n) => {
                    tracing::info!(rule = %name, target = %spec.target, was = ?old.map(|t| t.0), now = %n.0, "target address changed; new connections go to the new address");
                    rule.target = Some(n);
                    changed = true;
                }
                // A failed lookup keeps the last good address.
                (Some(_), None) => {
                    tracing::warn!(rule = %name, target = %spec.target, "target did not resolve; keeping the last address")
                }
                _ => {}
            }
        }
        if changed {
            if let Err(e) = self.dp.apply(&self.plan) {
                tracing::warn!("applying re-resolved targets: {}", crate::error::chain(&e));
            }
            self.update_health();
        }
    }

    /// The hostname targets to re-resolve: (rule name, host, port).
    pub fn hostname_targets(&self) -> Vec<(String, String, u16)> {
        self.settings
            .rules
            .iter()
            .filter(|r| r.target.host.parse::<std::net::Ipv4Addr>().is_err())
            .map(|r| (r.name.clone(), r.target.host.clone(), r.target.port))
            .collect()
    }

    pub fn rules(&self, flows: &[flows::Flow]) -> Vec<RuleInfo> {
        let active = flows::active_per_rule(flows);
        self.plan
            .rules
            .iter()
            .map(|r| {
                let spec = self.settings.rules.iter().find(|s| s.name == r.name);
                RuleInfo {
                    name: r.name.clone(),
                    id: r.rule_id,
                    listen: r.listen,
                    target: spec.map_or(String::new(), |s| s.target.to_string()),
                    resolved: r.target.map(|(a, p)| format!("{a}:{p}")),
                    active_flows: active.get(&r.rule_id).copied().unwrap_or(0),
                }
            })
            .collect()
    }

    /// `status` from flows already read.
    pub fn status_of(&self, flows: &[flows::Flow]) -> Status {
        let probe = *self.health.last_probe.lock().expect("probe lock");
        let now = SystemTime::now();
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: self.settings.path.display().to_string(),
            config_sha256: crate::config::fingerprint::sha256(&self.settings),
            pin_path: self.settings.pin_path.display().to_string(),
            interfaces: self
                .dp
                .attached()
                .into_iter()
                .map(|(interface, a)| Attachment { interface, mode: a.name().into() })
                .collect(),
            program_ids: self.dp.program_ids(),
            snat: self.plan.snat_addr.to_string(),
            snat_ports: format!("{}-{}", self.plan.snat_ports.0, self.plan.snat_ports.1),
            healthy: self.unhealthy_reason().is_none(),
            unhealthy_reason: self.unhealthy_reason(),
            drained: self.state.drained_since.is_some(),
            drained_since: self.state.drained_since,
            drained_for_event: self.state.drained_for_event.clone(),
            health: self.settings.health.map(|a| a.to_string()),
            last_probe: probe.map(|(at, from)| Probe {
                from: from.ip().to_string(),
                at: at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                seconds_ago: now.duration_since(at).map_or(0, |d| d.as_secs()),
            }),
            active_flows: flows.len() as u64,
            rules: self.rules(flows),
        }
    }

    /// `stats` from flows already read.
    pub fn stats_of(&self, flows: &[flows::Flow]) -> Result<Vec<RuleStatsRow>, ChangeError> {
        let active = flows::active_per_rule(flows);
        let mut rows = Vec::new();
        for r in &self.plan.rules {
            let t = self.dp.rule_totals(r.rule_id).map_err(ChangeError::runtime_because)?;
            rows.push(RuleStatsRow {
                name: r.name.clone(),
                id: r.rule_id,
                active_flows: active.get(&r.rule_id).copied().unwrap_or(0),
                counters: Counter::ALL.iter().map(|c| (c.name().to_string(), t.get(*c))).collect(),
            });
        }
        Ok(rows)
    }

    /// `flows` from flows already read: all of them, or `rule`'s.
    pub fn flows_of(
        &self,
        all: &[flows::Flow],
        rule: Option<&str>,
    ) -> Result<Vec<FlowRow>, ChangeError> {
        let id = match rule {
            None => None,
            Some(name) => Some(
                self.plan.rules.iter().find(|r| r.name == name).map(|r| r.rule_id).ok_or_else(
                    || ChangeError::invalid(format!("there is no rule named {name:?}")),
                )?,
            ),
        };
        let name_of = |id: u16| {
            self.plan
                .rules
                .iter()
                .find(|r| r.rule_id == id)
                .map_or(format!("#{id}"), |r| r.name.clone())
        };
        Ok(all
            .iter()
            .filter(|f| id.is_none_or(|id| f.entry.rule_id == id))
            .map(|f| {
                let (k, p) = (&f.key, &f.entry.peer);
                FlowRow {
                    rule: name_of(f.entry.rule_id),
                    state: flows::state_name(&f.entry).into(),
                    client: flows::endpoint(k.src_addr, k.src_port),
                    listen: flows::endpoint(k.dst_addr, k.dst_port),
                    snat: flows::endpoint(p.dst_addr, p.dst_port),
                    target: flows::endpoint(p.src_addr, p.src_port),
                    packets: f.packets(),
                    bytes: f.bytes(),
                    age_s: flows::seconds_since(f.entry.created_ns),
                    idle_s: flows::seconds_since(f.last_seen_ns()),
                    handshake_us: (f.entry.established_ns != 0)
                        .then(|| f.entry.established_ns.saturating_sub(f.entry.created_ns) / 1000),
                    established_table: f.established_table,
                }
            })
            .collect())
    }
}

/// [`Live::unhealthy_reason`] from what it reads, most fundamental first: nothing attached,
/// an attachment someone else removed, no rule that can forward, a drain.
fn unhealthy_reason_of(
    attached: bool,
    attach_faults: &std::collections::BTreeMap<String, String>,
    plan: &Plan,
    drained: Option<String>,
) -> Option<String> {
    if !attached {
        Some("the program is not attached".into())
    } else if !attach_faults.is_empty() {
        let faults: Vec<String> = attach_faults.iter().map(|(i, f)| format!("{i}: {f}")).collect();
        Some(format!("the program is not attached: {}", faults.join("; ")))
    } else if !plan.rules.iter().any(|r| r.target.is_some()) {
        Some("no rule has a resolved target".into())
    } else {
        drained
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;
    use crate::plan::Resolutions;
    use std::collections::{BTreeMap, BTreeSet};

    fn plan() -> Plan {
        let text = "interface = \"lo\"\nlisten_ip = \"any\"\nsnat_ip = \"10.9.9.9\"\n\
                    [[rule]]\nname = \"a\"\nlisten = 9092\ntarget = \"10.1.0.1:9092\"\n";
        let s = crate::config::parse(std::path::Path::new("f.toml"), text).unwrap();
        let resolved = Resolutions::lookup(&s);
        Plan::build_with_ids(&s, false, &resolved, &mut BTreeMap::new(), &BTreeSet::new()).unwrap()
    }

    #[test]
    fn the_probe_fails_for_the_most_fundamental_reason_first() {
        let healthy = plan();
        let none = BTreeMap::new();
        assert_eq!(unhealthy_reason_of(true, &none, &healthy, None), None);
        let why = |attached, faults: &BTreeMap<String, String>, plan: &Plan, drained: bool| {
            let drained = drained.then(|| "drained (forwarder drain)".to_string());
            unhealthy_reason_of(attached, faults, plan, drained).unwrap()
        };
        assert_eq!(why(true, &none, &healthy, true), "drained (forwarder drain)");
        let mut unresolved = healthy.clone();
        unresolved.rules.iter_mut().for_each(|r| r.target = None);
        assert_eq!(why(true, &none, &unresolved, true), "no rule has a resolved target");
        let faults = BTreeMap::from([("eth0".to_string(), "detached by someone else".to_string())]);
        assert_eq!(
            why(true, &faults, &unresolved, true),
            "the program is not attached: eth0: detached by someone else"
        );
        assert_eq!(why(false, &faults, &unresolved, true), "the program is not attached");
    }
}
