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
    /// The long reliability runs that do not fit in `test` (RELIABILITY.md): ten million
    /// hostile frames through the program, with every invariant checked on each; then a
    /// SYN flood of a million spoofed SYNs, against the forwarder and iptables; then faults
    /// under live streams (10 SIGKILL restarts, 200 rule cycles, link flaps, detaches); then
    /// the soak (30 minutes of mixed TCP and Kafka load with rule changes, the daemon's
    /// memory and the table fill sampled); then every fuzz target of fuzz/ (the userspace
    /// parsers) for a while.
    Stress {
        /// Hostile frames to run (default ten million).
        #[arg(long, default_value_t = 10_000_000)]
        frames: u64,
        /// Spoofed SYNs of the flood (default one million).
        #[arg(long, default_value_t = 1_000_000)]
        flood_syns: u64,
        /// Seconds of the soak (default 1800; its table goes to target/soak/soak.md).
        #[arg(long, default_value_t = 1800)]
        soak_secs: u64,
        /// Seconds of fuzzing per fuzz target (default 60).
        #[arg(long, default_value_t = 60)]
        fuzz_seconds: u64,
        /// What sends the packet-rate bed's and the SYN flood's frames: auto (live frames
        /// where the kernel allows them, else a packet socket), live-frames or
        /// packet-socket. Passed to the tests as FWT_SENDER.
        #[arg(long, default_value = "auto", value_parser = ["auto", "live-frames", "packet-socket"])]
        sender: String,
    },
    /// The whole Azure path in namespaces: a Kafka client, Private Link + load balancer,
    /// two NAT VMs running forwarder, three real Kafka brokers (tansu); checks and tears down.
    Demo,
    /// Build the release binary and the .deb (cargo-deb), then check the package's contents.
    Deb,
    /// Measure program cost, whole-connection throughput and rate against iptables, the
    /// packet rate and CPU per packet of one flow, and map memory; writes BENCHMARKS.md
    /// and its chart.
    Bench {
        /// The packet-rate bed only, every contender once with few frames (under a minute),
        /// written to target/bench-quick/ instead of BENCHMARKS.md.
        #[arg(long)]
        quick: bool,
        /// Run only these sections: program, path, kafka, rate, memory, upgrade (repeatable).
        #[arg(long)]
        only: Vec<String>,
        /// Instead: one iperf3 stream through this way (iptables, "forwarder xdp", ...) under
        /// `perf record -a -g`, into target/bench-profile/, and the top of its report.
        #[arg(long, value_name = "WAY", conflicts_with_all = ["quick", "only"])]
        profile: Option<String>,
        /// What sends the packet-rate bed's and the SYN flood's frames: auto (live frames
        /// where the kernel allows them, else a packet socket), live-frames or
        /// packet-socket. Passed to the tests as FWT_SENDER.
        #[arg(long, default_value = "auto", value_parser = ["auto", "live-frames", "packet-socket"])]
        sender: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Build { release } => build(release).map(|_| ()),
        Task::Run { release, args } => run(release, &args),
        Task::Test { args } => setup().and_then(|_| test(&args)),
        Task::Deb => setup().and_then(|_| deb()),
        Task::Demo => setup().and_then(|_| demo()),
        Task::Stress { frames, flood_syns, soak_secs, fuzz_seconds, sender } => setup()
            .and_then(|_| stress(frames, flood_syns, soak_secs, fuzz_seconds, Path::new(&sender))),
        Task::Bench { quick, only, profile, sender } => {
            setup().and_then(|_| bench(quick, &only, profile.as_deref(), Path::new(&sender)))
        }
    }
}

/// .ci/setup.sh: everything the build, the tests and the lab need (apt packages, nightly
/// rust-src, bpf-linker, cargo-deb, tansu, kafka-python). Idempotent and quick once done, so
/// `cargo xtask demo` and `cargo xtask test` work on a fresh machine as they are.
fn setup() -> Result<()> {
    let status = root_command("bash")
        .arg(workspace_root().join(".ci/setup.sh"))
        .status()
        .context("running .ci/setup.sh")?;
    if !status.success() {
        bail!(".ci/setup.sh failed ({status})");
    }
    Ok(())
}

/// `cargo xtask bench`: tests/src/bench, written to BENCHMARKS.md (with `--quick`, to
/// target/bench-quick/BENCHMARKS.md). The daemons it starts pin into the same throwaway
/// bpffs as the tests.
fn bench(quick: bool, only: &[String], profile: Option<&str>, sender: &Path) -> Result<()> {
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
fn demo() -> Result<()> {
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

/// `program` as root, in the workspace, with `envs`: directly when we are root, else
/// through sudo keeping the variables the tests and tools read.
fn as_root_command(program: &Path, envs: &[(&str, &Path)]) -> Command {
    let mut cmd = if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(format!("--preserve-env={}", preserved_env(envs).join(","))).arg(program);
        c
    };
    cmd.current_dir(workspace_root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// What sudo must pass on to the tests: every `FWT_*` variable set here or in `envs` (a
/// list written out by hand dropped the ones added since), the tool paths the tests read,
/// the log level and PATH.
fn preserved_env(envs: &[(&str, &Path)]) -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("FWT_"))
        .chain(envs.iter().map(|(k, _)| k.to_string()))
        .chain(["FORWARDER_BIN", "TANSU_BIN", "RUST_LOG", "PATH"].map(String::from))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Runs `program args` as root; fails unless it succeeds.
fn as_root(program: &Path, args: &[String], envs: &[(&str, &Path)]) -> Result<()> {
    let status = as_root_command(program, envs)
        .args(args)
        .status()
        .with_context(|| format!("running {}", program.display()))?;
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
    // Every dependency's license, no banned or wildcard dependency, crates.io only
    // (deny.toml; advisories need the RustSec database from GitHub, out of reach here).
    cargo(&["deny", "check", "licenses", "bans", "sources"])?;
    let bin = build(false)?;
    // The .deb of the binary under test: binary, unit, conffile and prerm must be in it
    // (tests/tests/packaging.rs checks the unit with systemd-analyze and the config), and
    // tests/tests/systemd_unit.rs installs it under a systemd of its own ($FWT_DEB).
    let deb = package_deb(false, &workspace_root().join("target/xtask-test-deb"))?;
    println!("packaging: {} holds binary, unit, conffile and prerm", deb.display());
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
fn stress(
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
    let list = nightly_fuzz(&["list"]).output().context("running cargo +nightly fuzz list")?;
    if !list.status.success() {
        bail!("cargo +nightly fuzz list failed ({})", list.status);
    }
    let max_time = format!("-max_total_time={seconds}");
    let mut failed = Vec::new();
    for target in String::from_utf8(list.stdout)?.lines() {
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

const TEST_BPFFS: &str = "/run/forwarder-tests-bpffs";

/// Runs `f` with a bpffs of its own mounted at TEST_BPFFS-<pid>, unmounted after it
/// whatever `f` returned. One per xtask process: a `cargo xtask bench` beside a `cargo xtask
/// test` (two work trees on one machine) must not unmount the other's bpffs under it.
/// The daemons of the tests and benchmarks pin there: /sys/fs/bpf is not always mounted,
/// and `ip netns exec` gives each process a private /sys, which would lose pins across
/// daemon restarts.
fn with_test_bpffs(f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
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
    let status = root_command("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(dir)
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!("mounting a bpffs at {} failed ({status}); the tests need root", dir.display());
    }
    Ok(())
}

fn root_command(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

fn unmount_bpffs(dir: &Path) -> Result<()> {
    let status = root_command("umount").arg(dir).status().context("running umount")?;
    if !status.success() {
        bail!("unmounting {} failed ({status})", dir.display());
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// `cargo xtask deb`: the release build, then the package and its check.
fn deb() -> Result<()> {
    build(true)?;
    let deb = package_deb(true, &workspace_root().join("target/debian"))?;
    println!("{}", deb.display());
    Ok(())
}

/// The files the .deb ships that the binary writes from its clap definitions
/// (`forwarder generate`): completions for bash, zsh and fish and the man page (gzipped, as
/// Debian keeps man pages), into packaging/generated/ (ignored by git), where
/// forwarder/Cargo.toml's asset list
/// takes them from.
fn generate_deb_assets(release: bool) -> Result<()> {
    let root = workspace_root();
    let bin = root.join("target").join(if release { "release" } else { "debug" }).join("forwarder");
    let dir = root.join("packaging/generated");
    std::fs::create_dir_all(&dir)?;
    let generated = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new(&bin)
            .arg("generate")
            .args(args)
            .output()
            .with_context(|| format!("running {} generate (build it first)", bin.display()))?;
        if !out.status.success() {
            bail!("forwarder generate {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    for (shell, file) in
        [("bash", "forwarder.bash"), ("zsh", "_forwarder"), ("fish", "forwarder.fish")]
    {
        std::fs::write(dir.join(file), generated(&["completions", shell])?)?;
    }
    let man = dir.join("forwarder.1");
    std::fs::write(&man, generated(&["man"])?)?;
    // -n: no name or time stamp inside, so the same page makes the same bytes.
    let status = Command::new("gzip").args(["-9nf"]).arg(&man).status().context("running gzip")?;
    if !status.success() {
        bail!("gzip {} failed ({status})", man.display());
    }
    Ok(())
}

/// `cargo deb --no-build` of the binary build() made, written into `out_dir`, then a look
/// inside the package (dpkg-deb) so a broken asset list fails here rather than on a VM.
///
/// `cargo xtask test` packages the debug binary (cargo-deb's dev profile, which it warns
/// about but supports in the version .ci/setup.sh pins): the assets, unit, conffile and
/// maintainer scripts are the same as in the release package, and a second, release build
/// of the whole tree would double the test run's build time.
fn package_deb(release: bool, out_dir: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    let has_cargo_deb = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_deb {
        bail!("cargo-deb is missing: run .ci/setup.sh or `cargo install cargo-deb --locked`");
    }
    generate_deb_assets(release)?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["deb", "--package", "forwarder", "--no-build", "--output"]).arg(out_dir);
    if !release {
        cmd.args(["--profile", "dev"]);
    }
    let out = cmd
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo deb")?;
    if !out.status.success() {
        bail!("cargo deb failed ({})", out.status);
    }
    // cargo-deb prints the package's path as its last line of output.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(|l| root.join(l))
        .with_context(|| format!("cargo deb printed no .deb path:\n{stdout}"))?;

    // `dpkg-deb OPTION DEB [ARG]`: its standard output.
    let dpkg_deb = |option: &str, arg: Option<&str>| -> Result<String> {
        let out = Command::new("dpkg-deb")
            .arg(option)
            .arg(&deb)
            .args(arg)
            .output()
            .with_context(|| format!("running dpkg-deb {option} (is dpkg installed?)"))?;
        if !out.status.success() {
            bail!("dpkg-deb {option} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let listing = dpkg_deb("--contents", None)?;
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.'))
        .collect();
    let mut problems = Vec::new();
    // cargo-deb puts units in /usr/lib/systemd/system (merged /usr); older ones in /lib.
    for want in [
        &["/usr/bin/forwarder"][..],
        &["/usr/share/bash-completion/completions/forwarder"],
        &["/usr/share/zsh/vendor-completions/_forwarder"],
        &["/usr/share/fish/vendor_completions.d/forwarder.fish"],
        &["/usr/share/man/man1/forwarder.1.gz"],
        &["/usr/share/forwarder/prometheus/alerts.yml"],
        &["/usr/share/forwarder/prometheus/alerts_test.yml"],
        &["/usr/share/forwarder/grafana/forwarder-dashboard.json"],
        &["/usr/lib/systemd/system/forwarder.service", "/lib/systemd/system/forwarder.service"],
        &["/etc/forwarder/forwarder.toml"],
        &["/usr/share/doc/forwarder/README.md"],
    ] {
        if !want.iter().any(|w| files.contains(w)) {
            problems.push(format!("{} is not in the package", want[0]));
        }
    }
    // No conffiles member at all is an error of dpkg-deb: the same problem.
    let conffiles = dpkg_deb("--info", Some("conffiles")).unwrap_or_default();
    if !conffiles.lines().any(|l| l.trim() == "/etc/forwarder/forwarder.toml") {
        problems.push(format!(
            "/etc/forwarder/forwarder.toml is not a conffile (conffiles: {:?})",
            conffiles.trim()
        ));
    }
    // Removing the package must take the pinned program out of the kernel.
    let prerm = dpkg_deb("--info", Some("prerm")).unwrap_or_default();
    if !prerm.contains("forwarder unload") {
        problems.push("the prerm script does not run `forwarder unload`".into());
    }
    let fields = dpkg_deb("--field", None)?;
    for want in ["Package: forwarder", "Depends: ", "Architecture: "] {
        if !fields.lines().any(|l| l.starts_with(want)) {
            problems.push(format!("control field {want:?} missing:\n{fields}"));
        }
    }
    if !problems.is_empty() {
        bail!("{} is incomplete:\n  {}", deb.display(), problems.join("\n  "));
    }
    Ok(deb)
}
