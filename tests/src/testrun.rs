//! BPF_PROG_TEST_RUN harness: the forwarder's programs run on frames built by
//! [`crate::packet`], inside a namespace of their own where `bpf_fib_lookup` finds a route.
//!
//! ```text
//!  [ns fwt-<tag>n]  eth0 10.0.0.4/24 (02:00:00:00:00:04), default via 10.0.0.1,
//!                   10.0.0.1 lladdr 02:00:00:00:00:01 nud permanent, forwarding on
//!        │ veth
//!  [ns fwt-<tag>r]  eth0 10.0.0.1/24 (02:00:00:00:00:01)
//! ```
//!
//! The kernel resolves the `ingress_ifindex` of an XDP test run, and the device of an skb test
//! run, in the namespace of the calling thread; `bpf_fib_lookup` then works in that device's
//! namespace. So the harness moves the thread that creates it into the NAT VM namespace and
//! moves it back when dropped: a `Harness` must stay on the thread that made it.
//! No traffic is sent anywhere: test runs only hand frames to the program.

use crate::netns::{veth, Netns};
use crate::packet::{mac_text, Mac};
use anyhow::{bail, Context, Result};
use aya::{
    maps::{HashMap, MapData},
    programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
};
use forwarder::{
    datapath::Datapath,
    plan::{Plan, PlannedRule},
};
use forwarder_common::{program_names, Counter, CtEntry, FlowKey, RuleStats};
use std::{fs::File, net::Ipv4Addr, os::fd::AsFd, time::Duration};

pub const NAT_IF: &str = "eth0";
pub const NAT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
pub const NAT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x04];
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
pub const TARGETS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 20, 0, 11), Ipv4Addr::new(10, 20, 0, 12), Ipv4Addr::new(10, 20, 0, 13)];
pub const LISTEN_PORTS: [u16; 3] = [9092, 9093, 9094];
pub const TARGET_PORT: u16 = 9092;
pub const SNAT_PORTS: (u16, u16) = (40000, 59999);
/// Interface MTU in the test namespace: larger packets go to the kernel (FRAG_NEEDED).
pub const MTU: usize = 1500;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// Which conntrack table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Embryonic,
    Established,
}

/// The conntrack key of a packet from `src` to `dst` (addresses and ports as the packet
/// carries them).
pub fn flow_key(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4) -> FlowKey {
    FlowKey::new(
        u32::from_ne_bytes(src.ip().octets()),
        u32::from_ne_bytes(dst.ip().octets()),
        src.port().to_be(),
        dst.port().to_be(),
        6,
    )
}

/// What one test run returned.
#[derive(Debug)]
pub struct Run {
    pub action: u32,
    pub data: Vec<u8>,
    pub duration: Duration,
}

/// The default plan of the tests: SNAT to 10.0.0.4:40000-59999, listen on 10.0.0.4 only,
/// 9092/9093/9094 -> 10.20.0.11/12/13:9092 (rule ids 0, 1, 2), every source allowed, no
/// MSS clamp, generous timeouts.
pub fn default_plan() -> Plan {
    Plan {
        snat_addr: NAT_IP,
        snat_ports: SNAT_PORTS,
        listen_addrs: Some(vec![NAT_IP]),
        allowed_sources: None,
        mss_clamp: 0,
        timeouts_ns: [60, 3600, 120].map(|s| s * 1_000_000_000),
        rules: (0..3)
            .map(|i| PlannedRule {
                name: format!("broker{}", i + 1),
                listen: LISTEN_PORTS[i],
                target: Some((TARGETS[i], TARGET_PORT)),
                rule_id: i as u16,
            })
            .collect(),
    }
}

pub struct Harness {
    pub dp: Datapath,
    pub ifindex: u32,
    /// The calling thread's namespace before the harness moved it.
    orig_ns: File,
    // Dropped after `dp` (fields drop in order): the program fds do not pin the netns.
    _nat: Netns,
    _router: Netns,
}

impl Harness {
    /// A harness with [`default_plan`] applied.
    pub fn new(tag: &str) -> Result<Self> {
        Self::with_plan(tag, &default_plan())
    }

    pub fn with_plan(tag: &str, plan: &Plan) -> Result<Self> {
        Self::with_capacity(tag, plan, 4096)
    }

    /// A harness whose tables are made for `max_flows` flows.
    pub fn with_capacity(tag: &str, plan: &Plan, max_flows: u32) -> Result<Self> {
        crate::require_root();
        let nat = Netns::new(&format!("{tag}n"))?;
        let router = Netns::new(&format!("{tag}r"))?;
        veth(&nat, NAT_IF, &router, NAT_IF)?;
        let mtu = MTU.to_string();
        nat.ip(&["link", "set", "dev", NAT_IF, "address", &mac_text(NAT_MAC), "mtu", &mtu])?;
        router.ip(&["link", "set", "dev", NAT_IF, "address", &mac_text(ROUTER_MAC)])?;
        router.ip(&["addr", "add", &format!("{ROUTER_IP}/24"), "dev", NAT_IF])?;
        address_nat_vm(&nat, NAT_IF)?;
        let ifindex = nat.ifindex(NAT_IF)?;

        let orig_ns = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        let target = File::open(format!("/run/netns/{}", nat.name()))?;
        nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .context("setns into the NAT VM namespace")?;
        let mut h = Harness {
            dp: Datapath::load(max_flows)?,
            ifindex,
            orig_ns,
            _nat: nat,
            _router: router,
        };
        h.dp.xdp_program(program_names::XDP)?;
        h.tc_program()?;
        h.apply(plan)?;
        Ok(h)
    }

    /// Makes the NAT VM's NIC look like Azure's accelerated networking to native XDP: eth0
    /// becomes the VF under a master `acc0` (a bridge, with eth0's MAC, address, routes and
    /// forwarding), and eth0's own forwarding is off, as the VF's is on Azure (the daemon
    /// turns it on for the configured interface only). The program keeps running with
    /// eth0's ifindex as ingress, as it does on the VF. With `tell_program`, the daemon's
    /// INGRESS_MASTER entry is made.
    pub fn put_under_master(&mut self, tell_program: bool) -> Result<()> {
        const MASTER: &str = "acc0";
        let nat = &self._nat;
        nat.ip(&["addr", "flush", "dev", NAT_IF])?;
        nat.ip(&["link", "add", MASTER, "address", &mac_text(NAT_MAC), "type", "bridge"])?;
        nat.ip(&["link", "set", NAT_IF, "master", MASTER])?;
        nat.ip(&["link", "set", MASTER, "mtu", &MTU.to_string(), "up"])?;
        address_nat_vm(nat, MASTER)?;
        nat.sysctl(&format!("net.ipv4.conf.{NAT_IF}.forwarding"), "0")?;
        if tell_program {
            let pairs = self.dp.set_ingress_masters(&[MASTER.to_string()])?;
            anyhow::ensure!(
                pairs == [(NAT_IF.to_string(), MASTER.to_string())],
                "devices under {MASTER}: {pairs:?}"
            );
        }
        Ok(())
    }

    pub fn apply(&mut self, plan: &Plan) -> Result<()> {
        self.dp.apply(plan)?;
        Ok(())
    }

    fn tc_program(&mut self) -> Result<&mut SchedClassifier> {
        let prog: &mut SchedClassifier = self
            .dp
            .ebpf_mut()
            .program_mut(program_names::TC)
            .context("no TC program")?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        Ok(prog)
    }

    /// Runs the XDP program once on `frame`, received on the NAT VM's interface.
    pub fn xdp(&mut self, frame: &[u8]) -> Result<Run> {
        let ifindex = self.ifindex;
        let prog: &Xdp = self.dp.xdp_program(program_names::XDP)?;
        run_xdp(prog, ifindex, frame)
    }

    /// Runs the XDP program `program` `repeat` times on `frame` in one test run; `duration`
    /// is the kernel's mean time per run (the benchmark's measure).
    pub fn xdp_repeat(&mut self, program: &'static str, frame: &[u8], repeat: u32) -> Result<Run> {
        let ifindex = self.ifindex;
        let prog: &Xdp = self.dp.xdp_program(program)?;
        run_once(prog, frame, &xdp_ctx(ifindex, frame), repeat, "XDP test run")
    }

    /// Runs the TC program once on `frame`, as an skb of the NAT VM's interface.
    pub fn tc(&mut self, frame: &[u8]) -> Result<Run> {
        let ifindex = self.ifindex;
        let prog = self.tc_program()?;
        // struct __sk_buff up to and including `ifindex` (offset 40); the kernel accepts
        // only a few fields of it as input and wants every other one zero.
        let mut ctx = [0u8; 44];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        run_once(prog, frame, &ctx, 1, "TC test run")
    }

    fn ct(&mut self, table: Table) -> Result<&mut HashMap<MapData, FlowKey, CtEntry>> {
        let ct = &mut self.dp.maps_mut().conntrack;
        Ok(match table {
            Table::Embryonic => &mut ct.embryonic,
            Table::Established => &mut ct.established,
        })
    }

    /// Every entry of a conntrack table.
    pub fn ct_entries(&mut self, table: Table) -> Result<Vec<(FlowKey, CtEntry)>> {
        let m = self.ct(table)?;
        let v: Result<Vec<_>, _> = m.iter().collect();
        Ok(v?)
    }

    pub fn ct_get(&mut self, table: Table, key: &FlowKey) -> Result<Option<CtEntry>> {
        match self.ct(table)?.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn ct_set(&mut self, table: Table, key: &FlowKey, entry: &CtEntry) -> Result<()> {
        self.ct(table)?.insert(key, entry, 0)?;
        Ok(())
    }

    /// Removes one half, as the LRU does when a table is full.
    pub fn ct_remove(&mut self, table: Table, key: &FlowKey) -> Result<()> {
        self.ct(table)?.remove(key)?;
        Ok(())
    }

    pub fn ct_clear(&mut self) -> Result<()> {
        for t in [Table::Embryonic, Table::Established] {
            let m = self.ct(t)?;
            let keys: Vec<FlowKey> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                m.remove(&k)?;
            }
        }
        Ok(())
    }

    /// A rule's counters summed over all CPUs.
    pub fn stats(&mut self, rule_id: u16) -> Result<RuleStats> {
        Ok(RuleStats { counters: self.dp.rule_totals(rule_id)?.0 })
    }

    /// What the daemon does on a route or neighbour change: cached next hops go stale.
    pub fn bump_nexthop_gen(&mut self) -> Result<()> {
        Ok(self.dp.bump_nexthop_gen()?)
    }

    pub fn counter(&mut self, rule_id: u16, c: Counter) -> Result<u64> {
        Ok(self.stats(rule_id)?.get(c))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Err(e) =
            nix::sched::setns(self.orig_ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        {
            eprintln!("could not move the thread back to its namespace: {e}");
        }
    }
}

/// The NAT VM's address on `dev`, its default route via the router, the router's MAC as a
/// permanent neighbour (no resolution during a test run), and forwarding on `dev`.
fn address_nat_vm(nat: &Netns, dev: &str) -> Result<()> {
    nat.ip(&["addr", "add", &format!("{NAT_IP}/24"), "dev", dev])?;
    nat.ip(&["route", "add", "default", "via", &ROUTER_IP.to_string()])?;
    let router = ROUTER_IP.to_string();
    let router_mac = mac_text(ROUTER_MAC);
    nat.ip(&["neigh", "replace", &router, "lladdr", &router_mac, "dev", dev, "nud", "permanent"])?;
    nat.sysctl(&format!("net.ipv4.conf.{dev}.forwarding"), "1")
}

/// One XDP test run on `frame`, with an `xdp_md` naming `ifindex` (which must exist in the
/// calling thread's namespace).
pub fn run_xdp(prog: &Xdp, ifindex: u32, frame: &[u8]) -> Result<Run> {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }: data_end must equal the frame's length, data and data_meta 0.
    run_once(prog, frame, &xdp_ctx(ifindex, frame), 1, "XDP test run")
}

fn xdp_ctx(ifindex: u32, frame: &[u8]) -> Vec<u8> {
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    md.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// One BPF_PROG_TEST_RUN of `prog` on `frame` with context `ctx` (XDP and TC alike).
fn run_once<P>(prog: &P, frame: &[u8], ctx: &[u8], repeat: u32, what: &'static str) -> Result<Run>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(ctx),
            repeat,
            ..Default::default()
        })
        .context(what)?;
    if r.data_size_out as usize > out.len() {
        bail!("output of {} bytes does not fit", r.data_size_out);
    }
    out.truncate(r.data_size_out as usize);
    Ok(Run { action: r.return_value, data: out, duration: r.duration })
}
