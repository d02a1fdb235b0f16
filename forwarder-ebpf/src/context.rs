//! What the shared pipeline needs from an XDP or a TC context, and what it decides.

use crate::csum::CsumDelta;
use aya_ebpf::{
    bindings::BPF_F_PSEUDO_HDR,
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use core::ffi::c_void;

/// The pipeline's decision; each entry point maps it to its own return codes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the packet to the kernel (changed or not).
    Pass,
    Drop,
    /// Send back out of the interface it came in on.
    Tx,
    /// Send out of another interface.
    Redirect(u32),
}

pub trait PacketContext {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole packet's length from the Ethernet header on (on TC also the part outside
    /// the linear data), to check the IP total length against.
    fn packet_len(&self) -> usize;
    /// The context pointer `bpf_fib_lookup` takes.
    fn as_ptr(&self) -> *mut c_void;
    fn ingress_ifindex(&self) -> u32;
    /// The `tot_len` to give `bpf_fib_lookup` for its MTU check.
    fn fib_tot_len(&self, ip_tot_len: u16) -> u16;
    /// How many wire packets this one stands for (a GRO-merged skb stands for several).
    fn segments(&self) -> u64;
    /// The length to compare with a cached next hop's `max_len`; `None` when a cached hop
    /// cannot vouch for this packet (a GRO-merged skb: only the kernel's own check knows
    /// whether its segments fit).
    fn cacheable_len(&self, ip_tot_len: u16) -> Option<u16>;
    /// Folds `d` into the IPv4 header checksum at `off`.
    fn fix_l3_csum(&self, off: usize, d: CsumDelta);
    /// Folds the changes into the TCP checksum at `off`: `pseudo` those to the
    /// pseudo-header (addresses), `segment` those to the segment itself (ports, options). A
    /// checksum still to be completed by offload holds only the pseudo-header's part, so
    /// the segment's changes must not reach it.
    ///
    /// On TC this may move the packet: every packet pointer must be re-derived afterwards.
    fn fix_l4_csum(&self, off: usize, pseudo: CsumDelta, segment: CsumDelta);
}

/// Direct update of a checksum field in packet memory.
#[inline(always)]
fn fix_in_place<C: PacketContext>(ctx: &C, off: usize, d: CsumDelta) {
    if let Some(check) = ptr_at::<C, [u8; 2]>(ctx, off) {
        // SAFETY: bounds checked by ptr_at.
        unsafe { *check = d.apply(u16::from_ne_bytes(*check)).to_ne_bytes() };
    }
}

impl PacketContext for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn packet_len(&self) -> usize {
        XdpContext::data_end(self) - XdpContext::data(self)
    }
    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        EbpfContext::as_ptr(self)
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
    }
    #[inline(always)]
    fn fib_tot_len(&self, ip_tot_len: u16) -> u16 {
        ip_tot_len
    }
    #[inline(always)]
    fn segments(&self) -> u64 {
        1
    }
    #[inline(always)]
    fn cacheable_len(&self, ip_tot_len: u16) -> Option<u16> {
        Some(ip_tot_len)
    }
    /// An XDP frame is always a complete packet with complete checksums.
    #[inline(always)]
    fn fix_l3_csum(&self, off: usize, d: CsumDelta) {
        fix_in_place(self, off, d)
    }
    /// Both parts in one update: the checksum is taken as complete, as it is in every frame
    /// a NIC delivers to native XDP. (A CHECKSUM_PARTIAL skb from a sender on the same host,
    /// which xdp-generic or a veth can hand over, would need the TC treatment; a NAT VM
    /// forwards other hosts' packets, and this is how the program always treated them.)
    #[inline(always)]
    fn fix_l4_csum(&self, off: usize, pseudo: CsumDelta, segment: CsumDelta) {
        let mut d = pseudo;
        d.merge(segment);
        fix_in_place(self, off, d)
    }
}

impl PacketContext for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn packet_len(&self) -> usize {
        TcContext::len(self) as usize
    }
    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        EbpfContext::as_ptr(self)
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the context is a valid __sk_buff for the whole program run.
        unsafe { (*self.skb.skb).ifindex }
    }
    /// Zero lets the kernel check the skb itself against the egress MTU, which knows that
    /// a GRO-merged skb is re-segmented on the way out; its IP length is the merged one.
    #[inline(always)]
    fn fib_tot_len(&self, _ip_tot_len: u16) -> u16 {
        0
    }
    #[inline(always)]
    fn segments(&self) -> u64 {
        // SAFETY: the context is a valid __sk_buff for the whole program run.
        let segs = unsafe { (*self.skb.skb).gso_segs };
        if segs > 1 {
            segs as u64
        } else {
            1
        }
    }
    #[inline(always)]
    fn cacheable_len(&self, ip_tot_len: u16) -> Option<u16> {
        // SAFETY: the context is a valid __sk_buff for the whole program run.
        let gso = unsafe { (*self.skb.skb).gso_size };
        if gso == 0 {
            Some(ip_tot_len)
        } else {
            None
        }
    }
    // After GRO (hv_netvsc and most NICs merge TCP segments) an skb is CHECKSUM_PARTIAL:
    // its TCP checksum field holds the pseudo-header sum only. The helpers know the skb's
    // checksum state and update the field (and skb->csum) the way that state needs.
    #[inline(always)]
    fn fix_l3_csum(&self, off: usize, d: CsumDelta) {
        // A size of 0 makes `to` a precomputed difference.
        let _ = self.l3_csum_replace(off, 0, d.folded() as u64, 0);
    }
    #[inline(always)]
    fn fix_l4_csum(&self, off: usize, pseudo: CsumDelta, segment: CsumDelta) {
        let _ = self.l4_csum_replace(off, 0, pseudo.folded() as u64, BPF_F_PSEUDO_HDR as u64);
        let _ = self.l4_csum_replace(off, 0, segment.folded() as u64, 0);
    }
}

/// A bounds-checked pointer to a `T` at `offset` bytes into the packet; the only way the
/// program touches packet memory.
#[inline(always)]
pub fn ptr_at<C: PacketContext, T>(ctx: &C, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}
