//! The cgroup2 directory a booted systemd gets as the root of its cgroup namespace: a child
//! of the test's own cgroup, removed (with what systemd made below it) when dropped.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// `<the test's cgroup2 directory>/<name>`. The cgroup2 hierarchy is /sys/fs/cgroup on
    /// a unified host, /sys/fs/cgroup/unified on a hybrid one.
    pub fn create(name: &str) -> Result<Self> {
        let own =
            std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            bail!("this process is in no cgroup2 hierarchy (/proc/self/cgroup: {own:?}): systemd needs one");
        };
        let Some(root) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|m| m.join("cgroup.procs").is_file())
        else {
            bail!("no cgroup2 file system at /sys/fs/cgroup or /sys/fs/cgroup/unified: systemd needs one");
        };
        let dir = root.join(path.trim_start_matches('/')).join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Cgroup { dir })
    }

    /// Its `cgroup.procs`: a process writing its PID there moves itself in.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for Cgroup {
    /// Removes the tree deepest first, once every process in it is gone (the caller kills
    /// them first); retries briefly, as a dying process leaves its cgroup a moment late.
    fn drop(&mut self) {
        for _ in 0..50 {
            if remove_tree(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("could not remove the cgroup {}", self.dir.display());
    }
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        entries => entries?,
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}
