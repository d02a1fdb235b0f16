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
//!   would see that socket's packets (socket on 0.0.0.0 / [::], `listen_ip = "any"`, the same
//!   address, or `listen_ip = "auto"` and a non-loopback address): the load balancer's probe
//!   would be forwarded to a broker instead of answered. Nor may those ports lie inside
//!   `snat_ports`.
//! - Durations are 1s to 30d; `allowed_sources = []` (nothing allowed) is refused: omit the
//!   key to allow every source.

mod spans;

pub use spans::ConfigError;

use crate::netif;
use forwarder_common::{MAX_ALLOWED_SOURCES, MAX_LISTEN_ADDRS};
use ipnet::Ipv4Net;
use spans::{Section, Source, Span};
use std::{
    collections::HashSet,
    ffi::CString,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::RangeInclusive,
    path::{Component, Path, PathBuf},
    time::Duration,
};
use toml_edit::{ImDocument, Item, TableLike, Value};

pub const DEFAULT_PATH: &str = "/etc/forwarder/forwarder.toml";
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/forwarder";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/forwarder/control.sock";

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
    /// Where maps and links are pinned (bpffs); what survives a daemon restart.
    pub pin_path: PathBuf,
    pub dns_refresh: Duration,
    pub timeouts: Timeouts,
    pub rules: Vec<RuleSpec>,
}

// ---- reading the file -----------------------------------------------------------------------

const TOP_KEYS: &[&str] = &[
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
];
const TIMEOUT_KEYS: &[&str] = &["syn", "established", "closing"];
const RULE_KEYS: &[&str] = &["name", "listen", "target"];

const EXPECT_INTERFACE: &str =
    "expected an interface name like \"eth0\" or a list of them like [\"eth0\", \"eth1\"]";
const EXPECT_IFNAME: &str =
    "expected an interface name of 1 to 15 characters without '/', ':' or spaces";
const EXPECT_MODE: &str = "expected one of \"auto\", \"xdp\", \"xdp-generic\", \"tc\"";
const EXPECT_LISTEN_IP: &str = "expected \"auto\", \"any\" or a unicast IPv4 address";
const EXPECT_SNAT_IP: &str = "expected \"auto\" or a unicast IPv4 address";
const EXPECT_SOURCES: &str = "expected a list of IPv4 CIDRs like [\"10.0.0.0/8\"]";
const EXPECT_CIDR: &str = "expected an IPv4 CIDR like \"10.0.0.0/8\" or an IPv4 address";
const EXPECT_PORT_RANGE: &str =
    "expected a port range LOW-HIGH like \"40000-59999\", with 1024 <= LOW <= HIGH <= 65535";
const EXPECT_MAX_FLOWS: &str = "expected an integer from 1024 to 16777216";
const EXPECT_MSS: &str = "expected an integer from 536 to 9000 (omit mss_clamp to not clamp)";
const EXPECT_SOCKET: &str =
    "expected IP:PORT like \"0.0.0.0:8080\" or \"127.0.0.1:9464\", with a port from 1 to 65535";
const EXPECT_CONTROL: &str =
    "expected an absolute path like \"/run/forwarder/control.sock\" of at most 107 bytes";
const EXPECT_PIN: &str =
    "expected an absolute directory inside a bpffs mount, like \"/sys/fs/bpf/forwarder\"";
const EXPECT_DURATION: &str = "expected a duration like \"30s\", \"2m\" or \"2h\", from 1s to 30d";
const EXPECT_RULES: &str = "expected [[rule]] tables, each with name, listen and target";
const EXPECT_RULE_NAME: &str =
    "expected a name of letters, digits, '-', '_' or '.', at most 64 characters";
const EXPECT_PORT: &str = "expected a port from 1 to 65535";
const EXPECT_TARGET: &str = "expected HOST:PORT with a hostname or IPv4 address";

const MIN_DURATION: Duration = Duration::from_secs(1);
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Rule names go into every table the CLI prints, the metrics' labels and the state file;
/// a bound keeps one mistyped or pasted name from breaking all of those.
pub const MAX_RULE_NAME: usize = 64;
/// sockaddr_un.sun_path holds 108 bytes, one of them the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// A duration from [`MIN_DURATION`] to [`MAX_DURATION`], written like "30s".
fn duration(section: &Section, key: &str) -> Result<Option<Duration>, ConfigError> {
    let Some((s, span)) = section.string(key, EXPECT_DURATION)? else { return Ok(None) };
    match humantime::parse_duration(s) {
        Ok(d) if (MIN_DURATION..=MAX_DURATION).contains(&d) => Ok(Some(d)),
        _ => Err(section.bad(key, span, EXPECT_DURATION)),
    }
}

/// IP:PORT with a port other than 0.
fn socket_addr(section: &Section, key: &str) -> Result<Option<(SocketAddr, Span)>, ConfigError> {
    let Some((s, span)) = section.string(key, EXPECT_SOCKET)? else { return Ok(None) };
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(Some((a, span))),
        _ => Err(section.bad(key, span, EXPECT_SOCKET)),
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

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        field: "-".into(),
        message: format!("cannot read the file: {e}"),
    })
}

/// Parses and validates configuration text that came from `path`. Pure: the host is not
/// consulted (an interface that does not exist here passes; see [`check_host`]).
pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    let src = Source { file: &file, text };
    let doc = ImDocument::parse(text).map_err(|e| src.syntax_error(&e))?;
    let root = Section { src: &src, table: doc.as_table(), prefix: "", at: 0 };
    validate(path, &root)
}

/// Checks settings parsed from `text` (with [`parse`]) against this host, in the caller's
/// network namespace: every interface exists; no rule's target is one of this host's own
/// addresses (the rule would hand this VM's own services, SSH say, to every client of the
/// load balancer); with `listen_ip = "auto"`, the interfaces have no more IPv4 addresses
/// than the data path's table holds. The error points at the place in `text`.
pub fn check_host(settings: &Settings, text: &str) -> Result<(), ConfigError> {
    let file = settings.path.display().to_string();
    let src = Source { file: &file, text };
    let doc = ImDocument::parse(text).ok();
    let root = doc.as_ref().map(|d| Section { src: &src, table: d.as_table(), prefix: "", at: 0 });

    if let Some(missing) = settings.interfaces.iter().find(|i| !interface_exists(i)) {
        return Err(src.error(
            interface_span(root.as_ref(), missing),
            "interface",
            format!(
                "expected an existing network interface; there is no {missing:?} on this host \
                 (see `ip link`)"
            ),
        ));
    }

    let host = netif::host_ipv4_addrs().map_err(|e| {
        src.error(
            0..0,
            "interface",
            format!("cannot list this host's addresses to check the file: {e}"),
        )
    })?;

    for (i, rule) in settings.rules.iter().enumerate() {
        let Some(addr) = rule.target.addr else { continue };
        if let Some(iface) = netif::interface_of(&host, addr) {
            let span = root
                .as_ref()
                .and_then(|r| rule_sections(r).ok())
                .and_then(|rules| rules.get(i).and_then(|r| r.get("target")).map(|(s, _)| s))
                .unwrap_or(0..0);
            return Err(src.error(span, "rule.target", own_address_message(addr, iface)));
        }
    }

    if settings.listen_ip == ListenIp::Auto {
        let mut listen: Vec<Ipv4Addr> = host
            .iter()
            .filter(|(iface, _)| settings.interfaces.contains(iface))
            .map(|(_, a)| *a)
            .collect();
        listen.sort_unstable();
        listen.dedup();
        if listen.len() > MAX_LISTEN_ADDRS as usize {
            let message = format!(
                "expected at most {MAX_LISTEN_ADDRS} listen addresses (the size of the data \
                 path's table); listen_ip = \"auto\" takes every IPv4 address of {}, {} of \
                 them: set listen_ip to the one address the load balancer sends to, or \"any\"",
                settings.interfaces.join(", "),
                listen.len()
            );
            // At listen_ip when it is written, else at the interfaces whose addresses count.
            return Err(match root.as_ref().and_then(|r| r.get("listen_ip")) {
                Some((span, _)) => src.error(span, "listen_ip", message),
                None => src.error(
                    interface_span(root.as_ref(), &settings.interfaces[0]),
                    "interface",
                    message,
                ),
            });
        }
    }
    Ok(())
}

/// Why a target of `addr` (an address of `iface` here) is refused; shared with the CLI's
/// `rule add` and the plan's check of resolved hostnames.
pub fn own_address_message(addr: Ipv4Addr, iface: &str) -> String {
    format!(
        "expected the address of another host; {addr} is this host's own (on {iface}), so \
         the rule would expose this VM's own services to every client of the load balancer"
    )
}

/// Where the interface `name` is written, for errors about it.
fn interface_span(root: Option<&Section>, name: &str) -> Span {
    root.and_then(|r| interface_entries(r).ok())
        .and_then(|entries| entries.into_iter().find(|(n, _)| *n == name).map(|(_, s)| s))
        .unwrap_or(0..0)
}

/// Whether a network interface of that name exists in this thread's network namespace.
/// Asked through if_nametoindex, which answers for the caller's namespace, unlike
/// /sys/class/net (that shows the namespace sysfs was mounted in); /sys/class/net is the
/// fallback when the question cannot be asked (no socket allowed, say).
fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else { return false };
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(c.as_ptr()) } != 0 {
        return true;
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENODEV) {
        return false;
    }
    Path::new("/sys/class/net").join(name).exists()
}

/// The interface names as written, with their places.
fn interface_entries<'a>(root: &Section<'a>) -> Result<Vec<(&'a str, Span)>, ConfigError> {
    let Some((span, item)) = root.get("interface") else {
        return Err(root.missing(
            "interface",
            "expected interface = \"eth0\" (or a list like [\"eth0\", \"eth1\"]) before the \
             first [table]",
        ));
    };
    match item.as_value() {
        Some(Value::String(s)) => Ok(vec![(s.value().as_str(), span)]),
        Some(Value::Array(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for v in list.iter() {
                let vspan = v.span().unwrap_or_else(|| span.clone());
                match v.as_str() {
                    Some(s) => out.push((s, vspan)),
                    None => {
                        let found = root.src.found(&Item::Value(v.clone()), &vspan);
                        return Err(root.error(
                            vspan,
                            "interface",
                            format!("{EXPECT_IFNAME}; found {found}"),
                        ));
                    }
                }
            }
            if out.is_empty() {
                return Err(root.error(
                    span,
                    "interface",
                    "expected at least one interface name; found an empty list",
                ));
            }
            Ok(out)
        }
        _ => Err(root.wrong_type("interface", span, item, EXPECT_INTERFACE)),
    }
}

fn validate(path: &Path, root: &Section) -> Result<Settings, ConfigError> {
    root.deny_unknown(TOP_KEYS)?;

    let mut interfaces: Vec<String> = Vec::new();
    for (name, span) in interface_entries(root)? {
        if !valid_ifname(name) {
            return Err(root.bad("interface", span, EXPECT_IFNAME));
        }
        if interfaces.iter().any(|i| i == name) {
            return Err(root.error(
                span,
                "interface",
                format!("expected each interface once; {name:?} is listed twice"),
            ));
        }
        interfaces.push(name.to_string());
    }

    let mode = match root.string("mode", EXPECT_MODE)? {
        None => Mode::Auto,
        Some(("auto", _)) => Mode::Auto,
        Some(("xdp", _)) => Mode::Xdp,
        Some(("xdp-generic", _)) => Mode::XdpGeneric,
        Some(("tc", _)) => Mode::Tc,
        Some((_, span)) => return Err(root.bad("mode", span, EXPECT_MODE)),
    };

    let listen_ip = match root.string("listen_ip", EXPECT_LISTEN_IP)? {
        None | Some(("auto", _)) => ListenIp::Auto,
        Some(("any", _)) => ListenIp::Any,
        Some((s, span)) => match s.parse::<Ipv4Addr>() {
            Ok(a) if unicast(a) => ListenIp::Addr(a),
            _ => return Err(root.bad("listen_ip", span, EXPECT_LISTEN_IP)),
        },
    };

    let snat_ip = match root.string("snat_ip", EXPECT_SNAT_IP)? {
        None | Some(("auto", _)) => SnatIp::Auto,
        Some((s, span)) => match s.parse::<Ipv4Addr>() {
            Ok(a) if unicast(a) => SnatIp::Addr(a),
            _ => return Err(root.bad("snat_ip", span, EXPECT_SNAT_IP)),
        },
    };

    let snat_ports = match root.string("snat_ports", EXPECT_PORT_RANGE)? {
        None => 40000..=59999,
        Some((s, span)) => parse_port_range(s).map_err(|m| root.error(span, "snat_ports", m))?,
    };

    let allowed_sources = match root.get("allowed_sources") {
        None => None,
        Some((span, item)) => {
            let Some(Value::Array(list)) = item.as_value() else {
                return Err(root.wrong_type("allowed_sources", span, item, EXPECT_SOURCES));
            };
            if list.is_empty() {
                return Err(root.error(
                    span,
                    "allowed_sources",
                    format!(
                        "{EXPECT_SOURCES}, at least one (omit allowed_sources to allow every \
                         source); found an empty list"
                    ),
                ));
            }
            let mut nets: Vec<Ipv4Net> = Vec::with_capacity(list.len());
            for v in list.iter() {
                let vspan = v.span().unwrap_or_else(|| span.clone());
                let Some(s) = v.as_str() else {
                    let found = root.src.found(&Item::Value(v.clone()), &vspan);
                    return Err(root.error(
                        vspan,
                        "allowed_sources",
                        format!("{EXPECT_CIDR}; found {found}"),
                    ));
                };
                let net = s
                    .parse::<Ipv4Net>()
                    .or_else(|_| s.parse::<Ipv4Addr>().map(Ipv4Net::from))
                    .map_err(|_| root.bad("allowed_sources", vspan.clone(), EXPECT_CIDR))?;
                // One map entry per distinct prefix: the data path's table has a fixed size,
                // and a list it cannot hold must fail here, not half-way through filling it.
                let net = net.trunc();
                if nets.contains(&net) {
                    continue;
                }
                if nets.len() == MAX_ALLOWED_SOURCES as usize {
                    return Err(root.error(
                        vspan,
                        "allowed_sources",
                        format!(
                            "expected at most {MAX_ALLOWED_SOURCES} distinct prefixes (the size \
                             of the data path's table); this is one more"
                        ),
                    ));
                }
                nets.push(net);
            }
            Some(nets)
        }
    };

    let max_flows = root
        .integer("max_flows", 1024..=16_777_216, EXPECT_MAX_FLOWS)?
        .map_or(262_144, |(n, _)| n as u32);
    let mss_clamp = root.integer("mss_clamp", 536..=9000, EXPECT_MSS)?.map(|(n, _)| n as u16);

    let health = socket_addr(root, "health")?;
    let metrics = socket_addr(root, "metrics")?;
    for (key, sock) in [("health", &health), ("metrics", &metrics)] {
        if let Some((a, span)) = sock {
            if snat_ports.contains(&a.port()) {
                return Err(root.error(
                    span.clone(),
                    key,
                    format!(
                        "expected a port outside snat_ports {}-{} (reserved for forwarded \
                         connections); found {a}",
                        snat_ports.start(),
                        snat_ports.end()
                    ),
                ));
            }
        }
    }
    if let (Some((h, _)), Some((m, span))) = (&health, &metrics) {
        if h.port() == m.port()
            && (h.ip() == m.ip() || h.ip().is_unspecified() || m.ip().is_unspecified())
        {
            return Err(root.error(
                span.clone(),
                "metrics",
                format!("expected a port other than the health port ({h}); found {m}"),
            ));
        }
    }

    let control_socket = match root.string("control_socket", EXPECT_CONTROL)? {
        None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        Some((s, _))
            if s.starts_with('/')
                && !s.ends_with('/')
                && s.len() <= MAX_SOCKET_PATH
                && !s.contains('\0') =>
        {
            PathBuf::from(s)
        }
        Some((_, span)) => return Err(root.bad("control_socket", span, EXPECT_CONTROL)),
    };

    let pin_path = match root.string("pin_path", EXPECT_PIN)? {
        None => PathBuf::from(DEFAULT_PIN_PATH),
        Some((s, span)) => {
            // A directory inside a bpffs mount (the daemon checks the mount when it starts;
            // tests use a bpffs of their own, so the place is not fixed).
            let p = Path::new(s);
            let parts: Vec<Component> = p.components().collect();
            match parts.first() {
                Some(Component::RootDir)
                    if parts.len() >= 3
                        && parts[1..].iter().all(|c| matches!(c, Component::Normal(_)))
                        && !s.contains('\0')
                        && !s.split('/').any(|c| c == "." || c == "..") =>
                {
                    PathBuf::from(s)
                }
                _ => return Err(root.bad("pin_path", span, EXPECT_PIN)),
            }
        }
    };

    let dns_refresh = duration(root, "dns_refresh")?.unwrap_or(Duration::from_secs(30));

    let mut timeouts = Timeouts::default();
    if let Some((span, item)) = root.get("timeouts") {
        let Some(table) = item.as_table_like() else {
            return Err(root.wrong_type(
                "timeouts",
                span,
                item,
                "expected a [timeouts] table with syn, established and closing",
            ));
        };
        let t = Section { src: root.src, table, prefix: "timeouts.", at: span.start };
        t.deny_unknown(TIMEOUT_KEYS)?;
        if let Some(d) = duration(&t, "syn")? {
            timeouts.syn = d;
        }
        if let Some(d) = duration(&t, "established")? {
            timeouts.established = d;
        }
        if let Some(d) = duration(&t, "closing")? {
            timeouts.closing = d;
        }
    }

    let health = health.map(|(a, _)| a);
    let metrics = metrics.map(|(a, _)| a);
    let sockets = [("health", health), ("metrics", metrics)];
    let rules = validate_rules(root, &snat_ports, listen_ip, &sockets)?;

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
    })
}

/// The `[[rule]]` tables (or `rule = [{ .. }, ..]`), each as a section.
fn rule_sections<'a>(root: &Section<'a>) -> Result<Vec<Section<'a>>, ConfigError> {
    let section =
        |table: &'a dyn TableLike, at: usize| Section { src: root.src, table, prefix: "rule.", at };
    match root.get("rule") {
        None => Ok(Vec::new()),
        Some((span, Item::ArrayOfTables(list))) => {
            Ok(list.iter().map(|t| section(t, t.span().map_or(span.start, |s| s.start))).collect())
        }
        Some((span, Item::Value(Value::Array(list)))) => {
            let mut out = Vec::with_capacity(list.len());
            for v in list.iter() {
                let vspan = v.span().unwrap_or_else(|| span.clone());
                match v.as_inline_table() {
                    Some(t) => out.push(section(t, vspan.start)),
                    None => {
                        return Err(root.wrong_type(
                            "rule",
                            vspan,
                            &Item::Value(v.clone()),
                            EXPECT_RULES,
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some((span, item)) => Err(root.wrong_type("rule", span, item, EXPECT_RULES)),
    }
}

fn validate_rules(
    root: &Section,
    snat_ports: &RangeInclusive<u16>,
    listen_ip: ListenIp,
    sockets: &[(&str, Option<SocketAddr>)],
) -> Result<Vec<RuleSpec>, ConfigError> {
    let sections = rule_sections(root)?;
    if let Some(extra) = sections.get(forwarder_common::MAX_RULES as usize) {
        return Err(root.src.error(
            extra.at..extra.at,
            "rule",
            format!("expected at most {} rules", forwarder_common::MAX_RULES),
        ));
    }
    let mut names = HashSet::new();
    let mut ports = HashSet::new();
    let mut rules = Vec::with_capacity(sections.len());
    for r in &sections {
        r.deny_unknown(RULE_KEYS)?;

        let (name, span) = r
            .string("name", EXPECT_RULE_NAME)?
            .ok_or_else(|| r.missing("name", "every [[rule]] needs name, listen and target"))?;
        if !valid_rule_name(name) {
            let len = name.chars().count();
            return Err(if len > MAX_RULE_NAME {
                r.error(span, "name", format!("{EXPECT_RULE_NAME}; found one of {len}"))
            } else {
                r.bad("name", span, EXPECT_RULE_NAME)
            });
        }
        if !names.insert(name) {
            return Err(r.error(
                span,
                "name",
                format!("expected a unique name; duplicate rule name {name:?}"),
            ));
        }

        let (listen, span) = r
            .integer("listen", 1..=65535, EXPECT_PORT)?
            .ok_or_else(|| r.missing("listen", "every [[rule]] needs name, listen and target"))?;
        let listen = listen as u16;
        if !ports.insert(listen) {
            return Err(r.error(
                span,
                "listen",
                format!(
                    "expected a port no other rule listens on; port {listen} is already the \
                     listen port of another rule"
                ),
            ));
        }
        if snat_ports.contains(&listen) {
            return Err(r.error(
                span,
                "listen",
                format!(
                    "expected a port outside snat_ports; port {listen} lies inside snat_ports \
                     {}-{}",
                    snat_ports.start(),
                    snat_ports.end()
                ),
            ));
        }
        for (what, sock) in sockets {
            if let Some(sock) = sock.filter(|s| s.port() == listen && sees_socket(listen_ip, *s)) {
                return Err(r.error(
                    span,
                    "listen",
                    format!(
                        "expected a port other than the {what} port; port {listen} is also the \
                         {what} port ({sock}), whose connections would be forwarded instead \
                         of answered"
                    ),
                ));
            }
        }

        let (target, span) = r
            .string("target", EXPECT_TARGET)?
            .ok_or_else(|| r.missing("target", "every [[rule]] needs name, listen and target"))?;
        let target = parse_target(target).map_err(|m| r.error(span, "target", m))?;
        rules.push(RuleSpec { name: name.to_string(), listen, target });
    }
    Ok(rules)
}

/// Whether the data path sees packets for `sock`: it takes every TCP packet to a rule's
/// listen port on a listen address before any local socket does.
fn sees_socket(listen_ip: ListenIp, sock: SocketAddr) -> bool {
    match sock.ip() {
        // [::] is dual-stack: it takes IPv4 connections too. The data path is IPv4 only.
        IpAddr::V6(a) => a.is_unspecified(),
        IpAddr::V4(a) => {
            a.is_unspecified()
                || match listen_ip {
                    ListenIp::Any => true,
                    ListenIp::Addr(l) => l == a,
                    // The interface's addresses: any but loopback could be one of them.
                    ListenIp::Auto => !a.is_loopback(),
                }
        }
    }
}

/// 1 to [`MAX_RULE_NAME`] of `[A-Za-z0-9._-]`.
pub fn valid_rule_name(name: &str) -> bool {
    (1..=MAX_RULE_NAME).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && !s.contains(|c: char| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        && s != "."
        && s != ".."
}

/// "HOST:PORT" with HOST a hostname or a unicast, non-loopback IPv4 address.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let fail =
        |why: &str| format!("{EXPECT_TARGET} and a port from 1 to 65535; found {s:?} ({why})");
    if s.starts_with('[') || s.matches(':').count() > 1 {
        return Err(fail("IPv6 is not supported"));
    }
    let Some((host, port)) = s.rsplit_once(':') else { return Err(fail("no port")) };
    if host.is_empty() {
        return Err(fail("empty host"));
    }
    let port = match port.parse::<u16>() {
        Ok(0) => return Err(fail("port 0")),
        Ok(p) => p,
        Err(_) if port.is_empty() => return Err(fail("no port")),
        Err(_) => return Err(fail("not a port")),
    };
    if let Ok(addr) = host.parse::<Ipv4Addr>() {
        if !unicast(addr) || addr.is_loopback() {
            return Err(fail("not a unicast address of another host"));
        }
        return Ok(Target { host: host.to_string(), port, addr: Some(addr) });
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253
        || !host.split('.').all(valid_label)
        || host.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return Err(fail("not a hostname or IPv4 address"));
    }
    Ok(Target { host: host.to_string(), port, addr: None })
}

/// "LOW-HIGH" (inclusive), 1024 <= LOW <= HIGH <= 65535. One port is "40000-40000".
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let fail = |why: &str| format!("{EXPECT_PORT_RANGE}; found {s:?} ({why})");
    let Some((a, b)) = s.split_once('-') else { return Err(fail("no '-'")) };
    let number = |p: &str| p.trim().parse::<u32>().ok();
    let (Some(a), Some(b)) = (number(a), number(b)) else {
        return Err(fail("LOW and HIGH must be numbers"));
    };
    if a > 65535 || b > 65535 {
        return Err(fail("ports end at 65535"));
    }
    if a < 1024 {
        return Err(fail("ports below 1024 belong to the host's services"));
    }
    if b < a {
        return Err(fail("LOW is above HIGH"));
    }
    Ok(a as u16..=b as u16)
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

    fn at(e: &ConfigError) -> (usize, usize, &str) {
        (e.line, e.column, e.field.as_str())
    }

    const RULE: &str = "[[rule]]\nname = \"a\"\nlisten = 9092\ntarget = \"10.0.0.9:1\"\n";

    #[test]
    fn types_and_unknown_keys_in_every_table() {
        let e = err(&format!("{BASE}[timeouts]\nsyn = \"1s\"\nidle = \"1s\"\n"));
        assert_eq!(at(&e), (4, 1, "timeouts.idle"), "{e}");
        let e = err(&format!("{BASE}{RULE}weight = 1\n"));
        assert_eq!(at(&e), (6, 1, "rule.weight"), "{e}");
        assert!(e.message.contains("expected one of name, listen, target"), "{e}");
        let e = err("interface = 5\n");
        assert_eq!(at(&e), (1, 13, "interface"), "{e}");
        assert!(e.message.contains("found an integer 5"), "{e}");
        let e = err(&format!("{BASE}timeouts = 5\n"));
        assert_eq!(at(&e), (2, 12, "timeouts"), "{e}");
        let e = err(&format!("{BASE}[rule]\nname = \"a\"\n"));
        assert_eq!(at(&e), (2, 1, "rule"), "{e}");
        let e = err(&format!("{BASE}[timeouts]\nsyn = 60\n"));
        assert_eq!(at(&e), (3, 7, "timeouts.syn"), "{e}");
        // A dotted key and inline tables are the same tables written differently.
        let e = err(&format!("{BASE}timeouts.syn = \"0s\"\n"));
        assert_eq!(at(&e), (2, 16, "timeouts.syn"), "{e}");
        let e = err(&format!(
            "{BASE}rule = [{{ name = \"a\", listen = 9092, target = \"10.0.0.9:1\" }},\n  {{ name = \"b\", listen = 9092, target = \"10.0.0.9:1\" }}]\n"
        ));
        assert_eq!(at(&e), (3, 26, "rule.listen"), "{e}");
    }

    #[test]
    fn missing_keys() {
        let e = err("mode = \"tc\"\n");
        assert_eq!(at(&e), (1, 1, "interface"), "{e}");
        let e = err(&format!("{BASE}\n[[rule]]\nname = \"a\"\nlisten = 9092\n"));
        assert_eq!(at(&e), (3, 1, "rule.target"), "{e}");
        assert!(e.message.starts_with("missing key"), "{e}");
    }

    #[test]
    fn list_items_are_pointed_at() {
        let e = err("interface = [\"eth0\", \"eth 1\"]\n");
        assert_eq!(at(&e), (1, 22, "interface"), "{e}");
        let e = err(&format!("{BASE}allowed_sources = [\n  \"10.0.0.0/8\",\n  \"10.0.0/8\",\n]\n"));
        assert_eq!(at(&e), (4, 3, "allowed_sources"), "{e}");
    }

    #[test]
    fn port_ranges_and_targets() {
        assert_eq!(parse_port_range("40000-40000"), Ok(40000..=40000));
        assert_eq!(parse_port_range(" 1024 - 65535 "), Ok(1024..=65535));
        for bad in ["40000", "59999-40000", "40000-70000", "80-1023", "a-b", "-1", ""] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_target("broker1.corp.example:9092").unwrap().addr, None);
        assert_eq!(parse_target("10.0.0.9:1").unwrap().addr, Some(Ipv4Addr::new(10, 0, 0, 9)));
        for (bad, why) in [
            ("10.0.0.9", "no port"),
            ("10.0.0.9:", "no port"),
            ("10.0.0.9:0", "port 0"),
            ("10.0.0.9:65536", "not a port"),
            ("[fd00::1]:80", "IPv6"),
            ("fd00::1:80", "IPv6"),
            (":80", "empty host"),
            ("-a.example:80", "not a hostname"),
            ("10.0.0.256:80", "not a hostname"),
            ("0.0.0.0:80", "unicast"),
            ("127.0.0.1:80", "unicast"),
            ("224.0.0.1:80", "unicast"),
        ] {
            let m = parse_target(bad).unwrap_err();
            assert!(m.contains(why), "{bad}: {m}");
        }
    }

    #[test]
    fn a_rule_may_not_take_the_health_or_metrics_port() {
        let cfg = |listen_ip: &str, health: &str, listen: u16| {
            parse(
                Path::new("f.toml"),
                &format!(
                    "{BASE}listen_ip = \"{listen_ip}\"\nhealth = \"{health}\"\n[[rule]]\nname = \"a\"\nlisten = {listen}\ntarget = \"10.0.0.9:1\"\n"
                ),
            )
        };
        let e = cfg("auto", "0.0.0.0:8080", 8080).unwrap_err();
        assert_eq!(at(&e), (6, 10, "rule.listen"), "{e}");
        assert!(e.message.contains("health port"), "{e}");
        assert!(cfg("auto", "[::]:8080", 8080).is_err());
        assert!(cfg("any", "127.0.0.1:8080", 8080).is_err());
        assert!(cfg("10.0.0.4", "10.0.0.4:8080", 8080).is_err());
        assert!(cfg("auto", "10.0.0.4:8080", 8080).is_err());
        // The data path never sees these sockets' packets.
        assert!(cfg("auto", "127.0.0.1:8080", 8080).is_ok());
        assert!(cfg("10.0.0.4", "10.0.0.5:8080", 8080).is_ok());
        assert!(cfg("any", "[fd00::1]:8080", 8080).is_ok());
        assert!(cfg("any", "0.0.0.0:8080", 8081).is_ok());
    }

    #[test]
    fn rule_names_are_bounded_and_allowed_sources_fit_the_table() {
        let rule = |name: &str| {
            format!("{BASE}[[rule]]\nname = \"{name}\"\nlisten = 9092\ntarget = \"10.0.0.9:1\"\n")
        };
        parse(Path::new("f.toml"), &rule(&"a".repeat(MAX_RULE_NAME))).unwrap();
        let e = err(&rule(&"a".repeat(MAX_RULE_NAME + 1)));
        assert_eq!(at(&e), (3, 8, "rule.name"), "{e}");
        assert!(e.message.contains("found one of 65"), "{e}");

        let list = |n: u32| {
            let items: Vec<String> =
                (0..n).map(|i| format!("\"10.9.{}.{}\"", i / 256, i % 256)).collect();
            format!("{BASE}allowed_sources = [{}]\n", items.join(", "))
        };
        parse(Path::new("f.toml"), &list(MAX_ALLOWED_SOURCES)).unwrap();
        let e = err(&list(MAX_ALLOWED_SOURCES + 1));
        assert_eq!((e.line, e.field.as_str()), (2, "allowed_sources"), "{e}");
        // The same prefix twice is one entry of the table.
        let twice = format!("{BASE}allowed_sources = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n");
        let s = parse(Path::new("f.toml"), &twice).unwrap();
        assert_eq!(s.allowed_sources.unwrap().len(), 1);
    }

    #[test]
    fn too_many_rules() {
        let mut text = BASE.to_string();
        for i in 0..=forwarder_common::MAX_RULES {
            text += &format!(
                "[[rule]]\nname = \"r{i}\"\nlisten = {}\ntarget = \"10.0.0.9:1\"\n",
                1024 + i
            );
        }
        let e = err(&text);
        assert_eq!(at(&e), (2 + 4 * forwarder_common::MAX_RULES as usize, 1, "rule"), "{e}");
    }

    #[test]
    fn the_host_check_points_at_the_missing_interface() {
        let text = "interface = [\"lo\", \"fwt-nosuch0\"]\n";
        let s = parse(Path::new("f.toml"), text).unwrap();
        let e = check_host(&s, text).unwrap_err();
        assert_eq!(at(&e), (1, 20, "interface"), "{e}");
        assert!(e.message.contains("\"fwt-nosuch0\""), "{e}");
        let text = "interface = \"lo\"\n";
        check_host(&parse(Path::new("f.toml"), text).unwrap(), text).unwrap();
    }
}

/// Where a running forwarder keeps its control socket and pins, read from the config file
/// as leniently as possible: the CLI must reach the daemon (to reload, unload, look) even
/// while the file has an error in some other place.
#[derive(Debug, Clone)]
pub struct Locations {
    pub control_socket: PathBuf,
    pub pin_path: PathBuf,
}

impl Locations {
    pub fn of(settings: &Settings) -> Self {
        Self {
            control_socket: settings.control_socket.clone(),
            pin_path: settings.pin_path.clone(),
        }
    }

    /// The two paths from the file; a path that cannot be read falls back to the default.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let doc = text.parse::<toml_edit::DocumentMut>().ok();
        let get = |key: &str, default: &str| {
            let value = match &doc {
                Some(d) => d.get(key).and_then(|v| v.as_str()).map(str::to_string),
                // A file TOML cannot read at all: take the key's line as written.
                None => text.lines().find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
                }),
            };
            value
                .filter(|s| s.starts_with('/'))
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        Self {
            control_socket: get("control_socket", DEFAULT_CONTROL_SOCKET),
            pin_path: get("pin_path", DEFAULT_PIN_PATH),
        }
    }
}
