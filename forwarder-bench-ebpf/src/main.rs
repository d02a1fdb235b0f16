//! XDP programs of the packet-rate bench (`cargo xtask bench`, tests/src/bench/rate). They
//! live in their own object so that nothing of the bench ships in the daemon's.
//!
//! - `bench_gen`: the generator, run by BPF_PROG_TEST_RUN in live-frames mode. The kernel
//!   recycles each frame's page holding whatever the receivers wrote into it (TTL, MACs, NAT
//!   rewrites), so every run restores the whole frame from `TEMPLATE`, then sends it (XDP_TX).
//! - `bench_flood`: the generator's SYN flood mode: the template restored as `bench_gen`
//!   does, then a random source address and port and the next destination port written
//!   into it, checksums updated (`flood`).
//! - `bench_stream`: the generator's bulk mode: an MTU frame of the flow, its template
//!   headers restored as `bench_gen` does, then the next sequence number of a stream
//!   written into it (`stream`).
//! - `bench_sink`: on the receiving veth end. Counts the generator's frames (IP id `MARK`)
//!   that arrive translated as `EXPECT` says, keeps one now and then whole for userspace to
//!   check, and drops them; passes everything else (ARP, the real TCP connection) on.
//! - `bench_ceiling`: the fastest a forwarding XDP program can be here: FIB lookup, MAC
//!   rewrite, TTL decrement, XDP_TX or redirect. No NAT, no connection tracking.
//! - `bench_floor`: the ceiling without its FIB lookup (next hop from `FLOOR_HOP`): what the
//!   bed itself costs per frame (generator, veth hops, sink) plus the least a forwarder does.
#![no_std]
#![no_main]

mod csum;
mod flood;
mod maps;
mod parse;
mod stream;

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::{bpf_fib_lookup, bpf_redirect},
    macros::xdp,
    programs::XdpContext,
    EbpfContext,
};
use maps::{count, expect, record, Count, Expect, Slot, FLOOR_HOP, TEMPLATE};
use network_types::{
    eth::EthHdr,
    ip::{IpProto, Ipv4Hdr},
};
use parse::{ptr_at, Headers, FRAME_LEN};

/// IP id of the generator's frames (network order on the wire: 0xBE, 0xEF).
const MARK: [u8; 2] = [0xbe, 0xef];
const AF_INET: u8 = 2;
/// Every this many delivered frames (per CPU) the sink keeps one whole, for userspace to check.
const SAMPLE_EVERY: u64 = 4096;

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    restore(&ctx)
}

#[xdp]
pub fn bench_flood(ctx: XdpContext) -> u32 {
    match restore(&ctx) {
        xdp_action::XDP_TX if flood::randomize(&ctx).is_some() => xdp_action::XDP_TX,
        _ => xdp_action::XDP_ABORTED,
    }
}

#[xdp]
pub fn bench_stream(ctx: XdpContext) -> u32 {
    match restore(&ctx) {
        xdp_action::XDP_TX if stream::advance(&ctx).is_some() => xdp_action::XDP_TX,
        _ => xdp_action::XDP_ABORTED,
    }
}

/// Writes the template over the frame's first FRAME_LEN bytes (all of a 64-byte frame, the
/// headers of a longer one); XDP_TX, or XDP_ABORTED if it cannot.
#[inline(always)]
fn restore(ctx: &XdpContext) -> u32 {
    let Some(template) = TEMPLATE.get_ptr(0) else { return xdp_action::XDP_ABORTED };
    // SAFETY: the template is a map value of FRAME_LEN bytes; the helper checks the frame's
    // bounds itself.
    let rc = unsafe {
        aya_ebpf::helpers::bpf_xdp_store_bytes(
            ctx.as_ptr() as *mut _,
            0,
            template as *mut _,
            FRAME_LEN as u32,
        )
    };
    if rc == 0 {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let Some(h) = Headers::tcp(&ctx) else { return xdp_action::XDP_PASS };
    // SAFETY: `Headers::tcp` checked the bounds.
    let ip = unsafe { &*h.ip };
    if ip.id != MARK {
        return xdp_action::XDP_PASS;
    }
    let translated = u32::from_ne_bytes(ip.src_addr) == expect(Expect::Saddr)
        && u32::from_ne_bytes(ip.dst_addr) == expect(Expect::Daddr)
        && h.ports() == expect(Expect::Ports);
    if translated {
        if count(Count::Delivered) % SAMPLE_EVERY == 1 {
            record(&ctx, Slot::Sample);
        }
    } else {
        count(Count::Untranslated);
    }
    xdp_action::XDP_DROP
}

#[xdp]
pub fn bench_ceiling(ctx: XdpContext) -> u32 {
    match ceiling(&ctx) {
        Some(action) => action,
        None => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    match floor(&ctx) {
        Some(action) => action,
        None => xdp_action::XDP_PASS,
    }
}

/// The frame goes out to the fixed next hop of `FLOOR_HOP`: TTL, MACs, XDP_TX / redirect.
#[inline(always)]
fn floor(ctx: &XdpContext) -> Option<u32> {
    let (eth, ip) = l3(ctx)?;
    let hop = FLOOR_HOP.get(0)?;
    decrement_ttl(ip);
    send(ctx, eth, hop.ifindex, hop.smac, hop.dmac)
}

/// FIB lookup, then the frame goes out as a router would send it; None: the kernel takes it.
#[inline(always)]
fn ceiling(ctx: &XdpContext) -> Option<u32> {
    let (eth, ip) = l3(ctx)?;
    // SAFETY: an all-zero bpf_fib_lookup is a valid value (integers and unions of them).
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = IpProto::Tcp as u8;
    p.__bindgen_anon_1.tot_len = u16::from_be_bytes(ip.tot_len);
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(ip.src_addr);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(ip.dst_addr);
    // SAFETY: p is a valid, correctly sized parameter block.
    let rc = unsafe {
        bpf_fib_lookup(ctx.as_ptr(), &mut p, core::mem::size_of::<FibParams>() as i32, 0)
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return None;
    }
    decrement_ttl(ip);
    send(ctx, eth, p.ifindex, p.smac, p.dmac)
}

/// The Ethernet and IPv4 headers of a frame a router may forward (TTL above 1).
#[inline(always)]
fn l3(ctx: &XdpContext) -> Option<(&mut EthHdr, &mut Ipv4Hdr)> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, parse::ETH_LEN)?;
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: both bounds checked by ptr_at; the frame outlives the program run.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    if eth.ether_type != parse::ETH_P_IP_BE || ip.ttl <= 1 {
        return None;
    }
    Some((eth, ip))
}

/// TTL - 1 and the header checksum + 0x0100, folded (as the kernel's ip_decrease_ttl).
#[inline(always)]
fn decrement_ttl(ip: &mut Ipv4Hdr) {
    ip.ttl -= 1;
    let sum = u16::from_be_bytes(ip.check) as u32 + 0x0100;
    ip.check = ((sum + (sum >= 0xffff) as u32) as u16).to_be_bytes();
}

/// Writes the next hop's MACs; back out of the same interface or to another one.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    eth: &mut EthHdr,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
) -> Option<u32> {
    eth.src_addr = smac;
    eth.dst_addr = dmac;
    if ifindex == ctx.ingress_ifindex() as u32 {
        Some(xdp_action::XDP_TX)
    } else {
        // SAFETY: plain helper call; returns XDP_REDIRECT or XDP_ABORTED.
        Some(unsafe { bpf_redirect(ifindex, 0) } as u32)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
