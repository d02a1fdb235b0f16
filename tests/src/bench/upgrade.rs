//! What an upgrade across map layouts costs as the table grows: layout 2's maps staged
//! with N established flows (bpftool creates them as a 0.1.0 daemon pins them, the flows
//! are written through typed handles), then this build's `Datapath::load_pinned` copies
//! them (the bulk copy, while the old program would still forward) and
//! `finish_migration` copies what changed (1 % of the flows here) and renames the pins:
//! the part of the window that grows with the table. Beside each, the baseline measured
//! in the same run: one batch read of the same old table, the least any copy must do.

use crate::{
    staged_pins::{create_map, pin_config, RemoveOnDrop},
    testrun::default_plan,
};
use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap, MapData};
use forwarder::datapath::{
    batch,
    migrate::from_v2::{CtEntryV2, MAPS},
    pins::Pins,
    Datapath,
};
use forwarder_common::{map_names, FlowKey, CT_FLAG_REPLY};
use std::time::{Duration, Instant};

pub const FLOWS: [u32; 3] = [1_000, 10_000, 100_000];

pub struct Upgrade {
    pub flows: u32,
    pub bulk: Duration,
    pub catch_up: Duration,
    /// One batch read of the old established table.
    pub read: Duration,
}

pub fn measure(max_flows: u32, flows: &[u32]) -> Result<Vec<Upgrade>> {
    flows.iter().map(|&n| one(max_flows, n)).collect()
}

fn one(max_flows: u32, flows: u32) -> Result<Upgrade> {
    ensure!(flows <= max_flows, "{flows} flows do not fit max_flows {max_flows}");
    let dir = crate::topology::test_bpffs().join(format!("bench-upgrade-{}", std::process::id()));
    let _gone = RemoveOnDrop(dir.clone());
    stage_layout_2(&dir, max_flows)?;
    let est = dir.join(map_names::CT_ESTABLISHED);
    let mut table: HashMap<MapData, FlowKey, CtEntryV2> =
        HashMap::try_from(aya::maps::Map::from_map_data(MapData::from_pin(&est)?)?)?;
    for i in 0..flows {
        let (orig, reply) = keys(i);
        let half = CtEntryV2 { state: 3, packets: 10, last_seen_ns: 1, ..Default::default() };
        table.insert(orig, CtEntryV2 { peer: reply, ..half }, 0)?;
        table.insert(reply, CtEntryV2 { peer: orig, flags: CT_FLAG_REPLY, ..half }, 0)?;
    }
    let t = Instant::now();
    let (read, _) = batch::table(map_names::CT_ESTABLISHED, &table)?;
    let read_time = t.elapsed();
    ensure!(read.len() == 2 * flows as usize, "staged {} halves", read.len());

    let pins = Pins::new(&dir);
    let mut dp = Datapath::load_pinned(max_flows, &pins).context("upgrading the staged maps")?;
    let bulk = dp.migration_report().context("no upgrade under way")?.bulk;
    // The old program's last moments: 1 % of the flows moved on.
    for i in (0..flows).step_by(100) {
        let (orig, _) = keys(i);
        let mut e = table.get(&orig, 0)?;
        e.packets += 1;
        table.insert(orig, e, 0)?;
    }
    dp.apply(&forwarder::plan::Plan { ..default_plan() })?;
    let report = dp.finish_migration()?.context("no upgrade report")?;
    ensure!(report.copied == 2 * flows as usize, "copied {} halves", report.copied);
    Ok(Upgrade { flows, bulk, catch_up: report.catch_up, read: read_time })
}

fn keys(i: u32) -> (FlowKey, FlowKey) {
    let client = u32::from_be_bytes([10, 1, (i >> 16) as u8, (i >> 8) as u8]);
    let port = (i as u16).wrapping_add(1024).to_be();
    let orig = FlowKey::new(client, 0x0400_000a, port, 9092u16.to_be(), 6);
    let reply = FlowKey::new(0x0b00_140a, 0x0400_000a, 9092u16.to_be(), port, 6);
    (orig, FlowKey { src_addr: client ^ 0x5a5a_0000, ..reply })
}

/// Layout 2's nine maps as a 0.1.0 daemon pins them, CONFIG saying version 2.
fn stage_layout_2(dir: &std::path::Path, max_flows: u32) -> Result<()> {
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
