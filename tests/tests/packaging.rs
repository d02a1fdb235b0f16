//! What the .deb ships (packaging/): the example config parses, the systemd unit has the
//! directives the daemon's semantics need and `systemd-analyze verify` accepts it, and the
//! cargo-deb metadata names files that exist. No root needed.
//!
//! The .deb itself is built and opened by `cargo xtask test` before the privileged tests
//! (from the debug binary they run; `cargo xtask deb` does the same from a release build):
//! dpkg-deb must list binary, unit, conffile and README, and the prerm must run `forwarder
//! unload`. `systemd_unit.rs` then installs it under a real systemd.

use forwarder::config::{self, ListenIp, SnatIp, TIMEOUT_KEYS, TOP_KEYS};
use forwarder_tests::unit_file::{self, single, words};
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace").into()
}

fn read(rel: &str) -> String {
    let path = workspace().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---- the example config -------------------------------------------------------------------

#[test]
fn example_config_parses_and_sets_every_key() {
    let text = read("packaging/forwarder.toml");
    // Parsing only: the hostnames of the targets and eth0 need not exist on this machine.
    let s = config::parse(Path::new("packaging/forwarder.toml"), &text)
        .unwrap_or_else(|e| panic!("the example config does not parse: {e}"));

    assert_eq!(s.interfaces, ["eth0"]);
    assert_eq!(s.listen_ip, ListenIp::Auto);
    assert_eq!(s.snat_ip, SnatIp::Auto);
    assert!(s.allowed_sources.as_ref().is_some_and(|v| !v.is_empty()), "allowed_sources");
    assert_eq!(s.health, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(s.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(s.control_socket, Path::new("/run/forwarder/control.sock"));
    assert_eq!(s.pin_path, Path::new("/sys/fs/bpf/forwarder"));
    assert_eq!(s.dns_refresh, Duration::from_secs(30));

    let rules: Vec<(&str, u16)> = s.rules.iter().map(|r| (r.name.as_str(), r.listen)).collect();
    assert_eq!(rules, [("broker-1", 9092), ("broker-2", 9093), ("broker-3", 9094)]);
    for r in &s.rules {
        assert!(
            r.target.host.parse::<std::net::Ipv4Addr>().is_err(),
            "{}: the example targets brokers by hostname, found {}",
            r.name,
            r.target.host
        );
    }

    // Every key the config reader takes is written out (so the example documents all of
    // them): its own lists, so a key added there and not here fails. Tables are checked
    // by their headers: [timeouts] below, the [[rule]] blocks, [azure] and [kafka] above.
    let keys: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !k.starts_with('#'))
        .collect();
    let tables = ["timeouts", "rule", "kafka", "azure"];
    let scalar_keys = TOP_KEYS.iter().filter(|k| !tables.contains(k));
    for key in scalar_keys.chain(TIMEOUT_KEYS) {
        assert!(keys.contains(key), "packaging/forwarder.toml does not set {key}");
    }
    assert!(text.contains("\n[timeouts]\n"), "no [timeouts] table");
    assert_eq!(s.kafka, None, "the example's [kafka] is commented out");
    assert_eq!(s.azure, None, "the example's [azure] is commented out");
}

/// The commented `[azure]` example, uncommented, parses and turns the events on.
#[test]
fn example_azure_section_parses_when_uncommented() {
    let text = read("packaging/forwarder.toml");
    let (_, example) = text.split_once("\n#[azure]\n").expect("a commented [azure] example");
    let azure: String = example
        .lines()
        .take_while(|l| l.starts_with('#') && l.contains(" = "))
        .map(|l| format!("{}\n", &l[1..]))
        .collect();
    let uncommented = format!("interface = \"eth0\"\n[azure]\n{azure}");
    let s = config::parse(Path::new("packaging/forwarder.toml"), &uncommented)
        .unwrap_or_else(|e| panic!("the [azure] example does not parse: {e}\n{uncommented}"));
    assert_eq!(s.azure.map(|a| a.interval), Some(Duration::from_secs(5)));
}

/// The commented `[kafka]` example, uncommented (with OAUTHBEARER, not the SCRAM lines),
/// parses: an operator who removes the `#`s gets a working section.
#[test]
fn example_kafka_section_parses_when_uncommented() {
    let text = read("packaging/forwarder.toml");
    let (head, example) = text.split_once("\n#[kafka]\n").expect("a commented [kafka] example");
    let scram = ["#sasl_mechanism = \"scram", "#sasl_username", "#sasl_password_file"];
    let kafka: String = example
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" = ") && !l.starts_with("# "))
        .filter(|l| !scram.iter().any(|s| l.starts_with(s)))
        .map(|l| format!("{}\n", &l[1..]))
        .collect();
    let uncommented = format!("{head}\n[kafka]\n{kafka}");
    let s = config::parse(Path::new("packaging/forwarder.toml"), &uncommented)
        .unwrap_or_else(|e| panic!("the [kafka] example does not parse: {e}\n{uncommented}"));
    let k = s.kafka.expect("a [kafka] section");
    assert_eq!(k.bootstrap.len(), 2);
    assert!(k.tls.is_some_and(|t| t.client_cert.is_some()));
    assert!(matches!(k.sasl, Some(config::kafka::KafkaSasl::Token { .. })));
}

// ---- the systemd unit ---------------------------------------------------------------------

#[test]
fn unit_file_has_what_the_daemon_needs() {
    let service = unit_file::service();

    // The daemon sends READY=1 once forwarding and reloads on SIGHUP.
    assert_eq!(single(&service, "Type"), "notify");
    assert_eq!(
        single(&service, "ExecStart"),
        "/usr/bin/forwarder run --config /etc/forwarder/forwarder.toml"
    );
    let reload = single(&service, "ExecReload");
    assert!(reload.contains("-HUP") && reload.contains("$MAINPID"), "ExecReload={reload}");
    assert_eq!(single(&service, "Restart"), "on-failure");

    // Only the capabilities loading and attaching BPF needs.
    let caps: BTreeSet<String> =
        ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"].map(String::from).into();
    assert_eq!(words(&service, "CapabilityBoundingSet"), caps, "CapabilityBoundingSet");
    assert_eq!(words(&service, "AmbientCapabilities"), caps, "AmbientCapabilities");
    // Set by systemd, so that the daemon needs no CAP_SYS_RESOURCE on kernels before 5.11.
    assert_eq!(single(&service, "LimitMEMLOCK"), "infinity");

    // Pins, the config file `rule add/remove` rewrites, and /run/forwarder across restarts.
    let rw = words(&service, "ReadWritePaths");
    for path in ["/sys/fs/bpf", "/etc/forwarder"] {
        assert!(rw.contains(path), "ReadWritePaths lacks {path}: {rw:?}");
    }
    assert_eq!(single(&service, "RuntimeDirectory"), "forwarder");
    assert_eq!(single(&service, "RuntimeDirectoryPreserve"), "yes");

    // Stopping must leave the pinned data path alone: nothing runs after the daemon exits.
    assert_eq!(single(&service, "KillMode"), "process");
    assert!(!service.iter().any(|(k, _)| k == "ExecStopPost" || k == "ExecStop"));

    // Hardening that would break the daemon: the interface lives in the host's network
    // namespace, and it writes net.ipv4 sysctls under /proc/sys.
    for (key, bad) in [("PrivateNetwork", "yes"), ("ProtectKernelTunables", "yes")] {
        assert!(!service.iter().any(|(k, v)| k == key && v == bad), "{key}={bad} is set");
    }
    // @system-service leaves bpf(2) out: a filter must add it back.
    let filter = words(&service, "SystemCallFilter");
    assert!(filter.is_empty() || filter.contains("bpf"), "SystemCallFilter without bpf");
    assert_eq!(single(&service, "NoNewPrivileges"), "yes");
    assert_eq!(single(&service, "ProtectSystem"), "strict");
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `systemd-analyze verify UNIT`: exit status and every line it printed.
fn verify(unit: &Path) -> (bool, Vec<String>) {
    let tool = find_in_path("systemd-analyze").unwrap_or_else(|| {
        panic!("systemd-analyze not found: install the `systemd` package (bash .ci/setup.sh does)")
    });
    let out = Command::new(tool)
        .arg("verify")
        .arg(unit)
        .env("SYSTEMD_COLORS", "0")
        .output()
        .expect("running systemd-analyze verify");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_string)
        .filter(|l| !l.trim().is_empty())
        .collect();
    (out.status.success(), lines)
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    // As shipped: the only complaint allowed is that /usr/bin/forwarder is not installed on
    // this machine.
    let unit = workspace().join("packaging/forwarder.service");
    let (_, lines) = verify(&unit);
    let problems: Vec<&String> = lines
        .iter()
        .filter(|l| !(l.contains("/usr/bin/forwarder") && l.contains("is not executable")))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify {}:\n{problems:#?}", unit.display());

    // With the binary replaced by one that exists, verify must pass outright. The copy keeps
    // the file name: systemd names the unit after it.
    let dir = tempfile::Builder::new().prefix("fwt-unit-").tempdir().unwrap();
    let copy = dir.path().join("forwarder.service");
    let exe = std::env::current_exe().unwrap();
    let text = read("packaging/forwarder.service")
        .replace("/usr/bin/forwarder", exe.to_str().expect("utf-8 path"));
    std::fs::write(&copy, text).unwrap();
    let (ok, lines) = verify(&copy);
    assert!(ok && lines.is_empty(), "systemd-analyze verify (binary present):\n{lines:#?}");
}

// ---- the cargo-deb metadata ---------------------------------------------------------------

#[test]
fn deb_metadata_names_existing_files() {
    let manifest = read("forwarder/Cargo.toml");
    let (_, deb) = manifest
        .split_once("[package.metadata.deb]")
        .expect("forwarder/Cargo.toml has no [package.metadata.deb]");
    let crate_dir = workspace().join("forwarder");
    // Every path of the metadata outside the crate ("../packaging/..", "../README.md").
    let paths: Vec<&str> = deb
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .filter(|s| s.starts_with("../"))
        .collect();
    for want in ["../packaging/forwarder.toml", "../README.md", "../packaging"] {
        assert!(paths.contains(&want), "the deb metadata does not name {want}: {paths:?}");
    }
    for p in &paths {
        let how = if p.starts_with("../packaging/generated/") {
            ": `cargo xtask test` and `cargo xtask deb` write it (forwarder generate)"
        } else {
            ""
        };
        assert!(crate_dir.join(p).exists(), "{p} (relative to forwarder/) does not exist{how}");
    }
    // The config goes where the unit reads it; the unit is neither enabled nor started.
    assert!(deb.contains("\"etc/forwarder/forwarder.toml\""));
    assert!(deb.contains("enable = false") && deb.contains("start = false"));

    // The maintainer script: valid sh, executable, with the token cargo-deb fills in.
    let prerm = workspace().join("packaging/debian/prerm");
    let text = std::fs::read_to_string(&prerm).unwrap();
    assert!(text.contains("\n#DEBHELPER#\n"), "prerm lacks the #DEBHELPER# line");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prerm).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "prerm is not executable ({mode:o})");
    let status = Command::new("sh").arg("-n").arg(&prerm).status().expect("running sh -n");
    assert!(status.success(), "sh -n packaging/debian/prerm failed");
}
