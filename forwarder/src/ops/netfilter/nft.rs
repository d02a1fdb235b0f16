//! Reads `nft -a list ruleset` output into the model: tables, their chains (type, hook,
//! policy) and rules, each with the handle its delete command needs. Sets, maps and
//! flowtables are skipped; a rule that names a set (`ip saddr @allowed`) keeps that match in
//! `unknown`.

use super::{
    lexer::nft_tokens,
    model::{nets, port_ranges, Chain, Cond, Matches, Rule, Table, Tool, Verdict},
};

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
                match port_ranges(&items, Tool::Nft.range_sep()) {
                    Some(_) => m.dports = Some(Cond { negated, items }),
                    None => m.unknown.push(format!("{t} dport {}", items.join(","))),
                }
                i = end;
            }
            ("ip", "saddr") => {
                let (negated, items, end) = value_at(i + 2);
                match nets(&items) {
                    Some(_) => m.sources = Some(Cond { negated, items }),
                    None => m.unknown.push(format!("ip saddr {}", items.join(","))),
                }
                i = end;
            }
            ("ip", "daddr") => {
                let (negated, items, end) = value_at(i + 2);
                m.destinations = Some(Cond { negated, items });
                i = end;
            }
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
pub fn parse(text: &str) -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    // Brace depth: 0 outside tables, 1 in a table, 2 in a chain.
    let mut depth = 0usize;
    // Inside a table-level block the model leaves out (set, map, flowtable, ...): skip until the
    // depth is back at 1.
    let mut skipping = false;
    for (i, line) in text.lines().enumerate() {
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
            (0, "table") if tokens.len() >= 3 => tables.push(Table {
                tool: Tool::Nft,
                family: tokens[1].clone(),
                name: tokens[2].clone(),
                chains: Vec::new(),
                unreadable: Vec::new(),
            }),
            (1, "chain") if tokens.len() >= 2 => {
                if let Some(t) = tables.last_mut() {
                    t.chains.push(Chain { name: tokens[1].clone(), ..Default::default() });
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
                c.rules.push(nft_rule(&family, &name, &c.name, i + 1, line, &tokens, &comment));
            }
            _ => {}
        }
    }
    tables
}

/// `type filter hook input priority filter; policy drop;`
fn nft_chain_head(chain: &mut Chain, tokens: &[String]) {
    let after = |key: &str| tokens.iter().position(|t| t == key).and_then(|p| tokens.get(p + 1));
    chain.kind = after("type").cloned().unwrap_or_default();
    chain.hook = after("hook").cloned();
    chain.policy_drop = after("policy").is_some_and(|p| p == "drop");
}

fn nft_rule(
    family: &str,
    table: &str,
    chain: &str,
    line_no: usize,
    line: &str,
    tokens: &[String],
    comment: &str,
) -> Rule {
    let (matches, verdict) = parse_nft_rule(tokens);
    let text = line.split(" # handle").next().unwrap_or(line).trim().to_string();
    let delete = match comment.strip_prefix("handle ").and_then(|h| h.trim().parse::<u64>().ok()) {
        Some(h) => format!("nft delete rule {family} {table} {chain} handle {h}"),
        None => format!("nft -a list chain {family} {table} {chain}  # then: nft delete rule {family} {table} {chain} handle N"),
    };
    Rule { line: line_no, matches, verdict, text, delete, opts: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::netfilter::{fixtures::NFT, lexer::nft_tokens};

    #[test]
    fn nft_ruleset_parses_chains_sets_and_handles() {
        let tables = parse(NFT);
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
    fn nft_values_read_negation_sets_and_lists() {
        let (t, _) = nft_tokens("tcp dport != { 22, 8080 } ct state established,related accept");
        assert_eq!(nft_value(&t, 2), (true, vec!["22".into(), "8080".into()], 8));
        assert_eq!(nft_value(&t, 10), (false, vec!["established".into(), "related".into()], 13));
        let (m, v) = parse_nft_rule(&t);
        assert_eq!(v, Verdict::Accept);
        assert!(m.dports.unwrap().negated);
    }
}
