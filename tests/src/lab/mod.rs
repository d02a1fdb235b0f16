//! The Kafka lab: the whole Azure path of SPEC §1 with real brokers, run by `cargo xtask
//! demo` (all three brokers) and by the lab integration test (a smaller one).
//!
//! Steps, each shown as it goes: build the namespaces; start the on-prem brokers (tansu);
//! start `forwarder` on both NAT VMs from one shared config; start the load balancer and
//! wait until its probe admits both VMs; produce and consume through the whole path with
//! kafka-python and with the project's Rust client; show per-rule, per-VM stats; measure
//! produce throughput through the forwarder next to the same client going direct; drain one
//! VM and show new traffic going through the other; tear everything down and check that
//! nothing is left. Every check that fails makes the run fail.
//!
//! What is where: `run` below tells the story phase by phase; the phases live in `setup`
//! (lab directory, namespaces, brokers, NAT VMs, load balancer, and the checked teardown),
//! `traffic` (round trips, the Rust client, stats, throughput, checksums) and `drain`
//! (drain natvm-a and bring it back). The pieces they drive: `net` (namespaces and links),
//! `brokers` (tansu), `natvm` (a forwarder daemon), `lb` (the load balancer and its probe),
//! `clients` (kafka-python and the Rust client).

pub mod brokers;
pub mod clients;
mod drain;
pub mod lb;
pub mod natvm;
pub mod net;
mod setup;
mod traffic;

use anyhow::{bail, ensure, Result};
use brokers::Tansu;
use lb::LoadBalancer;
use natvm::NatVm;
use net::LabNet;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

/// Set by the demo's SIGINT / SIGTERM handler: the run stops at the next step and tears down.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes a child of the lab get `signal` when the lab process dies, however it dies (even
/// SIGKILL), so no broker or daemon outlives it. Set on the spawning thread's behalf: the
/// lab spawns every long-lived child from the thread that runs `run`.
pub(crate) fn die_with_lab(cmd: &mut std::process::Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace prefix; namespaces are `<prefix>-<role>-<pid>-<n>`.
    pub prefix: String,
    /// How many brokers (1..=3).
    pub brokers: usize,
    /// Messages per broker in the round trips, over `partitions` partitions.
    pub messages: usize,
    pub partitions: usize,
    pub message_size: usize,
    /// Messages per throughput run, and how many direct / forwarded pairs to run.
    pub bench_messages: usize,
    pub bench_rounds: usize,
}

impl Options {
    /// The demo: the seed's three brokers.
    pub fn demo() -> Options {
        Options {
            prefix: "fwd-demo".into(),
            brokers: 3,
            messages: 3000,
            partitions: 3,
            message_size: 200,
            bench_messages: 20_000,
            bench_rounds: 3,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Throughput {
    pub direct_mb_s: f64,
    pub forwarded_mb_s: f64,
}

impl Throughput {
    pub fn ratio(&self) -> f64 {
        if self.direct_mb_s > 0.0 {
            self.forwarded_mb_s / self.direct_mb_s
        } else {
            0.0
        }
    }
}

/// What the run found; `run` returns it only when every check held.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub brokers: usize,
    /// Brokers that kafka-python and the Rust client both reached through the path.
    pub brokers_reached: usize,
    /// Messages produced and consumed back in order (kafka-python, all brokers).
    pub python_messages: u64,
    /// Messages produced and read back by the Rust client (all brokers).
    pub rust_messages: u64,
    /// Produce throughput of kafka-python, and of the Rust client, direct and forwarded.
    pub throughput: Throughput,
    pub rust_throughput: Throughput,
    /// New connections each NAT VM forwarded, over the whole run.
    pub conns_per_vm: BTreeMap<String, u64>,
    /// New connections per VM while natvm-a was drained.
    pub conns_while_drained: BTreeMap<String, u64>,
    /// Connections opened before the drain that kept producing after it.
    pub live_connections_kept: usize,
    pub seconds: f64,
}

/// Everything the lab started; dropping it tears down in this order: prober, daemons,
/// brokers, namespaces (with their hosts files), then the lab directory.
struct Lab {
    lb: Option<LoadBalancer>,
    vms: Vec<NatVm>,
    brokers: Vec<Tansu>,
    net: Option<LabNet>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.lb.take();
        self.vms.clear();
        self.brokers.clear();
        self.net.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// The namespaces; built by `setup::build_network`, before every phase that uses them.
    fn net(&self) -> &LabNet {
        self.net.as_ref().expect("the lab network is built before it is used")
    }

    /// The load balancer; started by `setup::probe_admits_both`, before the traffic phases.
    fn lb(&self) -> &LoadBalancer {
        self.lb.as_ref().expect("the load balancer is started before it is used")
    }
}

/// What every phase shares besides the lab: the options, where its lines go, and what the
/// run has found so far.
struct Story<'a> {
    opts: &'a Options,
    say: &'a mut dyn FnMut(String),
    summary: Summary,
}

impl Story<'_> {
    fn say(&mut self, line: String) {
        (self.say)(line)
    }
}

/// Runs the lab; `say` gets one line per step. Each phase checks what it did and fails the
/// run if anything is off; a failure anywhere tears down through `Lab`'s drop.
pub fn run(opts: &Options, say: &mut dyn FnMut(String)) -> Result<Summary> {
    ensure!((1..=3).contains(&opts.brokers), "the lab has 1 to 3 brokers");
    let started = Instant::now();
    let mut story = Story { opts, say, summary: Summary::default() };

    let mut lab = setup::open_lab(&mut story)?;
    setup::build_network(&mut lab, &mut story)?;
    setup::start_brokers(&mut lab, &mut story)?;
    setup::start_vms(&mut lab, &mut story)?;
    setup::probe_admits_both(&mut lab, &mut story)?;

    traffic::python_roundtrips(&lab, &mut story)?;
    traffic::rust_client_check(&lab, &mut story)?;
    traffic::stats_per_vm(&lab, &mut story)?;
    traffic::throughput(&lab, &mut story)?;
    // Declared after `lab`, so a failure closes these connections before the teardown.
    let live = drain::drain_and_back(&lab, &mut story)?;
    traffic::checksums_clean(&lab, &mut story)?;

    drop(live);
    setup::teardown_leaves_nothing(lab, &mut story)?;
    story.summary.seconds = started.elapsed().as_secs_f64();
    Ok(story.summary)
}
