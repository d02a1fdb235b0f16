//! The daemon runs with only the capabilities the systemd unit gives it (issue 11).
//!
//! The set is read from packaging/forwarder.service (`CapabilityBoundingSet=`), so these
//! tests follow the unit. The daemon is started in the test's namespace under `setpriv`
//! with exactly that set as its bounding, permitted, effective, inheritable and ambient
//! sets, and with no_new_privs: what systemd gives the unit (root, no `User=`). With it,
//! everything the daemon does works: attaching in xdp and tc mode, forwarding, reload and
//! SIGHUP, rule add and remove, drain, status, flows, health, metrics, a restart under a live
//! stream, unload. Without any one capability of the set it refuses to start and names the
//! one missing. The CLI runs as root with every capability, as an operator's does.

use anyhow::Result;
use forwarder::host::capabilities::CapSet;
use forwarder_tests::daemon_tests::{
    all_listen, brokers, eventually, health_answers, http_get, json, listen, ok, seed_broker,
};
use forwarder_tests::{
    require_root,
    streams::{assert_all_intact, Streams},
    topology::{cli, config_path, Daemon, Topology, BROKERS, NATVM},
    traffic::{connect, exchange},
    unit_file::{self, single, words},
};
use std::{net::SocketAddrV4, time::Duration};

/// The unit's capabilities: `CapabilityBoundingSet=`, which `AmbientCapabilities=` repeats.
fn unit_capabilities() -> CapSet {
    let service = unit_file::service();
    let bounding = words(&service, "CapabilityBoundingSet");
    assert!(
        !bounding.is_empty() && !bounding.iter().any(|w| w.starts_with('~')),
        "CapabilityBoundingSet= should list the capabilities it keeps: {bounding:?}"
    );
    assert_eq!(words(&service, "AmbientCapabilities"), bounding, "AmbientCapabilities=");
    assert_eq!(single(&service, "NoNewPrivileges"), "yes");
    CapSet::from_names(bounding.iter().map(String::as_str))
        .unwrap_or_else(|e| panic!("{}: {e}", unit_file::path().display()))
}

/// `setpriv` arguments that exec the rest of the command line with exactly `caps` (bounding,
/// inheritable and ambient; root's permitted and effective sets follow the bounding set)
/// and no_new_privs. Fails loudly if setpriv is missing or cannot give `caps`.
fn setpriv(caps: CapSet) -> Vec<String> {
    let own = CapSet::of_process("self", "CapBnd").expect("reading this process's CapBnd");
    let lacking = CapSet(caps.0 & !own.0);
    assert_eq!(
        lacking,
        CapSet::default(),
        "this test's own bounding set lacks {lacking}: it cannot run the daemon with the unit's \
         capabilities"
    );
    if let Err(e) = std::process::Command::new("setpriv").arg("--version").output() {
        panic!(
            "setpriv (util-linux) is needed to start the daemon with the unit's capabilities: \
             {e}; bash .ci/setup.sh installs it"
        );
    }
    let mut list = vec!["-all".to_string()];
    list.extend(caps.names().iter().map(|n| format!("+{}", n["CAP_".len()..].to_lowercase())));
    let list = list.join(",");
    let list = list.as_str();
    [
        "setpriv",
        "--bounding-set",
        list,
        "--inh-caps",
        list,
        "--ambient-caps",
        list,
        "--no-new-privs",
    ]
    .map(String::from)
    .to_vec()
}

/// Every capability set of the daemon is `caps`, and it runs with no_new_privs.
fn assert_runs_with(daemon: &Daemon, caps: CapSet) -> Result<()> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))?;
    for field in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        let set = CapSet::parse_status(&status, field);
        assert_eq!(set, Some(caps), "{field} of the daemon is {set:?}, not the unit's {caps}");
    }
    assert!(status.contains("\nNoNewPrivs:\t1\n"), "no_new_privs not set:\n{status}");
    Ok(())
}

/// What the daemon changes in the NAT VM and `unload` puts back.
fn sysctls(topo: &Topology) -> Result<Vec<String>> {
    [
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.conf.n0.forwarding",
        "net.ipv4.conf.n0.accept_local",
    ]
    .iter()
    .map(|k| Ok(format!("{k} = {}", topo.natvm.sysctl_get(k)?)))
    .collect()
}

/// Native XDP: forwarding, health and metrics, status and flows, drain, reload by the CLI and
/// by SIGHUP, rule add and remove, a restart under a live stream, unload; then TC.
#[test]
fn everything_works_with_only_the_units_capabilities() -> Result<()> {
    require_root();
    let started = std::time::Instant::now();
    let caps = unit_capabilities();
    let wrapper = setpriv(caps);
    eprintln!("the unit's capabilities: {caps}");
    let topo = Topology::new("cap", false, true)?;
    let _brokers = brokers(&topo)?;
    let before = sysctls(&topo)?;
    let text = topo.config("xdp", &NATVM.to_string()).replace(
        "mss_clamp = 1360\n",
        "mss_clamp = 1360\nhealth = \"0.0.0.0:8080\"\nmetrics = \"127.0.0.1:9464\"\n",
    );
    let daemon = Daemon::start_under(&topo.natvm, &text, &wrapper)?;
    let config = daemon.config.clone();
    assert_runs_with(&daemon, caps)?;
    assert_ne!(sysctls(&topo)?, before, "the daemon set its sysctls");

    let ex = exchange(connect(&topo.client, listen(9092))?, 64 * 1024, 1)?;
    assert_eq!((ex.reached, *ex.seen_peer.ip()), (BROKERS[0], NATVM), "DNAT and SNAT");
    eventually(5, "the health probe answers", || Ok(health_answers(&topo)))?;
    let metrics = http_get(
        &topo.natvm,
        "127.0.0.1:9464".parse::<SocketAddrV4>()?,
        "/metrics",
        Duration::from_secs(10),
    )?;
    assert!(metrics.contains("forwarder_connections_total{rule=\"broker-1\"} 1"), "{metrics}");

    let streams = Streams::start(&topo.client, &all_listen(), 1)?;
    let status = json(&cli(&topo.natvm, &config, &["status", "--json"])?, "status");
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["interfaces"][0]["mode"], "xdp", "{status}");
    let flows = json(&cli(&topo.natvm, &config, &["flows", "--json"])?, "flows");
    let flows = flows.as_array().map_or(0, Vec::len);
    assert!(flows >= 3, "a flow per stream, {flows} listed");
    ok(&cli(&topo.natvm, &config, &["stats", "--json"])?, "stats");
    ok(&cli(&topo.natvm, &config, &["drain"])?, "drain");
    eventually(5, "the probe fails when drained", || Ok(!health_answers(&topo)))?;
    ok(&cli(&topo.natvm, &config, &["undrain"])?, "undrain");
    eventually(5, "the probe answers again", || Ok(health_answers(&topo)))?;

    std::fs::write(&config, text.replace("mss_clamp = 1360", "mss_clamp = 1300"))?;
    ok(&cli(&topo.natvm, &config, &["reload"])?, "reload");
    std::fs::write(&config, &text)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    eventually(5, "SIGHUP reloads", || Ok(daemon.log_text().contains("SIGHUP: reloaded")))?;

    let add = ["rule", "add", "extra", "--listen", "9100", "--target", "10.20.0.13:9092"];
    ok(&cli(&topo.natvm, &config, &add)?, "rule add");
    let ex = exchange(connect(&topo.client, listen(9100))?, 4096, 2)?;
    assert_eq!(ex.reached, BROKERS[2], "the added rule forwards");
    ok(&cli(&topo.natvm, &config, &["rule", "remove", "extra"])?, "rule remove");
    assert_eq!(std::fs::read_to_string(&config)?, text, "the file is back as it was");

    // A restart (SIGTERM, then a new daemon with the same capabilities) under the streams.
    let exit = daemon.stop()?;
    assert!(exit.success(), "the daemon exited with {exit}");
    let daemon = Daemon::spawn_under(&topo.natvm, &config, &wrapper)?;
    assert_runs_with(&daemon, caps)?;
    assert!(daemon.log_text().contains("took over the pinned attachment"), "{}", daemon.log_text());
    streams.wait_progress()?;
    let reports = streams.finish();
    assert_all_intact(&reports, seed_broker);
    let rounds: u64 = reports.iter().map(|r| r.rounds).sum();

    // Unload through the daemon: it removes the pins, restores the sysctls and exits.
    topo.unload(&config)?;
    let log = daemon.log.clone();
    let exit = daemon.stop()?;
    assert!(exit.success(), "the daemon exited with {exit} after unload");
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("restored") && log.contains("unloaded"), "{log}");
    assert_eq!(sysctls(&topo)?, before, "unload put the sysctls back");

    // TC (a TCX link on this kernel) with the same capabilities.
    let daemon =
        Daemon::start_under(&topo.natvm, &topo.config("tc", &NATVM.to_string()), &wrapper)?;
    assert_runs_with(&daemon, caps)?;
    let status = json(&cli(&topo.natvm, &config, &["status", "--json"])?, "status");
    assert_eq!(status["interfaces"][0]["mode"], "tc", "{status}");
    let ex = exchange(connect(&topo.client, listen(9093))?, 64 * 1024, 3)?;
    assert_eq!(ex.reached, BROKERS[1], "forwarded in tc mode");
    topo.unload(&config)?;
    assert!(daemon.stop()?.success());
    assert_eq!(sysctls(&topo)?, before, "unload put the sysctls back");
    eprintln!(
        "with only {caps}: xdp and tc attached and forwarding, reload, SIGHUP, rule add and \
         remove, drain, status, flows, stats, health, metrics; {} streams intact through a \
         restart ({rounds} echo rounds); unload put back {before:?}; {:.1} s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Starts the daemon with the capabilities `unit` less `name`; returns its error line, after
/// checking that it refused to start and named `name` as missing (and no other of `unit`).
fn refused_start(topo: &Topology, text: &str, unit: CapSet, name: &str) -> Result<String> {
    let without = CapSet(unit.0 & !CapSet::from_names([name])?.0);
    let refused = match Daemon::start_under(&topo.natvm, text, &setpriv(without)) {
        Ok(daemon) => panic!("the daemon started without {name} (pid {})", daemon.pid()),
        Err(e) => format!("{e:#}"),
    };
    assert!(refused.contains("exited with exit status: 1"), "{refused}");
    let error = refused
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("without {name}, no error line:\n{refused}"))
        .to_string();
    eprintln!("without {name}: {}", error.chars().take(300).collect::<String>());
    assert!(error.contains(&format!("missing capability {name} (")), "{error}");
    for other in unit.names().iter().filter(|o| *o != name) {
        assert!(!error.contains(other.as_str()), "without {name} it blames {other}: {error}");
    }
    Ok(error)
}

/// Without any one of the unit's capabilities the daemon does not start, and its error names
/// the capability missing (and no other).
#[test]
fn each_of_the_units_capabilities_is_needed() -> Result<()> {
    require_root();
    let caps = unit_capabilities();
    let topo = Topology::new("capn", false, false)?;
    let text = topo.config("xdp-generic", &NATVM.to_string());
    let config = config_path(&topo.natvm);
    let before = sysctls(&topo)?;
    for name in caps.names() {
        refused_start(&topo, &text, caps, &name)?;
        // A start that failed half-way may have set sysctls and pinned maps: unload puts
        // everything back.
        topo.unload(&config)?;
        assert_eq!(sysctls(&topo)?, before, "after the start without {name} and unload");
    }
    // CAP_NET_ADMIN fails the start at the first sysctl (forwarding). With forwarding already
    // on, no sysctl is written: loading the XDP program needs it too.
    if caps.contains("CAP_NET_ADMIN") {
        for key in ["forwarding", "accept_local"] {
            topo.natvm.sysctl(&format!("net.ipv4.conf.n0.{key}"), "1")?;
        }
        let error = refused_start(&topo, &text, caps, "CAP_NET_ADMIN")?;
        assert!(error.contains("BPF_PROG_LOAD"), "not refused at the program's load: {error}");
        topo.unload(&config)?;
    }
    Ok(())
}
