//! The next hop cached in each flow follows a gateway whose MAC changed: the daemon hears
//! the NAT VM's neighbour change over rtnetlink and bumps NEXTHOP_GEN, and each flow's next
//! packet looks its route up again, within milliseconds and with no connection broken.

use anyhow::{ensure, Context, Result};
use aya::maps::{Array, HashMap, Map, MapData};
use forwarder::host::clock::monotonic_ns;
use forwarder_common::{map_names, CtEntry, FlowKey};
use forwarder_tests::{daemon_tests::listen, packet::mac_text};
use forwarder_tests::{
    netns::Netns,
    require_root,
    streams::{assert_all_intact, Streams},
    topology::{Daemon, Topology, BROKERS, BROKER_PORT, LISTEN_PORTS},
    traffic::{connect, echo_servers},
};
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

/// The router's end of the NAT VM's link, and its address: the NAT VM's default gateway.
const GATEWAY_IF: &str = "r_n";
const GATEWAY: &str = "10.0.0.1";
const NEW_MAC: [u8; 6] = [0x02, 0x6e, 0x68, 0x00, 0x00, 0x01];
/// How long a frame to the old MAC is given to get through, to show it does not.
const DEAD_WINDOW: Duration = Duration::from_millis(150);
/// The bound on the first exchange after the change. Through the daemon it takes a few ms
/// (netlink event, one map write, the next packet's FIB lookup). Without it, the packet
/// goes to the old MAC, is dropped, and the flow recovers only by the program's own
/// once-a-second re-check after a TCP retransmit (200 ms RTO at least): the change is made
/// right after the probe's halves re-checked, so that re-check is ~800 ms away.
const PROMPT: Duration = Duration::from_millis(500);
/// The echo server's first bytes on every connection (see tests/src/traffic.rs).
const HEADER_LEN: usize = 10;

fn link_mac(ns: &Netns, iface: &str) -> Result<String> {
    let out = ns.ip(&["-j", "link", "show", "dev", iface])?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    links[0]["address"].as_str().map(str::to_string).with_context(|| format!("no MAC: {links}"))
}

/// A connection the test drives itself: the echo header read, then request/echo rounds.
fn open(ns: &Netns, to: SocketAddrV4) -> Result<TcpStream> {
    let mut c = connect(ns, to)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut header = [0u8; HEADER_LEN];
    c.read_exact(&mut header).context("reading the echo server's header")?;
    Ok(c)
}

fn ping(c: &mut TcpStream, seed: u8) -> Result<()> {
    let sent: Vec<u8> = (0..64u8).map(|i| i ^ seed).collect();
    c.write_all(&sent)?;
    let mut echo = [0u8; 64];
    c.read_exact(&mut echo)?;
    ensure!(echo[..] == sent[..], "the echo differs");
    Ok(())
}

/// The pinned maps this test reads.
struct Pinned {
    gen: Array<MapData, u32>,
    established: HashMap<MapData, FlowKey, CtEntry>,
}

impl Pinned {
    fn open(topo: &Topology) -> Result<Self> {
        let gen = Array::try_from(Map::Array(topo.pinned_map(map_names::NEXTHOP_GEN)?))?;
        let established =
            HashMap::try_from(Map::HashMap(topo.pinned_map(map_names::CT_ESTABLISHED)?))?;
        Ok(Self { gen, established })
    }

    fn gen(&self) -> Result<u32> {
        Ok(self.gen.get(&0, 0)?)
    }

    /// Both halves of the client's connection `c` to a listen port.
    fn halves(&self, c: &TcpStream) -> Result<[CtEntry; 2]> {
        let (std::net::SocketAddr::V4(local), std::net::SocketAddr::V4(peer)) =
            (c.local_addr()?, c.peer_addr()?)
        else {
            anyhow::bail!("not IPv4");
        };
        // Addresses and ports as they sit in the packet (network order).
        let key = FlowKey::new(
            u32::from_ne_bytes(local.ip().octets()),
            u32::from_ne_bytes(peer.ip().octets()),
            local.port().to_be(),
            peer.port().to_be(),
            libc::IPPROTO_TCP as u8,
        );
        let original = self.established.get(&key, 0).context("the original half")?;
        let reply = self.established.get(&original.peer, 0).context("the reply half")?;
        Ok([original, reply])
    }
}

#[test]
fn a_gateway_mac_change_is_followed_at_once_with_no_connection_broken() -> Result<()> {
    require_root();
    let topo = Topology::new("nh", false, true)?;
    let brokers: Vec<SocketAddrV4> =
        BROKERS.iter().map(|b| SocketAddrV4::new(*b, BROKER_PORT)).collect();
    let _servers = echo_servers(&topo.broker, &brokers)?;
    let daemon = Daemon::start(&topo.natvm, &topo.config("xdp", "10.0.0.4"))?;
    let listens: Vec<SocketAddrV4> = LISTEN_PORTS.iter().map(|p| listen(*p)).collect();
    let streams = Streams::start(&topo.client, &listens, 2)?;
    // The probe times the recovery; the witness shows the old MAC is dead.
    let mut probe = open(&topo.client, listen(LISTEN_PORTS[1]))?;
    let mut witness = open(&topo.client, listen(LISTEN_PORTS[2]))?;
    ping(&mut witness, 1)?;
    let pinned = Pinned::open(&topo)?;
    let old_mac = link_mac(&topo.router, GATEWAY_IF)?;
    ensure!(old_mac != mac_text(NEW_MAC), "the router already has {old_mac}");

    // Keep the probe busy until both its halves were stamped (created, or re-checked by
    // the program's once-a-second refresh) in the last 100 ms: their next re-check of their
    // own is then at least 900 ms away.
    let deadline = Instant::now() + Duration::from_secs(3);
    let before = loop {
        ping(&mut probe, 2)?;
        let halves = pinned.halves(&probe)?;
        let oldest = halves.iter().map(|h| h.last_seen_ns).min().unwrap_or(0);
        if monotonic_ns().saturating_sub(oldest) < 100_000_000 {
            break halves;
        }
        ensure!(
            Instant::now() < deadline,
            "the probe's halves never re-checked together: {halves:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    for h in &before {
        ensure!(mac_text(h.nexthop.dmac) == old_mac, "probe half not cached on the gateway: {h:?}");
    }
    let gen_before = pinned.gen()?;

    // The gateway's MAC changes. Until the NAT VM learns it, every forwarded frame carries
    // the old MAC, which the router now drops (PACKET_OTHERHOST): the witness gets no echo.
    topo.router.ip(&["link", "set", "dev", GATEWAY_IF, "address", &mac_text(NEW_MAC)])?;
    witness.set_read_timeout(Some(DEAD_WINDOW))?;
    witness.write_all(&[7u8; 64])?;
    let mut echo = [0u8; 64];
    match witness.read_exact(&mut echo) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => anyhow::bail!(
            "a frame to the old MAC got through ({other:?}): the test cannot tell the MACs apart"
        ),
    }

    // The NAT VM learns the new MAC (as from a gratuitous ARP).
    let neigh =
        format!("neigh replace {GATEWAY} lladdr {} dev n0 nud reachable", mac_text(NEW_MAC));
    topo.natvm.ip(&neigh.split(' ').collect::<Vec<_>>())?;
    let changed = Instant::now();
    while pinned.gen()? == gen_before {
        ensure!(
            changed.elapsed() < PROMPT,
            "NEXTHOP_GEN still {gen_before} {PROMPT:?} after the neighbour change"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let bumped_after = changed.elapsed();
    ping(&mut probe, 3)?;
    let recovered_after = changed.elapsed();
    let after = pinned.halves(&probe)?;
    assert!(
        recovered_after < PROMPT,
        "the probe's echo took {recovered_after:?} after the neighbour change (NEXTHOP_GEN bumped after {bumped_after:?})"
    );
    for (b, a) in before.iter().zip(&after) {
        // Proof the re-lookup came from the generation, not the once-a-second re-check.
        assert_eq!(
            a.last_seen_ns, b.last_seen_ns,
            "a half re-checked by itself during the test ({} ms after it last did); no proof of the netlink path",
            a.last_seen_ns.saturating_sub(b.last_seen_ns) / 1_000_000
        );
        // The cache now holds the new MAC, of the new generation.
        assert_eq!(
            mac_text(a.nexthop.dmac),
            mac_text(NEW_MAC),
            "probe half still cached on the old MAC: {a:?}"
        );
        assert_ne!(
            a.nexthop.gen, b.nexthop.gen,
            "probe half cached under the old generation: {a:?}"
        );
    }

    // The witness's lost frame is retransmitted to the new MAC; every stream carries on.
    witness.set_read_timeout(Some(Duration::from_secs(5)))?;
    witness.read_exact(&mut echo).context("the witness's echo after the change")?;
    assert_eq!(echo, [7u8; 64]);
    streams.wait_progress()?;
    assert_all_intact(&streams.finish(), |to| {
        BROKERS[LISTEN_PORTS.iter().position(|p| *p == to.port()).expect("a listen port")]
    });
    eprintln!(
        "NEXTHOP_GEN {gen_before} -> {}: bumped {bumped_after:?}, probe echo {recovered_after:?} after the neighbour change",
        pinned.gen()?
    );

    drop((probe, witness));
    let config = daemon.config.clone();
    let status = daemon.stop()?;
    assert!(status.success(), "daemon exited with {status}");
    topo.unload(&config)
}
