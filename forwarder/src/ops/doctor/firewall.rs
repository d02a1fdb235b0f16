//! Check 3, `firewall`: the INPUT chains of iptables and nft let the health port (from the
//! load balancer's address) and every listen port through.

use super::{host::Host, unique_lines, Finding, AZURE_PROBE_SOURCE};
use crate::{
    config::Settings,
    ops::netfilter::{
        eval::{input_block, Packet},
        model::Table,
    },
};

/// One port the INPUT path drops, with the rule (or policy) that does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) port: u16,
    /// What the port is for: "health" or "rule NAME".
    pub(super) role: String,
    pub(super) by: String,
    pub(super) fix: String,
}

#[derive(Debug, Default)]
pub(super) struct FirewallView {
    /// Ports checked, with their role.
    pub(super) ports: Vec<(u16, String)>,
    pub(super) blocks: Vec<Block>,
}

/// The ports that must get through INPUT: the health port from the load balancer's address,
/// and each rule's listen port from anywhere.
pub(super) fn firewall_blocks(settings: &Settings, tables: &[Table]) -> FirewallView {
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

pub(super) fn check(host: &Host, view: &FirewallView) -> Finding {
    const CHECK: &str = "firewall";
    if !view.blocks.is_empty() {
        let message = group_blocks(&view.blocks).join("; ");
        return Finding::fail(CHECK, message, unique_lines(view.blocks.iter().map(|b| &b.fix)));
    }
    if !host.firewall_errors.is_empty() {
        let errors =
            host.firewall_errors.iter().map(|e| crate::error::chain(e)).collect::<Vec<_>>();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::doctor::test_settings as settings;
    use crate::ops::netfilter::{fixtures::*, iptables_save, nft};

    fn blocks(s: &Settings, tables: &[Table]) -> Vec<Block> {
        firewall_blocks(s, tables).blocks
    }

    #[test]
    fn iptables_drop_and_reject_block_the_named_ports_only() {
        let s = settings("");
        let b = blocks(&s, &iptables_save::parse(IPT_NFT, None));
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
        let b = blocks(&s, &iptables_save::parse(text, None));
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
        assert!(blocks(&settings(""), &iptables_save::parse(text, None)).is_empty());
        // The same interface rule blocks when it names ours, also through a wildcard.
        let text = text.replace("-i eth1", "-i eth+");
        let b = blocks(&settings(""), &iptables_save::parse(&text, None));
        assert_eq!(b.iter().map(|b| b.port).collect::<Vec<_>>(), vec![9093]);
    }

    #[test]
    fn nft_input_chains_are_judged_in_order_with_their_policy() {
        let s = settings("");
        let tables = nft::parse(NFT).unwrap();
        let b = blocks(&s, &tables[1..2]);
        assert_eq!(b.iter().map(|b| b.port).collect::<Vec<_>>(), vec![9092, 9093], "{b:?}");
        assert_eq!(b[0].fix, "nft delete rule inet fw in handle 9");
        assert!(b[0].by.starts_with("nft inet fw chain in `iifname"), "{}", b[0].by);
        assert_eq!(b[1].by, "nft inet fw chain in policy drop");
        assert_eq!(b[1].fix, "nft insert rule inet fw in tcp dport 9093 accept");
        // The ip filter table blocks 8080 by itself.
        let b = blocks(&s, &tables[0..1]);
        assert_eq!(b.iter().map(|b| b.port).collect::<Vec<_>>(), vec![8080]);
        assert_eq!(b[0].fix, "nft delete rule ip filter INPUT handle 2");
    }
}
