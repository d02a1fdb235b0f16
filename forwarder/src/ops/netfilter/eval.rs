//! Evaluating chains: where a new TCP connection to this host ends in the INPUT path (the
//! doctor's firewall check), and which chains of a table a built-in chain reaches through
//! jumps (import-iptables follows a DNAT's conditions back to PREROUTING).

use super::model::{nets, port_ranges, Chain, Matches, Rule, Table, Tool, Verdict};
use std::{
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
};

/// How deep jumps between user chains are followed (real rulesets nest 2-3 levels).
const MAX_CHAIN_DEPTH: usize = 16;

/// A new TCP connection arriving for this host.
pub struct Packet<'a> {
    pub port: u16,
    /// `None`: any client, so a rule that depends on the source is undecidable.
    pub source: Option<Ipv4Addr>,
    pub ifaces: &'a [String],
}

impl Matches {
    /// True when the rule certainly matches `p` (false when it does not or may not).
    /// Destinations are not looked at: in INPUT the destination is one of this host's
    /// addresses, which is where the probe and the clients connect.
    pub fn certainly_match(&self, p: &Packet, tool: Tool) -> bool {
        self.unknown.is_empty()
            && self.protocols.as_ref().is_none_or(|c| c.holds(|s| is_tcp(s)))
            && self.dports.as_ref().is_none_or(|c| {
                port_ranges(&c.items, tool.range_sep()).is_some_and(|ranges| {
                    ranges.iter().any(|r| r.contains(&p.port)) != c.negated
                })
            })
            && self
                .in_ifaces
                .as_ref()
                .is_none_or(|c| c.holds(|pat| p.ifaces.iter().any(|i| iface_matches(pat, i))))
            // INPUT has no output interface.
            && self.out_ifaces.is_none()
            && self.sources.as_ref().is_none_or(|c| match (p.source, nets(&c.items)) {
                (Some(ip), Some(nets)) => nets.iter().any(|n| n.contains(&ip)) != c.negated,
                _ => false,
            })
            && self.states.as_ref().is_none_or(|c| c.holds(|s| s == "new"))
    }
}

fn is_tcp(proto: &str) -> bool {
    matches!(proto, "tcp" | "6" | "all")
}

/// iptables writes wildcards as `eth+`, nft as `eth*`.
pub fn iface_matches(pattern: &str, iface: &str) -> bool {
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
pub fn input_block(table: &Table, p: &Packet) -> Option<(String, String)> {
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

fn walk(table: &Table, chain: &Chain, p: &Packet, depth: usize) -> Outcome {
    if depth > MAX_CHAIN_DEPTH {
        return Outcome::Fallthrough;
    }
    for rule in chain.rules.iter().filter(|r| r.matches.certainly_match(p, table.tool)) {
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

fn policy_block(table: &Table, chain: &Chain, port: u16) -> (String, String) {
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

/// The chains that the built-in chain `start` reaches through iptables jumps, each with the
/// jump rules of the first path found to it (breadth first, which also stops at loops).
/// `rules` are (chain, rule) in input order; a rule jumps when its target `is_chain`.
pub fn jump_paths<'a>(
    rules: &[(&str, &'a Rule)],
    start: &str,
    is_chain: impl Fn(&str) -> bool,
) -> HashMap<String, Vec<&'a Rule>> {
    let mut reached = HashMap::from([(start.to_string(), Vec::new())]);
    let mut queue = VecDeque::from([start.to_string()]);
    while let Some(chain) = queue.pop_front() {
        let path = reached[&chain].clone();
        for (_, rule) in rules.iter().filter(|(c, _)| *c == chain) {
            let Some(next) = rule.target().filter(|t| is_chain(t)) else { continue };
            if reached.contains_key(next) {
                continue;
            }
            let mut to_next = path.clone();
            to_next.push(*rule);
            reached.insert(next.to_string(), to_next);
            queue.push_back(next.to_string());
        }
    }
    reached
}
