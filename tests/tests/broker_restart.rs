//! A broker restart, as in a Kafka rolling restart: while the broker is down, every client
//! retry is refused by an RST, each from a new source port; the refused tries outnumber the
//! SNAT ports. When the broker is back, the next connection must get through, as it does
//! through ip_fwd.sh's iptables rules (MASQUERADE over the same ports), which run the same
//! steps beside it.

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    require_root,
    topology::{Daemon, Topology, BROKERS, BROKER_PORT, LISTEN_PORTS, NATVM},
    traffic::{connect, echo_servers, exchange},
};
use std::{
    io::ErrorKind,
    net::{SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

/// The SNAT range: 20 ports.
const SNAT_PORTS: (u16, u16) = (40000, 40019);
/// Three times the range.
const REFUSED_TRIES: usize = 60;
/// Longer than a refused try takes on these namespaces' links by far; a SYN the NAT VM
/// dropped (no SNAT port left) is not answered at all and runs into it.
const TRY_TIMEOUT: Duration = Duration::from_millis(500);

fn listen() -> SocketAddrV4 {
    SocketAddrV4::new(NATVM, LISTEN_PORTS[0])
}

/// The client's retries while the broker is down: each must be refused (the broker's RST
/// relayed back), none dropped for want of a SNAT port.
fn refused_tries(topo: &Topology, who: &str) -> Result<()> {
    let (mut refused, mut other) = (0, Vec::new());
    for _ in 0..REFUSED_TRIES {
        let to = listen();
        let r = topo.client.enter(move || TcpStream::connect_timeout(&to.into(), TRY_TIMEOUT))?;
        match r {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused += 1,
            Err(e) => other.push(e.kind()),
            Ok(_) => anyhow::bail!("{who}: a connection got through to a broker that is down"),
        }
    }
    ensure!(
        refused == REFUSED_TRIES,
        "{who}: {refused} of {REFUSED_TRIES} tries refused while the broker was down; the \
         others failed so: {other:?} (a timeout: the SYN was dropped, no SNAT port free)"
    );
    Ok(())
}

/// The broker comes back: the first connection must get through, and carry its bytes.
/// Returns how long it took from the broker's return.
fn broker_back(topo: &Topology, who: &str) -> Result<Duration> {
    let broker = SocketAddrV4::new(BROKERS[0], BROKER_PORT);
    let back = Instant::now();
    let _servers = echo_servers(&topo.broker, &[broker])?;
    let stream = connect(&topo.client, listen())
        .with_context(|| format!("{who}: the first connection after the broker came back"))?;
    let ex = exchange(stream, 64 * 1024, 11)?;
    ensure!(ex.reached == BROKERS[0], "{who}: reached {} instead", ex.reached);
    let port = ex.seen_peer.port();
    ensure!(
        (SNAT_PORTS.0..=SNAT_PORTS.1).contains(&port),
        "{who}: the broker saw source port {port}, outside the SNAT range"
    );
    Ok(back.elapsed())
}

fn forwarder(tag: &str, mode: &str) -> Result<()> {
    require_root();
    let topo = Topology::new(tag, false, mode == "xdp")?;
    let config = topo.config(mode, &NATVM.to_string()).replace(
        "snat_ports = \"40000-59999\"",
        &format!("snat_ports = \"{}-{}\"", SNAT_PORTS.0, SNAT_PORTS.1),
    );
    ensure!(config.contains("snat_ports = \"40000-40019\""), "the seed config changed:\n{config}");
    let _daemon = Daemon::start(&topo.natvm, &config)?;
    let who = format!("forwarder {mode}");
    refused_tries(&topo, &who)?;
    let took = broker_back(&topo, &who)?;
    println!("{who}: the first connection after the broker's return got through in {took:?}");
    Ok(())
}

#[test]
fn after_a_broker_restart_the_first_connection_gets_through_tc() -> Result<()> {
    forwarder("brt", "tc")
}

#[test]
fn after_a_broker_restart_the_first_connection_gets_through_xdp() -> Result<()> {
    forwarder("brx", "xdp")
}

/// The same steps through what ip_fwd.sh sets up: the reference the forwarder must match.
#[test]
fn after_a_broker_restart_the_first_connection_gets_through_iptables() -> Result<()> {
    require_root();
    let topo = Topology::new("bri", false, false)?;
    topo.ip_fwd(Some(&format!("{}-{}", SNAT_PORTS.0, SNAT_PORTS.1)))?;
    refused_tries(&topo, "iptables")?;
    let took = broker_back(&topo, "iptables")?;
    println!("iptables: the first connection after the broker's return got through in {took:?}");
    Ok(())
}
