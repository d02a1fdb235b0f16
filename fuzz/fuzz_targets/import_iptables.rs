//! `forwarder import-iptables`: any text converts; every rule and refusal names a line of
//! the input; listen ports are unique; and the `[[rule]]` blocks it prints, pasted after a
//! valid configuration's settings, make a valid configuration (the point of the command).
#![no_main]

use forwarder::{config, ops::import_iptables};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Top-level settings without health or metrics sockets, whose ports a rule could collide
/// with (check-config rightly refuses that; the importer cannot know them).
const BASE: &str = "interface = \"eth0\"\nsnat_ports = \"40000-59999\"\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let c = import_iptables::convert(text);
    let lines = text.lines().count();
    for (i, r) in c.rules.iter().enumerate() {
        assert!((1..=lines).contains(&r.line), "rule line {} of {lines}", r.line);
        assert!(c.rules[..i].iter().all(|o| o.listen != r.listen), "listen {} twice", r.listen);
    }
    for u in &c.untranslated {
        assert!((1..=lines).contains(&u.line), "untranslated line {} of {lines}", u.line);
    }
    let toml = c.to_toml();
    if let Err(e) = toml_edit::ImDocument::parse(toml.as_str()) {
        panic!("to_toml is not TOML: {e}\n{toml}");
    }
    // snat_ports is fixed above: rules listening inside it are the base's fault, not the
    // importer's.
    if !c.rules.iter().any(|r| (40000..=59999).contains(&r.listen)) {
        let whole = format!("{BASE}{toml}");
        if let Err(e) = config::parse(Path::new("forwarder.toml"), &whole) {
            let e = forwarder::error::chain(&e);
            panic!("the imported rules are not a valid configuration: {e}\n{whole}");
        }
    }
});
