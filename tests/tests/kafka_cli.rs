//! `forwarder kafka discover | check` against real sockets on 127.0.0.1: a fake metadata
//! server encoding its answers with kafka-protocol (`forwarder_tests::metadata_server`), listeners that are not Kafka (HTTP, one
//! that says nothing, one that hangs up, a closed port), and real tansu brokers (plaintext,
//! and with SASL required). Nothing here sends traffic anywhere but 127.0.0.1.
//!
//! The tansu tests need its binary: TANSU_BIN, else /opt/tansu/bin/tansu; without it they
//! fail and say so. TLS and SASL against real listeners: kafka_security.rs.

use forwarder_tests::{
    azure_cli,
    kafka_fixtures::{kafka, Tansu},
    metadata_server::{Advertised, Auth, MetadataServer, CLUSTER_ID},
    topology::forwarder_bin,
};
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

// ---- listeners on 127.0.0.1 -----------------------------------------------------------------

/// A listener on an ephemeral port whose connections `serve` handles, one thread each,
/// stopped (and joined) when dropped. Bounded: 60 s, 64 connections.
struct Listener {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding a test listener");
        l.set_nonblocking(true).expect("nonblocking listener");
        let addr = l.local_addr().expect("local addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut conns = Vec::new();
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline && conns.len() < 64 {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let serve = serve.clone();
                        conns.push(std::thread::spawn(move || serve(s)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Connection threads end on their own (read timeouts); do not wait for them.
        });
        Listener { addr, stop, thread: Some(thread) }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding");
    let addr = l.local_addr().expect("addr").to_string();
    drop(l);
    addr
}

fn http_server() -> Listener {
    Listener::start(|mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = s.shutdown(Shutdown::Both);
    })
}

/// Accepts and says nothing, holding the connection for a while (longer than any timeout
/// the tests give the CLI).
fn silent_server() -> Listener {
    Listener::start(|s| {
        std::thread::sleep(Duration::from_secs(15));
        drop(s);
    })
}

/// Accepts and hangs up at once.
fn hangup_server() -> Listener {
    Listener::start(|s| {
        let _ = s.shutdown(Shutdown::Both);
    })
}

/// The fake cluster: the brokers it advertises (`forwarder_tests::metadata_server`).
fn metadata_server(brokers: Vec<Advertised>) -> MetadataServer {
    MetadataServer::start(brokers, Auth::None)
}

fn three_brokers() -> Vec<Advertised> {
    // Listed out of id order: the rules must come out in id order anyway.
    [(3, "az3"), (1, "az1"), (2, "az2")]
        .map(|(id, rack)| Advertised {
            id,
            host: format!("broker{id}.corp.example"),
            port: 9092,
            rack: Some(rack.into()),
        })
        .to_vec()
}

/// The `[[rule]]` blocks in the text output: each header and the three lines after it.
fn rule_blocks(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if *l == "[[rule]]" {
            for l in &lines[i..(i + 4).min(lines.len())] {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

// ---- discover -------------------------------------------------------------------------------

#[test]
fn kafka_discover_prints_rules_and_azure_resources_per_broker() {
    let fake = metadata_server(three_brokers());
    let run = kafka(&["discover", "--bootstrap", &fake.addr, "--first-port", "19092"]);
    run.assert_code(0);
    let blocks = rule_blocks(&run.stdout);
    let config = format!("interface = \"lo\"\n\n{blocks}");
    let settings = forwarder::config::parse(&PathBuf::from("discovered.toml"), &config)
        .unwrap_or_else(|e| panic!("the printed rules do not parse: {e}\n{config}"));
    let rules: Vec<(String, u16, String)> = settings
        .rules
        .iter()
        .map(|r| (r.name.clone(), r.listen, format!("{}:{}", r.target.host, r.target.port)))
        .collect();
    assert_eq!(rules.len(), 3, "{config}");
    for (i, (name, listen, target)) in rules.iter().enumerate() {
        let id = i + 1;
        assert_eq!(name, &format!("broker-{id}"));
        assert_eq!(*listen, 19092 + i as u16);
        assert_eq!(target, &format!("broker{id}.corp.example:9092"));
    }
    assert!(blocks.contains("target = \"broker2.corp.example:9092\""), "{blocks}");
    for id in 1..=3 {
        for needle in [
            format!("broker{id}.corp.example:9092  az{id}"),
            format!(
                "pls-kafka-broker-{id}    mpe-kafka-broker-{id}        broker{id}.corp.example"
            ),
            format!(
                "--name kafka-broker-{id} --protocol Tcp --frontend-ip-name fe-kafka-broker-{id}"
            ),
            // Inside the `if ! ... show; then` that keeps a second run from replacing it.
            format!("--pe-name mpe-kafka-broker-{id} \\\n      --file @mpe-kafka-broker-{id}.json"),
        ] {
            assert!(run.stdout.contains(&needle), "missing {needle:?} in:\n{}", run.stdout);
        }
    }
    assert!(run.stdout.contains("spark.readStream.format(\"kafka\")"), "{}", run.stdout);
}

/// The az commands of the JSON output, argv joined by spaces.
fn az_lines(j: &serde_json::Value) -> Vec<String> {
    j["az_commands"]
        .as_array()
        .expect("az_commands")
        .iter()
        .flat_map(|s| s["commands"].as_array().expect("commands"))
        .map(|c| {
            c["argv"]
                .as_array()
                .expect("argv")
                .iter()
                .map(|w| w.as_str().expect("a word"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn kafka_discover_json_lists_the_brokers() {
    let fake = metadata_server(three_brokers());
    let run = kafka(&["discover", "--bootstrap", &fake.addr, "--json"]);
    let j = run.assert_code(0).json();
    assert_eq!(j["cluster_id"], CLUSTER_ID);
    let brokers: Vec<(i64, String, String)> = j["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| {
            (
                b["id"].as_i64().unwrap(),
                b["host"].as_str().unwrap().into(),
                b["rack"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        brokers,
        [1, 2, 3].map(|id| (id, format!("broker{id}.corp.example"), format!("az{id}"))).to_vec()
    );
    let listens: Vec<i64> =
        j["rules"].as_array().unwrap().iter().map(|r| r["listen"].as_i64().unwrap()).collect();
    assert_eq!(listens, [9092, 9093, 9094]);
    let lines = az_lines(&j);
    let rules: Vec<&String> =
        lines.iter().filter(|c| c.starts_with("network lb rule create")).collect();
    assert_eq!(rules.len(), 3, "{lines:#?}");
    for (i, rule) in rules.iter().enumerate() {
        let want = format!(
            "--frontend-port 9092 --backend-pool-name ${{BACKEND_POOL}} --backend-port {}",
            9092 + i
        );
        assert!(rule.contains(&want), "{want} in {rule}");
    }
    assert_eq!(j["client"], "synapse");
    assert!(j["notebook"].as_str().unwrap().contains("broker1.corp.example:9092,"));
}

/// Every `az` command `kafka discover` prints, for every client side and for the scale set
/// of `--nat-vms vmss`, through the real Azure CLI's parser (`forwarder_tests::azure_cli`).
#[test]
fn every_az_command_passes_the_azure_cli_parser() {
    let fake = metadata_server(three_brokers());
    let work = tempfile::tempdir().expect("a directory for the definition files");
    let mut jobs = Vec::new();
    // The NAT side is the same for every client: the scale set's once.
    for (client, nat_vms) in [("synapse", "two"), ("adf", "two"), ("vnet", "two"), ("vnet", "vmss")]
    {
        let run = kafka(&[
            "discover",
            "--bootstrap",
            &fake.addr,
            "--client",
            client,
            "--nat-vms",
            nat_vms,
            "--json",
        ]);
        let j = run.assert_code(0).json();
        assert_eq!(j["nat_vms"], nat_vms);
        let label = format!("--client {client} --nat-vms {nat_vms}");
        for job in azure_cli::commands_of(&label, &j, work.path()) {
            // Once each: the NAT side is the same for every client.
            if !jobs.iter().any(|(_, seen): &(String, Vec<String>)| *seen == job.1) {
                jobs.push(job);
            }
        }
    }
    assert!(jobs.len() >= 3 * 15, "only {} commands", jobs.len());
    for want in ["vmss create", "monitor autoscale create", "monitor autoscale rule create"] {
        assert!(jobs.iter().any(|(_, argv)| argv.join(" ").starts_with(want)), "no {want}");
    }
    azure_cli::assert_parsed(&jobs, work.path());
}

#[test]
fn kafka_discover_writes_the_script() {
    let fake = metadata_server(three_brokers());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("setup-azure.sh");
    let p = path.to_str().unwrap();
    let run = kafka(&["discover", "--bootstrap", &fake.addr, "--client", "adf", "--script", p]);
    run.assert_code(0);
    assert!(run.stderr.contains(&format!("wrote {p}")), "{}", run.stderr);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("#!/usr/bin/env bash\n"), "{text}");
    assert!(text.contains("\nset -euo pipefail\n"), "{text}");
    assert!(text.contains("FACTORY_NAME=\"${FACTORY_NAME:-<data-factory>}\""), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
    // bash reads it, and it refuses to run before its variables are set.
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    let out = Command::new("bash").arg(&path).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set SUBSCRIPTION_ID first"));
}

#[test]
fn kafka_discover_says_an_http_server_is_not_kafka() {
    let http = http_server();
    let run = kafka(&["discover", "--bootstrap", &http.addr]);
    run.assert_code(1);
    let want = format!("{} answered but not as a Kafka broker", http.addr);
    assert!(run.stderr.contains(&want), "{}", run.stderr);
    assert!(run.stderr.contains("HTTP/1.1 400 Bad Request"), "{}", run.stderr);
}

#[test]
fn kafka_discover_says_a_listener_that_hangs_up_is_not_kafka() {
    let hangup = hangup_server();
    let run = kafka(&["discover", "--bootstrap", &hangup.addr]);
    run.assert_code(1);
    assert!(run.stderr.contains("answered but not as a Kafka broker"), "{}", run.stderr);
    assert!(
        run.stderr.contains("closed the connection without answering ApiVersions"),
        "{}",
        run.stderr
    );
}

#[test]
fn kafka_discover_gives_up_on_a_silent_listener_within_its_timeout() {
    let silent = silent_server();
    let run = kafka(&["discover", "--bootstrap", &silent.addr, "--timeout", "2s"]);
    run.assert_code(1);
    assert!(run.took < Duration::from_secs(2 + 5), "took {:?}", run.took);
    assert!(run.took >= Duration::from_secs(2), "took {:?}: gave up before the timeout", run.took);
    assert!(run.stderr.contains("no answer to ApiVersions within 2s"), "{}", run.stderr);
}

#[test]
fn kafka_discover_names_a_refused_connection() {
    let addr = closed_port();
    let run = kafka(&["discover", "--bootstrap", &addr]);
    run.assert_code(1);
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
    assert!(
        run.stderr
            .contains(&format!("{addr}: TCP connection to {addr} failed: connection refused")),
        "{}",
        run.stderr
    );
}

#[test]
fn kafka_usage_errors_exit_2() {
    for args in [
        &["discover"][..],
        &["discover", "--bootstrap", "no-port"],
        &["discover", "--bootstrap", "127.0.0.1:9092", "--first-port", "0"],
        &["discover", "--bootstrap", "127.0.0.1:9092", "--timeout", "0s"],
        &["check"],
        &["check", "--via", "127.0.0.1"],
        &["check", "--via", "127.0.0.1:9092", "--messages", "3"],
        &["check", "--via", "127.0.0.1:9092", "--produce", "t", "--messages", "0"],
        &["check", "--via", "127.0.0.1:9092", "--produce", "t", "--message-size", "1"],
    ] {
        let run = kafka(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
    }
}

// ---- check ----------------------------------------------------------------------------------

#[test]
fn kafka_check_reports_the_failing_hop_per_broker() {
    // Broker 1 speaks Kafka (a second fake: the via's port is not known before it runs),
    // broker 2 is a closed port, broker 3 an HTTP server behind the name localhost.
    let http = http_server();
    let closed = closed_port();
    let closed_port: u16 = closed.rsplit_once(':').unwrap().1.parse().unwrap();
    let inner =
        metadata_server(vec![Advertised { id: 1, host: "127.0.0.1".into(), port: 1, rack: None }]);
    let brokers = vec![
        Advertised {
            id: 1,
            host: "127.0.0.1".into(),
            port: inner.port(),
            rack: Some("az1".into()),
        },
        Advertised { id: 2, host: "127.0.0.1".into(), port: closed_port, rack: None },
        Advertised { id: 3, host: "localhost".into(), port: http.port(), rack: None },
    ];
    let via = metadata_server(brokers);
    let run = kafka(&["check", "--via", &via.addr, "--json", "--timeout", "3s"]);
    let j = run.assert_code(1).json();
    assert_eq!(j["ok"], false);
    let v = &j["vias"][0];
    assert_eq!(v["via"], via.addr.as_str());
    assert!(v["failure"].is_null(), "{v}");
    let b = v["brokers"].as_array().expect("brokers");
    assert_eq!(b.len(), 3, "{v}");
    assert_eq!((b[0]["id"].as_i64(), b[0]["reachable"].as_bool()), (Some(1), Some(true)), "{v}");
    assert!(b[0]["latency_ms"].as_f64().is_some(), "{v}");
    assert_eq!(b[0]["via"], via.addr.as_str());
    assert_eq!(
        (b[1]["reachable"].as_bool(), b[1]["failure"]["hop"].as_str()),
        (Some(false), Some("tcp")),
        "{v}"
    );
    assert!(b[1]["failure"]["error"].as_str().unwrap().contains("connection refused"), "{v}");
    assert_eq!(b[2]["failure"]["hop"], "handshake", "{v}");
    assert!(b[2]["failure"]["error"].as_str().unwrap().contains("not as a Kafka broker"), "{v}");
    // localhost went through the system resolver (/etc/hosts).
    assert!(!b[2]["resolved"].as_array().unwrap().is_empty(), "{v}");

    // The same in text: one line per broker naming the via, and what failed.
    let run = kafka(&["check", "--via", &via.addr, "--timeout", "3s"]);
    run.assert_code(1);
    assert!(run.stdout.contains("FAILED at TCP"), "{}", run.stdout);
    assert!(run.stdout.contains("FAILED at Kafka handshake"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("FAILED via {} broker 2", via.addr)), "{}", run.stdout);
    assert!(run.stdout.contains("1 of 3 broker(s) ok"), "{}", run.stdout);
}

#[test]
fn kafka_check_reports_vias_that_are_not_kafka_within_the_timeout() {
    let http = http_server();
    let silent = silent_server();
    let closed = closed_port();
    let run = kafka(&[
        "check",
        "--via",
        &http.addr,
        "--via",
        &silent.addr,
        "--via",
        &closed,
        "--timeout",
        "2s",
        "--json",
    ]);
    let j = run.assert_code(1).json();
    assert!(run.took < Duration::from_secs(2 + 5), "took {:?}", run.took);
    let hops: Vec<(&str, &str)> = j["vias"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["via"].as_str().unwrap(), v["failure"]["hop"].as_str().unwrap_or("none")))
        .collect();
    assert_eq!(
        hops,
        [
            (http.addr.as_str(), "handshake"),
            (silent.addr.as_str(), "handshake"),
            (closed.as_str(), "tcp")
        ]
    );
    let err = |i: usize| j["vias"][i]["failure"]["error"].as_str().unwrap().to_string();
    assert!(err(0).contains("answered but not as a Kafka broker"), "{}", err(0));
    assert!(err(1).contains("no answer to ApiVersions within 2s"), "{}", err(1));
    assert!(err(2).contains("connection refused"), "{}", err(2));
}

// ---- real tansu brokers ---------------------------------------------------------------------

#[test]
fn kafka_discover_against_tansu() {
    let broker = Tansu::start("discover", &[]);
    let run = kafka(&["discover", "--bootstrap", &broker.addr, "--json"]);
    let j = run.assert_code(0).json();
    let brokers = j["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 1, "{j}");
    assert_eq!(j["rules"][0]["target"], broker.addr.as_str(), "{j}");
    assert_eq!(j["rules"][0]["listen"], 9092, "{j}");
    // tansu advertises an IP address here: the plan says a DNS record cannot help.
    assert!(
        j["warnings"][0].as_str().unwrap().contains("advertises the IP address 127.0.0.1"),
        "{j}"
    );
}

#[test]
fn kafka_check_produces_and_fetches_through_two_one_node_tansu_clusters() {
    // Two clusters whose single brokers have the same node id, as in the lab.
    let a = Tansu::start("check-a", &[]);
    let b = Tansu::start("check-b", &[]);
    let topic = "forwarder-check";
    let run = kafka(&[
        "check",
        "--via",
        &a.addr,
        "--via",
        &b.addr,
        "--produce",
        topic,
        "--messages",
        "50",
        "--json",
    ]);
    let j = run.assert_code(0).json();
    assert_eq!(j["ok"], true);
    let vias = j["vias"].as_array().expect("vias");
    assert_eq!(vias.len(), 2, "{j}");
    for (v, t) in vias.iter().zip([&a, &b]) {
        assert_eq!(v["via"], t.addr.as_str(), "{v}");
        assert_eq!(v["topic_created"], true, "{v}");
        let brokers = v["brokers"].as_array().unwrap();
        assert_eq!(brokers.len(), 1, "{v}");
        let br = &brokers[0];
        assert_eq!(br["via"], t.addr.as_str(), "{v}");
        assert_eq!(br["connected"], t.addr.as_str(), "{v}");
        let p = &br["produce"];
        assert_eq!(
            (p["produced"].as_u64(), p["consumed"].as_u64(), p["ok"].as_bool()),
            (Some(50), Some(50), Some(true)),
            "{v}"
        );
        assert!(p["produce_mb_s"].as_f64().is_some() && p["fetch_mb_s"].as_f64().is_some(), "{v}");
    }
    assert_eq!(
        vias[0]["brokers"][0]["id"], vias[1]["brokers"][0]["id"],
        "tansu's node id is fixed"
    );

    // Again, in text: the topic exists now; the new messages are found after the old ones.
    let run = kafka(&["check", "--via", &a.addr, "--produce", topic, "--messages", "5"]);
    run.assert_code(0);
    assert!(run.stdout.contains("1 of 1 broker(s) ok"), "{}", run.stdout);
    assert!(!run.stdout.contains("created the topic"), "{}", run.stdout);
}

#[test]
fn kafka_discover_says_a_sasl_tansu_needs_sasl() {
    let broker = Tansu::start("sasl", &["--authentication"]);
    let run = kafka(&["discover", "--bootstrap", &broker.addr]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("probably needs TLS or SASL"),
        "{}\ntansu:\n{}",
        run.stderr,
        broker.log()
    );
}

/// A bootstrap whose SYNs vanish (a firewall DROP, the usual NSG symptom): the connect
/// itself times out, bounded by --timeout, and the message names the TCP hop. Staged in a
/// namespace of its own whose INPUT drops the port (on its own loopback).
#[test]
fn kafka_discover_and_check_bound_a_bootstrap_that_drops_syns() {
    forwarder_tests::require_root();
    let ns = forwarder_tests::netns::Netns::new("kdrop").expect("namespace");
    ns.exec(&["nft", "add table ip t"]).expect("nft table");
    ns.exec(&[
        "nft",
        "add chain ip t input { type filter hook input priority 0; tcp dport 19099 drop; }",
    ])
    .expect("nft chain");
    for args in [
        &["kafka", "discover", "--bootstrap", "127.0.0.1:19099", "--timeout", "2s"][..],
        &["kafka", "check", "--via", "127.0.0.1:19099", "--timeout", "2s"],
    ] {
        let start = Instant::now();
        let out = ns
            .command(forwarder_bin().to_str().unwrap())
            .args(args)
            .output()
            .expect("running forwarder");
        let took = start.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(7),
            "{args:?} took {took:?}"
        );
        assert!(text.contains("127.0.0.1:19099") && text.contains("TCP"), "{args:?}: {text}");
    }
}
