//! `cargo xtask deb`, and the package `cargo xtask test` installs: the assets the binary
//! writes (completions, man page), `cargo deb`, and a look inside the result.

use crate::{
    build::build,
    exec::{exec, exec_output, workspace_root},
};
use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// `cargo xtask deb`: the release build, then the package and its check.
pub fn deb() -> Result<()> {
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
        let what = format!("{} generate {args:?} (build it first)", bin.display());
        exec_output(Command::new(&bin).arg("generate").args(args), &what)
    };
    for (shell, file) in
        [("bash", "forwarder.bash"), ("zsh", "_forwarder"), ("fish", "forwarder.fish")]
    {
        std::fs::write(dir.join(file), generated(&["completions", shell])?)?;
    }
    let man = dir.join("forwarder.1");
    std::fs::write(&man, generated(&["man"])?)?;
    // -n: no name or time stamp inside, so the same page makes the same bytes.
    exec(Command::new("gzip").args(["-9nf"]).arg(&man), &format!("gzip {}", man.display()))
}

/// `cargo deb --no-build` of the binary build() made, written into `out_dir`, then a look
/// inside the package (dpkg-deb) so a broken asset list fails here rather than on a VM.
///
/// `cargo xtask test` packages the debug binary (cargo-deb's dev profile, which it warns
/// about but supports in the version .ci/setup.sh pins): the assets, unit, conffile and
/// maintainer scripts are the same as in the release package, and a second, release build
/// of the whole tree would double the test run's build time.
pub fn package_deb(release: bool, out_dir: &Path) -> Result<PathBuf> {
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
        let what = format!("dpkg-deb {option} (is dpkg installed?)");
        let out = exec_output(Command::new("dpkg-deb").arg(option).arg(&deb).args(arg), &what)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    let listing = dpkg_deb("--contents", None)?;
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.'))
        .collect();
    let mut problems = Vec::new();
    // Every asset [package.metadata.deb] lists, where it installs it; and the unit, which
    // cargo-deb puts in /usr/lib/systemd/system (merged /usr; older ones in /lib).
    let mut wanted: Vec<Vec<String>> = deb_assets()?.into_iter().map(|a| vec![a]).collect();
    wanted.push(
        ["/usr/lib/systemd/system/forwarder.service", "/lib/systemd/system/forwarder.service"]
            .map(String::from)
            .to_vec(),
    );
    for want in &wanted {
        if !want.iter().any(|w| files.contains(&w.as_str())) {
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

/// Where the package installs each asset of forwarder/Cargo.toml's
/// `[package.metadata.deb] assets` (`[source, destination, mode]`; a destination ending in
/// `/` is a directory the source's file name goes into).
fn deb_assets() -> Result<Vec<String>> {
    let manifest = workspace_root().join("forwarder/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Table =
        text.parse().with_context(|| format!("parsing {}", manifest.display()))?;
    let assets = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("deb"))
        .and_then(|d| d.get("assets"))
        .and_then(|a| a.as_array())
        .with_context(|| format!("{} has no [package.metadata.deb] assets", manifest.display()))?;
    let mut paths = Vec::new();
    for asset in assets {
        let field = |i: usize| asset.get(i).and_then(|v| v.as_str());
        let (Some(source), Some(dest)) = (field(0), field(1)) else {
            bail!("{}: an asset is not [source, destination, mode]: {asset}", manifest.display());
        };
        let file = Path::new(source).file_name().and_then(|n| n.to_str()).unwrap_or(source);
        let path = if dest.ends_with('/') { format!("{dest}{file}") } else { dest.to_string() };
        paths.push(format!("/{path}"));
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_assets_install_where_the_package_puts_them() {
        let assets = super::deb_assets().unwrap();
        for want in [
            "/usr/bin/forwarder",
            "/etc/forwarder/forwarder.toml",
            "/usr/share/doc/forwarder/README.md",
            "/usr/share/bash-completion/completions/forwarder",
            "/usr/share/man/man1/forwarder.1.gz",
            "/usr/share/forwarder/prometheus/alerts.yml",
        ] {
            assert!(assets.iter().any(|a| a == want), "{want} not in {assets:?}");
        }
    }
}
