//! The daemon's log as journald and log shippers get it: stderr is not a terminal under
//! systemd, so no colour escape codes (they ended up in the journal as text), whatever
//! NO_COLOR says; `--log-format json` writes one JSON object a line.

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    require_root,
    topology::{config_path, forwarder_bin, wait_forwarding, Topology},
};
use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

/// `forwarder run` in the topology's NAT VM with stderr piped (not a terminal), no NO_COLOR.
fn spawn(topo: &Topology, extra: &[&str]) -> Result<(Child, std::path::PathBuf)> {
    let path = config_path(&topo.natvm);
    std::fs::write(&path, topo.config("tc", "10.0.0.4"))?;
    let bin = forwarder_bin();
    let child = topo
        .natvm
        .command(bin.to_str().context("utf-8 path")?)
        .args(["run", "--config", path.to_str().context("utf-8 path")?])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok((child, path))
}

fn stop(mut child: Child) -> Result<()> {
    // SAFETY: kill(2) on the PID of a child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait()?;
    ensure!(status.success(), "the daemon exited with {status}");
    Ok(())
}

#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() -> Result<()> {
    require_root();
    let topo = Topology::new("lgt", false, false)?;
    let (mut child, path) = spawn(&topo, &[])?;
    let log = wait_forwarding(&mut child, Duration::from_secs(20))?;
    stop(child)?;
    let lines = log.lock().unwrap().clone();
    ensure!(!lines.is_empty(), "no log lines");
    let coloured: Vec<&String> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    ensure!(coloured.is_empty(), "escape codes in the log: {coloured:?}");
    topo.unload(&path)
}

#[test]
fn json_logs_are_one_object_a_line() -> Result<()> {
    require_root();
    let topo = Topology::new("lgj", false, false)?;
    let (mut child, path) = spawn(&topo, &["--log-format", "json"])?;
    let stderr = child.stderr.take().context("stderr piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else { break false };
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(v["level"].is_string() && v["timestamp"].is_string(), "fields missing: {line}");
        seen.push(line);
        if v["fields"]["message"] == "forwarding" {
            ensure!(v["fields"]["snat"] == "10.0.0.4", "the ready line's fields: {v}");
            break true;
        }
    };
    stop(child)?;
    ensure!(ready, "no \"forwarding\" line within 20 s:\n{}", seen.join("\n"));
    topo.unload(&path)
}
