//! The one parse path: Ethernet -> IPv4 -> TCP or ICMP; a TCP datagram's later fragments
//! (which carry no TCP header) apart. Anything else is not ours and goes to the kernel
//! untouched.

use crate::context::{ptr_at, PacketContext};
use network_types::{
    eth::EthHdr,
    ip::{IpProto, Ipv4Hdr},
    tcp::TcpHdr,
};

pub const ETH_LEN: usize = EthHdr::LEN;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// More-fragments flag and fragment offset bits of `frag_off`, in the packet's byte order.
const IP_MF_OFFSET_MASK: u16 = 0x3fffu16.to_be();
/// The fragment offset bits alone.
const IP_OFFSET_MASK: u16 = 0x1fffu16.to_be();

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
/// Offset of the IPv4 header checksum from the start of the frame.
pub const IP_CHECK_OFF: usize = ETH_LEN + 10;
/// Offset of the checksum inside a TCP header.
pub const TCP_CHECK_OFF: usize = 16;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFF: usize = 13;

pub struct Ipv4 {
    pub hdr: *mut Ipv4Hdr,
    /// Offset of the layer-4 header from the start of the frame.
    pub l4_off: usize,
    /// Header length including options, in bytes.
    pub hdr_len: usize,
    pub src: u32,
    pub dst: u32,
    pub tot_len: u16,
    /// Network order, as in the packet: the datagram's identification.
    pub id: u16,
    pub frag: Frag,
}

/// Where a packet stands in its datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// The whole datagram.
    Whole,
    /// The first of several fragments: it carries the TCP header.
    First,
    /// A later fragment: payload only.
    Later,
}

pub struct Tcp {
    pub ip: Ipv4,
    pub hdr: *mut TcpHdr,
    /// Network order, as in the packet.
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    /// Header length including options, in bytes.
    pub hdr_len: usize,
}

impl Tcp {
    #[inline(always)]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// A connection-opening SYN (no ACK).
    #[inline(always)]
    pub fn is_syn(&self) -> bool {
        self.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
    }
}

pub enum L4 {
    /// A TCP datagram, or the first fragment of one.
    Tcp(Tcp),
    /// A later fragment of a TCP datagram.
    TcpFragment(Ipv4),
    /// ICMP; the ICMP header starts at `ip.l4_off`.
    Icmp(Ipv4),
}

#[inline(always)]
pub fn read_u16(p: *const [u8; 2]) -> u16 {
    // SAFETY: callers pass pointers checked by ptr_at.
    u16::from_ne_bytes(unsafe { *p })
}

#[inline(always)]
pub fn read_u32(p: *const [u8; 4]) -> u32 {
    // SAFETY: callers pass pointers checked by ptr_at.
    u32::from_ne_bytes(unsafe { *p })
}

/// Parses the IPv4 header at `off`; `None` for anything that is not a whole IPv4 packet
/// (a datagram or a fragment of one). (Quoted headers inside ICMP errors are parsed with
/// `ipv4_header_at`: they are truncated by nature.)
#[inline(always)]
pub fn ipv4_at<C: PacketContext>(ctx: &C, off: usize) -> Option<Ipv4> {
    let ip = ipv4_header_at(ctx, off)?;
    // The total length must cover the header and fit the frame (which may carry Ethernet
    // padding after it): netfilter treats anything else as invalid, so it is not ours.
    let tot_len = ip.tot_len as usize;
    if tot_len < ip.hdr_len || off + tot_len > ctx.packet_len() {
        return None;
    }
    Some(ip)
}

/// The IPv4 header at `off`, checked on its own (version, IHL); `frag` says whether it is
/// a fragment.
#[inline(always)]
pub fn ipv4_header_at<C: PacketContext>(ctx: &C, off: usize) -> Option<Ipv4> {
    let hdr: *mut Ipv4Hdr = ptr_at(ctx, off)?;
    // SAFETY: bounds checked by ptr_at.
    let h = unsafe { &*hdr };
    let ihl = (h.vihl & 0x0f) as usize;
    if h.vihl >> 4 != 4 || ihl < 5 {
        return None;
    }
    let frags = read_u16(&h.frags);
    let frag = if frags & IP_MF_OFFSET_MASK == 0 {
        Frag::Whole
    } else if frags & IP_OFFSET_MASK == 0 {
        Frag::First
    } else {
        Frag::Later
    };
    Some(Ipv4 {
        id: read_u16(&h.id),
        frag,
        hdr,
        l4_off: off + ihl * 4,
        hdr_len: ihl * 4,
        src: read_u32(&h.src_addr),
        dst: read_u32(&h.dst_addr),
        tot_len: u16::from_be_bytes(h.tot_len),
    })
}

#[inline(always)]
pub fn tcp_at<C: PacketContext>(ctx: &C, ip: Ipv4) -> Option<Tcp> {
    let hdr: *mut TcpHdr = ptr_at(ctx, ip.l4_off)?;
    // Read through the checked header pointer: a second ptr_at would be folded away by LLVM
    // (it is implied by the first) and the verifier would lose the bound.
    // SAFETY: bounds checked by ptr_at; the flags byte lies inside the 20-byte header.
    let (h, flags) = unsafe { (&*hdr, *(hdr as *const u8).add(TCP_FLAGS_OFF)) };
    let hdr_len = (h.doff() as usize & 0x0f) * 4;
    // The TCP header (options included) must fit in the IP payload: a data offset past the
    // segment's end makes an invalid packet, which goes to the kernel untouched, untracked.
    let ip_payload = (ip.tot_len as usize).saturating_sub(ip.hdr_len);
    if hdr_len < TcpHdr::LEN || hdr_len > ip_payload {
        return None;
    }
    Some(Tcp { sport: read_u16(&h.source), dport: read_u16(&h.dest), flags, hdr_len, hdr, ip })
}

#[inline(always)]
pub fn parse<C: PacketContext>(ctx: &C) -> Option<L4> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).ether_type } != ETH_P_IP_BE {
        return None;
    }
    let ip = ipv4_at(ctx, ETH_LEN)?;
    // SAFETY: ipv4_at checked the header bounds.
    let proto = unsafe { (*ip.hdr).proto };
    if proto == IpProto::Tcp as u8 {
        if ip.frag == Frag::Later {
            return Some(L4::TcpFragment(ip));
        }
        tcp_at(ctx, ip).map(L4::Tcp)
    } else if proto == IpProto::Icmp as u8 && ip.frag == Frag::Whole {
        Some(L4::Icmp(ip))
    } else {
        None
    }
}
