//! The translation proper: a DNAT reached from PREROUTING becomes a rule when the forwarder
//! would forward the same connections to the same place; a MASQUERADE or SNAT reached from
//! POSTROUTING is noted when it is the kind `ip_fwd.sh` adds. Otherwise: the reason, for
//! the operator.

use super::{
    scope::{and, is_to_option, scope, value, Reached},
    ImportedRule,
};
use crate::{config, ops::netfilter::model::Rule};
use std::net::Ipv4Addr;

/// The rule the forwarder would need for `rule`, reached with `context` (None: its chain
/// is not reached from PREROUTING).
pub(super) fn dnat(
    chain: &str,
    rule: &Rule,
    context: Option<&Reached>,
) -> Result<ImportedRule, String> {
    let context = context.ok_or_else(|| not_reached(chain, "PREROUTING"))?;
    let cond = and(context.clone()?, &scope(rule))?;
    if !cond.unknown.is_empty() {
        return Err(format!("cannot express {}", cond.unknown.join(", ")));
    }
    if let Some(s) = value(&cond.sources) {
        return Err(format!(
            "matches only sources {s}; the forwarder's allowed_sources applies to every rule"
        ));
    }
    check_tcp(value(&cond.protocols))?;
    let listen = listen_port(value(&cond.dports))?;
    let to: Vec<&str> = rule
        .opts
        .iter()
        .filter(|o| is_to_option(&o.name))
        .map(|o| o.values.first().map_or("", String::as_str))
        .collect();
    let target = match to.as_slice() {
        [to] => dnat_target(to, listen)?,
        [] => return Err("DNAT without --to-destination".into()),
        _ => return Err("several --to-destination (round robin) for one port".into()),
    };
    Ok(ImportedRule {
        name: format!("broker-{listen}"),
        listen,
        target,
        line: rule.line,
        text: rule.text.clone(),
        interface: value(&cond.in_ifaces).map(str::to_string),
        listen_addr: value(&cond.destinations).map(|d| d.strip_suffix("/32").unwrap_or(d).into()),
    })
}

fn check_tcp(proto: Option<&str>) -> Result<(), String> {
    match proto.map(str::to_ascii_lowercase).as_deref() {
        Some("tcp" | "6") => Ok(()),
        Some("udp" | "17") => Err("UDP: the forwarder forwards TCP only".into()),
        Some(p) => Err(format!("protocol {p}: the forwarder forwards TCP only")),
        None => Err("no -p tcp: iptables forwards every protocol; the forwarder only TCP".into()),
    }
}

fn listen_port(dport: Option<&str>) -> Result<u16, String> {
    match dport {
        None => Err("no --dport: a rule forwards one listen port".into()),
        Some(d) if d.contains(':') => Err(format!("port range {d}: a rule forwards one port")),
        Some(d) => port(d),
    }
}

/// "IP:PORT" from a `--to-destination` of "IP" or "IP:PORT". Without a port iptables keeps
/// the destination port, which is the listen port.
fn dnat_target(to: &str, listen: u16) -> Result<String, String> {
    let (addr, target_port) = match to.rsplit_once(':') {
        Some((addr, p)) => (addr, Some(p)),
        None => (to, None),
    };
    if addr.contains('-') {
        return Err(format!("address range {addr}: a rule forwards to one host"));
    }
    let ip: Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let target_port = match target_port {
        None => listen,
        Some(p) if p.contains('-') => {
            return Err(format!("port range {p}: a rule forwards to one port"));
        }
        Some(p) => port(p)?,
    };
    let target = format!("{ip}:{target_port}");
    // iptables takes any address; a rule's target must pass check-config too (found by
    // fuzz/fuzz_targets/import_iptables.rs: a DNAT to 127.0.0.1 came out as a rule that
    // check-config refuses).
    config::parse_target(&target)
        .map_err(|_| format!("{ip} is not a unicast address of another host"))?;
    Ok(target)
}

fn port(s: &str) -> Result<u16, String> {
    s.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("{s:?} is not a port"))
}

/// Ok when `rule` (a MASQUERADE or SNAT) is the kind `ip_fwd.sh` adds: in POSTROUTING and
/// not tied to a source. A source-bound one (Docker's `-s 172.17.0.0/16`) NATs this host's
/// own or its containers' outgoing traffic, which the forwarder does not take over.
pub(super) fn snat(chain: &str, rule: &Rule, context: Option<&Reached>) -> Result<(), String> {
    let context = context.ok_or_else(|| not_reached(chain, "POSTROUTING"))?;
    let cond = and(context.clone()?, &scope(rule))?;
    match value(&cond.sources) {
        Some(s) => Err(format!(
            "source NAT of traffic from {s}, not of forwarded connections; the forwarder \
             does no general source NAT"
        )),
        None => Ok(()),
    }
}

fn not_reached(chain: &str, start: &str) -> String {
    match chain {
        "OUTPUT" => "OUTPUT rewrites connections this host opens itself, not forwarded ones".into(),
        _ => format!("chain {chain} is not reached from {start}"),
    }
}
