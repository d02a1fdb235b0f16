//! A SYN flood through the NAT VM (issue 11, "Prove it" 1): spoofed SYNs from a /16 to every
//! listen port while live streams run and a client keeps opening new connections, first
//! against the forwarder in `xdp` mode, then against iptables as `ip_fwd.sh` writes it in
//! the same bed (see tests/src/flood). `cargo xtask test` sends 100k SYNs;
//! `cargo xtask stress` sends FWT_FLOOD_SYNS (a million by default there).
//!
//! Asserted for the forwarder: no stream breaks, new connections keep succeeding during the
//! flood, every flood SYN is counted (a new flow or a drop by reason) and the table fill that
//! status and metrics report stays within capacity. For iptables only that it was set up
//! and flooded; its figures are printed beside the forwarder's.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use forwarder_tests::{
    bench::rate::{
        frames::Frames,
        progs::{FloodSpec, Generator},
    },
    flood::{self, report, syns, Contender},
    require_root,
};
use std::{collections::BTreeSet, net::Ipv4Addr};

/// New connections during the flood that must succeed, at least.
const MIN_SUCCESS: f64 = 0.90;

fn options() -> flood::Options {
    flood::Options::from_env(flood::Options {
        syns: 100_000,
        rate: 50_000,
        max_flows: 65_536,
        streams_per_port: 2,
    })
    .expect("FWT_FLOOD_* settings")
}

#[test]
fn a_syn_flood_breaks_no_stream_and_new_connections_still_succeed() {
    require_root();
    let opts = options();
    let fwd = flood::run("sff", Contender::ForwarderXdp, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", fwd.details());
    let ipt = flood::run("sfi", Contender::Iptables, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", ipt.details());
    println!("{}", report::summary(&fwd, &ipt));

    assert_eq!(fwd.syns_sent, opts.syns);
    assert_eq!(fwd.streams_broken, 0, "streams broke during the flood:\n{}", fwd.details());
    let during = &fwd.legit.during;
    assert!(during.attempts > 0, "no connection was tried during the flood");
    assert!(
        during.ratio() >= MIN_SUCCESS,
        "{} of {} new connections during the flood succeeded:\n{}",
        during.ok,
        during.attempts,
        fwd.details()
    );
    // Every flood SYN the forwarder saw is a new flow or a drop counted by its reason. The
    // ones the router's end refused while the NAT VM's ring was full never reached it.
    let c = |k: &str| fwd.counters.get(k).copied().unwrap_or(0);
    let seen = c("new_conns") + c("drop_no_snat_port") + c("drop_table_full") + c("not_allowed");
    let reached = opts.syns - fwd.syns_refused;
    assert!(
        seen >= reached / 2,
        "the forwarder counted {seen} of the {reached} SYNs that reached it ({} sent)",
        opts.syns
    );
    assert!(fwd.samples.taken >= 2, "the table fill was sampled {} times", fwd.samples.taken);
    assert!(fwd.samples.over.is_empty(), "over capacity: {:?}", fwd.samples.over);
    // Idle established flows expire on time, flood or not.
    let latest = fwd.idle_expiry.latest();
    assert!(
        latest.is_some_and(|l| l <= flood::idle::ON_TIME.as_secs_f64()),
        "{} (on time: within {:?})",
        fwd.idle_expiry.text(),
        flood::idle::ON_TIME
    );

    // iptables was there and was flooded: its conntrack filled with the spoofed flows.
    assert_eq!(ipt.syns_sent, opts.syns);
    assert!(
        ipt.samples.conntrack_max_count >= opts.syns.min(ipt.samples.conntrack_max) / 10,
        "iptables' conntrack saw at most {} entries",
        ipt.samples.conntrack_max_count
    );
}

/// Both senders' SYN modes make valid, varied SYNs: checksums right (etherparse), sources
/// inside the network, every port used. The live-frames generator's frames come from plain
/// test runs of its program (which every kernel allows), the packet socket's from the frames
/// it would send.
#[test]
fn flood_frames_are_valid_syns_from_the_spoofed_network() -> anyhow::Result<()> {
    require_root();
    let net = Ipv4Addr::new(10, 2, 0, 0);
    let spec = FloodSpec { src: (net, 16), ports: vec![9092, 9093, 9094] };
    let frame = syns::template([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])?;
    let gen = Generator::flood(1, frame, &spec)?;
    let from_program: Vec<Vec<u8>> = (0..3000)
        .map(|_| {
            let (action, out) = gen.one()?;
            anyhow::ensure!(action == 3, "XDP_TX, not {action}");
            Ok(out)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut socket = Frames::Flood(forwarder_tests::bench::rate::frames::Flood::new(&frame, &spec));
    let mut scratch = Vec::new();
    let from_socket: Vec<Vec<u8>> =
        socket.next(3000, &mut scratch).into_iter().map(<[u8]>::to_vec).collect();
    for (who, frames) in [("live-frames generator", from_program), ("packet socket", from_socket)] {
        check_syns(who, &frames, net, &spec)?;
    }
    Ok(())
}

fn check_syns(
    who: &str,
    frames: &[Vec<u8>],
    net: Ipv4Addr,
    spec: &FloodSpec,
) -> anyhow::Result<()> {
    let (mut sources, mut ports, mut dports) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for out in frames {
        assert_eq!(out.len(), 64, "{who}: frame length");
        let p = SlicedPacket::from_ethernet(out)?;
        let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("{who}: not IPv4") };
        let Some(TransportSlice::Tcp(tcp)) = p.transport else { panic!("{who}: not TCP") };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "{who}: IP checksum");
        let tcp_h = tcp.to_header();
        assert_eq!(
            tcp_h.checksum,
            tcp_h.calc_checksum_ipv4(&h, tcp.payload())?,
            "{who}: TCP checksum"
        );
        assert!(tcp_h.syn && !tcp_h.ack && !tcp_h.rst && !tcp_h.fin, "{who}: flags");
        let src = Ipv4Addr::from(h.source);
        assert_eq!(u32::from(src) >> 16, u32::from(net) >> 16, "{who}: source {src}");
        sources.insert(src);
        ports.insert(tcp_h.source_port);
        dports.insert(tcp_h.destination_port);
    }
    assert!(
        sources.len() > 2900 && ports.len() > 2900,
        "{who}: {} sources, {} ports",
        sources.len(),
        ports.len()
    );
    assert_eq!(dports, spec.ports.iter().copied().collect(), "{who}: destination ports");
    Ok(())
}
