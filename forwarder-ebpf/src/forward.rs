//! Next hop: from the flow's cache while it is valid, else by FIB lookup (and cached);
//! then out of the right interface.

use crate::{
    context::{ptr_at, PacketContext, Verdict},
    maps::{INGRESS_MASTER, NEXTHOP_GEN},
    nat::Translation,
};
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE,
    },
    helpers::bpf_fib_lookup,
};
use forwarder_common::NextHop;
use network_types::{eth::EthHdr, ip::IpProto};

const AF_INET: u8 = 2;

/// A resolved next hop: these MACs, out of this interface.
#[derive(Clone, Copy)]
pub struct Hop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

pub enum Route {
    Direct(Hop),
    /// The kernel must take it: neighbour not resolved yet (the kernel resolves it and
    /// sends the packet), packet larger than the egress MTU, or forwarding off.
    Kernel,
    /// No route to the destination.
    Unreachable,
}

/// The next hop of a tracked flow's packet: `cache` if it is of the current generation and
/// the packet fits what was checked against the MTU, else a FIB lookup whose answer
/// replaces the cache.
#[inline(always)]
pub fn cached_or_lookup<C: PacketContext>(
    ctx: &C,
    cache: &mut NextHop,
    proto: IpProto,
    t: &Translation,
    ip_tot_len: u16,
) -> Route {
    // (The map always has its one entry; 0 would only keep caching on generation 0.)
    let gen = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    let cacheable = ctx.cacheable_len(ip_tot_len);
    if cache.ifindex != 0 && cache.gen == gen {
        if let Some(len) = cacheable {
            if len <= cache.max_len {
                return Route::Direct(Hop {
                    ifindex: cache.ifindex,
                    smac: cache.smac,
                    dmac: cache.dmac,
                });
            }
        }
    }
    let (r, max_len) = route(ctx, proto, t.src_addr, t.dst_addr, ctx.fib_tot_len(ip_tot_len));
    if let Route::Direct(hop) = &r {
        if cacheable.is_some() {
            *cache = NextHop {
                ifindex: hop.ifindex,
                gen,
                smac: hop.smac,
                dmac: hop.dmac,
                max_len,
                _pad: 0,
            };
        }
    }
    r
}

/// Where a packet with these (already translated) addresses leaves, by FIB lookup; with a
/// direct route, also the largest IP length known to fit it (see `NextHop::max_len`).
#[inline(always)]
pub fn route<C: PacketContext>(
    ctx: &C,
    proto: IpProto,
    src: u32,
    dst: u32,
    tot_len: u16,
) -> (Route, u16) {
    // SAFETY: an all-zero bpf_fib_lookup is a valid value (plain integers and unions of them).
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto as u8;
    p.__bindgen_anon_1.tot_len = tot_len;
    let ingress = ctx.ingress_ifindex();
    // SAFETY: INGRESS_MASTER is only read here; the daemon writes whole values.
    let master = unsafe { INGRESS_MASTER.get(&ingress) }.copied();
    p.ifindex = master.unwrap_or(ingress);
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: p is a valid, correctly sized parameter block.
    let rc = unsafe {
        bpf_fib_lookup(ctx.as_ptr(), &mut p, core::mem::size_of::<FibParams>() as i32, 0)
    };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // On success the field still holds the length given (XDP), or, when 0 was given,
        // the kernel's answer: the egress device's MTU (TC).
        // SAFETY: a plain u16 in a union of u16s.
        let max_len = unsafe { p.__bindgen_anon_1.tot_len };
        // Out of the master the packet came in under: out of the device it came in on.
        let ifindex = if master == Some(p.ifindex) { ingress } else { p.ifindex };
        (Route::Direct(Hop { ifindex, smac: p.smac, dmac: p.dmac }), max_len)
    } else if rc == BPF_FIB_LKUP_RET_BLACKHOLE as i64
        || rc == BPF_FIB_LKUP_RET_UNREACHABLE as i64
        || rc == BPF_FIB_LKUP_RET_PROHIBIT as i64
    {
        (Route::Unreachable, 0)
    } else {
        (Route::Kernel, 0)
    }
}

/// Writes the MACs and says which way the frame goes.
#[inline(always)]
pub fn send<C: PacketContext>(ctx: &C, hop: &Hop) -> Verdict {
    let Some(eth) = ptr_at::<C, EthHdr>(ctx, 0) else {
        return Verdict::Pass;
    };
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).src_addr = hop.smac;
        (*eth).dst_addr = hop.dmac;
    }
    if hop.ifindex == ctx.ingress_ifindex() {
        Verdict::Tx
    } else {
        Verdict::Redirect(hop.ifindex)
    }
}
