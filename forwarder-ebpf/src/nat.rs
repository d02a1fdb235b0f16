//! SNAT port allocation and the address/port rewrite of a TCP packet.

use crate::{
    conntrack,
    context::PacketContext,
    csum::CsumDelta,
    parse::{Tcp, IP_CHECK_OFF, TCP_CHECK_OFF},
};
use forwarder_common::{Config, FlowKey};
use network_types::ip::IpProto;

/// How many ports are tried before giving up (Cilium uses the same bound).
const SNAT_TRIES: u32 = 32;

/// The address and port pair a packet is rewritten to.
#[derive(Clone, Copy)]
pub struct Translation {
    pub src_addr: u32,
    pub dst_addr: u32,
    /// Network order.
    pub src_port: u16,
    pub dst_port: u16,
}

impl Translation {
    /// A packet matching an entry whose other half is `peer` is rewritten to the reverse of
    /// `peer`: that rule serves both directions.
    #[inline(always)]
    pub fn to_reverse_of(peer: &FlowKey) -> Self {
        Self {
            src_addr: peer.dst_addr,
            dst_addr: peer.src_addr,
            src_port: peer.dst_port,
            dst_port: peer.src_port,
        }
    }
}

/// Picks a free SNAT port for a new flow to (target_addr, target_port) and returns the reply
/// key its packets will carry; `None` when all tried ports are in use.
///
/// Each try is an independent position in the range (the client tuple's hash, mixed again
/// with the try's number), not the next port after the last: with "first free port after a
/// hashed start", ports are handed out at the ends of runs of taken ports while the LRU frees
/// the oldest at their beginnings, so the runs creep along the range, merge and grow. Under a
/// SYN flood that filled the embryonic table (a quarter of the ports of each target in use)
/// runs of 176 taken ports formed and 2.8 % of SYNs found 32 taken ports in a row
/// (`a_syn_flood_leaves_no_run_of_taken_ports`). Independent tries fail only when 32 random
/// ports are all taken: (fill)^32. A range no larger than the tries is walked whole instead.
#[inline(always)]
pub fn alloc_reply_key(
    orig: &FlowKey,
    target_addr: u32,
    target_port: u16,
    cfg: &Config,
    now: u64,
) -> Option<FlowKey> {
    let min = cfg.snat_port_min as u32;
    let max = cfg.snat_port_max as u32;
    if max < min {
        return None;
    }
    let range = max - min + 1;
    let small = range <= SNAT_TRIES;
    let hash = flow_hash(orig);
    // The counter is compared with a constant so the verifier sees a bounded loop.
    for i in 0..SNAT_TRIES {
        let offset = if small {
            if i >= range {
                break;
            }
            i
        } else {
            reduce(mix(hash.wrapping_add(i)), range)
        };
        let port = (min + offset) as u16;
        let key =
            FlowKey::new(target_addr, cfg.snat_addr, target_port, port.to_be(), IpProto::Tcp as u8);
        if !conntrack::port_taken(&key, cfg, now) {
            return Some(key);
        }
    }
    None
}

/// Maps a uniform 32-bit value onto 0..range without a division (Lemire's multiply-shift).
#[inline(always)]
fn reduce(x: u32, range: u32) -> u32 {
    ((x as u64 * range as u64) >> 32) as u32
}

/// Hash of the client tuple: each field mixed in turn, so fields that change together
/// (a scanner walking addresses and ports in step) cannot cancel out in a plain XOR and
/// pile up on one start port.
#[inline(always)]
fn flow_hash(k: &FlowKey) -> u32 {
    let mut h = mix(k.src_addr);
    h = mix(h ^ k.dst_addr);
    mix(h ^ ((k.src_port as u32) << 16 | k.dst_port as u32))
}

/// lowbias32 (Chris Wellons): a cheap, well-mixed 32-bit permutation.
#[inline(always)]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// Rewrites addresses and ports of a TCP packet, fixing the IP and TCP checksums
/// incrementally. `extra_l4` carries other changes to the TCP checksum (MSS clamp);
/// `dec_ttl` is set when the packet is forwarded here rather than by the kernel.
///
/// Packet pointers are invalid afterwards (the TC checksum helpers may move the packet).
#[inline(always)]
pub fn rewrite_tcp<C: PacketContext>(
    ctx: &C,
    tcp: &Tcp,
    t: &Translation,
    extra_l4: CsumDelta,
    dec_ttl: bool,
) {
    // SAFETY: the headers were bounds-checked by the parser.
    let (ip, th) = unsafe { (&mut *tcp.ip.hdr, &mut *tcp.hdr) };
    // The addresses: in the IP header and in the TCP pseudo-header.
    let mut addrs = CsumDelta::new();
    addrs.dword(tcp.ip.src, t.src_addr);
    addrs.dword(tcp.ip.dst, t.dst_addr);
    // What only the TCP segment itself carries.
    let mut segment = extra_l4;
    segment.word(tcp.sport, t.src_port);
    segment.word(tcp.dport, t.dst_port);
    let mut l3 = addrs;
    if dec_ttl {
        dec_ttl_delta(ip, &mut l3);
    }
    ip.src_addr = t.src_addr.to_ne_bytes();
    ip.dst_addr = t.dst_addr.to_ne_bytes();
    th.source = t.src_port.to_ne_bytes();
    th.dest = t.dst_port.to_ne_bytes();
    // All direct writes are done; from here on only the context's checksum methods.
    let tcp_check = tcp.ip.l4_off + TCP_CHECK_OFF;
    ctx.fix_l3_csum(IP_CHECK_OFF, l3);
    ctx.fix_l4_csum(tcp_check, addrs, segment);
}

/// Decrements the TTL and records the change for the IP checksum.
#[inline(always)]
pub fn dec_ttl_delta(ip: &mut network_types::ip::Ipv4Hdr, l3: &mut CsumDelta) {
    let old = u16::from_ne_bytes([ip.ttl, ip.proto]);
    ip.ttl -= 1;
    l3.word(old, u16::from_ne_bytes([ip.ttl, ip.proto]));
}
