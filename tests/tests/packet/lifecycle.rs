//! A flow's life through the program: the SYN's two halves, the handshake and promotion,
//! data both ways, FIN, RST, expiry and the counters.

use super::common::*;

#[test]
fn syn_creates_both_conntrack_halves_and_is_translated() {
    let mut h = harness("syn");
    for (rule, &listen_port) in LISTEN_PORTS.iter().enumerate() {
        let client = sa(CLIENT_IP, 33000 + rule as u16);
        let syn = Tcp::new(client, sa(NAT_IP, listen_port), flags::SYN)
            .macs(ROUTER_MAC, NAT_MAC)
            .options(&opt::linux_syn(1460));
        let f = open(&mut h, client, rule, &syn);
        let p = parse_tcp(&h.xdp(&syn.frame()).unwrap().data); // a retransmission
        assert_eq!(p.src(), f.snat, "a retransmitted SYN keeps its SNAT port");
        assert_eq!(p.ip.time_to_live, 63);
        assert_eq!(p.eth.source, NAT_MAC);
        assert_eq!(p.eth.destination, ROUTER_MAC);

        let m = h.ct_get(Table::Embryonic, &f.orig_key()).unwrap().expect("original half");
        assert_eq!(m.peer, f.reply_key());
        assert_eq!(m.flags & CT_FLAG_REPLY, 0);
        assert_eq!(m.state, TcpState::SynSent as u8);
        assert_eq!(m.rule_id, rule as u16);
        assert_eq!(m.packets, 2);
        assert_eq!(m.bytes, 2 * 60);
        // created_ns is on the fine clock, last_seen_ns on the coarse one (up to a tick
        // behind it).
        assert!(m.created_ns > 0 && m.last_seen_ns + 10_000_000 >= m.created_ns);
        let rp = h.ct_get(Table::Embryonic, &f.reply_key()).unwrap().expect("reply half");
        assert_eq!(rp.peer, f.orig_key());
        assert_eq!(rp.flags, CT_FLAG_REPLY);
        assert_eq!(rp.rule_id, rule as u16);

        let s = h.stats(rule as u16).unwrap();
        assert_eq!(s.get(Counter::NewConns), 1);
        assert_eq!(s.get(Counter::Packets), 2);
        assert_eq!(s.get(Counter::Bytes), 120);
    }
    assert_eq!(h.ct_entries(Table::Embryonic).unwrap().len(), 6);
    assert!(h.ct_entries(Table::Established).unwrap().is_empty());
}

#[test]
fn original_half_without_its_reply_half_is_dropped_and_its_port_reused() {
    let mut h = harness("orph");
    let client = sa(CLIENT_IP, 45111);
    let syn = Tcp::new(client, sa(NAT_IP, 9092), flags::SYN)
        .macs(ROUTER_MAC, NAT_MAC)
        .options(&opt::linux_syn(1460));
    let f = open(&mut h, client, 0, &syn);
    // The LRU evicts the reply half only.
    h.ct_remove(Table::Embryonic, &f.reply_key()).unwrap();
    // The flow's next packet is not translated with a port that now looks free...
    let ack = Tcp::new(client, sa(NAT_IP, 9092), flags::ACK).payload_len(10);
    assert_passes_unchanged(&mut h, &ack.frame(), "a packet of a half-evicted flow");
    // ...and the orphaned original half is gone with it.
    assert!(h.ct_get(Table::Embryonic, &f.orig_key()).unwrap().is_none());
    // A fresh SYN of the same client tuple opens a whole flow again, on the same start port.
    let again = open(&mut h, client, 0, &syn);
    assert_eq!(again.snat, f.snat);
    assert!(h.ct_get(Table::Embryonic, &again.reply_key()).unwrap().is_some());
}

#[test]
fn handshake_reverse_nat_and_promotion() {
    let mut h = harness("hs");
    let client = sa(CLIENT_IP, 45678);
    let syn = Tcp::new(client, sa(NAT_IP, 9092), flags::SYN)
        .macs(ROUTER_MAC, NAT_MAC)
        .options(&opt::linux_syn(1460));
    let f = open(&mut h, client, 0, &syn);
    assert_eq!(f.state(&mut h), (Table::Embryonic, TcpState::SynSent));

    // SYN-ACK from the target to (snat ip, snat port): back to the client, from 10.0.0.4:9092.
    let synack = f.target_pkt(flags::SYN | flags::ACK).options(&opt::linux_syn(1400));
    let p = f.target_sends(&mut h, &synack);
    assert_eq!(p.src(), sa(NAT_IP, 9092));
    assert_eq!(p.dst(), client);
    assert_eq!(f.state(&mut h), (Table::Embryonic, TcpState::SynRecv));

    // The client's ACK completes the handshake: both halves move to CT_ESTABLISHED.
    f.client_sends(&mut h, &f.client_pkt(flags::ACK));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Established));
    assert!(h.ct_entries(Table::Embryonic).unwrap().is_empty(), "embryonic halves left behind");
    let est = h.ct_entries(Table::Established).unwrap();
    assert_eq!(est.len(), 2);
    let m = h.ct_get(Table::Established, &f.orig_key()).unwrap().unwrap();
    assert_eq!(m.peer, f.reply_key());
    // Each half counts its own direction: SYN + ACK, and the SYN-ACK.
    assert_eq!(f.packets(&mut h, Table::Established), (2, 1));
    let rp = h.ct_get(Table::Established, &f.reply_key()).unwrap().unwrap();
    assert_eq!(rp.peer, f.orig_key());
    assert!(rp.is_reply());

    let s = h.stats(0).unwrap();
    assert_eq!(s.get(Counter::NewConns), 1);
    assert_eq!(s.get(Counter::Packets), 2);
    assert_eq!(s.get(Counter::ReplyPackets), 1);
    assert_eq!(s.get(Counter::ReplyBytes), synack.ip_packet().len() as u64);
    assert_eq!(s.get(Counter::SlowPath), 0);
}

#[test]
fn data_of_every_length_both_directions_with_and_without_options() {
    let mut h = harness("data");
    let f = handshake(&mut h, sa(CLIENT_IP, 50001), 1);
    let mut tx = 0;
    let mut slow = 0;
    for with_ts in [false, true] {
        for len in 0..=1460usize {
            for from_client in [true, false] {
                let mut t = if from_client {
                    f.client_pkt(flags::ACK | flags::PSH)
                } else {
                    f.target_pkt(flags::ACK | flags::PSH)
                };
                t = t.payload(packet::payload_pattern(len, len as u8)).seq(len as u32 * 7919);
                t.ip_id = len as u16 ^ 0xbeef;
                if with_ts {
                    t = t.options(&opt::timestamps(0x0102_0304 + len as u32, 0xfffe_fdfc));
                }
                let (src, dst) =
                    if from_client { (f.snat, f.target) } else { (f.listen, f.client) };
                let r = h.xdp(&t.frame()).unwrap();
                let p = parse_tcp(&r.data);
                assert_eq!(p.payload, t.payload);
                let what = format!("len {len} ts {with_ts} from_client {from_client}");
                if t.ip_packet().len() <= MTU {
                    assert_eq!(r.action, XDP_TX, "{what}");
                    assert_frame_eq(&r.data, &forwarded(&t, src, dst).frame(), &what);
                    tx += 1;
                } else {
                    // Larger than the egress MTU: translated, then left to the kernel.
                    assert_eq!(r.action, XDP_PASS, "{what}");
                    assert_frame_eq(&r.data, &translated_only(&t, src, dst).frame(), &what);
                    slow += 1;
                }
            }
        }
    }
    assert_eq!(tx + slow, 2 * 2 * 1461);
    assert_eq!(slow, 2 * 12, "only 1449..=1460 with timestamps exceed the MTU");
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Established));
    let s = h.stats(1).unwrap();
    assert_eq!(s.get(Counter::SlowPath), slow);
    assert_eq!(s.get(Counter::Packets), 2 * 1461 + 2);
    assert_eq!(s.get(Counter::ReplyPackets), 2 * 1461 + 1);
    assert_eq!(f.packets(&mut h, Table::Established), (2 * 1461 + 2, 2 * 1461 + 1));
}

#[test]
fn fin_from_both_sides_then_time_wait() {
    let mut h = harness("fin");
    // Client closes first.
    let f = handshake(&mut h, sa(CLIENT_IP, 40100), 0);
    f.client_sends(&mut h, &f.client_pkt(flags::FIN | flags::ACK));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::FinWait));
    let m = h.ct_get(Table::Established, &f.orig_key()).unwrap().unwrap();
    assert_eq!(m.flags & (CT_FLAG_FIN_ORIG | CT_FLAG_FIN_REPLY), CT_FLAG_FIN_ORIG);
    f.target_sends(&mut h, &f.target_pkt(flags::ACK));
    assert_eq!(f.state(&mut h).1, TcpState::FinWait);
    f.target_sends(&mut h, &f.target_pkt(flags::FIN | flags::ACK));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::TimeWait));
    // The last ACK still goes through.
    f.client_sends(&mut h, &f.client_pkt(flags::ACK));
    assert_eq!(f.state(&mut h).1, TcpState::TimeWait);

    // Target closes first.
    let g = handshake(&mut h, sa(CLIENT_IP, 40101), 2);
    g.target_sends(&mut h, &g.target_pkt(flags::FIN | flags::ACK).payload_len(10));
    assert_eq!(g.state(&mut h).1, TcpState::FinWait);
    let m = h.ct_get(Table::Established, &g.orig_key()).unwrap().unwrap();
    assert_eq!(m.flags & (CT_FLAG_FIN_ORIG | CT_FLAG_FIN_REPLY), CT_FLAG_FIN_REPLY);
    g.client_sends(&mut h, &g.client_pkt(flags::FIN | flags::ACK));
    assert_eq!(g.state(&mut h).1, TcpState::TimeWait);
    g.target_sends(&mut h, &g.target_pkt(flags::ACK));

    // The first flow was untouched by the second.
    assert_eq!(f.state(&mut h).1, TcpState::TimeWait);

    // The client reuses its port during TIME_WAIT: a new connection on the same flow, with
    // its SNAT port, through a whole handshake, to ESTABLISHED again.
    let again = f.client_sends(&mut h, &f.client_pkt(flags::SYN).seq(5_000_000));
    assert_eq!(again.src(), f.snat);
    assert_eq!(f.state(&mut h).1, TcpState::SynSent);
    f.target_sends(&mut h, &f.target_pkt(flags::SYN | flags::ACK));
    f.client_sends(&mut h, &f.client_pkt(flags::ACK));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Established));
    let m = h.ct_get(Table::Established, &f.orig_key()).unwrap().unwrap();
    assert_eq!(m.flags & (CT_FLAG_FIN_ORIG | CT_FLAG_FIN_REPLY), 0, "FIN flags cleared");
}

#[test]
fn rst_closes_and_a_new_syn_reopens() {
    let mut h = harness("rst");
    let f = handshake(&mut h, sa(CLIENT_IP, 40200), 0);
    f.client_sends(&mut h, &f.client_pkt(flags::RST | flags::ACK));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Close));

    let g = handshake(&mut h, sa(CLIENT_IP, 40201), 0);
    g.target_sends(&mut h, &g.target_pkt(flags::RST));
    assert_eq!(g.state(&mut h).1, TcpState::Close);

    // RST in SYN_SENT (target refuses the connection).
    let syn =
        Tcp::new(sa(CLIENT_IP, 40202), sa(NAT_IP, 9092), flags::SYN).macs(ROUTER_MAC, NAT_MAC);
    let k = open(&mut h, sa(CLIENT_IP, 40202), 0, &syn);
    k.target_sends(&mut h, &k.target_pkt(flags::RST | flags::ACK));
    assert_eq!(k.state(&mut h), (Table::Embryonic, TcpState::Close));

    // The client reuses its port: the closed flow reopens with the same SNAT port.
    let again = f.client_pkt(flags::SYN).seq(99);
    let p = f.client_sends(&mut h, &again);
    assert_eq!(p.src(), f.snat);
    assert_eq!(f.state(&mut h).1, TcpState::SynSent);
}

#[test]
fn expired_entries_are_not_used() {
    let mut plan = default_plan();
    plan.timeouts_ns = [2, 5, 2].map(|s| s * 1_000_000_000);
    let mut h = harness_with("exp", &plan);

    // Established flow, idle past its timeout in both directions (last_seen moved back
    // through the map).
    let f = handshake(&mut h, sa(CLIENT_IP, 45000), 0);
    f.age(&mut h, Table::Established, 6_000_000_000, true, true);
    let data = f.client_pkt(flags::ACK).payload_len(10);
    assert_passes_unchanged(&mut h, &data.frame(), "client data of an expired flow");
    assert!(h.ct_get(Table::Established, &f.orig_key()).unwrap().is_none(), "expired half removed");
    assert!(h.ct_get(Table::Established, &f.reply_key()).unwrap().is_none(), "peer half removed");

    // Same, seen first from the reply direction.
    let g = handshake(&mut h, sa(CLIENT_IP, 45001), 0);
    g.age(&mut h, Table::Established, 6_000_000_000, true, true);
    let reply = g.target_pkt(flags::ACK).payload_len(10);
    assert_passes_unchanged(&mut h, &reply.frame(), "target data of an expired flow");
    assert!(h.ct_entries(Table::Established).unwrap().is_empty());

    // A flow just short of its timeout is still used.
    let k = handshake(&mut h, sa(CLIENT_IP, 45002), 0);
    k.age(&mut h, Table::Established, 4_000_000_000, true, true);
    k.client_sends(&mut h, &k.client_pkt(flags::ACK));

    // Each half stamps its own direction: one idle direction does not end a flow whose
    // other direction is live, whichever direction the next packet takes.
    let q = handshake(&mut h, sa(CLIENT_IP, 45004), 0);
    q.age(&mut h, Table::Established, 6_000_000_000, true, false);
    q.client_sends(&mut h, &q.client_pkt(flags::ACK));
    let r = handshake(&mut h, sa(CLIENT_IP, 45005), 0);
    r.age(&mut h, Table::Established, 6_000_000_000, false, true);
    r.target_sends(&mut h, &r.target_pkt(flags::ACK));
    assert_eq!(r.state(&mut h), (Table::Established, TcpState::Established));

    // Embryonic flow with a tiny SYN timeout: the SYN-ACK arrives too late.
    let mut plan = plan.clone();
    plan.timeouts_ns[0] = 1;
    h.apply(&plan).unwrap();
    let client = sa(CLIENT_IP, 45003);
    let syn = Tcp::new(client, sa(NAT_IP, 9092), flags::SYN).macs(ROUTER_MAC, NAT_MAC);
    let e = open(&mut h, client, 0, &syn);
    // Entries are stamped with the coarse clock (one tick: 1-10 ms), so wait a few ticks.
    std::thread::sleep(std::time::Duration::from_millis(25));
    let synack = e.target_pkt(flags::SYN | flags::ACK);
    assert_passes_unchanged(&mut h, &synack.frame(), "SYN-ACK of an expired embryonic flow");
    assert!(h.ct_get(Table::Embryonic, &e.reply_key()).unwrap().is_none());
    assert!(h.ct_get(Table::Embryonic, &e.orig_key()).unwrap().is_none());
}

#[test]
fn new_connection_counter() {
    let mut h = harness("conns");
    for i in 0..20u16 {
        let client = sa(Ipv4Addr::new(192, 168, 2, (i % 7) as u8 + 1), 30000 + i);
        let rule = (i % 3) as usize;
        let syn =
            Tcp::new(client, sa(NAT_IP, LISTEN_PORTS[rule]), flags::SYN).macs(ROUTER_MAC, NAT_MAC);
        open(&mut h, client, rule, &syn);
        // A retransmitted SYN is not a new connection.
        assert_eq!(h.xdp(&syn.frame()).unwrap().action, XDP_TX);
    }
    let per_rule = [7, 7, 6];
    for (rule, n) in per_rule.iter().enumerate() {
        assert_eq!(h.counter(rule as u16, Counter::NewConns).unwrap(), *n);
        assert_eq!(h.counter(rule as u16, Counter::Packets).unwrap(), 2 * n);
    }
    // 20 flows, two halves each, every SNAT port distinct per target.
    let emb = h.ct_entries(Table::Embryonic).unwrap();
    assert_eq!(emb.len(), 40);
}

/// An RST closes an established flow for netfilter's CLOSE timeout (10 s), not for the
/// whole closing timeout (2 min here): 11 s later the flow is gone at its next packet, and
/// its SNAT port with it. A refused handshake (SYN answered by RST) goes as soon.
#[test]
fn a_flow_closed_by_an_rst_is_gone_after_ten_seconds() {
    let mut h = harness("rst-close");
    for (n, established) in [(0u16, true), (1, false)] {
        let client = sa(CLIENT_IP, 43030 + n);
        let f = if established {
            handshake(&mut h, client, 0)
        } else {
            let syn = Tcp::new(client, sa(NAT_IP, 9092), flags::SYN).macs(ROUTER_MAC, NAT_MAC);
            open(&mut h, client, 0, &syn)
        };
        f.target_sends(&mut h, &f.target_pkt(flags::RST | flags::ACK));
        let (table, state) = f.state(&mut h);
        assert_eq!(state, TcpState::Close, "established: {established}");
        f.age(&mut h, table, 9_000_000_000, true, true);
        h.xdp(&f.target_pkt(flags::RST | flags::ACK).frame()).unwrap();
        assert_eq!(f.state(&mut h).1, TcpState::Close, "9 s after the RST it is still tracked");
        f.age(&mut h, table, 11_000_000_000, true, true);
        h.xdp(&f.target_pkt(flags::RST | flags::ACK).frame()).unwrap();
        assert!(
            h.ct_get(table, &f.orig_key()).unwrap().is_none()
                && h.ct_get(table, &f.reply_key()).unwrap().is_none(),
            "established: {established}: the flow outlived 10 s after its RST"
        );
    }
}

/// An RST that its own side talks past did not end the connection (spoofed, or out of the
/// receiver's window and ignored): the flow returns to established at that side's next
/// packet. Packets from the other side, which may have crossed a real RST in flight, leave
/// it closed.
#[test]
fn an_rst_its_own_side_talks_past_does_not_end_the_flow() {
    let mut h = harness("rst-ignored");
    let f = handshake(&mut h, sa(CLIENT_IP, 43040), 0);
    f.target_sends(&mut h, &f.target_pkt(flags::RST | flags::ACK));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Close));
    // The client's data crossed the RST: still closed.
    f.client_sends(&mut h, &f.client_pkt(flags::ACK | flags::PSH).payload_len(20));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Close));
    // The broker talks on: the RST was not its connection's end.
    f.target_sends(&mut h, &f.target_pkt(flags::ACK | flags::PSH).payload_len(20));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Established));
    // The same from the client's side.
    f.client_sends(&mut h, &f.client_pkt(flags::RST | flags::ACK));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Close));
    f.target_sends(&mut h, &f.target_pkt(flags::ACK).payload_len(5));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Close));
    f.client_sends(&mut h, &f.client_pkt(flags::ACK).payload_len(5));
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Established));
}
