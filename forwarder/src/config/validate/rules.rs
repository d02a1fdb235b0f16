//! The `[[rule]]` tables (or `rule = [{ .. }, ..]`): at most `MAX_RULES`, each with a
//! unique valid `name`, a unique `listen` port clear of `snat_ports` and of the health and
//! metrics sockets the data path would see, and a `target` of another host.

use super::unicast;
use crate::config::{spans::Section, ConfigError, ListenIp, RuleSpec, Target, MAX_RULE_NAME};
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::RangeInclusive,
};
use toml_edit::{Item, TableLike, Value};

const RULE_KEYS: &[&str] = &["name", "listen", "target"];

const EXPECT_RULES: &str = "expected [[rule]] tables, each with name, listen and target";
const EXPECT_RULE_NAME: &str =
    "expected a name of letters, digits, '-', '_' or '.', at most 64 characters";
const EXPECT_PORT: &str = "expected a port from 1 to 65535";
const EXPECT_TARGET: &str = "expected HOST:PORT with a hostname or IPv4 address";
const NEEDS: &str = "every [[rule]] needs name, listen and target";

/// Every rule, in the file's order. `sockets` are the health and metrics sockets a
/// listen port may not take.
pub(super) fn rules(
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
        let name = name(r, &mut names)?;
        let listen = listen(r, &mut ports, snat_ports, listen_ip, sockets)?;
        let (target, span) =
            r.string("target", EXPECT_TARGET)?.ok_or_else(|| r.missing("target", NEEDS))?;
        let target = parse_target(target).map_err(|m| r.error(span, "target", m))?;
        rules.push(RuleSpec { name: name.to_string(), listen, target });
    }
    Ok(rules)
}

/// The `[[rule]]` tables (or `rule = [{ .. }, ..]`), each as a section.
pub(in crate::config) fn rule_sections<'a>(
    root: &Section<'a>,
) -> Result<Vec<Section<'a>>, ConfigError> {
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

/// A rule's `name`: valid and not taken by an earlier rule (`names`).
fn name<'a>(r: &Section<'a>, names: &mut HashSet<&'a str>) -> Result<&'a str, ConfigError> {
    let (name, span) =
        r.string("name", EXPECT_RULE_NAME)?.ok_or_else(|| r.missing("name", NEEDS))?;
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
    Ok(name)
}

/// A rule's `listen` port: not taken by an earlier rule (`ports`), outside `snat_ports`,
/// and not the port of a socket in `sockets` that the data path would see.
fn listen(
    r: &Section,
    ports: &mut HashSet<u16>,
    snat_ports: &RangeInclusive<u16>,
    listen_ip: ListenIp,
    sockets: &[(&str, Option<SocketAddr>)],
) -> Result<u16, ConfigError> {
    let (listen, span) =
        r.integer("listen", 1..=65535, EXPECT_PORT)?.ok_or_else(|| r.missing("listen", NEEDS))?;
    let listen = listen as u16;
    if !ports.insert(listen) {
        return Err(r.error(
            span,
            "listen",
            format!(
                "expected a port no other rule listens on; port {listen} is already the listen \
                 port of another rule"
            ),
        ));
    }
    if snat_ports.contains(&listen) {
        return Err(r.error(
            span,
            "listen",
            format!(
                "expected a port outside snat_ports; port {listen} lies inside snat_ports {}-{}",
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
                     {what} port ({sock}), whose connections would be forwarded instead of \
                     answered"
                ),
            ));
        }
    }
    Ok(listen)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        parse,
        test_text::{at, err, BASE},
    };
    use std::path::Path;

    #[test]
    fn targets() {
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
    fn rule_names_are_bounded() {
        let rule = |name: &str| {
            format!("{BASE}[[rule]]\nname = \"{name}\"\nlisten = 9092\ntarget = \"10.0.0.9:1\"\n")
        };
        parse(Path::new("f.toml"), &rule(&"a".repeat(MAX_RULE_NAME))).unwrap();
        let e = err(&rule(&"a".repeat(MAX_RULE_NAME + 1)));
        assert_eq!(at(&e), (3, 8, "rule.name"), "{e}");
        assert!(e.message.contains("found one of 65"), "{e}");
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
}
