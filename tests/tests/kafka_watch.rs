//! The daemon's `[kafka]` watch end to end: a `forwarder run` in the NAT VM's namespace of
//! the seed topology, a real Kafka-protocol metadata server (`metadata_server`) whose
//! advertised brokers grow and shrink, the counts read through the real `/metrics`
//! endpoint, the log line read from the daemon's stderr, the `rule add` it suggests run as
//! the operator would, and a cluster that stops answering: counted, and nothing else stalls.
//! With mTLS (stunnel with `verify = 2`) and OAUTHBEARER (the server's RFC 7628 check) too.
//!
//! Needs root (namespaces, BPF); all traffic stays in the namespaces the test creates.

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    daemon_tests::{eventually, gauges, scrape_metrics, with_local_endpoints, METRICS},
    kafka_fixtures::{Pki, Stunnel, StunnelOptions},
    metadata_server::{Advertised, Auth, MetadataServer, Mode},
    require_root,
    topology::{cli, Daemon, Topology, BROKERS, BROKER_PORT},
};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

/// The seed's brokers (10.20.0.11-13:9092), ids 1-3, then more on the same subnet. Broker 2
/// advertises its name, which the NAT VM's hosts file resolves to the address its seed rule
/// targets (a rule imported from ip_fwd.sh targets addresses): the same broker.
fn brokers(ids: &[i32]) -> Vec<Advertised> {
    let host = |id| match id {
        2 => BROKER_2_NAME.to_string(),
        _ => format!("10.20.0.{}", 10 + id),
    };
    ids.iter().map(|&id| Advertised::new(id, &host(id), BROKER_PORT)).collect()
}

const BROKER_2_NAME: &str = "broker2.corp.example";

/// A scrape of the daemon's metrics; the endpoint opens just after the daemon says it
/// forwards, so a refused connection is retried for a few seconds.
fn scrape(topo: &Topology) -> Result<String> {
    let mut last = None;
    for _ in 0..50 {
        match scrape_metrics(&topo.natvm, METRICS) {
            Ok(text) => return Ok(text),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.expect("tried").context("the metrics endpoint did not answer within 5 s"))
}

/// `forwarder_kafka_brokers` by state.
fn states(text: &str) -> BTreeMap<String, u64> {
    gauges(text, "forwarder_kafka_brokers", "state")
}

fn want(mapped: u64, unmapped: u64, gone: u64) -> BTreeMap<String, u64> {
    [("gone", gone), ("mapped", mapped), ("unmapped", unmapped)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The value of an unlabelled sample `name`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the watch reports `expected`.
fn until_states(topo: &Topology, expected: BTreeMap<String, u64>) -> Result<String> {
    let mut last = String::new();
    let found = eventually(15, "the kafka watch's counts", || {
        last = scrape(topo)?;
        Ok(states(&last) == expected)
    });
    found.with_context(|| format!("wanted {expected:?}, last scrape:\n{last}"))?;
    Ok(last)
}

fn until_logged(daemon: &Daemon, needle: &str) -> Result<()> {
    eventually(15, needle, || Ok(daemon.log_text().contains(needle)))
        .with_context(|| format!("log so far:\n{}", daemon.log_text()))
}

const WATCH: &str = "interval = \"1s\"\ntimeout = \"1s\"\n";

#[test]
fn the_watch_follows_a_cluster_that_grows_then_shrinks() -> Result<()> {
    require_root();
    let topo = Topology::new("kw", false, false)?;
    topo.natvm.set_hosts(&[(BROKERS[1], BROKER_2_NAME)])?;
    let bind: SocketAddr = format!("{}:19092", BROKERS[0]).parse()?;
    let server = MetadataServer::start_in(&topo.broker, bind, brokers(&[1, 2, 3]), Auth::None)?;
    let config = with_local_endpoints(&topo.config("xdp-generic", "10.0.0.4"))
        + &format!("\n[kafka]\nbootstrap = [\"{bind}\"]\n{WATCH}");
    let daemon = Daemon::start(&topo.natvm, &config)?;
    let path = daemon.config.clone();
    let p = path.to_str().context("a UTF-8 path")?;

    // Every advertised broker has its seed rule.
    let text = until_states(&topo, want(3, 0, 0))?;
    ensure!(
        sample(&text, "forwarder_kafka_watch_last_success_timestamp_seconds") > Some(1e9),
        "{text}"
    );
    ensure!(sample(&text, "forwarder_kafka_watch_failures_total") == Some(0.0), "{text}");
    until_logged(&daemon, "kafka watch: every advertised broker has a rule")?;

    // Broker 4 joins: unmapped, and the log says what to run.
    server.set_brokers(brokers(&[1, 2, 3, 4]));
    until_states(&topo, want(3, 1, 0))?;
    let command =
        format!("forwarder --config {p} rule add broker-4 --listen 9095 --target 10.20.0.14:9092");
    until_logged(
        &daemon,
        "kafka broker 4 (10.20.0.14:9092) is advertised but no rule forwards to it",
    )?;
    until_logged(&daemon, &command)?;
    until_logged(
        &daemon,
        "[[rule]] name = \"broker-4\" listen = 9095 target = \"10.20.0.14:9092\"",
    )?;

    // discover --config against the running config says the same.
    let out = cli(&topo.natvm, &path, &["kafka", "discover", "--json"])?;
    ensure!(out.status.success(), "discover --config: {}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(j["rule_add_commands"] == serde_json::json!([command]), "{j}");
    ensure!(j["missing"][0]["id"] == 4 && j["gone"] == serde_json::json!([]), "{j}");

    // The command from the log, as the operator runs it: mapped from the next round.
    let args: Vec<&str> = command.split(' ').skip(3).collect();
    let out = cli(&topo.natvm, &path, &args)?;
    ensure!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    until_states(&topo, want(4, 0, 0))?;

    // Brokers 3 and 4 leave: their rules are gone.
    server.set_brokers(brokers(&[1, 2]));
    until_states(&topo, want(2, 0, 2))?;
    until_logged(&daemon, "kafka watch: rule broker-3 forwards to 10.20.0.13:9092, which the cluster no longer advertises")?;
    until_logged(&daemon, "kafka watch: rule broker-4 forwards to 10.20.0.14:9092")?;

    // The cluster stops answering: failures are counted, the counts and the last success
    // stay, and the daemon answers its control socket and its health probe meanwhile.
    let before = scrape(&topo)?;
    let last_success = sample(&before, "forwarder_kafka_watch_last_success_timestamp_seconds");
    server.set_mode(Mode::Silent);
    let mut text = String::new();
    eventually(15, "failures counted", || {
        text = scrape(&topo)?;
        Ok(sample(&text, "forwarder_kafka_watch_failures_total") >= Some(2.0))
    })
    .with_context(|| format!("last scrape:\n{text}"))?;
    ensure!(states(&text) == want(2, 0, 2), "{text}");
    ensure!(
        sample(&text, "forwarder_kafka_watch_last_success_timestamp_seconds") == last_success,
        "{text}"
    );
    let started = Instant::now();
    let out = cli(&topo.natvm, &path, &["status", "--json"])?;
    ensure!(
        out.status.success() && started.elapsed() < Duration::from_secs(2),
        "status took {:?}",
        started.elapsed()
    );
    ensure!(text.contains("forwarder_healthy 1"), "{text}");
    until_logged(&daemon, "kafka watch: ")?;
    ensure!(daemon.log_text().contains("the last counts stay"), "{}", daemon.log_text());

    // Back: a new success.
    server.set_mode(Mode::Answer);
    eventually(15, "a success after the failures", || {
        let t = scrape(&topo)?;
        Ok(sample(&t, "forwarder_kafka_watch_last_success_timestamp_seconds") > last_success)
    })?;
    until_logged(&daemon, "kafka watch: metadata again, after ")?;

    // A bad [kafka] on reload is refused with its place and changes nothing.
    let good = std::fs::read_to_string(&path)?;
    std::fs::write(&path, good.replace("interval = \"1s\"", "interval = \"often\""))?;
    let out = cli(&topo.natvm, &path, &["reload"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "reload: {:?} {err}", out.status);
    ensure!(err.contains(&format!("{p}:")) && err.contains("kafka.interval"), "{err}");
    std::fs::write(&path, good)?;
    ensure!(states(&scrape(&topo)?) == want(2, 0, 2), "after the refused reload");

    drop(server);
    let status = daemon.stop()?;
    ensure!(status.success(), "the daemon exited with {status}");
    topo.unload(&path)
}

/// TOKEN for the OAUTHBEARER server.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJuYXQtdm0ifQ.c2ln";

#[test]
fn the_watch_speaks_mtls_and_oauthbearer() -> Result<()> {
    require_root();
    let topo = Topology::new("kws", false, false)?;
    topo.natvm.set_hosts(&[(BROKERS[1], BROKER_2_NAME)])?;
    // Inside the NAT VM: the server on its loopback, stunnel in front requiring a client
    // certificate of the test's CA.
    let server = MetadataServer::start_in(
        &topo.natvm,
        "127.0.0.1:19092".parse()?,
        brokers(&[1, 2, 3]),
        Auth::OAuthBearer(TOKEN.into()),
    )?;
    let pki = Pki::new("forwarder test CA");
    let cert = pki.server("kafka", &["127.0.0.1"]);
    let client = pki.client("nat-vm", "forwarder");
    let ca = pki.ca_file();
    let opts = StunnelOptions { client_ca: Some(&ca), netns: Some(&topo.natvm) };
    let stunnel = Stunnel::start_with(19093, &cert, &server.addr, &opts);
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n"))?;
    let kafka = format!(
        "\n[kafka]\nbootstrap = \"{}\"\n{WATCH}ca_file = \"{}\"\nclient_cert = \"{}\"\n\
         client_key = \"{}\"\nsasl_mechanism = \"oauthbearer\"\nsasl_token_file = \"{}\"\n",
        stunnel.addr,
        ca.display(),
        client.cert.display(),
        client.key.display(),
        token.display()
    );
    let config = with_local_endpoints(&topo.config("xdp-generic", "10.0.0.4")) + &kafka;

    // A key that is missing: check-config names its place; nothing starts.
    let broken = config.replace(&client.key.display().to_string(), "/nonexistent/nat-vm.key");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, &broken)?;
    let out = cli(&topo.natvm, &path, &["check-config"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "check-config: {:?} {err}", out.status);
    let line = broken.lines().position(|l| l.starts_with("client_key")).context("the line")? + 1;
    ensure!(err.contains(&format!("{}:{line}:14: kafka.client_key:", path.display())), "{err}");

    // The good one: check-config says how the watch will connect.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &config)?;
    let out = cli(&topo.natvm, &good, &["check-config"])?;
    let said = String::from_utf8_lossy(&out.stdout);
    let line = format!(
        "kafka watch: {} every 1s (SASL_SSL OAUTHBEARER, client certificate)",
        stunnel.addr
    );
    ensure!(
        out.status.success() && said.contains(&line),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let daemon = Daemon::start(&topo.natvm, &config)?;
    let text = until_states(&topo, want(3, 0, 0))
        .with_context(|| format!("stunnel:\n{}\nlog:\n{}", stunnel.log(), daemon.log_text()))?;
    ensure!(server.refusals().is_empty(), "{:?}", server.refusals());

    // The token fetcher writes a token the cluster does not take: failures, named.
    let failures = sample(&text, "forwarder_kafka_watch_failures_total").unwrap_or(0.0);
    std::fs::write(&token, "c29tZS1vdGhlci10b2tlbg==\n")?;
    eventually(15, "the refused token counted", || {
        let t = scrape(&topo)?;
        Ok(sample(&t, "forwarder_kafka_watch_failures_total") > Some(failures))
    })?;
    until_logged(&daemon, "SASL OAUTHBEARER")?;
    ensure!(daemon.log_text().contains("invalid_token"), "{}", daemon.log_text());
    ensure!(
        server.refusals().iter().any(|r| r.contains("not the one issued")),
        "{:?}",
        server.refusals()
    );

    // No token at all (the fetcher has not written it yet): counted, and said.
    std::fs::remove_file(&token)?;
    until_logged(&daemon, &format!("no token: the token file {}", token.display()))?;

    // A fresh token: read at the next connection, no restart.
    std::fs::write(&token, format!("{TOKEN}\n"))?;
    server.set_brokers(brokers(&[1, 2, 3, 4]));
    until_states(&topo, want(3, 1, 0))?;

    let path = daemon.config.clone();
    drop(stunnel);
    let status = daemon.stop()?;
    ensure!(status.success(), "the daemon exited with {status}");
    topo.unload(&path)
}
