//! IPv4 fragments of tracked flows. A datagram that crossed a hop with a smaller MTU (a
//! broker sending with DF off) arrives in pieces; only the first carries the TCP header. It
//! goes the flow's way like any packet, and leaves its translation here, keyed by what all
//! fragments of the datagram share (addresses, IP id, protocol); the later fragments take
//! it and have their addresses rewritten. Passed to the kernel untranslated, they would be
//! reassembled by the NAT VM's own stack, which has no socket on the SNAT port and answers
//! with an RST that the target takes: the connection would die.
//!
//! A later fragment that arrives before its first (or after the LRU forgot the datagram) is
//! not known to be ours and goes to the kernel, as before; that datagram is lost and
//! retransmitted. The TCP checksum sits in the first fragment and covers the addresses
//! through the pseudo-header: the first fragment's update covers the whole datagram.

use crate::{
    context::{PacketContext, Verdict},
    csum::CsumDelta,
    forward::{self, Route},
    maps::FRAGMENTS,
    nat::{self, Translation},
    parse::{Ipv4, IP_CHECK_OFF},
    stats,
};
use forwarder_common::{Counter, FragKey, FragTranslation};
use network_types::ip::IpProto;

#[inline(always)]
fn key(ip: &Ipv4) -> FragKey {
    FragKey { src_addr: ip.src, dst_addr: ip.dst, id: ip.id, proto: IpProto::Tcp as u8, _pad: 0 }
}

/// The first fragment of a datagram of a tracked flow, about to be rewritten by `t`.
#[inline(always)]
pub fn remember_first(ip: &Ipv4, t: &Translation, rule_id: u16, reply: bool) {
    let value = FragTranslation {
        src_addr: t.src_addr,
        dst_addr: t.dst_addr,
        rule_id,
        reply: reply as u8,
        _pad: 0,
    };
    let _ = FRAGMENTS.insert(&key(ip), &value, 0);
}

/// A later fragment: rewritten and sent as its first fragment was, if that one was ours.
#[inline(always)]
pub fn later<C: PacketContext>(ctx: &C, ip: &Ipv4) -> Verdict {
    // SAFETY: FRAGMENTS values are written whole by `remember_first`; copied out at once.
    let Some(t) = (unsafe { FRAGMENTS.get(&key(ip)) }).copied() else {
        return Verdict::Pass;
    };
    let tot_len = ctx.fib_tot_len(ip.tot_len);
    let (route, _) = forward::route(ctx, IpProto::Tcp, t.src_addr, t.dst_addr, tot_len);
    if let Route::Unreachable = route {
        stats::inc(t.rule_id, Counter::DropNoRoute);
        return Verdict::Drop;
    }
    // SAFETY: the IP header was bounds-checked by the parser.
    let hdr = unsafe { &mut *ip.hdr };
    let direct = matches!(route, Route::Direct(_)) && hdr.ttl > 1;
    let mut l3 = CsumDelta::new();
    l3.dword(ip.src, t.src_addr);
    l3.dword(ip.dst, t.dst_addr);
    if direct {
        nat::dec_ttl_delta(hdr, &mut l3);
    }
    hdr.src_addr = t.src_addr.to_ne_bytes();
    hdr.dst_addr = t.dst_addr.to_ne_bytes();
    ctx.fix_l3_csum(IP_CHECK_OFF, l3);
    stats::forwarded(t.rule_id, t.reply != 0, 1, ip.tot_len as u64);
    match route {
        Route::Direct(hop) if direct => forward::send(ctx, &hop),
        _ => {
            stats::inc(t.rule_id, Counter::SlowPath);
            Verdict::Pass
        }
    }
}
