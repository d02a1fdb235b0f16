//! `forwarder import-iptables`: turns the NAT rules that the legacy `ip_fwd.sh` script left
//! in iptables, as printed by `iptables-save -t nat`, into `[[rule]]` blocks for
//! forwarder.toml.
//!
//! Why: the hosts being migrated already hold their broker mapping in iptables, and reading
//! it back is safer than retyping ports and addresses by hand. Per broker the script adds a
//! `DNAT` in PREROUTING (listen port -> broker IP:port) and a `MASQUERADE` (or `SNAT`) in
//! POSTROUTING. Only the DNAT becomes a rule; the forwarder always rewrites the source of
//! what it forwards, so a MASQUERADE/SNAT is merely noted.
//!
//! The translation is conservative: a DNAT becomes a rule only when the forwarder would
//! forward the same connections to the same place. Anything it cannot express (a source
//! restriction, a negated match, UDP, port or address ranges, a DNAT in OUTPUT, ...) is
//! listed as not translated with its line and the reason, so nothing is silently dropped
//! or widened. Lines that are not NAT (RETURN, ACCEPT, jumps, other tables) are skipped.

use crate::config;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;

/// The result of reading one `iptables-save` text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversion {
    /// In input order; listen ports are unique.
    pub rules: Vec<ImportedRule>,
    /// In input order.
    pub untranslated: Vec<Untranslated>,
    /// A MASQUERADE or SNAT applying to forwarded traffic was found (informational only).
    pub masquerade_seen: bool,
}

/// A DNAT rule the forwarder can take over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedRule {
    pub name: String,
    pub listen: u16,
    /// "IP:PORT".
    pub target: String,
    /// 1-based line of the DNAT rule in the input.
    pub line: usize,
    /// The DNAT rule as written, without `iptables-save -c` counters.
    pub text: String,
    /// `-i` of the rule, or of the jump that leads to its chain.
    pub interface: Option<String>,
    /// `-d` of the rule or its jump, without a `/32`: iptables forwarded only connections to
    /// that address (the forwarder's `listen_ip`, which applies to every rule).
    pub listen_addr: Option<String>,
}

/// A NAT rule, or an unreadable line, that has no equivalent in the forwarder's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Untranslated {
    /// 1-based.
    pub line: usize,
    /// As written, without counters.
    pub text: String,
    pub reason: String,
}

/// Reads `iptables-save` output (nat table; other tables are skipped).
pub fn convert(text: &str) -> Conversion {
    let input = Input::parse(text);
    let prerouting = input.contexts("PREROUTING");
    let postrouting = input.contexts("POSTROUTING");
    let mut conv =
        Conversion { rules: Vec::new(), untranslated: input.unreadable, masquerade_seen: false };
    for rule in &input.rules {
        match rule.jump.as_deref() {
            Some("DNAT") => match dnat(rule, prerouting.get(&rule.chain)) {
                Ok(imported) => conv.add_rule(imported),
                Err(reason) => conv.reject(rule, reason),
            },
            Some("SNAT" | "MASQUERADE") => match snat(rule, postrouting.get(&rule.chain)) {
                Ok(()) => conv.masquerade_seen = true,
                Err(reason) => conv.reject(rule, reason),
            },
            Some("REDIRECT") => conv.reject(
                rule,
                "REDIRECT sends connections to a port of this host; the forwarder only \
                 forwards to other hosts"
                    .into(),
            ),
            Some("NETMAP") => {
                conv.reject(rule, "NETMAP maps whole networks; rules map single ports".into())
            }
            // Jumps, RETURN, ACCEPT, LOG, ...: no address translation of their own.
            _ => {}
        }
    }
    conv.untranslated.sort_by_key(|u| u.line);
    conv
}

impl Conversion {
    /// `[[rule]]` blocks to paste into forwarder.toml, each after a comment naming its
    /// source line; then a note when no MASQUERADE/SNAT was seen, then what was not
    /// translated. Every line is TOML (the notes are comments).
    pub fn to_toml(&self) -> String {
        let mut out = vec![
            "# [[rule]] blocks imported from iptables-save by `forwarder import-iptables`."
                .to_string(),
            "# Add them to forwarder.toml after the top-level settings.".to_string(),
        ];
        if self.rules.is_empty() {
            out.push("# No DNAT rule could be translated.".into());
        }
        for rule in &self.rules {
            out.push(String::new());
            out.extend(rule.toml_block());
        }
        if !self.masquerade_seen {
            out.push(String::new());
            out.push(comment(
                "note: no MASQUERADE or SNAT rule was found. Nothing to do: the forwarder \
                 always rewrites the source of forwarded connections to its own address.",
            ));
        }
        if !self.untranslated.is_empty() {
            out.push(String::new());
        }
        for u in &self.untranslated {
            out.push(comment(&format!(
                "not translated (line {}): {} -- {}",
                u.line, u.text, u.reason
            )));
        }
        out.join("\n") + "\n"
    }

    /// Keeps the first rule for a listen port: iptables applies the first matching DNAT,
    /// so later ones on the same port never took effect.
    fn add_rule(&mut self, rule: ImportedRule) {
        match self.rules.iter().find(|r| r.listen == rule.listen) {
            Some(first) => {
                let reason = format!(
                    "listen port {} is already forwarded by line {}",
                    rule.listen, first.line
                );
                self.untranslated.push(Untranslated { line: rule.line, text: rule.text, reason });
            }
            None => self.rules.push(rule),
        }
    }

    fn reject(&mut self, rule: &Rule, reason: String) {
        self.untranslated.push(Untranslated { line: rule.line, text: rule.text.clone(), reason });
    }
}

impl ImportedRule {
    fn toml_block(&self) -> Vec<String> {
        let mut block = vec![comment(&format!("from line {}: {}", self.line, self.text))];
        if let Some(i) = &self.interface {
            block.push(comment(&format!(
                "iptables matched interface {i} only (the forwarder's `interface` setting)"
            )));
        }
        if let Some(a) = &self.listen_addr {
            block.push(comment(&format!(
                "iptables matched destination {a} only (the forwarder's `listen_ip` setting)"
            )));
        }
        block.extend([
            "[[rule]]".to_string(),
            format!("name = {}", toml_string(&self.name)),
            format!("listen = {}", self.listen),
            format!("target = {}", toml_string(&self.target)),
        ]);
        block
    }
}

/// A TOML comment line. TOML forbids control characters (other than tab) in comments, and
/// the text comes from the input, so they are replaced.
fn comment(text: &str) -> String {
    let clean: String =
        text.chars().map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect();
    format!("# {clean}")
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

// ---- DNAT and SNAT ---------------------------------------------------------------------------

/// The rule the forwarder would need for `rule`, reached with `context` (None: its chain
/// is not reached from PREROUTING).
fn dnat(rule: &Rule, context: Option<&Reached>) -> Result<ImportedRule, String> {
    let context = context.ok_or_else(|| not_reached(&rule.chain, "PREROUTING"))?;
    let cond = context.clone()?.and(&rule.cond)?;
    if !cond.unsupported.is_empty() {
        return Err(format!("cannot express {}", cond.unsupported.join(", ")));
    }
    if let Some(s) = &cond.source {
        return Err(format!(
            "matches only sources {s}; the forwarder's allowed_sources applies to every rule"
        ));
    }
    check_tcp(cond.proto.as_deref())?;
    let listen = listen_port(cond.dport.as_deref())?;
    let target = match rule.to.as_slice() {
        [to] => dnat_target(to, listen)?,
        [] => return Err("DNAT without --to-destination".into()),
        _ => return Err("several --to-destination (round robin) for one port".into()),
    };
    Ok(ImportedRule {
        name: format!("broker-{listen}"),
        listen,
        target,
        line: rule.line,
        text: rule.text.clone(),
        interface: cond.interface,
        listen_addr: cond.dest.map(|d| d.strip_suffix("/32").map(str::to_string).unwrap_or(d)),
    })
}

fn check_tcp(proto: Option<&str>) -> Result<(), String> {
    match proto.map(str::to_ascii_lowercase).as_deref() {
        Some("tcp" | "6") => Ok(()),
        Some("udp" | "17") => Err("UDP: the forwarder forwards TCP only".into()),
        Some(p) => Err(format!("protocol {p}: the forwarder forwards TCP only")),
        None => Err("no -p tcp: iptables forwards every protocol; the forwarder only TCP".into()),
    }
}

fn listen_port(dport: Option<&str>) -> Result<u16, String> {
    match dport {
        None => Err("no --dport: a rule forwards one listen port".into()),
        Some(d) if d.contains(':') => Err(format!("port range {d}: a rule forwards one port")),
        Some(d) => port(d),
    }
}

/// "IP:PORT" from a `--to-destination` of "IP" or "IP:PORT". Without a port iptables keeps
/// the destination port, which is the listen port.
fn dnat_target(to: &str, listen: u16) -> Result<String, String> {
    let (addr, target_port) = match to.rsplit_once(':') {
        Some((addr, p)) => (addr, Some(p)),
        None => (to, None),
    };
    if addr.contains('-') {
        return Err(format!("address range {addr}: a rule forwards to one host"));
    }
    let ip: Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let target_port = match target_port {
        None => listen,
        Some(p) if p.contains('-') => {
            return Err(format!("port range {p}: a rule forwards to one port"));
        }
        Some(p) => port(p)?,
    };
    let target = format!("{ip}:{target_port}");
    // iptables takes any address; a rule's target must pass check-config too (found by
    // fuzz/fuzz_targets/import_iptables.rs: a DNAT to 127.0.0.1 came out as a rule that
    // check-config refuses).
    config::parse_target(&target)
        .map_err(|_| format!("{ip} is not a unicast address of another host"))?;
    Ok(target)
}

fn port(s: &str) -> Result<u16, String> {
    s.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("{s:?} is not a port"))
}

/// Ok when `rule` (a MASQUERADE or SNAT) is the kind `ip_fwd.sh` adds: in POSTROUTING and
/// not tied to a source. A source-bound one (Docker's `-s 172.17.0.0/16`) NATs this host's
/// own or its containers' outgoing traffic, which the forwarder does not take over.
fn snat(rule: &Rule, context: Option<&Reached>) -> Result<(), String> {
    let context = context.ok_or_else(|| not_reached(&rule.chain, "POSTROUTING"))?;
    let cond = context.clone()?.and(&rule.cond)?;
    match cond.source {
        Some(s) => Err(format!(
            "source NAT of traffic from {s}, not of forwarded connections; the forwarder \
             does no general source NAT"
        )),
        None => Ok(()),
    }
}

fn not_reached(chain: &str, start: &str) -> String {
    match chain {
        "OUTPUT" => "OUTPUT rewrites connections this host opens itself, not forwarded ones".into(),
        _ => format!("chain {chain} is not reached from {start}"),
    }
}

// ---- matches -----------------------------------------------------------------------------

/// The matches of a rule that decide which connections it applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cond {
    interface: Option<String>,
    dest: Option<String>,
    source: Option<String>,
    proto: Option<String>,
    dport: Option<String>,
    /// Matches with no forwarder equivalent, as written ("! -i docker0", "--sport 22").
    unsupported: Vec<String>,
}

impl Cond {
    /// Both `self` (met on the way into a chain) and `inner` (a rule in it) must hold.
    fn and(self, inner: &Cond) -> Result<Cond, String> {
        Ok(Cond {
            interface: both("-i", self.interface, &inner.interface)?,
            dest: both("-d", self.dest, &inner.dest)?,
            source: both("-s", self.source, &inner.source)?,
            proto: both("-p", self.proto, &inner.proto)?,
            dport: both("--dport", self.dport, &inner.dport)?,
            unsupported: self.unsupported.into_iter().chain(inner.unsupported.clone()).collect(),
        })
    }

    /// So that a reason names the jump a condition came from.
    fn tagged(mut self, line: usize) -> Cond {
        for u in &mut self.unsupported {
            *u = format!("{u} (line {line})");
        }
        self
    }
}

fn both(
    opt: &str,
    outer: Option<String>,
    inner: &Option<String>,
) -> Result<Option<String>, String> {
    match (outer, inner) {
        (Some(a), Some(b)) if a != *b => Err(format!(
            "never matches: {opt} {b} contradicts {opt} {a} of the jump into this chain"
        )),
        (outer, inner) => Ok(inner.clone().or(outer)),
    }
}

/// How a chain is reached from a built-in one: the conditions of the jumps on the way, or
/// why no packet gets there.
type Reached = Result<Cond, String>;

// ---- input -------------------------------------------------------------------------------

/// One `-A` line of the nat table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    line: usize,
    text: String,
    chain: String,
    cond: Cond,
    /// `-j` / `-g`: a target (DNAT, MASQUERADE, ...) or a user chain.
    jump: Option<String>,
    /// Values of `--to-destination`, `--to-source`, `--to`, ...; the target says which.
    to: Vec<String>,
}

/// The nat table of the input.
#[derive(Debug, Default)]
struct Input {
    rules: Vec<Rule>,
    chains: HashSet<String>,
    /// Lines of the nat table that are not iptables-save syntax.
    unreadable: Vec<Untranslated>,
}

impl Input {
    fn parse(text: &str) -> Input {
        let mut input = Input::default();
        // Before any `*table` header the text is taken as nat: a pasted excerpt of rules.
        let mut in_nat = true;
        for (i, raw) in text.lines().enumerate() {
            let line = strip_counters(raw.trim());
            if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table.trim() == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split_whitespace().next().unwrap_or_default();
                input.chains.insert(chain.to_string());
            } else {
                input.add_line(i + 1, line);
            }
        }
        input
    }

    fn add_line(&mut self, line: usize, text: &str) {
        if let Err(reason) = self.read_line(line, text) {
            self.unreadable.push(Untranslated { line, text: text.to_string(), reason });
        }
    }

    /// `-A`/`-I` rules; `-N` and `-P` too, so `iptables -t nat -S` output works as well.
    fn read_line(&mut self, line: usize, text: &str) -> Result<(), String> {
        let words = split_words(text)?;
        match words.first().map(String::as_str) {
            Some("-A" | "--append" | "-I" | "--insert") => {
                let rule = parse_rule(line, text, &words)?;
                self.chains.insert(rule.chain.clone());
                self.rules.push(rule);
            }
            Some("-N" | "--new-chain") => {
                self.chains.insert(words.get(1).ok_or("-N without a chain")?.clone());
            }
            Some("-P" | "--policy") => {}
            _ => return Err("not an iptables-save line".into()),
        }
        Ok(())
    }

    /// The chains reached from the built-in chain `start`, each with the conditions of the
    /// first path of jumps found to it (breadth first; this also stops at loops).
    fn contexts(&self, start: &str) -> HashMap<String, Reached> {
        let mut reached = HashMap::from([(start.to_string(), Ok(Cond::default()))]);
        let mut queue = VecDeque::from([start.to_string()]);
        while let Some(chain) = queue.pop_front() {
            let outer: Reached = reached[&chain].clone();
            for rule in self.rules.iter().filter(|r| r.chain == chain) {
                let Some(next) = rule.jump.as_ref().filter(|j| self.chains.contains(*j)) else {
                    continue;
                };
                if reached.contains_key(next) {
                    continue;
                }
                let inner = rule.cond.clone().tagged(rule.line);
                reached.insert(next.clone(), outer.clone().and_then(|o| o.and(&inner)));
                queue.push_back(next.clone());
            }
        }
        reached
    }
}

/// `[12:720] -A ...` (iptables-save -c) -> `-A ...`.
fn strip_counters(line: &str) -> &str {
    let Some((counters, rest)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) else {
        return line;
    };
    let numbers = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match counters.split_once(':') {
        Some((packets, bytes)) if numbers(packets) && numbers(bytes) => rest.trim_start(),
        _ => line,
    }
}

/// Words as iptables-save quotes them: `"..."` with backslash escapes (comments with
/// spaces), plus `'...'` for hand-edited files.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '"' | '\'' => {
                let w = word.get_or_insert_with(String::new);
                read_quoted(c, &mut chars, w)?;
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

fn read_quoted(quote: char, chars: &mut std::str::Chars, word: &mut String) -> Result<(), String> {
    while let Some(c) = chars.next() {
        match c {
            c if c == quote => return Ok(()),
            '\\' if quote == '"' => word.extend(chars.next()),
            c => word.push(c),
        }
    }
    Err(format!("unterminated {quote} quote"))
}

fn parse_rule(line: usize, text: &str, words: &[String]) -> Result<Rule, String> {
    let mut rule = Rule {
        line,
        text: text.to_string(),
        chain: String::new(),
        cond: Cond::default(),
        jump: None,
        to: Vec::new(),
    };
    let mut words = Words { words, pos: 0 };
    while let Some(opt) = words.next() {
        let negated = opt == "!";
        let opt = if negated { words.next().ok_or("a lone \"!\"")? } else { opt };
        apply_option(&mut rule, opt, negated, &mut words)?;
    }
    if rule.chain.is_empty() {
        return Err("a rule without a chain".into());
    }
    Ok(rule)
}

/// Takes `opt` (already read) and its value(s) from `words` into `rule`.
fn apply_option(
    rule: &mut Rule,
    opt: &str,
    negated: bool,
    words: &mut Words,
) -> Result<(), String> {
    match opt {
        "-A" | "--append" => rule.chain = words.value(opt)?.1,
        "-I" | "--insert" => {
            rule.chain = words.value(opt)?.1;
            // An optional rule number follows the chain.
            words.skip_if(|w| w.bytes().all(|b| b.is_ascii_digit()));
        }
        "-j" | "--jump" | "-g" | "--goto" => rule.jump = Some(words.value(opt)?.1),
        // --to-destination, --to-source, --to-ports and the short `--to` the script may use.
        o if o == "--to" || o.starts_with("--to-") => rule.to.push(words.value(opt)?.1),
        _ => return apply_match(&mut rule.cond, opt, negated, words),
    }
    Ok(())
}

/// A match option: the ones the forwarder can express land in `cond`'s fields.
fn apply_match(cond: &mut Cond, opt: &str, negated: bool, words: &mut Words) -> Result<(), String> {
    let slot = match opt {
        "-i" | "--in-interface" => &mut cond.interface,
        "-d" | "--destination" | "--dst" => &mut cond.dest,
        "-s" | "--source" | "--src" => &mut cond.source,
        "-p" | "--protocol" => &mut cond.proto,
        "--dport" | "--destination-port" => &mut cond.dport,
        _ => return apply_other(cond, opt, negated, words),
    };
    // Old syntax puts the "!" after the option: `-i ! eth0`.
    let (negated_after, value) = words.value(opt)?;
    if negated || negated_after {
        cond.unsupported.push(format!("! {opt} {value}"));
    } else {
        *slot = Some(value);
    }
    Ok(())
}

/// Options that do not narrow the forwarded connections are accepted; anything else is
/// recorded, with its values, as unsupported.
fn apply_other(cond: &mut Cond, opt: &str, negated: bool, words: &mut Words) -> Result<(), String> {
    match opt {
        // The match module's name says nothing; its options do. `-o` cannot be given in
        // PREROUTING and does not matter for noting a MASQUERADE.
        "-m" | "--match" | "-o" | "--out-interface" if !negated => {
            words.value(opt)?;
            return Ok(());
        }
        // Free text, which may well start with '-'.
        "--comment" => {
            words.next().ok_or("--comment without a value")?;
            return Ok(());
        }
        "--random" | "--random-fully" | "--persistent" => return Ok(()),
        _ => {}
    }
    let values = words.take_while(|w| !w.starts_with('-') && w != "!");
    if negated || values.is_empty() || !values.iter().all(|v| harmless(opt, v)) {
        let bang = if negated { "! " } else { "" };
        cond.unsupported.push(format!("{bang}{opt} {}", values.join(" ")).trim_end().to_string());
    }
    Ok(())
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

/// A cursor over the words of a rule.
struct Words<'a> {
    words: &'a [String],
    pos: usize,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let w = self.words.get(self.pos)?;
        self.pos += 1;
        Some(w)
    }

    /// The value of `opt`, and whether an old-style "!" preceded it. No value starts with
    /// '-': a next option there means the value is missing.
    fn value(&mut self, opt: &str) -> Result<(bool, String), String> {
        let negated = self.words.get(self.pos).is_some_and(|w| w == "!");
        if negated {
            self.pos += 1;
        }
        match self.words.get(self.pos) {
            Some(v) if !v.starts_with('-') => {
                self.pos += 1;
                Ok((negated, v.clone()))
            }
            _ => Err(format!("{opt} without a value")),
        }
    }

    fn skip_if(&mut self, f: impl Fn(&str) -> bool) {
        if self.words.get(self.pos).is_some_and(|w| f(w)) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(&str) -> bool) -> Vec<String> {
        let start = self.pos;
        while self.words.get(self.pos).is_some_and(|w| f(w)) {
            self.pos += 1;
        }
        self.words[start..self.pos].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rules` inside a nat table as iptables-save prints it: the first rule is on line 6.
    fn nat(rules: &str) -> String {
        format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n{rules}COMMIT\n"
        )
    }

    /// The only rule of `rules`, which must translate.
    fn one(rules: &str) -> ImportedRule {
        let c = convert(&nat(rules));
        assert!(c.untranslated.is_empty(), "{:#?}", c.untranslated);
        assert_eq!(c.rules.len(), 1, "{c:#?}");
        c.rules[0].clone()
    }

    /// The only untranslated line of `rules`, as (line, reason).
    fn refused(rules: &str) -> (usize, String) {
        let c = convert(&nat(rules));
        assert!(c.rules.is_empty(), "{:#?}", c.rules);
        assert_eq!(c.untranslated.len(), 1, "{c:#?}");
        (c.untranslated[0].line, c.untranslated[0].reason.clone())
    }

    fn rule(name: &str, listen: u16, target: &str, line: usize, text: &str) -> ImportedRule {
        ImportedRule {
            name: name.into(),
            listen,
            target: target.into(),
            line,
            text: text.into(),
            interface: Some("eth0".into()),
            listen_addr: None,
        }
    }

    const FIXTURE: &str = include_str!("../../../tests/fixtures/ip_fwd_nat.save");
    const DNAT_9093: &str =
        "-A PREROUTING -i eth0 -p tcp -m tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092";

    // ---- what ip_fwd.sh writes -------------------------------------------------------------

    #[test]
    fn typical_ip_fwd_output_for_three_brokers() {
        let c = convert(FIXTURE);
        let text = |port: u16, ip: &str| {
            format!(
                "-A PREROUTING -i eth0 -p tcp -m tcp --dport {port} -j DNAT --to-destination \
                 {ip}:9092"
            )
        };
        assert_eq!(
            c,
            Conversion {
                rules: vec![
                    rule("broker-9092", 9092, "10.20.0.11:9092", 7, &text(9092, "10.20.0.11")),
                    rule("broker-9093", 9093, "10.20.0.12:9092", 8, &text(9093, "10.20.0.12")),
                    rule("broker-9094", 9094, "10.20.0.13:9092", 9, &text(9094, "10.20.0.13")),
                ],
                untranslated: vec![],
                masquerade_seen: true,
            }
        );
    }

    #[test]
    fn rules_written_without_a_table_header_are_taken_as_nat() {
        let c = convert(&format!("{DNAT_9093}\n-A POSTROUTING -o eth0 -j MASQUERADE\n"));
        assert_eq!(c.rules, vec![rule("broker-9093", 9093, "10.20.0.12:9092", 1, DNAT_9093)]);
        assert!(c.masquerade_seen);
    }

    // ---- accepted variants -----------------------------------------------------------------

    #[test]
    fn dport_without_m_tcp() {
        let r = one(
            "-A PREROUTING -i eth0 -p tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n",
        );
        assert_eq!((r.listen, r.target.as_str(), r.line), (9093, "10.20.0.12:9092", 6));
    }

    #[test]
    fn short_to_option() {
        let r = one("-A PREROUTING -i eth0 -p tcp --dport 9093 -j DNAT --to 10.20.0.12:9092\n");
        assert_eq!(r.target, "10.20.0.12:9092");
    }

    #[test]
    fn long_option_names() {
        let r = one(concat!(
            "--append PREROUTING --in-interface eth0 --protocol tcp --destination-port 9093 ",
            "--jump DNAT --to-destination 10.20.0.12:9092\n",
        ));
        assert_eq!((r.listen, r.interface.as_deref()), (9093, Some("eth0")));
    }

    #[test]
    fn dnat_without_a_port_keeps_the_listen_port() {
        let r =
            one("-A PREROUTING -p tcp -m tcp --dport 9093 -j DNAT --to-destination 10.20.0.12\n");
        assert_eq!(r.target, "10.20.0.12:9093");
        assert_eq!(r.interface, None);
    }

    #[test]
    fn destination_address_becomes_the_listen_address() {
        let r = one(concat!(
            "-A PREROUTING -d 10.0.0.4/32 -i eth0 -p tcp -m tcp --dport 9093 ",
            "-j DNAT --to-destination 10.20.0.12:9092\n",
        ));
        assert_eq!(r.listen_addr.as_deref(), Some("10.0.0.4"));
        let c = Conversion { rules: vec![r], untranslated: vec![], masquerade_seen: true };
        assert!(c.to_toml().contains("# iptables matched destination 10.0.0.4 only"));

        let r =
            one("-A PREROUTING -d 10.0.0.0/24 -p tcp --dport 9093 -j DNAT --to 10.20.0.12:9092\n");
        assert_eq!(r.listen_addr.as_deref(), Some("10.0.0.0/24"));
    }

    #[test]
    fn rule_in_a_user_chain_inherits_the_jump_conditions() {
        let c = convert(&nat(concat!(
            ":KAFKA - [0:0]\n",
            "-A PREROUTING -d 10.0.0.4/32 -i eth0 -j KAFKA\n",
            "-A KAFKA -p tcp -m tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n",
            "-A KAFKA -p tcp -m tcp --dport 9094 -j DNAT --to-destination 10.20.0.13:9092\n",
        )));
        assert!(c.untranslated.is_empty(), "{c:#?}");
        let got: Vec<_> = c
            .rules
            .iter()
            .map(|r| (r.listen, r.line, r.interface.as_deref(), r.listen_addr.as_deref()))
            .collect();
        assert_eq!(
            got,
            [(9093, 8, Some("eth0"), Some("10.0.0.4")), (9094, 9, Some("eth0"), Some("10.0.0.4"))]
        );
    }

    #[test]
    fn chain_reached_through_two_jumps_and_port_from_the_jump() {
        // The chain is declared only by its use, as in a hand-written excerpt.
        let r = one(concat!(
            "-A PREROUTING -i eth0 -j FWD\n",
            "-A FWD -p tcp --dport 9093 -j BROKER2\n",
            "-A BROKER2 -j DNAT --to-destination 10.20.0.12:9092\n",
        ));
        assert_eq!((r.listen, r.line, r.target.as_str()), (9093, 8, "10.20.0.12:9092"));
    }

    #[test]
    fn postrouting_masquerade_or_snat_for_the_broker() {
        for masq in [
            "-A POSTROUTING -d 10.20.0.12/32 -p tcp -m tcp --dport 9092 -j MASQUERADE\n",
            "-A POSTROUTING -d 10.20.0.12/32 -p tcp --dport 9092 -j SNAT --to-source 10.0.0.4\n",
            "-A POSTROUTING -o eth0 -j SNAT --to-source 10.0.0.4\n",
        ] {
            let c = convert(&nat(&format!("{DNAT_9093}\n{masq}")));
            assert!(c.masquerade_seen, "{masq}");
            assert!(c.untranslated.is_empty(), "{masq}: {c:#?}");
            assert!(!c.to_toml().contains("no MASQUERADE"));
        }
    }

    #[test]
    fn masquerade_in_a_chain_reached_from_postrouting() {
        let c = convert(&nat("-A POSTROUTING -o eth0 -j NATOUT\n-A NATOUT -j MASQUERADE\n"));
        assert!(c.masquerade_seen);
        assert!(c.untranslated.is_empty());
    }

    #[test]
    fn counters_are_stripped() {
        let c = convert(&nat(&format!(
            "[12:720] {DNAT_9093}\n[3:180] -A POSTROUTING -o eth0 -j MASQUERADE\n"
        )));
        assert_eq!(c.rules, vec![rule("broker-9093", 9093, "10.20.0.12:9092", 6, DNAT_9093)]);
        assert!(c.masquerade_seen);
    }

    #[test]
    fn comments_and_blank_lines_count_as_lines() {
        let c =
            convert(&format!("# Generated by iptables-save\n\n*nat\n  # indented\n{DNAT_9093}\n"));
        assert_eq!(c.rules[0].line, 5);
    }

    #[test]
    fn quoted_comment_match() {
        let r = one(concat!(
            "-A PREROUTING -i eth0 -p tcp -m tcp --dport 9093 ",
            "-m comment --comment \"kafka \\\"broker\\\" 2\" ",
            "-j DNAT --to-destination 10.20.0.12:9092\n",
        ));
        assert_eq!(r.target, "10.20.0.12:9092");
        // A comment may start with '-'; it is still the value of --comment.
        let r = one(concat!(
            "-A PREROUTING -p tcp --dport 9093 -m comment --comment \"-- b2\" ",
            "-j DNAT --to 10.2.0.1\n",
        ));
        assert_eq!(r.target, "10.2.0.1:9093");
    }

    #[test]
    fn new_state_and_local_address_type_are_accepted() {
        let r = one(concat!(
            "-A PREROUTING -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW ",
            "-p tcp --dport 9093 -m state --state NEW,ESTABLISHED ",
            "-j DNAT --to-destination 10.20.0.12:9092\n",
        ));
        assert_eq!(r.listen, 9093);
    }

    #[test]
    fn random_and_persistent_flags_are_accepted() {
        let r = one(concat!(
            "-A PREROUTING -p tcp --dport 9093 ",
            "-j DNAT --to-destination 10.20.0.12:9092 --persistent --random\n",
        ));
        assert_eq!(r.listen, 9093);
    }

    #[test]
    fn insert_and_iptables_s_format() {
        let c = convert(
            "-P PREROUTING ACCEPT\n-N KAFKA\n-I PREROUTING 1 -j KAFKA\n\
             -A KAFKA -p tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n",
        );
        assert!(c.untranslated.is_empty(), "{c:#?}");
        assert_eq!((c.rules[0].listen, c.rules[0].line), (9093, 4));
    }

    #[test]
    fn other_tables_are_skipped() {
        let c = convert(&format!(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nnonsense\nCOMMIT\n\
             {}*mangle\n-A PREROUTING -j DNAT\nCOMMIT\n",
            nat(&format!("{DNAT_9093}\n"))
        ));
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].line, 11);
        assert!(c.untranslated.is_empty(), "{c:#?}");
    }

    #[test]
    fn non_nat_targets_are_ignored() {
        let c = convert(&nat(&format!(
            "-A PREROUTING -i lo -j RETURN\n-A PREROUTING -j LOG --log-prefix \"nat: \"\n\
             -A PREROUTING -j ACCEPT\n{DNAT_9093}\n"
        )));
        assert_eq!(c.rules.len(), 1);
        assert!(c.untranslated.is_empty(), "{c:#?}");
    }

    #[test]
    fn docker_chains() {
        let c = convert(&nat(concat!(
            ":DOCKER - [0:0]\n",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n",
            "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n",
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n",
            "-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 ",
            "-j MASQUERADE\n",
            "-A DOCKER -i docker0 -j RETURN\n",
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 ",
            "-j DNAT --to-destination 172.17.0.2:80\n",
        )));
        assert!(c.rules.is_empty());
        // Docker's container masquerades are no MASQUERADE for forwarded traffic.
        assert!(!c.masquerade_seen);
        let got: Vec<_> = c.untranslated.iter().map(|u| u.line).collect();
        assert_eq!(got, [9, 10, 12]);
        assert!(c.untranslated[0].reason.starts_with("source NAT of traffic from 172.17.0.0/16"));
        assert_eq!(c.untranslated[2].reason, "cannot express ! -i docker0");
    }

    // ---- untranslated ----------------------------------------------------------------------

    #[test]
    fn udp_is_named() {
        let (line, reason) = refused(
            "-A PREROUTING -i eth0 -p udp -m udp --dport 53 -j DNAT --to-destination 10.20.0.2\n",
        );
        assert_eq!((line, reason.as_str()), (6, "UDP: the forwarder forwards TCP only"));
    }

    #[test]
    fn ranges_are_named() {
        let cases = [
            ("--dport 9093 -j DNAT --to-destination 10.20.0.12:9092-9095", "port range 9092-9095"),
            ("--dport 9093 -j DNAT --to-destination 10.20.0.12-10.20.0.14", "address range"),
            ("--dport 9093 -j DNAT --to-destination 10.20.0.12-10.20.0.14:9092", "address range"),
            ("--dport 9000:9010 -j DNAT --to-destination 10.20.0.12", "port range 9000:9010"),
        ];
        for (rest, want) in cases {
            let (line, reason) = refused(&format!("-A PREROUTING -p tcp {rest}\n"));
            assert_eq!(line, 6);
            assert!(reason.starts_with(want), "{rest}: {reason}");
        }
    }

    /// Targets iptables takes but a rule cannot have: the imported rule would fail
    /// check-config. The first is the input the import_iptables fuzz target reported.
    #[test]
    fn targets_that_are_not_another_host_are_named() {
        for ip in ["127.0.0.1", "0.0.0.0", "224.0.0.5", "255.255.255.255"] {
            let (line, reason) = refused(&format!(
                "-A PREROUTING -i eth0 -p tcp --dport 9093 -j DNAT --to-destination {ip}:9092\n"
            ));
            assert_eq!(line, 6);
            assert_eq!(reason, format!("{ip} is not a unicast address of another host"));
        }
    }

    #[test]
    fn matches_the_forwarder_cannot_express() {
        let cases = [
            ("-s 192.168.0.0/16 -p tcp --dport 9093", "matches only sources 192.168.0.0/16"),
            ("! -i docker0 -p tcp --dport 9093", "cannot express ! -i docker0"),
            ("-i ! docker0 -p tcp --dport 9093", "cannot express ! -i docker0"),
            ("-p tcp -m multiport --dports 9093,9094", "cannot express --dports 9093,9094"),
            ("-p tcp --dport 9093 --sport 1024", "cannot express --sport 1024"),
            ("-p tcp --dport 9093 --syn", "cannot express --syn"),
            (
                "-p tcp --dport 9093 -m tcp --tcp-flags SYN,RST SYN",
                "cannot express --tcp-flags SYN,RST SYN",
            ),
            (
                "-p tcp --dport 9093 -m addrtype --dst-type BROADCAST",
                "cannot express --dst-type BROADCAST",
            ),
            ("-p tcp --dport 9093 -m tos --tos 0x10", "cannot express --tos 0x10"),
            ("-p tcp", "no --dport"),
            ("-p all --dport 9093", "protocol all"),
            ("", "no -p tcp"),
            ("-p tcp --dport 0", "\"0\" is not a port"),
            ("-p tcp --dport kafka", "\"kafka\" is not a port"),
        ];
        for (matches, want) in cases {
            let (line, reason) = refused(&format!(
                "-A PREROUTING {matches} -j DNAT --to-destination 10.20.0.12:9092\n"
            ));
            assert_eq!(line, 6);
            assert!(reason.starts_with(want), "{matches}: {reason}");
        }
    }

    #[test]
    fn bad_dnat_targets() {
        let cases = [
            ("-j DNAT", "DNAT without --to-destination"),
            ("-j DNAT --to-destination broker2.corp:9092", "\"broker2.corp\" is not an IPv4"),
            ("-j DNAT --to-destination 10.20.0.12:0", "\"0\" is not a port"),
            ("-j DNAT --to-destination 10.1.1.1:1 --to-destination 10.1.1.2:1", "several"),
        ];
        for (jump, want) in cases {
            let (line, reason) = refused(&format!("-A PREROUTING -p tcp --dport 9093 {jump}\n"));
            assert_eq!(line, 6);
            assert!(reason.starts_with(want), "{jump}: {reason}");
        }
    }

    #[test]
    fn chains_not_reached_from_prerouting() {
        let c = convert(&nat(
            "-A OUTPUT -p tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n\
             -A ORPHAN -p tcp --dport 9094 -j DNAT --to-destination 10.20.0.13:9092\n\
             -A INPUT -j SNAT --to-source 10.0.0.4\n",
        ));
        assert!(c.rules.is_empty());
        let got: Vec<_> = c.untranslated.iter().map(|u| (u.line, u.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                (6, "OUTPUT rewrites connections this host opens itself, not forwarded ones"),
                (7, "chain ORPHAN is not reached from PREROUTING"),
                (8, "chain INPUT is not reached from POSTROUTING"),
            ]
        );
    }

    #[test]
    fn unsupported_jump_condition_is_named_with_its_line() {
        let (line, reason) = refused(
            "-A PREROUTING -m mark --mark 0x1 -j KAFKA\n\
             -A KAFKA -p tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n",
        );
        assert_eq!((line, reason.as_str()), (7, "cannot express --mark 0x1 (line 6)"));
    }

    #[test]
    fn jump_and_rule_that_contradict() {
        let (line, reason) = refused(
            "-A PREROUTING -i eth0 -j KAFKA\n\
             -A KAFKA -i eth1 -p tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n",
        );
        assert_eq!(line, 7);
        assert!(reason.starts_with("never matches: -i eth1 contradicts -i eth0"), "{reason}");
    }

    #[test]
    fn redirect_and_netmap() {
        let c = convert(&nat("-A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080\n\
             -A PREROUTING -d 10.1.0.0/24 -j NETMAP --to 10.2.0.0/24\n"));
        assert_eq!(c.untranslated.iter().map(|u| u.line).collect::<Vec<_>>(), [6, 7]);
        assert!(c.untranslated[0].reason.starts_with("REDIRECT"));
        assert!(c.untranslated[1].reason.starts_with("NETMAP"));
    }

    #[test]
    fn duplicate_listen_port_keeps_the_first() {
        let c = convert(&nat(&format!(
            "{DNAT_9093}\n-A PREROUTING -i eth1 -p tcp --dport 9093 -j DNAT --to-destination \
             10.20.0.99:9092\n"
        )));
        assert_eq!(c.rules, vec![rule("broker-9093", 9093, "10.20.0.12:9092", 6, DNAT_9093)]);
        assert_eq!(
            c.untranslated,
            vec![Untranslated {
                line: 7,
                text: "-A PREROUTING -i eth1 -p tcp --dport 9093 -j DNAT --to-destination \
                       10.20.0.99:9092"
                    .into(),
                reason: "listen port 9093 is already forwarded by line 6".into(),
            }]
        );
    }

    #[test]
    fn unreadable_lines_are_listed() {
        let c = convert(&nat(&format!(
            "iptables -t nat -A PREROUTING -p tcp --dport 1 -j DNAT --to 10.0.0.1\n\
             -A PREROUTING -p tcp --dport 9094 -m comment --comment \"open -j DNAT --to \
             10.1.1.1:1\n\
             -A PREROUTING -p tcp --dport\n\
             -A -p tcp --dport 1 -j DNAT\n\
             -A '' -p tcp --dport 1 -j DNAT\n\
             {DNAT_9093}\n"
        )));
        let got: Vec<_> = c.untranslated.iter().map(|u| (u.line, u.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                (6, "not an iptables-save line"),
                (7, "unterminated \" quote"),
                (8, "--dport without a value"),
                (9, "-A without a value"),
                (10, "a rule without a chain"),
            ]
        );
        assert_eq!(c.rules.len(), 1);
    }

    #[test]
    fn untranslated_come_out_in_line_order() {
        let c = convert(&nat(
            "garbage\n-A PREROUTING -p udp --dport 53 -j DNAT --to 10.0.0.53\nmore garbage\n",
        ));
        assert_eq!(c.untranslated.iter().map(|u| u.line).collect::<Vec<_>>(), [6, 7, 8]);
    }

    // ---- output ----------------------------------------------------------------------------

    #[test]
    fn to_toml_layout() {
        let c = convert(&nat(&format!(
            "[5:300] {DNAT_9093}\n-A PREROUTING -p udp --dport 53 -j DNAT --to 10.0.0.53\n"
        )));
        let toml = c.to_toml();
        let want = format!(
            "# from line 6: {DNAT_9093}\n\
             # iptables matched interface eth0 only (the forwarder's `interface` setting)\n\
             [[rule]]\n\
             name = \"broker-9093\"\n\
             listen = 9093\n\
             target = \"10.20.0.12:9092\"\n\
             \n\
             # note: no MASQUERADE or SNAT rule was found."
        );
        assert!(toml.contains(&want), "{toml}");
        assert!(toml.ends_with(
            "\n\n# not translated (line 7): -A PREROUTING -p udp --dport 53 -j DNAT --to 10.0.0.53 \
             -- UDP: the forwarder forwards TCP only\n"
        ));
    }

    #[test]
    fn to_toml_without_rules_is_still_toml() {
        let toml = convert("").to_toml();
        assert!(toml.contains("# No DNAT rule could be translated."));
        let v: toml::Table = toml::from_str(&toml).unwrap();
        assert!(v.is_empty());
    }

    #[test]
    fn control_characters_do_not_break_the_toml() {
        let c = convert(
            "-A PREROUTING -p udp --dport 53 -m comment --comment \"a\u{7}b\u{7f}\" -j DNAT\r\n",
        );
        let toml = c.to_toml();
        assert!(toml.contains("--comment \"a?b?\""), "{toml}");
        toml::from_str::<toml::Table>(&toml).unwrap();
    }

    #[test]
    fn names_are_unique() {
        let c = convert(FIXTURE);
        let names: HashSet<_> = c.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), c.rules.len());
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct TomlRule {
        name: String,
        listen: u16,
        target: String,
    }

    #[derive(serde::Deserialize)]
    struct TomlRules {
        rule: Vec<TomlRule>,
    }

    #[test]
    fn round_trip_through_toml() {
        let text = format!(
            "{FIXTURE}*nat\n-A PREROUTING -d 10.0.0.4/32 -p tcp --dport 9095 -j DNAT --to \
             10.20.0.14\n\
             -A PREROUTING -p udp --dport 53 -j DNAT --to 10.0.0.53\nCOMMIT\n"
        );
        let c = convert(&text);
        let parsed: TomlRules = toml::from_str(&c.to_toml()).unwrap();
        let want: Vec<_> = c
            .rules
            .iter()
            .map(|r| TomlRule { name: r.name.clone(), listen: r.listen, target: r.target.clone() })
            .collect();
        assert_eq!(parsed.rule, want);
        assert_eq!(parsed.rule.len(), 4);
        assert_eq!(parsed.rule[3].target, "10.20.0.14:9095");
    }

    #[test]
    fn the_forwarder_config_accepts_the_output() {
        let c = convert(FIXTURE);
        let config = format!("interface = \"eth0\"\n{}", c.to_toml());
        let settings = crate::config::parse(std::path::Path::new("imported.toml"), &config)
            .unwrap_or_else(|e| panic!("{e}\n{config}"));
        let got: Vec<_> = settings
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.listen, r.target.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("broker-9092", 9092, "10.20.0.11:9092".to_string()),
                ("broker-9093", 9093, "10.20.0.12:9092".to_string()),
                ("broker-9094", 9094, "10.20.0.13:9092".to_string()),
            ]
        );
    }

    #[test]
    fn serializes_to_json() {
        let json = serde_json::to_value(convert(FIXTURE)).unwrap();
        assert_eq!(json["masquerade_seen"], true);
        assert_eq!(json["rules"][1]["name"], "broker-9093");
        assert_eq!(json["rules"][1]["listen"], 9093);
        assert_eq!(json["rules"][1]["interface"], "eth0");
        assert_eq!(json["rules"][1]["listen_addr"], serde_json::Value::Null);
        assert_eq!(json["untranslated"], serde_json::json!([]));
    }

    // ---- helpers ---------------------------------------------------------------------------

    #[test]
    fn strip_counters_only_strips_counters() {
        assert_eq!(strip_counters("[12:720] -A X"), "-A X");
        assert_eq!(strip_counters("[a:1] -A X"), "[a:1] -A X");
        assert_eq!(strip_counters("[12] -A X"), "[12] -A X");
        assert_eq!(strip_counters("-A X"), "-A X");
    }

    #[test]
    fn split_words_quoting() {
        let w = split_words(r#"-A X --comment "a \"b\" c" 'd e' f\ g"#).unwrap();
        assert_eq!(w, ["-A", "X", "--comment", "a \"b\" c", "d e", "f g"]);
        assert_eq!(split_words("a \"\" b").unwrap(), ["a", "", "b"]);
        assert!(split_words("'open").is_err());
    }
}
