//! The .deb under test: `$FWT_DEB` (`cargo xtask test` packages the binary it tests before
//! the privileged tests run), unpacked with `dpkg-deb -x` for boot.sh to lay over /usr and
//! /etc. The maintainer scripts do not run: they would only reload and query the host's
//! systemd (the package's unit is disabled and not started on install).

use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Where the package puts its files (relative to the unpacked tree).
pub const BINARY: &str = "usr/bin/forwarder";
pub const UNIT: &str = "usr/lib/systemd/system/forwarder.service";
pub const CONFFILE: &str = "etc/forwarder/forwarder.toml";

/// Where `cargo xtask test` writes the package.
const XTASK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/xtask-test-deb");

/// `$FWT_DEB`; without it the newest .deb `cargo xtask test` left in target/xtask-test-deb
/// (said on stderr, since it may come from an older build than the tree).
pub fn deb() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FWT_DEB").map(PathBuf::from) {
        if !path.is_file() {
            bail!("FWT_DEB={} is not a file", path.display());
        }
        return Ok(path);
    }
    let newest = std::fs::read_dir(XTASK_DIR)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    let Some(path) = newest else {
        bail!(
            "no .deb to install: FWT_DEB is not set and {XTASK_DIR} holds none. Run `cargo xtask \
             test` (it packages the binary it tests), or `cargo build -p forwarder && cargo deb \
             -p forwarder --no-build --profile dev --output target/xtask-test-deb`"
        );
    };
    eprintln!("FWT_DEB is not set: installing {}", path.display());
    Ok(path)
}

/// Unpacks `deb` into `into` and checks that binary, unit and conffile are there.
pub fn unpack(deb: &Path, into: &Path) -> Result<()> {
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .output()
        .context("running dpkg-deb (is dpkg installed?)")?;
    if !out.status.success() {
        bail!("dpkg-deb -x {}: {}", deb.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    for file in [BINARY, UNIT, CONFFILE] {
        if !into.join(file).is_file() {
            bail!("{} does not hold /{file}", deb.display());
        }
    }
    Ok(())
}
