//! `cargo xtask build | run | test | demo` — the developer entry points.
//!
//! The kernel program is built by forwarder/build.rs (nightly + bpf-linker), so every task
//! here only drives cargo and runs what it built, as root where BPF needs it.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the kernel program and the daemon.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `forwarder ARGS` as root, e.g. `cargo xtask run -- run --config x.toml`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build, then run every test: unit tests, BPF_PROG_TEST_RUN packet tests, netns
    /// end-to-end tests (root).
    Test {
        /// Extra arguments for the test binaries (a filter, --nocapture, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The whole Azure topology with real Kafka brokers, in namespaces.
    Demo,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Build { release } => build(release).map(|_| ()),
        Task::Run { release, args } => run(release, &args),
        Task::Test { args } => test(&args),
        Task::Demo => bail!(
            "not yet: the Kafka lab (three tansu brokers behind two NAT VMs) comes with the \
             Kafka issue; `cargo xtask test` runs the whole data path in namespaces today"
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").into()
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the daemon (and with it the kernel program); returns the binary's path.
fn build(release: bool) -> Result<PathBuf> {
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `program args` as root: directly when we are root, else through sudo.
fn as_root(program: &Path, args: &[String], envs: &[(&str, &Path)]) -> Result<()> {
    let mut cmd = if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("--preserve-env=FORWARDER_BIN,RUST_LOG,PATH").arg(program);
        c
    };
    cmd.args(args).current_dir(workspace_root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd.status().with_context(|| format!("running {}", program.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", program.display());
    }
    Ok(())
}

fn run(release: bool, args: &[String]) -> Result<()> {
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

fn test(extra: &[String]) -> Result<()> {
    let bin = build(false)?;
    // Unit tests of the library and the shared types (no privileges needed).
    cargo(&["test", "--package", "forwarder", "--package", "forwarder-common"])?;
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
    as_root(&cargo_bin, &args, &[("FORWARDER_BIN", &bin)])
}
