//! The generator's bulk-stream mode (`bench_stream`): each frame is the template segment
//! (an MTU frame of the established flow, ACK only, DF set, one fixed IP id) with its
//! sequence number advanced by `(n % cycle) * step`, n the CPU's frame count. Consecutive
//! frames are consecutive segments, so a receiver's GRO merges them as it merges a NIC's
//! frames of a bulk transfer; the sequence numbers stay inside the receiver's window, so a
//! stateful NAT (netfilter's window tracking) accepts every one. The TCP checksum is updated
//! incrementally from the template's (the payload never changes: the kernel fills each
//! page-pool page from the template frame once, and receivers rewrite headers only).

use crate::{
    csum::Csum,
    maps::{next_frame, STREAM},
    parse::{ptr_at, ETH_LEN},
};
use aya_ebpf::programs::XdpContext;
use network_types::{ip::Ipv4Hdr, tcp::TcpHdr};

/// Advances the restored template's sequence number; None if the frame is too short or
/// the stream is not configured.
#[inline(always)]
pub fn advance(ctx: &XdpContext) -> Option<()> {
    let cfg = STREAM.get(0)?;
    let tcp = ptr_at::<TcpHdr>(ctx, ETH_LEN + Ipv4Hdr::LEN)?;
    // SAFETY: bounds checked by ptr_at; the frame outlives the program run.
    let tcp = unsafe { &mut *tcp };
    let n = next_frame() % cfg.cycle.max(1) as u64;
    let seq = u32::from_be_bytes(tcp.seq).wrapping_add((n as u32).wrapping_mul(cfg.step));
    let seq = seq.to_be_bytes();
    let mut l4 = Csum::from_check(tcp.check);
    l4.replace4(tcp.seq, seq);
    tcp.check = l4.check();
    tcp.seq = seq;
    Some(())
}
