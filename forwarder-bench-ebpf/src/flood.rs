//! The generator's SYN flood mode (`bench_flood`): each frame is the template SYN with a
//! pseudo-random source address inside `Flood::src_net`/`src_mask`, a random source port and
//! sequence number, and the destination port cycling over `Flood::ports`. Both checksums
//! are updated incrementally from the template's (RFC 1624), so every frame is valid.

use crate::{
    csum::Csum,
    maps::{next_frame, Flood, FLOOD},
    parse::{ptr_at, ETH_LEN},
};
use aya_ebpf::{helpers::bpf_get_prandom_u32, programs::XdpContext};
use network_types::{ip::Ipv4Hdr, tcp::TcpHdr};

/// Source ports are drawn from 1024..=65535.
const SPORT_MIN: u32 = 1024;

/// Rewrites the restored template into this run's SYN; None if the frame is not the
/// template's (too short) or the flood is not configured.
#[inline(always)]
pub fn randomize(ctx: &XdpContext) -> Option<()> {
    let cfg = FLOOD.get(0)?;
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
    let tcp = ptr_at::<TcpHdr>(ctx, ETH_LEN + Ipv4Hdr::LEN)?;
    // SAFETY: both bounds checked by ptr_at; the frame outlives the program run.
    let (ip, tcp) = unsafe { (&mut *ip, &mut *tcp) };
    let (src, sport, dport, seq) = pick(cfg)?;

    let mut l3 = Csum::from_check(ip.check);
    l3.replace4(ip.src_addr, src);
    ip.check = l3.check();

    let mut l4 = Csum::from_check(tcp.check);
    l4.replace4(ip.src_addr, src);
    l4.replace2(tcp.source, sport);
    l4.replace2(tcp.dest, dport);
    l4.replace4(tcp.seq, seq);
    tcp.check = l4.check();

    ip.src_addr = src;
    tcp.source = sport;
    tcp.dest = dport;
    tcp.seq = seq;
    Some(())
}

/// Source address, source port, destination port and sequence number of the next SYN, as
/// their bytes sit in the headers.
#[inline(always)]
fn pick(cfg: &Flood) -> Option<([u8; 4], [u8; 2], [u8; 2], [u8; 4])> {
    // SAFETY: helper calls without arguments.
    let (a, b) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    let src = (cfg.src_net | (a & cfg.src_mask)).to_ne_bytes();
    let sport = (SPORT_MIN + (b >> 16) % (65536 - SPORT_MIN)) as u16;
    // No clamp of `nports` to MAX_FLOOD_PORTS first: the compiler would then know the index
    // is in bounds and drop the check the verifier needs to see.
    let i = (next_frame() % cfg.nports.max(1) as u64) as usize;
    let dport = *cfg.ports.get(i)?;
    let seq = b.rotate_left(16) ^ a;
    Some((src, sport.to_be_bytes(), dport.to_be_bytes(), seq.to_ne_bytes()))
}
