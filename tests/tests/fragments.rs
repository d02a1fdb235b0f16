//! Brokers whose packets are fragmented on the way: they send with DF off (PMTU discovery
//! off, as some on-prem hosts and appliances do) and a hop before the NAT VM has a smaller
//! MTU (1300) than their segments (1400, after the MSS clamp). Every connection must carry
//! every byte, through the forwarder in `xdp` and `tc`, as through ip_fwd.sh's iptables
//! rules, which run the same steps beside it.

use anyhow::{ensure, Result};
use forwarder_tests::{
    netns::Netns,
    require_root,
    topology::{Daemon, Topology, BROKERS, BROKER_PORT, LISTEN_PORTS, NATVM},
    traffic::{connect, echo_servers, exchange},
};
use std::net::SocketAddrV4;

const CONNS_PER_PORT: usize = 2;
const BYTES_EACH_WAY: usize = 1024 * 1024;
/// The hop between the router and the NAT VM.
const HOP_MTU: &str = "1300";

/// The topology with the small hop and brokers that let their packets be fragmented.
fn fragmenting_path(tag: &str, peer_xdp: bool) -> Result<Topology> {
    let topo = Topology::new(tag, false, peer_xdp)?;
    topo.router.ip(&["link", "set", "r_n", "mtu", HOP_MTU])?;
    topo.natvm.ip(&["link", "set", "n0", "mtu", HOP_MTU])?;
    topo.broker.sysctl("net.ipv4.ip_no_pmtu_disc", "1")?;
    Ok(topo)
}

/// A counter of the `Ip:` lines of /proc/net/snmp.
fn ip_counter(ns: &Netns, name: &str) -> Result<u64> {
    let out = ns.exec(&["cat", "/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ip: Vec<&str> = text.lines().filter(|l| l.starts_with("Ip:")).collect();
    let (names, values) = (ip[0], ip[1]);
    let v = names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == name);
    Ok(v.map(|(_, v)| v.parse()).transpose()?.unwrap_or(0))
}

/// Connections on every listen port at once, every byte compared; the router must have cut
/// the brokers' packets into fragments, and no receiver may count a bad checksum.
fn traffic(topo: &Topology, who: &str) -> Result<()> {
    let brokers: Vec<SocketAddrV4> =
        BROKERS.iter().map(|b| SocketAddrV4::new(*b, BROKER_PORT)).collect();
    let _servers = echo_servers(&topo.broker, &brokers)?;
    let mut workers = Vec::new();
    for (i, &port) in LISTEN_PORTS.iter().enumerate() {
        for c in 0..CONNS_PER_PORT {
            let stream = connect(&topo.client, SocketAddrV4::new(NATVM, port))?;
            let seed = (i * 10 + c) as u64 + 1;
            workers.push(std::thread::spawn(move || exchange(stream, BYTES_EACH_WAY, seed)));
        }
    }
    let mut broken = Vec::new();
    for (n, w) in workers.into_iter().enumerate() {
        if let Err(e) = w.join().expect("exchange thread") {
            broken.push(format!("connection {n}: {e:#}"));
        }
    }
    ensure!(broken.is_empty(), "{who}: connections broken:\n{}", broken.join("\n"));
    let fragments = ip_counter(&topo.router, "FragCreates")?;
    ensure!(fragments > 1000, "{who}: the router made only {fragments} fragments");
    topo.assert_no_checksum_errors()?;
    println!("{who}: every connection intact across {fragments} fragments");
    Ok(())
}

fn forwarder(tag: &str, mode: &str) -> Result<()> {
    require_root();
    let topo = fragmenting_path(tag, mode == "xdp")?;
    let _daemon = Daemon::start(&topo.natvm, &topo.config(mode, &NATVM.to_string()))?;
    traffic(&topo, &format!("forwarder {mode}"))
}

#[test]
fn fragmented_broker_packets_through_xdp() -> Result<()> {
    forwarder("frx", "xdp")
}

#[test]
fn fragmented_broker_packets_through_tc() -> Result<()> {
    forwarder("frt", "tc")
}

/// The reference: ip_fwd.sh's rules (netfilter reassembles before it translates).
#[test]
fn fragmented_broker_packets_through_iptables() -> Result<()> {
    require_root();
    let topo = fragmenting_path("fri", false)?;
    topo.ip_fwd(None)?;
    traffic(&topo, "iptables")
}
