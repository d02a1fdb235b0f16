//! A daemon of this build and pins left by a build with another map layout it cannot
//! upgrade from: an older one (refused, saying what to do) and a newer one (a downgrade:
//! refused, saying what it would lose, unless forced), before anything is changed. The
//! upgrade from the previous layout, with live connections under the real systemd and
//! through the .deb, is tests/tests/package_upgrade.rs.

use forwarder::datapath::{pins::Pins, Datapath, Downgrade};
use forwarder_common::{map_names, LAYOUT_VERSION};
use forwarder_tests::{
    require_root,
    staged_pins::{create_map, pin_config, update, RemoveOnDrop},
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
