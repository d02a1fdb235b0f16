//! Bounds-checked access to the headers the bench programs read.

use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

/// The generator's frame: Ethernet + IPv4 + TCP (no options) + 10 payload bytes.
/// Must equal `FRAME_LEN` of tests/src/bench/rate (the template map's value size).
pub const FRAME_LEN: usize = 64;
/// The stream generator's frames: an Ethernet frame of a 1500-byte MTU. Must equal
/// `MAX_FRAME_LEN` of tests/src/bench/rate (the kept frame's size).
pub const MAX_FRAME_LEN: usize = 1514;
pub const ETH_LEN: usize = EthHdr::LEN;
/// ETH_P_IP as it sits in `EthHdr::ether_type` (read as a native u16 from network order).
pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();

/// A pointer to a `T` at `offset` in the packet, if the packet is long enough.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data() + offset;
    if start + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start as *mut T)
}

/// An IPv4 TCP frame's headers (IPv4 header without options: the generator sends none, and
/// a frame with options is not one of its frames).
pub struct Headers {
    pub ip: *mut Ipv4Hdr,
    pub tcp: *mut TcpHdr,
}

impl Headers {
    #[inline(always)]
    pub fn tcp(ctx: &XdpContext) -> Option<Headers> {
        let eth = ptr_at::<EthHdr>(ctx, 0)?;
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
        let tcp = ptr_at::<TcpHdr>(ctx, ETH_LEN + Ipv4Hdr::LEN)?;
        // SAFETY: bounds checked by ptr_at.
        let (eth, ipv) = unsafe { (&*eth, &*ip) };
        if eth.ether_type != ETH_P_IP_BE || ipv.vihl != 0x45 || ipv.proto != 6 {
            return None;
        }
        Some(Headers { ip, tcp })
    }

    /// Source and destination port as the 4 bytes sit in the header, read as a native u32.
    #[inline(always)]
    pub fn ports(&self) -> u32 {
        // SAFETY: the TCP header was bounds checked when `self` was made.
        unsafe { core::ptr::read_unaligned(self.tcp as *const u32) }
    }
}
