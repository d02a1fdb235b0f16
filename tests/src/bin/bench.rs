//! `cargo xtask bench`: runs tests/src/bench and writes BENCHMARKS.md (or the path given as
//! the first argument) with the command, the machine and the results.

use forwarder_tests::{bench, require_root};
use std::{process::Command, time::Instant};

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    require_root();
    let out = std::env::args().nth(1).unwrap_or_else(|| "BENCHMARKS.md".into());
    let start = Instant::now();
    let results = bench::run(&bench::Options::default(), &mut |s| {
        eprintln!("[{:>5.1}s] {s}", start.elapsed().as_secs_f64())
    })?;
    let cpu = sh("sh", &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]);
    let doc = format!(
        "# Benchmarks\n\nMade by `cargo xtask bench` (as root) on {}, commit {}: kernel {}, {} \
         CPUs ({}), shared with other work. Ratios are what to compare: every figure was \
         measured next to its baseline in the same run.\n\n{results}{}",
        sh("date", &["-u", "+%Y-%m-%d"]),
        sh("git", &["rev-parse", "--short", "HEAD"]),
        sh("uname", &["-r"]),
        sh("nproc", &[]),
        cpu.trim(),
        include_str!("../bench/reading.md"),
    );
    std::fs::write(&out, doc)?;
    eprintln!("wrote {out} in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}
