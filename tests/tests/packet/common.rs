//! What every packet test shares: the harness, the expected frames, one flow's packets
//! and a handshake through the program.

pub use forwarder_common::{
    program_names, Counter, CtEntry, FlowKey, LogBudget, LogEvent, TcpState, CONFIG_FLAG_MIGRATING,
    CT_FLAG_FIN_ORIG, CT_FLAG_FIN_REPLY, CT_FLAG_REPLY,
};
pub use forwarder_tests::{
    packet::{self, flags, opt, parse_icmp_error, parse_tcp, Tcp},
    testrun::*,
};
pub use std::{
    net::{Ipv4Addr, SocketAddrV4, SocketAddrV6},
    time::Duration,
};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

pub fn harness(tag: &str) -> Harness {
    forwarder_tests::require_root();
    Harness::new(tag).expect("test harness")
}

pub fn harness_with(tag: &str, plan: &forwarder::plan::Plan) -> Harness {
    forwarder_tests::require_root();
    Harness::with_plan(tag, plan).expect("test harness")
}

pub fn assert_frame_eq(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: output differs from the expected frame\n--- got\n{}\n--- want\n{}",
        packet::hex(got),
        packet::hex(want)
    );
}

/// The frame as the data path must forward it: translated, TTL decremented, MACs from the
/// neighbour entry (NAT VM -> router), all checksums computed afresh by the builder.
pub fn forwarded(t: &Tcp, src: SocketAddrV4, dst: SocketAddrV4) -> Tcp {
    let mut e = t.clone().macs(NAT_MAC, ROUTER_MAC).ttl(t.ttl - 1);
    e.src = src;
    e.dst = dst;
    e
}

/// The frame translated but handed to the kernel (slow path): MACs and TTL untouched.
pub fn translated_only(t: &Tcp, src: SocketAddrV4, dst: SocketAddrV4) -> Tcp {
    let mut e = t.clone();
    e.src = src;
    e.dst = dst;
    e
}

/// Runs `frame` and asserts the program passes it to the kernel byte for byte unchanged.
pub fn assert_passes_unchanged(h: &mut Harness, frame: &[u8], what: &str) {
    let r = h.xdp(frame).unwrap();
    assert_eq!(r.action, XDP_PASS, "{what}: action");
    assert_frame_eq(&r.data, frame, what);
}

/// One connection through the NAT.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub client: SocketAddrV4,
    pub listen: SocketAddrV4,
    pub target: SocketAddrV4,
    pub snat: SocketAddrV4,
    pub rule_id: u16,
}

impl Flow {
    pub fn orig_key(&self) -> FlowKey {
        flow_key(self.client, self.listen)
    }
    pub fn reply_key(&self) -> FlowKey {
        flow_key(self.target, self.snat)
    }
    pub fn client_pkt(&self, f: u8) -> Tcp {
        Tcp::new(self.client, self.listen, f).macs(ROUTER_MAC, NAT_MAC)
    }
    pub fn target_pkt(&self, f: u8) -> Tcp {
        Tcp::new(self.target, self.snat, f).macs(ROUTER_MAC, NAT_MAC).seq(7_000_000)
    }

    /// Sends a client packet; it must be forwarded (XDP_TX) exactly as expected.
    pub fn client_sends(&self, h: &mut Harness, t: &Tcp) -> packet::ParsedTcp {
        let r = h.xdp(&t.frame()).unwrap();
        let p = parse_tcp(&r.data);
        assert_eq!(r.action, XDP_TX, "client -> target action");
        assert_frame_eq(&r.data, &forwarded(t, self.snat, self.target).frame(), "client -> target");
        p
    }

    /// Sends a target packet; it must be forwarded (XDP_TX) exactly as expected.
    pub fn target_sends(&self, h: &mut Harness, t: &Tcp) -> packet::ParsedTcp {
        let r = h.xdp(&t.frame()).unwrap();
        let p = parse_tcp(&r.data);
        assert_eq!(r.action, XDP_TX, "target -> client action");
        assert_frame_eq(
            &r.data,
            &forwarded(t, self.listen, self.client).frame(),
            "target -> client",
        );
        p
    }

    /// The flow's table and state; the reply half must be beside it with the same state
    /// (each half carries it, so that a packet needs only the half it matched).
    pub fn state(&self, h: &mut Harness) -> (Table, TcpState) {
        for t in [Table::Established, Table::Embryonic] {
            if let Some(e) = h.ct_get(t, &self.orig_key()).unwrap() {
                assert_eq!(e.rule_id, self.rule_id, "rule id of {self:?}");
                assert_eq!(e.peer, self.reply_key(), "peer of {self:?}");
                let r = h.ct_get(t, &self.reply_key()).unwrap().expect("reply half beside");
                assert_eq!(r.state, e.state, "the reply half's copy of the state of {self:?}");
                return (t, TcpState::from_u8(e.state).expect("valid state"));
            }
        }
        panic!("flow {self:?} is in no conntrack table");
    }

    /// Moves the last packet of the chosen halves `ns` into the past, through the map.
    pub fn age(&self, h: &mut Harness, t: Table, ns: u64, orig: bool, reply: bool) {
        for (key, yes) in [(self.orig_key(), orig), (self.reply_key(), reply)] {
            if yes {
                let mut e: CtEntry = h.ct_get(t, &key).unwrap().expect("half present");
                e.last_seen_ns = e.last_seen_ns.saturating_sub(ns);
                h.ct_set(t, &key, &e).unwrap();
            }
        }
    }

    /// Packets counted by each half: (client -> target, target -> client).
    pub fn packets(&self, h: &mut Harness, t: Table) -> (u64, u64) {
        let o = h.ct_get(t, &self.orig_key()).unwrap().expect("original half");
        let r = h.ct_get(t, &self.reply_key()).unwrap().expect("reply half");
        (o.packets, r.packets)
    }
}

/// Sends the client's SYN and learns the SNAT port from the output, which must otherwise be
/// exactly the expected translation.
pub fn open(h: &mut Harness, client: SocketAddrV4, rule: usize, syn: &Tcp) -> Flow {
    let r = h.xdp(&syn.frame()).unwrap();
    assert_eq!(r.action, XDP_TX, "SYN action");
    let p = parse_tcp(&r.data);
    let snat = p.src();
    assert_eq!(*snat.ip(), NAT_IP, "SNAT address");
    assert!(
        (SNAT_PORTS.0..=SNAT_PORTS.1).contains(&snat.port()),
        "SNAT port {} outside the range",
        snat.port()
    );
    let flow = Flow {
        client,
        listen: sa(NAT_IP, LISTEN_PORTS[rule]),
        target: sa(TARGETS[rule], TARGET_PORT),
        snat,
        rule_id: rule as u16,
    };
    assert_frame_eq(&r.data, &forwarded(syn, snat, flow.target).frame(), "SYN");
    flow
}

/// SYN, SYN-ACK, ACK: an established flow.
pub fn handshake(h: &mut Harness, client: SocketAddrV4, rule: usize) -> Flow {
    let syn = Tcp::new(client, sa(NAT_IP, LISTEN_PORTS[rule]), flags::SYN)
        .macs(ROUTER_MAC, NAT_MAC)
        .options(&opt::linux_syn(1460));
    let f = open(h, client, rule, &syn);
    f.target_sends(h, &f.target_pkt(flags::SYN | flags::ACK).options(&opt::linux_syn(1460)));
    f.client_sends(h, &f.client_pkt(flags::ACK));
    assert_eq!(f.state(h), (Table::Established, TcpState::Established));
    f
}

/// Client addresses for many flows: 10.1.x.y, every one distinct.
pub fn many_clients(i: usize) -> SocketAddrV4 {
    sa(Ipv4Addr::new(10, 1, (i / 250) as u8 + 1, (i % 250) as u8 + 1), 30000 + (i % 20000) as u16)
}
