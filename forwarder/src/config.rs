//! The configuration file (SPEC §3): parsing, validation and the effective settings.
//!
//! Every error names the file, line, column and field, and says what was expected. Parsing
//! is all-or-nothing: a file with one bad field yields an error and no settings at all.

use ipnet::Ipv4Net;
use serde::Deserialize;
use std::{
    collections::HashSet,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    ops::{Range, RangeInclusive},
    path::{Path, PathBuf},
    time::Duration,
};
use toml::Spanned;

pub const DEFAULT_PATH: &str = "/etc/forwarder/forwarder.toml";

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

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

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            syn: Duration::from_secs(60),
            established: Duration::from_secs(2 * 3600),
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
    pub dns_refresh: Duration,
    pub timeouts: Timeouts,
    pub rules: Vec<RuleSpec>,
}

// ---- the file as written ------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Spanned<OneOrMany>,
    mode: Option<Spanned<String>>,
    listen_ip: Option<Spanned<String>>,
    snat_ip: Option<Spanned<String>>,
    snat_ports: Option<Spanned<String>>,
    allowed_sources: Option<Vec<Spanned<String>>>,
    max_flows: Option<Spanned<i64>>,
    mss_clamp: Option<Spanned<i64>>,
    health: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    control_socket: Option<Spanned<String>>,
    dns_refresh: Option<Spanned<String>>,
    timeouts: Option<RawTimeouts>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    syn: Option<Spanned<String>>,
    established: Option<Spanned<String>>,
    closing: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    listen: Spanned<i64>,
    target: Spanned<String>,
}

/// Positions in the source text, for error messages.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The key written on the line of `offset`, for errors the TOML parser reports
    /// without a field name.
    fn key_at(&self, offset: usize) -> String {
        let start = self.text[..offset.min(self.text.len())].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("");
        match line.split_once('=') {
            Some((k, _)) if !k.trim().starts_with('[') => k.trim().to_string(),
            _ => line.trim().trim_matches(|c| c == '[' || c == ']').to_string(),
        }
    }
}

/// Reads and validates a configuration file. Hostname targets are left unresolved here
/// (see `resolve`).
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        field: "-".into(),
        message: format!("cannot read the file: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and validates configuration text that came from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    let src = Source { file: &file, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let field = src.key_at(span.start);
        src.error(span, &field, e.message().trim().to_string())
    })?;
    validate(path, &src, raw)
}

fn validate(path: &Path, src: &Source, raw: RawConfig) -> Result<Settings, ConfigError> {
    let interfaces = match raw.interface.get_ref() {
        OneOrMany::One(s) => vec![s.clone()],
        OneOrMany::Many(v) => v.clone(),
    };
    if interfaces.is_empty() || interfaces.iter().any(|i| !valid_ifname(i)) {
        return Err(src.error(
            raw.interface.span(),
            "interface",
            "expected an interface name (1-15 characters, no '/' or spaces) or a list of them",
        ));
    }

    let mode = match &raw.mode {
        None => Mode::Auto,
        Some(m) => match m.get_ref().as_str() {
            "auto" => Mode::Auto,
            "xdp" => Mode::Xdp,
            "xdp-generic" => Mode::XdpGeneric,
            "tc" => Mode::Tc,
            other => {
                return Err(src.error(
                    m.span(),
                    "mode",
                    format!("expected one of auto, xdp, xdp-generic, tc; found {other:?}"),
                ))
            }
        },
    };

    let listen_ip = match &raw.listen_ip {
        None => ListenIp::Auto,
        Some(v) => match v.get_ref().as_str() {
            "auto" => ListenIp::Auto,
            "any" => ListenIp::Any,
            s => ListenIp::Addr(s.parse().map_err(|_| {
                src.error(
                    v.span(),
                    "listen_ip",
                    format!("expected \"auto\", \"any\" or an IPv4 address; found {s:?}"),
                )
            })?),
        },
    };

    let snat_ip = match &raw.snat_ip {
        None => SnatIp::Auto,
        Some(v) => match v.get_ref().as_str() {
            "auto" => SnatIp::Auto,
            s => SnatIp::Addr(s.parse().map_err(|_| {
                src.error(
                    v.span(),
                    "snat_ip",
                    format!("expected \"auto\" or an IPv4 address; found {s:?}"),
                )
            })?),
        },
    };

    let snat_ports = match &raw.snat_ports {
        None => 40000..=59999,
        Some(v) => {
            parse_port_range(v.get_ref()).map_err(|m| src.error(v.span(), "snat_ports", m))?
        }
    };

    let allowed_sources = match &raw.allowed_sources {
        None => None,
        Some(list) => {
            let mut nets = Vec::with_capacity(list.len());
            for item in list {
                let s = item.get_ref();
                let net = s
                    .parse::<Ipv4Net>()
                    .or_else(|_| s.parse::<Ipv4Addr>().map(Ipv4Net::from))
                    .map_err(|_| {
                        src.error(
                            item.span(),
                            "allowed_sources",
                            format!("expected an IPv4 CIDR like \"10.0.0.0/8\"; found {s:?}"),
                        )
                    })?;
                nets.push(net.trunc());
            }
            Some(nets)
        }
    };

    let max_flows = match &raw.max_flows {
        None => 262_144,
        Some(v) => {
            let n = *v.get_ref();
            if !(1024..=16_777_216).contains(&n) {
                return Err(src.error(
                    v.span(),
                    "max_flows",
                    format!("expected a number from 1024 to 16777216; found {n}"),
                ));
            }
            n as u32
        }
    };

    let mss_clamp = match &raw.mss_clamp {
        None => None,
        Some(v) => {
            let n = *v.get_ref();
            if !(536..=9000).contains(&n) {
                return Err(src.error(
                    v.span(),
                    "mss_clamp",
                    format!("expected an MSS from 536 to 9000; found {n}"),
                ));
            }
            Some(n as u16)
        }
    };

    let health = opt_socket_addr(src, &raw.health, "health")?;
    let metrics = opt_socket_addr(src, &raw.metrics, "metrics")?;
    let control_socket = match &raw.control_socket {
        None => PathBuf::from("/run/forwarder/control.sock"),
        Some(v) if v.get_ref().starts_with('/') => PathBuf::from(v.get_ref()),
        Some(v) => return Err(src.error(v.span(), "control_socket", "expected an absolute path")),
    };
    let dns_refresh = match &raw.dns_refresh {
        None => Duration::from_secs(30),
        Some(v) => parse_duration(src, v, "dns_refresh")?,
    };

    let mut timeouts = Timeouts::default();
    if let Some(t) = &raw.timeouts {
        if let Some(v) = &t.syn {
            timeouts.syn = parse_duration(src, v, "timeouts.syn")?;
        }
        if let Some(v) = &t.established {
            timeouts.established = parse_duration(src, v, "timeouts.established")?;
        }
        if let Some(v) = &t.closing {
            timeouts.closing = parse_duration(src, v, "timeouts.closing")?;
        }
    }

    let rules = validate_rules(src, &raw.rule, &snat_ports)?;

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
        dns_refresh,
        timeouts,
        rules,
    })
}

fn validate_rules(
    src: &Source,
    raw: &[RawRule],
    snat_ports: &RangeInclusive<u16>,
) -> Result<Vec<RuleSpec>, ConfigError> {
    if raw.len() > forwarder_common::MAX_RULES as usize {
        return Err(src.error(
            0..0,
            "rule",
            format!("at most {} rules", forwarder_common::MAX_RULES),
        ));
    }
    let mut names = HashSet::new();
    let mut ports = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for r in raw {
        let name = r.name.get_ref();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(src.error(
                r.name.span(),
                "rule.name",
                format!("expected letters, digits, '-', '_' or '.'; found {name:?}"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(src.error(
                r.name.span(),
                "rule.name",
                format!("duplicate rule name {name:?}"),
            ));
        }
        let listen = *r.listen.get_ref();
        if !(1..=65535).contains(&listen) {
            return Err(src.error(
                r.listen.span(),
                "rule.listen",
                format!("expected a port from 1 to 65535; found {listen}"),
            ));
        }
        let listen = listen as u16;
        if !ports.insert(listen) {
            return Err(src.error(
                r.listen.span(),
                "rule.listen",
                format!("port {listen} is already the listen port of another rule"),
            ));
        }
        if snat_ports.contains(&listen) {
            return Err(src.error(
                r.listen.span(),
                "rule.listen",
                format!(
                    "port {listen} lies inside snat_ports {}-{}",
                    snat_ports.start(),
                    snat_ports.end()
                ),
            ));
        }
        let target = parse_target(r.target.get_ref())
            .map_err(|m| src.error(r.target.span(), "rule.target", m))?;
        rules.push(RuleSpec { name: name.clone(), listen, target });
    }
    Ok(rules)
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() < 16 && !s.contains(['/', ' ', '\t', '\0']) && s != "." && s != ".."
}

/// "HOST:PORT" with HOST a hostname or an IPv4 address.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let expected = || format!("expected HOST:PORT with a hostname or IPv4 address; found {s:?}");
    let (host, port) = s.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(expected)?;
    if let Ok(addr) = host.parse::<Ipv4Addr>() {
        return Ok(Target { host: host.to_string(), port, addr: Some(addr) });
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
    };
    if host.is_empty()
        || host.len() > 253
        || !host.split('.').all(valid_label)
        || host.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return Err(expected());
    }
    Ok(Target { host: host.to_string(), port, addr: None })
}

/// "40000-59999" (inclusive) or a single port.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let expected = || format!("expected a port range like \"40000-59999\"; found {s:?}");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| expected())?;
    let b: u16 = b.trim().parse().map_err(|_| expected())?;
    if a == 0 || b < a {
        return Err(expected());
    }
    Ok(a..=b)
}

fn parse_duration(src: &Source, v: &Spanned<String>, field: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(v.get_ref()).map_err(|_| {
        src.error(
            v.span(),
            field,
            format!("expected a duration like \"30s\", \"2m\" or \"2h\"; found {:?}", v.get_ref()),
        )
    })?;
    if d.is_zero() {
        return Err(src.error(v.span(), field, "expected a duration above zero"));
    }
    Ok(d)
}

fn opt_socket_addr(
    src: &Source,
    v: &Option<Spanned<String>>,
    field: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    match v {
        None => Ok(None),
        Some(v) => v.get_ref().parse().map(Some).map_err(|_| {
            src.error(
                v.span(),
                field,
                format!("expected IP:PORT like \"127.0.0.1:9464\"; found {:?}", v.get_ref()),
            )
        }),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse(Path::new("f.toml"), text).unwrap_err()
    }

    const BASE: &str = "interface = \"eth0\"\n";

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
        assert_eq!(s.timeouts.established, Duration::from_secs(7200));
        assert_eq!(s.rules[0].target.addr, None);
        assert_eq!(s.rules[1].target.addr, Some(Ipv4Addr::new(10, 20, 0, 12)));
    }

    #[test]
    fn errors_name_line_column_and_field() {
        let e = err(&format!("{BASE}snat_ports = \"5-1\"\n"));
        assert_eq!((e.line, e.field.as_str()), (2, "snat_ports"));
        let e = err(&format!("{BASE}bogus = 1\n"));
        assert_eq!((e.line, e.field.as_str()), (2, "bogus"), "{e}");
        let e = err(&format!("{BASE}max_flows = \"many\"\n"));
        assert_eq!((e.line, e.field.as_str()), (2, "max_flows"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nname = \"a\"\nlisten = 9092\ntarget = \"1.2.3.4:1\"\n[[rule]]\nname = \"b\"\nlisten = 9092\ntarget = \"1.2.3.4:1\"\n"
        ));
        assert_eq!((e.line, e.column, e.field.as_str()), (8, 10, "rule.listen"), "{e}");
        let e =
            err(&format!("{BASE}[[rule]]\nname = \"a\"\nlisten = 45000\ntarget = \"1.2.3.4:1\"\n"));
        assert!(e.message.contains("inside snat_ports"), "{e}");
        let e = err(&format!("{BASE}allowed_sources = [\"10.0.0.0/33\"]\n"));
        assert_eq!((e.line, e.field.as_str()), (2, "allowed_sources"));
        assert!(e.to_string().starts_with("f.toml:2:"), "{e}");
    }
}
