//! Hostile frames for the data path: millions of generated frames (truncated at every
//! length, bad IHL, IP options, fragments, bad TCP data offsets, every flag combination, ICMP
//! errors quoting garbage or other flows, IPv6, VLAN tags, tiny and jumbo frames, random
//! bytes), each run through the real program with BPF_PROG_TEST_RUN and checked against
//! the invariants that make the NAT VM safe:
//!
//! - the program never aborts;
//! - a frame that is not ours (not IPv4 TCP to a rule's listen port or the SNAT range, nor
//!   an ICMP error) comes out byte for byte unchanged and is passed to the kernel: the VM is
//!   never an open relay, and nothing else is touched;
//! - a frame that is changed has valid IPv4, TCP and ICMP checksums, recomputed here by
//!   code that shares nothing with the program (RFC 1071 sums over the output bytes).
//!
//! Which frames are "ours" is decided here independently, from the bytes alone.

use crate::{
    packet::{self, fix_checksums, flags, ones_complement_sum, Tcp},
    rng::Rng,
    testrun::{
        Harness, LISTEN_PORTS, NAT_IP, NAT_MAC, ROUTER_MAC, SNAT_PORTS, TARGETS, TARGET_PORT,
        TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
    },
};
use anyhow::{bail, ensure, Result};
use std::{
    collections::{BTreeMap, HashSet},
    net::{Ipv4Addr, SocketAddrV4, SocketAddrV6},
};

/// What a run did, per kind of frame and in all.
#[derive(Debug, Default)]
pub struct Report {
    pub frames: u64,
    /// Frames also run through the TC program.
    pub tc_frames: u64,
    pub unchanged: u64,
    pub rewritten: u64,
    pub dropped: u64,
    pub per_kind: BTreeMap<&'static str, u64>,
}

const ETH: usize = 14;
const CLIENT_NET: [u8; 2] = [10, 1];

/// A flow established through the program before the frames start.
struct Tracked {
    client: SocketAddrV4,
    listen: SocketAddrV4,
    target: SocketAddrV4,
    snat: SocketAddrV4,
}

/// Runs `count` hostile frames from `seed`; fails with the first violations found.
pub fn run(h: &mut Harness, count: u64, seed: u64) -> Result<Report> {
    let tracked = establish(h, 8)?;
    let mut rng = Rng(seed);
    let mut report = Report::default();
    let mut violations = Vec::new();
    let mut datagrams = HashSet::new();
    for n in 0..count {
        let (kind, frame) = generate(&mut rng, &tracked);
        *report.per_kind.entry(kind).or_default() += 1;
        report.frames += 1;
        let ours = is_ours(&frame, &mut datagrams);
        let run = h.xdp(&frame).map_err(|e| anyhow::anyhow!("{kind} {}: {e:#}", frame.len()))?;
        let what = || format!("seed {seed} frame {n} ({kind}, {} bytes)", frame.len());
        if let Err(v) = check(run.action, &frame, &run.data, ours, Prog::Xdp) {
            violations.push(format!(
                "{}: {v}\n  in:  {}\n  out: {}",
                what(),
                packet::hex(&frame),
                packet::hex(&run.data)
            ));
        }
        match run.action {
            XDP_DROP => report.dropped += 1,
            _ if run.data == frame => report.unchanged += 1,
            _ => report.rewritten += 1,
        }
        // Every fourth frame through TC too (the skb path and its checksum helpers), when
        // the kernel's skb test run takes it: it refuses an IPv4 or IPv6 frame shorter
        // than that IP header.
        if n % 4 == 0 && tc_runnable(&frame) {
            let run = h
                .tc(&frame)
                .map_err(|e| anyhow::anyhow!("{}: {e:#}\n  in: {}", what(), packet::hex(&frame)))?;
            report.tc_frames += 1;
            if let Err(v) = check(run.action, &frame, &run.data, ours, Prog::Tc) {
                violations.push(format!(
                    "{} through TC: {v}\n  in:  {}\n  out: {}",
                    what(),
                    packet::hex(&frame),
                    packet::hex(&run.data)
                ));
            }
        }
        if violations.len() >= 5 {
            break;
        }
    }
    if !violations.is_empty() {
        bail!("{} invariant violation(s):\n{}", violations.len(), violations.join("\n"));
    }
    Ok(report)
}

fn tc_runnable(frame: &[u8]) -> bool {
    match frame[12..14] {
        [0x08, 0x00] => frame.len() >= ETH + 20,
        [0x86, 0xdd] => frame.len() >= ETH + 40,
        _ => true,
    }
}

fn establish(h: &mut Harness, n: usize) -> Result<Vec<Tracked>> {
    let mut out = Vec::new();
    for i in 0..n {
        let client = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 2 + i as u8), 41000 + i as u16);
        let rule = i % LISTEN_PORTS.len();
        let listen = SocketAddrV4::new(NAT_IP, LISTEN_PORTS[rule]);
        let target = SocketAddrV4::new(TARGETS[rule], TARGET_PORT);
        let syn = Tcp::new(client, listen, flags::SYN).macs(ROUTER_MAC, NAT_MAC);
        let r = h.xdp(&syn.frame())?;
        ensure!(r.action == XDP_TX, "set-up SYN {i}: action {}", r.action);
        let snat = packet::parse_tcp(&r.data).src();
        let synack = Tcp::new(target, snat, flags::SYN | flags::ACK).macs(ROUTER_MAC, NAT_MAC);
        ensure!(h.xdp(&synack.frame())?.action == XDP_TX, "set-up SYN-ACK {i}");
        let ack = Tcp::new(client, listen, flags::ACK).macs(ROUTER_MAC, NAT_MAC);
        ensure!(h.xdp(&ack.frame())?.action == XDP_TX, "set-up ACK {i}");
        out.push(Tracked { client, listen, target, snat });
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Prog {
    Xdp,
    Tc,
}

/// The invariants for one run of one frame.
fn check(action: u32, input: &[u8], output: &[u8], ours: bool, prog: Prog) -> Result<(), String> {
    let (pass, drop, sent) = match prog {
        Prog::Xdp => (XDP_PASS, XDP_DROP, [XDP_TX, XDP_REDIRECT]),
        Prog::Tc => (TC_ACT_OK, TC_ACT_SHOT, [TC_ACT_REDIRECT, TC_ACT_REDIRECT]),
    };
    if action != pass && action != drop && !sent.contains(&action) {
        return Err(format!("action {action} (aborted or unknown)"));
    }
    if !ours {
        if action != pass {
            return Err(format!("not ours, yet action {action} instead of passing it on"));
        }
        if output != input {
            return Err("not ours, yet changed".into());
        }
        return Ok(());
    }
    if output != input || sent.contains(&action) {
        valid_checksums(input, output)?;
    }
    Ok(())
}

/// Whether the program may act on this frame, decided from its bytes and the frames before
/// it: a whole IPv4 packet (total length covering the header and inside the frame) that is
/// TCP with a whole header to a listen port or a port of the SNAT range, or an unfragmented
/// ICMP packet; a first fragment as a TCP packet, and a later fragment of a TCP datagram
/// whose first fragment was ours (`datagrams`: source, destination, IP id).
fn is_ours(frame: &[u8], datagrams: &mut HashSet<[u8; 10]>) -> bool {
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = &frame[ETH..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ip[0] >> 4 != 4 || ihl < 20 || tot < ihl || tot > ip.len() {
        return false;
    }
    let frags = u16::from_be_bytes([ip[6], ip[7]]);
    let mut datagram = [0u8; 10];
    datagram[..8].copy_from_slice(&ip[12..20]);
    datagram[8..].copy_from_slice(&ip[4..6]);
    if frags & 0x1fff != 0 {
        return ip[9] == 6 && datagrams.contains(&datagram);
    }
    let first = frags & 0x2000 != 0;
    match ip[9] {
        1 => !first,
        6 => {
            let seg = &ip[ihl..tot];
            if seg.len() < 20 {
                return false;
            }
            let doff = (seg[12] >> 4) as usize * 4;
            let dport = u16::from_be_bytes([seg[2], seg[3]]);
            let ours = doff >= 20
                && doff <= seg.len()
                && (LISTEN_PORTS.contains(&dport)
                    || (SNAT_PORTS.0..=SNAT_PORTS.1).contains(&dport));
            if ours && first {
                datagrams.insert(datagram);
            }
            ours
        }
        _ => false,
    }
}

/// Every checksum of a frame the program changed or sent: IPv4 header, and TCP (with its
/// pseudo-header) or ICMP (with the IPv4 header it quotes, when whole). A fragment's TCP
/// checksum covers the whole datagram, which one fragment does not show: the first
/// fragment's must have changed exactly as its addresses and ports did (the datagram stays
/// as valid as it came), and a later fragment's payload must be untouched.
fn valid_checksums(input: &[u8], frame: &[u8]) -> Result<(), String> {
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return Err("changed into something that is not IPv4".into());
    }
    let ip = &frame[ETH..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < 20 || tot < ihl || tot > ip.len() {
        return Err(format!("IPv4 header or length broken (ihl {ihl}, total {tot})"));
    }
    if ones_complement_sum(&[&ip[..ihl]]) != 0xffff {
        return Err("bad IPv4 header checksum".into());
    }
    let l4 = &ip[ihl..tot];
    let frags = u16::from_be_bytes([ip[6], ip[7]]);
    if ip[9] == 6 && frags & 0x3fff != 0 {
        let inp = &input[ETH..];
        let in_l4 = &inp[ihl..tot.min(inp.len())];
        if frags & 0x1fff != 0 {
            return if l4 == in_l4 {
                Ok(())
            } else {
                Err("a later fragment's payload changed".into())
            };
        }
        let before = ones_complement_sum(&[&inp[12..20], in_l4]);
        let after = ones_complement_sum(&[&ip[12..20], l4]);
        return if before == after {
            Ok(())
        } else {
            Err("a first fragment's TCP checksum does not follow its new addresses and ports"
                .into())
        };
    }
    match ip[9] {
        6 => {
            let len = (l4.len() as u16).to_be_bytes();
            let sum = ones_complement_sum(&[&ip[12..16], &ip[16..20], &[0, 6], &len, l4]);
            if sum != 0xffff {
                return Err("bad TCP checksum".into());
            }
        }
        1 => {
            if ones_complement_sum(&[l4]) != 0xffff {
                return Err("bad ICMP checksum".into());
            }
            let quoted = &l4[8.min(l4.len())..];
            if quoted.len() >= 20 && quoted[0] >> 4 == 4 {
                let qihl = (quoted[0] & 0x0f) as usize * 4;
                if qihl >= 20
                    && quoted.len() >= qihl
                    && ones_complement_sum(&[&quoted[..qihl]]) != 0xffff
                {
                    return Err("bad checksum of the quoted IPv4 header".into());
                }
            }
        }
        p => return Err(format!("changed a protocol {p} packet")),
    }
    Ok(())
}

/// A TCP frame of a tracked flow in either direction, or to a listen port, or to anywhere.
fn base_tcp(rng: &mut Rng, tracked: &[Tracked]) -> Tcp {
    let f = &tracked[rng.below(tracked.len() as u64) as usize];
    let fl = rng.next_u64() as u8;
    let t = match rng.below(4) {
        0 => Tcp::new(f.client, f.listen, fl),
        1 => Tcp::new(f.target, f.snat, fl),
        2 => {
            let c = random_client(rng);
            Tcp::new(c, SocketAddrV4::new(NAT_IP, LISTEN_PORTS[rng.below(3) as usize]), fl)
        }
        _ => {
            let (c, a, p) = (random_client(rng), random_addr(rng), rng.next_u64() as u16);
            Tcp::new(c, SocketAddrV4::new(a, p), fl)
        }
    };
    let (seq, ttl) = (rng.next_u64() as u32, 1 + rng.below(255) as u8);
    let t = t.macs(ROUTER_MAC, NAT_MAC).seq(seq).ttl(ttl);
    let n = rng.below(1400);
    match rng.below(3) {
        0 => t,
        1 => t.options(&packet::opt::linux_syn(536 + n as u16 % 1000)),
        _ => t.payload_len(n as usize),
    }
}

fn random_client(rng: &mut Rng) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(CLIENT_NET[0], CLIENT_NET[1], rng.next_u64() as u8, rng.next_u64() as u8),
        1024 + rng.below(60000) as u16,
    )
}

fn random_addr(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::from(rng.next_u64() as u32)
}

fn generate(rng: &mut Rng, tracked: &[Tracked]) -> (&'static str, Vec<u8>) {
    match rng.below(13) {
        0 => {
            // Every length from a bare Ethernet header on (a test run, like a NIC, delivers
            // nothing shorter).
            let mut f = base_tcp(rng, tracked).frame();
            let cut = ETH + rng.below((f.len() - ETH) as u64) as usize;
            f.truncate(cut);
            ("truncated", f)
        }
        1 => {
            let mut f = base_tcp(rng, tracked).frame();
            let v = rng.next_u64() as u8;
            f[ETH] = if v & 1 == 0 { 0x40 | ((v >> 1) % 5) } else { v };
            fix_checksums(&mut f);
            ("bad version or IHL", f)
        }
        2 => {
            let f = base_tcp(rng, tracked).frame();
            ("IP options", with_ip_options(rng, f))
        }
        3 => {
            let t = base_tcp(rng, tracked).payload_len(64 + rng.below(1000) as usize);
            let off8 = rng.below(8) as u16;
            let len = 8 * (1 + rng.below(16) as usize);
            ("fragment", t.fragment(off8, len))
        }
        4 => {
            let mut f = base_tcp(rng, tracked).frame();
            let at = ETH + 20 + 12;
            f[at] = ((rng.below(16) as u8) << 4) | (f[at] & 0x0f);
            fix_checksums(&mut f);
            ("TCP data offset", f)
        }
        5 | 6 => ("flags", base_tcp(rng, tracked).frame()),
        7 => ("ICMP error", icmp_error(rng, tracked)),
        8 => {
            let src = SocketAddrV6::new("fd00::2".parse().unwrap(), 40000, 0, 0);
            let dst = SocketAddrV6::new("fd00::4".parse().unwrap(), LISTEN_PORTS[0], 0, 0);
            let (fl, n) = (rng.next_u64() as u8, rng.below(64) as usize);
            ("IPv6", packet::ipv6_tcp(src, dst, fl, &rng.bytes(n)))
        }
        9 => {
            // 802.1Q: the TCP frame behind a VLAN tag is not parsed, so it is not ours.
            let f = base_tcp(rng, tracked).frame();
            let mut v = f[..12].to_vec();
            let vid = rng.below(254) as u8 + 1;
            v.extend_from_slice(&[0x81, 0x00, 0x00, vid]);
            v.extend_from_slice(&f[12..]);
            ("VLAN tag", v)
        }
        10 => {
            let n = ETH + rng.below(47) as usize;
            ("tiny", rng.bytes(n))
        }
        11 => {
            // Past the 1500-byte MTU: translated, then left to the kernel. An XDP test run
            // takes at most about a page (more needs xdp.frags, which the program does not
            // declare, and without which the kernel will not attach it natively to a device
            // whose MTU is above a page), so "jumbo" stops there.
            let f = &tracked[rng.below(tracked.len() as u64) as usize];
            let t = Tcp::new(f.client, f.listen, flags::ACK)
                .macs(ROUTER_MAC, NAT_MAC)
                .payload_len(1461 + rng.below(1900) as usize);
            ("jumbo", t.frame())
        }
        _ => {
            let n = 14 + rng.below(200) as usize;
            let mut f = rng.bytes(n);
            if rng.below(2) == 0 {
                f[12..14].copy_from_slice(&[0x08, 0x00]);
            }
            ("random bytes", f)
        }
    }
}

/// The frame with `4..=40` bytes of IP options (NOPs, an end marker and random bytes) after
/// its IPv4 header, lengths and checksums made right: ours if the rest is.
fn with_ip_options(rng: &mut Rng, frame: Vec<u8>) -> Vec<u8> {
    let words = 1 + rng.below(10) as usize;
    let mut opts = rng.bytes(words * 4);
    if rng.below(2) == 0 {
        opts.iter_mut().for_each(|b| *b = 1); // NOPs
    }
    let mut f = frame[..ETH + 20].to_vec();
    f.extend_from_slice(&opts);
    f.extend_from_slice(&frame[ETH + 20..]);
    f[ETH] = 0x40 | (5 + words) as u8;
    let tot = u16::from_be_bytes([f[ETH + 2], f[ETH + 3]]) + (words * 4) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
    fix_checksums(&mut f);
    f
}

/// ICMP destination unreachable or time exceeded quoting a tracked flow's packet (as the
/// NAT sent it, so it matches), another flow's, or garbage; cut at a random length.
fn icmp_error(rng: &mut Rng, tracked: &[Tracked]) -> Vec<u8> {
    let f = &tracked[rng.below(tracked.len() as u64) as usize];
    let quoted = match rng.below(3) {
        // What the NAT sent towards the target, quoted back by a router on the way.
        0 => Tcp::new(f.snat, f.target, flags::ACK).payload_len(100).ip_packet(),
        1 => {
            let (c, a, p) = (random_client(rng), random_addr(rng), rng.next_u64() as u16);
            Tcp::new(c, SocketAddrV4::new(a, p), flags::ACK).ip_packet()
        }
        _ => {
            let n = rng.below(80) as usize;
            rng.bytes(n)
        }
    };
    let n = 8 + rng.below(quoted.len() as u64 + 1) as usize;
    let q = packet::quote(&quoted, n);
    let from = random_addr(rng);
    if rng.below(2) == 0 {
        packet::icmp_frag_needed(from, NAT_IP, 1200, &q)
    } else {
        packet::icmp_dest_unreachable(from, NAT_IP, rng.below(16) as u8, &q)
    }
}
