//! Whole connections through the forwarder in the Azure-like topology: client -> router
//! -> NAT VM (one NIC, XDP_TX) -> brokers, in every mode, with real sockets; and on a NAT
//! VM with accelerated networking (its NIC a master over a VF that does GRO). Every
//! receiver must count 0 TCP checksum errors.

use anyhow::Result;
use forwarder_tests::{
    require_root,
    topology::{
        cli, Daemon, NicShape, Topology, BROKERS, BROKER_PORT, CLIENT, LISTEN_PORTS, NATVM,
        NATVM_SECOND, VF,
    },
    traffic::{connect, echo_servers, exchange},
};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Connections per listen port, all running at once.
const CONNS_PER_PORT: usize = 4;
const BYTES_EACH_WAY: usize = 2 * 1024 * 1024;

/// Runs CONNS_PER_PORT concurrent verified exchanges on every listen port and checks each
/// reached its own broker with `snat` as the source.
fn concurrent_traffic(topo: &Topology, snat: Ipv4Addr) -> Result<()> {
    let mut workers = Vec::new();
    for (i, (&port, broker)) in LISTEN_PORTS.iter().zip(BROKERS).enumerate() {
        for c in 0..CONNS_PER_PORT {
            let stream = connect(&topo.client, SocketAddrV4::new(NATVM, port))?;
            let seed = (i * 100 + c) as u64 + 1;
            workers
                .push((broker, std::thread::spawn(move || exchange(stream, BYTES_EACH_WAY, seed))));
        }
    }
    for (broker, w) in workers {
        let ex = w.join().expect("exchange thread")?;
        assert_eq!(ex.reached, broker, "connection reached the wrong broker");
        assert_eq!(*ex.seen_peer.ip(), snat, "broker saw a source other than the NAT VM");
        assert!(
            (40000..=59999).contains(&ex.seen_peer.port()),
            "source port {} outside snat_ports",
            ex.seen_peer.port()
        );
        assert_eq!(ex.bytes_each_way, BYTES_EACH_WAY);
    }
    Ok(())
}

/// A port of the NAT VM that no rule covers (like SSH or the health probe) keeps working,
/// and so do the VM's own outgoing connections.
fn other_traffic_untouched(topo: &Topology) -> Result<()> {
    let ssh_like = SocketAddrV4::new(NATVM, 2222);
    let _servers = echo_servers(&topo.natvm, &[ssh_like])?;
    let ex = exchange(connect(&topo.client, ssh_like)?, 64 * 1024, 7)?;
    assert_eq!(ex.reached, NATVM);
    assert_eq!(*ex.seen_peer.ip(), CLIENT, "a non-rule port must not be NATed");

    let broker = SocketAddrV4::new(BROKERS[0], BROKER_PORT);
    let own = exchange(connect(&topo.natvm, broker)?, 64 * 1024, 9)?;
    assert_eq!(own.reached, BROKERS[0]);
    Ok(())
}

/// The daemon's final counters show the traffic went through the program's fast path
/// (XDP_TX / redirect): only the first packets of a rule, sent before the next hop's MAC is
/// known, may take the kernel slow path.
fn assert_fast_path(log: &[String]) -> Result<()> {
    let finals: Vec<&String> = log.iter().filter(|l| l.contains("final counters")).collect();
    assert_eq!(
        finals.len(),
        LISTEN_PORTS.len(),
        "one final counter line per rule:\n{}",
        log.join("\n")
    );
    for line in finals {
        let count = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map_or(0, |v| v.parse().expect("counter value"))
        };
        let (packets, replies) = (count("packets"), count("reply_packets"));
        assert!(packets > 1000 && replies > 1000, "too few packets forwarded: {line}");
        assert_eq!(count("new_conns"), CONNS_PER_PORT as u64, "{line}");
        assert!(count("slow_path") <= 4, "slow path used beyond neighbour resolution: {line}");
        assert!(count("mss_clamped") >= CONNS_PER_PORT as u64, "SYNs not clamped to 1360: {line}");
    }
    Ok(())
}

fn reserved_ports(topo: &Topology) -> Result<String> {
    topo.natvm.sysctl_get("net.ipv4.ip_local_reserved_ports")
}

fn run_mode(tag: &str, mode: &str, multi_nic: bool) -> Result<()> {
    run_shape(tag, NicShape::Plain, mode, multi_nic)
}

fn run_shape(tag: &str, shape: NicShape, mode: &str, multi_nic: bool) -> Result<()> {
    require_root();
    let topo = Topology::with_shape(tag, shape, multi_nic, mode == "xdp")?;
    run_on(&topo, mode, multi_nic)
}

/// The whole run on a topology made (and perhaps changed) by the caller.
fn run_on(topo: &Topology, mode: &str, multi_nic: bool) -> Result<()> {
    let brokers: Vec<SocketAddrV4> =
        BROKERS.iter().map(|b| SocketAddrV4::new(*b, BROKER_PORT)).collect();
    let _servers = echo_servers(&topo.broker, &brokers)?;
    let snat = if multi_nic { NATVM_SECOND } else { NATVM };
    let config = topo.config(mode, &snat.to_string());
    let reserved_before = reserved_ports(topo)?;
    let daemon = Daemon::start(&topo.natvm, &config)?;
    topo.assert_no_netfilter_nat()?;
    assert!(
        reserved_ports(topo)?.split(',').any(|r| r == "40000-59999"),
        "snat_ports not reserved while running"
    );

    concurrent_traffic(topo, snat)?;
    other_traffic_untouched(topo)?;
    topo.assert_no_checksum_errors()?;

    let log = daemon.log.clone();
    let config_path = daemon.config.clone();
    let status = daemon.stop()?;
    assert!(status.success(), "daemon exited with {status}");
    assert_fast_path(&log.lock().unwrap())?;
    // Stopping the daemon leaves forwarding in the kernel (restarts lose nothing).
    let ex = exchange(connect(&topo.client, SocketAddrV4::new(NATVM, LISTEN_PORTS[0]))?, 4096, 3)?;
    assert_eq!(ex.reached, BROKERS[0], "forwarding stopped with the daemon");

    topo.unload(&config_path)?;
    assert_eq!(reserved_ports(topo)?, reserved_before, "reserved ports not restored by unload");
    // Detached: the listen port now reaches the NAT VM's own stack, which has no listener.
    let refused = connect(&topo.client, SocketAddrV4::new(NATVM, LISTEN_PORTS[0]));
    assert!(refused.is_err(), "port 9092 still forwarded after unload");
    Ok(())
}

#[test]
fn single_nic_native_xdp() -> Result<()> {
    run_mode("x", "xdp", false)
}

#[test]
fn single_nic_generic_xdp() -> Result<()> {
    run_mode("g", "xdp-generic", false)
}

#[test]
fn single_nic_tc() -> Result<()> {
    run_mode("t", "tc", false)
}

#[test]
fn multi_nic_native_xdp_redirect() -> Result<()> {
    run_mode("m", "xdp", true)
}

#[test]
fn multi_nic_tc_redirect() -> Result<()> {
    run_mode("mt", "tc", true)
}

// Accelerated networking: the NAT VM's n0 a master over a VF that does GRO.

#[test]
fn accelerated_tc() -> Result<()> {
    run_shape("at", NicShape::Accelerated, "tc", false)
}

/// `auto` passes over generic XDP, which the VF's merged skbs would make send wrong
/// checksums, and lands on TC (the bridge playing eth0 has no native XDP).
#[test]
fn accelerated_auto_chooses_tc() -> Result<()> {
    require_root();
    let topo = Topology::with_shape("aa", NicShape::Accelerated, false, false)?;
    let config = topo.config("auto", &NATVM.to_string());
    let daemon = Daemon::start(&topo.natvm, &config)?;
    let log = daemon.log.lock().unwrap().join("\n");
    assert!(log.contains("vf0 under it merges received segments (GRO on)"), "{log}");
    let status = String::from_utf8(cli(&topo.natvm, &daemon.config, &["status"])?.stdout)?;
    assert!(status.contains("n0") && status.contains("tc"), "auto did not choose tc:\n{status}");
    let config_path = daemon.config.clone();
    assert!(daemon.stop()?.success());
    topo.unload(&config_path)?;
    run_on(&topo, "auto", false)
}

/// `xdp-generic` is refused while the VF merges segments, with the reason and the remedy;
/// with GRO off on the VF (the remedy) it forwards every byte with correct checksums.
#[test]
fn accelerated_generic_xdp_only_without_gro_on_the_vf() -> Result<()> {
    require_root();
    let topo = Topology::with_shape("ag", NicShape::Accelerated, false, false)?;
    let config = topo.config("xdp-generic", &NATVM.to_string());
    let refused = Daemon::start(&topo.natvm, &config);
    let text = format!("{:#}", refused.err().expect("xdp-generic started over a merging VF"));
    assert!(
        text.contains("not attaching generic XDP to n0: vf0 under it merges received segments")
            && text.contains("ethtool -K vf0 gro off"),
        "{text}"
    );
    // The refused start had set its sysctls (kept for `unload`, as after any failed start).
    topo.unload(&forwarder_tests::topology::config_path(&topo.natvm))?;
    topo.natvm.exec(&["ethtool", "-K", VF, "gro", "off"])?;
    run_on(&topo, "xdp-generic", false)
}
