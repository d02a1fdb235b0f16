//! An upgrade across map layouts, as a NAT VM gets it: the previous layout's tagged release
//! (`previous_release`, built once and cached under target/) installed with dpkg under a
//! real systemd, forwarding live streams and idle connections; then this build's .deb
//! installed over it (`dpkg -i`, whose postinst restarts the unit). The new daemon copies
//! the pinned tables into its layout and swaps its program in: every connection must
//! survive, the idle ones included. Then a downgrade back: refused, saying what it would
//! lose, and nothing changes; forced, it unloads and the old release starts afresh.

use anyhow::{ensure, Context, Result};
use forwarder::datapath::pins::{Pinned, Pins};
use forwarder_common::LAYOUT_VERSION;
use forwarder_tests::{
    daemon_tests::{all_listen, brokers, eventually, health_answers, listen, seed_broker},
    previous_release, require_root,
    streams::{assert_all_intact, StallMeter, Streams},
    systemd::{package, Systemd, UNIT},
    topology::{seed_config, Topology, LISTEN_PORTS},
    traffic::connect,
};
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::{Duration, Instant},
};

const CONFIG: &str = "/etc/forwarder/forwarder.toml";
const PINS: &str = "/sys/fs/bpf/forwarder";
/// Connections opened before the upgrade that send nothing across it.
const IDLE_PER_PORT: usize = 3;

#[test]
fn an_upgrade_through_the_deb_keeps_every_connection() -> Result<()> {
    require_root();
    let t0 = Instant::now();
    let old_deb = previous_release::deb()?;
    let new_deb = package::deb()?;
    println!("{} ready after {:.1?}", old_deb.display(), t0.elapsed());
    // Not /tmp: systemd's namespace has a /tmp of its own; target/ it sees (read-only).
    let scratch = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))?;
    let sd = Systemd::boot_for_dpkg()?;
    let topo = Topology::around(sd.netns("upg")?, "upg", false, true)?;
    let _brokers = brokers(&topo)?;

    install(&sd, &old_deb, &[])?;
    let config =
        format!("health = \"0.0.0.0:8080\"\n{}", seed_config(&topo.nat_ifaces, "xdp", "10.0.0.4"));
    std::fs::write(sd.path(CONFIG), config).context("writing the config inside")?;
    // Enabled, as on a NAT VM: the postinst's try-restart only restarts an enabled unit.
    sd.systemctl(&["enable", "--now", UNIT])?;
    eventually(5, "the health probe answers 200", || Ok(health_answers(&topo)))?;
    let pins = Pins::new(sd.path(PINS));
    let before = pins.check_compatible()?;
    ensure!(
        matches!(before, Pinned::Previous { version: previous_release::LAYOUT, .. }),
        "{} pinned {before:?}, not layout {}",
        previous_release::TAG,
        previous_release::LAYOUT
    );
    let old_pid = sd.main_pid()?;

    let streams = Streams::start(&topo.client, &all_listen(), 2)?;
    let mut idle = IdleFlows::open(&topo)?;
    streams.wait_progress()?;
    let stalls = StallMeter::start(&streams);

    let t = Instant::now();
    install(&sd, &new_deb, &[])?;
    println!("dpkg -i {}: {:.1?}", new_deb.display(), t.elapsed());
    eventually(10, "the upgraded daemon runs", || {
        Ok(sd.main_pid().is_ok_and(|p| p != old_pid) && sd.show("ActiveState")? == "active")
    })
    .with_context(|| format!("journal:\n{}", sd.journal().unwrap_or_default()))?;
    let journal = sd.journal()?;
    let line = journal
        .lines()
        .find(|l| l.contains("upgraded the pinned maps"))
        .with_context(|| format!("the journal says nothing of the upgrade:\n{journal}"))?;
    println!("journal: {line}");
    let after = pins.check_compatible()?;
    ensure!(
        matches!(after, Pinned::Current { max_flows: Some(_) }),
        "after the upgrade the pins are {after:?}, not layout {LAYOUT_VERSION}"
    );
    ensure!(!sd.path(&format!("{PINS}/staging-layout{LAYOUT_VERSION}")).exists(), "staging left");

    streams.wait_progress()?;
    let longest = stalls.finish();
    idle.all_answer().context("an idle connection did not survive the upgrade")?;
    flows_after_upgrade(&sd, &topo, idle.len())?;
    let reports = streams.finish();
    let live = reports.len();
    assert_all_intact(&reports, seed_broker);
    println!(
        "upgrade {} -> this build: 0 of {live} live streams and 0 of {} idle connections \
         broken; longest stall of a stream {longest:.1?}",
        previous_release::TAG,
        idle.len()
    );

    // A downgrade to a release of an unknown (older) layout: both packages' prerm refuse
    // it (the installed one's, then the incoming one's "failed-upgrade", which a release
    // without the check, as 0.1.0 is, lacks), and dpkg keeps this version. The incoming
    // package is this one repacked as 0.1.9: what every later downgrade meets.
    let older = repack_as(&new_deb, "0.1.9", &scratch)?;
    let refused = sd.dpkg_install(&older, &[])?;
    let said = output_of(&refused);
    ensure!(!refused.status.success(), "the downgrade went through:\n{said}");
    ensure!(said.contains("would drop the"), "the refusal does not say what it loses:\n{said}");
    // dpkg's unwind runs the installed postinst's abort-upgrade, which restarts the unit:
    // the same build takes over its own pins.
    eventually(10, "this build's daemon runs after the refusal", || {
        Ok(sd.show("ActiveState")? == "active" && health_answers(&topo))
    })?;
    ensure!(matches!(pins.check_compatible()?, Pinned::Current { .. }), "the pins changed");
    ensure!(installed_version(&sd)?.starts_with(env!("CARGO_PKG_VERSION")), "dpkg changed it");
    idle.all_answer().context("an idle connection after the refused downgrade")?;
    println!(
        "downgrade refused: {}",
        said.lines().find(|l| l.contains("would drop")).unwrap_or("")
    );

    // To 0.1.0 itself: its prerm lets dpkg go on, so the check can only say what it would
    // lose; the 0.1.0 daemon then refuses the newer pins and exits, and the program stays
    // attached with every flow: nothing is lost, the VM is out of the pool until the
    // operator re-installs (flows resumed) or forces.
    let out = sd.dpkg_install(&old_deb, &[])?;
    ensure!(out.status.success(), "dpkg -i {}:\n{}", old_deb.display(), output_of(&out));
    ensure!(
        output_of(&out).contains("would drop the"),
        "no word of the loss:\n{}",
        output_of(&out)
    );
    eventually(10, "the 0.1.0 daemon refuses the newer pins", || {
        Ok(sd.journal()?.contains("made by an incompatible build"))
    })?;
    idle.all_answer().context("an idle connection with 0.1.0 refusing the pins")?;
    install(&sd, &new_deb, &[])?;
    let _ = sd.systemctl(&["reset-failed", UNIT]);
    sd.systemctl(&["restart", UNIT])?;
    eventually(10, "this build's daemon is back", || Ok(health_answers(&topo)))?;
    idle.all_answer().context("an idle connection after re-installing this build")?;
    println!(
        "downgrade to {} without force: its daemon refused the pins, every flow kept",
        previous_release::TAG
    );

    // Forced: unloaded, and the old release starts on fresh maps of its own layout.
    install(&sd, &old_deb, &[("FORWARDER_FORCE_DOWNGRADE", "1")])?;
    let _ = sd.systemctl(&["reset-failed", UNIT]);
    sd.systemctl(&["restart", UNIT])?;
    eventually(5, "the downgraded daemon's probe answers", || Ok(health_answers(&topo)))?;
    ensure!(
        matches!(pins.check_compatible()?, Pinned::Previous { .. }),
        "after the forced downgrade the pins are not the old release's"
    );
    println!("forced downgrade: unloaded, {} started afresh", previous_release::TAG);
    drop(topo);
    drop(sd);
    println!("all in {:.1?}", t0.elapsed());
    Ok(())
}

/// `dpkg -i` inside, which must succeed.
fn install(sd: &Systemd, deb: &std::path::Path, env: &[(&str, &str)]) -> Result<()> {
    let out = sd.dpkg_install(deb, env)?;
    ensure!(
        out.status.success(),
        "dpkg -i {} failed ({}):\n{}{}",
        deb.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `forwarder flows`: the copied flows are there, without a handshake time (layout 2 did
/// not record it); a connection opened now has one.
fn flows_after_upgrade(sd: &Systemd, topo: &Topology, idle: usize) -> Result<()> {
    let fresh = connect(&topo.client, listen(LISTEN_PORTS[0]))?;
    let mut header = [0u8; forwarder_tests::traffic::HEADER_LEN];
    (&fresh).read_exact(&mut header)?;
    let out = sd.nsenter(&["forwarder", "flows", "--json"])?;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("forwarder flows --json: {}", output_of(&out)))?;
    let port = fresh.local_addr()?.port().to_string();
    let (new, copied): (Vec<_>, Vec<_>) =
        rows.iter().partition(|r| r["client"].as_str().is_some_and(|c| c.ends_with(&port)));
    ensure!(new.len() == 1, "the new connection is not listed once: {rows:?}");
    let timed = new[0]["handshake_us"].as_u64().is_some_and(|us| us > 0);
    ensure!(timed, "no handshake time for a new flow: {:?}", new[0]);
    ensure!(copied.len() >= idle, "{} flows listed, {idle} idle ones alone", copied.len());
    ensure!(
        copied.iter().all(|r| r["handshake_us"].is_null()),
        "a copied flow has a handshake time layout 2 never recorded"
    );
    println!(
        "flows: {} copied from layout 2, a new one with handshake {} us",
        copied.len(),
        new[0]["handshake_us"]
    );
    Ok(())
}

fn output_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The package's version as dpkg has it installed inside.
fn installed_version(sd: &Systemd) -> Result<String> {
    let out = sd.nsenter(&["dpkg-query", "-W", "-f=${Version}", "forwarder"])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `deb` rebuilt as `version` (control file and the prerm's own version), into `dir`.
fn repack_as(deb: &std::path::Path, version: &str, dir: &tempfile::TempDir) -> Result<PathBuf> {
    let tree = dir.path().join(format!("tree-{version}"));
    let run = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new(args[0]).args(&args[1..]).output()?;
        ensure!(out.status.success(), "{args:?}: {}", output_of(&out));
        Ok(())
    };
    run(&["dpkg-deb", "-R", deb.to_str().unwrap(), tree.to_str().unwrap()])?;
    for (file, from, to) in [
        (
            "control",
            format!("Version: {}", env!("CARGO_PKG_VERSION")),
            format!("Version: {version}"),
        ),
        (
            "prerm",
            format!("THIS_VERSION={}", env!("CARGO_PKG_VERSION")),
            format!("THIS_VERSION={version}"),
        ),
    ] {
        let path = tree.join("DEBIAN").join(file);
        let text = std::fs::read_to_string(&path)?;
        ensure!(text.contains(&from), "{} has no {from:?}", path.display());
        std::fs::write(&path, text.replace(&from, &to))?;
    }
    let out = dir.path().join(format!("forwarder_{version}.deb"));
    run(&["dpkg-deb", "--root-owner-group", "-b", tree.to_str().unwrap(), out.to_str().unwrap()])?;
    Ok(out)
}

/// Connections to every rule that exchange a few bytes, then stay silent.
struct IdleFlows(Vec<TcpStream>);

impl IdleFlows {
    fn open(topo: &Topology) -> Result<Self> {
        let mut flows = Vec::new();
        for port in LISTEN_PORTS {
            for _ in 0..IDLE_PER_PORT {
                let mut s = connect(&topo.client, listen(port))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                // The echo server's header first: the connection is through.
                let mut header = [0u8; forwarder_tests::traffic::HEADER_LEN];
                s.read_exact(&mut header)?;
                echo(&mut s, 0)?;
                flows.push(s);
            }
        }
        Ok(Self(flows))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Each echoes a message again.
    fn all_answer(&mut self) -> Result<()> {
        for (i, s) in self.0.iter_mut().enumerate() {
            echo(s, i as u8 + 1).with_context(|| format!("idle connection {i}"))?;
        }
        Ok(())
    }
}

fn echo(s: &mut TcpStream, tag: u8) -> Result<()> {
    let msg = [tag; 100];
    s.write_all(&msg)?;
    let mut back = [0u8; 100];
    s.read_exact(&mut back)?;
    ensure!(back == msg, "the echo differs");
    Ok(())
}
