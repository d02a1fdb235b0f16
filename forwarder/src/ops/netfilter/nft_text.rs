//! nft syntax of the statements in `nft -j` output, for messages: the JSON has no text of a
//! rule, and the operator knows rules as `nft list ruleset` writes them. The statements the
//! model reads (matches on named fields, counters, logs, verdicts, NAT) are written as nft
//! 1.0.6 writes them; any other is shown as its JSON, which names it exactly.

use serde_json::Value;

/// A rule as `nft list ruleset` writes it, without the handle.
pub fn rule(statements: &[Value], comment: Option<&str>) -> String {
    let mut words: Vec<String> = statements.iter().map(statement).collect();
    words.extend(comment.map(|c| format!("comment {}", quoted(c))));
    words.join(" ")
}

/// The kind and body of `{"kind": body}`, the shape of every statement and most
/// expressions.
pub fn single_key(v: &Value) -> Option<(&str, &Value)> {
    match v.as_object()? {
        o if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), v)),
        _ => None,
    }
}

/// The field a match's left side reads: `("tcp", "dport")` for a payload field,
/// `("meta", "iifname")`, `("ct", "state")`. `None` for anything else (a conntrack field
/// of one direction, a raw payload, a concatenation, ...).
pub fn field(left: &Value) -> Option<(&str, &str)> {
    let (kind, body) = single_key(left)?;
    match kind {
        "payload" => Some((body["protocol"].as_str()?, body["field"].as_str()?)),
        "meta" => Some((kind, body["key"].as_str()?)),
        "ct" if body.get("dir").is_none() => Some((kind, body["key"].as_str()?)),
        _ => None,
    }
}

/// One value as nft writes it: `8080`, `9000-9092`, `10.0.0.0/8`, `eth*`, `@allowed`.
/// `None` for an expression that is not a plain value (a set, a map lookup, ...).
pub fn value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => match single_key(v)? {
            ("range", Value::Array(ends)) if ends.len() == 2 => {
                Some(format!("{}-{}", value(&ends[0])?, value(&ends[1])?))
            }
            ("prefix", p) => Some(format!("{}/{}", value(&p["addr"])?, p["len"].as_u64()?)),
            _ => None,
        },
    }
}

/// The options of `log`, in the order nft writes them (the JSON object has no order).
const LOG_OPTIONS: &[&str] = &["prefix", "group", "snaplen", "queue-threshold", "level", "flags"];

/// One statement as nft writes it; its JSON when the model does not name it.
pub fn statement(s: &Value) -> String {
    let json = || s.to_string();
    let Some((kind, body)) = single_key(s) else { return json() };
    match (kind, body) {
        ("match", m) => {
            let (Some(left), Some(op)) = (left_side(&m["left"]), m["op"].as_str()) else {
                return json();
            };
            let Some(right) = right_side(&m["right"], is_ifname(&m["left"])) else {
                return json();
            };
            match op {
                // nft leaves out the operator that is implied.
                "==" | "in" => format!("{left} {right}"),
                op => format!("{left} {op} {right}"),
            }
        }
        // accept, drop, masquerade, ...
        (kind, Value::Null) => kind.to_string(),
        ("jump" | "goto", b) => match b["target"].as_str() {
            Some(target) => format!("{kind} {target}"),
            None => json(),
        },
        ("counter", b) => match (b["packets"].as_u64(), b["bytes"].as_u64()) {
            (Some(p), Some(by)) => format!("counter packets {p} bytes {by}"),
            _ => json(),
        },
        ("log", Value::Object(options))
            if options.keys().all(|k| LOG_OPTIONS.contains(&k.as_str())) =>
        {
            let mut text = String::from("log");
            for name in LOG_OPTIONS {
                let Some(v) = options.get(*name) else { continue };
                let v = match v {
                    Value::String(p) if *name == "prefix" => quoted(p),
                    v => value(v).unwrap_or_else(|| v.to_string()),
                };
                text.push_str(&format!(" {name} {v}"));
            }
            text
        }
        ("reject", b) => {
            let with = [&b["type"], &b["expr"]].into_iter().filter_map(value).collect::<Vec<_>>();
            format!("reject with {}", with.join(" "))
        }
        ("dnat" | "snat", b) => {
            let family = b["family"].as_str().map(|f| format!("{f} ")).unwrap_or_default();
            format!("{kind} {family}to {}", nat_to(b))
        }
        _ => json(),
    }
}

/// Where a `dnat`/`snat` statement sends the packet: `10.20.0.11:9092`, `10.20.0.11`.
pub fn nat_to(body: &Value) -> String {
    let addr = value(&body["addr"]).unwrap_or_else(|| body["addr"].to_string());
    match value(&body["port"]) {
        Some(port) => format!("{addr}:{port}"),
        None => addr,
    }
}

/// `tcp dport`, `iifname` (nft writes the interface keys without `meta`), `meta l4proto`,
/// `ct state`.
fn left_side(left: &Value) -> Option<String> {
    Some(match field(left)? {
        ("meta", key @ ("iifname" | "oifname" | "iif" | "oif")) => key.to_string(),
        (kind, key) => format!("{kind} {key}"),
    })
}

/// A match's right side: a value, a list (`established,related`) or an anonymous set
/// (`{ 22, 8080 }`). nft quotes interface names, which are strings, not symbols.
fn right_side(right: &Value, quote: bool) -> Option<String> {
    let one = |v: &Value| match (v, quote) {
        (Value::String(s), true) => Some(quoted(s)),
        (v, _) => value(v),
    };
    let all = |items: &[Value]| items.iter().map(one).collect::<Option<Vec<_>>>();
    match right {
        Value::Array(items) => Some(all(items)?.join(",")),
        _ => match single_key(right) {
            Some(("set", Value::Array(items))) => Some(format!("{{ {} }}", all(items)?.join(", "))),
            _ => one(right),
        },
    }
}

fn is_ifname(left: &Value) -> bool {
    matches!(field(left), Some(("meta", "iifname" | "oifname" | "iif" | "oif")))
}

/// `"no: "`, as nft quotes a string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Statements of nftables 1.0.6 `nft -j` output and how `nft list ruleset` writes them.
    #[test]
    fn statements_are_written_as_nft_writes_them() {
        let cases = [
            (
                json!({"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}),
                "iif \"lo\"",
            ),
            (
                json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                    "right": {"set": ["tcp", "udp"]}}}),
                "meta l4proto { tcp, udp }",
            ),
            (
                json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}),
                "ip saddr 10.0.0.0/8",
            ),
            (
                json!({"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": "1.2.3.4"}}),
                "ip daddr != 1.2.3.4",
            ),
            (
                json!({"match": {"op": ">", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                    "right": 1024}}),
                "tcp dport > 1024",
            ),
            (json!({"jump": {"target": "c"}}), "jump c"),
            (json!({"log": {"level": "info"}}), "log level info"),
            (json!({"dnat": {"family": "ip", "addr": "10.0.0.6"}}), "dnat ip to 10.0.0.6"),
            (
                json!({"limit": {"rate": 10, "burst": 5, "per": "second"}}),
                r#"{"limit":{"burst":5,"per":"second","rate":10}}"#,
            ),
        ];
        for (statement_json, text) in cases {
            assert_eq!(statement(&statement_json), text);
        }
    }
}
