//! Which connections a nat rule applies to, in the terms the forwarder has for them: an
//! interface (`interface`), a destination address (`listen_ip`), sources
//! (`allowed_sources`), the protocol and one listen port. A match with no such term (a
//! negation, a port list, a mark, ...) lands in `unknown` as written, which keeps the rule
//! from being translated.

use crate::ops::netfilter::model::{is_target_option, Cond, Matches, Opt, Rule};

/// How a chain is reached from a built-in one: the conditions of the jumps on the way, or
/// why no packet gets there.
pub(super) type Reached = Result<Matches, String>;

/// `rule`'s matches: each of the terms above at most once, with its value as written.
pub(super) fn scope(rule: &Rule) -> Matches {
    let mut m = Matches::default();
    for o in &rule.opts {
        let name = o.name.as_str();
        let slot = match name {
            "-A" | "--append" | "-I" | "--insert" => continue,
            n if is_target_option(n) || is_to_option(n) => continue,
            "-i" | "--in-interface" => &mut m.in_ifaces,
            "-d" | "--destination" | "--dst" => &mut m.destinations,
            "-s" | "--source" | "--src" => &mut m.sources,
            "-p" | "--protocol" => &mut m.protocols,
            "--dport" | "--destination-port" => &mut m.dports,
            _ => {
                if !neutral(o) {
                    m.unknown.push(o.text());
                }
                continue;
            }
        };
        let value = o.values.first().cloned().unwrap_or_default();
        // Old syntax puts the "!" after the option: `-i ! eth0`.
        if o.negated || o.negated_after {
            m.unknown.push(format!("! {name} {value}"));
        } else {
            *slot = Some(Cond { negated: false, items: vec![value] });
        }
    }
    m
}

/// `--to-destination`, `--to-source`, `--to-ports` and the short `--to` ip_fwd.sh may use.
pub(super) fn is_to_option(name: &str) -> bool {
    name == "--to" || name.starts_with("--to-")
}

/// Options that do not narrow the forwarded connections.
fn neutral(o: &Opt) -> bool {
    match o.name.as_str() {
        // The match module's name says nothing; its options do. `-o` cannot be given in
        // PREROUTING and does not matter for noting a MASQUERADE.
        "-m" | "--match" | "-o" | "--out-interface" if !o.negated => true,
        // Free text.
        "--comment" => true,
        "--random" | "--random-fully" | "--persistent" => true,
        name => !o.negated && !o.values.is_empty() && o.values.iter().all(|v| harmless(name, v)),
    }
}

/// Match values that hold for every connection the forwarder would take.
fn harmless(opt: &str, value: &str) -> bool {
    match opt {
        // Only the first packet of a connection passes the nat table: it is always NEW.
        "--state" | "--ctstate" => value.split(',').any(|s| s == "NEW"),
        // The forwarder listens on the interface's own addresses by default.
        "--dst-type" => value == "LOCAL",
        _ => false,
    }
}

/// Both `outer` (met on the way into a chain) and `inner` (a rule in it) must hold.
pub(super) fn and(outer: Matches, inner: &Matches) -> Result<Matches, String> {
    Ok(Matches {
        in_ifaces: both("-i", outer.in_ifaces, &inner.in_ifaces)?,
        destinations: both("-d", outer.destinations, &inner.destinations)?,
        sources: both("-s", outer.sources, &inner.sources)?,
        protocols: both("-p", outer.protocols, &inner.protocols)?,
        dports: both("--dport", outer.dports, &inner.dports)?,
        unknown: outer.unknown.into_iter().chain(inner.unknown.clone()).collect(),
        ..Matches::default()
    })
}

fn both(
    opt: &str,
    outer: Option<Cond<String>>,
    inner: &Option<Cond<String>>,
) -> Result<Option<Cond<String>>, String> {
    match (outer, inner) {
        (Some(a), Some(b)) if a != *b => Err(format!(
            "never matches: {opt} {} contradicts {opt} {} of the jump into this chain",
            written(b),
            written(&a)
        )),
        (outer, inner) => Ok(inner.clone().or(outer)),
    }
}

/// So that a reason names the jump a condition came from.
pub(super) fn tagged(mut m: Matches, line: usize) -> Matches {
    for u in &mut m.unknown {
        *u = format!("{u} (line {line})");
    }
    m
}

/// The value of a term, as written.
pub(super) fn value(c: &Option<Cond<String>>) -> Option<&str> {
    c.as_ref().and_then(|c| c.items.first()).map(String::as_str)
}

fn written(c: &Cond<String>) -> String {
    c.items.join(",")
}
