//! The two NAT VMs: each runs `forwarder run` with the one shared config, as the VMs of one
//! backend pool do. A VM has its own /run and its own bpffs, so both daemons use the
//! default control socket and pin path of the shared file without meeting; the CLI reaches a
//! VM's daemon by entering that VM's mount and network namespaces (nsenter), as an SRE
//! would ssh to it.

use super::net::{Broker, HEALTH_PORT};
use crate::{
    netns::Netns,
    topology::{forwarder_bin, wait_forwarding, DaemonLog},
};
use anyhow::{bail, Context, Result};
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The shared `/etc/forwarder/forwarder.toml` of the pool: every broker by FQDN, the
/// defaults for socket and pins, the probe port the load balancer uses.
pub fn shared_config(brokers: &[Broker]) -> String {
    let mut s = String::from(
        "# One config for both NAT VMs of the backend pool (written by the lab).\n\
         interface = \"eth0\"\n\
         mode = \"auto\"\n\
         listen_ip = \"auto\"\n\
         snat_ip = \"auto\"\n\
         snat_ports = \"40000-59999\"\n\
         # Only the Private Link NAT addresses reach the rules.\n\
         allowed_sources = [\"10.0.0.0/24\"]\n\
         # The on-prem link's MTU is 1400.\n\
         mss_clamp = 1360\n",
    );
    s += &format!("health = \"0.0.0.0:{HEALTH_PORT}\"\nmetrics = \"127.0.0.1:9464\"\n");
    for b in brokers {
        s += &format!(
            "\n[[rule]]\nname = \"broker-{}\"\nlisten = {}\ntarget = \"{}:9092\"\n",
            b.id, b.backend_port, b.fqdn
        );
    }
    s
}

pub struct NatVm {
    pub name: &'static str,
    child: Child,
    pub log: DaemonLog,
    config: PathBuf,
}

impl NatVm {
    /// Starts the daemon in `ns` with its own /run (tmpfs) and bpffs, and waits until it
    /// forwards.
    pub fn start(name: &'static str, ns: &Netns, config: &Path) -> Result<NatVm> {
        let bin = forwarder_bin();
        // `ip netns exec` gives the command a mount namespace of its own (with the
        // namespace's hosts file); the mounts made here stay inside it.
        let script = "mount -t tmpfs tmpfs /run && mount -t bpf bpf /sys/fs/bpf && exec \"$0\" run --config \"$1\"";
        let mut cmd = ns.command("sh");
        // SIGTERM: the daemon exits and its private bpffs, pins and all, goes with it.
        super::die_with_lab(&mut cmd, libc::SIGTERM);
        let mut child = cmd
            .args(["-c", script])
            .arg(&bin)
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C on the demo reaches the demo only, which then
            // tears everything down in order.
            .process_group(0)
            .spawn()
            .context("spawning forwarder")?;
        let log = wait_forwarding(&mut child, Duration::from_secs(30))
            .with_context(|| format!("{name}: starting forwarder"))?;
        Ok(NatVm { name, child, log, config: config.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `forwarder ARGS` on this VM, next to its daemon.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new("nsenter")
            .args(["--target", &self.pid().to_string(), "--mount", "--net", "--"])
            .arg(forwarder_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .with_context(|| format!("{}: running forwarder {args:?}", self.name))
    }

    /// `forwarder ARGS --json`, parsed; fails with the command's stderr.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli_ok(&all)?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{}: forwarder {all:?} printed no JSON", self.name))
    }

    /// `forwarder ARGS`, which must succeed; its output.
    pub fn cli_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "{}: forwarder {args:?} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Takes the program out of the kernel (`forwarder unload`, which also ends the daemon),
    /// then makes sure the process is gone.
    pub fn unload(mut self) -> Result<()> {
        let unloaded = self.cli_ok(&["unload"]).map(drop);
        let exited = self.wait_exit(Duration::from_secs(10));
        unloaded.and(exited)
    }

    fn wait_exit(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{}: the daemon did not exit after unload; killed it", self.name)
    }
}

impl Drop for NatVm {
    /// A failed run: SIGTERM, then SIGKILL. Its pins live in its own bpffs, which goes with
    /// its mount namespace, so no program outlives the lab.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
