//! Writes the fuzz targets' seed corpora (fuzz/seeds/TARGET/) from the repository's real
//! inputs: the shipped configuration and every bad-config case, the iptables-save fixture
//! and the rules of the importer's tests, each control request, and a broker's answers as
//! kafka-protocol encodes them. Ignored by default (it writes into the source tree):
//!
//!     cargo test -p forwarder-tests --test fuzz_seeds -- --ignored
//!
//! The output is deterministic, so a run that changes nothing leaves git clean.

use forwarder::{
    daemon::control::{Request, Response},
    kafka::{
        bytes::Bytes,
        client,
        kafka_protocol::{
            messages::{
                api_versions_response::ApiVersion,
                create_topics_response::CreatableTopicResult,
                fetch_response::{FetchableTopicResponse, PartitionData},
                metadata_response::{
                    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
                },
                produce_response::{PartitionProduceResponse, TopicProduceResponse},
                ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
                CreateTopicsResponse, FetchRequest, FetchResponse, MetadataRequest,
                MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
            },
            protocol::StrBytes,
        },
        wire::encode_response,
    },
};
use forwarder_tests::bad_configs;
use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
#[ignore = "writes fuzz/seeds/; run it after changing the inputs it reads"]
fn write_fuzz_seeds() {
    write("config", config_seeds());
    write("import_iptables", iptables_seeds());
    write("control_request", control_seeds());
    write("kafka_response", kafka_seeds());
}

/// Replaces fuzz/seeds/`target`/ with `seeds`, each file named by its index and `name`.
fn write(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir = PathBuf::from(ROOT).join("fuzz/seeds").join(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (name, bytes)) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:03}-{name}")), bytes).unwrap();
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

fn config_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = vec![
        ("packaging".to_string(), read("packaging/forwarder.toml").into_bytes()),
        ("base".to_string(), bad_configs::base_config().into_bytes()),
    ];
    seeds.extend(bad_configs::cases().into_iter().map(|c| (c.name.to_string(), c.text.into())));
    seeds
}

fn iptables_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds =
        vec![("fixture".to_string(), read("forwarder/tests/fixtures/ip_fwd_nat.save").into())];
    // Each string literal of the importer's tests (and of the tests of the word splitter it
    // shares with the doctor) that holds a rule ("-A ..."), with its line continuations and
    // "\n" unescaped, in a nat table as iptables-save prints it.
    let mut tests: String = ["mod.rs", "accepted.rs", "refused.rs", "output.rs"]
        .iter()
        .map(|f| read(&format!("forwarder/src/ops/import_iptables/tests/{f}")))
        .collect();
    let lexer = read("forwarder/src/ops/netfilter/lexer.rs");
    tests.push_str(&lexer[lexer.find("mod tests").unwrap()..]);
    let mut texts: Vec<String> = tests
        .split('"')
        .filter(|s| s.contains("-A "))
        .map(|s| {
            let joined: Vec<&str> = s.split("\\\n").map(|p| p.trim_start()).collect();
            joined.join("").replace("\\n", "\n")
        })
        .filter(|s| !s.contains('\\'))
        .collect();
    texts.dedup();
    for (i, rules) in texts.iter().enumerate() {
        let rules = rules.trim_end();
        let text = if rules.starts_with('*') {
            format!("{rules}\n")
        } else {
            format!(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :POSTROUTING ACCEPT [0:0]\n{rules}\nCOMMIT\n"
            )
        };
        seeds.push((format!("rules{i}"), text.into()));
    }
    seeds
}

fn control_seeds() -> Vec<(String, Vec<u8>)> {
    let name = || "broker-1".to_string();
    let requests = [
        Request::Status,
        Request::RuleList,
        Request::RuleAdd { name: name(), listen: 9092, target: "10.20.0.11:9092".into() },
        Request::RuleRemove { name: name() },
        Request::Reload,
        Request::Drain,
        Request::Undrain,
        Request::Unload,
        Request::Stats,
        Request::Flows { rule: Some(name()) },
        Request::Flows { rule: None },
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = requests
        .iter()
        .map(|r| {
            let bytes = serde_json::to_vec(r).unwrap();
            let cmd = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["cmd"]
                .as_str()
                .unwrap()
                .to_string();
            (cmd, bytes)
        })
        .collect();
    seeds.push(("ok".into(), serde_json::to_vec(&Response::ok(["a", "b"])).unwrap()));
    seeds.push(("err".into(), serde_json::to_vec(&Response::err(2, "bad")).unwrap()));
    seeds
}

/// The versions a fake broker offers, per API: (ApiVersions, Metadata, CreateTopics,
/// Produce, Fetch) maxima. The client speaks the highest both know.
type Maxima = [i16; 5];

fn kafka_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = vec![];
    // Our highest versions, our lowest, and in between.
    for (name, max) in
        [("newest", [3, 12, 7, 9, 11]), ("oldest", [3, 1, 2, 3, 4]), ("mid", [3, 7, 4, 7, 8])]
    {
        seeds.push((name.to_string(), conversation(max, 3, 1)));
    }
    // A broker that answers ApiVersions v3 with v0 UNSUPPORTED_VERSION and its own range
    // (up to v2), then the handshake again at v2.
    let mut fallback = frame::<ApiVersionsRequest>(
        &ApiVersionsResponse::default()
            .with_error_code(35)
            .with_api_keys(api_keys([2, 0, 0, 0, 0])),
        0,
        1,
    );
    fallback.extend(conversation([2, 12, 7, 9, 11], 2, 2));
    seeds.push(("fallback".into(), fallback));
    seeds
}

/// The whole exchange the fuzz target drives, from the handshake at `api_versions` with
/// correlation id `first` on.
fn conversation(max: Maxima, api_versions: i16, first: i32) -> Vec<u8> {
    let topic = || TopicName(StrBytes::from_static_str("fuzz"));
    let metadata = MetadataResponse::default()
        .with_cluster_id(Some(StrBytes::from_static_str("fake-cluster")))
        .with_controller_id(BrokerId(1))
        .with_brokers(
            (1..=3)
                .map(|id| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(format!("broker{id}.corp.example")))
                        .with_port(9092)
                        .with_rack(Some(StrBytes::from_string(format!("az{id}"))))
                })
                .collect(),
        )
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(topic()))
            .with_partitions(vec![MetadataResponsePartition::default()
                .with_partition_index(0)
                .with_leader_id(BrokerId(1))])]);
    let created = CreateTopicsResponse::default()
        .with_topics(vec![CreatableTopicResult::default().with_name(topic())]);
    let produced = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(topic())
        .with_partition_responses(vec![PartitionProduceResponse::default().with_index(0)])]);
    let records = batch(&[b"one", b"two"]);
    let fetched = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(topic())
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_records(Some(records))])]);
    let mut out = frame::<ApiVersionsRequest>(
        &ApiVersionsResponse::default().with_api_keys(api_keys(max)),
        api_versions,
        first,
    );
    out.extend(frame::<MetadataRequest>(&metadata, max[1], first + 1));
    out.extend(frame::<CreateTopicsRequest>(&created, max[2], first + 2));
    out.extend(frame::<ProduceRequest>(&produced, max[3], first + 3));
    out.extend(frame::<FetchRequest>(&fetched, max[4], first + 4));
    out
}

/// A record batch as the client writes it, at a fixed time (the seeds stay the same from
/// run to run).
fn batch(values: &[&[u8]]) -> Bytes {
    client::encode_batch_at(values, 1_700_000_000_000).expect("encoding a record batch")
}

fn api_keys(max: Maxima) -> Vec<ApiVersion> {
    let keys = [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::CreateTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
    ];
    keys.iter()
        .zip(max)
        .map(|(k, hi)| {
            ApiVersion::default().with_api_key(*k as i16).with_min_version(0).with_max_version(hi)
        })
        .collect()
}

fn frame<R: forwarder::kafka::kafka_protocol::protocol::Request>(
    resp: &R::Response,
    version: i16,
    correlation: i32,
) -> Vec<u8> {
    encode_response::<R>(resp, version, correlation).unwrap()
}
