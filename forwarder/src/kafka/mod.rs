//! `forwarder kafka discover | check` and the small blocking Kafka client they (and the
//! lab demo) use: plaintext only, std::net sockets, a timeout on every step.
//!
//! - [`client`]: [`Connection`] (resolve, connect, ApiVersions, then Metadata,
//!   CreateTopics, Produce, Fetch);
//! - [`wire`]: framing, deadlines, version negotiation;
//! - [`error`]: [`KafkaError`], classified by the hop that failed;
//! - [`discover`] and [`azure`]: the rules and Azure resources per broker;
//! - [`check`]: the client's path through the forwarder, broker by broker;
//! - [`scram`]: the SCRAM-SHA-256/512 client messages for SASL;
//! - [`render`]: text and JSON output.

pub mod azure;
pub mod check;
pub mod client;
pub mod discover;
pub mod error;
pub mod render;
pub mod scram;
pub mod wire;

pub use client::{Broker, ClusterMetadata, Connection, Partition, Record, Topic};
pub use error::{ErrorCode, Hop, KafkaError};

/// The wire-format crate and its buffer type, for code that plays a broker (the tests'
/// fake metadata server) with the same encoding.
pub use bytes;
pub use kafka_protocol;

/// clap value parser for HOST:PORT arguments.
pub fn host_port_arg(s: &str) -> Result<String, String> {
    client::split_host_port(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}
