//! What the XDP program costs per packet: BPF_PROG_TEST_RUN, for the paths a packet can
//! take, next to the trivial XDP_PASS program measured in the same trials. No packet leaves
//! the test namespace.
//!
//! Each sample is one test run (repeat = 1) timed by the kernel around the program alone.
//! Repeats within one run would not do: the kernel hands the same buffer to every repeat, so
//! from the second on the program would see the packet it already translated.

use crate::{
    packet::{flags, parse_tcp, Tcp},
    testrun::{Harness, LISTEN_PORTS, NAT_IP, NAT_MAC, ROUTER_MAC, TARGETS, TARGET_PORT, XDP_TX},
};
use anyhow::{ensure, Result};
use forwarder_common::program_names;
use std::net::{Ipv4Addr, SocketAddrV4};

pub struct Case {
    pub name: &'static str,
    /// Median of the trials, nanoseconds per packet.
    pub ns: f64,
}

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 2), 40001);
const PAYLOAD: usize = 1400;

/// Median ns/packet of each path over `runs` single runs, the cases interleaved run by run
/// so machine noise hits them alike.
pub fn measure(runs: usize) -> Result<Vec<Case>> {
    let mut h = Harness::new("bp")?;
    let listen = SocketAddrV4::new(NAT_IP, LISTEN_PORTS[0]);
    let target = SocketAddrV4::new(TARGETS[0], TARGET_PORT);

    // One tracked, established flow: SYN, SYN-ACK, ACK through the program.
    let syn = Tcp::new(CLIENT, listen, flags::SYN).macs(ROUTER_MAC, NAT_MAC);
    let out = h.xdp(&syn.frame())?;
    ensure!(out.action == XDP_TX, "the SYN was not forwarded (action {})", out.action);
    let snat = parse_tcp(&out.data).src();
    let synack = Tcp::new(target, snat, flags::SYN | flags::ACK).macs(ROUTER_MAC, NAT_MAC);
    ensure!(h.xdp(&synack.frame())?.action == XDP_TX, "the SYN-ACK was not forwarded");
    let ack = Tcp::new(CLIENT, listen, flags::ACK).macs(ROUTER_MAC, NAT_MAC);
    ensure!(h.xdp(&ack.frame())?.action == XDP_TX, "the ACK was not forwarded");

    let data = Tcp::new(CLIENT, listen, flags::ACK | flags::PSH)
        .macs(ROUTER_MAC, NAT_MAC)
        .payload_len(PAYLOAD)
        .frame();
    let reply = Tcp::new(target, snat, flags::ACK | flags::PSH)
        .macs(ROUTER_MAC, NAT_MAC)
        .payload_len(PAYLOAD)
        .frame();
    let ssh = Tcp::new(CLIENT, SocketAddrV4::new(NAT_IP, 22), flags::ACK | flags::PSH)
        .macs(ROUTER_MAC, NAT_MAC)
        .payload_len(PAYLOAD)
        .frame();
    let cases: [(&'static str, &'static str, &Vec<u8>, Option<u32>); 4] = [
        ("XDP_PASS program, nothing else (baseline)", program_names::XDP_PASS, &data, None),
        ("not ours: TCP to port 22, passed to the kernel", program_names::XDP, &ssh, None),
        ("client -> broker, established flow, 1400 B", program_names::XDP, &data, Some(XDP_TX)),
        (
            "broker -> client (reply), established flow, 1400 B",
            program_names::XDP,
            &reply,
            Some(XDP_TX),
        ),
    ];
    let mut samples = vec![Vec::new(); cases.len()];
    for _ in 0..runs {
        for (i, (name, prog, frame, want)) in cases.iter().enumerate() {
            let run = h.xdp_repeat(prog, frame, 1)?;
            if let Some(want) = want {
                ensure!(run.action == *want, "{name}: action {} instead of {want}", run.action);
            }
            samples[i].push(run.duration.as_nanos() as f64);
        }
    }
    Ok(cases
        .iter()
        .zip(samples)
        .map(|((name, ..), mut s)| Case { name, ns: super::median(&mut s) })
        .collect())
}
