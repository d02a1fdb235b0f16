//! The configuration file (SPEC §3): parsing, validation and the effective settings.
//!
//! Every error names the file, line, column and field, and says what was expected. Parsing
//! is all-or-nothing: a file with one bad field yields an error and no settings at all.
//!
//! Entry points: [`parse`] checks the text alone and is pure (no host access);
//! [`check_host`] checks parsed settings against this host (the interfaces exist); [`load`]
//! reads a file and does both ([`load_unchecked`]: only the first).
//!
//! Choices worth knowing:
//! - `snat_ports` must be written `LOW-HIGH` (a single port is `"40000-40000"`) with
//!   `LOW >= 1024`: ports below 1024 are where the host's own services listen (SSH on 22),
//!   and the data path takes packets to SNAT ports as replies of forwarded connections.
//! - A rule's `listen` port may not equal the `health` or `metrics` port when the data path
//!   would see that socket's packets (socket on 0.0.0.0 / `[::]`, `listen_ip = "any"`, the same
//!   address, or `listen_ip = "auto"` and a non-loopback address): the load balancer's probe
//!   would be forwarded to a broker instead of answered. Nor may those ports lie inside
//!   `snat_ports`.
//! - Durations are 1s to 30d; `allowed_sources = []` (nothing allowed) is refused: omit the
//!   key to allow every source.
//!
//! What is where:
//! - this file: the settings' types, the defaults and the entry points;
//! - `spans.rs`: the TOML reader that keeps every key's place;
//! - `error.rs`: [`ConfigError`], with its [`ConfigCause`] when something under a check
//!   failed (reading the file, the TOML parser, the host's addresses);
//! - `validate/`: the text's rules, one file per section of the file (global keys,
//!   endpoints, timeouts, rules, `[kafka]`);
//! - [`kafka`]: the `[kafka]` section's settings, and the Kafka client's from them;
//! - `host.rs`: the checks against this host ([`check_host`]);
//! - `locations.rs`: the control socket and pin path, read leniently ([`Locations`]);
//! - [`write_back`] and [`file_replace`]: `rule add / remove` written into the file's
//!   text, and the file replaced whole;
//! - [`fingerprint`]: the SHA-256 of the settings' canonical form, by which the VMs of one
//!   pool are compared.

pub mod azure;
mod error;
pub mod file_replace;
pub mod fingerprint;
mod host;
pub mod kafka;
mod locations;
pub mod rule_text;
mod spans;
mod validate;
/// The keys the file may hold: its top level, and `[timeouts]`.
pub use validate::{TIMEOUT_KEYS, TOP_KEYS};
mod warning;
pub mod write_back;

pub use error::{ConfigCause, ConfigError};
pub use host::{check_host, own_address_message};
pub use locations::Locations;
pub use validate::{parse_port_range, parse_target, valid_rule_name};
pub use warning::ConfigWarning;

use ipnet::Ipv4Net;
use spans::{Section, Source};
use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};
use toml_edit::ImDocument;

pub const DEFAULT_PATH: &str = "/etc/forwarder/forwarder.toml";
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/forwarder";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/forwarder/control.sock";
/// Rule names go into every table the CLI prints, the metrics' labels and the state file;
/// a bound keeps one mistyped or pasted name from breaking all of those.
pub const MAX_RULE_NAME: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Xdp,
    XdpGeneric,
    Tc,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Xdp => "xdp",
            Mode::XdpGeneric => "xdp-generic",
            Mode::Tc => "tc",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenIp {
    /// The interface's own addresses.
    Auto,
    Addr(Ipv4Addr),
    /// Any destination address (floating IP on the load balancer).
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnatIp {
    /// The primary IPv4 address of the (first) interface.
    Auto,
    Addr(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As written: a hostname or an IPv4 address.
    pub host: String,
    pub port: u16,
    /// Resolved address (IPv4 literals resolve to themselves).
    pub addr: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub name: String,
    pub listen: u16,
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub syn: Duration,
    pub established: Duration,
    pub closing: Duration,
}

/// The default established timeout, 2 h 11 min 15 s: longer than Linux's default keepalive
/// (a first probe after 2 h idle, then one every 75 s; 2 h 11 min 15 s is the first plus
/// nine more), so a connection idle until its keepalive is still tracked when the probes
/// come, and above [`ESTABLISHED_FLOOR`].
pub const ESTABLISHED_DEFAULT: Duration = Duration::from_secs(2 * 3600 + 11 * 60 + 15);

/// RFC 5382 REQ-5: a NAT's established timeout must not be less than 2 h 4 min. Shorter
/// values load, with a warning.
pub const ESTABLISHED_FLOOR: Duration = Duration::from_secs(2 * 3600 + 4 * 60);

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            syn: Duration::from_secs(60),
            established: ESTABLISHED_DEFAULT,
            closing: Duration::from_secs(120),
        }
    }
}

/// The effective, validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub path: PathBuf,
    /// The program attaches to each; the first is the primary one (`auto` addresses).
    pub interfaces: Vec<String>,
    pub mode: Mode,
    pub listen_ip: ListenIp,
    pub snat_ip: SnatIp,
    pub snat_ports: RangeInclusive<u16>,
    /// `None`: every source is allowed.
    pub allowed_sources: Option<Vec<Ipv4Net>>,
    pub max_flows: u32,
    pub mss_clamp: Option<u16>,
    pub health: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub control_socket: PathBuf,
    /// Where maps and links are pinned (bpffs); what survives a daemon restart.
    pub pin_path: PathBuf,
    pub dns_refresh: Duration,
    pub timeouts: Timeouts,
    pub rules: Vec<RuleSpec>,
    /// The Kafka cluster whose metadata the daemon watches (`[kafka]`).
    pub kafka: Option<kafka::KafkaWatch>,
    /// Azure's Scheduled Events followed, and the VM drained for them (`[azure]`).
    pub azure: Option<azure::AzureEvents>,
    /// Settings that load but are likely mistakes (see [`ConfigWarning`]).
    pub warnings: Vec<ConfigWarning>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Reads and validates a configuration file, and checks it against this host
/// ([`check_host`]). Hostname targets are left unresolved here (see `plan::resolve`).
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = read(path)?;
    let settings = parse(path, &text)?;
    check_host(&settings, &text)?;
    Ok(settings)
}

/// Reads and validates a configuration file without looking at the host: for commands that
/// must work when an interface has gone (`unload`, `status`).
pub fn load_unchecked(path: &Path) -> Result<Settings, ConfigError> {
    parse(path, &read(path)?)
}

/// The file's text; an error at no place (line 0, field "-") with the I/O error under it.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        field: "-".into(),
        message: "cannot read the file".into(),
        cause: Some(ConfigCause::Read(e.into())),
    })
}

/// Parses and validates configuration text that came from `path`. Pure: the host is not
/// consulted (an interface that does not exist here passes; see [`check_host`]).
pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    let src = Source { file: &file, text };
    let doc = ImDocument::parse(text).map_err(|e| src.syntax_error(e))?;
    let root = Section { src: &src, table: doc.as_table(), prefix: "", at: 0 };
    validate::validate(path, &root)
}

/// What the tests of every file here share: a file with the one required key, and `parse`
/// of a text that must fail.
#[cfg(test)]
mod test_text {
    use super::{parse, ConfigError};
    use std::path::Path;

    pub(super) const BASE: &str = "interface = \"eth0\"\n";

    pub(super) fn err(text: &str) -> ConfigError {
        parse(Path::new("f.toml"), text).unwrap_err()
    }

    /// Where an error points: line, column, field.
    pub(super) fn at(e: &ConfigError) -> (usize, usize, &str) {
        (e.line, e.column, e.field.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let s = parse(
            Path::new("f.toml"),
            r#"interface = "eth0"
mode = "tc"
listen_ip = "any"
snat_ip = "10.0.0.4"
snat_ports = "40000-40009"
allowed_sources = ["10.0.0.0/8", "192.168.1.7"]
max_flows = 4096
mss_clamp = 1360
health = "0.0.0.0:8080"
metrics = "127.0.0.1:9464"
control_socket = "/run/forwarder/control.sock"
dns_refresh = "30s"
[timeouts]
syn = "10s"
[[rule]]
name = "broker-1"
listen = 9092
target = "broker1.corp.example:9092"
[[rule]]
name = "broker-2"
listen = 9093
target = "10.20.0.12:9092"
"#,
        )
        .unwrap();
        assert_eq!(s.mode, Mode::Tc);
        assert_eq!(s.listen_ip, ListenIp::Any);
        assert_eq!(s.snat_ports, 40000..=40009);
        assert_eq!(s.allowed_sources.as_ref().unwrap().len(), 2);
        assert_eq!(s.timeouts.syn, Duration::from_secs(10));
        assert_eq!(s.timeouts.established, Duration::from_secs(7875));
        assert_eq!(s.rules[0].target.addr, None);
        assert_eq!(s.rules[1].target.addr, Some(Ipv4Addr::new(10, 20, 0, 12)));
    }

    #[test]
    fn an_unreadable_file_keeps_the_io_error_as_its_source() {
        let path = Path::new("/nonexistent/forwarder.toml");
        let e = load(path).unwrap_err();
        assert!(
            matches!(&e.cause, Some(ConfigCause::Read(io)) if io.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        assert_eq!(e, load_unchecked(path).unwrap_err());
        // What the CLI prints, as it read when the I/O error was in `message`.
        let shown = crate::error::chain(&e);
        assert_eq!(
            shown,
            "/nonexistent/forwarder.toml:0:0: -: cannot read the file: No such file or directory \
             (os error 2)"
        );
    }
}
