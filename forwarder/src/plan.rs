//! What the kernel maps must hold for a configuration: settings resolved against this host
//! (interface addresses, hostname targets) and turned into map values. Hostname targets are
//! looked up first, into [`Resolutions`], so that the daemon can do that slow part without
//! holding its lock and build the plan from the answers under it.

use crate::{
    config::{ListenIp, Settings, SnatIp},
    host::netif,
    kafka::{coverage::Coverage, Broker},
};
use forwarder_common::{ne_addr, Config, Rule, LAYOUT_VERSION, LISTEN_ADDRS, LISTEN_ANY};
use ipnet::Ipv4Net;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Mutex,
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
    /// The answers handed to `build_with_ids` lack this target: a bug, refused rather than
    /// looked up while the caller may hold a lock.
    #[error("rule {rule:?}: target {target} was not looked up before the plan was built")]
    NotLookedUp { rule: String, target: String },
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
        let resolved = Resolutions::lookup(settings);
        let (mut ids, held) = (BTreeMap::new(), BTreeSet::new());
        Self::build_with_ids(settings, allow_unresolved, &resolved, &mut ids, &held)
    }

    /// As `build`, with the hostname targets' answers from `resolved` (it does no lookup of
    /// its own), keeping each rule's id from `ids` (name -> id) and giving new rules the
    /// lowest free ids, avoiding those in `held` (ids that tracked flows of removed rules
    /// still carry); `ids` is updated to the plan's rules. Conntrack entries and counters
    /// refer to rules by id, so a rule must keep its id while others come and go.
    pub fn build_with_ids(
        settings: &Settings,
        allow_unresolved: bool,
        resolved: &Resolutions,
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
            let answer = resolved.get(&r.target.host, r.target.port).ok_or_else(|| {
                PlanError::NotLookedUp { rule: r.name.clone(), target: r.target.to_string() }
            })?;
            let target = match answer {
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
            flags: 0,
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
        e => format!(": {}", crate::error::chain(&e)),
    })
}

/// How many names [`Resolutions::of_targets`] looks up at once.
pub const PARALLEL_LOOKUPS: usize = 8;

/// Hostname targets looked up ahead of [`Plan::build_with_ids`]: (host, port) -> the first
/// IPv4 address, or the reason there is none (as [`resolve`] gives it). Literal addresses
/// need no lookup and are not in the table.
#[derive(Debug, Clone, Default)]
pub struct Resolutions(BTreeMap<(String, u16), Result<Ipv4Addr, String>>);

impl Resolutions {
    /// Every hostname target of `settings`, looked up now.
    pub fn lookup(settings: &Settings) -> Resolutions {
        Self::of_targets(settings.rules.iter().map(|r| (r.target.host.as_str(), r.target.port)))
    }

    /// Looks up each distinct hostname among `targets`, [`PARALLEL_LOOKUPS`] at a time, each
    /// bounded by [`RESOLVE_TIMEOUT`]: a silent name server costs one timeout per round,
    /// not one per name. Blocks; call it where nothing waits on the caller.
    pub fn of_targets<'a>(targets: impl IntoIterator<Item = (&'a str, u16)>) -> Resolutions {
        let names: BTreeSet<(String, u16)> = targets
            .into_iter()
            .filter(|(host, _)| host.parse::<Ipv4Addr>().is_err())
            .map(|(host, port)| (host.to_string(), port))
            .collect();
        let helpers = names.len().min(PARALLEL_LOOKUPS).saturating_sub(1);
        let queue = Mutex::new(names.into_iter());
        let answers = Mutex::new(BTreeMap::new());
        let work = || loop {
            let Some((host, port)) = queue.lock().expect("lookup queue").next() else {
                return;
            };
            let answer = resolve(&host, port);
            answers.lock().expect("lookup answers").insert((host, port), answer);
        };
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                // A helper that cannot start leaves its share to the others and this thread.
                let _ = std::thread::Builder::new()
                    .name("resolve-targets".into())
                    .spawn_scoped(scope, work);
            }
            work();
        });
        Resolutions(answers.into_inner().expect("lookup answers"))
    }

    /// The answer for `host`: a literal address is its own; `None` if it was not looked up.
    pub fn get(&self, host: &str, port: u16) -> Option<Result<Ipv4Addr, String>> {
        if let Ok(addr) = host.parse() {
            return Some(Ok(addr));
        }
        self.0.get(&(host.to_string(), port)).cloned()
    }
}

/// Which brokers of the cluster the rules of `settings` reach (`kafka::coverage`), every
/// name among the rules' targets and the advertised hosts looked up now, as
/// [`Resolutions::of_targets`] does: blocks, bounded. For the `[kafka]` watch and
/// `kafka discover --config`.
pub fn kafka_coverage(settings: &Settings, brokers: &[Broker]) -> Coverage {
    let targets = settings.rules.iter().map(|r| (r.target.host.as_str(), r.target.port));
    let advertised = brokers.iter().map(|b| (b.host.as_str(), b.port));
    let answers = Resolutions::of_targets(targets.chain(advertised));
    let address_of = |host: &str, port| answers.get(host, port).and_then(Result::ok);
    let rules: Vec<_> = settings
        .rule_targets()
        .into_iter()
        .map(|mut r| {
            r.addr = r.addr.or_else(|| address_of(&r.host, r.port));
            r
        })
        .collect();
    crate::kafka::coverage::compare(brokers, &rules, &address_of)
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

    fn settings(targets: &[&str]) -> Settings {
        let mut text =
            "interface = \"lo\"\nlisten_ip = \"any\"\nsnat_ip = \"10.9.9.9\"\n".to_string();
        for (i, t) in targets.iter().enumerate() {
            text +=
                &format!("[[rule]]\nname = \"r{i}\"\nlisten = {}\ntarget = \"{t}\"\n", 9000 + i);
        }
        crate::config::parse(std::path::Path::new("f.toml"), &text).unwrap()
    }

    #[test]
    fn names_are_looked_up_once_and_literals_not_at_all() {
        let s = settings(&["localhost:9092", "10.1.2.3:9092", "localhost:9092", "localhost:9093"]);
        let r = Resolutions::lookup(&s);
        assert_eq!(r.0.len(), 2, "{r:?}");
        assert_eq!(r.get("localhost", 9092), Some(Ok(Ipv4Addr::LOCALHOST)));
        assert_eq!(r.get("10.1.2.3", 1), Some(Ok(Ipv4Addr::new(10, 1, 2, 3))));
        assert_eq!(r.get("kafka.example", 9092), None);
    }

    #[test]
    fn a_target_missing_from_the_answers_is_refused_not_looked_up() {
        let s = settings(&["10.1.2.3:9092", "localhost:9092"]);
        let e = Plan::build_with_ids(
            &s,
            true,
            &Resolutions::default(),
            &mut BTreeMap::new(),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rule \"r1\": target localhost:9092 was not looked up before the plan was built"
        );
        let unresolved = Resolutions(BTreeMap::from([(
            ("localhost".to_string(), 9092),
            Err(": no answer from the resolver within 5s".to_string()),
        )]));
        let (mut ids, held) = (BTreeMap::new(), BTreeSet::new());
        let e = Plan::build_with_ids(&s, false, &unresolved, &mut ids, &held).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rule \"r1\": target localhost:9092 does not resolve to an IPv4 address: no \
             answer from the resolver within 5s (use --allow-unresolved to start anyway)"
        );
        let plan = Plan::build_with_ids(&s, true, &unresolved, &mut ids, &held).unwrap();
        assert_eq!(plan.rules[0].target, Some((Ipv4Addr::new(10, 1, 2, 3), 9092)));
        assert_eq!(plan.rules[1].target, None);
    }

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
