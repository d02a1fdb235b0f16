//! Network namespaces made by a test and deleted when dropped, also when the test fails.

use anyhow::{bail, Context, Result};
use std::{
    fs::File,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command and fails with its stderr if it does not succeed.
pub fn run(cmd: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("spawning {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// A namespace named `fwt-<tag>-<pid>-<n>`: unique per test and per process, so parallel
/// tests and leftover runs never collide.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Self> {
        Self::with_prefix("fwt", tag)
    }

    /// A namespace named `<prefix>-<tag>-<pid>-<n>` (the demo uses its own prefix, so its
    /// namespaces are told apart from the tests' at a glance).
    pub fn with_prefix(prefix: &str, tag: &str) -> Result<Self> {
        let name = Self::unique_name(prefix, tag);
        run("ip", &["netns", "add", &name])?;
        Self::named(name)
    }

    /// A name for the network namespace of process `pid` (`ip netns attach`), made by
    /// someone else: a systemd booted in namespaces of its own (`crate::systemd`). Dropping
    /// it removes the name only; the namespace lives as long as its processes.
    pub fn attach(tag: &str, pid: u32) -> Result<Self> {
        let name = Self::unique_name("fwt", tag);
        run("ip", &["netns", "attach", &name, &pid.to_string()])?;
        Self::named(name)
    }

    /// The namespace just created as `name`, with its loopback up (deleted on drop from here).
    fn named(name: String) -> Result<Self> {
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn unique_name(prefix: &str, tag: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{tag}-{}-{n}", std::process::id())
    }

    /// The hosts file of this namespace: `ip netns exec` bind-mounts /etc/netns/<name>/hosts
    /// over /etc/hosts for what it runs, which is how a VM's private DNS zone is played here.
    /// Removed with the namespace.
    pub fn set_hosts(&self, entries: &[(std::net::Ipv4Addr, &str)]) -> Result<()> {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut text = String::from("127.0.0.1 localhost\n");
        for (ip, name) in entries {
            text += &format!("{ip} {name}\n");
        }
        let path = dir.join("hosts");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn etc_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }

    /// Runs `f` on a new thread inside this namespace and returns at once (for loops that
    /// live as long as the namespace, such as a load balancer's health prober).
    pub fn spawn<F>(&self, f: F) -> Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the namespace");
            f()
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A counter of `ifc`'s statistics, as `ip -s -j link` gives it: `direction` "rx" or
    /// "tx", `counter` such as "packets" or "dropped".
    pub fn link_counter(&self, ifc: &str, direction: &str, counter: &str) -> Result<u64> {
        let out = self.ip(&["-s", "-j", "link", "show", "dev", ifc])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ip -s -j link show dev {ifc}: not JSON"))?;
        v[0]["stats64"][direction][counter]
            .as_u64()
            .with_context(|| format!("no {direction} {counter} count for {ifc}"))
    }

    /// The namespace's count of TCP segments its stack dropped for a bad checksum
    /// (`TcpInCsumErrors` of /proc/net/snmp, as `nstat` shows it): every receiver's
    /// checksums are computed in software on the last veth (transmit offload off), so a
    /// wrong checksum written anywhere on the path ends up here.
    pub fn tcp_in_csum_errors(&self) -> Result<u64> {
        let out = self.exec(&["cat", "/proc/net/snmp"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
        let [names, values] = tcp[..] else {
            anyhow::bail!("{}: no Tcp lines in /proc/net/snmp:\n{text}", self.name);
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InCsumErrors")
            .with_context(|| format!("{}: no Tcp InCsumErrors in /proc/net/snmp", self.name))?
            .1
            .parse()
            .context("InCsumErrors is not a number")
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Result<Output> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(cmd);
        run("ip", &all)
    }

    /// A `Command` that runs inside the namespace (for daemons the test keeps running).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")]).map(|_| ())
    }

    /// The value of sysctl `key` inside the namespace, trimmed.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let out = self.exec(&["sysctl", "-n", key])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `f` on a fresh thread that has entered this namespace; sockets it creates stay in
    /// the namespace for their whole life, whichever thread uses them later.
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the test namespace");
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread inside namespace panicked"))
    }

    /// The index of `iface` inside the namespace.
    pub fn ifindex(&self, iface: &str) -> Result<u32> {
        let iface = iface.to_string();
        self.enter(move || forwarder::host::netif::ifindex(&iface))?.map_err(Into::into)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Creates a veth pair with one end in each namespace, both up, and with transmit checksum
/// offload off on both ends: a local socket's packets would otherwise carry partial
/// checksums, which a real NIC never delivers (see TOOLCHAIN.md).
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    run(
        "ip",
        &[
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ],
    )?;
    for (ns, ifc) in [(a, a_if), (b, b_if)] {
        ns.ip(&["link", "set", ifc, "up"])?;
        ns.exec(&["ethtool", "-K", ifc, "tx", "off"])?;
    }
    Ok(())
}
