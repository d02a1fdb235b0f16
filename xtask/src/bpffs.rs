//! The throwaway bpffs the tests' and benchmarks' daemons pin into.

use crate::exec::{exec, root_command};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

const TEST_BPFFS: &str = "/run/forwarder-tests-bpffs";

/// Runs `f` with a bpffs of its own mounted at TEST_BPFFS-<pid>, unmounted after it
/// whatever `f` returned. One per xtask process: a `cargo xtask bench` beside a `cargo xtask
/// test` (two work trees on one machine) must not unmount the other's bpffs under it.
/// The daemons of the tests and benchmarks pin there: /sys/fs/bpf is not always mounted,
/// and `ip netns exec` gives each process a private /sys, which would lose pins across
/// daemon restarts.
pub fn with_test_bpffs(f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let bpffs = PathBuf::from(format!("{TEST_BPFFS}-{}", std::process::id()));
    mount_bpffs(&bpffs)?;
    let result = f(&bpffs);
    let unmounted = unmount_bpffs(&bpffs);
    result.and(unmounted)
}

fn mount_bpffs(dir: &Path) -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*dir.to_string_lossy()));
    if mounted {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let what = format!("mounting a bpffs at {} (the tests need root)", dir.display());
    exec(root_command("mount").args(["-t", "bpf", "bpf"]).arg(dir), &what)
}

fn unmount_bpffs(dir: &Path) -> Result<()> {
    exec(root_command("umount").arg(dir), &format!("unmounting {}", dir.display()))?;
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
