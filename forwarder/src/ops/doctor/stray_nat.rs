//! Check 9, `stray-nat`: no NAT rule of `ip_fwd.sh` is left: a DNAT of a listen port, a
//! MASQUERADE out of the interface.

use super::{host::Host, unique_lines, Finding};
use crate::{
    config::Settings,
    ops::netfilter::{
        eval::iface_matches,
        model::{port_ranges, Matches, Table, Tool, Verdict},
    },
};
use std::ops::RangeInclusive;

/// NAT rules that look like ip_fwd.sh's: a DNAT of a rule's listen port, or a MASQUERADE out
/// of the forwarder's interface. With the forwarder they take over whenever the program is
/// detached, and their conntrack entries confuse the kernel's view of forwarded flows.
fn stray_nat(settings: &Settings, tables: &[Table]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in tables {
        for c in &t.chains {
            for r in &c.rules {
                if is_stray(settings, t.tool, &r.matches, &r.verdict) {
                    out.push((t.describe(&c.name, r), r.delete.clone()));
                }
            }
        }
    }
    out
}

fn is_stray(settings: &Settings, tool: Tool, m: &Matches, verdict: &Verdict) -> bool {
    match verdict {
        Verdict::Dnat(_) => m.dports.as_ref().is_some_and(|c| {
            let listens = |r: &RangeInclusive<u16>| {
                settings.rules.iter().any(|rule| r.contains(&rule.listen))
            };
            port_ranges(&c.items, tool.range_sep())
                .is_some_and(|ranges| !c.negated && ranges.iter().any(listens))
        }),
        Verdict::Masquerade => match &m.out_ifaces {
            Some(c) => c.names(|pat| settings.interfaces.iter().any(|i| iface_matches(pat, i))),
            // MASQUERADE of everything (no match at all, or only a destination: whatever
            // leaves for there) also covers the interface.
            None => Matches { destinations: None, ..m.clone() } == Matches::default(),
        },
        _ => false,
    }
}

pub(super) fn check(settings: &Settings, host: &Host) -> Finding {
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
    use crate::ops::doctor::test_settings as settings;
    use crate::ops::netfilter::{fixtures::*, iptables_save, nft};

    #[test]
    fn stray_nat_finds_ip_fwd_rules_with_exact_deletes() {
        let s = settings("");
        let strays = stray_nat(&s, &iptables_save::parse(IPT_NFT, None));
        let fixes: Vec<&str> = strays.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(
            fixes,
            vec![
                "iptables -t nat -D PREROUTING -i eth0 -p tcp -m tcp --dport 9092 -j DNAT --to-destination 10.20.0.11:9092",
                "iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE",
            ]
        );
        let strays = stray_nat(&s, &nft::parse(NFT).unwrap());
        let fixes: Vec<&str> = strays.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(
            fixes,
            vec![
                "nft delete rule ip nat PREROUTING handle 3",
                "nft delete rule ip nat POSTROUTING handle 4"
            ]
        );
    }
}
