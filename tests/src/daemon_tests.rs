//! What the tests that drive a daemon in the seed topology share: the bed they start it on
//! ([`TestBed`]), the seed's listen addresses and brokers, echo servers on the brokers, HTTP
//! GETs of its endpoints (the metrics endpoint read), the CLI's output read as text or JSON,
//! and polling with a bound.

use crate::{
    netns::Netns,
    topology::{Daemon, Topology, BROKERS, BROKER_PORT, LISTEN_PORTS, NATVM},
    traffic::{connect, echo_servers, EchoServers},
};
use anyhow::Result;
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

/// Where the tests that read metrics put the daemon's endpoint (`metrics = ...`), inside the
/// NAT VM's namespace.
pub const METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464);

/// The broker a listen port of the seed config forwards to.
pub fn seed_broker(to: SocketAddrV4) -> Ipv4Addr {
    let i = LISTEN_PORTS.iter().position(|p| *p == to.port()).expect("a seed listen port");
    BROKERS[i]
}

/// `config` (a seed config) with the health endpoint on 127.0.0.1:8080 and metrics on
/// [`METRICS`], both inside the NAT VM.
pub fn with_local_endpoints(config: &str) -> String {
    config.replace(
        "mss_clamp = 1360\n",
        &format!("mss_clamp = 1360\nhealth = \"127.0.0.1:8080\"\nmetrics = \"{METRICS}\"\n"),
    )
}

/// A listen port on the NAT VM's address.
pub fn listen(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(NATVM, port)
}

pub fn all_listen() -> Vec<SocketAddrV4> {
    LISTEN_PORTS.iter().map(|p| listen(*p)).collect()
}

/// An echo server on every broker's port.
pub fn brokers(topo: &Topology) -> Result<EchoServers> {
    let addrs: Vec<SocketAddrV4> =
        BROKERS.iter().map(|b| SocketAddrV4::new(*b, BROKER_PORT)).collect();
    echo_servers(&topo.broker, &addrs)
}

/// The seed topology with an echo server on every broker: what each daemon test starts its
/// daemon on, and hands that daemon back to at its end ([`TestBed::finish`]).
pub struct TestBed {
    // Fields drop in this order: the echo servers stop before their namespaces go, as they
    // did when each test held them in locals declared after the topology.
    _brokers: EchoServers,
    pub topo: Topology,
    mode: String,
}

impl TestBed {
    /// The namespaces tagged `tag` and the echo servers, for a daemon in `mode`. Native
    /// "xdp" also puts XDP_PASS on the router's ends of the links, without which veth does
    /// not deliver the frames the daemon's program sends back out (`Topology::new`).
    pub fn new(tag: &str, mode: &str) -> Result<TestBed> {
        let topo = Topology::new(tag, false, mode == "xdp")?;
        let brokers = brokers(&topo)?;
        Ok(TestBed { _brokers: brokers, topo, mode: mode.to_string() })
    }

    /// The seed config in this bed's mode, SNAT to the NAT VM's own address.
    pub fn seed_config(&self) -> String {
        self.topo.config(&self.mode, "10.0.0.4")
    }

    /// A daemon in the NAT VM on `config_text` (written to the bed's config file), and that
    /// file's path, which the CLI and a restarted daemon take.
    pub fn start(&self, config_text: &str) -> Result<(Daemon, PathBuf)> {
        let daemon = Daemon::start(&self.topo.natvm, config_text)?;
        let config = daemon.config.clone();
        Ok((daemon, config))
    }

    /// Stops `daemon`, then `forwarder unload` of its config with no daemon running, as
    /// each test ends; fails unless the unload succeeds and the pins are gone.
    pub fn finish(self, daemon: Daemon) -> Result<()> {
        let config = daemon.config.clone();
        drop(daemon);
        self.topo.unload(&config)
    }
}

/// An HTTP GET of `path` at `to` from inside `ns` (a health probe, a metrics scrape): the
/// whole answer, read until the daemon closes the connection or `timeout` passes.
pub fn http_get(ns: &Netns, to: SocketAddrV4, path: &str, timeout: Duration) -> Result<String> {
    http_get_with(ns, to, path, &[], timeout)
}

/// [`http_get`] with more request headers (an `Accept` to negotiate the metrics format).
pub fn http_get_with(
    ns: &Netns,
    to: SocketAddrV4,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<String> {
    let mut s = connect(ns, to)?;
    s.set_read_timeout(Some(timeout))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: nat\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Whether the health endpoint answers the load balancer's probe (an HTTP GET from the
/// client) with 200.
pub fn health_answers(topo: &Topology) -> bool {
    http_get(&topo.client, listen(8080), "/", Duration::from_secs(2))
        .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
}

/// A CLI run's stdout; fails the test with its output if it did not succeed.
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CLI run's `--json` output.
pub fn json(out: &Output, what: &str) -> serde_json::Value {
    let text = ok(out, what);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// Polls `cond` every 100 ms for up to `secs`.
pub fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("{what}: not within {secs} s")
}

/// GET /metrics from the endpoint at `addr` inside `ns`: the whole response, headers too.
pub fn scrape_metrics(ns: &Netns, addr: SocketAddrV4) -> Result<String> {
    http_get(ns, addr, "/metrics", Duration::from_secs(20))
}

/// The `NAME{LABEL="V"} VALUE` lines of a Prometheus text exposition, by V (families with
/// that one label).
pub fn gauges(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{name}{{{label}=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (value_of_label, value) = rest.split_once("\"} ")?;
            Some((value_of_label.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
