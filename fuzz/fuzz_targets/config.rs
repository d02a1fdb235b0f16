//! The configuration file: any text either yields settings, the same ones every time, or an
//! error that points inside the text (SPEC §3: every error names a line and column of the
//! file). `config::parse` is the pure half of `config::load`; the host is never consulted.
#![no_main]

use forwarder::config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/etc/forwarder/forwarder.toml");
    match config::parse(path, text) {
        Ok(settings) => {
            assert_eq!(config::parse(path, text).as_ref(), Ok(&settings), "parsing twice differs");
            assert!(!settings.interfaces.is_empty());
            assert!(*settings.snat_ports.start() >= 1024);
            assert!(settings.snat_ports.start() <= settings.snat_ports.end());
            for (i, r) in settings.rules.iter().enumerate() {
                assert!(config::valid_rule_name(&r.name), "rule name {:?}", r.name);
                assert!(r.listen != 0);
                for other in &settings.rules[..i] {
                    assert_ne!(other.name, r.name, "two rules named alike");
                    assert_ne!(other.listen, r.listen, "two rules on one port");
                }
                // A target prints as it parses.
                assert_eq!(config::parse_target(&r.target.to_string()).as_ref(), Ok(&r.target));
            }
        }
        Err(e) => {
            let lines: Vec<&str> = text.split('\n').collect();
            assert!((1..=lines.len()).contains(&e.line), "line {} of {}: {e}", e.line, lines.len());
            let columns = lines[e.line - 1].chars().count() + 1;
            assert!((1..=columns).contains(&e.column), "column {} of {columns}: {e}", e.column);
            assert!(e.to_string().starts_with("/etc/forwarder/forwarder.toml:"));
        }
    }
});
