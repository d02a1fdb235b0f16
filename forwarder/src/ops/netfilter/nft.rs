//! Reads `nft -j list ruleset` (libnftables-json(5)) into the model: tables, their chains
//! (type, hook, policy) and rules, each with the handle its delete command needs. nft's JSON
//! is its stable interface: values come typed (a set, a range, a prefix, `!=`), so no nft
//! syntax is parsed here. Sets, maps and flowtables are skipped; a rule that names a set
//! (`ip saddr @allowed`) keeps that match in `unknown`.

use super::{
    model::{nets, port_ranges, Chain, Cond, Matches, Rule, Table, Tool, Verdict},
    nft_text,
};
use serde::Deserialize;
use serde_json::Value;

/// The listing: one object per table, chain, rule, set, ... in that order of nesting.
#[derive(Deserialize)]
struct Listing {
    nftables: Vec<Object>,
}

/// One entry of the listing. Kinds the model leaves out (`metainfo`, `set`, `map`,
/// `flowtable`, ...) have none of these fields and are skipped.
#[derive(Deserialize)]
struct Object {
    table: Option<TableObject>,
    chain: Option<ChainObject>,
    rule: Option<RuleObject>,
}

#[derive(Deserialize)]
struct TableObject {
    family: String,
    name: String,
}

#[derive(Deserialize)]
struct ChainObject {
    family: String,
    table: String,
    name: String,
    /// Base chains only, like `hook` and `policy`.
    #[serde(rename = "type")]
    kind: Option<String>,
    hook: Option<String>,
    policy: Option<String>,
}

#[derive(Deserialize)]
struct RuleObject {
    family: String,
    table: String,
    chain: String,
    handle: u64,
    comment: Option<String>,
    /// Statements in order (libnftables-json(5) STATEMENTS), read as they come: the model
    /// names a few, and any other is kept as text in `unknown`.
    expr: Vec<Value>,
}

/// Parses `nft -j list ruleset` output. Fails only when it is not JSON of that shape.
pub fn parse(json: &str) -> Result<Vec<Table>, serde_json::Error> {
    let listing: Listing = serde_json::from_str(json)?;
    let mut tables: Vec<Table> = Vec::new();
    for (i, object) in listing.nftables.into_iter().enumerate() {
        if let Some(t) = object.table {
            tables.push(Table {
                tool: Tool::Nft,
                family: t.family,
                name: t.name,
                chains: Vec::new(),
                unreadable: Vec::new(),
            });
        } else if let Some(c) = object.chain {
            let Some(t) = find(&tables, &c.family, &c.table) else { continue };
            tables[t].chains.push(Chain {
                name: c.name,
                hook: c.hook,
                kind: c.kind.unwrap_or_default(),
                policy_drop: c.policy.as_deref() == Some("drop"),
                rules: Vec::new(),
            });
        } else if let Some(r) = object.rule {
            let Some(t) = find(&tables, &r.family, &r.table) else { continue };
            let Some(chain) = tables[t].chains.iter_mut().find(|c| c.name == r.chain) else {
                continue;
            };
            chain.rules.push(rule(i + 1, &r));
        }
    }
    Ok(tables)
}

/// The index of a table; a table is named by its family and name together.
fn find(tables: &[Table], family: &str, name: &str) -> Option<usize> {
    tables.iter().position(|t| t.family == family && t.name == name)
}

fn rule(line: usize, r: &RuleObject) -> Rule {
    let (matches, verdict) = matches_and_verdict(&r.expr);
    let delete =
        format!("nft delete rule {} {} {} handle {}", r.family, r.table, r.chain, r.handle);
    let text = nft_text::rule(&r.expr, r.comment.as_deref());
    Rule { line, matches, verdict, text, delete, opts: Vec::new() }
}

/// The matches of a rule's statements up to its verdict, and the verdict.
fn matches_and_verdict(statements: &[Value]) -> (Matches, Verdict) {
    let mut m = Matches::default();
    for statement in statements {
        let Some((kind, body)) = nft_text::single_key(statement) else {
            m.unknown.push(nft_text::statement(statement));
            continue;
        };
        if let Some(v) = verdict(kind, body) {
            return (m, v);
        }
        match kind {
            "match" if read_match(&mut m, body) => {}
            // Counting and logging do not change where a packet goes.
            "counter" | "log" => {}
            _ => m.unknown.push(nft_text::statement(statement)),
        }
    }
    (m, Verdict::Other("no verdict".into()))
}

/// Reads `{"op", "left", "right"}` into the field the model has for it; false when there
/// is none (another field, an operator such as `>`, a value such as `@set`).
fn read_match(m: &mut Matches, body: &Value) -> bool {
    let negated = match body["op"].as_str() {
        Some("==" | "in") => false,
        Some("!=") => true,
        _ => return false,
    };
    let Some(field) = nft_text::field(&body["left"]) else { return false };
    let Some(items) = values(&body["right"]) else { return false };
    let cond = |items| Some(Cond { negated, items });
    match field {
        ("meta", "l4proto") | ("ip", "protocol") => m.protocols = cond(items),
        (proto @ ("tcp" | "udp" | "sctp" | "th"), "dport")
            if port_ranges(&items, Tool::Nft.range_sep()).is_some() =>
        {
            // `th` is any transport header: the port says nothing of the protocol.
            if proto != "th" {
                m.protocols = Some(Cond { negated: false, items: vec![proto.to_string()] });
            }
            m.dports = cond(items);
        }
        ("ip", "saddr") if nets(&items).is_some() => m.sources = cond(items),
        ("ip", "daddr") => m.destinations = cond(items),
        ("ct", "state") => m.states = cond(items),
        ("meta", "iifname" | "iif") => m.in_ifaces = cond(items),
        ("meta", "oifname" | "oif") => m.out_ifaces = cond(items),
        _ => return false,
    }
    true
}

/// The items of a match's right side as nft writes them: `8080`, `9000-9092`,
/// `10.0.0.0/8`, `eth*`; a list (`established,related`) or anonymous set gives several.
/// `None` for anything else (a named set is a string, `@allowed`, and fails later checks).
fn values(right: &Value) -> Option<Vec<String>> {
    match right {
        Value::Array(items) => items.iter().map(nft_text::value).collect(),
        Value::Object(o) if o.contains_key("set") => {
            o["set"].as_array()?.iter().map(nft_text::value).collect()
        }
        v => Some(vec![nft_text::value(v)?]),
    }
}

/// The verdict a statement ends the rule with, if it does.
fn verdict(kind: &str, body: &Value) -> Option<Verdict> {
    let target = || body["target"].as_str().unwrap_or_default().to_string();
    Some(match kind {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        "return" => Verdict::Return,
        "jump" => Verdict::Jump(target()),
        "goto" => Verdict::Goto(target()),
        "masquerade" => Verdict::Masquerade,
        "dnat" => Verdict::Dnat(nft_text::nat_to(body)),
        "continue" | "snat" | "redirect" | "queue" | "notrack" => Verdict::Other(kind.into()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::netfilter::fixtures::NFT;
    use serde_json::json;

    #[test]
    fn nft_ruleset_parses_chains_sets_and_handles() {
        let tables = parse(NFT).unwrap();
        assert_eq!(
            tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            vec!["filter", "fw", "nat"]
        );
        let fw = &tables[1];
        assert_eq!(fw.chains.len(), 2, "the set is not a chain: {:?}", fw.chains);
        let input = fw.chain("in").unwrap();
        assert!(input.policy_drop);
        assert_eq!((input.kind.as_str(), input.hook.as_deref()), ("filter", Some("input")));
        assert_eq!(input.rules.len(), 5);
        let reject = &input.rules[4];
        assert_eq!(reject.verdict, Verdict::Reject);
        assert_eq!(reject.delete, "nft delete rule inet fw in handle 9");
        assert_eq!(
            reject.text,
            "iifname \"eth*\" tcp dport 9000-9092 log prefix \"no: \" reject with tcp reset"
        );
        assert!(reject.matches.unknown.is_empty(), "{:?}", reject.matches);
        assert_eq!(input.rules[2].matches.unknown, vec!["ip saddr @allowed"]);
        assert_eq!(input.rules[3].text, "tcp dport { 22, 8080 } accept comment \"ssh and probe\"");
        let nat = &tables[2];
        assert_eq!(
            nat.chain("PREROUTING").unwrap().rules[0].verdict,
            Verdict::Dnat("10.20.0.11:9092".into())
        );
        assert_eq!(nat.chain("POSTROUTING").unwrap().rules[0].verdict, Verdict::Masquerade);
    }

    /// `tcp dport != { 22, 8080 } ct state established,related accept`, from nftables 1.0.6.
    #[test]
    fn nft_values_read_negation_sets_and_lists() {
        let statements = [
            json!({"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                "right": {"set": [22, 8080]}}}),
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}},
                "right": ["established", "related"]}}),
            json!({"accept": null}),
        ];
        let (m, v) = matches_and_verdict(&statements);
        assert_eq!(v, Verdict::Accept);
        assert_eq!(m.dports, Some(Cond { negated: true, items: vec!["22".into(), "8080".into()] }));
        let states = vec!["established".to_string(), "related".to_string()];
        assert_eq!(m.states, Some(Cond { negated: false, items: states }));
        assert!(m.unknown.is_empty(), "{m:?}");
    }

    #[test]
    fn output_that_is_not_the_listing_fails() {
        assert!(parse("table ip filter {").is_err());
        assert!(parse(r#"{"tables": []}"#).is_err());
    }
}
