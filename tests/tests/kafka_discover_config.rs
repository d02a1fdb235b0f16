//! `forwarder kafka discover --config FILE`: only what the config lacks, against a real
//! Kafka-protocol metadata server (`forwarder_tests::metadata_server`) whose cluster has
//! grown. The printed rules must parse and complete the config; every `az` command must
//! pass the real Azure CLI's parser.
//!
//! discover --config looks up the rules' and brokers' names (a rule may target an address
//! where the broker advertises its name), so each test runs it in a namespace of its own:
//! the brokers' names in its hosts file, the server on its loopback, no route to any name
//! server. Needs root for that namespace.

use forwarder_tests::{
    azure_cli,
    kafka_fixtures::{kafka_in, Run},
    metadata_server::{Advertised, Auth, MetadataServer},
    netns::Netns,
    require_root,
};
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

fn brokers(ids: &[i32]) -> Vec<Advertised> {
    ids.iter().map(|&id| Advertised::new(id, &format!("broker{id}.corp.example"), 9092)).collect()
}

/// A namespace whose hosts file names broker1..9.corp.example (10.20.0.11..19), and the
/// metadata server on its loopback advertising `advertised`.
fn cluster(tag: &str, advertised: Vec<Advertised>) -> (Netns, MetadataServer) {
    require_root();
    let ns = Netns::new(tag).expect("a namespace");
    let names: Vec<(Ipv4Addr, String)> = (1..=9)
        .map(|i| (Ipv4Addr::new(10, 20, 0, 10 + i), format!("broker{i}.corp.example")))
        .collect();
    let entries: Vec<(Ipv4Addr, &str)> = names.iter().map(|(a, n)| (*a, n.as_str())).collect();
    ns.set_hosts(&entries).expect("the namespace's hosts file");
    let bind = "127.0.0.1:0".parse().unwrap();
    let server = MetadataServer::start_in(&ns, bind, advertised, Auth::None).expect("the server");
    (ns, server)
}

/// A config with rules for brokers 1-3 (listen 9092-9094), a rule to a broker the cluster
/// does not advertise ("old"), and `[kafka]` naming `bootstrap`.
fn config(dir: &Path, bootstrap: &str) -> PathBuf {
    let mut text = String::from("interface = \"lo\"\nmetrics = \"127.0.0.1:9095\"\n");
    for id in 1..=3 {
        text += &format!(
            "\n[[rule]]\nname = \"broker-{id}\"\nlisten = {}\ntarget = \"broker{id}.corp.example:9092\"\n",
            9091 + id
        );
    }
    text += "\n[[rule]]\nname = \"old\"\nlisten = 9200\ntarget = \"broker9.corp.example:9092\"\n";
    // A name where the broker advertises its address: the same broker once looked up.
    text += "\n[[rule]]\nname = \"by-name\"\nlisten = 9150\ntarget = \"localhost:9300\"\n";
    text += &format!("\n[kafka]\nbootstrap = [\"{bootstrap}\"]\n");
    let path = dir.join("forwarder.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn discover_config_prints_only_the_new_brokers_rules_and_azure_commands() {
    let mut advertised = brokers(&[1, 2, 3, 4, 5]);
    advertised.push(Advertised::new(6, "127.0.0.1", 9300));
    let (ns, server) = cluster("kdc", advertised);
    let kafka = |args: &[&str]| -> Run { kafka_in(&ns, args) };
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &server.addr.to_string());
    let p = path.to_str().unwrap();

    let run = kafka(&["discover", "--config", p]);
    run.assert_code(0);
    let out = &run.stdout;
    // Listen ports above the highest rule's (9200); the rule add commands name the config
    // (not the default one).
    for needle in [
        "6 broker(s) advertised, 4 forwarded by",
        "2 missing",
        &format!("forwarder --config {p} rule add broker-4 --listen 9201 --target broker4.corp.example:9092"),
        &format!("forwarder --config {p} rule add broker-5 --listen 9202 --target broker5.corp.example:9092"),
        "warning: rule old (listen 9200) forwards to broker9.corp.example:9092, which the cluster no longer advertises",
        &format!("forwarder --config {p} rule remove old"),
        "--name fe-kafka-broker-4",
        "--name kafka-broker-4 --protocol Tcp --frontend-ip-name fe-kafka-broker-4",
        "--backend-port 9201",
        "--pe-name mpe-kafka-broker-5",
        "pls-kafka-broker-5",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // Nothing of the brokers that have rules, nothing shared that exists already.
    for absent in [
        "broker-1 ",
        "fe-kafka-broker-1",
        "pls-kafka-broker-3",
        "network lb create",
        "network lb probe create",
        "nsg rule create",
        "HEALTH_PORT",
        "readStream",
    ] {
        assert!(!out.contains(absent), "{absent:?} in:\n{out}");
    }

    // The printed [[rule]]s complete the config: then nothing is missing.
    let blocks: String =
        out.split_once("and reload:\n").unwrap().1.split("\nAzure CLI").next().unwrap().into();
    let mut text = std::fs::read_to_string(&path).unwrap();
    // Before [kafka]: rules appended after a table would belong to it.
    text = text.replace("\n[kafka]", &format!("\n{blocks}\n[kafka]"));
    std::fs::write(&path, &text).unwrap();
    let settings = forwarder::config::parse(&path, &text)
        .unwrap_or_else(|e| panic!("the printed rules do not parse: {e}\n{text}"));
    assert_eq!(settings.rules.len(), 7, "{text}");
    let run = kafka(&["discover", "--config", p, "--json"]);
    let j = run.assert_code(0).json();
    assert_eq!(j["missing"].as_array().unwrap().len(), 0, "{j}");
    assert_eq!(j["mapped"].as_array().unwrap().len(), 6, "{j}");
    assert_eq!(j["mapped"][5]["rule"], "by-name", "{j}");
    assert_eq!(j["gone"][0]["name"], "old", "{j}");
    assert_eq!(j["az_commands"].as_array().unwrap().len(), 0, "{j}");
    let run = kafka(&["discover", "--config", p]);
    assert!(run.assert_code(0).stdout.contains("Nothing missing"), "{}", run.stdout);
}

#[test]
fn discover_config_az_commands_pass_the_azure_cli_parser() {
    let (ns, server) = cluster("kdz", brokers(&[1, 2, 3, 4]));
    let kafka = |args: &[&str]| -> Run { kafka_in(&ns, args) };
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &server.addr.to_string());
    let work = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    for client in ["synapse", "adf", "vnet"] {
        let run =
            kafka(&["discover", "--config", path.to_str().unwrap(), "--client", client, "--json"]);
        let j = run.assert_code(0).json();
        let missing: Vec<i64> =
            j["missing"].as_array().unwrap().iter().map(|b| b["id"].as_i64().unwrap()).collect();
        assert_eq!(missing, [4], "{j}");
        assert_eq!(j["rules"][0]["listen"], 9201, "{j}");
        let commands =
            azure_cli::commands_of(&format!("--config --client {client}"), &j, work.path());
        let lines: Vec<String> = commands.iter().map(|(_, argv)| argv.join(" ")).collect();
        assert!(lines.iter().any(|l| l.starts_with("network lb frontend-ip create")), "{lines:#?}");
        assert!(
            lines.iter().any(|l| l.starts_with("network private-link-service connection update")),
            "{lines:#?}"
        );
        assert!(!lines.iter().any(|l| l.starts_with("network lb create")), "{lines:#?}");
        jobs.extend(commands);
    }
    azure_cli::assert_parsed(&jobs, work.path());
    // A scale set changes none of the new broker's commands (they stand on the load
    // balancer, whatever its pool holds) and is not created again; it is told how the
    // scale set's model gets the new rule.
    let p = path.to_str().unwrap();
    let argv = |nat_vms: &str| {
        let run = kafka(&["discover", "--config", p, "--nat-vms", nat_vms, "--json"]);
        let j = run.assert_code(0).json();
        assert_eq!(j["nat_vms"], nat_vms, "{j}");
        let commands = azure_cli::commands_of(nat_vms, &j, work.path());
        commands.into_iter().map(|(_, argv)| argv.join(" ")).collect::<Vec<_>>()
    };
    assert_eq!(argv("two"), argv("vmss"));
    let run = kafka(&["discover", "--config", p, "--nat-vms", "vmss"]);
    let text = &run.assert_code(0).stdout;
    assert!(text.contains("az vmss update --custom-data"), "{text}");
    assert!(!text.contains("vmss create"), "{text}");
}

#[test]
fn discover_config_takes_the_bootstrap_flag_and_first_port() {
    let (ns, server) = cluster("kdb", brokers(&[1, 2, 3, 4]));
    let kafka = |args: &[&str]| -> Run { kafka_in(&ns, args) };
    let dir = tempfile::tempdir().unwrap();
    // [kafka] names a closed port: --bootstrap takes its place.
    let path = config(dir.path(), "127.0.0.1:1");
    let p = path.to_str().unwrap();
    let addr = server.addr.clone();
    let run =
        kafka(&["discover", "--config", p, "--bootstrap", &addr, "--first-port", "9094", "--json"]);
    let j = run.assert_code(0).json();
    // 9094 is broker-3's; 9095 the metrics port: the first free one is 9096.
    assert_eq!(j["rules"][0]["listen"], 9096, "{j}");
    assert_eq!(j["bootstrap"], addr.as_str(), "{j}");
    let run = kafka(&["discover", "--config", p, "--timeout", "2s"]);
    run.assert_code(1);
    assert!(run.stderr.contains("127.0.0.1:1"), "{}", run.stderr);
}

#[test]
fn discover_config_errors_name_the_file_line_and_field() {
    let (ns, _server) = cluster("kde", vec![]);
    let kafka = |args: &[&str]| -> Run { kafka_in(&ns, args) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let p = path.to_str().unwrap();
    std::fs::write(&path, "interface = \"lo\"\n[kafka]\nbootstrap = \"no-port\"\n").unwrap();
    let run = kafka(&["discover", "--config", p]);
    run.assert_code(2);
    assert!(run.stderr.contains(&format!("{p}:3:13: kafka.bootstrap:")), "{}", run.stderr);

    std::fs::write(&path, "interface = \"lo\"\n").unwrap();
    let run = kafka(&["discover", "--config", p]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("has no [kafka] section: give the cluster with --bootstrap"),
        "{}",
        run.stderr
    );

    let ca = dir.path().join("missing-ca.pem");
    std::fs::write(
        &path,
        format!(
            "interface = \"lo\"\n[kafka]\nbootstrap = \"127.0.0.1:1\"\nca_file = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    let run = kafka(&["discover", "--config", p]);
    run.assert_code(2);
    assert!(run.stderr.contains(&format!("--ca-file {}", ca.display())), "{}", run.stderr);

    let run = kafka(&["discover", "--config", p, "--script", "x.sh", "--bootstrap", "127.0.0.1:1"]);
    run.assert_code(2);
}
