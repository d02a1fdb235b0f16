//! What the XDP program costs per packet: BPF_PROG_TEST_RUN, for the paths a packet can
//! take, next to the trivial XDP_PASS program measured in the same trials, with the
//! established table prefilled to 1, 1k, 100k and 1M tracked flows. No packet leaves the
//! test namespace.
//!
//! Each sample is one test run (repeat = 1) timed by the kernel around the program alone.
//! Repeats within one run would not do: the kernel hands the same buffer to every repeat, so
//! from the second on the program would see the packet it already translated.

use crate::{
    packet::{flags, parse_tcp, Tcp},
    testrun::{
        default_plan, flow_key, Harness, Table, LISTEN_PORTS, NAT_IP, NAT_MAC, ROUTER_MAC, TARGETS,
        TARGET_PORT, XDP_PASS, XDP_TX,
    },
};
use anyhow::{ensure, Result};
use forwarder_common::{program_names, CtEntry, FlowKey, TcpState, CT_FLAG_REPLY};
use std::net::{Ipv4Addr, SocketAddrV4};

pub struct Case {
    pub name: &'static str,
    /// Median of the trials, nanoseconds per packet.
    pub ns: f64,
    /// Mean of the middle half of the trials (`bench::middle_mean`).
    pub mid_mean: f64,
}

/// The cases measured at one table fill.
pub struct AtFill {
    pub flows: u32,
    pub cases: Vec<Case>,
}

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 2), 40001);
const PAYLOAD: usize = 1400;
/// The largest fill; the tables are made for it.
pub const FILLS: [u32; 4] = [1, 1_000, 100_000, 1_000_000];

pub const BASELINE: &str = "XDP_PASS program, nothing else (baseline)";
pub const NOT_OURS: &str = "not ours: TCP to port 22, passed to the kernel";
pub const ORIGINAL: &str = "client -> broker, established flow, 1400 B";
pub const REPLY: &str = "broker -> client (reply), established flow, 1400 B";
pub const SYN: &str = "SYN of a new flow (SNAT port, both halves inserted)";

/// Median ns/packet of each path over `runs` single runs per fill in `fills`, the cases
/// interleaved run by run so machine noise hits them alike.
pub fn measure(runs: usize, fills: &[u32]) -> Result<Vec<AtFill>> {
    // Room for the largest fill and the handshake's own flow.
    let capacity = fills.iter().copied().max().unwrap_or(1).max(1024) + 1;
    let mut h = Harness::with_capacity("bp", &default_plan(), capacity)?;
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

    let mut results = Vec::new();
    let mut filled = 1u32; // the handshake's flow
    let mut syn_seq = 0u32;
    for &fill in fills {
        prefill(&mut h, filled, fill)?;
        filled = filled.max(fill);
        let fixed: [(&'static str, &'static str, &Vec<u8>, u32); 4] = [
            (BASELINE, program_names::XDP_PASS, &data, XDP_PASS),
            (NOT_OURS, program_names::XDP, &ssh, XDP_PASS),
            (ORIGINAL, program_names::XDP, &data, XDP_TX),
            (REPLY, program_names::XDP, &reply, XDP_TX),
        ];
        let mut samples = vec![Vec::with_capacity(runs); fixed.len() + 1];
        for _ in 0..runs {
            for (i, (name, prog, frame, want)) in fixed.iter().enumerate() {
                let run = h.xdp_repeat(prog, frame, 1)?;
                ensure!(run.action == *want, "{name}: action {} instead of {want}", run.action);
                samples[i].push(run.duration.as_nanos() as f64);
            }
        }
        // SYNs in a loop of their own: each is followed by two map syscalls that remove its
        // entries, which would also cool the caches of the paths above.
        for _ in 0..runs {
            // A SYN from a client port never used before: a new flow every run.
            syn_seq += 1;
            let client = SocketAddrV4::new(
                Ipv4Addr::new(10, 2, (syn_seq >> 16) as u8, (syn_seq >> 8) as u8),
                1024 + (syn_seq & 0xff) as u16,
            );
            let frame = Tcp::new(client, listen, flags::SYN).macs(ROUTER_MAC, NAT_MAC).frame();
            let run = h.xdp_repeat(program_names::XDP, &frame, 1)?;
            ensure!(run.action == XDP_TX, "{SYN}: action {}", run.action);
            samples[fixed.len()].push(run.duration.as_nanos() as f64);
            // Its entries go again, so the SNAT range never fills up over the runs.
            let out = parse_tcp(&run.data);
            h.ct_remove(Table::Embryonic, &flow_key(client, listen))?;
            h.ct_remove(Table::Embryonic, &flow_key(target, out.src()))?;
        }
        let names = fixed.iter().map(|c| c.0).chain([SYN]);
        let cases = names
            .zip(samples)
            .map(|(name, mut s)| Case {
                name,
                ns: super::median(&mut s),
                mid_mean: super::middle_mean(&mut s),
            })
            .collect();
        results.push(AtFill { flows: fill, cases });
    }
    Ok(results)
}

/// Inserts established flows `from..to` (both halves) as the program would have made
/// them, from clients 10.100.0.0/16.. to the first target, so the table holds `to` flows.
fn prefill(h: &mut Harness, from: u32, to: u32) -> Result<()> {
    let nat = u32::from_ne_bytes(NAT_IP.octets());
    let target = u32::from_ne_bytes(TARGETS[0].octets());
    let listen_port = LISTEN_PORTS[0].to_be();
    for i in from..to {
        let client = u32::from_ne_bytes(Ipv4Addr::from(0x0a64_0000 + (i >> 4)).octets());
        let port = (20000 + (i & 0xf) as u16).to_be();
        // Distinct SNAT tuples: the SNAT port range is 20000 wide, so the target port
        // varies too (these flows are never looked up by the SNAT loop of the bench).
        let snat_port = (40000 + (i % 20000) as u16).to_be();
        let target_port = (10000 + (i / 20000) as u16).to_be();
        let orig = FlowKey::new(client, nat, port, listen_port, 6);
        let rep = FlowKey::new(target, nat, target_port, snat_port, 6);
        let state = TcpState::Established as u8;
        let now = crate::bench::coarse_now_ns();
        let o =
            CtEntry { peer: rep, last_seen_ns: now, created_ns: now, state, ..Default::default() };
        let r = CtEntry { peer: orig, flags: CT_FLAG_REPLY, ..o };
        h.ct_set(Table::Established, &orig, &o)?;
        h.ct_set(Table::Established, &rep, &r)?;
    }
    Ok(())
}
