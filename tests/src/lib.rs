//! Shared pieces of the privileged integration tests: network namespaces, the Azure-like
//! topology, the packet builder and the BPF_PROG_TEST_RUN harness.
//!
//! Every test needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF); without it they fail with
//! the reason instead of skipping.

pub mod azure_cli;
pub mod bad_configs;
pub mod bench;
pub mod churn;
pub mod daemon_tests;
pub mod flood;
pub mod hostile;
pub mod imds;
pub mod kafka_fixtures;
pub mod lab;
pub mod metadata_server;
pub mod netns;
pub mod packet;
pub mod previous_release;
pub mod rng;
pub mod soak;
pub mod staged_pins;
pub mod streams;
pub mod systemd;
pub mod testrun;
pub mod topology;
pub mod traffic;
pub mod unit_file;

/// Fails the test loudly unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load BPF programs and create network namespaces: they need root; run \
         them with `cargo xtask test` (plain `cargo test` runs the unit tests only)"
    );
}
