//! The previous map layout's tagged release, built from this repository's history and
//! packaged as its .deb: what tests/tests/upgrade.rs upgrades from.
//!
//! Built once into target/previous-release/TAG/ (its own target directory, so the tree's
//! build is untouched) and reused from there: a cold build costs a few minutes of two
//! cores, a cached one nothing. The source is `git archive` of the tag's commit, checked
//! against the tag where the clone has it.

use anyhow::{bail, ensure, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The release before this build's map layout.
pub const TAG: &str = "v0.1.0";
/// Its commit, in main's history: a clone without tags still has it.
pub const COMMIT: &str = "b656241d0ceb7f6e28363fe7f295b5060360169b";
/// Its package version and map layout.
pub const VERSION: &str = "0.1.0";
pub const LAYOUT: u32 = 2;

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The previous release's .deb, built on first use.
pub fn deb() -> Result<PathBuf> {
    let cache = workspace().join("target/previous-release").join(TAG);
    let deb = cache.join(format!("forwarder_{VERSION}.deb"));
    if deb.is_file() {
        return Ok(deb);
    }
    std::fs::create_dir_all(&cache)?;
    let src = cache.join("src");
    if !src.join("Cargo.toml").is_file() {
        extract(&src)?;
    }
    let target = cache.join("target");
    eprintln!("building {TAG} ({COMMIT}) into {} (once; cached)", cache.display());
    cargo(&src, &target, &["build", "--package", "forwarder"])?;
    generate_assets(&src, &target.join("debug/forwarder"))?;
    let out = cache.join("deb");
    let status = cargo_cmd(&src, &target)
        .args(["deb", "--package", "forwarder", "--no-build", "--profile", "dev", "--output"])
        .arg(&out)
        .status()
        .context("running cargo deb (bash .ci/setup.sh installs cargo-deb)")?;
    ensure!(status.success(), "cargo deb of {TAG} failed ({status})");
    let built = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("cargo deb wrote no .deb into {}", out.display()))?;
    std::fs::rename(&built, &deb)?;
    Ok(deb)
}

/// `git archive` of COMMIT into `src`, after checking TAG names it (where present).
fn extract(src: &Path) -> Result<()> {
    let git = |args: &[&str]| {
        Command::new("git").arg("-C").arg(workspace()).args(args).output().context("running git")
    };
    let tagged = git(&["rev-parse", "--verify", "-q", &format!("{TAG}^{{commit}}")])?;
    if tagged.status.success() {
        let at = String::from_utf8_lossy(&tagged.stdout).trim().to_string();
        ensure!(at == COMMIT, "tag {TAG} is at {at}, this test expects {COMMIT}");
    }
    let has = git(&["cat-file", "-e", &format!("{COMMIT}^{{commit}}")])?;
    if !has.status.success() {
        bail!(
            "this clone lacks commit {COMMIT} ({TAG}), the release this test upgrades from: \
             clone with history (not --depth)"
        );
    }
    let partial = src.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let archive = Command::new("sh")
        .arg("-c")
        .arg("git -C \"$1\" archive --format=tar \"$2\" | tar -x -C \"$3\"")
        .args(["sh"])
        .arg(workspace())
        .arg(COMMIT)
        .arg(&partial)
        .status()
        .context("running git archive | tar")?;
    ensure!(archive.success(), "git archive {COMMIT} failed ({archive})");
    std::fs::rename(&partial, src)?;
    Ok(())
}

/// cargo in `src` with its own target directory, and none of the variables the outer
/// `cargo test` set for this process (they describe this package, not that one).
fn cargo_cmd(src: &Path, target: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" {
            cmd.env_remove(&k);
        }
    }
    cmd.current_dir(src).env("CARGO_TARGET_DIR", target);
    cmd
}

fn cargo(src: &Path, target: &Path, args: &[&str]) -> Result<()> {
    let status = cargo_cmd(src, target)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    ensure!(status.success(), "cargo {} of {TAG} failed ({status})", args.join(" "));
    Ok(())
}

/// The completions and man page the package ships, written by the release's own binary
/// into its packaging/generated/ (as its `cargo xtask deb` does).
fn generate_assets(src: &Path, bin: &Path) -> Result<()> {
    let dir = src.join("packaging/generated");
    std::fs::create_dir_all(&dir)?;
    let generated = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new(bin).arg("generate").args(args).output()?;
        ensure!(
            out.status.success(),
            "{TAG} generate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    };
    for (shell, file) in
        [("bash", "forwarder.bash"), ("zsh", "_forwarder"), ("fish", "forwarder.fish")]
    {
        std::fs::write(dir.join(file), generated(&["completions", shell])?)?;
    }
    let man = dir.join("forwarder.1");
    std::fs::write(&man, generated(&["man"])?)?;
    let status = Command::new("gzip").args(["-9nf"]).arg(&man).status()?;
    ensure!(status.success(), "gzip {} failed", man.display());
    Ok(())
}
