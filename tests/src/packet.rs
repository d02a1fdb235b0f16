//! The one packet builder of the tests (BPF_PROG_TEST_RUN tests, netns tests, benchmarks),
//! and an independent parser that checks every checksum of what the data path sends.
//!
//! Frames are built with `etherparse`, so their checksums are computed by code that shares
//! nothing with the data path's incremental updates. [`parse_tcp`] and [`parse_icmp_error`]
//! parse with `etherparse` again and recompute the IPv4 header checksum, the TCP checksum
//! (pseudo-header included) and the ICMP checksum, each also checked by a plain RFC 1071 sum
//! written here; they panic with the frame's bytes on any mismatch.

use etherparse::{
    icmpv4::DestUnreachableHeader, EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header,
    Icmpv4Slice, Icmpv4Type, IpFragOffset, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header,
    TcpHeader, UdpHeader,
};
use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6};

pub type Mac = [u8; 6];

/// A MAC as `ip` writes and takes it: `02:00:00:00:00:04`.
pub fn mac_text(mac: Mac) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Source MAC of built frames unless overridden: the router (the load balancer's side).
pub const DEFAULT_SRC_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
/// Destination MAC of built frames unless overridden: the NAT VM.
pub const DEFAULT_DST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x04];
pub const DEFAULT_TTL: u8 = 64;
pub const ETH_LEN: usize = Ethernet2Header::LEN;

/// TCP flag bits, as in the header's flags byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Raw TCP options.
pub mod opt {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const KIND_MSS: u8 = 2;

    pub fn mss(v: u16) -> [u8; 4] {
        let b = v.to_be_bytes();
        [KIND_MSS, 4, b[0], b[1]]
    }

    /// NOP, NOP, timestamps: the 12 bytes Linux puts in every segment.
    pub fn timestamps(tsval: u32, tsecr: u32) -> [u8; 12] {
        let (v, e) = (tsval.to_be_bytes(), tsecr.to_be_bytes());
        [NOP, NOP, 8, 10, v[0], v[1], v[2], v[3], e[0], e[1], e[2], e[3]]
    }

    /// NOP, window scale.
    pub fn window_scale(shift: u8) -> [u8; 4] {
        [NOP, 3, 3, shift]
    }

    pub fn sack_permitted() -> [u8; 2] {
        [4, 2]
    }

    /// The options of a Linux SYN: MSS, SACK permitted, timestamps, NOP, window scale.
    pub fn linux_syn(mss_value: u16) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(&mss(mss_value));
        o.extend_from_slice(&sack_permitted());
        o.extend_from_slice(&[8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0]);
        o.extend_from_slice(&window_scale(7));
        o
    }
}

/// Deterministic payload bytes (not all zero, so a checksum over them means something).
pub fn payload_pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ 0x5a).collect()
}

/// An IPv4 TCP segment in an Ethernet frame.
#[derive(Clone, Debug)]
pub struct Tcp {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// [`flags`] bits.
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub ttl: u8,
    pub ip_id: u16,
    pub dont_fragment: bool,
    /// Raw option bytes; padded with zeros (EOL) to a multiple of 4 when built.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Tcp {
    pub fn new(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Self {
        Self {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            src,
            dst,
            flags,
            seq: 1_000_000,
            ack: if flags & flags::ACK != 0 { 2_000_000 } else { 0 },
            window: 64240,
            ttl: DEFAULT_TTL,
            ip_id: 0x1234,
            dont_fragment: true,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn macs(mut self, src: Mac, dst: Mac) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    pub fn ack(mut self, ack: u32) -> Self {
        self.ack = ack;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn options(mut self, raw: &[u8]) -> Self {
        self.options = raw.to_vec();
        self
    }

    pub fn payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = payload;
        self
    }

    /// A payload of `len` pattern bytes.
    pub fn payload_len(self, len: usize) -> Self {
        self.payload(payload_pattern(len, 7))
    }

    fn headers(&self) -> (Ipv4Header, TcpHeader) {
        let mut tcp = TcpHeader::new(self.src.port(), self.dst.port(), self.seq, self.window);
        tcp.fin = self.flags & flags::FIN != 0;
        tcp.syn = self.flags & flags::SYN != 0;
        tcp.rst = self.flags & flags::RST != 0;
        tcp.psh = self.flags & flags::PSH != 0;
        tcp.ack = self.flags & flags::ACK != 0;
        tcp.acknowledgment_number = self.ack;
        let mut raw = self.options.clone();
        while !raw.len().is_multiple_of(4) {
            raw.push(opt::EOL);
        }
        tcp.set_options_raw(&raw).expect("TCP options fit in 40 bytes");
        let l4_len = tcp.header_len() + self.payload.len();
        let mut ip = Ipv4Header::new(
            l4_len as u16,
            self.ttl,
            IpNumber::TCP,
            self.src.ip().octets(),
            self.dst.ip().octets(),
        )
        .expect("IPv4 payload length");
        ip.identification = self.ip_id;
        ip.dont_fragment = self.dont_fragment;
        ip.header_checksum = ip.calc_header_checksum();
        tcp.checksum = tcp.calc_checksum_ipv4(&ip, &self.payload).expect("TCP length");
        (ip, tcp)
    }

    /// The IPv4 packet (no Ethernet header), e.g. to quote in an ICMP error.
    pub fn ip_packet(&self) -> Vec<u8> {
        let (ip, tcp) = self.headers();
        let mut out = Vec::with_capacity(ip.total_len as usize);
        ip.write(&mut out).unwrap();
        tcp.write(&mut out).unwrap();
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut out = eth(self.src_mac, self.dst_mac, EtherType::IPV4);
        out.extend_from_slice(&self.ip_packet());
        out
    }

    /// The segment split as IPv4 fragments would carry it: the fragment holding bytes
    /// `[8 * offset8, 8 * offset8 + len)` of the TCP segment (header included), with
    /// more-fragments set unless it is the last.
    pub fn fragment(&self, offset8: u16, len: usize) -> Vec<u8> {
        let (mut ip, tcp) = self.headers();
        let mut segment = Vec::new();
        tcp.write(&mut segment).unwrap();
        segment.extend_from_slice(&self.payload);
        let start = offset8 as usize * 8;
        let end = (start + len).min(segment.len());
        assert!(start < end, "fragment outside the segment");
        ip.dont_fragment = false;
        ip.more_fragments = end < segment.len();
        ip.fragment_offset = IpFragOffset::try_new(offset8).unwrap();
        ip.set_payload_len(end - start).unwrap();
        let mut out = eth(self.src_mac, self.dst_mac, EtherType::IPV4);
        ip.write(&mut out).unwrap();
        out.extend_from_slice(&segment[start..end]);
        out
    }
}

fn eth(src: Mac, dst: Mac, ether_type: EtherType) -> Vec<u8> {
    let mut out = Vec::with_capacity(1600);
    Ethernet2Header { source: src, destination: dst, ether_type }.write(&mut out).unwrap();
    out
}

fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: IpNumber, l4: &[u8]) -> Vec<u8> {
    let ip = Ipv4Header::new(l4.len() as u16, DEFAULT_TTL, proto, src.octets(), dst.octets())
        .expect("IPv4 payload length");
    let mut out = eth(DEFAULT_SRC_MAC, DEFAULT_DST_MAC, EtherType::IPV4);
    ip.write(&mut out).unwrap(); // computes the header checksum
    out.extend_from_slice(l4);
    out
}

/// An IPv6 TCP segment (the data path must leave it alone).
pub fn ipv6_tcp(src: SocketAddrV6, dst: SocketAddrV6, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = TcpHeader::new(src.port(), dst.port(), 42, 64240);
    tcp.syn = tcp_flags & flags::SYN != 0;
    tcp.ack = tcp_flags & flags::ACK != 0;
    tcp.fin = tcp_flags & flags::FIN != 0;
    tcp.rst = tcp_flags & flags::RST != 0;
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: (tcp.header_len() + payload.len()) as u16,
        next_header: IpNumber::TCP,
        hop_limit: 64,
        source: src.ip().octets(),
        destination: dst.ip().octets(),
    };
    tcp.checksum = tcp.calc_checksum_ipv6(&ip, payload).unwrap();
    let mut out = eth(DEFAULT_SRC_MAC, DEFAULT_DST_MAC, EtherType::IPV6);
    ip.write(&mut out).unwrap();
    tcp.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

/// An IPv4 UDP datagram.
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4Header::new(
        (UdpHeader::LEN + payload.len()) as u16,
        DEFAULT_TTL,
        IpNumber::UDP,
        src.ip().octets(),
        dst.ip().octets(),
    )
    .unwrap();
    let udp = UdpHeader::with_ipv4_checksum(src.port(), dst.port(), &ip, payload).unwrap();
    let mut l4 = udp.to_bytes().to_vec();
    l4.extend_from_slice(payload);
    ipv4_frame(*src.ip(), *dst.ip(), IpNumber::UDP, &l4)
}

fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let hdr = Icmpv4Header::with_checksum(ty, payload);
    let mut l4 = hdr.to_bytes().to_vec();
    l4.extend_from_slice(payload);
    ipv4_frame(src, dst, IpNumber::ICMP, &l4)
}

/// An ICMP echo request.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    icmp(src, dst, Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq }), payload)
}

/// ICMP destination unreachable, fragmentation needed, quoting `quoted` (an IPv4 packet or
/// its first bytes).
pub fn icmp_frag_needed(src: Ipv4Addr, dst: Ipv4Addr, mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let ty = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: mtu,
    });
    icmp(src, dst, ty, quoted)
}

/// ICMP destination unreachable with another code (e.g. host unreachable = 1).
pub fn icmp_dest_unreachable(src: Ipv4Addr, dst: Ipv4Addr, code: u8, quoted: &[u8]) -> Vec<u8> {
    let h = DestUnreachableHeader::from_values(code, 0).expect("known code");
    icmp(src, dst, Icmpv4Type::DestinationUnreachable(h), quoted)
}

/// A copy of an Ethernet + IPv4 frame with other MACs and TTL, its IPv4 header checksum
/// computed afresh (for expected frames of ICMP errors, whose builders take neither).
pub fn with_l2_ttl(frame: &[u8], src: Mac, dst: Mac, ttl: u8) -> Vec<u8> {
    let (mut ip, rest) = Ipv4Header::from_slice(&frame[ETH_LEN..]).expect("IPv4 frame");
    ip.time_to_live = ttl;
    let mut out = eth(src, dst, EtherType::IPV4);
    ip.write(&mut out).unwrap();
    out.extend_from_slice(rest);
    out
}

/// The first `n` bytes of an IPv4 packet, as an ICMP error quotes it (RFC 792: the IP
/// header and 8 bytes; Linux quotes up to 576 bytes in all).
pub fn quote(ip_packet: &[u8], n: usize) -> Vec<u8> {
    ip_packet[..n.min(ip_packet.len())].to_vec()
}

// ---------------------------------------------------------------------------------------
// Independent parsing and checksum verification of output frames.

/// Recomputes the IPv4 header checksum and, for whole TCP segments, the TCP checksum of a
/// frame that was edited by hand, so that only what the kind of frame means to test is wrong.
pub fn fix_checksums(frame: &mut [u8]) {
    if frame.len() < ETH_LEN + 20 {
        return;
    }
    let ihl = (frame[ETH_LEN] & 0x0f) as usize * 4;
    if ihl < 20 || frame.len() < ETH_LEN + ihl {
        return;
    }
    frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
    let sum = !ones_complement_sum(&[&frame[ETH_LEN..ETH_LEN + ihl]]);
    frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&sum.to_be_bytes());
    let tot = u16::from_be_bytes([frame[ETH_LEN + 2], frame[ETH_LEN + 3]]) as usize;
    if frame[ETH_LEN + 9] != 6 || tot < ihl + 20 || ETH_LEN + tot > frame.len() {
        return;
    }
    let (hdr, rest) = frame[ETH_LEN..ETH_LEN + tot].split_at_mut(ihl);
    rest[16..18].copy_from_slice(&[0, 0]);
    let len = (rest.len() as u16).to_be_bytes();
    let sum = !ones_complement_sum(&[&hdr[12..16], &hdr[16..20], &[0, 6], &len, rest]);
    rest[16..18].copy_from_slice(&sum.to_be_bytes());
}

/// RFC 1071 sum, folded, not inverted: a region holding a correct checksum sums to 0xffff.
pub fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for c in chunks {
        for &b in c.iter() {
            match odd.take() {
                Some(hi) => sum += u16::from_be_bytes([hi, b]) as u64,
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u16::from_be_bytes([hi, 0]) as u64;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Checks an IPv4 header's checksum two ways; returns the parsed header and the rest.
fn checked_ipv4<'a>(what: &str, bytes: &'a [u8], full: &[u8]) -> (Ipv4Header, &'a [u8]) {
    let (ip, rest) = Ipv4Header::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what}: bad IPv4 header: {e:?}\n{}", hex(full)));
    let expected = ip.calc_header_checksum();
    assert_eq!(
        ip.header_checksum,
        expected,
        "{what}: IPv4 header checksum {:#06x}, recomputed {expected:#06x}\n{}",
        ip.header_checksum,
        hex(full)
    );
    assert_eq!(
        ones_complement_sum(&[&bytes[..ip.header_len()]]),
        0xffff,
        "{what}: IPv4 header does not sum to 0xffff\n{}",
        hex(full)
    );
    (ip, rest)
}

/// Checks a TCP segment's checksum (pseudo-header included) two ways.
fn checked_tcp(what: &str, ip: &Ipv4Header, segment: &[u8], full: &[u8]) -> (TcpHeader, Vec<u8>) {
    let (tcp, payload) = TcpHeader::from_slice(segment)
        .unwrap_or_else(|e| panic!("{what}: bad TCP header: {e:?}\n{}", hex(full)));
    let expected = tcp.calc_checksum_ipv4(ip, payload).unwrap();
    assert_eq!(
        tcp.checksum,
        expected,
        "{what}: TCP checksum {:#06x}, recomputed {expected:#06x} (payload {} bytes)\n{}",
        tcp.checksum,
        payload.len(),
        hex(full)
    );
    let len = (segment.len() as u16).to_be_bytes();
    let pseudo = [&ip.source[..], &ip.destination[..], &[0, 6], &len[..]];
    let sum = ones_complement_sum(&[pseudo[0], pseudo[1], pseudo[2], pseudo[3], segment]);
    assert_eq!(
        sum,
        0xffff,
        "{what}: TCP segment + pseudo-header do not sum to 0xffff\n{}",
        hex(full)
    );
    (tcp, payload.to_vec())
}

/// A TCP frame the data path sent, every checksum verified.
#[derive(Clone, Debug)]
pub struct ParsedTcp {
    pub eth: Ethernet2Header,
    pub ip: Ipv4Header,
    pub tcp: TcpHeader,
    pub payload: Vec<u8>,
}

impl ParsedTcp {
    pub fn src(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip.source.into(), self.tcp.source_port)
    }

    pub fn dst(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip.destination.into(), self.tcp.destination_port)
    }

    /// The MSS option's value, if present.
    pub fn mss(&self) -> Option<u16> {
        find_mss(self.tcp.options.as_slice())
    }
}

/// The value of the MSS option in raw option bytes.
pub fn find_mss(o: &[u8]) -> Option<u16> {
    let mut i = 0;
    while i < o.len() {
        match o[i] {
            opt::EOL => return None,
            opt::NOP => i += 1,
            kind => {
                let len = *o.get(i + 1)? as usize;
                if kind == opt::KIND_MSS && len == 4 && i + 4 <= o.len() {
                    return Some(u16::from_be_bytes([o[i + 2], o[i + 3]]));
                }
                if len < 2 {
                    return None;
                }
                i += len;
            }
        }
    }
    None
}

/// Parses an Ethernet + IPv4 + TCP frame and verifies the IPv4 and TCP checksums; the
/// frame must end where the IP packet ends. Panics with the frame's bytes otherwise.
pub fn parse_tcp(frame: &[u8]) -> ParsedTcp {
    let (eth, rest) = Ethernet2Header::from_slice(frame).expect("Ethernet header");
    assert_eq!(eth.ether_type, EtherType::IPV4, "not IPv4\n{}", hex(frame));
    let (ip, _) = checked_ipv4("IPv4", rest, frame);
    assert_eq!(ip.total_len as usize, rest.len(), "IP total length vs frame\n{}", hex(frame));
    assert_eq!(ip.protocol, IpNumber::TCP, "not TCP\n{}", hex(frame));
    let segment = &rest[ip.header_len()..];
    let (tcp, payload) = checked_tcp("TCP", &ip, segment, frame);
    ParsedTcp { eth, ip, tcp, payload }
}

/// An ICMP error the data path sent, every checksum verified.
#[derive(Clone, Debug)]
pub struct ParsedIcmpError {
    pub eth: Ethernet2Header,
    pub ip: Ipv4Header,
    pub icmp_type: Icmpv4Type,
    pub inner_ip: Ipv4Header,
    /// Ports of the quoted TCP header.
    pub inner_src_port: u16,
    pub inner_dst_port: u16,
    /// The quoted TCP header, when the whole segment is quoted (its checksum then verified).
    pub inner_tcp: Option<TcpHeader>,
    /// Everything after the ICMP header.
    pub quoted: Vec<u8>,
}

impl ParsedIcmpError {
    pub fn inner_src(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.inner_ip.source.into(), self.inner_src_port)
    }

    pub fn inner_dst(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.inner_ip.destination.into(), self.inner_dst_port)
    }
}

/// Parses an ICMP error quoting an IPv4 TCP packet; verifies the outer IPv4 checksum, the
/// ICMP checksum, the quoted IPv4 header checksum and, when the whole quoted segment is
/// there, the quoted TCP checksum.
pub fn parse_icmp_error(frame: &[u8]) -> ParsedIcmpError {
    let (eth, rest) = Ethernet2Header::from_slice(frame).expect("Ethernet header");
    assert_eq!(eth.ether_type, EtherType::IPV4, "not IPv4\n{}", hex(frame));
    let (ip, _) = checked_ipv4("outer IPv4", rest, frame);
    assert_eq!(ip.total_len as usize, rest.len(), "IP total length vs frame\n{}", hex(frame));
    assert_eq!(ip.protocol, IpNumber::ICMP, "not ICMP\n{}", hex(frame));
    let icmp_bytes = &rest[ip.header_len()..];
    let icmp = Icmpv4Slice::from_slice(icmp_bytes).expect("ICMP header");
    let icmp_type = icmp.icmp_type();
    let expected = icmp_type.calc_checksum(icmp.payload());
    assert_eq!(
        icmp.checksum(),
        expected,
        "ICMP checksum {:#06x}, recomputed {expected:#06x}\n{}",
        icmp.checksum(),
        hex(frame)
    );
    assert_eq!(
        ones_complement_sum(&[icmp_bytes]),
        0xffff,
        "ICMP does not sum to 0xffff\n{}",
        hex(frame)
    );
    let quoted = icmp.payload();
    let (inner_ip, _) = checked_ipv4("quoted IPv4", quoted, frame);
    assert_eq!(inner_ip.protocol, IpNumber::TCP, "quoted packet is not TCP\n{}", hex(frame));
    let seg = &quoted[inner_ip.header_len()..];
    assert!(seg.len() >= 8, "quoted TCP shorter than 8 bytes\n{}", hex(frame));
    let inner_src_port = u16::from_be_bytes([seg[0], seg[1]]);
    let inner_dst_port = u16::from_be_bytes([seg[2], seg[3]]);
    let inner_tcp = (inner_ip.total_len as usize == quoted.len())
        .then(|| checked_tcp("quoted TCP", &inner_ip, seg, frame).0);
    ParsedIcmpError {
        eth,
        ip,
        icmp_type,
        inner_ip,
        inner_src_port,
        inner_dst_port,
        inner_tcp,
        quoted: quoted.to_vec(),
    }
}

/// Bytes as hex, 16 a line, for failure messages.
pub fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn built_frames_parse_with_correct_checksums() {
        for len in [0, 1, 2, 3, 17, 1459, 1460] {
            let t = Tcp::new(a("192.168.1.50:40000"), a("10.0.0.4:9092"), flags::ACK)
                .options(&opt::timestamps(1, 2))
                .payload_len(len);
            let p = parse_tcp(&t.frame());
            assert_eq!(p.payload.len(), len);
            assert_eq!(p.src(), t.src);
        }
        let syn = Tcp::new(a("1.2.3.4:5"), a("6.7.8.9:10"), flags::SYN).options(&[1, 2, 4, 5, 180]);
        assert_eq!(parse_tcp(&syn.frame()).mss(), Some(1460));
        let inner = syn.ip_packet();
        let e = parse_icmp_error(&icmp_frag_needed(
            "10.0.0.1".parse().unwrap(),
            "1.2.3.4".parse().unwrap(),
            1400,
            &inner,
        ));
        assert!(e.inner_tcp.is_some());
        let e = parse_icmp_error(&icmp_frag_needed(
            "10.0.0.1".parse().unwrap(),
            "1.2.3.4".parse().unwrap(),
            1400,
            &quote(&inner, 28),
        ));
        assert!(e.inner_tcp.is_none());
        assert_eq!(e.inner_dst_port, 10);
    }
}
