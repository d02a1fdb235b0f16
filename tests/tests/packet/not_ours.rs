//! What is not the forwarder's passes untouched: unknown flows, other traffic, sources
//! outside `allowed_sources`, invalid lengths, TTL 1; and what an upgrade's window drops.

use super::common::*;

#[test]
fn unknown_flows_pass_unchanged() {
    let mut h = harness("unk");
    let c = sa(CLIENT_IP, 41000);
    for f in [
        flags::ACK,
        flags::ACK | flags::PSH,
        flags::FIN | flags::ACK,
        flags::RST,
        flags::SYN | flags::ACK,
    ] {
        let t = Tcp::new(c, sa(NAT_IP, 9092), f).payload_len(20);
        assert_passes_unchanged(&mut h, &t.frame(), &format!("non-SYN flags {f:#x} to 9092"));
        // A "reply" to an SNAT port that carries no flow.
        let t = Tcp::new(sa(TARGETS[0], 9092), sa(NAT_IP, 45000), f);
        assert_passes_unchanged(
            &mut h,
            &t.frame(),
            &format!("flags {f:#x} to an unused SNAT port"),
        );
    }
    assert!(h.ct_entries(Table::Embryonic).unwrap().is_empty());
    assert!(h.ct_entries(Table::Established).unwrap().is_empty());
    assert!(h.stats(0).unwrap().counters.iter().all(|&c| c == 0));
}

/// While an upgrade copies the previous layout's flows (`CONFIG_FLAG_MIGRATING`), a packet
/// no flow claims may belong to one not copied yet: dropped (TCP sends it again), never
/// passed to the kernel, which would reset the connection. A SYN opens nothing. Flows
/// already copied forward as ever, and other traffic still passes.
#[test]
fn during_an_upgrade_unclaimed_packets_are_dropped_and_copied_flows_forward() {
    let mut h = harness("mig");
    let f = handshake(&mut h, sa(CLIENT_IP, 41500), 0);
    let est = h.ct_get(Table::Established, &f.orig_key()).unwrap().expect("established");
    assert!(est.established_ns >= est.created_ns && est.established_ns > 0, "{est:?}");
    let set_flags = |h: &mut Harness, flags: u32| {
        let config = &mut h.dp.maps_mut().config;
        let mut c = config.get(&0, 0).unwrap();
        c.flags = flags;
        config.set(0, c, 0).unwrap();
    };
    set_flags(&mut h, CONFIG_FLAG_MIGRATING);
    let c = sa(CLIENT_IP, 41501);
    for fl in [flags::ACK | flags::PSH, flags::SYN, flags::FIN | flags::ACK, flags::RST] {
        let t = Tcp::new(c, sa(NAT_IP, 9092), fl).macs(ROUTER_MAC, NAT_MAC).payload_len(20);
        assert_eq!(h.xdp(&t.frame()).unwrap().action, XDP_DROP, "flags {fl:#x} to a rule port");
        let reply = Tcp::new(sa(TARGETS[0], 9092), sa(NAT_IP, 45000), fl).payload_len(20);
        assert_eq!(h.xdp(&reply.frame()).unwrap().action, XDP_DROP, "flags {fl:#x} to a SNAT port");
    }
    // Not ours: a port outside the rules and the SNAT range, another address.
    let other = Tcp::new(c, sa(NAT_IP, 22), flags::SYN);
    assert_passes_unchanged(&mut h, &other.frame(), "SSH to the NAT VM");
    let below = Tcp::new(sa(TARGETS[0], 9092), sa(NAT_IP, SNAT_PORTS.0 - 1), flags::ACK);
    assert_passes_unchanged(&mut h, &below.frame(), "a port below the SNAT range");
    assert_eq!(h.ct_entries(Table::Embryonic).unwrap().len(), 0, "a SYN opened a flow");
    // The copied flow is untouched by the flag.
    f.client_sends(&mut h, &f.client_pkt(flags::ACK | flags::PSH).payload_len(100));
    f.target_sends(&mut h, &f.target_pkt(flags::ACK | flags::PSH).payload_len(100));

    set_flags(&mut h, 0);
    let t = Tcp::new(c, sa(NAT_IP, 9092), flags::ACK).payload_len(20);
    assert_passes_unchanged(&mut h, &t.frame(), "after the upgrade, an unknown flow's packet");
}

#[test]
fn traffic_that_is_not_ours_passes_unchanged() {
    let mut h = harness("other");
    let c = sa(CLIENT_IP, 41001);
    let syn =
        |dst: SocketAddrV4| Tcp::new(c, dst, flags::SYN).options(&opt::linux_syn(1460)).frame();
    assert_passes_unchanged(&mut h, &syn(sa(NAT_IP, 22)), "SSH");
    assert_passes_unchanged(&mut h, &syn(sa(NAT_IP, 8080)), "health probe port");
    assert_passes_unchanged(
        &mut h,
        &syn(sa(Ipv4Addr::new(10, 0, 0, 99), 9092)),
        "not a listen address",
    );
    assert_passes_unchanged(
        &mut h,
        &Tcp::new(c, sa(NAT_IP, 22), flags::ACK).payload_len(100).frame(),
        "SSH data",
    );

    let v6 = |s: &str| -> SocketAddrV6 { s.parse().unwrap() };
    assert_passes_unchanged(
        &mut h,
        &packet::ipv6_tcp(v6("[fd00::50]:41002"), v6("[fd00::4]:9092"), flags::SYN, &[]),
        "IPv6 SYN",
    );

    // Later fragments (offset != 0, one with MF, the last without) of a datagram whose first
    // fragment never came, and the first fragment of an unknown flow's data packet.
    let big = Tcp::new(c, sa(NAT_IP, 9092), flags::SYN).payload_len(200);
    assert_passes_unchanged(&mut h, &big.fragment(8, 64), "middle fragment (MF, offset 8)");
    assert_passes_unchanged(&mut h, &big.fragment(16, 512), "last fragment (offset 16)");
    let ack = Tcp::new(c, sa(NAT_IP, 9092), flags::ACK).payload_len(100);
    assert_passes_unchanged(&mut h, &ack.fragment(0, 48), "first fragment of a data packet");

    assert_passes_unchanged(&mut h, &packet::udp(c, sa(NAT_IP, 9092), b"hello"), "UDP to 9092");
    assert_passes_unchanged(
        &mut h,
        &packet::icmp_echo(CLIENT_IP, NAT_IP, 7, 1, &packet::payload_pattern(56, 0)),
        "ICMP echo",
    );
    // An ICMP error about a flow nobody tracks.
    let quoted = Tcp::new(sa(NAT_IP, 45000), sa(TARGETS[0], 9092), flags::ACK).ip_packet();
    assert_passes_unchanged(
        &mut h,
        &packet::icmp_frag_needed(ROUTER_IP, NAT_IP, 1400, &quoted),
        "ICMP error about an unknown flow",
    );

    assert!(h.ct_entries(Table::Embryonic).unwrap().is_empty());
    assert!(h.ct_entries(Table::Established).unwrap().is_empty());
    for rule in 0..3 {
        assert!(h.stats(rule).unwrap().counters.iter().all(|&c| c == 0), "rule {rule} counted");
    }
}

#[test]
fn source_outside_allowed_sources_is_passed_and_counted() {
    let mut plan = default_plan();
    plan.allowed_sources = Some(vec!["192.168.1.0/24".parse().unwrap()]);
    let mut h = harness_with("allow", &plan);
    let stranger = sa(Ipv4Addr::new(172, 16, 5, 5), 41010);
    let syn = Tcp::new(stranger, sa(NAT_IP, 9093), flags::SYN).options(&opt::linux_syn(1460));
    assert_passes_unchanged(&mut h, &syn.frame(), "SYN from outside allowed_sources");
    assert_passes_unchanged(&mut h, &syn.frame(), "again");
    assert_eq!(h.counter(1, Counter::NotAllowed).unwrap(), 2);
    assert_eq!(h.counter(1, Counter::NewConns).unwrap(), 0);
    assert!(h.ct_entries(Table::Embryonic).unwrap().is_empty());

    // Inside the prefix: served.
    let f = handshake(&mut h, sa(Ipv4Addr::new(192, 168, 1, 77), 41011), 1);
    assert_eq!(h.counter(1, Counter::NewConns).unwrap(), 1);
    assert_eq!(h.counter(1, Counter::NotAllowed).unwrap(), 2);
    f.client_sends(&mut h, &f.client_pkt(flags::ACK).payload_len(5));
}

#[test]
fn ttl_is_decremented_and_ttl_1_goes_to_the_kernel() {
    let mut h = harness("ttl");
    let f = handshake(&mut h, sa(CLIENT_IP, 46000), 0);
    for ttl in [255, 64, 2] {
        let p = f.client_sends(&mut h, &f.client_pkt(flags::ACK).ttl(ttl).payload_len(1));
        assert_eq!(p.ip.time_to_live, ttl - 1);
        let p = f.target_sends(&mut h, &f.target_pkt(flags::ACK).ttl(ttl).payload_len(2));
        assert_eq!(p.ip.time_to_live, ttl - 1);
    }
    // TTL 1: translated, but the kernel must send the time-exceeded error.
    let t = f.client_pkt(flags::ACK).ttl(1).payload_len(3);
    let r = h.xdp(&t.frame()).unwrap();
    assert_eq!(r.action, XDP_PASS);
    parse_tcp(&r.data);
    assert_frame_eq(&r.data, &translated_only(&t, f.snat, f.target).frame(), "TTL 1");
    assert_eq!(h.counter(0, Counter::SlowPath).unwrap(), 1);
}

/// Invalid packets to a rule's port are not ours: a TCP data offset past the segment's end,
/// an IP total length past the frame or short of the IP header. Each goes to the kernel
/// byte for byte (which drops it, as netfilter does), with no flow, port or counter taken,
/// in XDP and TC alike.
#[test]
fn invalid_lengths_to_a_rule_port_pass_untouched_and_untracked() {
    let mut h = harness("inval");
    let client = sa(CLIENT_IP, 48000);
    let syn = Tcp::new(client, sa(NAT_IP, 9092), flags::SYN).macs(ROUTER_MAC, NAT_MAC).frame();
    const IP: usize = 14;
    const TCP: usize = IP + 20;
    let patched = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = syn.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Data offset 15 (60 bytes) in a 20-byte TCP header: what netfilter calls invalid.
        (
            "data offset 15 in a 20-byte segment",
            patched(&|v| v[TCP + 12] = 0xf0 | (v[TCP + 12] & 0x0f)),
        ),
        (
            "data offset 6 with no option bytes",
            patched(&|v| v[TCP + 12] = 0x60 | (v[TCP + 12] & 0x0f)),
        ),
        // IP total length beyond the frame, and short of the IP header.
        (
            "IP total length past the frame",
            patched(&|v| v[IP + 2..IP + 4].copy_from_slice(&1000u16.to_be_bytes())),
        ),
        (
            "IP total length below the IP header",
            patched(&|v| v[IP + 2..IP + 4].copy_from_slice(&16u16.to_be_bytes())),
        ),
        (
            "IP total length cutting the TCP header",
            patched(&|v| v[IP + 2..IP + 4].copy_from_slice(&30u16.to_be_bytes())),
        ),
    ];
    for (what, frame) in &cases {
        assert_passes_unchanged(&mut h, frame, what);
        let r = h.tc(frame).unwrap();
        assert_eq!(r.action, TC_ACT_OK, "{what}: TC action");
        assert_frame_eq(&r.data, frame, &format!("{what} (TC)"));
    }
    assert!(h.ct_entries(Table::Embryonic).unwrap().is_empty(), "nothing tracked");
    assert!(h.ct_entries(Table::Established).unwrap().is_empty(), "nothing tracked");
    let s = h.stats(0).unwrap();
    assert!(s.counters.iter().all(|&c| c == 0), "no counter moved: {:?}", s.counters);
    // The same SYN, whole, is ours.
    assert_eq!(h.xdp(&syn).unwrap().action, XDP_TX);
}
