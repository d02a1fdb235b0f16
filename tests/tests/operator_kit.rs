//! The operator's kit, checked by the real tools: the Prometheus alert rules with
//! `promtool check rules` and their unit tests with `promtool test rules`; a live scrape of
//! the daemon with `promtool check metrics`; every metric the alerts and the Grafana
//! dashboard query is one the daemon exports; the configuration hash by which the VMs of a
//! pool are compared, as a running daemon reports it through live changes; the completions and the man page the .deb
//! ships come out of the binary and parse. promtool comes from Debian's `prometheus`
//! package (.ci/setup.sh); without it these tests fail and say so.

use anyhow::Result;
use forwarder_tests::{
    daemon_tests::{
        brokers, eventually, gauges, http_get, http_get_with, json, listen, ok,
        with_local_endpoints,
    },
    imds::FakeImds,
    metadata_server::{Advertised, Auth, MetadataServer},
    require_root,
    topology::{cli, forwarder_bin, Daemon, Topology, BROKERS, BROKER_PORT},
    traffic::connect,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(workspace().join("packaging/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: .ci/setup.sh installs Debian's prometheus package");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn promtool_checks_the_alert_rules_and_runs_their_unit_tests() {
    let rules =
        std::fs::read_to_string(workspace().join("packaging/prometheus/alerts.yml")).unwrap();
    let alerts = rules.lines().filter(|l| l.trim().starts_with("- alert: ")).count();
    let check = promtool(&["check", "rules", "alerts.yml"], None);
    assert!(check.status.success(), "{}", text(&check));
    let found = format!("SUCCESS: {alerts} rules found");
    assert!(text(&check).contains(&found), "promtool did not read every alert: {}", text(&check));
    let test = promtool(&["test", "rules", "alerts_test.yml"], None);
    assert!(test.status.success(), "{}", text(&test));
    // Every alert has a unit test.
    let tests =
        std::fs::read_to_string(workspace().join("packaging/prometheus/alerts_test.yml")).unwrap();
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {line}")), "{line} has no promtool test");
    }
}

/// The `forwarder_*` names an expression (or a dashboard) refers to, with the suffixes a
/// family's samples carry reduced to the family.
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("forwarder_") {
        let name: String =
            rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        // "forwarder_0.1.0", "forwarder_nat" in prose, and the dashboard's uid are not metrics.
        if name.len() > "forwarder_".len() && !["forwarder_nat"].contains(&name.as_str()) {
            out.insert(name);
        }
    }
    out
}

/// GET /metrics from inside the NAT VM, with `accept` as the Accept header.
fn scrape(topo: &Topology, accept: &str) -> Result<String> {
    let metrics = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464);
    http_get_with(&topo.natvm, metrics, "/metrics", &[("Accept", accept)], Duration::from_secs(10))
}

#[test]
fn a_live_scrape_passes_promtool_and_serves_every_metric_the_kit_uses() -> Result<()> {
    require_root();
    let topo = Topology::new("okit", false, false)?;
    let _brokers = brokers(&topo)?;
    // A [kafka] section, so that the watch's families (which the alerts use) are exported:
    // a metadata server on the NAT VM's loopback advertising the seed's brokers.
    let seed: Vec<Advertised> = BROKERS
        .iter()
        .enumerate()
        .map(|(i, b)| Advertised::new(i as i32 + 1, &b.to_string(), BROKER_PORT))
        .collect();
    let kafka =
        MetadataServer::start_in(&topo.natvm, "127.0.0.1:19092".parse()?, seed, Auth::None)?;
    // And [azure], with a stand-in for the instance metadata service, for its families.
    let _imds = FakeImds::start(&topo.natvm, "okit-nat")?;
    let text_cfg = with_local_endpoints(&topo.config("xdp-generic", "10.0.0.4"))
        + &format!("\n[kafka]\nbootstrap = \"{}\"\ninterval = \"1s\"\n", kafka.addr)
        + "\n[azure]\nscheduled_events = true\nscheduled_events_interval = \"1s\"\n";
    let daemon = Daemon::start(&topo.natvm, &text_cfg)?;
    // A probe, and a connection through a rule, so every family has samples.
    eventually(5, "the probe answers", || {
        let health = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);
        Ok(http_get(&topo.natvm, health, "/", Duration::from_secs(2)).is_ok())
    })?;
    let to: SocketAddrV4 = listen(9092);
    let mut c = connect(&topo.client, to)?;
    c.write_all(b"ping\n")?;
    let mut echo = [0u8; 5];
    c.read_exact(&mut echo)?;

    eventually(10, "the kafka watch's first round", || {
        Ok(scrape(&topo, "*/*")?.contains("forwarder_kafka_brokers{state=\"mapped\"} 3"))
    })?;
    eventually(10, "the first read of the scheduled events", || {
        let body = scrape(&topo, "*/*")?;
        Ok(body.contains("forwarder_azure_events_last_success_timestamp_seconds ")
            && !body.contains("forwarder_azure_events_last_success_timestamp_seconds 0\n"))
    })?;

    // What Prometheus asks for: OpenMetrics.
    let open = scrape(&topo, "application/openmetrics-text;version=1.0.0")?;
    assert!(open.contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{open}");
    assert!(open.ends_with("# EOF\n"), "{open}");
    // What promtool reads: the text format.
    let resp = scrape(&topo, "*/*")?;
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    let checked = promtool(&["check", "metrics"], Some(body));
    assert!(checked.status.success(), "promtool check metrics:\n{}\n{body}", text(&checked));
    assert!(text(&checked).trim().is_empty(), "naming problems:\n{}", text(&checked));
    for want in [
        "forwarder_health_probes_total 1",
        "forwarder_health_last_probe_timestamp_seconds ",
        "forwarder_connections_total{rule=\"broker-1\"} 1",
    ] {
        assert!(body.contains(want), "{want} in\n{body}");
    }

    // Families as the exposition names them, with the samples' _total etc.
    let exported: BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect();
    let kit = [
        "packaging/prometheus/alerts.yml",
        "packaging/prometheus/alerts_test.yml",
        "packaging/grafana/forwarder-dashboard.json",
    ];
    for file in kit {
        let used = referenced_metrics(&std::fs::read_to_string(workspace().join(file))?);
        assert!(!used.is_empty(), "{file} names no metric");
        let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
        assert!(missing.is_empty(), "{file} uses {missing:?}, not exported:\n{exported:?}");
    }
    drop(c);
    let config = daemon.config.clone();
    drop(daemon);
    topo.unload(&config)
}

/// The library's hash of a configuration text, as another VM with that file would report.
fn hash_of(text: &str) -> String {
    let settings = forwarder::config::parse(Path::new("forwarder.toml"), text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    forwarder::config::fingerprint::sha256(&settings)
}

/// forwarder_config_info and `forwarder status` (text and JSON) report the hash of what
/// the daemon applied: the hash of its file, which `check-config` tells too; the same
/// after a reload of an edit that only adds comments and reorders the rules; a new one
/// after a live `rule add`, which is the hash of the file as written back; the first one
/// again after `rule remove`.
#[test]
fn the_config_hash_follows_what_the_daemon_applies() -> Result<()> {
    require_root();
    let topo = Topology::new("chash", false, false)?;
    let text = with_local_endpoints(&topo.config("xdp-generic", "10.0.0.4"));
    let daemon = Daemon::start(&topo.natvm, &text)?;
    let config = daemon.config.clone();
    let run = |args: &[&str]| cli(&topo.natvm, &config, args);
    let reported = || -> Result<(BTreeMap<String, u64>, String, String)> {
        let body = scrape(&topo, "*/*")?;
        let status = json(&run(&["status", "--json"])?, "status");
        let status_text = ok(&run(&["status"])?, "status");
        let sha = status["config_sha256"].as_str().unwrap_or_default().to_string();
        Ok((gauges(&body, "forwarder_config_info", "sha256"), sha, status_text))
    };
    let agree = |want: &str| -> Result<()> {
        let (metric, status, status_text) = reported()?;
        assert_eq!(metric, BTreeMap::from([(want.to_string(), 1)]), "metrics");
        assert_eq!(status, want, "status --json");
        assert!(status_text.contains(&format!("config hash: sha256 {want}\n")), "{status_text}");
        Ok(())
    };
    let first = hash_of(&text);
    agree(&first)?;
    // check-config tells the hash of a file before any daemon applies it.
    let checked = json(&run(&["check-config", "--json"])?, "check-config");
    assert_eq!(checked["config_sha256"], first.as_str());
    let checked_text = ok(&run(&["check-config"])?, "check-config");
    assert!(checked_text.ends_with(&format!("config hash: sha256 {first}\n")), "{checked_text}");

    // Another VM's file: comments, the rules in reverse order. Reloaded, nothing changes.
    let (head, rules) = text.split_once("[[rule]]").expect("rules");
    let mut blocks: Vec<&str> = rules.split("[[rule]]").collect();
    blocks.reverse();
    let other =
        format!("# NAT VM 2\n{head}# the brokers, last first\n[[rule]]{}", blocks.join("[[rule]]"));
    assert_ne!(other, text);
    std::fs::write(&config, &other)?;
    ok(&run(&["reload"])?, "reload");
    agree(&first)?;

    ok(
        &run(&["rule", "add", "broker-4", "--listen", "9095", "--target", "10.20.0.13:9092"])?,
        "add",
    );
    let (metric, added, _) = reported()?;
    assert_ne!(added, first, "a rule added live changes the hash");
    assert_eq!(added, hash_of(&std::fs::read_to_string(&config)?), "the file written back");
    assert_eq!(metric.keys().collect::<Vec<_>>(), [&added], "one series, the new hash");

    ok(&run(&["rule", "remove", "broker-4"])?, "remove");
    agree(&first)?;
    drop(daemon);
    topo.unload(&config)
}

#[test]
fn the_dashboard_has_a_panel_for_each_concern() {
    let path = workspace().join("packaging/grafana/forwarder-dashboard.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = d["panels"].as_array().expect("panels");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect();
    for family in [
        "forwarder_packets_total",
        "forwarder_bytes_total",
        "forwarder_connections_total",
        "forwarder_active_flows",
        "forwarder_drops_total",
        "forwarder_conntrack_entries",
        "forwarder_healthy",
    ] {
        assert!(exprs.iter().any(|e| e.contains(family)), "no panel queries {family}");
    }
    // Per VM: every query can be narrowed to the chosen NAT VMs.
    assert!(exprs.iter().all(|e| e.contains("instance=~\"$instance\"")), "{exprs:#?}");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
}

#[test]
fn completions_and_man_page_come_from_the_binary() {
    let generate = |args: &[&str]| {
        let out = Command::new(forwarder_bin()).arg("generate").args(args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = generate(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("forwarder.bash");
    std::fs::write(&file, &bash).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax));
    // Sourced, it completes the subcommands (bash calls it with the command, the word being
    // completed and the one before).
    let script = format!(
        "source {}; COMP_WORDS=(forwarder re); COMP_CWORD=1; _forwarder forwarder re forwarder; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(words.lines().any(|w| w == "reload"), "{}", text(&out));
    for (shell, needle) in [("zsh", "#compdef forwarder"), ("fish", "complete -c forwarder")] {
        assert!(generate(&["completions", shell]).contains(needle), "{shell}");
    }
    let man = generate(&["man"]);
    assert!(man.contains(".TH forwarder 1"), "{man}");
    for sub in ["run", "reload", "drain", "kafka", "import\\-iptables"] {
        assert!(man.contains(sub), "the man page lacks {sub}");
    }
    assert!(!man.contains("generate"), "the hidden command is not documented");
}
