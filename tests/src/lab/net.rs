//! The lab's namespaces and links: the Azure path of SPEC §1 on one machine.
//!
//! ```text
//!  spark (client)                azure (Private Link + internal LB + VNet router)
//!  10.1.0.2 ---------------- 10.1.0.1, private endpoints 10.1.0.11..13 (frontends :9092)
//!  resolves brokerN.corp       |  DNAT by 5-tuple hash to a healthy NAT VM : 9092|9093|9094,
//!  .example -> 10.1.0.1N       |  SNAT to 10.0.0.1 (the Private Link NAT address)
//!                              |  bridge "vnet" 10.0.0.1/24 (+ 168.63.129.16, the probe source)
//!  direct (same client,        |-- natvm-a eth0 10.0.0.4  forwarder (shared config)
//!  no forwarder)               |-- natvm-b eth0 10.0.0.5  forwarder (shared config)
//!  10.2.0.2 ---------------- 10.2.0.1
//!  resolves brokerN.corp       |  "VPN" link, MTU 1400 like many on-prem links
//!  .example -> 10.20.0.1N      '-- 10.20.0.1 ------- onprem 10.20.0.11..13: one tansu each
//! ```
//!
//! The NAT VMs resolve the broker FQDNs to their on-prem addresses (their hosts file plays
//! the private DNS zone), so the shared config names brokers by hostname as in production.

use crate::{
    netns::{run, veth, Netns},
    topology::attach_xdp_pass,
};
use anyhow::Result;
use forwarder::datapath::Datapath;
use std::net::Ipv4Addr;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
pub const DIRECT_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
/// The Private Link NAT address the NAT VMs see as the source of every forwarded flow.
pub const PRIVATE_LINK_NAT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Where Azure's health probes come from.
pub const AZURE_PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
pub const NAT_VMS: [(&str, Ipv4Addr); 2] =
    [("natvm-a", Ipv4Addr::new(10, 0, 0, 4)), ("natvm-b", Ipv4Addr::new(10, 0, 0, 5))];
/// The NAT VM with accelerated networking (eth0 over a VF); the other has a plain NIC. The
/// shared config's `mode = "auto"` chooses per VM: native XDP on the plain NIC, TC over the
/// merging VF.
pub const ACCELERATED_VM: &str = "natvm-b";
pub const HEALTH_PORT: u16 = 8080;
pub const KAFKA_PORT: u16 = 9092;
/// The on-prem link's MTU: below the VNet's 1500, so the config sets `mss_clamp`.
pub const VPN_MTU: &str = "1400";

/// One broker as the lab wires it: its FQDN, private endpoint, LB backend port and on-prem
/// address. Broker `i` (0-based) gets backend port 9092 + i, as the seed's LB rules do.
#[derive(Debug, Clone)]
pub struct Broker {
    pub id: usize,
    pub fqdn: String,
    pub private_endpoint: Ipv4Addr,
    pub backend_port: u16,
    pub onprem: Ipv4Addr,
}

pub fn brokers(count: usize) -> Vec<Broker> {
    (0..count)
        .map(|i| Broker {
            id: i + 1,
            fqdn: format!("broker{}.corp.example", i + 1),
            private_endpoint: Ipv4Addr::new(10, 1, 0, 11 + i as u8),
            backend_port: KAFKA_PORT + i as u16,
            onprem: Ipv4Addr::new(10, 20, 0, 11 + i as u8),
        })
        .collect()
}

pub struct LabNet {
    pub client: Netns,
    pub direct: Netns,
    pub azure: Netns,
    pub natvms: Vec<Netns>,
    pub onprem: Netns,
    pub brokers: Vec<Broker>,
    /// XDP_PASS on the VNet ends of the NAT VM links (veth needs a program on the peer to
    /// take native XDP_TX frames); detached when this drops.
    _peer_programs: Vec<Datapath>,
}

impl LabNet {
    pub fn build(prefix: &str, broker_count: usize) -> Result<LabNet> {
        let brokers = brokers(broker_count);
        let client = Netns::with_prefix(prefix, "spark")?;
        let direct = Netns::with_prefix(prefix, "direct")?;
        let azure = Netns::with_prefix(prefix, "azure")?;
        let onprem = Netns::with_prefix(prefix, "onprem")?;
        let mut natvms = Vec::new();
        for (name, _) in NAT_VMS {
            natvms.push(Netns::with_prefix(prefix, name)?);
        }

        // Client side: the private endpoints are addresses of the azure namespace on the
        // client's subnet, as a Private Endpoint NIC sits in the client's VNet.
        veth(&client, "eth0", &azure, "pe")?;
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;
        client.ip(&["route", "add", "default", "via", "10.1.0.1"])?;
        azure.ip(&["addr", "add", "10.1.0.1/24", "dev", "pe"])?;
        for b in &brokers {
            azure.ip(&["addr", "add", &format!("{}/32", b.private_endpoint), "dev", "pe"])?;
        }
        let client_hosts: Vec<(Ipv4Addr, &str)> =
            brokers.iter().map(|b| (b.private_endpoint, b.fqdn.as_str())).collect();
        client.set_hosts(&client_hosts)?;

        // The same client without the forwarder: straight to the brokers, one hop shorter.
        veth(&direct, "eth0", &azure, "direct")?;
        direct.ip(&["addr", "add", &format!("{DIRECT_CLIENT}/24"), "dev", "eth0"])?;
        direct.ip(&["route", "add", "default", "via", "10.2.0.1"])?;
        azure.ip(&["addr", "add", "10.2.0.1/24", "dev", "direct"])?;
        let onprem_hosts: Vec<(Ipv4Addr, &str)> =
            brokers.iter().map(|b| (b.onprem, b.fqdn.as_str())).collect();
        direct.set_hosts(&onprem_hosts)?;

        // The VNet: one bridge, one port per NAT VM. Locally made traffic (the probes) leaves
        // from 168.63.129.16, as Azure's does.
        azure.ip(&["link", "add", "vnet", "type", "bridge"])?;
        azure.ip(&["link", "set", "vnet", "up"])?;
        azure.ip(&["addr", "add", &format!("{PRIVATE_LINK_NAT}/24"), "dev", "vnet"])?;
        azure.ip(&["addr", "add", &format!("{AZURE_PROBE_SOURCE}/32"), "dev", "vnet"])?;
        let mut peer_ends = Vec::new();
        for (i, ((name, addr), ns)) in NAT_VMS.iter().zip(&natvms).enumerate() {
            let port = format!("vm{i}");
            if *name == ACCELERATED_VM {
                // Accelerated networking: eth0 a master over the VF, which merges with GRO
                // before eth0 sees the packets (a bridge plays hv_netvsc).
                veth(ns, "vf0", &azure, &port)?;
                ns.ip(&["link", "add", "eth0", "type", "bridge"])?;
                ns.ip(&["link", "set", "vf0", "master", "eth0"])?;
                ns.ip(&["link", "set", "eth0", "up"])?;
                ns.exec(&["ethtool", "-K", "vf0", "gro", "on"])?;
            } else {
                veth(ns, "eth0", &azure, &port)?;
                // hv_netvsc merges with GRO; so does this NIC.
                ns.exec(&["ethtool", "-K", "eth0", "gro", "on"])?;
            }
            azure.ip(&["link", "set", &port, "master", "vnet"])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ns.ip(&["route", "add", "default", "via", &PRIVATE_LINK_NAT.to_string()])?;
            ns.set_hosts(&onprem_hosts)?;
            peer_ends.push(port);
        }
        azure.ip(&[
            "route",
            "replace",
            "10.0.0.0/24",
            "dev",
            "vnet",
            "proto",
            "kernel",
            "scope",
            "link",
            "src",
            &AZURE_PROBE_SOURCE.to_string(),
        ])?;

        // On-prem, behind a smaller MTU.
        veth(&azure, "vpn", &onprem, "eth0")?;
        for (ns, ifc) in [(&azure, "vpn"), (&onprem, "eth0")] {
            ns.ip(&["link", "set", ifc, "mtu", VPN_MTU])?;
        }
        azure.ip(&["addr", "add", "10.20.0.1/24", "dev", "vpn"])?;
        for b in &brokers {
            onprem.ip(&["addr", "add", &format!("{}/24", b.onprem), "dev", "eth0"])?;
        }
        onprem.ip(&["route", "add", "default", "via", "10.20.0.1"])?;
        azure.sysctl("net.ipv4.ip_forward", "1")?;

        let mut peer_programs = Vec::new();
        for end in peer_ends {
            peer_programs.push(azure.enter(move || attach_xdp_pass(&end))??);
        }
        Ok(LabNet { client, direct, azure, natvms, onprem, brokers, _peer_programs: peer_programs })
    }

    /// Every namespace this lab made, for the teardown check.
    pub fn names(&self) -> Vec<String> {
        let mut v = vec![
            self.client.name().to_string(),
            self.direct.name().to_string(),
            self.azure.name().to_string(),
            self.onprem.name().to_string(),
        ];
        v.extend(self.natvms.iter().map(|n| n.name().to_string()));
        v
    }
}

/// The namespaces whose name starts with `prefix-` (what a teardown must leave empty).
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect())
}
