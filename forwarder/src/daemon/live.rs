//! The running daemon's state and every change made to it: reload, rule add / remove,
//! drain, DNS refresh. Each change is validated and resolved whole before the maps are
//! touched, so a bad change leaves everything as it was.

use crate::{
    config::{self, write_back, Settings},
    daemon::control::{Attachment, FlowRow, Probe, RuleInfo, RuleStatsRow, Status},
    daemon::state::State,
    datapath::flows,
    datapath::Datapath,
    plan::{self, Plan},
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

impl ChangeError {
    fn invalid(message: impl ToString) -> Self {
        Self { exit_code: 2, message: message.to_string() }
    }
    fn runtime(message: impl ToString) -> Self {
        Self { exit_code: 1, message: message.to_string() }
    }
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
pub type Shared = Arc<Mutex<Live>>;

pub struct Live {
    pub settings: Settings,
    pub plan: Plan,
    pub dp: Datapath,
    pub state: State,
    pub state_path: PathBuf,
    pub allow_unresolved: bool,
    pub health: Arc<HealthView>,
    /// Interfaces whose attachment someone else removed, and what was done about it
    /// (`attach_watch`); empty while all is well.
    pub attach_faults: std::collections::BTreeMap<String, String>,
}

impl Live {
    /// Why the load balancer must not send new connections here, if it must not.
    pub fn unhealthy_reason(&self) -> Option<String> {
        if self.dp.attached.is_empty() {
            Some("the program is not attached".into())
        } else if !self.attach_faults.is_empty() {
            let faults: Vec<String> =
                self.attach_faults.iter().map(|(i, f)| format!("{i}: {f}")).collect();
            Some(format!("the program is not attached: {}", faults.join("; ")))
        } else if !self.plan.rules.iter().any(|r| r.target.is_some()) {
            Some("no rule has a resolved target".into())
        } else if self.state.drained_since.is_some() {
            Some("drained (forwarder drain)".into())
        } else {
            None
        }
    }

    /// Publishes the health for the probe endpoint; call after every change.
    pub fn update_health(&self) {
        self.health.healthy.store(self.unhealthy_reason().is_none(), Ordering::SeqCst);
    }

    fn save_state(&self) -> Result<(), ChangeError> {
        self.state.save(&self.state_path).map_err(ChangeError::runtime)
    }

    /// Re-reads the config file and applies the difference (SIGHUP, `forwarder reload`).
    pub fn reload(&mut self) -> Result<String, ChangeError> {
        let path = self.settings.path.clone();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ChangeError::invalid(format!("{}: cannot read: {e}", path.display())))?;
        self.apply_text(&text, false)
    }

    /// `forwarder rule add`: validated as part of the whole file, applied, then written.
    pub fn rule_add(
        &mut self,
        name: &str,
        listen: u16,
        target: &str,
    ) -> Result<String, ChangeError> {
        let text = self.current_text()?;
        let new = write_back::add(&text, name, listen, target).map_err(ChangeError::invalid)?;
        self.apply_text(&new, true)
    }

    /// `forwarder rule remove`: existing connections of the rule keep running until they end.
    pub fn rule_remove(&mut self, name: &str) -> Result<String, ChangeError> {
        let text = self.current_text()?;
        let new = write_back::remove(&text, name).map_err(ChangeError::invalid)?;
        self.apply_text(&new, true)
    }

    fn current_text(&self) -> Result<String, ChangeError> {
        std::fs::read_to_string(&self.settings.path).map_err(|e| {
            ChangeError::runtime(format!("{}: cannot read: {e}", self.settings.path.display()))
        })
    }

    /// Validates `text` as the config file, resolves it, applies it to the maps and, with
    /// `write`, saves it as the file. Nothing changes unless all of that can be done.
    fn apply_text(&mut self, text: &str, write: bool) -> Result<String, ChangeError> {
        let path = self.settings.path.clone();
        let new = config::parse(&path, text).map_err(ChangeError::invalid)?;
        config::check_host(&new, text).map_err(ChangeError::invalid)?;
        self.check_live_changeable(&new)?;
        let mut ids = self.state.rule_ids.clone();
        // Ids that tracked flows carry: a removed rule's stay reserved while its flows live.
        let held: std::collections::BTreeSet<u16> = self
            .dp
            .flows()
            .map(|all| flows::active_per_rule(&all).into_keys().collect())
            .map_err(ChangeError::runtime)?;
        let resolved = plan::Resolutions::lookup(&new);
        let plan = Plan::build_with_ids(&new, self.allow_unresolved, &resolved, &mut ids, &held)
            .map_err(ChangeError::invalid)?;
        let summary = describe_change(&self.plan, &plan);
        // Ids given to a new rule may have counted for a removed one.
        let fresh: Vec<u16> = plan
            .rules
            .iter()
            .filter(|r| !self.plan.rules.iter().any(|o| o.rule_id == r.rule_id && o.name == r.name))
            .map(|r| r.rule_id)
            .collect();
        for id in fresh {
            self.dp.reset_rule_stats(id).map_err(ChangeError::runtime)?;
        }
        if let Err(e) = self.dp.apply(&plan) {
            return Err(ChangeError::runtime(format!(
                "applying to the BPF maps: {e}; {}",
                self.undo()
            )));
        }
        // After the maps: a change the maps refuse never reaches the file. A file that
        // cannot be written (full disk) undoes the live change, so the running rules stay
        // what the file says and a restart brings back what runs now.
        if write {
            if let Err(e) = config::file_replace::replace(&path, text.as_bytes()) {
                return Err(ChangeError::runtime(format!(
                    "{}: cannot write the config: {e}; {}",
                    path.display(),
                    self.undo()
                )));
            }
        }
        self.settings = new;
        self.plan = plan;
        self.state.rule_ids = ids;
        self.save_state()?;
        self.update_health();
        Ok(summary)
    }

    /// Puts the maps back to the running plan after a failed change; says how that went.
    fn undo(&mut self) -> String {
        match self.dp.apply(&self.plan) {
            Ok(()) => "change undone, the rules are as they were".into(),
            Err(e) => format!(
                "undoing the change failed too ({e}): the maps may hold part of it; run \
                 `forwarder reload`"
            ),
        }
    }

    /// Keys whose change needs a restart are refused whole rather than half applied.
    fn check_live_changeable(&self, new: &Settings) -> Result<(), ChangeError> {
        let old = &self.settings;
        let mut fixed = Vec::new();
        if old.interfaces != new.interfaces {
            fixed.push("interface");
        }
        if old.mode != new.mode {
            fixed.push("mode");
        }
        if old.max_flows != new.max_flows {
            fixed.push("max_flows");
        }
        if old.snat_ports != new.snat_ports {
            fixed.push("snat_ports");
        }
        if old.pin_path != new.pin_path {
            fixed.push("pin_path");
        }
        if old.control_socket != new.control_socket {
            fixed.push("control_socket");
        }
        if old.health != new.health {
            fixed.push("health");
        }
        if old.metrics != new.metrics {
            fixed.push("metrics");
        }
        if fixed.is_empty() {
            Ok(())
        } else {
            Err(ChangeError::invalid(format!(
                "{}: {} cannot change while running; nothing was applied (restart the daemon: \
                 established connections survive a restart)",
                new.path.display(),
                fixed.join(", ")
            )))
        }
    }

    pub fn drain(&mut self, on: bool) -> Result<String, ChangeError> {
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
        self.save_state()?;
        self.update_health();
        Ok(msg)
    }

    /// Re-resolves hostname targets; a new address serves new connections only (existing
    /// flows keep the target in their conntrack entry). `resolved` maps rule name to the
    /// new lookup result, done by the caller without holding this state.
    pub fn apply_resolved(&mut self, resolved: &[(String, Option<std::net::Ipv4Addr>)]) {
        // A name that moves to this host's own address would expose its services; the
        // change is refused like a file naming that address would be.
        let host = crate::host::netif::host_ipv4_addrs().unwrap_or_default();
        let mut changed = false;
        for (name, addr) in resolved {
            let Some(rule) = self.plan.rules.iter_mut().find(|r| &r.name == name) else {
                continue;
            };
            let Some(spec) = self.settings.rules.iter().find(|r| &r.name == name) else {
                continue;
            };
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
                tracing::warn!("applying re-resolved targets: {e:#}");
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

    pub fn status(&self) -> Result<Status, ChangeError> {
        let flows = self.dp.flows().map_err(ChangeError::runtime)?;
        Ok(self.status_of(&flows))
    }

    /// `status` from flows already read.
    pub fn status_of(&self, flows: &[flows::Flow]) -> Status {
        let probe = *self.health.last_probe.lock().expect("probe lock");
        let now = SystemTime::now();
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: self.settings.path.display().to_string(),
            pin_path: self.settings.pin_path.display().to_string(),
            interfaces: self
                .dp
                .attached
                .iter()
                .map(|(i, a)| Attachment { interface: i.clone(), mode: a.name().into() })
                .collect(),
            program_ids: self.dp.program_ids(),
            snat: self.plan.snat_addr.to_string(),
            snat_ports: format!("{}-{}", self.plan.snat_ports.0, self.plan.snat_ports.1),
            healthy: self.unhealthy_reason().is_none(),
            unhealthy_reason: self.unhealthy_reason(),
            drained: self.state.drained_since.is_some(),
            drained_since: self.state.drained_since,
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

    pub fn stats(&self) -> Result<Vec<RuleStatsRow>, ChangeError> {
        let flows = self.dp.flows().map_err(ChangeError::runtime)?;
        self.stats_of(&flows)
    }

    /// `stats` from flows already read.
    pub fn stats_of(&self, flows: &[flows::Flow]) -> Result<Vec<RuleStatsRow>, ChangeError> {
        let active = flows::active_per_rule(flows);
        let mut rows = Vec::new();
        for r in &self.plan.rules {
            let t = self.dp.rule_totals(r.rule_id).map_err(ChangeError::runtime)?;
            rows.push(RuleStatsRow {
                name: r.name.clone(),
                id: r.rule_id,
                active_flows: active.get(&r.rule_id).copied().unwrap_or(0),
                counters: Counter::ALL.iter().map(|c| (c.name().to_string(), t.get(*c))).collect(),
            });
        }
        Ok(rows)
    }

    pub fn flows(&self, rule: Option<&str>) -> Result<Vec<FlowRow>, ChangeError> {
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
        let all = self.dp.flows().map_err(ChangeError::runtime)?;
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
                    established_table: f.established_table,
                }
            })
            .collect())
    }
}

/// A one-line account of what a change did, for the log and the CLI.
fn describe_change(old: &Plan, new: &Plan) -> String {
    let mut parts = Vec::new();
    for r in &new.rules {
        match old.rules.iter().find(|o| o.name == r.name) {
            None => parts.push(format!("added {}", r.name)),
            Some(o) if o != r => parts.push(format!("changed {}", r.name)),
            Some(_) => {}
        }
    }
    for o in &old.rules {
        if !new.rules.iter().any(|r| r.name == o.name) {
            parts.push(format!("removed {}", o.name));
        }
    }
    if parts.is_empty() {
        "no rule changed".into()
    } else {
        parts.join(", ")
    }
}
