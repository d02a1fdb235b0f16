//! The package's unit inside a booted [`Systemd`]: systemctl, its properties and journal;
//! and what a test must leave of the host as it found it.

use super::Systemd;
use anyhow::{bail, ensure, Context, Result};
use std::time::SystemTime;

pub const UNIT: &str = "forwarder.service";

impl Systemd {
    /// `systemctl ARGS` inside; on failure, the error with the unit's journal.
    pub fn systemctl(&self, args: &[&str]) -> Result<()> {
        let out = self.nsenter(&[&["systemctl"], args].concat())?;
        if !out.status.success() {
            bail!(
                "systemctl {} failed ({}): {}\njournal:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.journal()?
            );
        }
        Ok(())
    }

    /// One property of the unit (`systemctl show -p NAME --value`).
    pub fn show(&self, property: &str) -> Result<String> {
        let out = self.nsenter(&["systemctl", "show", "-p", property, "--value", UNIT])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn main_pid(&self) -> Result<u32> {
        let pid: u32 = self.show("MainPID")?.parse().context("MainPID")?;
        ensure!(pid != 0, "the unit has no main process");
        Ok(pid)
    }

    /// The unit's journal, messages only.
    pub fn journal(&self) -> Result<String> {
        let out = self.nsenter(&["journalctl", "-u", UNIT, "-o", "cat", "--no-pager", "-q"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// What the test must leave as it found it: the package's paths on the host (absent, or
/// with their size and time), the host's mounts where boot.sh mounts (the root file
/// system's options among them), and the host's interfaces.
pub fn host_view() -> Result<Vec<String>> {
    let mut view = Vec::new();
    for path in [
        "/usr/bin/forwarder",
        "/etc/forwarder",
        "/usr/lib/systemd/system/forwarder.service",
        "/etc/systemd/system/forwarder.service",
        "/var/lib/dpkg/info/forwarder.list",
        "/run/forwarder",
    ] {
        let meta = std::fs::metadata(path).ok();
        let stamp = |m: &std::fs::Metadata| {
            m.modified().ok().map(|t| t.duration_since(SystemTime::UNIX_EPOCH))
        };
        view.push(format!("{path}: {:?}", meta.map(|m| (m.len(), stamp(&m)))));
    }
    // The host's mounts where boot.sh mounts in its own namespace (a leak would show here).
    let ours = [
        "/",
        "/usr",
        "/etc",
        "/etc/forwarder",
        "/run",
        "/dev",
        "/tmp",
        "/var/tmp",
        "/sys",
        "/sys/fs/cgroup",
        "/sys/fs/bpf",
        "/proc/sys",
        "/proc/sys/net",
    ];
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let at = |l: &&str| l.split(' ').nth(4).is_some_and(|m| ours.contains(&m));
    view.extend(mounts.lines().filter(at).map(String::from));
    let out = crate::netns::run("ip", &["-o", "link", "show"])?;
    let links = String::from_utf8_lossy(&out.stdout);
    view.extend(links.lines().filter_map(|l| l.split(':').nth(1)).map(|n| n.trim().to_string()));
    Ok(view)
}
