//! `forwarder kafka discover`: ask a bootstrap broker for the cluster's brokers and lay out,
//! per broker, the forwarding rule and the Azure resources in front of it.
//!
//! Clients connect to the address each broker advertises. On the Azure side that FQDN
//! resolves (private DNS) to a private endpoint of the broker's own Private Link Service,
//! whose load balancer frontend sends the advertised port to this VM's backend port N, where
//! the rule `listen = N` forwards to the broker's on-prem address, which is again the address
//! it advertises (the NAT VM resolves it through the on-prem DNS, not the private zone).

use super::{
    client::{Broker, ClusterMetadata, Connection, Security},
    error::KafkaError,
};
use serde::Serialize;
use std::{net::IpAddr, time::Duration};

/// The cluster's metadata, brokers only.
pub fn fetch(
    bootstrap: &str,
    security: &Security,
    timeout: Duration,
) -> Result<ClusterMetadata, KafkaError> {
    let mut conn = Connection::connect(bootstrap, security, timeout)?;
    conn.metadata(Some(&[]))
}

/// The metadata from the first of `bootstraps` that answers, as a client bootstraps, and
/// the address that answered; else the last failure.
pub fn fetch_first(
    bootstraps: &[String],
    security: &Security,
    timeout: Duration,
) -> Result<(String, ClusterMetadata), KafkaError> {
    let mut last = None;
    for addr in bootstraps {
        match fetch(addr, security, timeout) {
            Ok(meta) => return Ok((addr.clone(), meta)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| KafkaError::BadAddress {
        addr: String::new(),
        why: "no bootstrap address",
    }))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the metadata lists no brokers")]
    NoBrokers,
    #[error(
        "--first-port {first_port} leaves room for {room} listen port(s), but the cluster has \
         {brokers} brokers"
    )]
    PortsExhausted { first_port: u16, room: u32, brokers: usize },
    #[error(
        "broker {id} advertises the host {host:?}, which is neither an IP address nor a DNS \
         name (letters, digits, '-', '_' and '.'); it is not written into commands or scripts"
    )]
    UnsafeHost { id: i32, host: String },
}

impl PlanError {
    /// The operator's argument is what is wrong (exit 2), rather than the cluster.
    pub fn is_usage(&self) -> bool {
        matches!(self, PlanError::PortsExhausted { .. })
    }
}

/// What to create for each broker, in broker-id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub bootstrap: String,
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerPlan {
    pub broker: Broker,
    /// The forwarder rule: `name`, `listen`, `target`.
    pub rule: RulePlan,
    pub azure: AzurePlan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulePlan {
    pub name: String,
    pub listen: u16,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AzurePlan {
    /// A frontend IP configuration of its own: a Private Link Service binds to a frontend,
    /// and every broker's frontend takes the same port (the advertised one).
    pub lb_frontend: String,
    pub lb_rule: String,
    /// The port clients dial: the advertised one.
    pub frontend_port: u16,
    /// The NAT VM's port for this broker: the rule's `listen`.
    pub backend_port: u16,
    pub private_link_service: String,
    /// In a VNet of the clients' own (`--client vnet`).
    pub private_endpoint: String,
    /// In a Synapse workspace's or data factory's managed VNet.
    pub managed_private_endpoint: String,
    /// The A record clients must resolve, or `None` when the broker advertises an IP
    /// address (no DNS record can redirect that; see `warnings`).
    pub dns: Option<DnsRecord>,
    /// The private endpoint's address, to fill in once it exists.
    pub endpoint_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    pub fqdn: String,
    /// The private DNS zone: the FQDN without its first label (a placeholder for a
    /// single-label name).
    pub zone: String,
    /// The record set: the first label.
    pub name: String,
}

impl Plan {
    /// Things the operator must know before creating anything.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for b in &self.brokers {
            if b.azure.dns.is_none() {
                w.push(format!(
                    "broker {} advertises the IP address {}: clients dial that address directly, \
                     so no private DNS record can send them to a private endpoint; make the \
                     broker advertise an FQDN (advertised.listeners)",
                    b.broker.id, b.broker.host
                ));
            } else if !b.broker.host.contains('.') {
                w.push(format!(
                    "broker {} advertises the single-label name {:?}: clients resolve it with \
                     their DNS search domain; put the record in that domain's zone (<ZONE>)",
                    b.broker.id, b.broker.host
                ));
            }
        }
        w
    }
}

/// One rule per broker, listen ports from `first_port` up in broker-id order.
pub fn plan(bootstrap: &str, meta: &ClusterMetadata, first_port: u16) -> Result<Plan, PlanError> {
    if meta.brokers.is_empty() {
        return Err(PlanError::NoBrokers);
    }
    let mut brokers = meta.brokers.clone();
    brokers.sort_by_key(|b| b.id);
    // The names go into shell commands and here-documents: only what a name can be.
    if let Some(e) = unsafe_host(&brokers) {
        return Err(e);
    }
    let room = 65535 - u32::from(first_port) + 1;
    if brokers.len() as u32 > room {
        return Err(PlanError::PortsExhausted { first_port, room, brokers: brokers.len() });
    }
    let brokers = brokers
        .into_iter()
        .enumerate()
        .map(|(i, broker)| {
            let name = format!("broker-{}", broker.id);
            broker_plan(broker, name, first_port + i as u16)
        })
        .collect();
    Ok(Plan {
        bootstrap: bootstrap.into(),
        cluster_id: meta.cluster_id.clone(),
        controller_id: meta.controller_id,
        brokers,
    })
}

/// The rule `name` listening on `listen` for `broker`, and the Azure resources in front of
/// it (named after the broker's id).
pub(super) fn broker_plan(broker: Broker, name: String, listen: u16) -> BrokerPlan {
    let tag = format!("broker-{}", broker.id);
    BrokerPlan {
        rule: RulePlan { name, listen, target: broker.address() },
        azure: AzurePlan {
            lb_frontend: format!("fe-kafka-{tag}"),
            lb_rule: format!("kafka-{tag}"),
            frontend_port: broker.port,
            backend_port: listen,
            private_link_service: format!("pls-kafka-{tag}"),
            private_endpoint: format!("pe-kafka-{tag}"),
            managed_private_endpoint: format!("mpe-kafka-{tag}"),
            dns: dns_record(&broker.host),
            endpoint_ip: format!("<PE_IP_BROKER_{}>", broker.id),
        },
        broker,
    }
}

/// The first broker whose advertised host cannot go into a shell command.
pub(super) fn unsafe_host(brokers: &[Broker]) -> Option<PlanError> {
    brokers
        .iter()
        .find(|b| !is_host_name_or_ip(&b.host))
        .map(|b| PlanError::UnsafeHost { id: b.id, host: b.host.clone() })
}

fn is_host_name_or_ip(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

fn dns_record(host: &str) -> Option<DnsRecord> {
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let fqdn = host.trim_end_matches('.').to_string();
    let (name, zone) = match fqdn.split_once('.') {
        Some((name, zone)) => (name.to_string(), zone.to_string()),
        None => (fqdn.clone(), "<ZONE>".to_string()),
    };
    Some(DnsRecord { fqdn, zone, name })
}

/// Metadata of three brokers, ids 1-3, advertised as brokerN.corp.example:9092 (racks azN
/// when `racks`): the unit tests' cluster.
#[cfg(test)]
pub(crate) fn three_broker_metadata(racks: bool) -> ClusterMetadata {
    ClusterMetadata {
        cluster_id: racks.then(|| "abc".into()),
        controller_id: if racks { 2 } else { 1 },
        brokers: (1..=3)
            .map(|id| Broker {
                id,
                host: format!("broker{id}.corp.example"),
                port: 9092,
                rack: racks.then(|| format!("az{id}")),
            })
            .collect(),
        topics: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(brokers: &[(i32, &str, u16)]) -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: Some("c1".into()),
            controller_id: 1,
            brokers: brokers
                .iter()
                .map(|&(id, host, port)| Broker { id, host: host.into(), port, rack: None })
                .collect(),
            topics: vec![],
        }
    }

    #[test]
    fn a_host_that_is_not_a_name_is_refused() {
        for bad in ["b$(id).corp", "a b", "x`y`", "", "a\\b", "q\"x"] {
            let err = plan("boot:9092", &meta(&[(1, "ok.corp", 9092), (2, bad, 9092)]), 9092);
            assert_eq!(err, Err(PlanError::UnsafeHost { id: 2, host: bad.into() }), "{bad:?}");
        }
        for good in ["broker_1.corp-x.example", "10.0.0.5", "fd00::5", "single"] {
            assert!(plan("boot:9092", &meta(&[(1, good, 9092)]), 9092).is_ok(), "{good}");
        }
    }

    #[test]
    fn ports_follow_broker_ids() {
        let m = meta(&[
            (3, "b3.corp.example", 9092),
            (1, "b1.corp.example", 9092),
            (2, "b2.corp.example", 9093),
        ]);
        let p = plan("boot:9092", &m, 9092).unwrap();
        let rules: Vec<_> = p
            .brokers
            .iter()
            .map(|b| (b.rule.name.as_str(), b.rule.listen, b.rule.target.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                ("broker-1", 9092, "b1.corp.example:9092"),
                ("broker-2", 9093, "b2.corp.example:9093"),
                ("broker-3", 9094, "b3.corp.example:9092")
            ]
        );
        let b2 = &p.brokers[1].azure;
        assert_eq!((b2.frontend_port, b2.backend_port), (9093, 9093));
        assert_eq!(
            b2.dns,
            Some(DnsRecord {
                fqdn: "b2.corp.example".into(),
                zone: "corp.example".into(),
                name: "b2".into()
            })
        );
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn ip_and_single_label_hosts_are_warned_about() {
        let p = plan("boot:9092", &meta(&[(1, "10.20.0.11", 9092), (2, "kafka2", 9092)]), 19092)
            .unwrap();
        assert_eq!(p.brokers[0].azure.dns, None);
        assert_eq!(p.brokers[1].azure.dns.as_ref().unwrap().zone, "<ZONE>");
        let w = p.warnings();
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("IP address 10.20.0.11"), "{w:?}");
    }

    #[test]
    fn ports_must_fit() {
        let m = meta(&[(1, "a.b", 1), (2, "a.c", 1)]);
        let e = plan("x:1", &m, 65535).unwrap_err();
        assert_eq!(e, PlanError::PortsExhausted { first_port: 65535, room: 1, brokers: 2 });
        assert!(e.is_usage());
        assert!(plan("x:1", &m, 65534).is_ok());
        assert_eq!(plan("x:1", &meta(&[]), 9092).unwrap_err(), PlanError::NoBrokers);
    }
}
