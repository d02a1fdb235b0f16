//! The Kafka lab of `cargo xtask demo`, smaller: two real brokers (tansu) behind the load
//! balancer and both NAT VMs. `lab::run` itself fails on any broken check (messages lost or
//! out of order, a broker not reached, a drained VM still taking flows, anything left after
//! teardown); this test also asserts on what it reports.

use forwarder_tests::{lab, require_root};

#[test]
fn lab_two_brokers_through_two_nat_vms_with_drain_and_clean_teardown() {
    require_root();
    let opts = lab::Options {
        prefix: "fwt-lab".into(),
        brokers: 2,
        messages: 300,
        partitions: 2,
        message_size: 200,
        bench_messages: 2000,
        bench_rounds: 1,
    };
    let mut lines = Vec::new();
    let result = lab::run(&opts, &mut |l| {
        println!("{l}");
        lines.push(l)
    });
    let s = result.unwrap_or_else(|e| panic!("the lab failed: {e:#}\n{}", lines.join("\n")));

    assert_eq!(s.brokers, 2);
    assert_eq!(s.brokers_reached, 2, "{s:?}");
    // Two round trips (before and during the drain) per broker, every message back in order.
    assert_eq!(s.python_messages, 2 * 2 * 300, "{s:?}");
    assert_eq!(s.rust_messages, 2 * 100, "{s:?}");
    assert!(s.throughput.direct_mb_s > 0.0 && s.throughput.forwarded_mb_s > 0.0, "{s:?}");
    // Both VMs carried connections, and only natvm-b while natvm-a was drained.
    assert!(s.conns_per_vm.values().all(|n| *n > 0), "{s:?}");
    assert_eq!(s.conns_while_drained.get("natvm-a"), Some(&0), "{s:?}");
    assert!(s.conns_while_drained.get("natvm-b").is_some_and(|n| *n > 0), "{s:?}");
    // Connections opened before the drain kept producing after it (8 per broker).
    assert_eq!(s.live_connections_kept, 2 * 8, "{s:?}");
    // Nothing left: run() checked its own namespaces and daemons; no lab namespace at all.
    assert!(
        lab::net::namespaces_with_prefix("fwt-lab").unwrap().is_empty(),
        "lab namespaces left behind"
    );
    assert!(lines.iter().any(|l| l.starts_with("teardown:")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("0 TCP checksum errors")), "{lines:?}");
}
