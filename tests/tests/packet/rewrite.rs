//! Rewrites beyond the addresses: MSS clamping, ICMP errors, fragments.

use super::common::*;

#[test]
fn mss_clamp() {
    let mut plan = default_plan();
    plan.mss_clamp = 1360;
    let mut h = harness_with("mss", &plan);
    let mut port = 43000;
    let mut clamped = 0;
    // (options sent, options expected after the clamp)
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (opt::linux_syn(1460), opt::linux_syn(1360)),
        (opt::linux_syn(1200), opt::linux_syn(1200)),
        (opt::linux_syn(1360), opt::linux_syn(1360)),
        (opt::linux_syn(1361), opt::linux_syn(1360)),
        (opt::mss(9000).to_vec(), opt::mss(1360).to_vec()),
        // Odd offset: after a single NOP.
        (
            [&[opt::NOP][..], &opt::mss(1460), &[opt::NOP, opt::NOP, opt::NOP]].concat(),
            [&[opt::NOP][..], &opt::mss(1360), &[opt::NOP, opt::NOP, opt::NOP]].concat(),
        ),
        // Odd offset after three NOPs, then timestamps.
        (
            [&[opt::NOP; 3][..], &opt::mss(65535), &[opt::NOP], &opt::timestamps(5, 0)].concat(),
            [&[opt::NOP; 3][..], &opt::mss(1360), &[opt::NOP], &opt::timestamps(5, 0)].concat(),
        ),
        // MSS after timestamps and window scale.
        (
            [&opt::timestamps(9, 0)[..], &opt::window_scale(7), &opt::mss(1460)].concat(),
            [&opt::timestamps(9, 0)[..], &opt::window_scale(7), &opt::mss(1360)].concat(),
        ),
        (vec![], vec![]),
        (opt::timestamps(1, 2).to_vec(), opt::timestamps(1, 2).to_vec()),
    ];
    for (sent, want) in &cases {
        port += 1;
        let client = sa(CLIENT_IP, port);
        let syn =
            Tcp::new(client, sa(NAT_IP, 9092), flags::SYN).macs(ROUTER_MAC, NAT_MAC).options(sent);
        let r = h.xdp(&syn.frame()).unwrap();
        assert_eq!(r.action, XDP_TX);
        let p = parse_tcp(&r.data);
        let expect = forwarded(&syn.clone().options(want), p.src(), sa(TARGETS[0], 9092));
        assert_frame_eq(&r.data, &expect.frame(), &format!("SYN options {sent:?}"));
        if sent != want {
            clamped += 1;
            assert_eq!(p.mss(), Some(1360));
        }
        assert_eq!(h.counter(0, Counter::MssClamped).unwrap(), clamped, "options {sent:?}");

        // The SYN-ACK is clamped too.
        let flow = Flow {
            client,
            listen: sa(NAT_IP, 9092),
            target: sa(TARGETS[0], 9092),
            snat: p.src(),
            rule_id: 0,
        };
        let synack = flow.target_pkt(flags::SYN | flags::ACK).options(sent);
        let r = h.xdp(&synack.frame()).unwrap();
        assert_eq!(r.action, XDP_TX);
        parse_tcp(&r.data);
        let expect = forwarded(&synack.clone().options(want), flow.listen, client);
        assert_frame_eq(&r.data, &expect.frame(), &format!("SYN-ACK options {sent:?}"));
        if sent != want {
            clamped += 1;
        }
        assert_eq!(h.counter(0, Counter::MssClamped).unwrap(), clamped);

        // A non-SYN segment carrying an MSS-looking option is left alone.
        let ack = flow.client_pkt(flags::ACK).options(sent).payload_len(33);
        flow.client_sends(&mut h, &ack);
    }
}

/// An option whose length runs past the header ends the walk: the offset must not wrap
/// back into the TCP header. Before the fix, 20 + 44 masked to 0, and a SYN from port 516
/// (0x0204: kind MSS, length 4) had its destination port rewritten as an MSS.
#[test]
fn an_overlong_option_ends_the_mss_walk() {
    let mut plan = default_plan();
    plan.mss_clamp = 1360;
    let mut h = harness_with("mssend", &plan);
    // Timestamps claiming 44 bytes, in a header of 40 option bytes.
    let mut options = vec![8u8, 44];
    options.resize(40, opt::NOP);
    let client = sa(CLIENT_IP, 0x0204);
    let syn =
        Tcp::new(client, sa(NAT_IP, 9092), flags::SYN).macs(ROUTER_MAC, NAT_MAC).options(&options);
    let r = h.xdp(&syn.frame()).unwrap();
    assert_eq!(r.action, XDP_TX);
    let p = parse_tcp(&r.data);
    let expect = forwarded(&syn, p.src(), sa(TARGETS[0], 9092));
    assert_frame_eq(&r.data, &expect.frame(), "SYN with an overlong option");
    assert_eq!(h.counter(0, Counter::MssClamped).unwrap(), 0, "nothing was clamped");
}

#[test]
fn icmp_errors_are_translated_both_ways() {
    let mut h = harness("icmp");
    let f = handshake(&mut h, sa(CLIENT_IP, 44000), 0);
    // A big client segment, forwarded by the NAT, hits a smaller MTU at the router.
    let data = f.client_pkt(flags::ACK | flags::PSH).payload_len(100);
    f.client_sends(&mut h, &data);
    let seen_by_router = forwarded(&data, f.snat, f.target).ip_packet();
    let as_client_sent = data.clone().ttl(data.ttl - 1).ip_packet();
    let mut translated = 0;
    // Whole packet (quoted TCP checksum verifiable), IP + 8 bytes (RFC 792), up to the
    // TCP checksum, and IP + 20 bytes.
    for n in [seen_by_router.len(), 28, 36, 38, 40] {
        let quoted = packet::quote(&seen_by_router, n);
        let icmp = packet::icmp_frag_needed(ROUTER_IP, NAT_IP, 1400, &quoted);
        let r = h.xdp(&icmp).unwrap();
        assert_eq!(r.action, XDP_TX, "ICMP from the router quoting {n} bytes");
        let p = parse_icmp_error(&r.data);
        assert_eq!(p.ip.source, NAT_IP.octets(), "outer source: the listen address");
        assert_eq!(p.ip.destination, CLIENT_IP.octets(), "outer destination: the client");
        assert_eq!(p.inner_src(), f.client);
        assert_eq!(p.inner_dst(), f.listen);
        assert_eq!(p.inner_tcp.is_some(), n == seen_by_router.len());
        let want_quoted = packet::quote(&as_client_sent, n);
        let want = packet::with_l2_ttl(
            &packet::icmp_frag_needed(NAT_IP, CLIENT_IP, 1400, &want_quoted),
            NAT_MAC,
            ROUTER_MAC,
            63,
        );
        assert_frame_eq(&r.data, &want, &format!("frag-needed quoting {n} bytes"));
        translated += 1;
    }

    // From the client side: an error about a packet the NAT sent to the client
    // (10.0.0.4:9092 -> client), e.g. from a VPN gateway on the client's path, addressed to
    // 10.0.0.4: it goes to the target, about target -> snat.
    let reply = f.target_pkt(flags::ACK | flags::PSH).payload_len(300);
    f.target_sends(&mut h, &reply);
    let seen_by_client_side = forwarded(&reply, f.listen, f.client).ip_packet();
    let as_target_sent = reply.clone().ttl(reply.ttl - 1).ip_packet();
    let gw = Ipv4Addr::new(192, 168, 1, 1);
    for n in [seen_by_client_side.len(), 28] {
        let quoted = packet::quote(&seen_by_client_side, n);
        let icmp = packet::icmp_frag_needed(gw, NAT_IP, 1280, &quoted);
        let r = h.xdp(&icmp).unwrap();
        assert_eq!(r.action, XDP_TX);
        let p = parse_icmp_error(&r.data);
        assert_eq!(p.ip.source, NAT_IP.octets(), "outer source: the SNAT address");
        assert_eq!(p.ip.destination, TARGETS[0].octets(), "outer destination: the target");
        assert_eq!(p.inner_src(), f.target);
        assert_eq!(p.inner_dst(), f.snat);
        let want = packet::with_l2_ttl(
            &packet::icmp_frag_needed(NAT_IP, TARGETS[0], 1280, &packet::quote(&as_target_sent, n)),
            NAT_MAC,
            ROUTER_MAC,
            63,
        );
        assert_frame_eq(&r.data, &want, &format!("client-side frag-needed quoting {n} bytes"));
        translated += 1;
    }

    // Host unreachable (another code) is translated the same way.
    let icmp =
        packet::icmp_dest_unreachable(ROUTER_IP, NAT_IP, 1, &packet::quote(&seen_by_router, 28));
    let r = h.xdp(&icmp).unwrap();
    assert_eq!(r.action, XDP_TX);
    let p = parse_icmp_error(&r.data);
    assert_eq!(p.inner_src(), f.client);
    translated += 1;

    assert_eq!(h.counter(0, Counter::IcmpTranslated).unwrap(), translated);
    // ICMP does not change the flow's state.
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Established));
}

/// A datagram of a tracked flow that arrives in fragments (a broker sending with DF off
/// through a hop with a smaller MTU): the first fragment goes the flow's way, and the later
/// ones, which carry no ports, follow it with the same addresses. The translated fragments,
/// reassembled, make a segment whose TCP checksum etherparse accepts. Before, every fragment
/// went to the NAT VM's stack untranslated, which reset the connection.
#[test]
fn fragments_of_a_tracked_flow_are_translated_like_their_first() {
    let mut h = harness("frag");
    let f = handshake(&mut h, sa(CLIENT_IP, 45100), 1);
    for (reply, seg) in [
        (true, f.target_pkt(flags::ACK | flags::PSH).payload_len(1000)),
        (false, f.client_pkt(flags::ACK | flags::PSH).payload_len(700)),
    ] {
        let (from, to) = if reply { (f.listen, f.client) } else { (f.snat, f.target) };
        let whole = seg.frame();
        let seg_len = whole.len() - 14 - 20;
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < seg_len {
            let len = (seg_len - at).min(296);
            let r = h.xdp(&seg.fragment((at / 8) as u16, len)).unwrap();
            assert_eq!(r.action, XDP_TX, "reply {reply}: fragment at {at}");
            assert_eq!(&r.data[0..6], &ROUTER_MAC, "next hop MAC");
            let ip = etherparse::Ipv4HeaderSlice::from_slice(&r.data[14..]).unwrap();
            assert_eq!(ip.source_addr(), *from.ip(), "reply {reply}: source at {at}");
            assert_eq!(ip.destination_addr(), *to.ip(), "reply {reply}: destination at {at}");
            let header = ip.to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum(), "IP checksum");
            pieces.extend_from_slice(&r.data[34..]);
            at += len;
        }
        // The segment the receiver reassembles: ports translated, checksum right.
        let tcp = etherparse::TcpHeaderSlice::from_slice(&pieces).unwrap();
        assert_eq!((tcp.source_port(), tcp.destination_port()), (from.port(), to.port()));
        let sum = tcp
            .to_header()
            .calc_checksum_ipv4_raw(
                from.ip().octets(),
                to.ip().octets(),
                &pieces[tcp.slice().len()..],
            )
            .unwrap();
        assert_eq!(tcp.checksum(), sum, "reply {reply}: the reassembled segment's TCP checksum");
    }
    assert_eq!(h.counter(1, Counter::SlowPath).unwrap(), 0);
}
