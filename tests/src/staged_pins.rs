//! Pin directories staged by hand with bpftool, as another build (an older or a newer map
//! layout) would have left them: for tests/tests/upgrade.rs and the bench's upgrade
//! section. Each lives under the tests' bpffs and goes with [`RemoveOnDrop`].

use anyhow::{ensure, Context, Result};
use forwarder_common::map_names;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub fn bpftool(args: &[&str]) -> Result<()> {
    let out = Command::new("bpftool").args(args).output().context("running bpftool")?;
    ensure!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Creates a map pinned at `dir/name`: `kind` (array, hash, lru_hash, ...), key and value
/// sizes, capacity, and bpftool's `flags` if any.
pub fn create_map(
    dir: &Path,
    name: &str,
    kind: &str,
    (key, value, entries): (usize, usize, u32),
    flags: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let (key, value, entries) = (key.to_string(), value.to_string(), entries.to_string());
    let mut args = vec!["map", "create", path.to_str().context("a UTF-8 path")?, "type", kind];
    args.extend(["key", &key, "value", &value, "entries", &entries, "name", name]);
    if let Some(f) = flags {
        args.extend(["flags", f]);
    }
    bpftool(&args)
}

/// Writes `value` under `key` of the map pinned at `dir/name`.
pub fn update(dir: &Path, name: &str, key: &[u8], value: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let bytes = |b: &[u8]| b.iter().map(u8::to_string).collect::<Vec<_>>();
    let (key, value) = (bytes(key), bytes(value));
    let mut args = vec!["map", "update", "pinned", path.to_str().context("a UTF-8 path")?];
    args.push("key");
    args.extend(key.iter().map(String::as_str));
    args.push("value");
    args.extend(value.iter().map(String::as_str));
    bpftool(&args)
}

/// A CONFIG map whose value is `value` (its first word is the layout version in every
/// layout).
pub fn pin_config(dir: &Path, value: &[u8]) -> Result<()> {
    create_map(dir, map_names::CONFIG, "array", (4, value.len(), 1), None)?;
    update(dir, map_names::CONFIG, &[0; 4], value)
}

/// Removes a staged pin directory however the test ends.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
