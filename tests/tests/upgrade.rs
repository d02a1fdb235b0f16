//! A daemon of this build and pins left by a build with another map layout it cannot
//! upgrade from: an older one (refused, saying what to do) and a newer one (a downgrade:
//! refused, saying what it would lose, unless forced), before anything is changed. The
//! upgrade from the previous layout, with live connections under the real systemd and
//! through the .deb, is tests/tests/package_upgrade.rs.

use forwarder::datapath::{pins::Pins, Datapath, Downgrade};
use forwarder_common::{map_names, LAYOUT_VERSION};
use forwarder_tests::{require_root, topology::test_bpffs};
use std::{path::Path, process::Command};

fn bpftool(args: &[&str]) {
    let out = Command::new("bpftool").args(args).output().expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pins a CONFIG map as layout 1 made it: a 40-byte value whose first word is the version.
fn pin_layout_1_config(dir: &Path) {
    pin_config(dir, 1, 40);
}

/// Pins a CONFIG map whose `size`-byte value starts with layout `version`.
fn pin_config(dir: &Path, version: u8, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(map_names::CONFIG);
    let path = path.to_str().unwrap();
    let size_arg = size.to_string();
    bpftool(&[
        "map", "create", path, "type", "array", "key", "4", "value", &size_arg, "entries", "1",
        "name", "CONFIG",
    ]);
    let version = version.to_string();
    let mut update = vec!["map", "update", "pinned", path, "key", "0", "0", "0", "0"];
    update.extend(["value", &version, "0", "0", "0"]);
    update.extend(std::iter::repeat_n("0", size - 4));
    bpftool(&update);
}

/// Pins a hash map `name` of 16-byte keys and `value`-byte values holding `entries` keys.
fn pin_table(dir: &Path, name: &str, value: usize, entries: u8) {
    let path = dir.join(name);
    let path = path.to_str().unwrap();
    let value_arg = value.to_string();
    bpftool(&[
        "map", "create", path, "type", "hash", "key", "16", "value", &value_arg, "entries", "64",
        "name", name,
    ]);
    for i in 0..entries {
        let key = i.to_string();
        let mut update = vec!["map", "update", "pinned", path, "key", &key];
        update.extend(std::iter::repeat_n("0", 15));
        update.push("value");
        update.extend(std::iter::repeat_n("0", value));
        bpftool(&update);
    }
}

#[test]
fn pins_of_a_newer_layout_are_refused_saying_what_starting_would_lose() {
    require_root();
    let dir = test_bpffs().join(format!("downgrade-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let newer = (LAYOUT_VERSION + 1) as u8;
    pin_config(&dir, newer, 56);
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

/// Removes the staged pin directory however the test ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
