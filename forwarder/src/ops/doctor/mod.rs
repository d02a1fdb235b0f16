//! `forwarder doctor`: checks the host for the known causes of a dead forwarding path.
//!
//! Users come from `ip_fwd.sh` (one iptables DNAT + MASQUERADE per broker port) and hit the
//! same few failures: the load balancer probe blocked (NSG or local firewall), leftover NAT
//! rules, another process on a port, SNAT ports taken by local sockets, an unreachable broker,
//! a path MTU below 1500 without MSS clamping, and the program running in a slower mode than
//! native XDP. Each check yields one-line findings and, for a failure, the fix.
//!
//! Parsers take text and are pure, so they are unit tested on captured output. The functions
//! that read the host only read through the calling thread's network namespace
//! (`/proc/thread-self/net`, ioctls on a fresh socket, child processes): a doctor run on a
//! thread that entered a namespace inspects that namespace, which is how the tests stage
//! each failure. sysfs is only a fallback, because it shows the namespace it was mounted in.

use crate::{
    config::{Mode, RuleSpec, Settings},
    control::Status,
};
use ipnet::Ipv4Net;
use serde::Serialize;
use std::{
    collections::{HashMap, HashSet},
    fmt, fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs},
    ops::RangeInclusive,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

/// The load balancer probes every 5 s by default; 30 s without one means it cannot reach us.
pub const PROBE_MAX_AGE_S: u64 = 30;
/// Where Azure's load balancer probes come from (service tag AzureLoadBalancer).
pub const AZURE_PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// Below this path MTU, full-size segments from a peer that assumed 1500 get dropped or
/// fragmented unless the SYN's MSS is clamped.
const STANDARD_MTU: u32 = 1500;
/// IPv4 + TCP headers without options: MSS = MTU - 40.
const TCP_IP_HEADERS: u32 = 40;
/// Native XDP without multi-buffer support needs a frame to fit one page with headroom;
/// mlx5 (the Azure accelerated networking VF) allows about this much, the others a bit more.
const NATIVE_XDP_MAX_MTU: u32 = 3498;
/// Drivers with native XDP whose limit above applies.
const PAGE_LIMITED_DRIVERS: &[&str] =
    &["hv_netvsc", "mlx4_en", "mlx4_core", "mlx5_core", "mana", "virtio_net", "veth"];
/// Drivers with native XDP support (ndo_bpf) that a NAT VM may run on.
const NATIVE_XDP_DRIVERS: &[&str] = &[
    "hv_netvsc",
    "mlx4_en",
    "mlx4_core",
    "mlx5_core",
    "mana",
    "virtio_net",
    "veth",
    "tun",
    "ena",
    "gve",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "iavf",
    "ice",
    "igb",
    "igc",
    "bnxt_en",
    "nfp",
    "qede",
    "sfc",
    "xen-netfront",
];
/// Name resolution gets at least this long whatever the connect timeout: DNS towards
/// on-prem servers over a VPN is slower than a TCP handshake to the same place.
const MIN_DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// How deep jumps between user chains are followed (real rulesets nest 2-3 levels).
const MAX_CHAIN_DEPTH: usize = 16;
const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
/// At most this many examples in a one-line message.
const EXAMPLES: usize = 3;

/// One result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub ok: bool,
    pub message: String,
    /// What to do about a failure; may span lines (one command per line).
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self { check, ok: true, message: message.into(), fix: None }
    }

    fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { check, ok: false, message: message.into(), fix: Some(fix.into()) }
    }
}

/// What the doctor looks at besides the host itself.
pub struct Input<'a> {
    pub settings: &'a Settings,
    /// The running daemon's report; `None` when it does not answer (not running).
    pub status: Option<&'a Status>,
    /// How long each TCP connect to a target may take (name resolution gets at least 5 s).
    pub netns_probe_timeout: Duration,
}

/// Reading the host failed; the checks turn these into findings.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("running {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("{cmd} failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{what} of {iface}: {source}")]
    Ioctl {
        what: &'static str,
        iface: String,
        #[source]
        source: io::Error,
    },
}

/// Runs every check. Checks that need the daemon's report are skipped when it is `None`.
pub fn run(input: &Input) -> Vec<Finding> {
    let settings = input.settings;
    let host = Host::read();
    let blocks = firewall_blocks(settings, &host.tables);
    let mut out = vec![check_daemon(settings, input.status)];
    if let Some(status) = input.status {
        out.push(check_probe(settings, status, &blocks));
    }
    out.push(check_firewall(&host, &blocks));
    out.push(check_port_clash(settings, input.status, &host));
    out.push(check_snat_ports(settings, &host));
    let targets = probe_targets(&settings.rules, input.netns_probe_timeout);
    out.extend(targets.iter().map(|t| t.finding.clone()));
    if let Some(status) = input.status {
        out.extend(check_xdp_mode(settings, status));
    }
    out.push(check_mtu(settings, &targets));
    out.push(check_stray_nat(settings, &host));
    out
}

pub fn all_ok(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.ok)
}

/// Human text: `ok   check: message`, or `FAIL check: message` with the fix below it.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let tag = if f.ok { "ok  " } else { "FAIL" };
        out.push_str(&format!("{tag} {}: {}\n", f.check, f.message));
        if let Some(fix) = &f.fix {
            let mut lines = fix.lines();
            if let Some(first) = lines.next() {
                out.push_str(&format!("     fix: {first}\n"));
            }
            for line in lines {
                out.push_str(&format!("          {line}\n"));
            }
        }
    }
    out
}

// ---- reading the host ----------------------------------------------------------------------

/// What several checks share, read once.
struct Host {
    /// iptables and nft tables, with the tables iptables-nft manages listed only once.
    tables: Vec<FwTable>,
    /// Which firewall tools answered, for messages.
    tools: Vec<&'static str>,
    firewall_errors: Vec<DoctorError>,
    sockets: Result<Vec<TcpSocket>, DoctorError>,
    reserved_ports: Result<String, DoctorError>,
}

impl Host {
    fn read() -> Self {
        let mut tables = Vec::new();
        let mut tools = Vec::new();
        let mut firewall_errors = Vec::new();
        let mut managed = Vec::new();
        match command("iptables-save", &[]) {
            Ok(Some(text)) => {
                tools.push("iptables");
                managed = xtables_managed(&text);
                tables.extend(parse_iptables_save(&text));
            }
            Ok(None) => {}
            Err(e) => firewall_errors.push(e),
        }
        match command("nft", &["-a", "list", "ruleset"]) {
            Ok(Some(text)) => {
                tools.push("nft");
                // iptables-nft's tables also show in nft: keep the iptables view, whose
                // delete commands are the ones that match how the rules were added.
                tables.extend(
                    parse_nft_ruleset(&text)
                        .into_iter()
                        .filter(|t| !(t.family == "ip" && managed.contains(&t.name))),
                );
            }
            Ok(None) => {}
            Err(e) => firewall_errors.push(e),
        }
        let reserved_ports = fs::read_to_string(RESERVED_PORTS)
            .map_err(|source| DoctorError::Read { path: RESERVED_PORTS.into(), source });
        Host { tables, tools, firewall_errors, sockets: read_tcp_sockets(), reserved_ports }
    }
}

/// Runs a command and returns its stdout; `Ok(None)` when it is not installed (a host
/// without nft has no nft rules, which is not a failure).
fn command(program: &str, args: &[&str]) -> Result<Option<String>, DoctorError> {
    let cmd = || format!("{program} {}", args.join(" ")).trim().to_string();
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DoctorError::Spawn { cmd: cmd(), source }),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(DoctorError::Command { cmd: cmd(), stderr });
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// TCP sockets of the calling thread's namespace. `/proc/net` would follow the process's
/// main thread instead, which may sit in another namespace.
fn read_tcp_sockets() -> Result<Vec<TcpSocket>, DoctorError> {
    let mut out = Vec::new();
    for path in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        match fs::read_to_string(path) {
            Ok(text) => out.extend(parse_proc_net_tcp(&text)),
            // No tcp6 when IPv6 is disabled.
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.ends_with('6') => {}
            Err(source) => return Err(DoctorError::Read { path: path.into(), source }),
        }
    }
    Ok(out)
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    pid: u32,
    comm: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.comm)
    }
}

/// Which process holds each of `inodes`, from the `socket:[N]` links in /proc/*/fd.
/// Processes that exit or deny access meanwhile are skipped.
fn socket_owners(inodes: &HashSet<u64>) -> HashMap<u64, Owner> {
    let mut out = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = fs::read_dir("/proc") else { return out };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Some(inode) = fs::read_link(fd.path()).ok().and_then(|l| socket_inode(&l)) else {
                continue;
            };
            if inodes.contains(&inode) {
                let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                out.insert(inode, Owner { pid, comm: comm.trim().to_string() });
            }
        }
    }
    out
}

fn socket_inode(link: &std::path::Path) -> Option<u64> {
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// An AF_INET datagram socket for interface ioctls: they answer for the socket's network
/// namespace, which is the calling thread's.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq_for(iface: &str) -> io::Result<libc::ifreq> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    // SAFETY: ifreq is plain old data, for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

/// The MTU of `iface` in the calling thread's namespace.
fn iface_mtu(iface: &str) -> Result<u32, DoctorError> {
    let err = |source| DoctorError::Ioctl { what: "MTU", iface: iface.into(), source };
    let sock = ioctl_socket().map_err(err)?;
    let mut req = ifreq_for(iface).map_err(err)?;
    // SAFETY: req names the interface; SIOCGIFMTU only writes ifru_mtu inside it.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) };
    if rc < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: the kernel filled ifru_mtu, an int.
    Ok(unsafe { req.ifr_ifru.ifru_mtu }.max(0) as u32)
}

/// `struct ethtool_drvinfo` from linux/ethtool.h; the kernel fills all of it, doctor reads
/// only the driver name.
#[repr(C)]
#[allow(dead_code)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// The driver of `iface` (`hv_netvsc`, `mlx5_core`, ...), from ethtool in the calling
/// thread's namespace, else from the sysfs `device/driver` link.
fn iface_driver(iface: &str) -> Option<String> {
    match ethtool_driver(iface) {
        Ok(d) if !d.is_empty() => Some(d),
        // ENODEV: not in this namespace; sysfs could show a namesake from another one.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => None,
        _ => sysfs_driver(iface),
    }
}

fn ethtool_driver(iface: &str) -> io::Result<String> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(iface)?;
    // SAFETY: all-zero is a valid ethtool_drvinfo (integers and byte arrays).
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: ifru_data points at a live ethtool_drvinfo, which ETHTOOL_GDRVINFO fills.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

fn sysfs_driver(iface: &str) -> Option<String> {
    let link = fs::read_link(format!("/sys/class/net/{iface}/device/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

// ---- check 1: daemon -----------------------------------------------------------------------

fn check_daemon(settings: &Settings, status: Option<&Status>) -> Finding {
    const CHECK: &str = "daemon";
    let Some(s) = status else {
        return Finding::fail(
            CHECK,
            format!(
                "the forwarder daemon is not running (no answer on {})",
                settings.control_socket.display()
            ),
            "systemctl start forwarder",
        );
    };
    let running = format!("running (pid {}, version {})", s.pid, s.version);
    if s.drained {
        return Finding::fail(
            CHECK,
            format!("{running} but drained: the health endpoint fails so the load balancer sends nothing"),
            "forwarder undrain",
        );
    }
    if !s.healthy {
        let why = s.unhealthy_reason.as_deref().unwrap_or("no reason given");
        return Finding::fail(
            CHECK,
            format!("{running} but unhealthy: {why}"),
            "see `forwarder status` and `journalctl -u forwarder`",
        );
    }
    Finding::ok(CHECK, format!("{running}, healthy"))
}

// ---- check 2: probe ------------------------------------------------------------------------

fn check_probe(settings: &Settings, status: &Status, blocks: &FirewallView) -> Finding {
    const CHECK: &str = "probe";
    let health = status.health.clone().or_else(|| settings.health.map(|h| h.to_string()));
    let Some(health) = health else {
        return Finding::ok(CHECK, "no health endpoint configured: the probe is not checked");
    };
    if let Some(p) = status.last_probe.as_ref().filter(|p| p.seconds_ago <= PROBE_MAX_AGE_S) {
        return Finding::ok(
            CHECK,
            format!("load balancer probe from {} {} s ago on {health}", p.from, p.seconds_ago),
        );
    }
    let last = match &status.last_probe {
        Some(p) => format!("last one {} s ago from {}", p.seconds_ago, p.from),
        None => "never".to_string(),
    };
    let port = health.rsplit(':').next().unwrap_or("?").to_string();
    let mut message = format!("no load balancer probe seen on {health} ({last})");
    let mut fix = format!(
        "allow TCP {port} from the AzureLoadBalancer service tag ({AZURE_PROBE_SOURCE}) in the \
         NSGs of the NIC and the subnet and in the local firewall, and point the LB health \
         probe at port {port}"
    );
    let health_port = port.parse::<u16>().ok();
    for b in blocks.blocks.iter().filter(|b| Some(b.port) == health_port) {
        message.push_str(&format!("; the local firewall drops it: {}", b.by));
        fix.push_str(&format!("\n{}", b.fix));
    }
    Finding::fail(CHECK, message, fix)
}

// ---- check 3: firewall ---------------------------------------------------------------------

/// One port the INPUT path drops, with the rule (or policy) that does it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    port: u16,
    /// What the port is for: "health" or "rule NAME".
    role: String,
    by: String,
    fix: String,
}

#[derive(Debug, Default)]
struct FirewallView {
    /// Ports checked, with their role.
    ports: Vec<(u16, String)>,
    blocks: Vec<Block>,
}

/// The ports that must get through INPUT: the health port from the load balancer's address,
/// and each rule's listen port from anywhere.
fn firewall_blocks(settings: &Settings, tables: &[FwTable]) -> FirewallView {
    let mut probes = Vec::new();
    if let Some(h) = settings.health {
        probes.push((h.port(), Some(AZURE_PROBE_SOURCE), "health".to_string()));
    }
    for r in &settings.rules {
        probes.push((r.listen, None, format!("rule {}", r.name)));
    }
    let mut view = FirewallView::default();
    for (port, source, role) in probes {
        let packet = Packet { port, source, ifaces: &settings.interfaces };
        for table in tables {
            if let Some((by, fix)) = input_block(table, &packet) {
                view.blocks.push(Block { port, role: role.clone(), by, fix });
            }
        }
        view.ports.push((port, role));
    }
    view
}

fn check_firewall(host: &Host, view: &FirewallView) -> Finding {
    const CHECK: &str = "firewall";
    if !view.blocks.is_empty() {
        let message = group_blocks(&view.blocks).join("; ");
        return Finding::fail(CHECK, message, unique_lines(view.blocks.iter().map(|b| &b.fix)));
    }
    if !host.firewall_errors.is_empty() {
        let errors = host.firewall_errors.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        return Finding::fail(
            CHECK,
            format!("cannot read the firewall rules: {}", errors.join("; ")),
            "run forwarder doctor as root",
        );
    }
    if host.tools.is_empty() {
        return Finding::ok(CHECK, "neither iptables nor nft is installed: no local firewall");
    }
    let ports = view.ports.iter().map(|(p, r)| format!("{p} ({r})")).collect::<Vec<_>>();
    Finding::ok(
        CHECK,
        format!("{} let tcp {} through INPUT", host.tools.join(" and "), ports.join(", ")),
    )
}

/// One clause per rule or policy: a policy drop usually hits every port at once.
fn group_blocks(blocks: &[Block]) -> Vec<String> {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for b in blocks {
        let port = format!("{} ({})", b.port, b.role);
        match groups.iter_mut().find(|(by, _)| *by == b.by) {
            Some((_, ports)) => ports.push(port),
            None => groups.push((&b.by, vec![port])),
        }
    }
    groups
        .into_iter()
        .map(|(by, ports)| format!("INPUT drops tcp {} by {by}", ports.join(", ")))
        .collect()
}

fn unique_lines<'a>(lines: impl Iterator<Item = &'a String>) -> String {
    let mut seen = HashSet::new();
    lines.filter(|l| seen.insert(l.as_str())).cloned().collect::<Vec<_>>().join("\n")
}

// ---- firewall model, shared by iptables and nft ----------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Iptables,
    Nft,
}

/// A match on one field: any of `items`, or none of them when negated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond<T> {
    negated: bool,
    items: Vec<T>,
}

impl<T> Cond<T> {
    fn holds(&self, f: impl Fn(&T) -> bool) -> bool {
        self.items.iter().any(f) != self.negated
    }

    /// True when the match certainly covers something `f` accepts (a negated match is
    /// never taken as naming a value).
    fn names(&self, f: impl Fn(&T) -> bool) -> bool {
        !self.negated && self.items.iter().any(f)
    }
}

/// The matches of a rule that doctor understands; anything else lands in `unknown`, which
/// makes the rule's effect on a packet undecidable (the rule is then skipped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Matches {
    protocols: Option<Cond<String>>,
    dports: Option<Cond<RangeInclusive<u16>>>,
    in_ifaces: Option<Cond<String>>,
    out_ifaces: Option<Cond<String>>,
    sources: Option<Cond<Ipv4Net>>,
    /// Conntrack states, lower case.
    states: Option<Cond<String>>,
    unknown: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Accept,
    Drop,
    Reject,
    Jump(String),
    Goto(String),
    Return,
    Dnat(String),
    Masquerade,
    /// Non-terminal (LOG, MARK, counter-only) or a target doctor does not judge.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FwRule {
    matches: Matches,
    verdict: Verdict,
    /// As listed, for messages.
    text: String,
    /// The command that deletes exactly this rule.
    delete: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct FwChain {
    name: String,
    /// The netfilter hook of a base chain ("input", "prerouting", ...); `None` for a chain
    /// that is only jumped to.
    hook: Option<String>,
    /// nft chain type ("filter", "nat"); iptables: the table name.
    kind: String,
    policy_drop: bool,
    rules: Vec<FwRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FwTable {
    tool: Tool,
    family: String,
    name: String,
    chains: Vec<FwChain>,
}

impl FwTable {
    fn chain(&self, name: &str) -> Option<&FwChain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// How to describe a rule of this table in a message.
    fn describe(&self, chain: &str, rule: &FwRule) -> String {
        match self.tool {
            Tool::Iptables => format!("iptables -t {} `{}`", self.name, rule.text),
            Tool::Nft => {
                format!("nft {} {} chain {chain} `{}`", self.family, self.name, rule.text)
            }
        }
    }
}

/// A new TCP connection arriving for this host.
struct Packet<'a> {
    port: u16,
    /// `None`: any client, so a rule that depends on the source is undecidable.
    source: Option<Ipv4Addr>,
    ifaces: &'a [String],
}

impl Matches {
    /// True when the rule certainly matches `p` (false when it does not or may not).
    fn certainly_match(&self, p: &Packet) -> bool {
        self.unknown.is_empty()
            && self.protocols.as_ref().is_none_or(|c| c.holds(|s| is_tcp(s)))
            && self.dports.as_ref().is_none_or(|c| c.holds(|r| r.contains(&p.port)))
            && self
                .in_ifaces
                .as_ref()
                .is_none_or(|c| c.holds(|pat| p.ifaces.iter().any(|i| iface_matches(pat, i))))
            // INPUT has no output interface.
            && self.out_ifaces.is_none()
            && self.sources.as_ref().is_none_or(|c| match p.source {
                Some(ip) => c.holds(|n| n.contains(&ip)),
                None => false,
            })
            && self.states.as_ref().is_none_or(|c| c.holds(|s| s == "new"))
    }
}

fn is_tcp(proto: &str) -> bool {
    matches!(proto, "tcp" | "6" | "all")
}

/// iptables writes wildcards as `eth+`, nft as `eth*`.
fn iface_matches(pattern: &str, iface: &str) -> bool {
    match pattern.strip_suffix('+').or_else(|| pattern.strip_suffix('*')) {
        Some(prefix) => iface.starts_with(prefix),
        None => pattern == iface,
    }
}

enum Outcome {
    Accepted,
    Blocked {
        by: String,
        fix: String,
    },
    /// Fell off the end of the chain (or RETURN): the caller continues.
    Fallthrough,
}

/// Whether `table`'s INPUT filtering drops `p`: the rule or policy that does, and the fix.
fn input_block(table: &FwTable, p: &Packet) -> Option<(String, String)> {
    if !matches!(table.family.as_str(), "ip" | "inet") {
        return None;
    }
    let base =
        table.chains.iter().filter(|c| c.hook.as_deref() == Some("input") && c.kind == "filter");
    // Every base chain on the hook must accept: a drop in any of them is final.
    for chain in base {
        match walk(table, chain, p, 0) {
            Outcome::Blocked { by, fix } => return Some((by, fix)),
            Outcome::Fallthrough if chain.policy_drop => {
                return Some(policy_block(table, chain, p.port));
            }
            _ => {}
        }
    }
    None
}

fn walk(table: &FwTable, chain: &FwChain, p: &Packet, depth: usize) -> Outcome {
    if depth > MAX_CHAIN_DEPTH {
        return Outcome::Fallthrough;
    }
    for rule in chain.rules.iter().filter(|r| r.matches.certainly_match(p)) {
        let sub = |name: &str| table.chain(name).map(|c| walk(table, c, p, depth + 1));
        match &rule.verdict {
            Verdict::Accept => return Outcome::Accepted,
            Verdict::Drop | Verdict::Reject => {
                return Outcome::Blocked {
                    by: table.describe(&chain.name, rule),
                    fix: rule.delete.clone(),
                }
            }
            Verdict::Return => return Outcome::Fallthrough,
            Verdict::Jump(name) => match sub(name) {
                Some(Outcome::Fallthrough) | None => {}
                Some(decided) => return decided,
            },
            Verdict::Goto(name) => return sub(name).unwrap_or(Outcome::Fallthrough),
            Verdict::Dnat(_) | Verdict::Masquerade | Verdict::Other(_) => {}
        }
    }
    Outcome::Fallthrough
}

fn policy_block(table: &FwTable, chain: &FwChain, port: u16) -> (String, String) {
    match table.tool {
        Tool::Iptables => (
            format!("iptables -t {} chain {} policy DROP", table.name, chain.name),
            format!("iptables -I {} -p tcp --dport {port} -j ACCEPT", chain.name),
        ),
        Tool::Nft => (
            format!("nft {} {} chain {} policy drop", table.family, table.name, chain.name),
            format!(
                "nft insert rule {} {} {} tcp dport {port} accept",
                table.family, table.name, chain.name
            ),
        ),
    }
}

// ---- iptables-save parsing -----------------------------------------------------------------

/// The tables that iptables-nft manages, which `nft list ruleset` shows a second time.
/// Empty for the legacy backend, whose rules nft does not see.
fn xtables_managed(iptables_save: &str) -> Vec<String> {
    let nft_backend =
        iptables_save.lines().any(|l| l.starts_with("# Generated by") && l.contains("nf_tables"));
    if !nft_backend {
        return Vec::new();
    }
    iptables_save
        .lines()
        .filter_map(|l| l.strip_prefix('*'))
        .map(|t| t.trim().to_string())
        .collect()
}

/// Parses `iptables-save` output (all tables).
fn parse_iptables_save(text: &str) -> Vec<FwTable> {
    let mut tables: Vec<FwTable> = Vec::new();
    // Per table: chain name -> index, and the user chains (jump targets). Indexed because
    // kube-proxy hosts have thousands of chains.
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut user_chains: HashSet<String> = HashSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('*') {
            tables.push(FwTable {
                tool: Tool::Iptables,
                family: "ip".into(),
                name: name.trim().into(),
                chains: Vec::new(),
            });
            index.clear();
            user_chains.clear();
            continue;
        }
        let Some(table) = tables.last_mut() else { continue };
        if let Some(decl) = line.strip_prefix(':') {
            let chain = iptables_chain(&table.name, decl);
            if chain.hook.is_none() {
                user_chains.insert(chain.name.clone());
            }
            index.insert(chain.name.clone(), table.chains.len());
            table.chains.push(chain);
        } else if line.starts_with("-A ") {
            let Some((chain, rule)) = parse_iptables_rule(&table.name, line, &user_chains) else {
                continue;
            };
            if let Some(&i) = index.get(&chain) {
                table.chains[i].rules.push(rule);
            }
        }
    }
    tables
}

/// `:INPUT DROP [0:0]` (built-in, with its policy) or `:name - [0:0]` (user chain).
fn iptables_chain(table: &str, decl: &str) -> FwChain {
    let mut parts = decl.split_whitespace();
    let name = parts.next().unwrap_or_default().to_string();
    let policy = parts.next().unwrap_or("-");
    let builtin = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    let hook = (policy != "-" && builtin.contains(&name.as_str())).then(|| name.to_lowercase());
    FwChain { name, hook, kind: table.into(), policy_drop: policy == "DROP", rules: Vec::new() }
}

/// Splits an iptables-save line into words; double-quoted words (comments) lose their
/// quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => cur.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Match modules whose options doctor reads itself (or which only label the rule).
const KNOWN_MODULES: &[&str] = &["tcp", "udp", "multiport", "comment", "state", "conntrack"];

/// One `-A CHAIN ...` line: the chain and the rule.
fn parse_iptables_rule(
    table: &str,
    line: &str,
    user_chains: &HashSet<String>,
) -> Option<(String, FwRule)> {
    let words = shell_words(line);
    let mut m = Matches::default();
    let mut chain = None;
    let mut verdict = Verdict::Other("no target".into());
    let mut negated = false;
    let mut i = 0;
    while i < words.len() {
        let word = words[i].as_str();
        let value = words.get(i + 1).cloned().unwrap_or_default();
        let mut used = 2;
        match word {
            "!" => {
                negated = true;
                i += 1;
                continue;
            }
            "-A" => chain = Some(value),
            "-p" | "--protocol" => {
                m.protocols = Some(Cond { negated, items: vec![value.to_lowercase()] })
            }
            "-i" | "--in-interface" => m.in_ifaces = Some(Cond { negated, items: vec![value] }),
            "-o" | "--out-interface" => m.out_ifaces = Some(Cond { negated, items: vec![value] }),
            "-s" | "--source" => match parse_nets(value.split(',')) {
                Some(nets) => m.sources = Some(Cond { negated, items: nets }),
                None => m.unknown.push(format!("-s {value}")),
            },
            // In INPUT the destination is one of this host's addresses, which is where the
            // probe and the clients connect: a rule naming one applies.
            "-d" | "--destination" => {}
            "-m" | "--match" if KNOWN_MODULES.contains(&value.as_str()) => {}
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                match parse_ports(value.split(','), ':') {
                    Some(ports) => m.dports = Some(Cond { negated, items: ports }),
                    None => m.unknown.push(format!("{word} {value}")),
                }
            }
            "--comment" => {}
            "--state" | "--ctstate" => {
                let items = value.split(',').map(|s| s.to_lowercase()).collect();
                m.states = Some(Cond { negated, items })
            }
            "-j" | "--jump" => {
                verdict = iptables_target(&value, &words[i + 2..], user_chains);
                break;
            }
            "-g" | "--goto" => {
                verdict = Verdict::Goto(value);
                break;
            }
            other => {
                m.unknown.push(other.to_string());
                used = 1;
            }
        }
        negated = false;
        i += used;
    }
    let rest = line.strip_prefix("-A ")?;
    let delete = if table == "filter" {
        format!("iptables -D {rest}")
    } else {
        format!("iptables -t {table} -D {rest}")
    };
    Some((chain?, FwRule { matches: m, verdict, text: line.to_string(), delete }))
}

fn iptables_target(target: &str, options: &[String], user_chains: &HashSet<String>) -> Verdict {
    match target {
        "ACCEPT" => Verdict::Accept,
        "DROP" => Verdict::Drop,
        "REJECT" => Verdict::Reject,
        "RETURN" => Verdict::Return,
        "MASQUERADE" => Verdict::Masquerade,
        "DNAT" => {
            let to = options
                .iter()
                .position(|o| o == "--to-destination" || o == "--to")
                .and_then(|p| options.get(p + 1))
                .cloned()
                .unwrap_or_default();
            Verdict::Dnat(to)
        }
        t if user_chains.contains(t) => Verdict::Jump(t.to_string()),
        t => Verdict::Other(t.to_string()),
    }
}

fn parse_nets<'a>(items: impl Iterator<Item = &'a str>) -> Option<Vec<Ipv4Net>> {
    items
        .map(|s| s.parse::<Ipv4Net>().ok().or_else(|| s.parse::<Ipv4Addr>().ok().map(Into::into)))
        .collect()
}

/// Ports and ranges (`9092`, `9093:9095` in iptables, `9093-9095` in nft).
fn parse_ports<'a>(
    items: impl Iterator<Item = &'a str>,
    range_sep: char,
) -> Option<Vec<RangeInclusive<u16>>> {
    items
        .map(|s| {
            let (a, b) = s.split_once(range_sep).unwrap_or((s, s));
            Some(a.trim().parse().ok()?..=b.trim().parse().ok()?)
        })
        .collect()
}

// ---- nft list ruleset parsing --------------------------------------------------------------

/// Splits an nft line into tokens: words, quoted strings (without quotes), and `{`, `}`,
/// `,`, `;` on their own. A `#` outside quotes starts the comment, which is returned apart
/// (`-a` puts `handle N` there).
fn nft_tokens(line: &str) -> (Vec<String>, String) {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut chars = line.char_indices();
    let flush = |cur: &mut String, tokens: &mut Vec<String>| {
        if !cur.is_empty() {
            tokens.push(std::mem::take(cur));
        }
    };
    while let Some((pos, c)) = chars.next() {
        match c {
            '"' => {
                for (_, q) in chars.by_ref() {
                    if q == '"' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '#' => {
                flush(&mut cur, &mut tokens);
                return (tokens, line[pos + 1..].trim().to_string());
            }
            '{' | '}' | ',' | ';' => {
                flush(&mut cur, &mut tokens);
                tokens.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut cur, &mut tokens),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut tokens);
    (tokens, String::new())
}

/// A match value at `i`: an optional `==`/`!=`, then one item, a comma list or a `{ … }`
/// set. Returns the negation, the items and the index after the value.
fn nft_value(tokens: &[String], mut i: usize) -> (bool, Vec<String>, usize) {
    let mut negated = false;
    match tokens.get(i).map(String::as_str) {
        Some("!=") => {
            negated = true;
            i += 1;
        }
        Some("==") => i += 1,
        _ => {}
    }
    let mut items = Vec::new();
    if tokens.get(i).map(String::as_str) == Some("{") {
        i += 1;
        while let Some(t) = tokens.get(i) {
            i += 1;
            match t.as_str() {
                "}" => break,
                "," => {}
                t => items.push(t.to_string()),
            }
        }
        return (negated, items, i);
    }
    while let Some(t) = tokens.get(i) {
        items.push(t.clone());
        i += 1;
        if tokens.get(i).map(String::as_str) != Some(",") {
            break;
        }
        i += 1;
    }
    (negated, items, i)
}

const NFT_LOG_OPTIONS: &[&str] =
    &["prefix", "level", "flags", "group", "snaplen", "queue-threshold"];

/// The matches and verdict of one nft rule line.
fn parse_nft_rule(tokens: &[String]) -> (Matches, Verdict) {
    let mut m = Matches::default();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let next = tokens.get(i + 1).map(String::as_str).unwrap_or("");
        let value_at = |at| nft_value(tokens, at);
        match (t, next) {
            ("meta", "l4proto") | ("ip", "protocol") => {
                let (negated, items, end) = value_at(i + 2);
                m.protocols = Some(Cond { negated, items });
                i = end;
            }
            ("tcp" | "th" | "udp" | "sctp", "dport") => {
                if t != "th" {
                    m.protocols = Some(Cond { negated: false, items: vec![t.to_string()] });
                }
                let (negated, items, end) = value_at(i + 2);
                match parse_ports(items.iter().map(String::as_str), '-') {
                    Some(ports) => m.dports = Some(Cond { negated, items: ports }),
                    None => m.unknown.push(format!("{t} dport {}", items.join(","))),
                }
                i = end;
            }
            ("ip", "saddr") => {
                let (negated, items, end) = value_at(i + 2);
                match parse_nets(items.iter().map(String::as_str)) {
                    Some(nets) => m.sources = Some(Cond { negated, items: nets }),
                    None => m.unknown.push(format!("ip saddr {}", items.join(","))),
                }
                i = end;
            }
            // See `-d` in parse_iptables_rule.
            ("ip", "daddr") => i = value_at(i + 2).2,
            ("ct", "state") => {
                let (negated, items, end) = value_at(i + 2);
                m.states = Some(Cond { negated, items });
                i = end;
            }
            ("iifname" | "iif", _) | ("oifname" | "oif", _) => {
                let (negated, items, end) = value_at(i + 1);
                let cond = Some(Cond { negated, items });
                if t.starts_with('i') {
                    m.in_ifaces = cond;
                } else {
                    m.out_ifaces = cond;
                }
                i = end;
            }
            ("counter", _) => {
                i += 1;
                while matches!(tokens.get(i).map(String::as_str), Some("packets" | "bytes")) {
                    i += 2;
                }
            }
            ("comment", _) => i += 2,
            ("log", _) => {
                i += 1;
                while tokens.get(i).is_some_and(|o| NFT_LOG_OPTIONS.contains(&o.as_str())) {
                    i += 2;
                }
            }
            _ => match nft_verdict(&tokens[i..]) {
                Some(v) => return (m, v),
                None => {
                    m.unknown.push(t.to_string());
                    i += 1;
                }
            },
        }
    }
    (m, Verdict::Other("no verdict".into()))
}

fn nft_verdict(tokens: &[String]) -> Option<Verdict> {
    let arg = || tokens.get(1).cloned().unwrap_or_default();
    Some(match tokens.first()?.as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        "return" => Verdict::Return,
        "jump" => Verdict::Jump(arg()),
        "goto" => Verdict::Goto(arg()),
        "masquerade" => Verdict::Masquerade,
        "dnat" => {
            // `dnat to A:P` or `dnat ip to A:P`.
            let to = tokens.iter().position(|t| t == "to").and_then(|p| tokens.get(p + 1));
            Verdict::Dnat(to.cloned().unwrap_or_default())
        }
        v @ ("continue" | "snat" | "redirect" | "queue" | "notrack") => Verdict::Other(v.into()),
        _ => return None,
    })
}

/// Parses `nft -a list ruleset` output.
fn parse_nft_ruleset(text: &str) -> Vec<FwTable> {
    let mut tables: Vec<FwTable> = Vec::new();
    // Brace depth: 0 outside tables, 1 in a table, 2 in a chain.
    let mut depth = 0usize;
    // Inside a table-level block doctor ignores (set, map, flowtable, ...): skip until the
    // depth is back at 1.
    let mut skipping = false;
    for line in text.lines() {
        let (tokens, comment) = nft_tokens(line);
        let opens = tokens.iter().filter(|t| *t == "{").count();
        let closes = tokens.iter().filter(|t| *t == "}").count();
        let before = depth;
        depth = (depth + opens).saturating_sub(closes);
        if skipping {
            skipping = depth > 1;
            continue;
        }
        let first = tokens.first().map(String::as_str).unwrap_or("");
        match (before, first) {
            (0, "table") if tokens.len() >= 3 => tables.push(FwTable {
                tool: Tool::Nft,
                family: tokens[1].clone(),
                name: tokens[2].clone(),
                chains: Vec::new(),
            }),
            (1, "chain") if tokens.len() >= 2 => {
                if let Some(t) = tables.last_mut() {
                    t.chains.push(FwChain { name: tokens[1].clone(), ..Default::default() });
                }
            }
            (1, _) if depth > 1 => skipping = true,
            (2, "type") => {
                if let Some(c) = tables.last_mut().and_then(|t| t.chains.last_mut()) {
                    nft_chain_head(c, &tokens);
                }
            }
            (2, "policy") => {
                if let Some(c) = tables.last_mut().and_then(|t| t.chains.last_mut()) {
                    c.policy_drop = tokens.get(1).is_some_and(|p| p == "drop");
                }
            }
            (2, "}" | "comment" | "devices" | "") => {}
            (2, _) => {
                let Some(t) = tables.last_mut() else { continue };
                let (family, name) = (t.family.clone(), t.name.clone());
                let Some(c) = t.chains.last_mut() else { continue };
                c.rules.push(nft_rule(&family, &name, &c.name, line, &tokens, &comment));
            }
            _ => {}
        }
    }
    tables
}

/// `type filter hook input priority filter; policy drop;`
fn nft_chain_head(chain: &mut FwChain, tokens: &[String]) {
    let after = |key: &str| tokens.iter().position(|t| t == key).and_then(|p| tokens.get(p + 1));
    chain.kind = after("type").cloned().unwrap_or_default();
    chain.hook = after("hook").cloned();
    chain.policy_drop = after("policy").is_some_and(|p| p == "drop");
}

fn nft_rule(
    family: &str,
    table: &str,
    chain: &str,
    line: &str,
    tokens: &[String],
    comment: &str,
) -> FwRule {
    let (matches, verdict) = parse_nft_rule(tokens);
    let text = line.split(" # handle").next().unwrap_or(line).trim().to_string();
    let delete = match comment.strip_prefix("handle ").and_then(|h| h.trim().parse::<u64>().ok()) {
        Some(h) => format!("nft delete rule {family} {table} {chain} handle {h}"),
        None => format!("nft -a list chain {family} {table} {chain}  # then: nft delete rule {family} {table} {chain} handle N"),
    };
    FwRule { matches, verdict, text, delete }
}

// ---- check 4: port-clash -------------------------------------------------------------------

/// One line of /proc/net/tcp or tcp6.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TcpSocket {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    inode: u64,
}

const TCP_LISTEN: u8 = 0x0a;

fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0a => "LISTEN",
        0x0b => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Parses /proc/net/tcp or /proc/net/tcp6; lines that do not parse are skipped.
fn parse_proc_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines().skip(1).filter_map(parse_tcp_line).collect()
}

fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(TcpSocket {
        local: parse_hex_endpoint(f.get(1)?)?,
        remote: parse_hex_endpoint(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6). The kernel prints each 32-bit
/// word of the address as a host-order integer, so its native-endian bytes are the address.
fn parse_hex_endpoint(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word =
        |i: usize| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A listener on a port the forwarder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clash {
    port: u16,
    role: String,
    local: SocketAddr,
    owner: Option<Owner>,
}

fn check_port_clash(settings: &Settings, status: Option<&Status>, host: &Host) -> Finding {
    const CHECK: &str = "port-clash";
    let sockets = match &host.sockets {
        Ok(s) => s,
        Err(e) => return Finding::fail(CHECK, e.to_string(), "run forwarder doctor as root"),
    };
    let listeners: Vec<&TcpSocket> = sockets.iter().filter(|s| s.state == TCP_LISTEN).collect();
    let owners = socket_owners(&listeners.iter().map(|s| s.inode).collect());
    let clashes = find_clashes(settings, status, &listeners, &owners);
    if clashes.is_empty() {
        return Finding::ok(
            CHECK,
            format!("no other process listens on {}", needed_ports(settings)),
        );
    }
    let message = clashes
        .iter()
        .map(|c| {
            let who = c.owner.as_ref().map_or("an unknown process".into(), |o| o.to_string());
            format!("port {} ({}) is held by {who} listening on {}", c.port, c.role, c.local)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let fix = clashes.iter().map(clash_fix).collect::<Vec<_>>();
    Finding::fail(CHECK, message, unique_lines(fix.iter()))
}

fn needed_ports(settings: &Settings) -> String {
    let mut ports: Vec<String> =
        settings.health.iter().map(|h| format!("{} (health)", h.port())).collect();
    ports.extend(settings.rules.iter().map(|r| format!("{} (rule {})", r.listen, r.name)));
    if ports.is_empty() {
        "no port (no health endpoint and no rule)".into()
    } else {
        ports.join(", ")
    }
}

/// Listeners on the health port or a rule's listen port, except the daemon's own health
/// listener (recognised by its pid, or by its address when the owner is unknown).
fn find_clashes(
    settings: &Settings,
    status: Option<&Status>,
    listeners: &[&TcpSocket],
    owners: &HashMap<u64, Owner>,
) -> Vec<Clash> {
    let mut roles: Vec<(u16, String)> =
        settings.health.iter().map(|h| (h.port(), "health".to_string())).collect();
    roles.extend(settings.rules.iter().map(|r| (r.listen, format!("rule {}", r.name))));
    let daemon_health = status.and_then(|s| s.health.as_ref()?.parse::<SocketAddr>().ok());
    let mut out: Vec<Clash> = Vec::new();
    for s in listeners {
        let Some((port, role)) = roles.iter().find(|(p, _)| *p == s.local.port()) else { continue };
        let owner = owners.get(&s.inode).cloned();
        let is_health = settings.health.is_some_and(|h| h.port() == *port);
        let ours = match (&owner, status) {
            (Some(o), Some(st)) => o.pid == st.pid,
            (None, Some(_)) => daemon_health == Some(s.local),
            (_, None) => false,
        };
        if is_health && ours {
            continue;
        }
        // tcp and tcp6 listeners of one process on one port are one clash.
        let dup = out.iter().any(|c| c.port == *port && c.owner.is_some() && c.owner == owner);
        if !dup {
            out.push(Clash { port: *port, role: role.clone(), local: s.local, owner });
        }
    }
    out
}

fn clash_fix(c: &Clash) -> String {
    let stop = match &c.owner {
        Some(o) => format!("stop {} (`kill {}` or stop its service)", o.comm, o.pid),
        None => format!("find the process with `ss -ltnp 'sport = :{}'` and stop it", c.port),
    };
    if c.role == "health" {
        format!("{stop}, or move health to a free port (and the LB probe with it)")
    } else {
        format!("{stop}, or give {} another listen port (and its LB rule's backend port)", c.role)
    }
}

// ---- check 5: snat-ports -------------------------------------------------------------------

/// `net.ipv4.ip_local_reserved_ports`: a comma list of ports and `A-B` ranges.
fn parse_reserved_ports(text: &str) -> Vec<RangeInclusive<u16>> {
    let items = text.trim().split(',').map(str::trim).filter(|s| !s.is_empty());
    items
        .filter_map(|s| {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            Some(a.trim().parse().ok()?..=b.trim().parse().ok()?)
        })
        .collect()
}

/// The parts of `want` that no range in `have` covers.
fn uncovered(want: &RangeInclusive<u16>, have: &[RangeInclusive<u16>]) -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    let mut start = None;
    for port in want.clone() {
        let covered = have.iter().any(|r| r.contains(&port));
        match (covered, start) {
            (false, None) => start = Some(port),
            (true, Some(s)) => {
                out.push(s..=port - 1);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..=*want.end());
    }
    out
}

fn range_text(r: &RangeInclusive<u16>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

fn check_snat_ports(settings: &Settings, host: &Host) -> Finding {
    const CHECK: &str = "snat-ports";
    let range = &settings.snat_ports;
    let (reserved, sockets) = match (&host.reserved_ports, &host.sockets) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => {
            return Finding::fail(CHECK, e.to_string(), "run forwarder doctor as root")
        }
    };
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    let missing = uncovered(range, &parse_reserved_ports(reserved));
    if !missing.is_empty() {
        let (msg, fix) = unreserved(range, &missing, reserved.trim());
        problems.push(msg);
        fixes.push(fix);
    }
    let users: Vec<&TcpSocket> =
        sockets.iter().filter(|s| range.contains(&s.local.port())).collect();
    if !users.is_empty() {
        problems.push(sockets_in_range(range, &users));
        fixes.push(
            "restart or close the processes holding those ports once the range is reserved, \
             or move snat_ports to a range nothing uses"
                .to_string(),
        );
    }
    if problems.is_empty() {
        return Finding::ok(
            CHECK,
            format!("snat_ports {} are reserved and no local socket uses them", range_text(range)),
        );
    }
    Finding::fail(CHECK, problems.join("; "), fixes.join("\n"))
}

fn unreserved(
    range: &RangeInclusive<u16>,
    missing: &[RangeInclusive<u16>],
    current: &str,
) -> (String, String) {
    let missing_text = missing.iter().map(range_text).collect::<Vec<_>>().join(",");
    let value = if current.is_empty() {
        range_text(range)
    } else {
        format!("{current},{}", range_text(range))
    };
    (
        format!(
            "snat_ports {} are not all in net.ipv4.ip_local_reserved_ports (missing {missing_text}; \
             now {current:?}): local connections may take a port the forwarder hands out",
            range_text(range)
        ),
        format!(
            "sysctl -w net.ipv4.ip_local_reserved_ports={value}\n\
             echo 'net.ipv4.ip_local_reserved_ports = {value}' > /etc/sysctl.d/60-forwarder.conf\n\
             (the daemon reserves the range only while it runs; a socket opened before keeps its port)"
        ),
    )
}

fn sockets_in_range(range: &RangeInclusive<u16>, users: &[&TcpSocket]) -> String {
    let owners = socket_owners(&users.iter().map(|s| s.inode).filter(|i| *i != 0).collect());
    let examples = users
        .iter()
        .take(EXAMPLES)
        .map(|s| {
            let who = owners.get(&s.inode).map(|o| format!(", {o}")).unwrap_or_default();
            let remote =
                if s.state == TCP_LISTEN { String::new() } else { format!(" -> {}", s.remote) };
            format!("{}{remote} ({}{who})", s.local, tcp_state_name(s.state))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} local TCP socket(s) use ports inside snat_ports {}: {examples}",
        users.len(),
        range_text(range)
    )
}

// ---- check 6: target -----------------------------------------------------------------------

/// One rule's target as seen from this host.
struct TargetProbe {
    rule: String,
    /// The address it resolved to, when it did.
    addr: Option<Ipv4Addr>,
    finding: Finding,
}

/// Resolves and connects to every rule's target, all at once so a few unreachable brokers
/// cost one timeout, not one each.
fn probe_targets(rules: &[RuleSpec], timeout: Duration) -> Vec<TargetProbe> {
    std::thread::scope(|s| {
        let handles: Vec<_> =
            rules.iter().map(|r| s.spawn(move || probe_target(r, timeout))).collect();
        handles.into_iter().map(|h| h.join().expect("target probe thread")).collect()
    })
}

fn probe_target(rule: &RuleSpec, timeout: Duration) -> TargetProbe {
    const CHECK: &str = "target";
    let t = &rule.target;
    let addr = match t.addr {
        Some(a) => a,
        None => match resolve(&t.host, t.port, timeout.max(MIN_DNS_TIMEOUT)) {
            Ok(a) => a,
            Err(why) => {
                let finding = Finding::fail(
                    CHECK,
                    format!("{}: cannot resolve {}: {why}", rule.name, t.host),
                    format!(
                        "make {} resolvable from this VM (the VNet's DNS servers, a conditional \
                         forwarder to the on-prem DNS, or /etc/hosts), or write its IPv4 address",
                        t.host
                    ),
                );
                return TargetProbe { rule: rule.name.clone(), addr: None, finding };
            }
        },
    };
    let to = SocketAddrV4::new(addr, t.port);
    let shown = if t.addr.is_some() { to.to_string() } else { format!("{t} ({to})") };
    let started = Instant::now();
    let finding = match TcpStream::connect_timeout(&to.into(), timeout) {
        Ok(_) => Finding::ok(
            CHECK,
            format!("{}: {shown} answers ({} ms)", rule.name, started.elapsed().as_millis()),
        ),
        Err(e) => {
            let (what, fix) = connect_failure(&e, to, timeout);
            Finding::fail(CHECK, format!("{}: {shown} {what}", rule.name), fix)
        }
    };
    TargetProbe { rule: rule.name.clone(), addr: Some(addr), finding }
}

/// Resolves `host` to its first IPv4 address. getaddrinfo has no timeout of its own, so it
/// runs on a thread that is abandoned when it takes too long.
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Ipv4Addr, String> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::spawn(move || {
        let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) => addrs
            .into_iter()
            .find_map(|a| match a.ip() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| "no IPv4 address".to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

fn connect_failure(e: &io::Error, to: SocketAddrV4, timeout: Duration) -> (String, String) {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => (
            "refused the connection".into(),
            format!(
                "check that the broker listens on {to} and that firewalls on the way allow this \
                 VM's address (a refusal comes from the target host or a firewall rejecting)"
            ),
        ),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => (
            format!("did not answer within {} ms", timeout.as_millis()),
            format!(
                "check the route to {} (VPN / ExpressRoute, UDRs), the NSG outbound rules and \
                 the on-prem firewall",
                to.ip()
            ),
        ),
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => (
            format!("is unreachable: {e}"),
            format!(
                "add a route to {} (`ip route get {}` shows none that works)",
                to.ip(),
                to.ip()
            ),
        ),
        _ => (format!("failed: {e}"), format!("check the path to {to}")),
    }
}

// ---- check 7: xdp-mode ---------------------------------------------------------------------

fn check_xdp_mode(settings: &Settings, status: &Status) -> Vec<Finding> {
    status.interfaces.iter().map(|a| xdp_mode_finding(settings, &a.interface, &a.mode)).collect()
}

fn xdp_mode_finding(settings: &Settings, iface: &str, mode: &str) -> Finding {
    const CHECK: &str = "xdp-mode";
    let driver = iface_driver(iface);
    let driver_text = driver.as_deref().unwrap_or("unknown driver");
    if mode == "xdp" {
        return Finding::ok(CHECK, format!("{iface}: native XDP ({driver_text})"));
    }
    let mtu = iface_mtu(iface).ok();
    let (why, fix) = slow_mode_reason(settings, iface, driver.as_deref(), mtu);
    Finding::fail(CHECK, format!("{iface}: attached in {mode} mode, not native XDP: {why}"), fix)
}

/// The likeliest reason an interface did not get native XDP, and what to do.
fn slow_mode_reason(
    settings: &Settings,
    iface: &str,
    driver: Option<&str>,
    mtu: Option<u32>,
) -> (String, String) {
    let config = settings.path.display();
    if matches!(settings.mode, Mode::XdpGeneric | Mode::Tc) {
        return (
            format!("mode = \"{}\" is forced in {config}", settings.mode.name()),
            format!(
                "set mode = \"auto\" (or \"xdp\") in {config}, then systemctl restart forwarder"
            ),
        );
    }
    let d = driver.unwrap_or("unknown");
    if let Some(mtu) = mtu.filter(|m| *m > NATIVE_XDP_MAX_MTU) {
        if PAGE_LIMITED_DRIVERS.contains(&d) {
            return (
                format!("MTU {mtu} is too big for native XDP on {d} (at most about {NATIVE_XDP_MAX_MTU})"),
                format!("ip link set {iface} mtu 1500 (if jumbo frames are not needed), then systemctl restart forwarder"),
            );
        }
    }
    if !NATIVE_XDP_DRIVERS.contains(&d) {
        return (
            format!("driver {d} has no native XDP support"),
            "use a NIC whose driver has native XDP (on Azure: accelerated networking, hv_netvsc / mlx5 / mana), or accept the slower mode".into(),
        );
    }
    (
        format!("the kernel refused native XDP on {d}"),
        "see `journalctl -u forwarder` for the attach error (hv_netvsc needs kernel 5.6+; another XDP program may hold the interface)".into(),
    )
}

// ---- check 8: mtu --------------------------------------------------------------------------

/// What `ip route get ADDR` says about the path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct RouteInfo {
    dev: Option<String>,
    /// From a route metric or the learned path MTU (`cache ... mtu N`, `mtu lock N`).
    mtu: Option<u32>,
    /// The address is this host's own.
    local: bool,
}

fn parse_ip_route_get(text: &str) -> RouteInfo {
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| words.iter().position(|w| *w == key).and_then(|p| words.get(p + 1));
    // `mtu 1400` or `mtu lock 1400`.
    let mtu = words.iter().position(|w| *w == "mtu").and_then(|p| {
        let at = if words.get(p + 1) == Some(&"lock") { p + 2 } else { p + 1 };
        words.get(at)?.parse().ok()
    });
    RouteInfo {
        dev: after("dev").map(|d| d.to_string()),
        mtu,
        local: words.first() == Some(&"local"),
    }
}

/// One MTU on the way, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MtuSource {
    mtu: u32,
    what: String,
}

fn path_mtus(settings: &Settings, targets: &[TargetProbe]) -> Vec<MtuSource> {
    let mut out: Vec<MtuSource> = settings
        .interfaces
        .iter()
        .filter_map(|i| Some(MtuSource { mtu: iface_mtu(i).ok()?, what: format!("{i} mtu") }))
        .collect();
    for t in targets {
        let Some(addr) = t.addr else { continue };
        let Ok(Some(text)) = command("ip", &["route", "get", &addr.to_string()]) else { continue };
        let route = parse_ip_route_get(&text);
        if route.local {
            continue;
        }
        if let Some(mtu) = route.mtu {
            out.push(MtuSource { mtu, what: format!("route to {addr} ({}) mtu", t.rule) });
        }
        if let Some(dev) = route.dev.filter(|d| !settings.interfaces.contains(d)) {
            if let Ok(mtu) = iface_mtu(&dev) {
                out.push(MtuSource {
                    mtu,
                    what: format!("{dev} mtu (towards {addr}, {})", t.rule),
                });
            }
        }
    }
    out
}

fn check_mtu(settings: &Settings, targets: &[TargetProbe]) -> Finding {
    const CHECK: &str = "mtu";
    let mtus = path_mtus(settings, targets);
    let Some(low) = mtus.iter().min_by_key(|m| m.mtu) else {
        return Finding::ok(CHECK, "no MTU to check (interface not found)");
    };
    mtu_finding(settings, low)
}

fn mtu_finding(settings: &Settings, low: &MtuSource) -> Finding {
    const CHECK: &str = "mtu";
    if low.mtu >= STANDARD_MTU {
        return Finding::ok(
            CHECK,
            format!("path MTU {} or more ({} {})", STANDARD_MTU, low.what, low.mtu),
        );
    }
    let need = low.mtu.saturating_sub(TCP_IP_HEADERS);
    let fix = format!("set mss_clamp = {need} in {}", settings.path.display());
    match settings.mss_clamp.map(u32::from) {
        None => Finding::fail(
            CHECK,
            format!(
                "path MTU {} ({} {}) is below {STANDARD_MTU} and mss_clamp is not set: \
                 full-size segments will not fit",
                low.mtu, low.what, low.mtu
            ),
            fix,
        ),
        Some(clamp) if clamp > need => Finding::fail(
            CHECK,
            format!(
                "mss_clamp {clamp} is above {need} (path MTU {} from {} minus {TCP_IP_HEADERS})",
                low.mtu, low.what
            ),
            fix,
        ),
        Some(clamp) => Finding::ok(
            CHECK,
            format!("path MTU {} ({}); mss_clamp {clamp} fits", low.mtu, low.what),
        ),
    }
}

// ---- check 9: stray-nat --------------------------------------------------------------------

/// NAT rules that look like ip_fwd.sh's: a DNAT of a rule's listen port, or a MASQUERADE out
/// of the forwarder's interface. With the forwarder they take over whenever the program is
/// detached, and their conntrack entries confuse the kernel's view of forwarded flows.
fn stray_nat(settings: &Settings, tables: &[FwTable]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in tables {
        for c in &t.chains {
            for r in &c.rules {
                if is_stray(settings, &r.matches, &r.verdict) {
                    out.push((t.describe(&c.name, r), r.delete.clone()));
                }
            }
        }
    }
    out
}

fn is_stray(settings: &Settings, m: &Matches, verdict: &Verdict) -> bool {
    match verdict {
        Verdict::Dnat(_) => m.dports.as_ref().is_some_and(|c| {
            c.names(|r| settings.rules.iter().any(|rule| r.contains(&rule.listen)))
        }),
        Verdict::Masquerade => match &m.out_ifaces {
            Some(c) => c.names(|pat| settings.interfaces.iter().any(|i| iface_matches(pat, i))),
            // MASQUERADE of everything (no match at all) also covers the interface.
            None => *m == Matches::default(),
        },
        _ => false,
    }
}

fn check_stray_nat(settings: &Settings, host: &Host) -> Finding {
    const CHECK: &str = "stray-nat";
    let strays = stray_nat(settings, &host.tables);
    if strays.is_empty() {
        if !host.firewall_errors.is_empty() {
            return Finding::fail(
                CHECK,
                "cannot read the NAT rules (see firewall)",
                "run forwarder doctor as root",
            );
        }
        return Finding::ok(CHECK, "no DNAT of a listen port and no MASQUERADE on the interface");
    }
    let what = strays.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join("; ");
    let mut fix = unique_lines(strays.iter().map(|(_, f)| f));
    fix.push_str(
        "\nthen remove them where they come back from at boot (ip_fwd.sh, /etc/iptables/rules.v4)",
    );
    Finding::fail(CHECK, format!("{} leftover ip_fwd.sh NAT rule(s): {what}", strays.len()), fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(extra: &str) -> Settings {
        let text = format!(
            "interface = \"eth0\"\nhealth = \"0.0.0.0:8080\"\nsnat_ports = \"40000-40099\"\n{extra}\n\
             [[rule]]\nname = \"broker-1\"\nlisten = 9092\ntarget = \"10.20.0.11:9092\"\n\
             [[rule]]\nname = \"broker-2\"\nlisten = 9093\ntarget = \"10.20.0.12:9092\"\n"
        );
        crate::config::parse(Path::new("t.toml"), &text).unwrap()
    }

    fn blocks(s: &Settings, tables: &[FwTable]) -> Vec<Block> {
        firewall_blocks(s, tables).blocks
    }

    const IPT_NFT: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables) on Wed Nov 25 02:57:32 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 8080 -j DROP
-A INPUT -p tcp -m multiport --dports 9092,9093:9095 -j REJECT --reject-with tcp-reset
-A INPUT -s 1.2.3.4/32 -m comment --comment \"a b\" -j DROP
COMMIT
# Completed on Wed Nov 25 02:57:32 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i eth0 -p tcp -m tcp --dport 9092 -j DNAT --to-destination 10.20.0.11:9092
-A PREROUTING -i eth0 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.9.9.9:22
-A POSTROUTING -o eth0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
";

    #[test]
    fn iptables_save_parses_tables_chains_and_rules() {
        let tables = parse_iptables_save(IPT_NFT);
        assert_eq!(tables.len(), 2);
        let input = tables[0].chain("INPUT").unwrap();
        assert_eq!(input.hook.as_deref(), Some("input"));
        assert!(!input.policy_drop);
        assert_eq!(input.rules.len(), 3);
        let r = &input.rules[1];
        assert_eq!(r.verdict, Verdict::Reject);
        assert_eq!(
            r.matches.dports,
            Some(Cond { negated: false, items: vec![9092..=9092, 9093..=9095] })
        );
        assert_eq!(
            r.delete,
            "iptables -D INPUT -p tcp -m multiport --dports 9092,9093:9095 -j REJECT --reject-with tcp-reset"
        );
        assert_eq!(
            input.rules[2].matches.sources.as_ref().unwrap().items[0].to_string(),
            "1.2.3.4/32"
        );
        let pre = tables[1].chain("PREROUTING").unwrap();
        assert_eq!(pre.rules[0].verdict, Verdict::Dnat("10.20.0.11:9092".into()));
        assert_eq!(xtables_managed(IPT_NFT), vec!["filter", "nat"]);
        assert!(xtables_managed(&IPT_NFT.replace(" (nf_tables)", " (legacy)")).is_empty());
    }

    #[test]
    fn shell_words_keep_quoted_comments_whole() {
        assert_eq!(
            shell_words(r#"-A INPUT -m comment --comment "say \"hi\" there" -j ACCEPT"#),
            vec!["-A", "INPUT", "-m", "comment", "--comment", "say \"hi\" there", "-j", "ACCEPT"]
        );
    }

    #[test]
    fn iptables_drop_and_reject_block_the_named_ports_only() {
        let s = settings("");
        let b = blocks(&s, &parse_iptables_save(IPT_NFT));
        let ports: Vec<u16> = b.iter().map(|b| b.port).collect();
        assert_eq!(ports, vec![8080, 9092, 9093]);
        assert_eq!(b[0].fix, "iptables -D INPUT -p tcp -m tcp --dport 8080 -j DROP");
        assert!(b[0].by.contains("--dport 8080 -j DROP"), "{}", b[0].by);
        assert_eq!(b[0].role, "health");
        assert_eq!(b[1].role, "rule broker-1");
    }

    #[test]
    fn iptables_policy_drop_needs_an_accept() {
        let text = "\
*filter
:INPUT DROP [0:0]
:ufw-user-input - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -j ufw-user-input
-A ufw-user-input -s 168.63.129.16/32 -p tcp -m tcp --dport 8080 -j ACCEPT
-A ufw-user-input -p tcp -m tcp --dport 9092 -j ACCEPT
-A ufw-user-input -p tcp -m tcp ! --dport 22 -j RETURN
COMMIT
";
        let s = settings("");
        let b = blocks(&s, &parse_iptables_save(text));
        // 8080 is accepted from the LB's address, 9092 from anywhere; 9093 hits the policy.
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].port, 9093);
        assert_eq!(b[0].by, "iptables -t filter chain INPUT policy DROP");
        assert_eq!(b[0].fix, "iptables -I INPUT -p tcp --dport 9093 -j ACCEPT");
    }

    #[test]
    fn rules_that_may_not_apply_are_skipped() {
        let text = "\
*filter
:INPUT ACCEPT [0:0]
-A INPUT -s 10.1.0.0/16 -p tcp -m tcp --dport 9092 -j DROP
-A INPUT ! -s 168.63.129.16/32 -p tcp -m tcp --dport 8080 -j DROP
-A INPUT -i eth1 -p tcp -m tcp --dport 9093 -j DROP
-A INPUT -p udp -m udp --dport 9093 -j DROP
-A INPUT -m mark --mark 0x1 -j DROP
COMMIT
";
        assert!(blocks(&settings(""), &parse_iptables_save(text)).is_empty());
        // The same interface rule blocks when it names ours, also through a wildcard.
        let text = text.replace("-i eth1", "-i eth+");
        let b = blocks(&settings(""), &parse_iptables_save(&text));
        assert_eq!(b.iter().map(|b| b.port).collect::<Vec<_>>(), vec![9093]);
    }

    const NFT: &str = "\
table ip filter { # handle 1
	chain INPUT { # handle 1
		type filter hook input priority filter; policy accept;
		tcp dport 8080 counter packets 0 bytes 0 drop # handle 2
	}
}
table inet fw { # handle 3
	set allowed { # handle 5
		type ipv4_addr
		elements = { 10.0.0.1,
			     10.0.0.2 }
	}

	chain in { # handle 1
		type filter hook input priority filter; policy drop;
		ct state established,related accept # handle 2
		iifname \"lo\" accept # handle 6
		ip saddr @allowed accept # handle 7
		tcp dport { 22, 8080 } accept comment \"ssh and probe\" # handle 3
		iifname \"eth*\" tcp dport 9000-9092 log prefix \"no: \" reject with tcp reset # handle 4
	}

	chain out { # handle 8
		type filter hook output priority filter; policy accept;
		tcp dport 9093 drop # handle 9
	}
}
table ip nat { # handle 2
	chain PREROUTING { # handle 1
		type nat hook prerouting priority dstnat; policy accept;
		iifname \"eth0\" tcp dport 9092 counter packets 0 bytes 0 dnat to 10.20.0.11:9092 # handle 2
	}
	chain POSTROUTING { # handle 3
		type nat hook postrouting priority srcnat; policy accept;
		oifname \"eth0\" counter packets 0 bytes 0 masquerade # handle 4
	}
}
";

    #[test]
    fn nft_ruleset_parses_chains_sets_and_handles() {
        let tables = parse_nft_ruleset(NFT);
        assert_eq!(
            tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            vec!["filter", "fw", "nat"]
        );
        let fw = &tables[1];
        assert_eq!(fw.chains.len(), 2, "the set block is not a chain: {:?}", fw.chains);
        let input = fw.chain("in").unwrap();
        assert!(input.policy_drop);
        assert_eq!((input.kind.as_str(), input.hook.as_deref()), ("filter", Some("input")));
        assert_eq!(input.rules.len(), 5);
        let reject = &input.rules[4];
        assert_eq!(reject.verdict, Verdict::Reject);
        assert_eq!(reject.delete, "nft delete rule inet fw in handle 4");
        assert_eq!(
            reject.text,
            "iifname \"eth*\" tcp dport 9000-9092 log prefix \"no: \" reject with tcp reset"
        );
        assert!(reject.matches.unknown.is_empty(), "{:?}", reject.matches);
        assert_eq!(input.rules[2].matches.unknown, vec!["ip saddr @allowed"]);
        let nat = &tables[2];
        assert_eq!(
            nat.chain("PREROUTING").unwrap().rules[0].verdict,
            Verdict::Dnat("10.20.0.11:9092".into())
        );
        assert_eq!(nat.chain("POSTROUTING").unwrap().rules[0].verdict, Verdict::Masquerade);
    }

    #[test]
    fn nft_input_chains_are_judged_in_order_with_their_policy() {
        let s = settings("");
        let tables = parse_nft_ruleset(NFT);
        let b = blocks(&s, &tables[1..2]);
        assert_eq!(b.iter().map(|b| b.port).collect::<Vec<_>>(), vec![9092, 9093], "{b:?}");
        assert_eq!(b[0].fix, "nft delete rule inet fw in handle 4");
        assert!(b[0].by.starts_with("nft inet fw chain in `iifname"), "{}", b[0].by);
        assert_eq!(b[1].by, "nft inet fw chain in policy drop");
        assert_eq!(b[1].fix, "nft insert rule inet fw in tcp dport 9093 accept");
        // The ip filter table blocks 8080 by itself.
        let b = blocks(&s, &tables[0..1]);
        assert_eq!(b.iter().map(|b| b.port).collect::<Vec<_>>(), vec![8080]);
        assert_eq!(b[0].fix, "nft delete rule ip filter INPUT handle 2");
    }

    #[test]
    fn nft_values_read_negation_sets_and_lists() {
        let (t, _) = nft_tokens("tcp dport != { 22, 8080 } ct state established,related accept");
        assert_eq!(nft_value(&t, 2), (true, vec!["22".into(), "8080".into()], 8));
        assert_eq!(nft_value(&t, 10), (false, vec!["established".into(), "related".into()], 13));
        let (m, v) = parse_nft_rule(&t);
        assert_eq!(v, Verdict::Accept);
        assert!(m.dports.unwrap().negated);
    }

    #[test]
    fn stray_nat_finds_ip_fwd_rules_with_exact_deletes() {
        let s = settings("");
        let strays = stray_nat(&s, &parse_iptables_save(IPT_NFT));
        let fixes: Vec<&str> = strays.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(
            fixes,
            vec![
                "iptables -t nat -D PREROUTING -i eth0 -p tcp -m tcp --dport 9092 -j DNAT --to-destination 10.20.0.11:9092",
                "iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE",
            ]
        );
        let strays = stray_nat(&s, &parse_nft_ruleset(NFT));
        let fixes: Vec<&str> = strays.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(
            fixes,
            vec![
                "nft delete rule ip nat PREROUTING handle 2",
                "nft delete rule ip nat POSTROUTING handle 4"
            ]
        );
    }

    #[test]
    fn proc_net_tcp_lines_parse() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C41 0B14000A:2384 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1
";
        let s = parse_proc_net_tcp(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local, "0.0.0.0:8080".parse().unwrap());
        assert_eq!((s[0].state, s[0].inode), (TCP_LISTEN, 12345));
        assert_eq!(s[1].local, "127.0.0.1:40001".parse().unwrap());
        assert_eq!(s[1].remote, "10.0.20.11:9092".parse().unwrap());
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
";
        let s = parse_proc_net_tcp(v6);
        assert_eq!(s[0].local, "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn reserved_ports_and_coverage() {
        let r = parse_reserved_ports("8080,40000-40049, 40060-40099\n");
        assert_eq!(r, vec![8080..=8080, 40000..=40049, 40060..=40099]);
        assert_eq!(uncovered(&(40000..=40099), &r), vec![40050..=40059]);
        assert_eq!(uncovered(&(40000..=40099), &parse_reserved_ports("\n")), vec![40000..=40099]);
        assert!(uncovered(&(40000..=40099), &parse_reserved_ports("39000-65535")).is_empty());
        assert_eq!(uncovered(&(1..=3), &[2..=2]), vec![1..=1, 3..=3]);
    }

    #[test]
    fn ip_route_get_output_parses() {
        let r = parse_ip_route_get(
            "10.40.0.5 via 10.99.0.2 dev d0 src 10.99.0.1 uid 0 \n    cache mtu lock 1280 \n",
        );
        assert_eq!(r, RouteInfo { dev: Some("d0".into()), mtu: Some(1280), local: false });
        let r = parse_ip_route_get("10.30.0.5 dev d0 src 10.99.0.1 uid 0 \n    cache mtu 1300 \n");
        assert_eq!(r.mtu, Some(1300));
        let r = parse_ip_route_get("10.99.0.7 dev d0 src 10.99.0.1 uid 0 \n    cache \n");
        assert_eq!(r.mtu, None);
        assert!(
            parse_ip_route_get("local 10.99.0.1 dev lo src 10.99.0.1 uid 0 \n    cache <local> \n")
                .local
        );
    }

    #[test]
    fn mtu_below_1500_needs_a_fitting_clamp() {
        let low = MtuSource { mtu: 1400, what: "eth0 mtu".into() };
        let f = mtu_finding(&settings(""), &low);
        assert!(!f.ok);
        assert_eq!(f.fix.as_deref(), Some("set mss_clamp = 1360 in t.toml"));
        assert!(!mtu_finding(&settings("mss_clamp = 1400"), &low).ok);
        assert!(mtu_finding(&settings("mss_clamp = 1360"), &low).ok);
        assert!(mtu_finding(&settings(""), &MtuSource { mtu: 1500, what: "x".into() }).ok);
    }

    #[test]
    fn slow_mode_reasons() {
        let auto = settings("");
        let (why, fix) =
            slow_mode_reason(&settings("mode = \"tc\""), "eth0", Some("hv_netvsc"), Some(1500));
        assert!(why.contains("mode = \"tc\" is forced in t.toml"), "{why}");
        assert!(fix.contains("mode = \"auto\""), "{fix}");
        let (why, fix) = slow_mode_reason(&auto, "eth0", Some("mlx5_core"), Some(9000));
        assert!(why.contains("MTU 9000 is too big for native XDP on mlx5_core"), "{why}");
        assert!(fix.starts_with("ip link set eth0 mtu 1500"), "{fix}");
        let (why, _) = slow_mode_reason(&auto, "eth0", Some("e1000"), Some(1500));
        assert_eq!(why, "driver e1000 has no native XDP support");
        let (why, _) = slow_mode_reason(&auto, "eth0", Some("hv_netvsc"), Some(1500));
        assert!(why.contains("kernel refused"), "{why}");
    }

    #[test]
    fn render_shows_ok_fail_and_fix_lines() {
        let text = render(&[
            Finding::ok("daemon", "running"),
            Finding::fail("stray-nat", "2 rules", "iptables -t nat -D A\niptables -t nat -D B"),
        ]);
        assert_eq!(
            text,
            "ok   daemon: running\nFAIL stray-nat: 2 rules\n     fix: iptables -t nat -D A\n          iptables -t nat -D B\n"
        );
        assert!(!all_ok(&[Finding::ok("a", "b"), Finding::fail("c", "d", "e")]));
        assert!(all_ok(&[Finding::ok("a", "b")]));
    }
}
