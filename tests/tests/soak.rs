//! The soak (issue 11, tests/src/soak): FWT_SOAK_SECS of live streams, short connections and
//! Kafka through the NAT VM with rule changes beside them, the daemon's RSS and the
//! conntrack fill sampled throughout. `cargo xtask test` runs 20 s; `cargo xtask stress`
//! 30 minutes (`--soak-secs`). The table goes to target/soak/soak.md.
//!
//! Asserted: no stream and no Kafka connection breaks; every new connection, kafka-python
//! round trip and rule change succeeds; the daemon's RSS in the last quarter is within 10 %
//! (at least 4 MiB) of its median after warm-up; once the short connections are closed and
//! swept, the tables hold the live flows and nothing else.

use forwarder_tests::{daemon_tests::seed_broker, require_root, soak, streams::assert_all_intact};

/// The length of the run in `cargo xtask test`.
const SHORT_SECS: u64 = 20;

#[test]
fn soak_under_mixed_load_and_rule_changes_keeps_memory_and_tables_flat() {
    require_root();
    let opts = soak::Options::from_env(SHORT_SECS).expect("FWT_SOAK_SECS");
    let r = soak::run("sk", &opts).unwrap_or_else(|e| panic!("the soak failed: {e:#}"));
    let table = r.markdown();
    println!("{table}");
    let path = r.write().expect("writing target/soak/soak.md");
    println!("written to {}", path.display());

    assert_all_intact(&r.streams, seed_broker);
    assert_eq!(r.kafka_live_error, None, "the live Kafka connection broke:\n{table}");
    assert!(r.kafka_live.ok > 0, "the live Kafka connection did nothing:\n{table}");
    assert!(r.kafka_live_verified.is_ok(), "the live Kafka topic read back:\n{table}");
    assert_eq!(r.kafka_python.failed, 0, "kafka-python round trips failed:\n{table}");
    assert!(r.kafka_python.ok > 0, "no kafka-python round trip finished:\n{table}");
    assert_eq!(r.conns.failed, 0, "new connections failed:\n{table}");
    assert!(
        r.conns.ok as f64 >= 10.0 * opts.run.as_secs_f64(),
        "too few new connections:\n{table}"
    );
    assert_eq!(r.rules.failed, 0, "rule changes failed:\n{table}");
    assert!(r.rules.ok >= opts.run.as_secs(), "too few rule changes:\n{table}");

    let rss = r.rss();
    assert!(rss.flat(), "the daemon's RSS grew: {rss:?}\n{table}");
    assert!(r.swept_in.is_some(), "the tables did not come back to the live flows:\n{table}");
}
