//! Check 6, `target`: every rule's target resolves and accepts a TCP connection from here.

use super::Finding;
use crate::config::RuleSpec;
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

/// Name resolution gets at least this long whatever the connect timeout: DNS towards
/// on-prem servers over a VPN is slower than a TCP handshake to the same place.
const MIN_DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// One rule's target as seen from this host.
pub(super) struct TargetProbe {
    pub(super) rule: String,
    /// The address it resolved to, when it did.
    pub(super) addr: Option<Ipv4Addr>,
    pub(super) finding: Finding,
}

/// Resolves and connects to every rule's target, all at once so a few unreachable brokers
/// cost one timeout, not one each.
pub(super) fn probe_all(rules: &[RuleSpec], timeout: Duration) -> Vec<TargetProbe> {
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

/// `host`'s first IPv4 address, within `timeout` (`host::resolve`).
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Ipv4Addr, String> {
    use crate::host::resolve::{first_ipv4, ResolveError};
    first_ipv4(host, port, timeout).map_err(|e| match e {
        ResolveError::Timeout(t) => format!("no answer within {} s", t.as_secs()),
        e => crate::error::chain(&e),
    })
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
