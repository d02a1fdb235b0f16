//! The way out: TC, the cached next hop, the VF under an accelerated NIC, the established
//! packet's cost, and no memory builtin in the object.

use super::common::*;

#[test]
fn tc_program_syn_handshake_and_pass() {
    let mut h = harness("tc");
    let client = sa(CLIENT_IP, 47000);
    let syn = Tcp::new(client, sa(NAT_IP, 9093), flags::SYN)
        .macs(ROUTER_MAC, NAT_MAC)
        .options(&opt::linux_syn(1460));
    let r = h.tc(&syn.frame()).unwrap();
    assert_eq!(r.action, TC_ACT_REDIRECT, "TC SYN: bpf_redirect to the ingress interface");
    let p = parse_tcp(&r.data);
    let f = Flow {
        client,
        listen: sa(NAT_IP, 9093),
        target: sa(TARGETS[1], TARGET_PORT),
        snat: p.src(),
        rule_id: 1,
    };
    assert!((SNAT_PORTS.0..=SNAT_PORTS.1).contains(&f.snat.port()));
    assert_frame_eq(&r.data, &forwarded(&syn, f.snat, f.target).frame(), "TC SYN");
    assert_eq!(f.state(&mut h), (Table::Embryonic, TcpState::SynSent));
    assert!(h.ct_get(Table::Embryonic, &f.reply_key()).unwrap().is_some());

    let synack = f.target_pkt(flags::SYN | flags::ACK).options(&opt::linux_syn(1460));
    let r = h.tc(&synack.frame()).unwrap();
    assert_eq!(r.action, TC_ACT_REDIRECT);
    parse_tcp(&r.data);
    assert_frame_eq(&r.data, &forwarded(&synack, f.listen, f.client).frame(), "TC SYN-ACK");

    let ack = f.client_pkt(flags::ACK).payload_len(77);
    let r = h.tc(&ack.frame()).unwrap();
    assert_eq!(r.action, TC_ACT_REDIRECT);
    parse_tcp(&r.data);
    assert_frame_eq(&r.data, &forwarded(&ack, f.snat, f.target).frame(), "TC ACK");
    assert_eq!(f.state(&mut h), (Table::Established, TcpState::Established));

    // The XDP program sees the same tables.
    f.client_sends(&mut h, &f.client_pkt(flags::ACK).payload_len(5));

    let ssh = Tcp::new(client, sa(NAT_IP, 22), flags::SYN).frame();
    let r = h.tc(&ssh).unwrap();
    assert_eq!(r.action, TC_ACT_OK);
    assert_frame_eq(&r.data, &ssh, "TC SSH");
    let unknown = Tcp::new(sa(CLIENT_IP, 47001), sa(NAT_IP, 9093), flags::ACK).frame();
    let r = h.tc(&unknown).unwrap();
    assert_eq!(r.action, TC_ACT_OK);
    assert_frame_eq(&r.data, &unknown, "TC unknown flow");
    assert_eq!(h.counter(1, Counter::NewConns).unwrap(), 1);
}

/// Not a benchmark gate: measures the mean cost of one established data packet through the
/// XDP program, each run with repeat = 1 on a fresh copy of the frame (see TOOLCHAIN.md on
/// repeat > 1), and checks every output.
#[test]
fn measure_established_data_packet_ns() {
    let mut h = harness("meas");
    let f = handshake(&mut h, sa(CLIENT_IP, 48000), 0);
    let t = f.client_pkt(flags::ACK | flags::PSH).options(&opt::timestamps(1, 2)).payload_len(64);
    let frame = t.frame();
    let want = forwarded(&t, f.snat, f.target).frame();
    const N: u32 = 2000;
    let mut runs_ns: Vec<u64> = Vec::with_capacity(N as usize);
    let start = std::time::Instant::now();
    for _ in 0..N {
        let r = h.xdp(&frame).unwrap();
        assert_eq!(r.action, XDP_TX);
        assert!(r.data == want, "timed run produced another frame");
        runs_ns.push(r.duration.as_nanos() as u64);
    }
    let wall = start.elapsed();
    parse_tcp(&want);
    runs_ns.sort_unstable();
    let mean = runs_ns.iter().sum::<u64>() as f64 / N as f64;
    println!(
        "established data packet ({} bytes) through forwarder_xdp, {N} test runs with repeat=1: \
         mean {mean:.1} ns/run, median {} ns, min {} ns (kernel-measured, includes the test-run \
         timer); {:.0} ns per BPF_PROG_TEST_RUN syscall round trip",
        frame.len(),
        runs_ns[runs_ns.len() / 2],
        runs_ns[0],
        wall.as_nanos() as f64 / N as f64
    );
    assert_eq!(f.packets(&mut h, Table::Established).0, 2 + N as u64);

    // Baseline: the same measurement of an XDP program that only returns XDP_PASS.
    let ifindex = h.ifindex;
    let pass = h.dp.xdp_program(program_names::XDP_PASS).unwrap();
    let mut base: Vec<u64> = (0..N)
        .map(|_| {
            let r = run_xdp(pass, ifindex, &frame).unwrap();
            assert_eq!(r.action, XDP_PASS);
            assert!(r.data == frame);
            r.duration.as_nanos() as u64
        })
        .collect();
    base.sort_unstable();
    println!(
        "baseline forwarder_xdp_pass, same method: mean {:.1} ns/run, median {} ns",
        base.iter().sum::<u64>() as f64 / N as f64,
        base[base.len() / 2]
    );
}

/// An established packet takes its next hop from the flow, not from a FIB lookup: a
/// neighbour change the program is not told about leaves it on the cached MAC. A bump of
/// NEXTHOP_GEN (the daemon's answer to the rtnetlink event) moves it to the new MAC at the
/// next packet, and so does the once-a-second re-check by itself.
#[test]
fn established_packets_use_the_cached_next_hop_until_its_generation_changes() {
    let mut h = harness("nh");
    let f = handshake(&mut h, sa(CLIENT_IP, 47000), 0);
    let data = f.client_pkt(flags::ACK | flags::PSH).payload_len(100);
    assert_eq!(f.client_sends(&mut h, &data).eth.destination, ROUTER_MAC);
    let cached = h.ct_get(Table::Established, &f.orig_key()).unwrap().unwrap().nexthop;
    assert_eq!((cached.ifindex, cached.dmac, cached.smac), (h.ifindex, ROUTER_MAC, NAT_MAC));

    // The router's MAC changes. The harness thread lives in the NAT VM's namespace, so the
    // command runs there.
    const NEW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    let out = std::process::Command::new("ip")
        .args(["neigh", "replace", &ROUTER_IP.to_string(), "lladdr", "02:00:00:00:00:99"])
        .args(["dev", NAT_IF, "nud", "permanent"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip neigh replace: {}", String::from_utf8_lossy(&out.stderr));
    let r = h.xdp(&data.frame()).unwrap();
    assert_eq!(r.action, XDP_TX);
    assert_eq!(parse_tcp(&r.data).eth.destination, ROUTER_MAC, "the cached hop, no FIB lookup");
    // The reply direction has a hop of its own, cached too.
    let back = f.target_pkt(flags::ACK | flags::PSH).payload_len(100);
    f.target_sends(&mut h, &back);

    // What the daemon does on the neighbour event.
    h.bump_nexthop_gen().unwrap();
    let r = h.xdp(&data.frame()).unwrap();
    assert_eq!(parse_tcp(&r.data).eth.destination, NEW_MAC, "a new generation looks it up");
    let r = h.xdp(&back.frame()).unwrap();
    assert_eq!(parse_tcp(&r.data).eth.destination, NEW_MAC, "both directions");

    // With no daemon to bump the generation, a second of age is enough.
    let out = std::process::Command::new("ip")
        .args(["neigh", "replace", &ROUTER_IP.to_string(), "lladdr", "02:00:00:00:00:01"])
        .args(["dev", NAT_IF, "nud", "permanent"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(parse_tcp(&h.xdp(&data.frame()).unwrap().data).eth.destination, NEW_MAC);
    f.age(&mut h, Table::Established, 1_000_000_000, true, false);
    assert_eq!(parse_tcp(&h.xdp(&data.frame()).unwrap().data).eth.destination, ROUTER_MAC);
}

/// The program calls no memory builtin. bpf-linker's default (`--bpf-expand-memcpy-in-order`)
/// made every zeroed struct a call to compiler-builtins' memset, which stores one byte per
/// iteration; forwarder-ebpf/build.rs turns it off. Read from the object the daemon loads.
#[test]
fn the_program_calls_no_memory_builtin() {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};
    let file = object::File::parse(forwarder::datapath::object::OBJECT).expect("the program's ELF");
    let (mut calls, mut code_sections) = (Vec::new(), 0);
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        code_sections += 1;
        let name = section.name().unwrap_or("?");
        for (offset, rel) in section.relocations() {
            let RelocationTarget::Symbol(i) = rel.target() else { continue };
            let sym = file.symbol_by_index(i).expect("a relocation's symbol");
            let target = sym.name().unwrap_or("");
            if ["memset", "memcpy", "memmove", "memcmp", "bcmp"].contains(&target) {
                calls.push(format!("{name}+{offset:#x}: {target}"));
            }
        }
    }
    assert!(code_sections >= 2, "only {code_sections} code sections: not the program's object?");
    assert!(calls.is_empty(), "calls to memory builtins:\n{}", calls.join("\n"));
}

/// Native XDP under accelerated networking runs on the VF under eth0 (hv_netvsc hands the
/// program to it), so the ingress is the VF, whose forwarding is off: the FIB must be asked
/// as for eth0, and its answer "eth0" must send the frame back out of the VF (XDP_TX), not
/// to the kernel. Without the daemon's INGRESS_MASTER entry every packet took the slow path.
#[test]
fn packets_arriving_on_the_vf_under_the_interface_leave_by_xdp_tx() {
    let mut h = harness("vf-slow");
    h.put_under_master(false).unwrap();
    let client = sa(CLIENT_IP, 45000);
    let syn = Tcp::new(client, sa(NAT_IP, 9092), flags::SYN).macs(ROUTER_MAC, NAT_MAC);
    let r = h.xdp(&syn.frame()).unwrap();
    assert_eq!(r.action, XDP_PASS, "without INGRESS_MASTER: the slow path (forwarding off)");
    assert_eq!(h.counter(0, Counter::SlowPath).unwrap(), 1);
    drop(h);

    let mut h = harness("vf");
    h.put_under_master(true).unwrap();
    let f = handshake(&mut h, client, 0);
    f.client_sends(&mut h, &f.client_pkt(flags::ACK | flags::PSH).payload_len(1000));
    f.target_sends(&mut h, &f.target_pkt(flags::ACK | flags::PSH).payload_len(1400));
    assert_eq!(h.counter(0, Counter::SlowPath).unwrap(), 0, "every packet on the fast path");
}
