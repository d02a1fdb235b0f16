//! `cargo xtask test` and `cargo xtask stress` (with its fuzz runs).

use crate::{
    bpffs::with_test_bpffs,
    build::build,
    deb::package_deb,
    exec::{as_root, cargo, exec_output, workspace_root},
};
use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub fn test(extra: &[String]) -> Result<()> {
    // Every dependency's license, no banned or wildcard dependency, crates.io only
    // (deny.toml; advisories need the RustSec database from GitHub, out of reach here).
    cargo(&["deny", "check", "licenses", "bans", "sources"])?;
    let bin = build(false)?;
    // The .deb of the binary under test: binary, unit, conffile and prerm must be in it
    // (tests/tests/packaging.rs checks the unit with systemd-analyze and the config), and
    // tests/tests/systemd_unit.rs installs it under a systemd of its own ($FWT_DEB).
    let deb = package_deb(false, &workspace_root().join("target/xtask-test-deb"))?;
    println!("packaging: {} holds binary, unit, conffile and prerm", deb.display());
    // Unit tests of the library, the shared types and xtask (no privileges needed).
    cargo(&[
        "test",
        "--package",
        "forwarder",
        "--package",
        "forwarder-common",
        "--package",
        "xtask",
    ])?;
    // Privileged tests: compile as ourselves, run the binaries as root.
    cargo(&["test", "--package", "forwarder-tests", "--no-run"])?;
    let mut args = vec![
        "test".to_string(),
        "--package".into(),
        "forwarder-tests".into(),
        "--".into(),
        "--test-threads=2".into(),
    ];
    args.extend(extra.iter().cloned());
    let cargo_bin = PathBuf::from(env!("CARGO"));
    with_test_bpffs(|bpffs| {
        as_root(
            &cargo_bin,
            &args,
            &[("FORWARDER_BIN", &bin), ("FWT_BPFFS", bpffs), ("FWT_DEB", &deb)],
        )
    })
}

/// `cargo xtask stress`: the reliability runs too long for `test`, each a test of the tests
/// crate run with bigger numbers (printed, for RELIABILITY.md).
pub fn stress(
    frames: u64,
    flood_syns: u64,
    soak_secs: u64,
    fuzz_seconds: u64,
    sender: &Path,
) -> Result<()> {
    let bin = build(false)?;
    cargo(&["test", "--package", "forwarder-tests", "--no-run"])?;
    let cargo_bin = PathBuf::from(env!("CARGO"));
    let frames = PathBuf::from(frames.to_string());
    let flood_syns = PathBuf::from(flood_syns.to_string());
    let faults = PathBuf::from("stress");
    let soak_secs = PathBuf::from(soak_secs.to_string());
    for (test, var, value) in [
        ("hostile", "FWT_HOSTILE_FRAMES", &frames),
        ("syn_flood", "FWT_FLOOD_SYNS", &flood_syns),
        ("faults", "FWT_FAULTS", &faults),
        ("soak", "FWT_SOAK_SECS", &soak_secs),
    ] {
        let args: Vec<String> = ["test", "--package", "forwarder-tests", "--test", test, "--"]
            .into_iter()
            .chain(["--nocapture", "--test-threads=1"])
            .map(String::from)
            .collect();
        with_test_bpffs(|bpffs| {
            as_root(
                &cargo_bin,
                &args,
                &[
                    ("FORWARDER_BIN", &bin),
                    ("FWT_BPFFS", bpffs),
                    ("FWT_SENDER", sender),
                    (var, value.as_path()),
                ],
            )
        })?;
    }
    fuzz(fuzz_seconds)
}

/// Runs each target of fuzz/ for `seconds` (libFuzzer's -max_total_time), from its seeds
/// and the corpus earlier runs grew; fails if any found a crash, whose input libFuzzer
/// leaves in fuzz/artifacts/TARGET/. Every target runs even after one fails, so one known
/// defect hides no other. cargo-fuzz needs nightly: the rustup proxy's `cargo`.
fn fuzz(seconds: u64) -> Result<()> {
    let dir = workspace_root().join("fuzz");
    let nightly_fuzz = |args: &[&str]| {
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "fuzz"]).args(args).current_dir(&dir);
        cmd
    };
    let list = exec_output(&mut nightly_fuzz(&["list"]), "cargo +nightly fuzz list")?;
    let max_time = format!("-max_total_time={seconds}");
    let mut failed = Vec::new();
    for target in String::from_utf8(list)?.lines() {
        let corpus = format!("corpus/{target}");
        std::fs::create_dir_all(dir.join(&corpus))?;
        let seeds = format!("seeds/{target}");
        let status = nightly_fuzz(&["run", target, &corpus, &seeds, "--", &max_time])
            .status()
            .with_context(|| format!("running fuzz target {target}"))?;
        if !status.success() {
            failed.push(target.to_string());
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}; their inputs are in fuzz/artifacts/", failed.join(", "));
    }
    Ok(())
}
