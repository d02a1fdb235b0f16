//! Which advertised brokers the forwarding rules reach, and what to add for the others:
//! what the daemon's `[kafka]` watch exports and logs, and what `kafka discover --config`
//! prints. A cluster that gains a broker advertises it to every client at once; until a
//! rule forwards to it, produce and fetch for the partitions it leads hang.
//!
//! A rule reaches a broker when its target is the advertised `host:port` (names compared
//! without case and trailing dot), or, on the same port, when the rule's target and the
//! advertised host resolve to the same IPv4 address: a rule imported from `ip_fwd.sh`
//! targets an address where the broker advertises its name. The caller resolves (this
//! module does no I/O). A rule that reaches no advertised broker but targets a port the
//! cluster's brokers listen on is `gone` (its broker left, or moved); one to another port
//! (a Schema Registry on 8081 beside the brokers) is not the cluster's and counts nowhere.

use super::{
    client::{Broker, ClusterMetadata},
    discover::{broker_plan, unsafe_host, Plan, PlanError},
};
use serde::Serialize;
use std::net::Ipv4Addr;

/// A forwarding rule as the comparison needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTarget {
    pub name: String,
    pub listen: u16,
    /// As written: a hostname or an IPv4 address.
    pub host: String,
    pub port: u16,
    /// What `host` resolved to, if known (an IPv4 literal is its own).
    pub addr: Option<Ipv4Addr>,
}

/// What an advertised host resolved to (host, port) -> address, or `None`.
pub type AddressOf<'a> = &'a dyn Fn(&str, u16) -> Option<Ipv4Addr>;

/// The three states of `forwarder_kafka_brokers{state=...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Advertised brokers and the rule that forwards to each.
    pub mapped: Vec<(Broker, String)>,
    /// Advertised brokers no rule forwards to: clients hang on them.
    pub unmapped: Vec<Broker>,
    /// Rules to a port the brokers listen on that forward to no advertised broker (removed
    /// from the cluster, or moved).
    pub gone: Vec<RuleTarget>,
}

impl RuleTarget {
    fn reaches(&self, b: &Broker, address_of: AddressOf) -> bool {
        let name = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
        let advertised = || b.host.parse::<Ipv4Addr>().ok().or_else(|| address_of(&b.host, b.port));
        self.port == b.port
            && (name(&self.host) == name(&b.host)
                || (self.addr.is_some() && advertised() == self.addr))
    }
}

/// `brokers` (as the metadata lists them) against `rules`, the advertised names' addresses
/// from `address_of`; each list in broker-id or the rules' order.
pub fn compare(brokers: &[Broker], rules: &[RuleTarget], address_of: AddressOf) -> Coverage {
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|b| b.id);
    let mut c = Coverage::default();
    for b in sorted {
        match rules.iter().find(|r| r.reaches(&b, address_of)) {
            Some(r) => c.mapped.push((b, r.name.clone())),
            None => c.unmapped.push(b),
        }
    }
    c.gone = rules
        .iter()
        .filter(|r| brokers.iter().any(|b| b.port == r.port))
        .filter(|r| !brokers.iter().any(|b| r.reaches(b, address_of)))
        .cloned()
        .collect();
    c
}

/// The rules' names and listen ports taken, and which other ports a new rule may not
/// listen on (`snat_ports`, the health and metrics ports: the config's own checks).
pub struct Taken<'a> {
    pub names: Vec<&'a str>,
    pub port: &'a dyn Fn(u16) -> bool,
}

/// A [`Plan`] of the unmapped brokers only: for each a rule named `broker-ID` (or the next
/// free `broker-ID-N`), listening on the first port from `first_port` that is free, and
/// the Azure resources in front of it.
pub fn plan_missing(
    bootstrap: &str,
    meta: &ClusterMetadata,
    coverage: &Coverage,
    taken: &Taken,
    first_port: u16,
) -> Result<Plan, PlanError> {
    if let Some(e) = unsafe_host(&coverage.unmapped) {
        return Err(e);
    }
    let mut names: Vec<String> = taken.names.iter().map(|n| n.to_string()).collect();
    let mut next = u32::from(first_port);
    let mut brokers = Vec::with_capacity(coverage.unmapped.len());
    for b in &coverage.unmapped {
        while next <= 65535 && (taken.port)(next as u16) {
            next += 1;
        }
        if next > 65535 {
            let room = brokers.len() as u32;
            let brokers = coverage.unmapped.len();
            return Err(PlanError::PortsExhausted { first_port, room, brokers });
        }
        let name = free_name(&format!("broker-{}", b.id), &names);
        names.push(name.clone());
        brokers.push(broker_plan(b.clone(), name, next as u16));
        next += 1;
    }
    Ok(Plan {
        bootstrap: bootstrap.into(),
        cluster_id: meta.cluster_id.clone(),
        controller_id: meta.controller_id,
        brokers,
    })
}

/// `base`, or `base-2`, `base-3`, ... whichever no rule has yet.
fn free_name(base: &str, names: &[String]) -> String {
    let taken = |n: &str| names.iter().any(|x| x == n);
    if !taken(base) {
        return base.to_string();
    }
    // One more candidate than there are names: one of them is free.
    (2..=names.len() + 2)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken(n))
        .expect("more candidates than names")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, host: &str, port: u16) -> Broker {
        Broker { id, host: host.into(), port, rack: None }
    }

    fn rule(name: &str, listen: u16, target: &str) -> RuleTarget {
        let (host, port) = target.rsplit_once(':').unwrap();
        RuleTarget {
            name: name.into(),
            listen,
            host: host.into(),
            port: port.parse().unwrap(),
            addr: host.parse().ok(),
        }
    }

    fn meta(brokers: Vec<Broker>) -> ClusterMetadata {
        ClusterMetadata { cluster_id: None, controller_id: 1, brokers, topics: vec![] }
    }

    #[test]
    fn brokers_are_mapped_by_name_or_address_and_port() {
        let brokers = [
            broker(2, "B2.corp.example.", 9092),
            broker(1, "10.0.0.11", 9092),
            broker(3, "b3.corp.example", 9093),
            broker(4, "b4.corp.example", 9092),
        ];
        let rules = [
            rule("one", 9092, "10.0.0.11:9092"),
            rule("two", 9093, "b2.corp.example:9092"),
            // The right host on another port is not that broker.
            rule("three", 9094, "b3.corp.example:9092"),
            // An address where the broker advertises its name (an ip_fwd.sh import).
            rule("four", 9095, "10.0.0.14:9092"),
            // Not a broker's port: another service beside the cluster, never gone.
            rule("registry", 9096, "registry.corp.example:8081"),
        ];
        let resolver = |host: &str, port| {
            ((host, port) == ("b4.corp.example", 9092)).then_some(Ipv4Addr::new(10, 0, 0, 14))
        };
        let c = compare(&brokers, &rules, &resolver);
        let mapped: Vec<(i32, &str)> = c.mapped.iter().map(|(b, r)| (b.id, r.as_str())).collect();
        assert_eq!(mapped, [(1, "one"), (2, "two"), (4, "four")]);
        let unmapped: Vec<i32> = c.unmapped.iter().map(|b| b.id).collect();
        assert_eq!(unmapped, [3]);
        assert_eq!(c.gone, [rules[2].clone()]);
        // Unresolved, the address rule reaches nothing.
        let c = compare(&brokers, &rules, &|_, _| None);
        assert_eq!(c.unmapped.len(), 2);
        assert_eq!(c.gone.len(), 2);
    }

    #[test]
    fn the_missing_rules_take_free_names_and_ports() {
        let rules = [rule("broker-4", 9092, "10.0.0.11:9092"), rule("b", 9093, "10.0.0.12:9092")];
        let m = meta(vec![
            broker(1, "10.0.0.11", 9092),
            broker(4, "b4.corp.example", 9092),
            broker(5, "b5.corp.example", 9092),
        ]);
        let c = compare(&m.brokers, &rules, &|_, _| None);
        let snat = |p: u16| (9095..=9096).contains(&p);
        let port = |p: u16| rules.iter().any(|r| r.listen == p) || snat(p);
        let taken = Taken { names: rules.iter().map(|r| r.name.as_str()).collect(), port: &port };
        let p = plan_missing("boot:9092", &m, &c, &taken, 9092).unwrap();
        let got: Vec<(&str, u16, &str)> = p
            .brokers
            .iter()
            .map(|b| (b.rule.name.as_str(), b.rule.listen, b.rule.target.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("broker-4-2", 9094, "b4.corp.example:9092"),
                ("broker-5", 9097, "b5.corp.example:9092")
            ]
        );
        assert_eq!(p.brokers[0].azure.private_link_service, "pls-kafka-broker-4");
        assert_eq!(p.brokers[1].azure.backend_port, 9097);

        // Room for one of the two.
        let full = |p: u16| p >= 9093;
        let taken = Taken { names: vec![], port: &full };
        let e = plan_missing("boot:9092", &m, &c, &taken, 9092).unwrap_err();
        assert_eq!(e, PlanError::PortsExhausted { first_port: 9092, room: 1, brokers: 2 });
    }
}
