//! The shipped systemd unit (packaging/forwarder.service) read as systemd reads its
//! settings, for the tests that check it (`packaging.rs`) and the ones that run the daemon
//! the way it does (`capabilities.rs`).

use std::{collections::BTreeSet, path::PathBuf};

/// The unit file in this checkout.
pub fn path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/forwarder.service"))
}

/// The `key=value` lines of the unit's `[Service]` section, in order.
pub fn service() -> Vec<(String, String)> {
    let path = path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    section(&text, "Service")
}

/// The `key=value` lines of one `[section]` of a unit file, in order (a key may repeat).
pub fn section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        assert!(!line.ends_with('\\'), "line continuations are not expected here: {line}");
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        if current == section {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Every value of `key`, as systemd merges list settings: words of all its lines; an empty
/// assignment resets the list.
pub fn words(service: &[(String, String)], key: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for (_, v) in service.iter().filter(|(k, _)| k == key) {
        if v.is_empty() {
            set.clear();
        }
        set.extend(v.split_whitespace().map(String::from));
    }
    set
}

/// The single value of `key`; fails if it is missing or set twice.
pub fn single<'a>(service: &'a [(String, String)], key: &str) -> &'a str {
    let values: Vec<&str> =
        service.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect();
    assert_eq!(values.len(), 1, "{key}= should be set exactly once, found {values:?}");
    values[0]
}
