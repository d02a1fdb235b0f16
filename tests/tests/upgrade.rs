//! A daemon of this build and pins left by a build with another map layout: refused with a
//! message that says what to do, before anything is changed.

use forwarder::{datapath::pins::Pins, datapath::Datapath};
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
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(map_names::CONFIG);
    let path = path.to_str().unwrap();
    bpftool(&[
        "map", "create", path, "type", "array", "key", "4", "value", "40", "entries", "1", "name",
        "CONFIG",
    ]);
    let mut update = vec!["map", "update", "pinned", path, "key", "0", "0", "0", "0"];
    update.extend(["value", "1", "0", "0", "0"]);
    update.extend(std::iter::repeat_n("0", 36));
    bpftool(&update);
}

#[test]
fn pins_of_the_previous_layout_are_refused_clearly() {
    require_root();
    assert_eq!(LAYOUT_VERSION, 2, "this test stages the layout before this one");
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
