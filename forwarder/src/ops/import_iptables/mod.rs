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
//!
//! - the text is read by `ops::netfilter::iptables_save` (nat table; rules before any
//!   `*table` header count as nat);
//! - `nat`: the nat rules in input order, and the conditions under which PREROUTING and
//!   POSTROUTING reach each chain;
//! - `scope`: which connections a rule applies to, in the forwarder's terms;
//! - `translate`: a DNAT into a rule, a MASQUERADE/SNAT into a note, or the reason not;
//! - here: the result and its rendering as TOML.

mod nat;
mod scope;
#[cfg(test)]
mod tests;
mod translate;

use crate::ops::netfilter::{iptables_save, model::Rule};
use nat::Nat;
use serde::Serialize;

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
    let tables = iptables_save::parse(text, Some("nat"));
    let nat = Nat::new(&tables);
    let prerouting = nat.contexts("PREROUTING");
    let postrouting = nat.contexts("POSTROUTING");
    let mut conv =
        Conversion { rules: Vec::new(), untranslated: nat.unreadable(), masquerade_seen: false };
    for &(chain, rule) in &nat.rules {
        match rule.target() {
            Some("DNAT") => match translate::dnat(chain, rule, prerouting.get(chain)) {
                Ok(imported) => conv.add_rule(imported),
                Err(reason) => conv.reject(rule, reason),
            },
            Some("SNAT" | "MASQUERADE") => {
                match translate::snat(chain, rule, postrouting.get(chain)) {
                    Ok(()) => conv.masquerade_seen = true,
                    Err(reason) => conv.reject(rule, reason),
                }
            }
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
        let rule = crate::config::rule_text::rule_block(&self.name, self.listen, &self.target);
        block.extend(rule.lines().map(str::to_string));
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
