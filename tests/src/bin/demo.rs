//! `cargo xtask demo`: the whole Azure path with real Kafka brokers in network namespaces
//! (tests/src/lab), with progress as it goes and a summary at the end. Exit 0 only if every
//! check held. Ctrl-C (or SIGTERM, or a closed terminal) stops at the next step and tears
//! everything down; if the demo is killed outright, its brokers and daemons die with it
//! (parent-death signal) and the next run removes the namespaces it left.

use forwarder_tests::{lab, require_root};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::{process::ExitCode, sync::atomic::Ordering, time::Instant};

extern "C" fn on_signal(_: libc::c_int) {
    lab::INTERRUPTED.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    require_root();
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.expect("installing the signal handler");
    }
    let opts = lab::Options::demo();
    let start = Instant::now();
    let mut say = |line: String| println!("[{:>5.1}s] {line}", start.elapsed().as_secs_f64());
    match lab::run(&opts, &mut say) {
        Ok(s) => {
            println!();
            println!("summary");
            println!(
                "  messages:     {} produced and consumed in order (kafka-python), {} (forwarder kafka check)",
                s.python_messages, s.rust_messages
            );
            println!(
                "  brokers:      {} of {} reached through the forwarder",
                s.brokers_reached, s.brokers
            );
            for (client, t) in
                [("kafka-python", &s.throughput), ("Rust client", &s.rust_throughput)]
            {
                println!(
                    "  throughput:   {client}: {:.2} MB/s through the forwarder, {:.2} MB/s direct: {:.0} % (target >= 95 %{})",
                    t.forwarded_mb_s,
                    t.direct_mb_s,
                    t.ratio() * 100.0,
                    if t.ratio() >= 0.95 { ", met" } else { ", NOT met in this run" }
                );
            }
            let per_vm: Vec<String> =
                s.conns_per_vm.iter().map(|(vm, n)| format!("{vm} {n}")).collect();
            println!("  connections:  {}", per_vm.join(", "));
            println!(
                "  drain:        while natvm-a was drained, natvm-b took {} new connections, natvm-a {}; {} connections opened before it kept working",
                s.conns_while_drained.get("natvm-b").copied().unwrap_or(0),
                s.conns_while_drained.get("natvm-a").copied().unwrap_or(0),
                s.live_connections_kept
            );
            println!(
                "  took:         {:.0} s; teardown checked: no namespace, process or file left",
                s.seconds
            );
            ExitCode::SUCCESS
        }
        Err(_) if lab::INTERRUPTED.load(Ordering::Relaxed) => {
            eprintln!("interrupted: everything the demo started is torn down");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("demo failed (everything it started is torn down): {e:#}");
            ExitCode::FAILURE
        }
    }
}
