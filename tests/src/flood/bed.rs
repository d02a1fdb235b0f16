//! The flood's bed: the e2e topology (client, router, NAT VM, brokers), echo servers on the
//! brokers, a blackhole for the spoofed network in the router, and the contender in the NAT
//! VM. Everything goes with the namespaces when the bed drops, also on failure.

use crate::{
    daemon_tests::METRICS,
    topology::{cli, Daemon, Topology, BROKERS, BROKER_PORT, LISTEN_PORTS, NATVM},
    traffic::{echo_servers, EchoServers},
};
use anyhow::{bail, ensure, Context, Result};
use std::{collections::BTreeMap, net::SocketAddrV4};

/// The spoofed sources' network: allowed by the config, a blackhole in the router.
pub const SPOOFED_NET: (std::net::Ipv4Addr, u8) = (std::net::Ipv4Addr::new(10, 2, 0, 0), 16);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    ForwarderXdp,
    /// `ip_fwd.sh` once per listen port: DNAT in PREROUTING, MASQUERADE in POSTROUTING.
    Iptables,
}

impl Contender {
    pub fn name(self) -> &'static str {
        match self {
            Contender::ForwarderXdp => "forwarder xdp",
            Contender::Iptables => "iptables (ip_fwd.sh)",
        }
    }
}

pub struct Bed {
    pub contender: Contender,
    pub max_flows: u32,
    pub daemon: Option<Daemon>,
    _servers: EchoServers,
    pub topo: Topology,
}

impl Bed {
    pub fn new(tag: &str, contender: Contender, max_flows: u32) -> Result<Bed> {
        crate::require_root();
        let topo = Topology::new(tag, false, true)?;
        let brokers: Vec<_> = BROKERS.iter().map(|b| SocketAddrV4::new(*b, BROKER_PORT)).collect();
        let servers = echo_servers(&topo.broker, &brokers)?;
        let (net, len) = SPOOFED_NET;
        topo.router.ip(&["route", "add", "blackhole", &format!("{net}/{len}")])?;
        // The NAT VM receives on a NAPI thread of its own. Otherwise veth runs the receiver's
        // NAPI on the sending CPU as each transmit ends, so a costlier contender would slow
        // the flood's sender and be offered fewer SYNs per second than a cheaper one.
        topo.natvm.exec(&["sh", "-c", "echo 1 > /sys/class/net/n0/threaded"])?;
        let daemon = match contender {
            Contender::ForwarderXdp => Some(Daemon::start(&topo.natvm, &config(&topo, max_flows))?),
            Contender::Iptables => {
                ip_fwd(&topo)?;
                None
            }
        };
        Ok(Bed { contender, max_flows, daemon, _servers: servers, topo })
    }

    pub fn listen_addrs(&self) -> Vec<SocketAddrV4> {
        LISTEN_PORTS.iter().map(|p| SocketAddrV4::new(NATVM, *p)).collect()
    }

    /// `forwarder --config .. ARGS --json` in the NAT VM, parsed.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let d = self.daemon.as_ref().context("no forwarder in this bed")?;
        let out = cli(&self.topo.natvm, &d.config, args)?;
        ensure!(
            out.status.success(),
            "forwarder {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).with_context(|| format!("forwarder {args:?}"))
    }

    /// The forwarder's counters summed over its rules (empty for iptables).
    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        let mut sum = BTreeMap::new();
        if self.daemon.is_none() {
            return Ok(sum);
        }
        let stats = self.cli_json(&["stats", "--json"])?;
        for rule in stats.as_array().context("stats --json: not a list")? {
            for (k, v) in rule["counters"].as_object().context("a rule without counters")? {
                *sum.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
            }
        }
        Ok(sum)
    }

    /// Packets n0 (the NAT VM's NIC) received so far.
    pub fn n0_rx(&self) -> Result<u64> {
        self.topo.natvm.link_counter("n0", "rx", "packets")
    }

    /// Netfilter's conntrack statistics in the NAT VM, summed over CPUs (iptables only).
    pub fn conntrack_stats(&self) -> Result<BTreeMap<String, u64>> {
        if self.contender != Contender::Iptables {
            return Ok(BTreeMap::new());
        }
        let out = self.topo.natvm.exec(&["cat", "/proc/net/stat/nf_conntrack"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let names: Vec<&str> =
            lines.next().context("empty nf_conntrack stats")?.split_whitespace().collect();
        let mut sum = BTreeMap::new();
        for line in lines {
            for (name, hex) in names.iter().zip(line.split_whitespace()) {
                // `entries` is the same global count on every CPU's line.
                if *name != "entries" {
                    *sum.entry(name.to_string()).or_insert(0) += u64::from_str_radix(hex, 16)?;
                }
            }
        }
        Ok(sum)
    }

    /// `sysctl` of the NAT VM, as a number.
    pub fn natvm_sysctl(&self, key: &str) -> Result<u64> {
        let text = self.topo.natvm.sysctl_get(key)?;
        text.parse().with_context(|| format!("{key} = {text:?}"))
    }

    /// Stops the daemon and unloads it; fails if it exited badly, or if any receiver found
    /// a wrong TCP checksum (flood SYNs and streams alike).
    pub fn finish(mut self) -> Result<()> {
        self.topo.assert_no_checksum_errors()?;
        if let Some(d) = self.daemon.take() {
            let config = d.config.clone();
            let status = d.stop()?;
            if !status.success() {
                bail!("the daemon exited with {status}");
            }
            self.topo.unload(&config)?;
        }
        Ok(())
    }
}

/// The seed config (three rules, 20000 SNAT ports, MSS clamp), the spoofed network allowed
/// as another spoke of the VNet would be, `max_flows`, a metrics endpoint, and an
/// established timeout short enough for the idle flows to expire beside the flood.
fn config(topo: &Topology, max_flows: u32) -> String {
    let (net, len) = SPOOFED_NET;
    topo.config("xdp", &NATVM.to_string())
        .replace(
            "allowed_sources = [\"10.1.0.0/16\"]",
            &format!("allowed_sources = [\"10.1.0.0/16\", \"{net}/{len}\"]"),
        )
        .replace(
            "mss_clamp = 1360\n",
            &format!(
                "mss_clamp = 1360\nmax_flows = {max_flows}\nmetrics = \"{METRICS}\"\n\
                 [timeouts]\nestablished = \"{}s\"\n",
                super::idle::TIMEOUT.as_secs()
            ),
        )
}

/// What `ip_fwd.sh -i n0 -f PORT -a BROKER -b 9092` writes, for each rule, and what it
/// needs: forwarding on, no ICMP redirects out of the one NIC.
fn ip_fwd(topo: &Topology) -> Result<()> {
    let nat = &topo.natvm;
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.n0.send_redirects", "0"),
    ] {
        nat.sysctl(k, v)?;
    }
    for (port, broker) in LISTEN_PORTS.iter().zip(BROKERS) {
        let to = format!("{broker}:{BROKER_PORT}");
        let port = port.to_string();
        nat.exec(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            "n0",
            "-p",
            "tcp",
            "-m",
            "tcp",
            "--dport",
            &port,
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ])?;
    }
    nat.exec(&["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "n0", "-j", "MASQUERADE"])?;
    Ok(())
}
