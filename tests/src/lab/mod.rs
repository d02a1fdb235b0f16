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

pub mod brokers;
pub mod clients;
pub mod lb;
pub mod natvm;
pub mod net;

use crate::{bench::median, netns::Netns};
use anyhow::{bail, ensure, Context, Result};
use brokers::Tansu;
use forwarder::kafka;
use lb::LoadBalancer;
use natvm::NatVm;
use net::{LabNet, NAT_VMS};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
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

/// Runs the lab; `say` gets one line per step.
pub fn run(opts: &Options, say: &mut dyn FnMut(String)) -> Result<Summary> {
    ensure!((1..=3).contains(&opts.brokers), "the lab has 1 to 3 brokers");
    let started = Instant::now();
    brokers::tansu_bin()?;
    for gone in sweep_stale(&opts.prefix)? {
        say(format!("removed {gone}, left by a lab run that was killed"));
    }
    let dir = std::env::temp_dir().join(format!("{}-{}", opts.prefix, std::process::id()));
    // Fresh: a store left by an earlier run with this pid would break the order checks.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut lab = Lab { lb: None, vms: Vec::new(), brokers: Vec::new(), net: None, dir };

    say(format!(
        "topology: client, Private Link + load balancer, {} NAT VMs, {} on-prem brokers",
        NAT_VMS.len(),
        opts.brokers
    ));
    // Owned by `lab` at once, so any failure from here on tears down in order.
    let net: &LabNet = lab.net.insert(LabNet::build(&opts.prefix, opts.brokers)?);
    let names = net.names();
    let brokers = net.brokers.clone();
    for b in &brokers {
        check_interrupt()?;
        lab.brokers.push(Tansu::start(&net.onprem, b, &lab.dir)?);
        say(format!("broker{}: tansu on {}:9092, advertised as {}:9092", b.id, b.onprem, b.fqdn));
    }
    let config = lab.dir.join("forwarder.toml");
    std::fs::write(&config, natvm::shared_config(&brokers))?;
    for ((name, addr), ns) in NAT_VMS.iter().zip(&net.natvms) {
        check_interrupt()?;
        let vm = NatVm::start(name, ns, &config)?;
        let status = vm.cli_json(&["status"])?;
        let mode = status["interfaces"][0]["mode"].as_str().unwrap_or("?").to_string();
        // auto: native XDP on the plain NIC; over the VF that merges segments, TC (generic
        // XDP would send wrong checksums there, and the bridge has no native XDP).
        let want = if *name == net::ACCELERATED_VM { "tc" } else { "xdp" };
        ensure!(mode == want, "{name}: auto chose {mode}, expected {want}: {status}");
        say(format!(
            "{name} ({addr}): forwarder running (pid {}, mode {mode}), config {}",
            vm.pid(),
            config.display()
        ));
        lab.vms.push(vm);
    }
    let lb = lab.lb.insert(LoadBalancer::start(&net.azure, &brokers)?);
    lb.wait_pool(&[true, true], Duration::from_secs(15))?;
    say("load balancer: probe on :8080 from 168.63.129.16 admits natvm-a and natvm-b".into());
    let mut summary = Summary { brokers: brokers.len(), ..Default::default() };

    // 1. kafka-python, the independent client: every broker, produce + consume in order.
    let mut python_ok = 0;
    for b in &brokers {
        check_interrupt()?;
        let r = clients::python(
            &net.client,
            "roundtrip",
            b,
            "lab-orders",
            opts.messages,
            opts.message_size,
            opts.partitions,
        )?;
        let advertised = vec![format!("{}:9092", b.fqdn)];
        ensure!(
            r.brokers == advertised,
            "broker{} advertised {:?}, not {advertised:?}",
            b.id,
            r.brokers
        );
        ensure!(
            r.produced == opts.messages as u64 && r.consumed == Some(opts.messages as u64),
            "broker{}: produced {} and consumed {:?} of {}",
            b.id,
            r.produced,
            r.consumed,
            opts.messages
        );
        ensure!(r.in_order == Some(true), "broker{}: messages out of order", b.id);
        summary.python_messages += r.produced;
        python_ok += 1;
        say(format!(
            "kafka-python via {}:9092: {} messages produced and consumed in order over {} partitions",
            b.fqdn, r.produced, opts.partitions
        ));
    }

    // 2. The project's own client: metadata through the path, then each advertised broker.
    check_interrupt()?;
    let rust_messages = 100.min(opts.messages);
    let check = clients::rust_check(&net.client, &brokers, "lab-rust", rust_messages)?;
    // Each via is one broker's cluster; its metadata must list that broker by its FQDN, and
    // the client must have reached it through its private endpoint and moved the messages.
    let mut rust_reached = 0;
    for (b, via) in brokers.iter().zip(check["vias"].as_array().context("kafka check: vias")?) {
        let listed = via["brokers"].as_array().context("kafka check: brokers")?;
        ensure!(listed.len() == 1, "broker{}: metadata lists {} brokers", b.id, listed.len());
        let r = &listed[0];
        ensure!(
            r["advertised"] == format!("{}:9092", b.fqdn).as_str()
                && r["connected"] == format!("{}:9092", b.private_endpoint).as_str()
                && r["reachable"] == true,
            "broker{} through the Rust client: {r}",
            b.id
        );
        let produced = r["produce"]["produced"].as_u64().unwrap_or(0);
        let consumed = r["produce"]["consumed"].as_u64().unwrap_or(0);
        ensure!(
            produced == rust_messages as u64 && consumed == produced,
            "broker{}: the Rust client produced {produced} and read back {consumed} of {rust_messages}",
            b.id
        );
        summary.rust_messages += consumed;
        rust_reached += 1;
        say(format!(
            "forwarder kafka check via {}:9092: reached {} in {:.1} ms, {consumed} messages produced and read back",
            b.fqdn,
            r["connected"].as_str().unwrap_or("?"),
            r["latency_ms"].as_f64().unwrap_or(0.0)
        ));
    }
    summary.brokers_reached = python_ok.min(rust_reached);

    // 3. Stats, per rule and per VM.
    say("forwarder stats per NAT VM:".into());
    for vm in &lab.vms {
        let rows = vm.cli_json(&["stats"])?;
        say(format!("  {}:", vm.name));
        for r in rows.as_array().context("stats --json is an array")? {
            let c = |k: &str| r["counters"][k].as_u64().unwrap_or(0);
            say(format!(
                "    {:<10} conns {:>4}  packets {:>7}  bytes {:>10}  reply bytes {:>10}  active {:>3}",
                r["name"].as_str().unwrap_or("?"),
                c("new_conns"),
                c("packets"),
                c("bytes"),
                c("reply_bytes"),
                r["active_flows"].as_u64().unwrap_or(0)
            ));
        }
    }

    // 4. Throughput: the same client and broker, through the forwarder and direct, in turns,
    // with kafka-python (the independent client) and the Rust client (faster, so more of the
    // path's own cost shows).
    let mut py = [Vec::new(), Vec::new()];
    let mut rs = [Vec::new(), Vec::new()];
    let b = &brokers[0];
    for round in 0..opts.bench_rounds {
        for (i, (ns, path)) in
            [(&net.direct, "direct"), (&net.client, "forwarded")].into_iter().enumerate()
        {
            check_interrupt()?;
            let topic = format!("lab-bench-py-{path}-{round}");
            py[i].push(
                clients::python(ns, "produce", b, &topic, opts.bench_messages, 1000, 1)?.mb_per_s,
            );
            let topic = format!("lab-bench-rs-{path}-{round}");
            rs[i].push(clients::rust_produce_mb_s(ns, b, &topic, opts.bench_messages)?);
        }
    }
    let [mut py_direct, mut py_forwarded] = py;
    let [mut rs_direct, mut rs_forwarded] = rs;
    summary.throughput = Throughput {
        direct_mb_s: median(&mut py_direct),
        forwarded_mb_s: median(&mut py_forwarded),
    };
    summary.rust_throughput = Throughput {
        direct_mb_s: median(&mut rs_direct),
        forwarded_mb_s: median(&mut rs_forwarded),
    };
    for (client, t) in
        [("kafka-python", &summary.throughput), ("Rust client", &summary.rust_throughput)]
    {
        say(format!(
            "produce throughput, {client}, {} x 1000 B, median of {}: direct {:.2} MB/s, through the forwarder {:.2} MB/s ({:.0} %)",
            opts.bench_messages,
            opts.bench_rounds,
            t.direct_mb_s,
            t.forwarded_mb_s,
            t.ratio() * 100.0
        ));
    }

    // 5. Drain natvm-a: its probe fails, the LB takes it out, new flows go to natvm-b, and
    // connections opened before the drain (hash-spread over both VMs) keep working.
    check_interrupt()?;
    let mut live = LiveConnections::open(&net.client, &brokers, LIVE_CONNECTIONS)?;
    let before = new_conns_per_vm(&lab.vms)?;
    // As a rolling upgrade does: drain and wait until the LB has taken the VM out (the
    // lab's probe runs every 500 ms).
    let wait = ["--wait", "--probe-interval", "500ms", "--probe-threshold", "2"];
    lab.vms[0].cli_ok(&[&["drain"][..], &wait, &["--timeout", "20s"]].concat())?;
    lb.wait_pool(&[false, true], Duration::from_secs(5))?;
    let status = lab.vms[0].cli_json(&["status"])?;
    ensure!(status["drained"] == true, "natvm-a status after drain: {status}");
    say(format!(
        "natvm-a drained: the probe fails, the LB sends new flows to natvm-b only ({} flows left on natvm-a)",
        status["active_flows"].as_u64().unwrap_or(0)
    ));
    for b in &brokers {
        check_interrupt()?;
        let r = clients::python(
            &net.client,
            "roundtrip",
            b,
            "lab-drain",
            opts.messages,
            opts.message_size,
            opts.partitions,
        )?;
        ensure!(
            r.consumed == Some(opts.messages as u64) && r.in_order == Some(true),
            "broker{} while natvm-a is drained: {r:?}",
            b.id
        );
        summary.python_messages += r.produced;
    }
    let kept = live.produce_again()?;
    summary.live_connections_kept = kept;
    say(format!(
        "{kept} connections opened before the drain, over both VMs, kept producing through it"
    ));
    let after = new_conns_per_vm(&lab.vms)?;
    for (vm, n) in &after {
        summary.conns_while_drained.insert(vm.clone(), n - before.get(vm).copied().unwrap_or(0));
    }
    ensure!(
        summary.conns_while_drained["natvm-a"] == 0 && summary.conns_while_drained["natvm-b"] > 0,
        "while natvm-a was drained, new connections went {:?}",
        summary.conns_while_drained
    );
    say(format!(
        "traffic continued through natvm-b: {} new connections there, 0 on natvm-a",
        summary.conns_while_drained["natvm-b"]
    ));
    lab.vms[0].cli_ok(&["undrain"])?;
    lb.wait_pool(&[true, true], Duration::from_secs(10))?;
    say("natvm-a undrained: back in the pool".into());
    summary.conns_per_vm = new_conns_per_vm(&lab.vms)?;

    // Every receiver's stack verified every TCP checksum (each veth computes them in
    // software): none may have found one wrong.
    let mut receivers: Vec<&Netns> = vec![&net.client, &net.direct, &net.azure, &net.onprem];
    receivers.extend(&net.natvms);
    for ns in receivers {
        let errors = ns.tcp_in_csum_errors()?;
        ensure!(errors == 0, "{}: {errors} TCP segments arrived with a wrong checksum", ns.name());
    }
    say("0 TCP checksum errors at every receiver (Spark, VNet, NAT VMs, on-prem)".into());

    // 6. Teardown, checked: no daemon, broker, namespace, hosts file or lab file left.
    drop(live);
    let mut pids: Vec<u32> = lab.vms.iter().map(NatVm::pid).collect();
    pids.extend(lab.brokers.iter().map(Tansu::pid));
    let dir = lab.dir.clone();
    lab.lb.take();
    for vm in lab.vms.drain(..) {
        vm.unload()?;
    }
    drop(lab);
    let left = net::namespaces_with_prefix(&opts.prefix)?;
    let ours: Vec<&String> = left.iter().filter(|n| names.contains(n)).collect();
    ensure!(ours.is_empty(), "namespaces left after teardown: {ours:?}");
    let etc: Vec<&String> =
        names.iter().filter(|n| Path::new("/etc/netns").join(n).exists()).collect();
    ensure!(etc.is_empty(), "/etc/netns entries left after teardown: {etc:?}");
    ensure!(!dir.exists(), "{} left after teardown", dir.display());
    for pid in pids {
        // Every child was reaped by its owner's drop, so a live /proc entry would be a
        // process that outlived its handle.
        ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} (a daemon or broker) still running after teardown"
        );
    }
    say("teardown: daemons unloaded, brokers stopped, namespaces, hosts files and lab files removed"
        .into());
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Connections opened before the drain; their produce after it proves established flows
/// keep working on a drained VM (and on the other one).
const LIVE_CONNECTIONS: usize = 8;

struct LiveConnections {
    conns: Vec<(kafka::Connection, String)>,
}

impl LiveConnections {
    /// `per_broker` connections to every broker's private endpoint from `ns`, each producing
    /// one message to its own topic.
    fn open(ns: &crate::netns::Netns, brokers: &[net::Broker], per_broker: usize) -> Result<Self> {
        let targets: Vec<(String, String)> = brokers
            .iter()
            .flat_map(|b| {
                (0..per_broker).map(move |i| {
                    (format!("{}:9092", b.private_endpoint), format!("lab-live-{}-{i}", b.id))
                })
            })
            .collect();
        let conns = ns.enter(move || -> Result<Vec<(kafka::Connection, String)>> {
            let mut out = Vec::new();
            for (addr, topic) in targets {
                let mut c = kafka::Connection::connect(
                    &addr,
                    &kafka::Security::default(),
                    Duration::from_secs(5),
                )?;
                c.create_topic(&topic, 1)?;
                out.push((c, topic));
            }
            Ok(out)
        })??;
        let mut live = LiveConnections { conns };
        live.produce(b"before the drain")?;
        Ok(live)
    }

    fn produce(&mut self, value: &[u8]) -> Result<()> {
        for (c, topic) in &mut self.conns {
            clients::produce_when_ready(c, topic, &[value.to_vec()])?;
        }
        Ok(())
    }

    /// Produces on every connection again and reads both messages back on it; the count.
    fn produce_again(&mut self) -> Result<usize> {
        self.produce(b"after the drain")?;
        for (c, topic) in &mut self.conns {
            let records = c.fetch(topic, 0, 0, 1 << 20)?;
            let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
            ensure!(
                values == [&b"before the drain"[..], &b"after the drain"[..]],
                "{topic} on {}: read back {values:?}",
                c.addr()
            );
        }
        Ok(self.conns.len())
    }
}

/// Removes what a killed lab run left: namespaces `<prefix>-<role>-<pid>-<n>` (with their
/// /etc/netns entries) and `/tmp/<prefix>-<pid>` whose pid is no longer running. Its
/// brokers and daemons died with it (they get a parent-death signal).
fn sweep_stale(prefix: &str) -> Result<Vec<String>> {
    let dead = |pid: &str| !Path::new("/proc").join(pid).exists();
    let mut removed = Vec::new();
    for name in net::namespaces_with_prefix(prefix)? {
        let parts: Vec<&str> = name.rsplitn(3, '-').collect();
        if let [_, pid, _] = parts[..] {
            if pid.chars().all(|c| c.is_ascii_digit()) && dead(pid) {
                crate::netns::run("ip", &["netns", "del", &name])?;
                let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&name));
                removed.push(format!("namespace {name}"));
            }
        }
    }
    for entry in std::fs::read_dir(std::env::temp_dir())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(&format!("{prefix}-")) {
            if pid.chars().all(|c| c.is_ascii_digit()) && dead(pid) {
                std::fs::remove_dir_all(entry.path())?;
                removed.push(entry.path().display().to_string());
            }
        }
    }
    Ok(removed)
}

/// New connections each VM has forwarded (all rules), from `forwarder stats --json`.
fn new_conns_per_vm(vms: &[NatVm]) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for vm in vms {
        let rows = vm.cli_json(&["stats"])?;
        let n = rows
            .as_array()
            .context("stats --json is an array")?
            .iter()
            .map(|r| r["counters"]["new_conns"].as_u64().unwrap_or(0))
            .sum();
        out.insert(vm.name.to_string(), n);
    }
    Ok(out)
}
