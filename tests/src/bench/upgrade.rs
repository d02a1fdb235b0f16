//! What an upgrade across map layouts costs as the table grows: layout 2's maps staged
//! with N established flows (bpftool creates them as a 0.1.0 daemon pins them, the flows
//! are written through typed handles), then this build's `Datapath::load_pinned` copies
//! them (the bulk copy, while the old program would still forward) and
//! `finish_migration` copies what changed (1 % of the flows here) and renames the pins:
//! the part of the window that grows with the table. Beside each, the baseline measured
//! in the same run: one batch read of the same old table, the least any copy must do.

use crate::{
    staged_pins::{layout_2_keys, stage_layout_2, stage_layout_2_flows, RemoveOnDrop},
    testrun::default_plan,
};
use anyhow::{ensure, Context, Result};
use forwarder::datapath::{batch, pins::Pins, Datapath};
use forwarder_common::map_names;
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
    let mut table = stage_layout_2_flows(&dir, flows)?;
    let t = Instant::now();
    let (read, _) = batch::table(map_names::CT_ESTABLISHED, &table)?;
    let read_time = t.elapsed();
    ensure!(read.len() == 2 * flows as usize, "staged {} halves", read.len());

    let pins = Pins::new(&dir);
    let mut dp = Datapath::load_pinned(max_flows, &pins).context("upgrading the staged maps")?;
    let bulk = dp.migration_report().context("no upgrade under way")?.bulk;
    // The old program's last moments: 1 % of the flows moved on.
    for i in (0..flows).step_by(100) {
        let (orig, _) = layout_2_keys(i);
        let mut e = table.get(&orig, 0)?;
        e.packets += 1;
        table.insert(orig, e, 0)?;
    }
    dp.apply(&forwarder::plan::Plan { ..default_plan() })?;
    let report = dp.finish_migration()?.context("no upgrade report")?;
    ensure!(report.copied == 2 * flows as usize, "copied {} halves", report.copied);
    Ok(Upgrade { flows, bulk, catch_up: report.catch_up, read: read_time })
}
