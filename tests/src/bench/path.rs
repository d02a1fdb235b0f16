//! Whole connections through the NAT VM of the test topology (client -> router -> NAT VM ->
//! router -> broker, veth everywhere): bulk throughput (iperf3) and short-connection rate,
//! for each way of forwarding, in interleaved rounds:
//!
//! - `direct`: the client talks to the broker's address, routed, no NAT VM (the ceiling);
//! - `iptables`: what `ip_fwd.sh` sets up (DNAT per port + MASQUERADE, kernel forwarding);
//! - `forwarder xdp`, `forwarder xdp-generic`, `forwarder tc`.

use crate::{
    netns::Netns,
    topology::{Daemon, Topology, BROKERS, BROKER_PORT, NATVM},
};
use anyhow::{bail, Context, Result};
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpStream},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

pub const WAYS: [&str; 5] =
    ["direct", "iptables", "forwarder xdp", "forwarder xdp-generic", "forwarder tc"];

#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub gbit_s: Vec<f64>,
    /// TCP retransmits of the iperf3 stream: packets lost on the way.
    pub retransmits: Vec<f64>,
    /// Busy CPU seconds of the machine per gigabit moved by the iperf3 stream.
    pub cpu_s_per_gbit: Vec<f64>,
    pub conns_s: Vec<f64>,
    pub slowest_ms: Vec<f64>,
}

/// An iperf3 server in the broker namespace, killed when dropped.
pub(super) struct Iperf(Child);

impl Iperf {
    /// The server on broker 2's address, given a moment to listen.
    pub(super) fn start(topo: &Topology) -> Result<Iperf> {
        let server = topo
            .broker
            .command("iperf3")
            .args(["-s", "-B", &BROKERS[1].to_string(), "-p", &BROKER_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 (is it installed?)")?;
        let server = Iperf(server);
        std::thread::sleep(Duration::from_millis(300));
        Ok(server)
    }
}

impl Drop for Iperf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The iperf3 target (broker 2, reached on listen port 9093) and the echo target for the
/// connection rate (broker 1, on listen port 9092).
const IPERF_LISTEN: u16 = 9093;
const ECHO_LISTEN: u16 = 9092;

/// Every sample runs in a topology of its own: ways that share the NAT VM's address would
/// otherwise meet each other's leftovers. The broker keeps TIME_WAIT sockets for the
/// (NAT VM address, port) pairs of the previous way's short connections, and the next way's
/// SNAT or MASQUERADE ports collide with them, stalling some handshakes (seen: the first
/// version of this benchmark, with one topology for all, put whichever way ran second at a
/// fraction of its rate).
pub fn measure(rounds: usize, seconds: u32, conns: usize) -> Result<Vec<(String, Sample)>> {
    let mut results: Vec<(String, Sample)> =
        WAYS.iter().map(|w| (w.to_string(), Sample::default())).collect();
    for _ in 0..rounds {
        for (way, sample) in results.iter_mut() {
            let topo = Topology::new("bx", false, true)?;
            let _echo =
                OneByteServer::start(&topo.broker, SocketAddrV4::new(BROKERS[0], BROKER_PORT))?;
            let _server = Iperf::start(&topo)?;
            let echo_to = match way.as_str() {
                "direct" => SocketAddrV4::new(BROKERS[0], BROKER_PORT),
                _ => SocketAddrV4::new(NATVM, ECHO_LISTEN),
            };
            let setup = Setup::enter(&topo, way)?;
            let (stream, cpu_s_per_gbit) = timed_stream(&topo, way, seconds)?;
            sample.gbit_s.push(stream.gbit_s);
            sample.retransmits.push(stream.retransmits as f64);
            sample.cpu_s_per_gbit.push(cpu_s_per_gbit);
            let (rate, slowest) = conn_rate(&topo.client, echo_to, conns)?;
            sample.conns_s.push(rate);
            sample.slowest_ms.push(slowest);
            setup.leave(&topo)?;
            // A figure of a way that sent wrong checksums would be no figure.
            topo.assert_no_checksum_errors().with_context(|| format!("the {way} way"))?;
        }
    }
    Ok(results)
}

/// The NAT VM set up for one way of forwarding.
pub(super) enum Setup {
    None,
    Iptables,
    Forwarder(Daemon),
}

impl Setup {
    pub(super) fn enter(topo: &Topology, way: &str) -> Result<Setup> {
        Ok(match way {
            "direct" => Setup::None,
            "iptables" => {
                // ip_fwd.sh -f 9092 -a broker1 -b 9092 (and 9093 -> broker2): DNAT + MASQUERADE.
                topo.natvm.sysctl("net.ipv4.ip_forward", "1")?;
                for (listen, broker) in [(ECHO_LISTEN, BROKERS[0]), (IPERF_LISTEN, BROKERS[1])] {
                    topo.natvm.exec(&[
                        "iptables",
                        "-t",
                        "nat",
                        "-A",
                        "PREROUTING",
                        "-p",
                        "tcp",
                        "--dport",
                        &listen.to_string(),
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &format!("{broker}:{BROKER_PORT}"),
                    ])?;
                }
                topo.natvm.exec(&[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-j",
                    "MASQUERADE",
                ])?;
                Setup::Iptables
            }
            w => {
                let mode = w.strip_prefix("forwarder ").context("a forwarder mode")?;
                Setup::Forwarder(Daemon::start(
                    &topo.natvm,
                    &topo.config(mode, &NATVM.to_string()),
                )?)
            }
        })
    }

    pub(super) fn leave(self, topo: &Topology) -> Result<()> {
        match self {
            Setup::None => Ok(()),
            Setup::Iptables => {
                // The namespace goes with the topology, its conntrack table with it.
                topo.natvm.exec(&["iptables", "-t", "nat", "-F"]).map(|_| ())
            }
            Setup::Forwarder(d) => {
                let config = d.config.clone();
                d.stop()?;
                topo.unload(&config)
            }
        }
    }
}

/// Answers each connection's first byte with one byte, then closes: a blocking accept
/// loop, so the rate measured is the path's, not a poll interval's.
struct OneByteServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: SocketAddrV4,
    ns: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OneByteServer {
    fn start(ns: &Netns, addr: SocketAddrV4) -> Result<OneByteServer> {
        let listener = ns.enter(move || std::net::TcpListener::bind(addr))??;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                if let Ok(mut c) = conn {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut b = [0u8; 1];
                    if c.read_exact(&mut b).is_ok() {
                        let _ = c.write_all(&b);
                    }
                }
            }
        });
        Ok(OneByteServer { stop, addr, ns: ns.name().to_string(), thread: Some(thread) })
    }
}

impl Drop for OneByteServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the blocking accept with one last connection from inside the namespace.
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{}/{}", self.addr.ip(), self.addr.port()))
            .output();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one iperf3 stream did.
pub(super) struct Stream {
    /// The receiver's Gbit/s.
    pub gbit_s: f64,
    /// Segments the sender sent again: each a packet lost on the way.
    pub retransmits: u64,
}

/// One iperf3 stream of `seconds` through `way` (set up already), with the machine's busy
/// CPU counted around it: to broker 2 itself for `direct`, else to the NAT VM's listen port.
/// Returns the stream and the machine's busy CPU seconds per Gbit it moved.
pub(super) fn timed_stream(topo: &Topology, way: &str, seconds: u32) -> Result<(Stream, f64)> {
    let to = match way {
        "direct" => SocketAddrV4::new(BROKERS[1], BROKER_PORT),
        _ => SocketAddrV4::new(NATVM, IPERF_LISTEN),
    };
    let busy = super::cpu::busy_ns()?;
    let stream = iperf(&topo.client, to, seconds)?;
    let cpu_s = (super::cpu::busy_ns()? - busy) as f64 / 1e9;
    let cpu_s_per_gbit = cpu_s / (stream.gbit_s * seconds as f64).max(1e-9);
    Ok((stream, cpu_s_per_gbit))
}

/// One iperf3 run of `seconds` from `ns` to `to`.
fn iperf(ns: &Netns, to: SocketAddrV4, seconds: u32) -> Result<Stream> {
    let out = ns
        .command("timeout")
        .args([&(seconds + 15).to_string(), "iperf3", "-c", &to.ip().to_string()])
        .args(["-p", &to.port().to_string(), "-t", &seconds.to_string(), "-J"])
        .output()
        .context("running iperf3")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 to {to}: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 to {to}: {e}");
    }
    let gbit_s = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 to {to}: no result"))?
        / 1e9;
    let retransmits = v["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .with_context(|| format!("iperf3 to {to}: no retransmit count"))?;
    Ok(Stream { gbit_s, retransmits })
}

/// `count` short connections in a row from `ns` to `to` (connect, 1 byte each way, close):
/// connections per second, and the slowest connection in ms.
fn conn_rate(ns: &Netns, to: SocketAddrV4, count: usize) -> Result<(f64, f64)> {
    ns.enter(move || -> Result<(f64, f64)> {
        let start = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..count {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))
                .with_context(|| format!("connection {i} to {to}"))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"x")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).with_context(|| format!("echo on connection {i} to {to}"))?;
            slowest = slowest.max(t.elapsed());
        }
        Ok((count as f64 / start.elapsed().as_secs_f64(), slowest.as_secs_f64() * 1e3))
    })?
}
