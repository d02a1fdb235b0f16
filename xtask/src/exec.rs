//! Running things: cargo, tools, and programs as root (directly when xtask is root,
//! else through sudo with the variables the tests read), each failing with what ran and
//! how it ended.

use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Runs `cmd` for its standard output; fails unless it exits 0, naming `what` and
/// quoting its standard error.
pub fn exec_output(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// Runs `cmd`; fails unless it exits 0, naming `what`.
pub fn exec(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").into()
}

/// cargo in the workspace.
pub fn cargo(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args).current_dir(workspace_root());
    exec(&mut cmd, &format!("cargo {}", args.join(" ")))
}

pub fn root_command(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program` as root, in the workspace, with `envs`: directly when we are root, else
/// through sudo keeping the variables the tests and tools read.
pub fn as_root_command(program: &Path, envs: &[(&str, &Path)]) -> Command {
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
pub fn as_root(program: &Path, args: &[String], envs: &[(&str, &Path)]) -> Result<()> {
    exec(as_root_command(program, envs).args(args), &program.display().to_string())
}
