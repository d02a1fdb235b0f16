//! A real systemd, PID 1 of namespaces of the test's own, with the .deb installed in its
//! mount namespace only: where `tests/tests/systemd_unit.rs` runs the package's unit.
//!
//! - `boot.sh`: PID 1 until it execs systemd. Lays the package over /usr and /etc, makes the
//!   host's file systems read-only, gives systemd its own /run, /tmp, /dev, /sys, cgroup2 and
//!   bpffs, and masks the units that would reach past the namespaces.
//! - `cgroup.rs`: the cgroup2 directory that becomes the root of systemd's cgroup namespace.
//! - `package.rs`: finding the .deb and unpacking it.
//!
//! The test reaches inside with `nsenter -t PID -a` and through `/proc/PID/root`, and names
//! systemd's network namespace (`ip netns attach`) to build the topology around it. Dropping
//! the [`Systemd`] SIGKILLs its PID 1, which ends every process of the namespaces; with them
//! go the mounts, the bpffs and its pins. The test's process dying does the same (the
//! parent-death signal of `unshare`, passed on by `--kill-child`).

mod cgroup;
pub mod package;
mod unit;

pub use unit::{host_view, UNIT};

use crate::netns::Netns;
use anyhow::{bail, Context, Result};
use cgroup::Cgroup;
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

const BOOT_SCRIPT: &str = include_str!("boot.sh");
const SYSTEMD: &str = "/lib/systemd/systemd";
/// Bound on each step of the boot; systemd reaches basic.target in well under a second here.
const BOOT_LIMIT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Systemd {
    /// `unshare`, whose only child is PID 1 of the new PID namespace.
    unshare: Child,
    /// PID 1 of the namespaces, as the host sees it.
    pid: u32,
    /// Both removed after the kill (fields drop after `Drop::drop`, in this order).
    _cgroup: Cgroup,
    /// The unpacked package, boot.sh, the console and unshare's output.
    dir: tempfile::TempDir,
}

impl Systemd {
    /// Boots systemd with the package under test installed and waits until
    /// `systemctl is-system-running` says `running`.
    pub fn boot() -> Result<Systemd> {
        Self::boot_with(Install::Laid(package::deb()?))
    }

    /// Boots systemd with nothing of the package laid, and /usr, /etc and /var writable in
    /// its mount namespace: the test installs and upgrades packages with [`Self::dpkg`].
    pub fn boot_for_dpkg() -> Result<Systemd> {
        Self::boot_with(Install::Dpkg)
    }

    fn boot_with(install: Install) -> Result<Systemd> {
        for tool in ["unshare", "nsenter", "setpriv", "dpkg-deb", "findmnt"] {
            if crate::netns::run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
                bail!("{tool} is missing: install util-linux and dpkg (bash .ci/setup.sh does)");
            }
        }
        if !Path::new(SYSTEMD).is_file() {
            bail!("{SYSTEMD} is missing: install the `systemd` package (bash .ci/setup.sh does)");
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("fwt-systemd-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .with_context(|| format!("creating a scratch directory for {name}"))?;
        let cgroup = Cgroup::create(&name)?;
        let unshare = spawn(dir.path(), &install, &cgroup)?;
        // From here on Drop cleans up; PID 0 until PID 1 is known.
        let mut sd = Systemd { unshare, pid: 0, _cgroup: cgroup, dir };
        sd.pid = sd.find_pid1()?;
        sd.wait_running()?;
        Ok(sd)
    }

    /// PID 1 of the namespaces, as the host sees it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `path` inside systemd's mount namespace, reached from the host.
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid))
    }

    /// A name for systemd's network namespace, to build a topology around.
    pub fn netns(&self, tag: &str) -> Result<Netns> {
        Netns::attach(tag, self.pid)
    }

    /// Runs `cmd` in all of systemd's namespaces; its output, whatever its exit status.
    pub fn nsenter(&self, cmd: &[&str]) -> Result<Output> {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-a", "--"])
            .args(cmd)
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .env("NO_COLOR", "1")
            .output()
            .with_context(|| format!("running {cmd:?} in systemd's namespaces"))
    }

    /// `dpkg -i DEB` inside (non-interactive, keeping a changed conffile as an unattended
    /// upgrade does), with `env` added: its output, whatever its exit status.
    pub fn dpkg_install(&self, deb: &Path, env: &[(&str, &str)]) -> Result<Output> {
        let deb = deb.canonicalize().with_context(|| format!("{}", deb.display()))?;
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-a", "--", "env"]);
        cmd.arg("DEBIAN_FRONTEND=noninteractive");
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(["dpkg", "--force-confold", "-i"]).arg(&deb);
        cmd.output().with_context(|| format!("running dpkg -i {} inside", deb.display()))
    }

    /// What systemd and boot.sh wrote to the console, and unshare to its output.
    pub fn console(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("console"), read("unshare.out"))
    }

    /// The host PID of unshare's child, once it runs systemd (boot.sh has finished).
    fn find_pid1(&mut self) -> Result<u32> {
        let unshare = self.unshare.id();
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            let children = format!("/proc/{unshare}/task/{unshare}/children");
            let child = std::fs::read_to_string(children).unwrap_or_default();
            if let Some(pid) = child.split_whitespace().next().and_then(|p| p.parse().ok()) {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                if exe.ends_with("systemd/systemd") {
                    return Ok(pid);
                }
            }
            if let Some(status) = self.unshare.try_wait()? {
                bail!("boot.sh failed ({status}):\n{}", self.console());
            }
            if Instant::now() > deadline {
                bail!("systemd did not start within {BOOT_LIMIT:?}:\n{}", self.console());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_running(&self) -> Result<()> {
        let deadline = Instant::now() + BOOT_LIMIT;
        let mut state = String::new();
        while Instant::now() < deadline {
            let out = self.nsenter(&["systemctl", "is-system-running"])?;
            state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                "running" => return Ok(()),
                "degraded" | "maintenance" | "stopping" => break,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let failed = self.nsenter(&["systemctl", "--failed", "--no-legend"])?;
        let journal = self.nsenter(&["journalctl", "-b", "--no-pager", "-q"])?;
        bail!(
            "systemd is {state:?}, not running; failed units:\n{}\njournal:\n{}\nconsole:\n{}",
            String::from_utf8_lossy(&failed.stdout),
            String::from_utf8_lossy(&journal.stdout),
            self.console()
        )
    }
}

/// How the package gets into systemd's file systems.
enum Install {
    /// Unpacked and laid over /usr and /etc before systemd starts.
    Laid(PathBuf),
    /// Left to the test's `dpkg -i`.
    Dpkg,
}

impl Drop for Systemd {
    /// SIGKILL to PID 1 ends the PID namespace; unshare then exits and is reaped, and the
    /// mount namespace (bpffs, overlays) goes with the last process in it.
    fn drop(&mut self) {
        if matches!(self.unshare.try_wait(), Ok(None)) {
            if self.pid != 0 {
                // While unshare runs it has not reaped PID 1: the PID is still systemd's.
                let pid = nix::unistd::Pid::from_raw(self.pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            } else {
                // Not known yet: unshare's --kill-child takes PID 1 with it.
                let _ = self.unshare.kill();
            }
        }
        let _ = self.unshare.wait();
    }
}

/// Writes boot.sh and unpacks the package into `dir`, then starts `unshare` inside
/// `cgroup`: PID 1 of the new namespaces runs boot.sh, which execs systemd.
fn spawn(dir: &Path, install: &Install, cgroup: &Cgroup) -> Result<Child> {
    let pkg = match install {
        Install::Laid(deb) => {
            let pkg = dir.join("pkg");
            package::unpack(deb, &pkg)?;
            pkg
        }
        Install::Dpkg => PathBuf::from("dpkg"),
    };
    let script = dir.join("boot.sh");
    std::fs::write(&script, BOOT_SCRIPT)?;
    let console = dir.join("console");
    std::fs::write(&console, "")?;
    let out = std::fs::File::create(dir.join("unshare.out"))?;
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        // Into the cgroup first, so that it becomes the root of the new cgroup namespace.
        "echo $$ > \"$1\" && exec unshare --pid --fork --kill-child --mount --propagation \
         private --net --uts --ipc --cgroup --mount-proc /bin/sh \"$2\" \"$3\" \"$4\"",
        "sh",
    ])
    .arg(cgroup.procs())
    .arg(&script)
    .arg(&pkg)
    .arg(&console)
    .stdin(Stdio::null())
    .stdout(out.try_clone()?)
    .stderr(out);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
    // parent; it makes the test thread's end (a crash included) SIGKILL unshare, whose
    // --kill-child passes it on to PID 1.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("spawning unshare")
}
