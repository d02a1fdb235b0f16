//! The Azure NAT VM path in network namespaces, torn down in `Drop`:
//!
//! ```text
//!  client 10.1.0.2 ── 10.1.0.1 router 10.0.0.1 ── 10.0.0.4 natvm (one NIC, default via router)
//!                                   10.20.0.1 ── 10.20.0.11/12/13 brokers
//!                     (multi-NIC:   10.30.0.1 ── 10.30.0.4 natvm second NIC, brokers via it)
//! ```
//! The router plays the load balancer's backend network and the VPN towards on-prem.

use crate::netns::{veth, Netns};
use anyhow::{Context, Result};
use forwarder::datapath::Datapath;
use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
pub const NATVM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
pub const NATVM_SECOND: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 4);
pub const BROKERS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 20, 0, 11), Ipv4Addr::new(10, 20, 0, 12), Ipv4Addr::new(10, 20, 0, 13)];
/// The load balancer's backend ports, one per broker (seed: 9092, 9093, 9094 -> brokerN:9092).
pub const LISTEN_PORTS: [u16; 3] = [9092, 9093, 9094];
pub const BROKER_PORT: u16 = 9092;

pub struct Topology {
    pub client: Netns,
    pub router: Netns,
    pub natvm: Netns,
    pub broker: Netns,
    /// The NAT VM's interfaces (the first faces the load balancer).
    pub nat_ifaces: Vec<&'static str>,
    /// XDP_PASS programs on the router's ends of the NAT VM links (kept alive here).
    _peer_programs: Vec<Datapath>,
}

/// What the NAT VM's first interface (the one facing the load balancer) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicShape {
    /// One veth, GRO on: an Azure NIC without accelerated networking.
    Plain,
    /// Accelerated networking: `n0` (hv_netvsc's eth0) is a master device over a veth
    /// "VF" `vf0` that does GRO and hands the merged skbs up, as netvsc's rx_handler does.
    /// A bridge plays the master (this kernel has no bonding driver).
    Accelerated,
}

/// The VF under the accelerated NIC.
pub const VF: &str = "vf0";

impl Topology {
    /// `multi_nic`: the NAT VM reaches the brokers through a second interface, so
    /// forwarded packets leave by XDP_REDIRECT instead of XDP_TX.
    /// `peer_xdp`: attach XDP_PASS programs to the router's ends of the NAT VM links, which
    /// veth needs to receive native XDP_TX / XDP_REDIRECT frames promptly.
    pub fn new(tag: &str, multi_nic: bool, peer_xdp: bool) -> Result<Self> {
        Self::around(Netns::new(&format!("{tag}n"))?, tag, multi_nic, peer_xdp)
    }

    /// The topology with the NAT VM's first NIC in `shape`.
    pub fn with_shape(tag: &str, shape: NicShape, multi_nic: bool, peer_xdp: bool) -> Result<Self> {
        Self::build(Netns::new(&format!("{tag}n"))?, tag, shape, multi_nic, peer_xdp)
    }

    /// The topology around a NAT VM namespace made elsewhere: the network namespace of a
    /// systemd booted for the unit's test ([`crate::systemd`]).
    pub fn around(natvm: Netns, tag: &str, multi_nic: bool, peer_xdp: bool) -> Result<Self> {
        Self::build(natvm, tag, NicShape::Plain, multi_nic, peer_xdp)
    }

    fn build(
        natvm: Netns,
        tag: &str,
        shape: NicShape,
        multi_nic: bool,
        peer_xdp: bool,
    ) -> Result<Self> {
        let client = Netns::new(&format!("{tag}c"))?;
        let router = Netns::new(&format!("{tag}r"))?;
        let broker = Netns::new(&format!("{tag}b"))?;

        veth(&client, "c0", &router, "r_c")?;
        match shape {
            NicShape::Plain => veth(&router, "r_n", &natvm, "n0")?,
            NicShape::Accelerated => accelerated_nic(&router, &natvm)?,
        }
        veth(&router, "r_b", &broker, "b0")?;
        client.ip(&["addr", "add", "10.1.0.2/24", "dev", "c0"])?;
        client.ip(&["route", "add", "default", "via", "10.1.0.1"])?;
        router.ip(&["addr", "add", "10.1.0.1/24", "dev", "r_c"])?;
        router.ip(&["addr", "add", "10.0.0.1/24", "dev", "r_n"])?;
        router.ip(&["addr", "add", "10.20.0.1/24", "dev", "r_b"])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        natvm.ip(&["addr", "add", "10.0.0.4/24", "dev", "n0"])?;
        natvm.ip(&["route", "add", "default", "via", "10.0.0.1"])?;
        for b in BROKERS {
            broker.ip(&["addr", "add", &format!("{b}/24"), "dev", "b0"])?;
        }
        broker.ip(&["route", "add", "default", "via", "10.20.0.1"])?;

        let mut nat_ifaces = vec!["n0"];
        let mut router_ends = vec!["r_n"];
        if multi_nic {
            veth(&router, "r_n1", &natvm, "n1")?;
            router.ip(&["addr", "add", "10.30.0.1/24", "dev", "r_n1"])?;
            natvm.ip(&["addr", "add", "10.30.0.4/24", "dev", "n1"])?;
            natvm.ip(&["route", "add", "10.20.0.0/24", "via", "10.30.0.1"])?;
            nat_ifaces.push("n1");
            router_ends.push("r_n1");
        }

        // Azure's NIC (hv_netvsc) merges TCP segments with GRO before TC sees them; the NAT
        // VM's interfaces do the same here so every mode meets merged, CHECKSUM_PARTIAL skbs.
        for ifc in &nat_ifaces {
            natvm.exec(&["ethtool", "-K", ifc, "gro", "on"])?;
        }

        let mut peer_programs = Vec::new();
        if peer_xdp {
            for end in router_ends {
                peer_programs.push(router.enter(move || attach_xdp_pass(end))??);
            }
        }
        Ok(Topology { client, router, natvm, broker, nat_ifaces, _peer_programs: peer_programs })
    }

    /// Where this topology's forwarder pins its maps and links (bpffs is not per namespace,
    /// so each test has its own directory).
    pub fn pin_dir(&self) -> PathBuf {
        pin_dir(&self.natvm)
    }

    /// One of the forwarder's pinned maps, opened from the test (bpffs is not per namespace),
    /// for tests that read what the data path itself counts or caches.
    pub fn pinned_map(&self, name: &str) -> Result<aya::maps::MapData> {
        let path = forwarder::datapath::pins::Pins::new(self.pin_dir()).map(name);
        aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))
    }

    /// The forwarder's control socket and state file directory.
    pub fn run_dir(&self) -> PathBuf {
        run_dir(&self.natvm)
    }

    /// The config keys that keep this topology's forwarder apart from every other one.
    pub fn instance_keys(&self) -> String {
        instance_keys(&self.natvm)
    }

    /// The seed configuration for this topology.
    pub fn config(&self, mode: &str, snat_ip: &str) -> String {
        self.instance_keys() + &seed_config(&self.nat_ifaces, mode, snat_ip)
    }

    /// `forwarder unload` for the daemon of `config` (through it when it runs, offline
    /// otherwise); fails unless it succeeds and the pins are gone.
    pub fn unload(&self, config: &std::path::Path) -> Result<()> {
        unload(&self.natvm, config)
    }

    /// What `ip_fwd.sh` sets up in the NAT VM for the seed's rules, the reference the
    /// forwarder is measured against: DNAT per listen port to its broker, MASQUERADE (over
    /// `to_ports` when given), kernel forwarding on.
    pub fn ip_fwd(&self, to_ports: Option<&str>) -> Result<()> {
        let nat = &self.natvm;
        nat.sysctl("net.ipv4.ip_forward", "1")?;
        for (port, broker) in LISTEN_PORTS.iter().zip(BROKERS) {
            let to = format!("{broker}:{BROKER_PORT}");
            let port = port.to_string();
            let dnat = ["-p", "tcp", "--dport", &port, "-j", "DNAT", "--to-destination", &to];
            nat.exec(&[&["iptables", "-t", "nat", "-A", "PREROUTING"][..], &dnat].concat())?;
        }
        let mut masquerade = vec!["iptables", "-t", "nat", "-A", "POSTROUTING", "-p", "tcp"];
        masquerade.extend(["-j", "MASQUERADE"]);
        if let Some(ports) = to_ports {
            masquerade.extend(["--to-ports", ports]);
        }
        nat.exec(&masquerade)?;
        Ok(())
    }

    /// Fails unless every receiver's stack (client, brokers, NAT VM) counted 0 TCP
    /// checksum errors: the forwarder must never send a segment with a wrong checksum.
    pub fn assert_no_checksum_errors(&self) -> Result<()> {
        for ns in [&self.client, &self.broker, &self.natvm, &self.router] {
            let errors = ns.tcp_in_csum_errors()?;
            anyhow::ensure!(
                errors == 0,
                "{}: {errors} TCP segments arrived with a wrong checksum",
                ns.name()
            );
        }
        Ok(())
    }

    /// Fails if any netfilter NAT rule exists in the NAT VM: the forwarding must be ours.
    pub fn assert_no_netfilter_nat(&self) -> Result<()> {
        let out = self.natvm.exec(&["nft", "list", "ruleset"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            !text.contains("dnat") && !text.contains("masquerade") && !text.contains("snat"),
            "the NAT VM namespace has netfilter NAT rules:\n{text}"
        );
        Ok(())
    }
}

impl Drop for Topology {
    /// A test that failed half-way may leave its forwarder's pins; the namespaces (and
    /// with them the sysctls) go when the fields drop.
    fn drop(&mut self) {
        remove_leftovers(&self.natvm);
    }
}

/// `n0` a bridge over the veth `vf0` whose peer is the router's `r_n`. GRO on the VF, so
/// the bridge (and a program on it) receives merged, CHECKSUM_PARTIAL skbs as netvsc's eth0
/// does on Azure.
fn accelerated_nic(router: &Netns, natvm: &Netns) -> Result<()> {
    veth(router, "r_n", natvm, VF)?;
    natvm.ip(&["link", "add", "n0", "type", "bridge"])?;
    natvm.ip(&["link", "set", VF, "master", "n0"])?;
    natvm.ip(&["link", "set", "n0", "up"])?;
    natvm.exec(&["ethtool", "-K", VF, "gro", "on"])?;
    // With br_netfilter loaded, iptables would see the bridged frames.
    if natvm.exec(&["test", "-e", "/proc/sys/net/bridge/bridge-nf-call-iptables"]).is_ok() {
        natvm.sysctl("net.bridge.bridge-nf-call-iptables", "0")?;
    }
    Ok(())
}

/// Where the forwarder running in `ns` pins its maps and links (bpffs is not per namespace,
/// so each namespace's daemon has its own directory).
pub fn pin_dir(ns: &Netns) -> PathBuf {
    test_bpffs().join(ns.name())
}

/// The control socket and state file directory of the forwarder running in `ns`.
pub fn run_dir(ns: &Netns) -> PathBuf {
    std::env::temp_dir().join(format!("{}.run", ns.name()))
}

/// The config keys that keep the forwarder of `ns` apart from every other one.
pub fn instance_keys(ns: &Netns) -> String {
    format!(
        "pin_path = \"{}\"\ncontrol_socket = \"{}/control.sock\"\n",
        pin_dir(ns).display(),
        run_dir(ns).display()
    )
}

/// `forwarder unload` for the daemon of `config` in `ns` (through it when it runs, offline
/// otherwise); fails unless it succeeds and the pins are gone.
pub fn unload(ns: &Netns, config: &std::path::Path) -> Result<()> {
    let out = cli(ns, config, &["unload"])?;
    anyhow::ensure!(
        out.status.success(),
        "unload failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    anyhow::ensure!(!pin_dir(ns).exists(), "pins left after unload");
    Ok(())
}

/// The config file [`Daemon::start`] writes for the forwarder of `ns`.
pub fn config_path(ns: &Netns) -> PathBuf {
    std::env::temp_dir().join(format!("{}.toml", ns.name()))
}

/// Removes what a forwarder in `ns` may have left: its config file ([`Daemon::start`]), and
/// its pins and run directory when a test failed half-way.
pub fn remove_leftovers(ns: &Netns) {
    let _ = std::fs::remove_file(config_path(ns));
    if std::env::var_os("FWT_BPFFS").is_none() {
        return;
    }
    let _ = forwarder::datapath::pins::Pins::new(pin_dir(ns)).remove_all();
    let _ = std::fs::remove_dir_all(run_dir(ns));
}

/// An XDP_PASS program on `iface` (the peer of a native-XDP veth, which needs one to take
/// XDP_TX / XDP_REDIRECT frames); detached when the returned value drops.
pub fn attach_xdp_pass(iface: &str) -> Result<Datapath> {
    let mut dp = Datapath::load(1024)?;
    dp.xdp_program(forwarder_common::program_names::XDP_PASS)?
        .attach(iface, aya::programs::XdpMode::Driver)
        .with_context(|| format!("attaching XDP_PASS to {iface}"))?;
    Ok(dp)
}

/// The bpffs `cargo xtask test` mounts for the daemons under test ($FWT_BPFFS).
pub fn test_bpffs() -> PathBuf {
    let dir = std::env::var_os("FWT_BPFFS").map(PathBuf::from).expect(
        "FWT_BPFFS is not set: run the tests with `cargo xtask test`, which mounts a bpffs for them",
    );
    assert!(dir.is_dir(), "FWT_BPFFS={} is not a directory", dir.display());
    dir
}

/// The forwarder binary under test: $FORWARDER_BIN (set by `cargo xtask test`), else the
/// workspace's debug build.
pub fn forwarder_bin() -> PathBuf {
    let path = std::env::var_os("FORWARDER_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/forwarder"))
    });
    assert!(
        path.exists(),
        "forwarder binary not found at {}: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

/// The log of a daemon, filled line by line from its stderr.
pub type DaemonLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// The line `forwarder run` logs once it forwards (with NO_COLOR set), up to its fields. Not
/// just "forwarding": an error such as "setting forwarding/accept_local on n0: ..." has that
/// word too.
const READY: &str = " INFO forwarder::daemon: forwarding ";

/// Collects the stderr of a just-spawned `forwarder run` (piped) and waits until the daemon
/// logs that it forwards. Fails with the log when it exits or is not ready within `limit`.
pub fn wait_forwarding(child: &mut Child, limit: Duration) -> Result<DaemonLog> {
    let stderr = child.stderr.take().context("the daemon's stderr is not piped")?;
    let log = DaemonLog::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(READY) {
                let _ = tx.send(());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + limit;
    loop {
        if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            return Ok(log);
        }
        let text = || log.lock().unwrap().join("\n");
        if let Some(status) = child.try_wait()? {
            // Its last lines may still be on their way: the reader is done at end of file,
            // when it drops its sender.
            while rx.recv_timeout(Duration::from_secs(2)).is_ok() {}
            anyhow::bail!("forwarder exited with {status}:\n{}", text());
        }
        if Instant::now() > deadline {
            anyhow::bail!("forwarder not ready after {limit:?}:\n{}", text());
        }
    }
}

/// A `forwarder run` process inside a namespace, stopped with SIGTERM when dropped.
pub struct Daemon {
    child: Child,
    pub log: DaemonLog,
    /// The config file it runs with.
    pub config: PathBuf,
}

/// Runs `forwarder --config CONFIG ARGS` in `ns` and returns its output.
pub fn cli(ns: &Netns, config: &std::path::Path, args: &[&str]) -> Result<std::process::Output> {
    ns.command(forwarder_bin().to_str().expect("utf-8 path"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .with_context(|| format!("running forwarder {args:?}"))
}

impl Daemon {
    /// Starts the daemon with `config` (TOML text) and waits until it says it forwards.
    pub fn start(ns: &Netns, config: &str) -> Result<Daemon> {
        Self::start_under(ns, config, &[])
    }

    /// As [`Self::start`], through `wrapper` (see [`Self::spawn_under`]).
    pub fn start_under(ns: &Netns, config: &str, wrapper: &[String]) -> Result<Daemon> {
        let path = config_path(ns);
        std::fs::write(&path, config)?;
        Self::spawn_under(ns, &path, wrapper)
    }

    /// Starts the daemon on an existing config file (a restart) and waits until it forwards.
    pub fn spawn(ns: &Netns, path: &std::path::Path) -> Result<Daemon> {
        Self::spawn_under(ns, path, &[])
    }

    /// As [`Self::spawn`], with `forwarder run` started through `wrapper` (a command that
    /// execs the rest of its arguments, such as `setpriv ...`), so the PID is still the
    /// daemon's. An empty `wrapper` runs it as root with every capability.
    pub fn spawn_under(ns: &Netns, path: &std::path::Path, wrapper: &[String]) -> Result<Daemon> {
        let bin = forwarder_bin();
        let mut argv: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        argv.extend([bin.to_str().expect("utf-8 path"), "run", "--config"]);
        argv.push(path.to_str().expect("utf-8 path"));
        let mut child = ns
            .command(argv[0])
            .args(&argv[1..])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning forwarder")?;
        let log = match wait_forwarding(&mut child, Duration::from_secs(20)) {
            Ok(log) => log,
            Err(e) => {
                // Not ready in time: it must not outlive the test (it has exited otherwise).
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Daemon { child, log, config: path.to_path_buf() })
    }

    /// SIGTERM, then waits; returns the exit status. The data path stays in the kernel.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        self.terminate()
    }

    /// SIGKILL, as a crash or the OOM killer would; returns the exit status.
    pub fn kill9(mut self) -> Result<std::process::ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far, one line per line.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        // `ip netns exec` (and a wrapper) execs the daemon, so this PID is the daemon itself.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}

/// The configuration of the seed: one rule per broker, listen ports 9092..9094.
pub fn seed_config(interfaces: &[&str], mode: &str, snat_ip: &str) -> String {
    let ifaces: Vec<String> = interfaces.iter().map(|i| format!("{i:?}")).collect();
    let mut s = format!(
        "interface = [{}]\nmode = \"{mode}\"\nsnat_ip = \"{snat_ip}\"\nsnat_ports = \"40000-59999\"\nallowed_sources = [\"10.1.0.0/16\"]\nmss_clamp = 1360\n",
        ifaces.join(", ")
    );
    for (i, (port, broker)) in LISTEN_PORTS.iter().zip(BROKERS).enumerate() {
        s += &format!(
            "\n[[rule]]\nname = \"broker-{}\"\nlisten = {port}\ntarget = \"{broker}:{BROKER_PORT}\"\n",
            i + 1
        );
    }
    s
}
