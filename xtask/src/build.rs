//! `cargo xtask build` and `cargo xtask run`.

use crate::exec::{as_root, cargo, workspace_root};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Builds the daemon (and with it the kernel program); returns the binary's path.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "--package", "forwarder"];
    if release {
        args.push("--release");
    }
    cargo(&args)?;
    Ok(workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("forwarder"))
}

pub fn run(release: bool, args: &[String]) -> Result<()> {
    // The daemon attaches to whatever interface its config names. Without an explicit
    // config it would read /etc/forwarder/forwarder.toml and could touch this machine's own
    // interface (the one carrying your session): refuse instead.
    if args.first().map(String::as_str) == Some("run")
        && !args.iter().any(|a| a.starts_with("--config"))
    {
        bail!("refusing to run the daemon without --config: give a config whose interface lives in a namespace you made (cargo xtask run -- run --config PATH)");
    }
    if args.is_empty() {
        bail!("usage: cargo xtask run -- <forwarder arguments>, e.g. `cargo xtask run -- check-config --config x.toml`");
    }
    let bin = build(release)?;
    as_root(&bin, args, &[])
}
