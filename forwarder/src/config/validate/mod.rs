//! Validation: from the file's top-level table to [`Settings`], key by key in the order
//! below, the first bad key ending it. Split by section:
//!
//! - [`global`]: `interface`, `mode`, `listen_ip`, `snat_ip`, `snat_ports`,
//!   `allowed_sources`, `max_flows`, `mss_clamp`;
//! - [`endpoints`]: `health`, `metrics`, `control_socket`, `pin_path`;
//! - [`timeouts`]: `dns_refresh` and `[timeouts]`;
//! - [`rules`]: the `[[rule]]` tables, checked against `snat_ports` and the sockets;
//! - [`kafka`]: the optional `[kafka]` table (the cluster the daemon watches);
//! - [`azure`]: the optional `[azure]` table (Azure's Scheduled Events followed).

mod azure;
mod endpoints;
mod global;
mod kafka;
mod rules;
mod timeouts;

pub(super) use global::interface_entries;
pub use global::parse_port_range;
pub(super) use kafka::kafka_key_span;
pub(super) use rules::rule_sections;
pub use rules::{parse_target, valid_rule_name};
pub use timeouts::TIMEOUT_KEYS;

use super::{spans::Section, ConfigError, Settings};
use std::{net::Ipv4Addr, path::Path};

/// Every key the file's top level may hold (tables included).
pub const TOP_KEYS: &[&str] = &[
    "interface",
    "mode",
    "listen_ip",
    "snat_ip",
    "snat_ports",
    "allowed_sources",
    "max_flows",
    "mss_clamp",
    "health",
    "metrics",
    "control_socket",
    "pin_path",
    "dns_refresh",
    "timeouts",
    "rule",
    "kafka",
    "azure",
];

/// The settings of the file whose top-level table is `root`, read from `path`.
pub(super) fn validate(path: &Path, root: &Section) -> Result<Settings, ConfigError> {
    root.deny_unknown(TOP_KEYS)?;
    let interfaces = global::interfaces(root)?;
    let mode = global::mode(root)?;
    let listen_ip = global::listen_ip(root)?;
    let snat_ip = global::snat_ip(root)?;
    let snat_ports = global::snat_ports(root)?;
    let allowed_sources = global::allowed_sources(root)?;
    let max_flows = global::max_flows(root)?;
    let mss_clamp = global::mss_clamp(root)?;
    let (health, metrics) = endpoints::health_and_metrics(root, &snat_ports)?;
    let control_socket = endpoints::control_socket(root)?;
    let pin_path = endpoints::pin_path(root)?;
    let dns_refresh = timeouts::dns_refresh(root)?;
    let mut warnings = Vec::new();
    let timeouts = timeouts::timeouts(root, &mut warnings)?;
    let sockets = [("health", health), ("metrics", metrics)];
    let rules = rules::rules(root, &snat_ports, listen_ip, &sockets)?;
    let kafka = kafka::kafka(root)?;
    let azure = azure::azure(root)?;

    Ok(Settings {
        path: path.to_path_buf(),
        interfaces,
        mode,
        listen_ip,
        snat_ip,
        snat_ports,
        allowed_sources,
        max_flows,
        mss_clamp,
        health,
        metrics,
        control_socket,
        pin_path,
        dns_refresh,
        timeouts,
        rules,
        kafka,
        azure,
        warnings,
    })
}

/// An address a packet can be sent to as one host's: not 0.0.0.0, broadcast or multicast.
fn unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}
