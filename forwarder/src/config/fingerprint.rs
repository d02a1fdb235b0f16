//! The configuration's fingerprint: a SHA-256 of what the settings make the VM do, so that
//! the VMs of one load balancer pool can be compared (`forwarder_config_info{sha256}`,
//! `forwarder status`). Every VM behind the pool must forward the same way; a VM left with
//! an old rule answers some clients differently, and nothing else shows it.
//!
//! What is hashed is a canonical text of the validated settings, never the file's bytes:
//! two files that differ only in comments, key order, rule order, spacing or how a value
//! is spelled (`"30s"` or `"30000ms"`) give the same hash. It holds what shapes forwarding
//! and the load balancer's view of the VM:
//! - `interface` (in order: the first one is the primary), `mode`, `listen_ip`, `snat_ip`
//!   (`auto` stays `auto`: each VM has its own address), `snat_ports`, `allowed_sources`
//!   (as networks, sorted, without duplicates), `max_flows`, `mss_clamp`, `health`,
//!   `dns_refresh`, the three timeouts (in milliseconds);
//! - every rule as `listen name host:port`, sorted by listen port, the target as written
//!   with its host name in lower case (DNS names are case-insensitive).
//!
//! Left out, because they are where a VM keeps or reports things, not what it forwards:
//! the file's path, `metrics`, `control_socket`, `pin_path`, the `[kafka]` watch (it
//! compares the cluster with the rules and reports) and `[azure]` (when to drain, not what
//! is forwarded). Also left out: what hostname
//! targets resolve to, which each VM learns from DNS on its own schedule (`dns_refresh`);
//! `forwarder status` shows each rule's resolved address.

use super::{ListenIp, Settings, SnatIp};
use std::fmt::Write;

/// The first line of the canonical text: a change of what is hashed changes it, so hashes
/// of two versions never agree by accident.
const FORMAT: &str = "forwarder-config-fingerprint v1";

/// The SHA-256 of [`canonical`], in lower-case hex.
pub fn sha256(s: &Settings) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical(s).as_bytes());
    digest.as_ref().iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The settings as one line per key, in a fixed order, every value in one spelling.
pub fn canonical(s: &Settings) -> String {
    let mut out = format!("{FORMAT}\n");
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(out, "{key} {value}");
    };
    line("interface", &s.interfaces.join(","));
    line("mode", s.mode.name());
    line(
        "listen_ip",
        &match s.listen_ip {
            ListenIp::Auto => "auto".to_string(),
            ListenIp::Any => "any".to_string(),
            ListenIp::Addr(a) => a.to_string(),
        },
    );
    line(
        "snat_ip",
        &match s.snat_ip {
            SnatIp::Auto => "auto".to_string(),
            SnatIp::Addr(a) => a.to_string(),
        },
    );
    line("snat_ports", &format!("{}-{}", s.snat_ports.start(), s.snat_ports.end()));
    let sources = match &s.allowed_sources {
        None => "any".to_string(),
        Some(nets) => {
            let mut nets: Vec<_> = nets.iter().map(|n| n.trunc()).collect();
            nets.sort();
            nets.dedup();
            nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        }
    };
    line("allowed_sources", &sources);
    line("max_flows", &s.max_flows.to_string());
    line("mss_clamp", &s.mss_clamp.map_or("none".to_string(), |m| m.to_string()));
    line("health", &s.health.map_or("none".to_string(), |a| a.to_string()));
    line("dns_refresh_ms", &s.dns_refresh.as_millis().to_string());
    let t = &s.timeouts;
    line(
        "timeouts_ms",
        &format!(
            "syn={} established={} closing={}",
            t.syn.as_millis(),
            t.established.as_millis(),
            t.closing.as_millis()
        ),
    );
    let mut rules: Vec<_> = s.rules.iter().collect();
    rules.sort_by_key(|r| r.listen);
    for r in rules {
        line(
            "rule",
            &format!("{} {} {}:{}", r.listen, r.name, r.target.host.to_lowercase(), r.target.port),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const TWO_RULES: &str = "interface = \"eth0\"\n\
        allowed_sources = [\"10.0.0.0/16\", \"10.1.0.0/16\"]\n\
        mss_clamp = 1350\n\
        health = \"0.0.0.0:8080\"\n\
        [[rule]]\nname = \"broker-1\"\nlisten = 9092\ntarget = \"broker1.corp.example:9092\"\n\
        [[rule]]\nname = \"broker-2\"\nlisten = 9093\ntarget = \"10.20.0.12:9092\"\n";

    fn hash(path: &str, text: &str) -> String {
        sha256(&crate::config::parse(Path::new(path), text).unwrap())
    }

    #[test]
    fn comments_order_spelling_and_local_places_do_not_change_it() {
        let base = hash("/etc/forwarder/forwarder.toml", TWO_RULES);
        assert_eq!(base.len(), 64);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // Another VM's file: comments, rules and sources in another order, the default
        // spelled out, a host name in capitals, another path, metrics and control socket,
        // a [kafka] watch and [azure].
        let other = "# NAT VM 2\n\
            interface = \"eth0\"   # the LB's NIC\n\
            metrics = \"0.0.0.0:9464\"\n\
            control_socket = \"/run/fwd/control.sock\"\n\
            pin_path = \"/sys/fs/bpf/fwd\"\n\
            health = \"0.0.0.0:8080\"\n\
            mss_clamp = 1350\n\
            dns_refresh = \"30000ms\"\n\
            allowed_sources = [\"10.1.0.0/16\", \"10.0.0.0/16\", \"10.0.0.0/16\"]\n\
            [[rule]]\nname = \"broker-2\"\nlisten = 9093\ntarget = \"10.20.0.12:9092\"\n\
            # the first broker\n\
            [[rule]]\nname = \"broker-1\"\nlisten = 9092\ntarget = \"Broker1.corp.example:9092\"\n\
            [kafka]\nbootstrap = \"broker1.corp.example:9092\"\n\
            [azure]\nscheduled_events = true\n";
        assert_eq!(hash("/tmp/other.toml", other), base);
    }

    #[test]
    fn a_change_of_what_is_forwarded_changes_it() {
        let base = hash("f.toml", TWO_RULES);
        let changes = [
            ("listen = 9093", "listen = 9094"),
            ("10.20.0.12:9092", "10.20.0.13:9092"),
            ("name = \"broker-2\"", "name = \"broker-two\""),
            ("mss_clamp = 1350", "mss_clamp = 1360"),
            ("\"10.1.0.0/16\"", "\"10.2.0.0/16\""),
            ("0.0.0.0:8080", "0.0.0.0:8081"),
            ("interface = \"eth0\"", "interface = \"eth0\"\nmode = \"tc\""),
            ("interface = \"eth0\"", "interface = \"eth0\"\nsnat_ip = \"10.0.0.4\""),
        ];
        for (from, to) in changes {
            let changed = TWO_RULES.replacen(from, to, 1);
            assert_ne!(changed, TWO_RULES, "{from}");
            assert_ne!(hash("f.toml", &changed), base, "{from} -> {to}");
        }
        let third =
            format!("{TWO_RULES}[[rule]]\nname = \"b3\"\nlisten = 9094\ntarget = \"b3:1\"\n");
        assert_ne!(hash("f.toml", &third), base, "a rule added");
    }

    #[test]
    fn the_canonical_text_says_what_was_hashed() {
        let s = crate::config::parse(Path::new("f.toml"), TWO_RULES).unwrap();
        let text = canonical(&s);
        assert!(text.starts_with("forwarder-config-fingerprint v1\ninterface eth0\n"), "{text}");
        assert!(text.contains("\nallowed_sources 10.0.0.0/16,10.1.0.0/16\n"), "{text}");
        assert!(text.ends_with(
            "rule 9092 broker-1 broker1.corp.example:9092\nrule 9093 broker-2 10.20.0.12:9092\n"
        ));
    }
}
