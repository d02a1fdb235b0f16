//! The Kafka clients of the lab, run inside the client namespaces so they resolve the
//! brokers' FQDNs through that namespace's hosts file, as a Spark executor resolves them
//! through the private DNS zone: kafka-python (an independent implementation) and the
//! project's own Rust client (`forwarder kafka check --produce`).

use super::net::{Broker, KAFKA_PORT};
use crate::{netns::Netns, topology::forwarder_bin};
use anyhow::{bail, Context, Result};
use forwarder::kafka;
use serde::Deserialize;
use std::time::Duration;

/// The kafka-python script of the lab.
pub fn python_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/lab/kafka_roundtrip.py")
}

/// What kafka_roundtrip.py reports.
#[derive(Debug, Clone, Deserialize)]
pub struct PyReport {
    pub bootstrap: String,
    #[serde(default)]
    pub brokers: Vec<String>,
    #[serde(default)]
    pub produced: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub produce_seconds: f64,
    #[serde(default)]
    pub mb_per_s: f64,
    pub consumed: Option<u64>,
    pub in_order: Option<bool>,
    pub error: Option<String>,
}

/// One kafka-python run (`roundtrip` or `produce`) against broker `b` from `ns`.
pub fn python(
    ns: &Netns,
    mode: &str,
    b: &Broker,
    topic: &str,
    messages: usize,
    size: usize,
    partitions: usize,
) -> Result<PyReport> {
    let bootstrap = format!("{}:{KAFKA_PORT}", b.fqdn);
    let out = ns
        .command("timeout")
        .args([
            "120",
            "python3",
            python_script(),
            mode,
            "--bootstrap",
            &bootstrap,
            "--topic",
            topic,
        ])
        .args(["--messages", &messages.to_string(), "--size", &size.to_string()])
        .args(["--partitions", &partitions.to_string()])
        .output()
        .context("running python3 (is it installed, with kafka-python?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report: PyReport = serde_json::from_str(line).with_context(|| {
        format!(
            "kafka-python against {bootstrap} printed no report ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = &report.error {
        bail!("kafka-python against {bootstrap}: {e}");
    }
    Ok(report)
}

/// `forwarder kafka check --via brokerN... --produce TOPIC --messages N --json` from `ns`:
/// metadata through the path, every advertised broker connected to as a client would, and
/// N messages produced and read back per broker. Fails unless it exits 0.
pub fn rust_check(
    ns: &Netns,
    brokers: &[Broker],
    topic: &str,
    messages: usize,
) -> Result<serde_json::Value> {
    let mut args = Vec::new();
    for b in brokers {
        args.extend(["--via".to_string(), format!("{}:{KAFKA_PORT}", b.fqdn)]);
    }
    args.extend(["--produce".into(), topic.into(), "--messages".into(), messages.to_string()]);
    kafka_check(ns, &args)
}

/// Produce throughput of the project's Rust client (one connection, batches of up to 1000
/// messages, acks=all) against broker `b` from `ns`: MB/s as `kafka check` reports it.
/// Faster than kafka-python, so it shows more of the path's own cost.
pub fn rust_produce_mb_s(ns: &Netns, b: &Broker, topic: &str, messages: usize) -> Result<f64> {
    let v = kafka_check(
        ns,
        &[
            "--via".into(),
            format!("{}:{KAFKA_PORT}", b.fqdn),
            "--produce".into(),
            topic.into(),
            "--messages".into(),
            messages.to_string(),
            "--message-size".into(),
            "1000".into(),
        ],
    )?;
    v["vias"][0]["brokers"][0]["produce"]["produce_mb_s"]
        .as_f64()
        .with_context(|| format!("kafka check reported no produce_mb_s: {v}"))
}

/// Produces `values` to partition 0 of `topic` on `c` (the project's client, on a connection
/// the caller keeps); a just-created topic may need a moment for its leader, so a refusal is
/// retried for up to 5 s. The offset of the first value.
pub fn produce_when_ready(
    c: &mut kafka::Connection,
    topic: &str,
    values: &[Vec<u8>],
) -> Result<i64> {
    let mut last = None;
    for _ in 0..50 {
        match c.produce(topic, 0, values) {
            Ok(offset) => return Ok(offset),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("producing on a connection to {} ({topic}): {}", c.addr(), last.expect("tried"))
}

/// `forwarder kafka check ARGS --json` from `ns`, parsed; fails unless it exits 0.
fn kafka_check(ns: &Netns, args: &[String]) -> Result<serde_json::Value> {
    let out = ns
        .command(forwarder_bin().to_str().context("utf-8 path")?)
        .args(["kafka", "check"])
        .args(args)
        .arg("--json")
        .output()
        .context("running forwarder kafka check")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "forwarder kafka check failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_str(&stdout).with_context(|| format!("kafka check printed no JSON: {stdout}"))
}
