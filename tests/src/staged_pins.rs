//! Pin directories staged by hand with bpftool, as another build (an older or a newer map
//! layout) would have left them: for tests/tests/upgrade.rs and the bench's upgrade
//! section. Each lives under the tests' bpffs and goes with [`RemoveOnDrop`].

use anyhow::{ensure, Context, Result};
use aya::maps::MapData;
use forwarder::datapath::migrate::from_v2::{CtEntryV2, MAPS};
use forwarder_common::{map_names, FlowKey, CT_FLAG_REPLY};
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

/// `flows` established flows (both halves) written into layout 2's staged established
/// table in `dir`, through a typed handle, which is returned for changing them after.
pub fn stage_layout_2_flows(
    dir: &Path,
    flows: u32,
) -> Result<aya::maps::HashMap<MapData, FlowKey, CtEntryV2>> {
    let est = dir.join(map_names::CT_ESTABLISHED);
    let mut table: aya::maps::HashMap<MapData, FlowKey, CtEntryV2> =
        aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(MapData::from_pin(&est)?)?)?;
    for i in 0..flows {
        let (orig, reply) = layout_2_keys(i);
        let half = CtEntryV2 { state: 3, packets: 10, last_seen_ns: 1, ..Default::default() };
        table.insert(orig, CtEntryV2 { peer: reply, ..half }, 0)?;
        table.insert(reply, CtEntryV2 { peer: orig, flags: CT_FLAG_REPLY, ..half }, 0)?;
    }
    Ok(table)
}

/// The two halves' keys of staged flow `i` (distinct for every `i` below 2^24).
pub fn layout_2_keys(i: u32) -> (FlowKey, FlowKey) {
    let client = u32::from_be_bytes([10, 1, (i >> 16) as u8, (i >> 8) as u8]);
    let port = (i as u16).wrapping_add(1024).to_be();
    let orig = FlowKey::new(client, 0x0400_000a, port, 9092u16.to_be(), 6);
    let reply = FlowKey::new(0x0b00_140a, 0x0400_000a, 9092u16.to_be(), port, 6);
    (orig, FlowKey { src_addr: client ^ 0x5a5a_0000, ..reply })
}

/// Layout 2's nine maps as a 0.1.0 daemon pins them, CONFIG saying version 2.
pub fn stage_layout_2(dir: &Path, max_flows: u32) -> Result<()> {
    let embryonic = forwarder::datapath::object::embryonic_capacity(max_flows) * 2;
    let established = max_flows * 2;
    for (name, key, value) in MAPS {
        let (kind, entries, flags) = match name {
            map_names::CONFIG => continue,
            map_names::NEXTHOP_GEN => ("array", 1, None),
            map_names::CT_COUNT => ("array", 2, None),
            map_names::RULE_STATS => ("percpu_array", forwarder_common::MAX_RULES, None),
            map_names::RULES => ("hash", 1024, None),
            map_names::LISTEN_ADDRS => ("hash", forwarder_common::MAX_LISTEN_ADDRS, None),
            map_names::ALLOWED_SOURCES => {
                ("lpm_trie", forwarder_common::MAX_ALLOWED_SOURCES, Some("1"))
            }
            map_names::CT_EMBRYONIC => ("lru_hash", embryonic, None),
            _ => ("hash", established, None),
        };
        create_map(dir, name, kind, (key, value, entries), flags)?;
    }
    let mut config = [0u8; 48];
    config[0] = 2;
    config[40..44].copy_from_slice(&max_flows.to_ne_bytes());
    pin_config(dir, &config)
}

/// Removes a staged pin directory however the test ends.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
