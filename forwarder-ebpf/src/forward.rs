//! Next hop by FIB lookup, then out of the right interface.

use crate::context::{ptr_at, PacketContext, Verdict};
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE,
    },
    helpers::bpf_fib_lookup,
};
use network_types::{eth::EthHdr, ip::IpProto};

const AF_INET: u8 = 2;

pub enum Route {
    /// Next hop known: these MACs, out of this interface.
    Direct { ifindex: u32, smac: [u8; 6], dmac: [u8; 6] },
    /// The kernel must take it: neighbour not resolved yet (the kernel resolves it and
    /// sends the packet), packet larger than the egress MTU, or forwarding off.
    Kernel,
    /// No route to the destination.
    Unreachable,
}

/// Where a packet with these (already translated) addresses leaves.
#[inline(always)]
pub fn route<C: PacketContext>(ctx: &C, proto: IpProto, src: u32, dst: u32, tot_len: u16) -> Route {
    // SAFETY: an all-zero bpf_fib_lookup is a valid value (plain integers and unions of them).
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto as u8;
    p.__bindgen_anon_1.tot_len = tot_len;
    p.ifindex = ctx.ingress_ifindex();
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: p is a valid, correctly sized parameter block.
    let rc = unsafe {
        bpf_fib_lookup(ctx.as_ptr(), &mut p, core::mem::size_of::<FibParams>() as i32, 0)
    };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        Route::Direct { ifindex: p.ifindex, smac: p.smac, dmac: p.dmac }
    } else if rc == BPF_FIB_LKUP_RET_BLACKHOLE as i64
        || rc == BPF_FIB_LKUP_RET_UNREACHABLE as i64
        || rc == BPF_FIB_LKUP_RET_PROHIBIT as i64
    {
        Route::Unreachable
    } else {
        Route::Kernel
    }
}

/// Writes the MACs and says which way the frame goes.
#[inline(always)]
pub fn send<C: PacketContext>(ctx: &C, ifindex: u32, smac: [u8; 6], dmac: [u8; 6]) -> Verdict {
    let Some(eth) = ptr_at::<C, EthHdr>(ctx, 0) else {
        return Verdict::Pass;
    };
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).src_addr = smac;
        (*eth).dst_addr = dmac;
    }
    if ifindex == ctx.ingress_ifindex() {
        Verdict::Tx
    } else {
        Verdict::Redirect(ifindex)
    }
}
