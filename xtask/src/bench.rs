//! `cargo xtask bench` and `cargo xtask demo`: the tests crate's bench and demo binaries,
//! run as root.

use crate::{
    bpffs::with_test_bpffs,
    build::build,
    exec::{as_root, as_root_command, cargo, workspace_root},
};
use anyhow::{Context, Result};
use std::path::Path;

/// `cargo xtask bench`: tests/src/bench, written to BENCHMARKS.md (with `--quick`, to
/// target/bench-quick/BENCHMARKS.md). The daemons it starts pin into the same throwaway
/// bpffs as the tests.
pub fn bench(quick: bool, only: &[String], profile: Option<&str>, sender: &Path) -> Result<()> {
    let bin = build(false)?;
    cargo(&["build", "--package", "forwarder-tests", "--bin", "bench"])?;
    let bench = workspace_root().join("target/debug/bench");
    let out = if quick {
        workspace_root().join("target/bench-quick/BENCHMARKS.md")
    } else {
        workspace_root().join("BENCHMARKS.md")
    };
    let mut args = Vec::new();
    if let Some(way) = profile {
        args.extend(["profile".to_string(), way.to_string()]);
        return with_test_bpffs(|bpffs| {
            as_root(
                &bench,
                &args,
                &[("FORWARDER_BIN", &bin), ("FWT_BPFFS", bpffs), ("FWT_SENDER", sender)],
            )
        });
    }
    if quick {
        args.push("--quick".to_string());
    }
    for section in only {
        args.extend(["--only".to_string(), section.clone()]);
    }
    args.push(out.to_string_lossy().into_owned());
    with_test_bpffs(|bpffs| {
        as_root(
            &bench,
            &args,
            &[("FORWARDER_BIN", &bin), ("FWT_BPFFS", bpffs), ("FWT_SENDER", sender)],
        )
    })
}

/// `cargo xtask demo`: the Kafka lab (tests/src/lab) with the seed's three brokers.
///
/// Ctrl-C goes to the demo, which tears everything down before it exits; xtask ignores it
/// meanwhile so the prompt does not come back while the teardown runs, then exits with the
/// demo's code (130 after Ctrl-C) without a trace of its own.
pub fn demo() -> Result<()> {
    let bin = build(false)?;
    cargo(&["build", "--package", "forwarder-tests", "--bin", "demo"])?;
    let demo = workspace_root().join("target/debug/demo");
    let mut cmd = as_root_command(&demo, &[("FORWARDER_BIN", &bin)]);
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions. The demo
    // installs its own handler (a caught signal, unlike an ignored one, is reset on exec).
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = cmd.status().with_context(|| format!("running {}", demo.display()))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
