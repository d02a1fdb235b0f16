//! What the shared pipeline needs from an XDP or a TC context, and what it decides.

use aya_ebpf::{
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
    /// The context pointer `bpf_fib_lookup` takes.
    fn as_ptr(&self) -> *mut c_void;
    fn ingress_ifindex(&self) -> u32;
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
    fn as_ptr(&self) -> *mut c_void {
        EbpfContext::as_ptr(self)
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
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
    fn as_ptr(&self) -> *mut c_void {
        EbpfContext::as_ptr(self)
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the context is a valid __sk_buff for the whole program run.
        unsafe { (*self.skb.skb).ifindex }
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
