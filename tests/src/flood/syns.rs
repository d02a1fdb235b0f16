//! The flood: the bench's sender in its SYN mode (live frames where the kernel allows them,
//! else the packet socket: `bench::rate::sender`), run in the router's namespace and
//! sending out of r_n straight into the NAT VM's NIC (the load balancer's side), paced to
//! `Options::rate` and bounded in time. The NAT VM receives on a NAPI thread of its own
//! (`Bed::new`), so its work does not slow the sender: every contender is offered the same
//! rate.

use super::{
    bed::{Bed, SPOOFED_NET},
    Options,
};
use crate::{
    bench::rate::{
        progs::{FloodSpec, FRAME_LEN},
        sender::{Sender, SenderKind},
    },
    netns::Netns,
    packet::{flags, opt, Tcp},
    topology::{LISTEN_PORTS, NATVM},
};
use anyhow::{ensure, Context, Result};
use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

/// The flood gives up after this long, sent or not (the test then fails on the count).
const LIMIT: Duration = Duration::from_secs(300);

/// Frames per paced send of the packet socket: one `sendmmsg`.
const PACKET_SOCKET_CHUNK: u64 = crate::bench::rate::packet_socket::BATCH as u64;

pub struct Sent {
    pub frames: u64,
    /// Refused by the router's end because the NAT VM's receive ring was full.
    pub refused: u64,
    pub sender: SenderKind,
}

/// Sends `opts.syns` spoofed SYNs at about `opts.rate` per second.
pub fn flood(bed: &Bed, opts: &Options) -> Result<Sent> {
    let router = &bed.topo.router;
    let frame = template(mac(router, "r_n")?, mac(&bed.topo.natvm, "n0")?)?;
    let spec = FloodSpec { src: SPOOFED_NET, ports: LISTEN_PORTS.to_vec() };
    let ifindex = router.ifindex("r_n")?;
    let (syns, rate) = (opts.syns, opts.rate);
    let kind = SenderKind::chosen()?;
    let chunk = match kind {
        // Each live-frames run sets up its page pool (tens of ms): chunks of ~50 ms of frames.
        SenderKind::LiveFrames => (rate / 20).clamp(1024, 65_536),
        // One sendmmsg at a time: a burst longer than the NAT VM's veth ring (256 frames)
        // would be refused there while its NAPI thread catches up, whatever the contender.
        SenderKind::PacketSocket => PACKET_SOCKET_CHUNK,
    };
    let (sent, refused) = router.enter(move || -> Result<(u64, u64)> {
        let mut gen = Sender::flood(kind, ifindex, frame, &spec)?;
        let t0 = Instant::now();
        let (mut sent, mut refused) = (0u64, 0u64);
        while sent < syns && t0.elapsed() < LIMIT {
            let s = gen.send(chunk.min(syns - sent))?;
            sent += s.offered;
            refused += s.refused;
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        Ok((sent, refused))
    })??;
    ensure!(sent == opts.syns, "the flood sent {sent} of {} SYNs within {LIMIT:?}", opts.syns);
    Ok(Sent { frames: sent, refused, sender: kind })
}

/// The SYN every flood frame starts from: router -> NAT VM, MSS and SACK-permitted options as
/// a client's, padded to the generator's frame length.
pub fn template(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Result<[u8; FRAME_LEN]> {
    let (net, _) = SPOOFED_NET;
    let mut options = opt::mss(1460).to_vec();
    options.extend([opt::NOP, opt::NOP]);
    options.extend(opt::sack_permitted());
    let syn = Tcp::new(
        SocketAddrV4::new(net, 1024),
        SocketAddrV4::new(NATVM, LISTEN_PORTS[0]),
        flags::SYN,
    )
    .macs(src_mac, dst_mac)
    .options(&options);
    let mut frame = syn.frame();
    ensure!(frame.len() <= FRAME_LEN, "the SYN is {} bytes", frame.len());
    // Ethernet padding after the IP packet (its total length stays that of the SYN).
    frame.resize(FRAME_LEN, 0);
    Ok(frame.try_into().expect("FRAME_LEN bytes"))
}

/// The MAC address of `iface` in `ns`.
fn mac(ns: &Netns, iface: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let text = v[0]["address"].as_str().with_context(|| format!("no address for {iface}"))?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {text}"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("MAC {text}"))
}
