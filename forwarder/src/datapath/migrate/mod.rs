//! An upgrade across map layouts that keeps every connection: the tables a daemon of the
//! previous layout pinned are copied into this build's, instead of `forwarder unload`
//! dropping them.
//!
//! The journey, driven by `Datapath::load_pinned` and the daemon's start:
//! 1. `begin`: the previous layout's pins are checked (sizes, types) and opened; this
//!    build's maps are created empty and pinned in a staging directory inside the pin
//!    directory (the same bpffs, and the only place the unit may write). The old program keeps
//!    forwarding on the old maps.
//! 2. `bulk_copy`: every flow (both halves: state, counters, timestamps, SNAT port in the
//!    reply key, cached next hop), the per-rule counters and the flow count are converted
//!    and written. The daemon then fills the rule maps with `CONFIG_FLAG_MIGRATING` set.
//! 3. The daemon swaps this program into each pinned link (`bpf_link_update`, atomic per
//!    interface). From here the old maps are frozen: no program writes them.
//! 4. `catch_up`: the old tables are read again and whatever the old program changed
//!    between the bulk copy and the swap (flows opened, closed, promoted, counted) is
//!    written over; the staged CONFIG is marked `CONFIG_FLAG_UPGRADE_COPIED`. `finish`:
//!    the staged pins replace the old ones (rename over them, the version-bearing CONFIG
//!    last) and the staging directory goes; then the daemon clears the flags.
//!
//! A daemon killed on the way: before the mark, the next start finds layout 2's CONFIG
//! and upgrades again from the old tables (the staging directory is made anew); flows stay,
//! what the new program counted since the swap is lost. After the mark, the next start
//! finds it on the staged CONFIG and finishes the moves ([`Migration::complete_interrupted`]);
//! without that it found half of each layout pinned and refused to start, while the
//! program, its flag still set, refused every new connection.
//!
//! The window, and how it is closed: between the swap (3) and the end of `finish` (4) a
//! flow the old program opened after the bulk copy is not in the new tables yet. A packet
//! of it would go to the kernel, which answers an unknown connection with a reset; with
//! the flag set the program drops it instead (see `CONFIG_FLAG_MIGRATING`), and no new
//! flow is opened (its SYN too is dropped, so no SNAT port can be handed out twice). TCP
//! sends such packets again after the window, by then copied. Flows that existed at the
//! bulk copy, every established one among them, never miss a packet. The window's length
//! is [`Report::window`]; the daemon logs it.

pub mod from_v2;

use crate::datapath::{
    batch,
    handles::{of, open_pinned, MapAccessError, MapHandles},
    pins::{PinError, Pins},
};
use aya::maps::{Array, HashMap as BpfHash, MapData, PerCpuArray};
use forwarder_common::{
    map_names, CtEntry, FlowKey, RuleStats, CONFIG_FLAG_UPGRADE_COPIED, CT_COUNT_KERNEL,
    CT_COUNT_SWEPT, CT_FLAG_REPLY, LAYOUT_VERSION, MAX_RULES,
};
use from_v2::CtEntryV2;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(transparent)]
    Maps(#[from] MapAccessError),
    #[error(
        "the conntrack table {table} of this build has no room for the pinned flows \
         ({copied} halves copied): its max_flows is smaller than the pinned tables'"
    )]
    NoRoom { table: &'static str, copied: usize },
}

/// What an upgrade did, for the log and the tests.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub from_version: u32,
    /// Halves (two per flow) in the new tables after the bulk copy.
    pub copied: usize,
    pub bulk: Duration,
    /// Halves the old program changed or added after the bulk copy, written by `catch_up`.
    pub caught_up: usize,
    /// From the first program swap to the end of `finish` (the moves): the time in which a packet of
    /// a flow opened during the bulk copy was dropped (and retransmitted) instead of
    /// forwarded.
    pub window: Duration,
    /// Of the window: the second copy and the renames (the rest is the swaps).
    pub catch_up: Duration,
}

/// The previous layout's tables, opened from its pins.
struct OldTables {
    embryonic: BpfHash<MapData, FlowKey, CtEntryV2>,
    established: BpfHash<MapData, FlowKey, CtEntryV2>,
    rule_stats: PerCpuArray<MapData, RuleStats>,
    count: Array<MapData, u64>,
}

/// An upgrade under way, between `begin` and `finish`.
pub struct Migration {
    pins: Pins,
    staging: Pins,
    old: OldTables,
    /// Each half as the bulk copy found it, so `catch_up` writes only what changed since
    /// (a half the new program updated meanwhile keeps its newer counters).
    copied: HashMap<FlowKey, CtEntryV2>,
    swap_started: Option<Instant>,
    /// The program's slot of the flow count as the bulk copy wrote it into the new map.
    kernel_at_bulk: u64,
    catch_up_started: Option<Instant>,
    report: Report,
}

impl Migration {
    /// The staging directory of an upgrade of `pins`: inside it (the unit may write
    /// nowhere else on the bpffs), so the last step renames within one directory tree.
    pub fn staging_for(pins: &Pins) -> Pins {
        Pins::new(pins.dir().join(format!("staging-layout{LAYOUT_VERSION}")))
    }

    /// Opens the previous layout's pins in `pins`, which `Pins::check_compatible` found to
    /// be layout `from_version` with layout 2's sizes. The caller loads this build's object
    /// into [`Self::staging`] (left empty here: a directory left by an upgrade that died
    /// half-way is removed).
    pub fn begin(pins: &Pins, from_version: u32) -> Result<Self, MigrateError> {
        debug_assert_eq!(from_version, from_v2::VERSION);
        let staging = Self::staging_for(pins);
        if staging.dir().exists() {
            staging.remove_all()?;
        }
        staging.create_subdir()?;
        let old = OldTables {
            embryonic: open_pinned(pins, map_names::CT_EMBRYONIC)?,
            established: open_pinned(pins, map_names::CT_ESTABLISHED)?,
            rule_stats: open_pinned(pins, map_names::RULE_STATS)?,
            count: open_pinned(pins, map_names::CT_COUNT)?,
        };
        Ok(Self {
            pins: pins.clone(),
            staging,
            old,
            copied: HashMap::new(),
            swap_started: None,
            kernel_at_bulk: 0,
            catch_up_started: None,
            report: Report { from_version, ..Default::default() },
        })
    }

    pub fn staging(&self) -> &Pins {
        &self.staging
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Step 2: every flow, the per-rule counters and the flow count, into `new` (maps of
    /// this build, not attached yet).
    pub fn bulk_copy(&mut self, new: &mut MapHandles) -> Result<&Report, MigrateError> {
        let t = Instant::now();
        let mut copied = 0;
        for (table, name) in [
            (Table::Established, map_names::CT_ESTABLISHED),
            (Table::Embryonic, map_names::CT_EMBRYONIC),
        ] {
            let (entries, _) = batch::table(name, self.old.table(table))?;
            for (key, old) in entries {
                insert(new, table, &key, &from_v2::convert(&old), copied)?;
                self.copied.insert(key, old);
                copied += 1;
            }
        }
        let stats = map_names::RULE_STATS;
        for rule in 0..MAX_RULES {
            let values = self.old.rule_stats.get(&rule, 0).map_err(of(stats))?;
            new.rule_stats.0.set(rule, values, 0).map_err(of(stats))?;
        }
        for slot in [CT_COUNT_KERNEL, CT_COUNT_SWEPT] {
            let v = self.old.count.get(&slot, 0).map_err(of(map_names::CT_COUNT))?;
            new.conntrack.count.set(slot, v, 0).map_err(of(map_names::CT_COUNT))?;
            if slot == CT_COUNT_KERNEL {
                self.kernel_at_bulk = v;
            }
        }
        self.report.copied = copied;
        self.report.bulk = t.elapsed();
        Ok(&self.report)
    }

    /// Step 3 begins: the daemon is about to swap the program into the links.
    pub fn swapping(&mut self) {
        self.swap_started.get_or_insert_with(Instant::now);
    }

    /// Step 4, first part: the old program is off every link. Writes what it changed after
    /// the bulk copy, sets the flow count from the table, and marks the staged CONFIG as
    /// copied.
    pub fn catch_up(&mut self, new: &mut MapHandles) -> Result<(), MigrateError> {
        if self.catch_up_started.is_some() {
            return Ok(());
        }
        let t = Instant::now();
        let mut caught_up = 0;
        let mut originals = 0;
        let mut established_since = Vec::new();
        for (table, name) in [
            (Table::Established, map_names::CT_ESTABLISHED),
            (Table::Embryonic, map_names::CT_EMBRYONIC),
        ] {
            let (entries, _) = batch::table(name, self.old.table(table))?;
            if table == Table::Established {
                originals = entries.iter().filter(|(_, e)| e.flags & CT_FLAG_REPLY == 0).count();
            }
            for (key, old) in entries {
                // Unchanged since the bulk copy: the new program's copy is as new or newer.
                if self.copied.get(&key) == Some(&old) {
                    continue;
                }
                insert(new, table, &key, &from_v2::convert(&old), caught_up)?;
                if table == Table::Established {
                    established_since.push(key);
                }
                caught_up += 1;
            }
        }
        // A flow the old program promoted after the bulk copy: its embryonic copy goes.
        // (Per-rule counters of the same milliseconds are not carried over.)
        for key in &established_since {
            let _ = new.conntrack.embryonic.remove(key);
        }
        self.count_flows(new, originals as u64)?;
        let name = map_names::CONFIG;
        let mut config = new.config.get(&0, 0).map_err(of(name))?;
        config.flags |= CONFIG_FLAG_UPGRADE_COPIED;
        new.config.set(0, config, 0).map_err(of(name))?;
        self.report.caught_up = caught_up;
        self.catch_up_started = Some(t);
        Ok(())
    }

    /// Step 4, second part, after [`Self::catch_up`]: moves the staged pins over the old
    /// ones. The caller then clears the flags.
    pub fn finish(mut self) -> Result<Report, MigrateError> {
        self.pins.replace_with(&self.staging)?;
        self.report.window = self.swap_started.map(|t| t.elapsed()).unwrap_or_default();
        self.report.catch_up = self.catch_up_started.map(|t| t.elapsed()).unwrap_or_default();
        Ok(self.report)
    }

    /// At a start, before the pins are checked: finishes an upgrade whose daemon was
    /// killed after its copy was complete (its staged CONFIG says so), during or just
    /// before the pin moves. Every link then runs this layout's program on the staged
    /// maps and the old tables are copied and frozen; moving the rest of the staged pins
    /// is all that is left, and the daemon's `apply` clears the flags. Returns whether
    /// there was such an upgrade. An empty staging directory left by a kill after the
    /// last move goes too.
    pub fn complete_interrupted(pins: &Pins) -> Result<bool, MigrateError> {
        let staging = Self::staging_for(pins);
        if !staging.dir().exists() {
            return Ok(false);
        }
        if !staging.map(map_names::CONFIG).exists() {
            // Removed only if empty (a kill after the last move); otherwise an upgrade that
            // stopped before its copy was complete, whose staging `begin` makes anew.
            let _ = std::fs::remove_dir(staging.dir());
            return Ok(false);
        }
        let config: Array<MapData, forwarder_common::Config> =
            open_pinned(&staging, map_names::CONFIG)?;
        let value = config.get(&0, 0).map_err(of(map_names::CONFIG))?;
        if value.layout_version != LAYOUT_VERSION || value.flags & CONFIG_FLAG_UPGRADE_COPIED == 0 {
            return Ok(false);
        }
        pins.replace_with(&staging)?;
        Ok(true)
    }

    /// Sets the flow count to the old program's established flows plus what the new
    /// program promoted since the swap (which it added to its own slot, copied at the bulk
    /// copy): only the daemon's slot is written, as the sweep's reconcile does.
    fn count_flows(&self, new: &mut MapHandles, originals: u64) -> Result<(), MigrateError> {
        let swept = self.kernel_at_bulk.wrapping_sub(originals);
        new.conntrack.count.set(CT_COUNT_SWEPT, swept, 0).map_err(of(map_names::CT_COUNT))?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Embryonic,
    Established,
}

impl OldTables {
    fn table(&self, t: Table) -> &BpfHash<MapData, FlowKey, CtEntryV2> {
        match t {
            Table::Embryonic => &self.embryonic,
            Table::Established => &self.established,
        }
    }
}

fn new_table(new: &mut MapHandles, t: Table) -> &mut BpfHash<MapData, FlowKey, CtEntry> {
    match t {
        Table::Embryonic => &mut new.conntrack.embryonic,
        Table::Established => &mut new.conntrack.established,
    }
}

fn insert(
    new: &mut MapHandles,
    t: Table,
    key: &FlowKey,
    value: &CtEntry,
    copied: usize,
) -> Result<(), MigrateError> {
    let name = match t {
        Table::Embryonic => map_names::CT_EMBRYONIC,
        Table::Established => map_names::CT_ESTABLISHED,
    };
    new_table(new, t).insert(key, value, 0).map_err(|e| match e {
        aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => {
            MigrateError::NoRoom { table: name, copied }
        }
        e => MigrateError::Maps(of(name)(e)),
    })
}

/// The map layout of each release, oldest first: what a package downgrade checks (the
/// older build cannot read a newer layout's pins). A release that changes the layout adds
/// its line here with its version bump.
pub const RELEASE_LAYOUTS: [(&str, u32); 2] = [("0.1.0", 2), ("0.2.0", LAYOUT_VERSION)];

/// The layout of release `version` (a Debian version such as "0.1.0-1" is taken by its
/// upstream part), if known.
pub fn release_layout(version: &str) -> Option<u32> {
    let upstream = version.split_once('-').map_or(version, |(v, _)| v);
    RELEASE_LAYOUTS.iter().find(|(v, _)| *v == upstream).map(|(_, l)| *l)
}

/// Whether `version` is older than this build, comparing the numeric dotted parts.
pub fn is_older(version: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        let upstream = v.split_once('-').map_or(v, |(v, _)| v);
        upstream.split('.').map(|p| p.parse().unwrap_or(0)).collect()
    };
    parts(version) < parts(env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod release_tests {
    use super::*;

    #[test]
    fn this_release_is_listed_with_this_layout() {
        assert_eq!(release_layout(env!("CARGO_PKG_VERSION")), Some(LAYOUT_VERSION));
        assert_eq!(release_layout("0.1.0-1"), Some(2));
        assert_eq!(release_layout("0.0.9"), None);
        assert!(is_older("0.1.0-1") && !is_older(env!("CARGO_PKG_VERSION")) && !is_older("1.0.0"));
    }

    /// The prerm asks about its own package's version when it is the incoming package of a
    /// downgrade; it cannot ask dpkg for it, so it is written in the script.
    #[test]
    fn the_prerm_knows_this_version() {
        let prerm = include_str!("../../../../packaging/debian/prerm");
        let line = format!("THIS_VERSION={}\n", env!("CARGO_PKG_VERSION"));
        assert!(prerm.contains(&line), "packaging/debian/prerm lacks {line:?}");
    }
}
