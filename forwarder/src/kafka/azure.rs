//! The `az` commands that create a [`Plan`]'s Azure side, with <PLACEHOLDERS> for what only
//! the operator knows (resource groups, names of the existing load balancer, VNets, ...).

use super::discover::Plan;
use serde::Serialize;

/// A group of commands with what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub title: String,
    pub commands: Vec<String>,
}

/// Minutes. The longest the load balancer allows; Kafka clients leave connections idle for
/// 9-10 minutes, and an idle timeout below that resets them silently.
const LB_IDLE_TIMEOUT_MIN: u32 = 30;

pub fn steps(plan: &Plan) -> Vec<Step> {
    let mut lb = Vec::new();
    let mut endpoints = Vec::new();
    let mut records = Vec::new();
    let mut zones: Vec<&str> = Vec::new();
    for b in &plan.brokers {
        let a = &b.azure;
        lb.push(format!(
            "az network lb frontend-ip create --resource-group <RESOURCE_GROUP> --lb-name <LB_NAME> \
             --name {} --vnet-name <VNET_NAME> --subnet <LB_SUBNET>",
            a.lb_frontend
        ));
        // Floating IP off: packets reach the VM addressed to its own IP and the backend
        // port, which is what the rule listens on. TCP reset off, as in the seed setup.
        lb.push(format!(
            "az network lb rule create --resource-group <RESOURCE_GROUP> --lb-name <LB_NAME> \
             --name {} --protocol Tcp --frontend-ip-name {} --frontend-port {} \
             --backend-pool-name <BACKEND_POOL> --backend-port {} --probe-name <PROBE_NAME> \
             --idle-timeout {LB_IDLE_TIMEOUT_MIN} --enable-tcp-reset false --floating-ip false",
            a.lb_rule, a.lb_frontend, a.frontend_port, a.backend_port
        ));
        lb.push(format!(
            "az network private-link-service create --resource-group <RESOURCE_GROUP> --name {} \
             --vnet-name <VNET_NAME> --subnet <PLS_SUBNET> --lb-name <LB_NAME> \
             --lb-frontend-ip-configs {}",
            a.private_link_service, a.lb_frontend
        ));
        endpoints.push(format!(
            "az network private-endpoint create --resource-group <CLIENT_RESOURCE_GROUP> --name {pe} \
             --vnet-name <CLIENT_VNET> --subnet <CLIENT_SUBNET> --connection-name {pe} \
             --private-connection-resource-id \"$(az network private-link-service show \
             --resource-group <RESOURCE_GROUP> --name {} --query id --output tsv)\"",
            a.private_link_service,
            pe = a.private_endpoint
        ));
        endpoints.push(format!(
            "az network nic show --query 'ipConfigurations[0].privateIPAddress' --output tsv \
             --ids \"$(az network private-endpoint show --resource-group <CLIENT_RESOURCE_GROUP> \
             --name {} --query 'networkInterfaces[0].id' --output tsv)\"   # = {}",
            a.private_endpoint, a.endpoint_ip
        ));
        if let Some(d) = &a.dns {
            if !zones.contains(&d.zone.as_str()) {
                zones.push(&d.zone);
            }
            records.push(format!(
                "az network private-dns record-set a add-record --resource-group <DNS_RESOURCE_GROUP> \
                 --zone-name {} --record-set-name {} --ipv4-address {}",
                d.zone, d.name, a.endpoint_ip
            ));
        }
    }
    let mut dns = Vec::new();
    for z in zones {
        dns.push(format!(
            "az network private-dns zone create --resource-group <DNS_RESOURCE_GROUP> --name {z}"
        ));
        dns.push(format!(
            "az network private-dns link vnet create --resource-group <DNS_RESOURCE_GROUP> \
             --zone-name {z} --name {}-clients --virtual-network <CLIENT_VNET_ID> \
             --registration-enabled false",
            z.replace(['.', '<', '>'], "-").trim_matches('-')
        ));
    }
    dns.extend(records);
    let mut out = vec![
        Step {
            title: "Load balancer (one frontend, rule and Private Link Service per broker)".into(),
            commands: lb,
        },
        Step {
            title: "Private endpoints in the clients' VNet, and their addresses".into(),
            commands: endpoints,
        },
    ];
    if !dns.is_empty() {
        out.push(Step {
            title: "Private DNS: each advertised name -> its private endpoint (a zone answers \
                    for every name in it in the linked VNet)"
                .into(),
            commands: dns,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{
        client::{Broker, ClusterMetadata},
        discover::plan,
    };

    #[test]
    fn one_of_each_per_broker_and_one_zone() {
        let meta = ClusterMetadata {
            cluster_id: None,
            controller_id: 1,
            brokers: (1..=3)
                .map(|id| Broker {
                    id,
                    host: format!("broker{id}.corp.example"),
                    port: 9092,
                    rack: None,
                })
                .collect(),
            topics: vec![],
        };
        let s = steps(&plan("boot:9092", &meta, 9092).unwrap());
        let all: Vec<&String> = s.iter().flat_map(|s| &s.commands).collect();
        let count = |needle: &str| all.iter().filter(|c| c.starts_with(needle)).count();
        assert_eq!(count("az network lb rule create"), 3);
        assert_eq!(count("az network private-link-service create"), 3);
        assert_eq!(count("az network private-endpoint create"), 3);
        assert_eq!(count("az network private-dns zone create"), 1);
        assert_eq!(count("az network private-dns record-set a add-record"), 3);
        let rule2 = all.iter().find(|c| c.contains("--name kafka-broker-2 ")).unwrap();
        assert!(
            rule2.contains("--frontend-port 9092 ") && rule2.contains("--backend-port 9093 "),
            "{rule2}"
        );
        assert!(rule2.contains("--frontend-ip-name fe-kafka-broker-2 "), "{rule2}");
        let rec3 = all.iter().find(|c| c.contains("--record-set-name broker3 ")).unwrap();
        assert!(
            rec3.contains("--zone-name corp.example ")
                && rec3.ends_with("--ipv4-address <PE_IP_BROKER_3>"),
            "{rec3}"
        );
        // No command has a doubled space from the line continuations.
        assert!(all.iter().all(|c| !c.contains("  --")), "{all:?}");
    }
}
