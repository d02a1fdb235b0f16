//! A daemon of this build and pins left by a build with another map layout it cannot
//! upgrade from: an older one (refused, saying what to do) and a newer one (a downgrade:
//! refused, saying what it would lose, unless forced), before anything is changed; and
//! upgrades from the previous layout whose daemon was killed on the way. The
//! upgrade from the previous layout, with live connections under the real systemd and
//! through the .deb, is tests/tests/package_upgrade.rs.

use aya::maps::{Array, MapData};
use forwarder::datapath::{
    handles::open_pinned,
    migrate::Migration,
    pins::{Pinned, Pins},
    Datapath, Downgrade,
};
use forwarder_common::{
    map_names, Config, CONFIG_FLAG_MIGRATING, CONFIG_FLAG_UPGRADE_COPIED, LAYOUT_VERSION,
};
use forwarder_tests::{
    require_root,
    staged_pins::{
        create_map, pin_config, stage_layout_2, stage_layout_2_flows, update, RemoveOnDrop,
    },
    testrun::default_plan,
    topology::test_bpffs,
};
use std::path::Path;

/// Pins a CONFIG map as layout 1 made it: a 40-byte value whose first word is the version.
fn pin_layout_1_config(dir: &Path) {
    pin_config(dir, &config_value(1, 40)).unwrap();
}

/// A CONFIG value of `size` bytes that says layout `version`.
fn config_value(version: u8, size: usize) -> Vec<u8> {
    let mut value = vec![0; size];
    value[0] = version;
    value
}

/// Pins a hash map `name` of 16-byte keys and `value`-byte values holding `entries` keys.
fn pin_table(dir: &Path, name: &str, value: usize, entries: u8) {
    create_map(dir, name, "hash", (16, value, 64), None).unwrap();
    for i in 0..entries {
        let mut key = [0u8; 16];
        key[0] = i;
        update(dir, name, &key, &vec![0; value]).unwrap();
    }
}

#[test]
fn pins_of_a_newer_layout_are_refused_saying_what_starting_would_lose() {
    require_root();
    let dir = test_bpffs().join(format!("downgrade-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let newer = (LAYOUT_VERSION + 1) as u8;
    pin_config(&dir, &config_value(newer, 56)).unwrap();
    // Three flows (six halves) established, one handshake (two halves) in flight.
    pin_table(&dir, map_names::CT_ESTABLISHED, 96, 6);
    pin_table(&dir, map_names::CT_EMBRYONIC, 96, 2);
    let pins = Pins::new(&dir);

    let err = match Datapath::load_pinned(1024, &pins) {
        Ok(_) => panic!("pins of layout {newer} were accepted"),
        Err(e) => e.to_string(),
    };
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3, "the refusal changed the pins");
    for want in [
        format!("newer build (layout version {newer}"),
        "drop the 3 established connection(s) and 1 handshake(s)".to_string(),
        "--force-downgrade".to_string(),
    ] {
        assert!(err.contains(&want), "the refusal does not say {want:?}: {err}");
    }

    // Forced: the newer maps go, this build's take their place.
    let dp = Datapath::load_pinned_with(1024, &pins, Downgrade::Force).expect("a forced start");
    drop(dp);
    let pinned = Pins::new(&dir).check_compatible().expect("this build's pins");
    assert!(
        matches!(pinned, forwarder::datapath::pins::Pinned::Current { .. }),
        "after the forced start the pins are {pinned:?}"
    );
}

#[test]
fn pins_of_a_layout_older_than_the_previous_are_refused_clearly() {
    require_root();
    const { assert!(LAYOUT_VERSION > 2, "layout 1 is no longer one this build upgrades from") };
    let dir = test_bpffs().join(format!("upgrade-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    pin_layout_1_config(&dir);
    let pins = Pins::new(&dir);

    let err = match Datapath::load_pinned(1024, &pins) {
        Ok(_) => panic!("pins of layout 1 were accepted"),
        Err(e) => e.to_string(),
    };
    let untouched = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(untouched, 1, "the refusal changed the pin directory");
    for want in ["incompatible build", "layout version 1", "forwarder unload"] {
        assert!(err.contains(want), "the refusal does not say {want:?}: {err}");
    }
}

/// Flows staged in layout 2's tables for the interrupted upgrades below.
const STAGED_FLOWS: u32 = 300;
const STAGED_MAX_FLOWS: u32 = 1024;

/// Layout 2's pins with [`STAGED_FLOWS`] established flows, and a start of this build on
/// them that has copied every flow into its staging directory (the bulk copy) and filled
/// the rules, as the daemon does before it swaps the program into the links.
fn an_upgrade_under_way(dir: &Path) -> Datapath {
    stage_layout_2(dir, STAGED_MAX_FLOWS).unwrap();
    stage_layout_2_flows(dir, STAGED_FLOWS).unwrap();
    let mut dp = Datapath::load_pinned(STAGED_MAX_FLOWS, &Pins::new(dir)).unwrap();
    assert!(dp.migration_report().is_some(), "no upgrade began on layout 2's pins");
    dp.apply(&default_plan()).unwrap();
    dp
}

/// The CONFIG value pinned in `dir`.
fn pinned_config(dir: &Path) -> Config {
    let config: Array<MapData, Config> = open_pinned(&Pins::new(dir), map_names::CONFIG).unwrap();
    config.get(&0, 0).unwrap()
}

/// What a start after an interrupted upgrade must leave, `dp` being that start (its
/// upgrade, if it made one, finished): this layout's pins, no staging directory, every
/// staged flow, and once the rules are applied (as the daemon does next) neither upgrade
/// flag on the program's CONFIG.
fn assert_upgraded(dir: &Path, mut dp: Datapath) {
    let pins = Pins::new(dir);
    match pins.check_compatible() {
        Ok(Pinned::Current { .. }) => {}
        other => panic!("the pins after the start: {other:?}"),
    }
    let staging = Migration::staging_for(&pins);
    assert!(!staging.dir().exists(), "{} is left", staging.dir().display());
    assert_eq!(dp.flows().unwrap().len(), STAGED_FLOWS as usize, "flows after the start");
    dp.apply(&default_plan()).unwrap();
    let flags = pinned_config(dir).flags;
    assert_eq!(flags & (CONFIG_FLAG_MIGRATING | CONFIG_FLAG_UPGRADE_COPIED), 0, "flags {flags:#x}");
}

/// A daemon killed after its copy was complete, while it moved the staged pins over the
/// old ones: before the first move, after two (one a table whose layout changed), after
/// all but CONFIG, and after CONFIG too (only the empty staging directory left). The next
/// start finishes the moves: the CONFIG it finds pinned is the staged one, marked. Before
/// 7ed822d it found half of each layout pinned and refused to start, while the program,
/// still told an upgrade was under way, dropped every new connection.
#[test]
fn an_upgrade_killed_while_moving_its_pins_is_finished_by_the_next_start() {
    require_root();
    let moved_before_the_kill: [&[&str]; 4] =
        [&[], &[map_names::CT_ESTABLISHED, map_names::RULE_STATS], &["all but CONFIG"], &["*"]];
    for (case, moved) in moved_before_the_kill.iter().enumerate() {
        let dir = test_bpffs().join(format!("upgrade-moving-{}-{case}", std::process::id()));
        let _cleanup = RemoveOnDrop(dir.clone());
        let mut dp = an_upgrade_under_way(&dir);
        dp.catch_up_migration().unwrap();
        let staging = Migration::staging_for(&Pins::new(&dir));
        let staged: Vec<String> = std::fs::read_dir(staging.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let names: Vec<String> = match *moved {
            ["*"] => staged,
            ["all but CONFIG"] => staged.into_iter().filter(|n| n != map_names::CONFIG).collect(),
            names => names.iter().map(|n| n.to_string()).collect(),
        };
        for name in &names {
            std::fs::rename(staging.map(name), dir.join(name))
                .unwrap_or_else(|e| panic!("case {case}: moving {name}: {e}"));
        }
        drop(dp);

        let dp = Datapath::load_pinned(STAGED_MAX_FLOWS, &Pins::new(&dir)).unwrap_or_else(|e| {
            panic!("case {case}: the start after a kill with {names:?} moved: {e}")
        });
        assert!(dp.migration_report().is_none(), "case {case}: a finished copy was begun again");
        let config = pinned_config(&dir);
        assert_eq!(config.layout_version, LAYOUT_VERSION, "case {case}: the pinned CONFIG");
        assert_ne!(
            config.flags & CONFIG_FLAG_UPGRADE_COPIED,
            0,
            "case {case}: not the staged CONFIG"
        );
        assert_upgraded(&dir, dp);
    }
}

/// Killed before its copy was complete (after the bulk copy, before the catch-up): the
/// next start upgrades again from the old tables, which still hold every flow. (As before
/// 7ed822d: `begin` makes the staging directory anew; kept so that it stays so.)
#[test]
fn an_upgrade_killed_before_its_copy_was_complete_is_made_again() {
    require_root();
    let dir = test_bpffs().join(format!("upgrade-copying-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    drop(an_upgrade_under_way(&dir));

    let mut dp = Datapath::load_pinned(STAGED_MAX_FLOWS, &Pins::new(&dir))
        .expect("the start after an upgrade killed during its copy");
    assert!(dp.migration_report().is_some(), "the upgrade was not begun again");
    dp.apply(&default_plan()).unwrap();
    dp.finish_migration().unwrap();
    assert_upgraded(&dir, dp);
}
