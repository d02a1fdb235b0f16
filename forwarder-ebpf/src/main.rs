//! forwarder-ebpf: DNAT + SNAT of load-balancer ports to broker addresses, in XDP or TC.
//!
//! This file holds the entry points only; the journey of a packet is in `pipeline`.
#![no_std]
#![no_main]
// atomic_xadd: the established-flow count (conntrack::count_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod conntrack;
mod context;
mod csum;
mod events;
mod forward;
mod fragment;
mod icmp;
mod maps;
mod mss;
mod nat;
mod parse;
mod pipeline;
mod stats;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use context::{PacketContext, Verdict};

#[xdp]
pub fn forwarder_xdp(ctx: XdpContext) -> u32 {
    match pipeline::process(&ctx) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Tx => xdp_action::XDP_TX,
        // SAFETY: plain helper call; returns XDP_REDIRECT or XDP_ABORTED.
        Verdict::Redirect(ifindex) => unsafe { bpf_redirect(ifindex, 0) as u32 },
    }
}

#[classifier]
pub fn forwarder_tc(ctx: TcContext) -> i32 {
    // Headers may sit outside the linear part of the skb; pull what the parser can read
    // (Ethernet + IPv4 with options + TCP with options, or an ICMP error quoting them).
    let want = core::cmp::min(ctx.len(), 200);
    let _ = ctx.pull_data(want);
    match pipeline::process(&ctx) {
        Verdict::Pass => TC_ACT_OK as i32,
        Verdict::Drop => TC_ACT_SHOT as i32,
        // On TC both go through bpf_redirect: to the egress side of an interface.
        // SAFETY: plain helper calls; they return TC_ACT_REDIRECT or TC_ACT_SHOT.
        Verdict::Tx => unsafe { bpf_redirect(ctx.ingress_ifindex(), 0) as i32 },
        Verdict::Redirect(ifindex) => unsafe { bpf_redirect(ifindex, 0) as i32 },
    }
}

/// Passes everything. Attached to the far end of veth pairs so that frames sent there with
/// native XDP_TX / XDP_REDIRECT are received promptly (see TOOLCHAIN.md, "Testing on veth").
#[xdp]
pub fn forwarder_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
