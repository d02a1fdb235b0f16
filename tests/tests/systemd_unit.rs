//! The package's systemd unit under a real systemd (issue 12). systemd boots as PID 1 in
//! namespaces of the test's own with the .deb installed in its mount namespace only
//! (`forwarder_tests::systemd`); its network namespace is the NAT VM of the seed topology.
//!
//! `systemctl start` returns with the program attached and forwarding; the daemon holds the
//! unit's capabilities and no other; `restart` keeps live streams; `reload` applies a
//! rule added to the file; `stop` leaves the data path forwarding; `systemd-analyze
//! security` scores the unit. Afterwards the host's files and interfaces are as before.

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    daemon_tests::{
        all_listen, brokers, eventually, health_answers, http_get, listen, seed_broker,
    },
    require_root,
    streams::{assert_all_intact, Streams},
    systemd::{Systemd, UNIT},
    topology::{seed_config, Topology, BROKERS, BROKER_PORT},
    traffic::{connect, exchange},
};
use std::time::Instant;

const CONFIG: &str = "/etc/forwarder/forwarder.toml";
/// The listen port the reload adds (to the third broker).
const ADDED_PORT: u16 = 9095;
/// The capabilities the unit may name, by number (linux/capability.h).
const CAP_NUMBERS: [(&str, u32); 4] =
    [("CAP_NET_ADMIN", 12), ("CAP_SYS_RESOURCE", 24), ("CAP_PERFMON", 38), ("CAP_BPF", 39)];

/// The unit's CapabilityBoundingSet= as a capability mask, read from the unit file
/// (packaging.rs checks the same set is its AmbientCapabilities=).
fn unit_caps() -> Result<u64> {
    let mut mask = 0u64;
    for name in forwarder_tests::unit_file::words(
        &forwarder_tests::unit_file::service(),
        "CapabilityBoundingSet",
    ) {
        let (_, n) = CAP_NUMBERS
            .iter()
            .find(|(c, _)| *c == name)
            .with_context(|| format!("the unit names {name}, which this test has no number for"))?;
        mask |= 1 << n;
    }
    Ok(mask)
}
/// `systemd-analyze security` of the unit: 2.7 ("OK") with systemd 252 (Debian 12). Above
/// this, some hardening went missing.
const MAX_EXPOSURE: f64 = 3.0;

#[test]
fn the_unit_starts_reloads_restarts_and_stops_under_systemd() -> Result<()> {
    require_root();
    let host_before = forwarder_tests::systemd::host_view()?;
    let t0 = Instant::now();
    let sd = Systemd::boot()?;
    println!("systemd running as PID {} after {:.1?}", sd.pid(), t0.elapsed());
    {
        let topo = Topology::around(sd.netns("sdn")?, "sd", false, true)?;
        let _brokers = brokers(&topo)?;
        let t = Instant::now();
        start(&sd, &topo)?;
        println!("start: `systemctl start` returned after {:.1?}", t.elapsed());
        only_the_unit_capabilities(&sd)?;

        let streams = Streams::start(&topo.client, &all_listen(), 2)?;
        let t = Instant::now();
        restart(&sd, &streams)?;
        println!("restart: streams moving again {:.1?} after it began", t.elapsed());
        let t = Instant::now();
        reload(&sd, &topo)?;
        println!("reload: the added rule forwards {:.1?} after it began", t.elapsed());
        stop(&sd, &topo, &streams)?;
        assert_all_intact(&streams.finish(), seed_broker);

        let score = exposure(&sd)?;
        println!("systemd-analyze security {UNIT}: overall exposure {score}");
        ensure!(score <= MAX_EXPOSURE, "exposure {score} is above {MAX_EXPOSURE}");
    }
    drop(sd);
    ensure!(
        forwarder_tests::systemd::host_view()? == host_before,
        "the host changed:\n{host_before:#?}\n{:#?}",
        forwarder_tests::systemd::host_view()?
    );
    println!("all in {:.1?}; the host's files and interfaces are as before", t0.elapsed());
    Ok(())
}

/// Writes the seed config (xdp on n0, health on 8080) and starts the unit. The moment
/// `systemctl start` returns, the daemon has sent READY=1: the program must be attached and
/// forwarding then, not a moment later.
fn start(sd: &Systemd, topo: &Topology) -> Result<()> {
    let config =
        format!("health = \"0.0.0.0:8080\"\n{}", seed_config(&topo.nat_ifaces, "xdp", "10.0.0.4"));
    std::fs::write(sd.path(CONFIG), config).context("writing the config inside")?;
    ensure!(xdp_prog(topo)?.is_none(), "a program is attached before the start");

    sd.systemctl(&["start", UNIT])?;
    let prog =
        xdp_prog(topo)?.context("systemctl start returned before the program was attached")?;
    ensure!(sd.show("ActiveState")? == "active" && sd.show("SubState")? == "running");
    let seen = exchange(connect(&topo.client, listen(9092))?, 64 * 1024, 1)?;
    ensure!(seen.reached == BROKERS[0], "9092 reached {} at once", seen.reached);
    eventually(5, "the health probe answers 200", || Ok(health_answers(topo)))?;
    // systemd marks the unit active when READY=1 arrives, not when it execs the daemon.
    let usecs = |p| sd.show(p).and_then(|v| Ok(v.parse::<u64>()?));
    let ready = usecs("ActiveEnterTimestampMonotonic")? - usecs("ExecMainStartTimestampMonotonic")?;
    println!(
        "start: READY=1 {} ms after the exec; XDP program {prog} on n0 when `systemctl start` returned",
        ready / 1000
    );
    Ok(())
}

/// The daemon's capability sets are the unit's (those of them this machine grants at
/// all) and nothing else; no new privileges, a seccomp filter.
fn only_the_unit_capabilities(sd: &Systemd) -> Result<()> {
    let status = |pid: u32| std::fs::read_to_string(sd.path(&format!("/proc/{pid}/status")));
    let daemon = status(sd.main_pid()?)?;
    let granted = cap_set(&status(1)?, "CapBnd:")?;
    let unit = unit_caps()?;
    if unit & !granted != 0 {
        println!(
            "this machine withholds capabilities {:#x} of the unit's from systemd",
            unit & !granted
        );
    }
    for set in ["CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        let got = cap_set(&daemon, set)?;
        ensure!(got == unit & granted, "{set} {got:#x} instead of {:#x}", unit & granted);
    }
    let field = |name| daemon.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    ensure!(field("NoNewPrivs:") == Some("1"), "NoNewPrivs: {:?}", field("NoNewPrivs:"));
    ensure!(field("Seccomp:") == Some("2"), "Seccomp: {:?} (2 is a filter)", field("Seccomp:"));
    Ok(())
}

/// A capability set (`CapEff:` ...) of a /proc/PID/status.
fn cap_set(status: &str, name: &str) -> Result<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let hex = hex.with_context(|| format!("no {name} in {status}"))?;
    u64::from_str_radix(hex, 16).with_context(|| format!("{name} {hex}"))
}

/// `systemctl restart` under live streams: a new daemon takes over the pinned program.
fn restart(sd: &Systemd, streams: &Streams) -> Result<()> {
    let before = sd.main_pid()?;
    sd.systemctl(&["restart", UNIT])?;
    ensure!(sd.main_pid()? != before, "restart kept MainPID {before}");
    streams.wait_progress()?;
    eventually(5, "the journal says the new daemon took over", || {
        Ok(sd.journal()?.contains("took over the pinned attachment"))
    })
}

/// A rule appended to the file, then `systemctl reload`: the same daemon forwards it.
fn reload(sd: &Systemd, topo: &Topology) -> Result<()> {
    let added = listen(ADDED_PORT);
    ensure!(connect(&topo.client, added).is_err(), "{added} answers before the reload");
    let path = sd.path(CONFIG);
    let text = std::fs::read_to_string(&path)?
        + &format!(
        "\n[[rule]]\nname = \"broker-3b\"\nlisten = {ADDED_PORT}\ntarget = \"{}:{BROKER_PORT}\"\n",
        BROKERS[2]
    );
    std::fs::write(&path, text)?;
    let before = sd.main_pid()?;
    sd.systemctl(&["reload", UNIT])?;
    // ExecReload= only sends SIGHUP: the rule lands a moment after systemctl returns.
    eventually(10, "the added rule forwards", || {
        let seen = connect(&topo.client, added).and_then(|c| exchange(c, 16 * 1024, 2));
        Ok(seen.is_ok_and(|e| e.reached == BROKERS[2]))
    })?;
    ensure!(sd.main_pid()? == before, "reload replaced the daemon");
    ensure!(sd.journal()?.contains("SIGHUP: reloaded"), "no reload in the journal");
    Ok(())
}

/// `systemctl stop`: no daemon, the health port closed, and still forwarding, old streams
/// and new connections alike.
fn stop(sd: &Systemd, topo: &Topology, streams: &Streams) -> Result<()> {
    sd.systemctl(&["stop", UNIT])?;
    ensure!(sd.show("ActiveState")? == "inactive", "not inactive after stop");
    ensure!(sd.show("Result")? == "success", "stop did not end cleanly");
    ensure!(xdp_prog(topo)?.is_some(), "stop detached the program");
    ensure!(
        http_get(&topo.client, listen(8080), "/", std::time::Duration::from_secs(5)).is_err(),
        "the health port answers with no daemon"
    );
    streams.wait_progress()?;
    let seen = exchange(connect(&topo.client, listen(9093))?, 16 * 1024, 3)?;
    ensure!(seen.reached == BROKERS[1], "9093 reached {} after stop", seen.reached);
    Ok(())
}

/// The overall exposure `systemd-analyze security` gives the unit (0 best, 10 worst).
fn exposure(sd: &Systemd) -> Result<f64> {
    let out = sd.nsenter(&["systemd-analyze", "security", "--no-pager", UNIT])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| format!("no overall exposure in:\n{text}"))?;
    let score = line.rsplit(':').next().and_then(|v| v.split_whitespace().next());
    score.and_then(|s| s.parse().ok()).with_context(|| format!("no score in {line:?}"))
}

/// The id of the XDP program on the NAT VM's n0, if any (`ip -j link show`).
fn xdp_prog(topo: &Topology) -> Result<Option<u64>> {
    let out = topo.natvm.ip(&["-j", "link", "show", "dev", topo.nat_ifaces[0]])?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(links[0]["xdp"]["prog"]["id"].as_u64())
}
