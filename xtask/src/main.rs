//! `cargo xtask build | run | test | demo` — the developer entry points.
//!
//! The kernel program is built by forwarder/build.rs (nightly + bpf-linker), so every task
//! here only drives cargo and runs what it built, as root where BPF needs it.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::Path;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the kernel program and the daemon.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `forwarder ARGS` as root, e.g. `cargo xtask run -- run --config x.toml`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build, then run every test: unit tests, BPF_PROG_TEST_RUN packet tests, netns
    /// end-to-end tests (root).
    Test {
        /// Extra arguments for the test binaries (a filter, --nocapture, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The long reliability runs that do not fit in `test` (RELIABILITY.md): ten million
    /// hostile frames through the program, with every invariant checked on each; then a
    /// SYN flood of a million spoofed SYNs, against the forwarder and iptables; then faults
    /// under live streams (10 SIGKILL restarts, 200 rule cycles, link flaps, detaches); then
    /// the soak (30 minutes of mixed TCP and Kafka load with rule changes, the daemon's
    /// memory and the table fill sampled); then every fuzz target of fuzz/ (the userspace
    /// parsers) for a while.
    Stress {
        /// Hostile frames to run (default ten million).
        #[arg(long, default_value_t = 10_000_000)]
        frames: u64,
        /// Spoofed SYNs of the flood (default one million).
        #[arg(long, default_value_t = 1_000_000)]
        flood_syns: u64,
        /// Seconds of the soak (default 1800; its table goes to target/soak/soak.md).
        #[arg(long, default_value_t = 1800)]
        soak_secs: u64,
        /// Seconds of fuzzing per fuzz target (default 60).
        #[arg(long, default_value_t = 60)]
        fuzz_seconds: u64,
        /// What sends the packet-rate bed's and the SYN flood's frames: auto (live frames
        /// where the kernel allows them, else a packet socket), live-frames or
        /// packet-socket. Passed to the tests as FWT_SENDER.
        #[arg(long, default_value = "auto", value_parser = ["auto", "live-frames", "packet-socket"])]
        sender: String,
    },
    /// The whole Azure path in namespaces: a Kafka client, Private Link + load balancer,
    /// two NAT VMs running forwarder, three real Kafka brokers (tansu); checks and tears down.
    Demo,
    /// Build the release binary and the .deb (cargo-deb), then check the package's contents.
    Deb,
    /// Measure program cost, whole-connection throughput and rate against iptables, the
    /// packet rate and CPU per packet of one flow, and map memory; writes BENCHMARKS.md
    /// and its chart.
    Bench {
        /// The packet-rate bed only, every contender once with few frames (under a minute),
        /// written to target/bench-quick/ instead of BENCHMARKS.md.
        #[arg(long)]
        quick: bool,
        /// Run only these sections: program, path, kafka, rate, memory, upgrade (repeatable).
        #[arg(long)]
        only: Vec<String>,
        /// Instead: one iperf3 stream through this way (iptables, "forwarder xdp", ...) under
        /// `perf record -a -g`, into target/bench-profile/, and the top of its report.
        #[arg(long, value_name = "WAY", conflicts_with_all = ["quick", "only"])]
        profile: Option<String>,
        /// What sends the packet-rate bed's and the SYN flood's frames: auto (live frames
        /// where the kernel allows them, else a packet socket), live-frames or
        /// packet-socket. Passed to the tests as FWT_SENDER.
        #[arg(long, default_value = "auto", value_parser = ["auto", "live-frames", "packet-socket"])]
        sender: String,
    },
}

mod bench;
mod bpffs;
mod build;
mod deb;
mod exec;
mod test;

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Build { release } => build::build(release).map(|_| ()),
        Task::Run { release, args } => build::run(release, &args),
        Task::Test { args } => setup().and_then(|_| test::test(&args)),
        Task::Deb => setup().and_then(|_| deb::deb()),
        Task::Demo => setup().and_then(|_| bench::demo()),
        Task::Stress { frames, flood_syns, soak_secs, fuzz_seconds, sender } => {
            setup().and_then(|_| {
                test::stress(frames, flood_syns, soak_secs, fuzz_seconds, Path::new(&sender))
            })
        }
        Task::Bench { quick, only, profile, sender } => {
            setup().and_then(|_| bench::bench(quick, &only, profile.as_deref(), Path::new(&sender)))
        }
    }
}

/// .ci/setup.sh: everything the build, the tests and the lab need (apt packages, nightly
/// rust-src, bpf-linker, cargo-deb, tansu, kafka-python). Idempotent and quick once done, so
/// `cargo xtask demo` and `cargo xtask test` work on a fresh machine as they are.
fn setup() -> Result<()> {
    exec::exec(
        exec::root_command("bash").arg(exec::workspace_root().join(".ci/setup.sh")),
        ".ci/setup.sh",
    )
}
