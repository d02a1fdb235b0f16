//! What the kernel maps must hold for a configuration: settings resolved against this host
//! (interface addresses, hostname targets) and turned into map values.

use crate::{
    config::{ListenIp, Settings, SnatIp},
    host::netif,
};
use forwarder_common::{ne_addr, Config, Rule, LAYOUT_VERSION, LISTEN_ADDRS, LISTEN_ANY};
use ipnet::Ipv4Net;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Netif(#[from] netif::NetifError),
    /// A hostname target that resolves to this host (literal addresses are refused with
    /// the file, see `config::check_host`).
    #[error("rule {rule:?}: target {target} resolves to {message}")]
    OwnAddress { rule: String, target: String, message: String },
    #[error("rule {rule:?}: target {target} does not resolve to an IPv4 address{reason} (use --allow-unresolved to start anyway)")]
    Unresolved { rule: String, target: String, reason: String },
}

/// One rule as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRule {
    pub name: String,
    pub listen: u16,
    pub target: Option<(Ipv4Addr, u16)>,
    pub rule_id: u16,
}

impl PlannedRule {
    /// The RULES value; `None` while the target is unresolved (the port is then not served).
    pub fn map_value(&self) -> Option<Rule> {
        self.target.map(|(addr, port)| Rule {
            target_addr: ne_addr(addr),
            target_port: port.to_be(),
            rule_id: self.rule_id,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub snat_addr: Ipv4Addr,
    pub snat_ports: (u16, u16),
    /// `None`: any destination address (listen_ip = "any").
    pub listen_addrs: Option<Vec<Ipv4Addr>>,
    /// `None`: any source.
    pub allowed_sources: Option<Vec<Ipv4Net>>,
    pub mss_clamp: u16,
    pub timeouts_ns: [u64; 3],
    pub rules: Vec<PlannedRule>,
}

impl Plan {
    /// Resolves `settings` on this host. Unresolvable hostnames are an error unless
    /// `allow_unresolved`, in which case their rules stay unserved until they resolve.
    pub fn build(settings: &Settings, allow_unresolved: bool) -> Result<Plan, PlanError> {
        Self::build_with_ids(settings, allow_unresolved, &mut BTreeMap::new(), &BTreeSet::new())
    }

    /// As `build`, keeping each rule's id from `ids` (name -> id) and giving new rules the
    /// lowest free ids, avoiding those in `held` (ids that tracked flows of removed rules
    /// still carry); `ids` is updated to the plan's rules. Conntrack entries and counters
    /// refer to rules by id, so a rule must keep its id while others come and go.
    pub fn build_with_ids(
        settings: &Settings,
        allow_unresolved: bool,
        ids: &mut BTreeMap<String, u16>,
        held: &BTreeSet<u16>,
    ) -> Result<Plan, PlanError> {
        let names: Vec<&str> = settings.rules.iter().map(|r| r.name.as_str()).collect();
        assign_ids(&names, ids, held);
        let primary = &settings.interfaces[0];
        let snat_addr = match settings.snat_ip {
            SnatIp::Addr(a) => a,
            SnatIp::Auto => netif::primary_ipv4(primary)?,
        };
        let listen_addrs = match settings.listen_ip {
            ListenIp::Any => None,
            ListenIp::Addr(a) => Some(vec![a]),
            ListenIp::Auto => {
                let mut all = Vec::new();
                for i in &settings.interfaces {
                    all.extend(netif::ipv4_addrs(i)?);
                }
                Some(all)
            }
        };
        let host = netif::host_ipv4_addrs()?;
        let mut rules = Vec::with_capacity(settings.rules.len());
        for r in &settings.rules {
            let target = match resolve(&r.target.host, r.target.port) {
                Ok(addr) => {
                    if let Some(iface) = netif::interface_of(&host, addr) {
                        return Err(PlanError::OwnAddress {
                            rule: r.name.clone(),
                            target: r.target.to_string(),
                            message: crate::config::own_address_message(addr, iface),
                        });
                    }
                    Some((addr, r.target.port))
                }
                Err(reason) if allow_unresolved => {
                    tracing::warn!(rule = %r.name, target = %r.target, "unresolved{reason}; not served until it resolves");
                    None
                }
                Err(reason) => {
                    return Err(PlanError::Unresolved {
                        rule: r.name.clone(),
                        target: r.target.to_string(),
                        reason,
                    })
                }
            };
            rules.push(PlannedRule {
                name: r.name.clone(),
                listen: r.listen,
                target,
                rule_id: ids[&r.name],
            });
        }
        let t = &settings.timeouts;
        Ok(Plan {
            snat_addr,
            snat_ports: (*settings.snat_ports.start(), *settings.snat_ports.end()),
            listen_addrs,
            allowed_sources: settings.allowed_sources.clone(),
            mss_clamp: settings.mss_clamp.unwrap_or(0),
            timeouts_ns: [t.syn, t.established, t.closing].map(|d| d.as_nanos() as u64),
            rules,
        })
    }

    /// The CONFIG map value.
    pub fn config(&self) -> Config {
        Config {
            layout_version: LAYOUT_VERSION,
            snat_addr: ne_addr(self.snat_addr),
            snat_port_min: self.snat_ports.0,
            snat_port_max: self.snat_ports.1,
            mss_clamp: self.mss_clamp,
            listen_mode: if self.listen_addrs.is_some() { LISTEN_ADDRS } else { LISTEN_ANY },
            allow_all_sources: self.allowed_sources.is_none() as u8,
            timeout_syn_ns: self.timeouts_ns[0],
            timeout_established_ns: self.timeouts_ns[1],
            timeout_closing_ns: self.timeouts_ns[2],
            // The datapath knows the tables' size (see `Datapath::apply`).
            max_flows: 0,
            _pad: 0,
        }
    }
}

/// How long a rule target's name may take to resolve (at start, reload, `rule add` and the
/// DNS refresh): a silent resolver makes the rule unresolved instead of hanging the daemon.
pub const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves a target host (IPv4 literal or hostname) to its first IPv4 address; the error
/// is the reason, as it follows "does not resolve to an IPv4 address".
pub fn resolve(host: &str, port: u16) -> Result<Ipv4Addr, String> {
    use crate::host::resolve::{first_ipv4, ResolveError};
    first_ipv4(host, port, RESOLVE_TIMEOUT).map_err(|e| match e {
        ResolveError::NoIpv4 | ResolveError::NoAddresses => ": it has no IPv4 address".into(),
        e => format!(": {e}"),
    })
}

impl Plan {
    /// Settles the rule ids once the tracked flows can be read: rules `old` knows keep
    /// their ids, new rules take ids no tracked flow carries (`held`). For a daemon start,
    /// where the plan is built before the pinned maps are opened. Returns name -> id.
    pub fn settle_ids(
        &mut self,
        old: &BTreeMap<String, u16>,
        held: &BTreeSet<u16>,
    ) -> BTreeMap<String, u16> {
        let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        let mut ids = old.clone();
        assign_ids(&names, &mut ids, held);
        for r in &mut self.rules {
            r.rule_id = ids[&r.name];
        }
        ids
    }
}

/// Keeps the ids of `names` already in `ids`, drops the others, and gives each new name the
/// lowest id that is neither taken nor `held` (a removed rule's id while its flows live,
/// so their counters do not land on the new rule). When every free id is held, a held one
/// is taken rather than failing: the config allows at most MAX_RULES rules.
fn assign_ids(names: &[&str], ids: &mut BTreeMap<String, u16>, held: &BTreeSet<u16>) {
    ids.retain(|name, _| names.contains(&name.as_str()));
    for name in names {
        if ids.contains_key(*name) {
            continue;
        }
        let used: BTreeSet<u16> = ids.values().copied().collect();
        let mut free = (0..forwarder_common::MAX_RULES as u16).filter(|i| !used.contains(i));
        let id = free
            .clone()
            .find(|i| !held.contains(i))
            .or_else(|| free.next())
            .expect("the config allows at most MAX_RULES rules");
        ids.insert(name.to_string(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_and_new_rules_skip_ids_whose_flows_live() {
        let mut ids = BTreeMap::new();
        assign_ids(&["a", "b", "c"], &mut ids, &BTreeSet::new());
        assert_eq!(ids, BTreeMap::from([("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]));
        // b removed while its flows live: d must not take id 1.
        assign_ids(&["a", "c", "d"], &mut ids, &BTreeSet::from([1]));
        assert_eq!(ids["a"], 0);
        assert_eq!(ids["c"], 2);
        assert_eq!(ids["d"], 3);
        // Once b's flows are gone, its id is free again.
        assign_ids(&["a", "c", "d", "e"], &mut ids, &BTreeSet::new());
        assert_eq!(ids["e"], 1);
    }

    #[test]
    fn a_held_id_is_taken_when_nothing_else_is_free() {
        let names: Vec<String> =
            (0..forwarder_common::MAX_RULES).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut ids = BTreeMap::new();
        assign_ids(&refs[..refs.len() - 1], &mut ids, &BTreeSet::new());
        let last = (forwarder_common::MAX_RULES - 1) as u16;
        assign_ids(&refs, &mut ids, &BTreeSet::from([last]));
        assert_eq!(ids[refs[refs.len() - 1]], last);
    }
}
