//! The daemon's life with live TCP streams running through it: SIGKILL and restart,
//! reloads, rule changes from the CLI, a hostname target moving, drain and undrain, the
//! control socket's access check and the JSON of every listing.

use anyhow::Result;
use forwarder_tests::daemon_tests::{
    all_listen, eventually, health_answers, http_get, json, listen, ok, seed_broker, TestBed,
};
use forwarder_tests::{
    require_root,
    streams::{assert_all_intact, Streams},
    topology::{cli, Daemon, Topology, BROKERS, NATVM},
    traffic::{connect, exchange},
};
use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    process::Output,
    time::Duration,
};

#[test]
fn sigkill_and_restart_keep_every_stream() -> Result<()> {
    require_root();
    let bed = TestBed::new("k", "xdp")?;
    let topo = &bed.topo;
    let (daemon, config) = bed.start(&bed.seed_config())?;
    let streams = Streams::start(&topo.client, &all_listen(), 2)?;

    daemon.kill9()?;
    // No daemon at all: the pinned program keeps forwarding.
    streams.wait_progress()?;
    let fresh = exchange(connect(&topo.client, listen(9093))?, 64 * 1024, 5)?;
    assert_eq!(fresh.reached, BROKERS[1], "new connections while no daemon runs");

    let daemon = Daemon::spawn(&topo.natvm, &config)?;
    streams.wait_progress()?;
    let log = daemon.log_text();
    assert!(log.contains("took over the pinned attachment"), "{log}");
    assert!(log.contains("resumed the pinned data path"), "{log}");
    let flows = json(&cli(&topo.natvm, &config, &["flows", "--json"])?, "flows");
    assert!(flows.as_array().is_some_and(|f| f.len() >= 6), "flows after restart: {flows}");

    // A clean restart (SIGTERM) too.
    daemon.stop()?;
    let daemon = Daemon::spawn(&topo.natvm, &config)?;
    streams.wait_progress()?;

    assert_all_intact(&streams.finish(), seed_broker);
    bed.finish(daemon)
}

#[test]
fn twenty_reloads_and_sighup_keep_every_stream() -> Result<()> {
    require_root();
    let bed = TestBed::new("rl", "xdp-generic")?;
    let topo = &bed.topo;
    let base = bed.seed_config();
    let (daemon, config) = bed.start(&base)?;
    let streams = Streams::start(&topo.client, &all_listen(), 2)?;
    for i in 0..20 {
        // Alternate a real change (the MSS clamp) with an unchanged file.
        let mss = if i % 2 == 0 { "1300" } else { "1360" };
        std::fs::write(&config, base.replace("mss_clamp = 1360", &format!("mss_clamp = {mss}")))?;
        ok(&cli(&topo.natvm, &config, &["reload"])?, "reload");
    }
    for _ in 0..3 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        std::thread::sleep(Duration::from_millis(200));
    }
    streams.wait_progress()?;
    let log = daemon.log_text();
    assert_eq!(log.matches("SIGHUP: reloaded").count(), 3, "{log}");
    assert_all_intact(&streams.finish(), seed_broker);
    bed.finish(daemon)
}

#[test]
fn rules_added_and_removed_live_and_written_back() -> Result<()> {
    require_root();
    let bed = TestBed::new("ru", "xdp-generic")?;
    let topo = &bed.topo;
    let text = bed.seed_config().replace(
        "[[rule]]\nname = \"broker-3\"",
        "# broker 3 sits in the second rack\n[[rule]]\nname = \"broker-3\" # keep me",
    );
    let text = format!("# NAT VM test config\n{text}");
    let (daemon, config) = bed.start(&text)?;
    let streams = Streams::start(&topo.client, &all_listen(), 2)?;

    ok(
        &cli(
            &topo.natvm,
            &config,
            &["rule", "add", "broker-4", "--listen", "9095", "--target", "10.20.0.13:9092"],
        )?,
        "rule add",
    );
    let ex = exchange(connect(&topo.client, listen(9095))?, 64 * 1024, 11)?;
    assert_eq!(ex.reached, BROKERS[2], "the added rule forwards");

    // An invalid change is refused whole: exit 2, the field named, the file untouched.
    let before = std::fs::read_to_string(&config)?;
    let out = cli(
        &topo.natvm,
        &config,
        &["rule", "add", "dup", "--listen", "9092", "--target", "10.20.0.11:9092"],
    )?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rule.listen") && err.contains("9092"), "{err}");
    assert_eq!(std::fs::read_to_string(&config)?, before, "a refused change wrote the file");

    ok(&cli(&topo.natvm, &config, &["rule", "remove", "broker-1"])?, "rule remove");
    // No new connections on the removed rule's port (the VM itself has no listener there).
    assert!(connect(&topo.client, listen(9092)).is_err(), "port 9092 still forwarded");

    // A rule added while broker-1's streams still run does not take broker-1's id (0), so
    // their counters do not land on it.
    ok(
        &cli(
            &topo.natvm,
            &config,
            &["rule", "add", "broker-5", "--listen", "9096", "--target", "10.20.0.13:9092"],
        )?,
        "rule add",
    );
    let rules = json(&cli(&topo.natvm, &config, &["rule", "list", "--json"])?, "rule list");
    let id5 = rules.as_array().unwrap().iter().find(|r| r["name"] == "broker-5").unwrap()["id"]
        .as_u64()
        .unwrap();
    assert_ne!(id5, 0, "broker-5 took the id of broker-1, whose flows still run: {rules}");
    ok(&cli(&topo.natvm, &config, &["rule", "remove", "broker-5"])?, "rule remove");

    let file = std::fs::read_to_string(&config)?;
    assert!(file.starts_with("# NAT VM test config\n"), "{file}");
    assert!(file.contains("# broker 3 sits in the second rack"), "{file}");
    assert!(file.contains("name = \"broker-3\" # keep me"), "{file}");
    assert!(
        file.contains("name = \"broker-4\"") && !file.contains("name = \"broker-1\""),
        "{file}"
    );
    let rules = json(&cli(&topo.natvm, &config, &["rule", "list", "--json"])?, "rule list");
    let names: Vec<&str> =
        rules.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["broker-2", "broker-3", "broker-4"]);

    // Every stream, the removed rule's ones included, kept running.
    assert_all_intact(&streams.finish(), seed_broker);
    // And the change survives a restart: the daemon reads the file it wrote.
    daemon.stop()?;
    let daemon = Daemon::spawn(&topo.natvm, &config)?;
    let ex = exchange(connect(&topo.client, listen(9095))?, 4096, 12)?;
    assert_eq!(ex.reached, BROKERS[2]);
    bed.finish(daemon)
}

#[test]
fn a_moved_hostname_target_takes_new_connections_only() -> Result<()> {
    require_root();
    let bed = TestBed::new("dn", "xdp-generic")?;
    let topo = &bed.topo;
    // `ip netns exec` shows /etc/netns/NAME/hosts as /etc/hosts to the daemon.
    let etc = Path::new("/etc/netns").join(topo.natvm.name());
    std::fs::create_dir_all(&etc)?;
    let _cleanup = RemoveDir(etc.clone());
    let hosts = etc.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n10.20.0.11 kafka-a.test\n")?;
    let text = bed
        .seed_config()
        .replace("\"10.20.0.11:9092\"", "\"kafka-a.test:9092\"")
        .replace("mss_clamp = 1360\n", "mss_clamp = 1360\ndns_refresh = \"1s\"\n");
    let (daemon, config) = bed.start(&text)?;
    let old = Streams::start(&topo.client, &[listen(9092)], 2)?;

    // Rewritten in place: the bind mount keeps pointing at this inode.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&hosts)?
        .write_all(b"127.0.0.1 localhost\n10.20.0.12 kafka-a.test\n")?;
    eventually(15, "the rule follows the new address", || {
        let rules = json(&cli(&topo.natvm, &config, &["rule", "list", "--json"])?, "rule list");
        Ok(rules[0]["resolved"] == "10.20.0.12:9092")
    })?;
    let new = exchange(connect(&topo.client, listen(9092))?, 64 * 1024, 21)?;
    assert_eq!(new.reached, BROKERS[1], "a new connection goes to the new address");
    old.wait_progress()?;
    // Connections opened before keep their broker.
    assert_all_intact(&old.finish(), |_| BROKERS[0]);
    bed.finish(daemon)
}

struct RemoveDir(std::path::PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn drain_fails_the_probe_while_streams_finish() -> Result<()> {
    require_root();
    let bed = TestBed::new("dr", "xdp-generic")?;
    let topo = &bed.topo;
    let text = bed
        .seed_config()
        .replace("mss_clamp = 1360\n", "mss_clamp = 1360\nhealth = \"0.0.0.0:8080\"\n");
    let (daemon, config) = bed.start(&text)?;
    eventually(5, "the probe answers", || Ok(health_answers(topo)))?;
    let status = json(&cli(&topo.natvm, &config, &["status", "--json"])?, "status");
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["last_probe"]["from"], "10.1.0.2", "probe source recorded: {status}");

    let streams = Streams::start(&topo.client, &all_listen(), 1)?;
    ok(&cli(&topo.natvm, &config, &["drain"])?, "drain");
    eventually(5, "the probe fails when drained", || {
        Ok(connect(&topo.client, listen(8080)).is_err())
    })?;
    streams.wait_progress()?;
    let status = json(&cli(&topo.natvm, &config, &["status", "--json"])?, "status");
    assert_eq!(status["drained"], true, "{status}");
    assert_eq!(status["healthy"], false, "{status}");
    assert!(status["active_flows"].as_u64().unwrap() >= 3, "flows remaining shown: {status}");
    let human = ok(&cli(&topo.natvm, &config, &["status"])?, "status");
    assert!(human.contains("drained:") && human.contains("flows remain"), "{human}");
    assert_all_intact(&streams.finish(), seed_broker);

    ok(&cli(&topo.natvm, &config, &["undrain"])?, "undrain");
    eventually(5, "the probe answers again", || Ok(health_answers(topo)))?;
    bed.finish(daemon)
}

#[test]
fn control_socket_refuses_other_users_and_listings_are_json() -> Result<()> {
    require_root();
    let bed = TestBed::new("cs", "xdp-generic")?;
    let topo = &bed.topo;
    let (daemon, config) = bed.start(&bed.seed_config())?;
    let socket = topo.run_dir().join("control.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket)?.permissions().mode() & 0o777, 0o600);

    let as_nobody = |args: &[&str]| -> Result<Output> {
        let bin = forwarder_tests::topology::forwarder_bin();
        let mut cmd = vec!["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
        cmd.push(bin.to_str().unwrap());
        cmd.extend(["--config", config.to_str().unwrap()]);
        cmd.extend(args);
        Ok(topo.natvm.command(cmd[0]).args(&cmd[1..]).output()?)
    };
    // The file mode stops other users...
    let out = as_nobody(&["status"])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // ...and so does the daemon's peer check when the mode is wrong.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
    let out = as_nobody(&["drain"])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied: uid 65534"), "{err}");
    let status = json(&cli(&topo.natvm, &config, &["status", "--json"])?, "status");
    assert_eq!(status["drained"], false, "a refused peer changed something");

    // Every listing's --json parses and says what it should.
    let _s = Streams::start(&topo.client, &[listen(9092)], 1)?;
    assert!(status["interfaces"][0]["mode"] == "xdp-generic", "{status}");
    let rules = json(&cli(&topo.natvm, &config, &["rule", "list", "--json"])?, "rule list");
    assert_eq!(rules.as_array().unwrap().len(), 3);
    let stats = json(&cli(&topo.natvm, &config, &["stats", "--json"])?, "stats");
    assert!(stats[0]["counters"]["new_conns"].as_u64().unwrap() >= 1, "{stats}");
    let flows =
        json(&cli(&topo.natvm, &config, &["flows", "--rule", "broker-1", "--json"])?, "flows");
    assert_eq!(flows.as_array().unwrap().len(), 1, "{flows}");
    assert_eq!(flows[0]["target"], "10.20.0.11:9092");
    let checked = json(&cli(&topo.natvm, &config, &["check-config", "--json"])?, "check-config");
    assert_eq!(checked["rules"].as_array().unwrap().len(), 3);
    let watch = ok(
        &cli(&topo.natvm, &config, &["stats", "--watch", "--interval", "200ms", "--count", "2"])?,
        "stats --watch",
    );
    assert!(watch.contains("broker-1"), "{watch}");
    drop(_s);
    bed.finish(daemon)
}

/// GET of the metrics endpoint from inside the NAT VM.
fn scrape(topo: &Topology, addr: SocketAddrV4) -> Result<String> {
    http_get(&topo.natvm, addr, "/metrics", Duration::from_secs(10))
}

#[test]
fn every_bad_config_is_refused_by_a_running_daemon_and_changes_nothing() -> Result<()> {
    require_root();
    let bed = TestBed::new("bc", "xdp")?;
    let topo = &bed.topo;
    let base = forwarder_tests::bad_configs::BaseConfig {
        interface: "n0".into(),
        control_socket: topo.run_dir().join("control.sock").display().to_string(),
        pin_path: topo.pin_dir().display().to_string(),
        own_address: Some(NATVM),
    };
    let (daemon, config) = bed.start(&base.text())?;
    let streams = Streams::start(&topo.client, &all_listen(), 1)?;
    let rules_before = json(&cli(&topo.natvm, &config, &["rule", "list", "--json"])?, "rule list");

    let cases = forwarder_tests::bad_configs::cases_for(&base);
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases {
        std::fs::write(&config, &case.text)?;
        let out = cli(&topo.natvm, &config, &["--socket", &base.control_socket, "reload"])?;
        let err = String::from_utf8_lossy(&out.stderr);
        let place = format!("{}:{}:", config.display(), case.line);
        if out.status.code() != Some(2)
            || !err.contains(&place)
            || !err.contains(case.field)
            || !err.contains(case.message_contains)
        {
            failures.push(format!("{}: exit {:?}: {err}", case.name, out.status.code()));
        }
    }
    // A file that cannot be read (here: gone) is an invalid config for every change alike:
    // exit 2, the path named, nothing changed.
    std::fs::remove_file(&config)?;
    for (what, args) in [
        ("reload", vec!["reload"]),
        ("rule add", vec!["rule", "add", "x", "--listen", "9400", "--target", "10.20.0.11:9092"]),
        ("rule remove", vec!["rule", "remove", "broker-1"]),
    ] {
        let mut full = vec!["--socket", base.control_socket.as_str()];
        full.extend(args);
        let out = cli(&topo.natvm, &config, &full)?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) || !err.contains("cannot read") {
            failures.push(format!("{what} without a file: exit {:?}: {err}", out.status.code()));
        }
    }
    std::fs::write(&config, base.text())?;
    assert!(
        failures.is_empty(),
        "{} cases not refused as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let rules_after = json(&cli(&topo.natvm, &config, &["rule", "list", "--json"])?, "rule list");
    let strip = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].clone(), r["id"].clone(), r["resolved"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&rules_before), strip(&rules_after), "a refused reload changed the rules");
    streams.wait_progress()?;

    // The good file back: accepted, nothing to change.
    std::fs::write(&config, base.text())?;
    let out = ok(&cli(&topo.natvm, &config, &["reload"])?, "reload");
    assert!(out.contains("no rule changed"), "{out}");

    // Metrics, doctor and import-iptables speak their formats.
    let metrics = scrape(topo, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464))?;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("forwarder_active_flows{rule=\"broker-1\"} 1"), "{metrics}");
    assert!(
        metrics.contains("forwarder_program_attached{interface=\"n0\",mode=\"xdp\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("forwarder_connections_total{rule=\"broker-2\"} 1"), "{metrics}");
    assert!(
        metrics.contains("forwarder_drops_total{rule=\"broker-1\",reason=\"no_snat_port\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("forwarder_conntrack_capacity{table=\"ct_established\"} 524288"),
        "{metrics}"
    );
    let doctor = cli(&topo.natvm, &config, &["doctor", "--json", "--timeout", "1s"])?;
    let findings: serde_json::Value = serde_json::from_slice(&doctor.stdout)?;
    let checks: Vec<&str> =
        findings.as_array().unwrap().iter().map(|f| f["check"].as_str().unwrap()).collect();
    for c in ["daemon", "target", "xdp-mode", "stray-nat", "snat-ports"] {
        assert!(checks.contains(&c), "doctor ran no {c} check: {findings}");
    }
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../forwarder/tests/fixtures/ip_fwd_nat.save");
    let imported = json(
        &cli(&topo.natvm, &config, &["import-iptables", "--json", fixture.to_str().unwrap()])?,
        "import-iptables",
    );
    assert_eq!(imported["rules"].as_array().unwrap().len(), 3, "{imported}");

    assert_all_intact(&streams.finish(), seed_broker);
    bed.finish(daemon)
}

/// A rule removed from the file while no daemon runs keeps its id while its flows live: the
/// next daemon gives a new rule another id, so those flows' counters stay apart.
#[test]
fn a_rule_removed_between_daemons_keeps_its_id_while_its_flows_live() -> Result<()> {
    require_root();
    let bed = TestBed::new("rid", "xdp-generic")?;
    let topo = &bed.topo;
    let base = bed.seed_config();
    let (daemon, config) = bed.start(&base)?;
    let streams = Streams::start(&topo.client, &all_listen(), 1)?;
    daemon.stop()?;

    let broker1 = "[[rule]]\nname = \"broker-1\"\nlisten = 9092\ntarget = \"10.20.0.11:9092\"\n";
    assert!(base.contains(broker1), "{base}");
    let edited = base.replace(
        broker1,
        "[[rule]]\nname = \"broker-9\"\nlisten = 9099\ntarget = \"10.20.0.13:9092\"\n",
    );
    std::fs::write(&config, edited)?;
    let daemon = Daemon::spawn(&topo.natvm, &config)?;
    let rules = json(&cli(&topo.natvm, &config, &["rule", "list", "--json"])?, "rule list");
    let id = |name: &str| {
        rules.as_array().unwrap().iter().find(|r| r["name"] == name).map(|r| r["id"].as_u64())
    };
    assert_eq!(id("broker-1"), None, "{rules}");
    assert_ne!(id("broker-9"), Some(Some(0)), "broker-9 took broker-1's id: {rules}");
    let ex = exchange(connect(&topo.client, listen(9099))?, 4096, 21)?;
    assert_eq!(ex.reached, BROKERS[2], "the new rule forwards");
    // broker-1's streams ran on without their rule, through both daemons.
    assert_all_intact(&streams.finish(), seed_broker);
    bed.finish(daemon)
}
