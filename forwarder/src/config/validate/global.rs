//! The top-level keys of the data path: `interface`, `mode`, `listen_ip`, `snat_ip`,
//! `snat_ports`, `allowed_sources`, `max_flows`, `mss_clamp`. One function per key, each
//! with its default when the key is absent.

use super::unicast;
use crate::config::{
    spans::{Section, Span},
    ConfigError, ListenIp, Mode, SnatIp,
};
use forwarder_common::MAX_ALLOWED_SOURCES;
use ipnet::Ipv4Net;
use std::{net::Ipv4Addr, ops::RangeInclusive};
use toml_edit::{Item, Value};

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

/// `interface`: one name or a list, each a valid name, none twice.
pub(super) fn interfaces(root: &Section) -> Result<Vec<String>, ConfigError> {
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
    Ok(interfaces)
}

/// The interface names as written, with their places; also what the host check points at.
pub(in crate::config) fn interface_entries<'a>(
    root: &Section<'a>,
) -> Result<Vec<(&'a str, Span)>, ConfigError> {
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

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && !s.contains(|c: char| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        && s != "."
        && s != ".."
}

/// `mode`, default `auto`.
pub(super) fn mode(root: &Section) -> Result<Mode, ConfigError> {
    Ok(match root.string("mode", EXPECT_MODE)? {
        None => Mode::Auto,
        Some(("auto", _)) => Mode::Auto,
        Some(("xdp", _)) => Mode::Xdp,
        Some(("xdp-generic", _)) => Mode::XdpGeneric,
        Some(("tc", _)) => Mode::Tc,
        Some((_, span)) => return Err(root.bad("mode", span, EXPECT_MODE)),
    })
}

/// `listen_ip`, default `auto`.
pub(super) fn listen_ip(root: &Section) -> Result<ListenIp, ConfigError> {
    Ok(match root.string("listen_ip", EXPECT_LISTEN_IP)? {
        None | Some(("auto", _)) => ListenIp::Auto,
        Some(("any", _)) => ListenIp::Any,
        Some((s, span)) => match s.parse::<Ipv4Addr>() {
            Ok(a) if unicast(a) => ListenIp::Addr(a),
            _ => return Err(root.bad("listen_ip", span, EXPECT_LISTEN_IP)),
        },
    })
}

/// `snat_ip`, default `auto`.
pub(super) fn snat_ip(root: &Section) -> Result<SnatIp, ConfigError> {
    Ok(match root.string("snat_ip", EXPECT_SNAT_IP)? {
        None | Some(("auto", _)) => SnatIp::Auto,
        Some((s, span)) => match s.parse::<Ipv4Addr>() {
            Ok(a) if unicast(a) => SnatIp::Addr(a),
            _ => return Err(root.bad("snat_ip", span, EXPECT_SNAT_IP)),
        },
    })
}

/// `snat_ports`, default 40000-59999.
pub(super) fn snat_ports(root: &Section) -> Result<RangeInclusive<u16>, ConfigError> {
    Ok(match root.string("snat_ports", EXPECT_PORT_RANGE)? {
        None => 40000..=59999,
        Some((s, span)) => parse_port_range(s).map_err(|m| root.error(span, "snat_ports", m))?,
    })
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

/// `allowed_sources`: absent is every source (`None`); otherwise a non-empty list of
/// distinct prefixes that fits the data path's table.
pub(super) fn allowed_sources(root: &Section) -> Result<Option<Vec<Ipv4Net>>, ConfigError> {
    let Some((span, item)) = root.get("allowed_sources") else { return Ok(None) };
    let Some(Value::Array(list)) = item.as_value() else {
        return Err(root.wrong_type("allowed_sources", span, item, EXPECT_SOURCES));
    };
    if list.is_empty() {
        return Err(root.error(
            span,
            "allowed_sources",
            format!(
                "{EXPECT_SOURCES}, at least one (omit allowed_sources to allow every source); \
                 found an empty list"
            ),
        ));
    }
    let mut nets: Vec<Ipv4Net> = Vec::with_capacity(list.len());
    for v in list.iter() {
        let vspan = v.span().unwrap_or_else(|| span.clone());
        // One map entry per distinct prefix: the data path's table has a fixed size, and a
        // list it cannot hold must fail here, not half-way through filling it.
        let net = source_prefix(root, v, vspan.clone())?.trunc();
        if nets.contains(&net) {
            continue;
        }
        if nets.len() == MAX_ALLOWED_SOURCES as usize {
            return Err(root.error(
                vspan,
                "allowed_sources",
                format!(
                    "expected at most {MAX_ALLOWED_SOURCES} distinct prefixes (the size of the \
                     data path's table); this is one more"
                ),
            ));
        }
        nets.push(net);
    }
    Ok(Some(nets))
}

/// One item of `allowed_sources`: a CIDR, or an address standing for its /32.
fn source_prefix(root: &Section, v: &Value, vspan: Span) -> Result<Ipv4Net, ConfigError> {
    let Some(s) = v.as_str() else {
        let found = root.src.found(&Item::Value(v.clone()), &vspan);
        return Err(root.error(vspan, "allowed_sources", format!("{EXPECT_CIDR}; found {found}")));
    };
    s.parse::<Ipv4Net>()
        .or_else(|_| s.parse::<Ipv4Addr>().map(Ipv4Net::from))
        .map_err(|_| root.bad("allowed_sources", vspan, EXPECT_CIDR))
}

/// `max_flows`, default 262144.
pub(super) fn max_flows(root: &Section) -> Result<u32, ConfigError> {
    Ok(root
        .integer("max_flows", 1024..=16_777_216, EXPECT_MAX_FLOWS)?
        .map_or(262_144, |(n, _)| n as u32))
}

/// `mss_clamp`, absent: no clamping.
pub(super) fn mss_clamp(root: &Section) -> Result<Option<u16>, ConfigError> {
    Ok(root.integer("mss_clamp", 536..=9000, EXPECT_MSS)?.map(|(n, _)| n as u16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        parse,
        test_text::{at, err, BASE},
    };
    use std::path::Path;

    #[test]
    fn list_items_are_pointed_at() {
        let e = err("interface = [\"eth0\", \"eth 1\"]\n");
        assert_eq!(at(&e), (1, 22, "interface"), "{e}");
        let e = err(&format!("{BASE}allowed_sources = [\n  \"10.0.0.0/8\",\n  \"10.0.0/8\",\n]\n"));
        assert_eq!(at(&e), (4, 3, "allowed_sources"), "{e}");
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("40000-40000"), Ok(40000..=40000));
        assert_eq!(parse_port_range(" 1024 - 65535 "), Ok(1024..=65535));
        for bad in ["40000", "59999-40000", "40000-70000", "80-1023", "a-b", "-1", ""] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowed_sources_fit_the_table() {
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
}
