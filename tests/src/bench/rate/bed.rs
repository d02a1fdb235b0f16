//! The two beds, in namespaces of their own (deleted when dropped, also on failure):
//!
//! ```text
//! hairpin (the Azure NAT VM: one NIC, forwarded packets leave where they came in)
//!  [G] g0 10.0.0.2/24 (client), 10.20.0.11/32 (broker) ── n0 10.0.0.4/24 [N]
//!      generator (XDP_TX out of g0), sink on g0            10.20.0.0/24 via 10.0.0.2
//!
//! router (two NICs: forwarded packets leave by redirect)
//!  [G] g0 10.0.0.2/24 (client) ── n0 10.0.0.4/24 [N] n1 10.30.0.4/24 ── b0 10.30.0.1/24,
//!      generator, XDP_PASS sink                10.20.0.0/24 via 10.30.0.1   10.20.0.11/24 [B]
//!                                                                           broker, sink
//! ```
//! Every neighbour is a permanent entry, so no frame waits for ARP. N forwards, sends no
//! ICMP redirects, and has GRO on (which also gives its veths the NAPI that receives the
//! generator's XDP_TX frames when no XDP program of the contender runs there).

use super::progs::Sink;
use crate::netns::{veth, Netns};
use crate::packet::mac_text;
use anyhow::Result;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const NAT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
pub const NAT_SECOND: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 4);
pub const ROUTER_SECOND: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 1);
pub const BROKER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 11);
pub const LISTEN_PORT: u16 = 9092;
/// Not the listen port, so a missing DNAT shows in the port too.
pub const BROKER_PORT: u16 = 9192;

const MAC_G0: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const MAC_N0: [u8; 6] = [0x02, 0, 0, 0, 0, 0x04];
const MAC_N1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];
const MAC_B0: [u8; 6] = [0x02, 0, 0, 0, 0, 0x06];

/// Source and destination MAC of a frame.
pub type MacPair = ([u8; 6], [u8; 6]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Hairpin,
    Router,
}

impl Shape {
    pub const ALL: [Shape; 2] = [Shape::Hairpin, Shape::Router];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Hairpin => "hairpin (one NIC, XDP_TX)",
            Shape::Router => "router (two NICs, redirect)",
        }
    }
}

pub struct Bed {
    pub shape: Shape,
    /// The sinks: on g0, and on b0 in the router shape (the one that counts is last).
    /// Dropped before the namespaces.
    sinks: Vec<Sink>,
    /// The generator's namespace: the client (and in the hairpin the broker).
    pub gen: Netns,
    pub nat: Netns,
    /// The broker's namespace in the router shape.
    pub far: Option<Netns>,
}

impl Bed {
    pub fn new(shape: Shape, tag: &str) -> Result<Bed> {
        crate::require_root();
        let gen = Netns::new(&format!("{tag}g"))?;
        let nat = Netns::new(&format!("{tag}n"))?;
        veth(&gen, "g0", &nat, "n0")?;
        gen.ip(&["link", "set", "g0", "address", &mac_text(MAC_G0)])?;
        nat.ip(&["link", "set", "n0", "address", &mac_text(MAC_N0)])?;
        gen.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "g0"])?;
        nat.ip(&["addr", "add", &format!("{NAT}/24"), "dev", "n0"])?;
        neigh(&gen, NAT, MAC_N0, "g0")?;
        neigh(&nat, CLIENT, MAC_G0, "n0")?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            ("net.ipv4.conf.n0.send_redirects", "0"),
        ] {
            nat.sysctl(k, v)?;
        }
        nat.exec(&["ethtool", "-K", "n0", "gro", "on"])?;

        let far = match shape {
            Shape::Hairpin => {
                gen.ip(&["addr", "add", &format!("{BROKER}/32"), "dev", "g0"])?;
                nat.ip(&["route", "add", "10.20.0.0/24", "via", &CLIENT.to_string()])?;
                None
            }
            Shape::Router => {
                let far = Netns::new(&format!("{tag}b"))?;
                veth(&nat, "n1", &far, "b0")?;
                nat.ip(&["link", "set", "n1", "address", &mac_text(MAC_N1)])?;
                far.ip(&["link", "set", "b0", "address", &mac_text(MAC_B0)])?;
                nat.ip(&["addr", "add", &format!("{NAT_SECOND}/24"), "dev", "n1"])?;
                far.ip(&["addr", "add", &format!("{ROUTER_SECOND}/24"), "dev", "b0"])?;
                far.ip(&["addr", "add", &format!("{BROKER}/24"), "dev", "b0"])?;
                nat.ip(&["route", "add", "10.20.0.0/24", "via", &ROUTER_SECOND.to_string()])?;
                neigh(&nat, ROUTER_SECOND, MAC_B0, "n1")?;
                neigh(&far, NAT_SECOND, MAC_N1, "b0")?;
                nat.sysctl("net.ipv4.conf.n1.send_redirects", "0")?;
                nat.exec(&["ethtool", "-K", "n1", "gro", "on"])?;
                Some(far)
            }
        };
        let mut sinks = vec![Sink::attach(&gen, "g0")?];
        if let Some(far) = &far {
            sinks.push(Sink::attach(far, "b0")?);
        }
        Ok(Bed { shape, sinks, gen, nat, far })
    }

    /// The NAT namespace's interfaces.
    pub fn nat_ifaces(&self) -> &'static [&'static str] {
        match self.shape {
            Shape::Hairpin => &["n0"],
            Shape::Router => &["n0", "n1"],
        }
    }

    /// The interface forwarded frames leave N by.
    pub fn out_iface(&self) -> &'static str {
        self.nat_ifaces().last().expect("one interface at least")
    }

    /// The address N's source NAT uses (that of the interface towards the broker).
    pub fn snat_ip(&self) -> Ipv4Addr {
        match self.shape {
            Shape::Hairpin => NAT,
            Shape::Router => NAT_SECOND,
        }
    }

    /// The broker's namespace.
    pub fn broker_ns(&self) -> &Netns {
        self.far.as_ref().unwrap_or(&self.gen)
    }

    /// The sink that counts forwarded frames (where the broker is).
    pub fn sink(&mut self) -> &mut Sink {
        self.sinks.last_mut().expect("a sink")
    }

    /// The sink at the client's end, which must see none of the generator's frames.
    pub fn client_sink(&self) -> Option<&Sink> {
        match self.shape {
            Shape::Hairpin => None,
            Shape::Router => self.sinks.first(),
        }
    }

    /// MACs of a frame sent from g0 to N, and of one forwarded to the broker.
    pub fn macs(&self) -> (MacPair, MacPair) {
        match self.shape {
            Shape::Hairpin => ((MAC_G0, MAC_N0), (MAC_N0, MAC_G0)),
            Shape::Router => ((MAC_G0, MAC_N0), (MAC_N1, MAC_B0)),
        }
    }

    pub fn listen(&self) -> SocketAddrV4 {
        SocketAddrV4::new(NAT, LISTEN_PORT)
    }

    pub fn broker(&self) -> SocketAddrV4 {
        SocketAddrV4::new(BROKER, BROKER_PORT)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.sinks.clear();
        crate::topology::remove_leftovers(&self.nat);
    }
}

fn neigh(ns: &Netns, ip: Ipv4Addr, m: [u8; 6], dev: &str) -> Result<()> {
    ns.ip(&[
        "neigh",
        "replace",
        &ip.to_string(),
        "lladdr",
        &mac_text(m),
        "dev",
        dev,
        "nud",
        "permanent",
    ])
    .map(|_| ())
}
