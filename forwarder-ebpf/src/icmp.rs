//! ICMP errors (destination unreachable incl. fragmentation needed, time exceeded) about a
//! tracked flow, translated in both directions so path MTU discovery works across the NAT.
//!
//! The quoted packet is one this NAT sent, so its reversed tuple is the key of the entry the
//! flow's packets in the other direction match; the quoted header is rewritten to the peer
//! of that entry (the packet as it was before translation), and the outer header is
//! addressed to the peer's source, from the peer's destination -- as netfilter does.

use crate::{
    conntrack::{self, Lookup},
    context::{ptr_at, PacketContext, Verdict},
    csum::CsumDelta,
    events,
    forward::{self, Route},
    nat::dec_ttl_delta,
    parse::{read_u16, read_u32, Ipv4, TCP_CHECK_OFF},
    stats,
};
use forwarder_common::{Config, Counter, FlowKey};
use network_types::ip::{IpProto, Ipv4Hdr};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_HDR_LEN: usize = 8;

#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: [u8; 2],
    rest: [u8; 4],
}

/// The first 8 bytes of the quoted TCP header: ports and sequence number.
#[repr(C)]
struct QuotedTcp {
    source: [u8; 2],
    dest: [u8; 2],
    seq: [u8; 4],
}

#[inline(always)]
pub fn handle<C: PacketContext>(ctx: &C, ip: &Ipv4, cfg: &Config, now: u64) -> Verdict {
    handle_inner(ctx, ip, cfg, now).unwrap_or(Verdict::Pass)
}

#[inline(always)]
fn handle_inner<C: PacketContext>(ctx: &C, ip: &Ipv4, cfg: &Config, now: u64) -> Option<Verdict> {
    let icmp: *mut IcmpHdr = ptr_at(ctx, ip.l4_off)?;
    // SAFETY: bounds checked by ptr_at.
    let kind = unsafe { (*icmp).kind };
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner_off = ip.l4_off + ICMP_HDR_LEN;
    let inner: *mut Ipv4Hdr = ptr_at(ctx, inner_off)?;
    // SAFETY: bounds checked by ptr_at.
    let inner_h = unsafe { &mut *inner };
    // Quoted headers with IP options are rare enough to leave to the kernel.
    if inner_h.vihl != 0x45 || inner_h.proto != IpProto::Tcp as u8 {
        return None;
    }
    let ports: *mut QuotedTcp = ptr_at(ctx, inner_off + Ipv4Hdr::LEN)?;
    // SAFETY: bounds checked by ptr_at.
    let q = unsafe { &mut *ports };
    let quoted = FlowKey::new(
        read_u32(&inner_h.src_addr),
        read_u32(&inner_h.dst_addr),
        read_u16(&q.source),
        read_u16(&q.dest),
        IpProto::Tcp as u8,
    );
    let found = match conntrack::lookup(&quoted.reversed(), cfg, now) {
        Lookup::Original(f) | Lookup::Reply(f) => f,
        Lookup::New => return None,
    };
    // SAFETY: a live map value.
    let (peer, rule_id) = unsafe { ((*found.entry).peer, (*found.entry).rule_id) };

    let (outer_src, outer_dst) = (peer.dst_addr, peer.src_addr);
    let (route, _) =
        forward::route(ctx, IpProto::Icmp, outer_src, outer_dst, ctx.fib_tot_len(ip.tot_len));
    if let Route::Unreachable = route {
        stats::inc(rule_id, Counter::DropNoRoute);
        events::icmp_untranslated(rule_id, outer_dst, now);
        return Some(Verdict::Drop);
    }

    // Quoted IP header and ports.
    let mut inner_l3 = CsumDelta::new();
    inner_l3.dword(quoted.src_addr, peer.src_addr);
    inner_l3.dword(quoted.dst_addr, peer.dst_addr);
    let mut ports_delta = CsumDelta::new();
    ports_delta.word(quoted.src_port, peer.src_port);
    ports_delta.word(quoted.dst_port, peer.dst_port);
    let old_inner_check = read_u16(&inner_h.check);
    let new_inner_check = inner_l3.apply(old_inner_check);
    inner_h.src_addr = peer.src_addr.to_ne_bytes();
    inner_h.dst_addr = peer.dst_addr.to_ne_bytes();
    inner_h.check = new_inner_check.to_ne_bytes();
    q.source = peer.src_port.to_ne_bytes();
    q.dest = peer.dst_port.to_ne_bytes();

    // The ICMP checksum covers everything quoted, including the checksums that changed.
    let mut icmp_delta = inner_l3;
    icmp_delta.merge(ports_delta);
    icmp_delta.word(old_inner_check, new_inner_check);
    // The quoted TCP checksum, when quoted: pseudo-header addresses and ports changed.
    if let Some(tcp_check) = ptr_at::<C, [u8; 2]>(ctx, inner_off + Ipv4Hdr::LEN + TCP_CHECK_OFF) {
        let mut tcp_delta = inner_l3;
        tcp_delta.merge(ports_delta);
        let old = read_u16(tcp_check);
        let new = tcp_delta.apply(old);
        // SAFETY: bounds checked by ptr_at.
        unsafe { *tcp_check = new.to_ne_bytes() };
        icmp_delta.word(old, new);
    }
    // SAFETY: icmp was bounds checked; nothing since has moved the packet.
    unsafe { (*icmp).check = icmp_delta.apply(read_u16(&(*icmp).check)).to_ne_bytes() };

    // Outer IP header.
    // SAFETY: checked by the parser.
    let outer = unsafe { &mut *ip.hdr };
    let mut l3 = CsumDelta::new();
    l3.dword(ip.src, outer_src);
    l3.dword(ip.dst, outer_dst);
    let direct = matches!(route, Route::Direct(_)) && outer.ttl > 1;
    if direct {
        dec_ttl_delta(outer, &mut l3);
    }
    outer.src_addr = outer_src.to_ne_bytes();
    outer.dst_addr = outer_dst.to_ne_bytes();
    outer.check = l3.apply(read_u16(&outer.check)).to_ne_bytes();
    stats::inc(rule_id, Counter::IcmpTranslated);

    match route {
        Route::Direct(hop) if direct => Some(forward::send(ctx, &hop)),
        _ => {
            stats::inc(rule_id, Counter::SlowPath);
            Some(Verdict::Pass)
        }
    }
}
