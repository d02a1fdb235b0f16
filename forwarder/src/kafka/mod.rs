//! `forwarder kafka discover | check` and the small blocking Kafka client they (and the
//! lab demo) use: std::net sockets, TLS and SASL if asked, a timeout on every step.
//!
//! - [`client`]: [`Connection`] (resolve, connect, TLS, ApiVersions, SASL, then Metadata,
//!   CreateTopics, Produce, Fetch) and the [`Security`] it connects with;
//! - [`wire`]: framing, deadlines, version negotiation;
//! - [`stream`]: the bytes under the framing, TCP or TLS, each read and write bounded;
//! - [`tls`]: rustls set up from `--ca-file` or the system's CAs, the handshake, its failures;
//! - [`sasl`]: SaslHandshake and SaslAuthenticate for PLAIN, SCRAM and OAUTHBEARER;
//!   [`scram`] the SCRAM-SHA-256/512 client messages, [`oauthbearer`] the OAUTHBEARER one;
//! - [`error`]: [`KafkaError`], classified by the hop that failed;
//! - [`discover`] and [`azure`]: the rules and Azure resources per broker;
//! - [`coverage`]: which advertised brokers the rules reach, and the plan for the rest
//!   (`kafka discover --config`, the daemon's `[kafka]` watch);
//! - [`check`]: the client's path through the forwarder, broker by broker;
//! - [`render`]: text and JSON output; [`render_missing`] that of `discover --config`;
//!   [`rules_toml`]: the `[[rule]]` blocks they and the scale set's cloud-init share.

pub mod azure;
pub mod check;
pub mod client;
pub mod coverage;
pub mod discover;
pub mod error;
pub mod oauthbearer;
pub mod render;
pub mod render_missing;
pub mod rules_toml;
pub mod sasl;
pub mod scram;
pub mod stream;
pub mod tls;
pub mod wire;

pub use client::{Broker, ClusterMetadata, Connection, Partition, Record, Security, Topic};
pub use error::{ErrorCode, Hop, KafkaError, SetupError};
pub use sasl::{Mechanism, SaslConfig};
pub use tls::TlsConfig;

/// The wire-format crate and its buffer type, for code that plays a broker (the tests'
/// fake metadata server) with the same encoding.
pub use bytes;
pub use kafka_protocol;

/// clap value parser for HOST:PORT arguments; clap shows the error's message.
pub fn host_port_arg(s: &str) -> Result<String, KafkaError> {
    client::split_host_port(s).map(|_| s.to_string())
}
