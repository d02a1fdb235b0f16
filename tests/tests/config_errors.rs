//! `forwarder check-config` on every invalid configuration of the table: exit code 2 and an
//! error naming the file, the line, the field and what was expected. No root needed:
//! check-config only reads the file and looks at the host's interfaces.

use forwarder_tests::{
    bad_configs::{base_config, cases, BadConfig},
    topology::forwarder_bin,
};
use std::{
    path::{Path, PathBuf},
    process::Output,
};

/// A directory of this test run's files, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("fwt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_config(file: &Path) -> Output {
    std::process::Command::new(forwarder_bin())
        .args(["check-config", "--config"])
        .arg(file)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("running forwarder check-config")
}

/// What is wrong with check-config's answer to `case`, if anything.
fn problems(dir: &Path, case: &BadConfig) -> Option<String> {
    let file = dir.join(format!("{}.toml", case.name));
    std::fs::write(&file, &case.text).expect("writing the case");
    let out = check_config(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let place = format!("{}:{}:", file.display(), case.line);
    let field = format!(": {}: ", case.field);
    let mut wrong = Vec::new();
    if out.status.code() != Some(2) {
        wrong.push(format!("exit code {:?}, expected 2", out.status.code()));
    }
    for (what, needle) in
        [("place", place.as_str()), ("field", field.as_str()), ("message", case.message_contains)]
    {
        if !stderr.contains(needle) {
            wrong.push(format!("no {what} {needle:?}"));
        }
    }
    if wrong.is_empty() {
        return None;
    }
    Some(format!(
        "--- {} (want {place}COL{field}...{}...): {}\nstderr: {}stdout: {}\nfile:\n{}",
        case.name,
        case.message_contains,
        wrong.join("; "),
        stderr,
        String::from_utf8_lossy(&out.stdout),
        numbered(&case.text),
    ))
}

fn numbered(text: &str) -> String {
    text.lines().enumerate().map(|(i, l)| format!("{:>3} | {l}\n", i + 1)).collect()
}

#[test]
fn the_base_config_is_valid() {
    let dir = TempDir::new("config-base");
    let file = dir.0.join("base.toml");
    std::fs::write(&file, base_config()).unwrap();
    let out = check_config(&file);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check-config rejects the base config:\nstderr: {}\nfile:\n{}",
        String::from_utf8_lossy(&out.stderr),
        numbered(&base_config())
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "the base config draws a warning: {stderr}");
}

/// An established timeout below RFC 5382's 2 h 4 min floor loads (exit 0) with a warning
/// that names the file, the line and the field; the same file at the floor draws none.
#[test]
fn an_established_timeout_below_the_rfc_floor_is_a_warning_at_its_line() {
    let dir = TempDir::new("config-warn");
    let base = base_config();
    let line = base.lines().position(|l| l.starts_with("established =")).unwrap() + 1;
    for (value, warned) in [("1h", true), ("2h", true), ("2h4m", false), ("3h", false)] {
        let text =
            base.replace("established = \"2h11m15s\"", &format!("established = \"{value}\""));
        assert_ne!(text, base, "the base config sets the established timeout");
        let file = dir.0.join(format!("warn-{value}.toml"));
        std::fs::write(&file, &text).unwrap();
        let out = check_config(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{value}: {stderr}");
        let want = format!("warning: {}:{line}:", file.display());
        if warned {
            assert!(stderr.contains(&want), "{value}: no {want:?} in {stderr}");
            assert!(stderr.contains(": timeouts.established: "), "{value}: {stderr}");
            assert!(stderr.contains("RFC 5382"), "{value}: {stderr}");
        } else {
            assert!(!stderr.contains("warning"), "{value}: {stderr}");
        }
    }
}

#[test]
fn every_bad_config_is_reported_with_its_line_and_field() {
    let dir = TempDir::new("config-errors");
    let all = cases();
    assert!(all.len() >= 35, "only {} cases", all.len());
    let failures: Vec<String> = all.iter().filter_map(|c| problems(&dir.0, c)).collect();
    for f in &failures {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad configs were not reported as expected (details above)",
        failures.len(),
        all.len()
    );
}

/// An interface that does not exist on this host, alone and second in a list: the error
/// points at its name.
#[test]
fn a_missing_interface_is_reported_at_its_name() {
    let dir = TempDir::new("config-nosuch");
    let base = base_config();
    let line = base.lines().position(|l| l.starts_with("interface =")).unwrap() + 1;
    for (name, value, column) in
        [("alone", "\"fwt-nosuch0\"", 13), ("second", "[\"lo\", \"fwt-nosuch0\"]", 20)]
    {
        let text = base.replace("interface = \"lo\"", &format!("interface = {value}"));
        let file = dir.0.join(format!("{name}.toml"));
        std::fs::write(&file, &text).unwrap();
        let out = check_config(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let want = format!("{}:{line}:{column}: interface: ", file.display());
        assert!(stderr.contains(&want), "{name}: want {want:?} in {stderr}");
        assert!(stderr.contains("\"fwt-nosuch0\""), "{name}: {stderr}");
    }
}
