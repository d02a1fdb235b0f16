//! import-iptables against the inputs it meets: what ip_fwd.sh writes and its variants
//! (`accepted`), what the forwarder cannot express (`refused`), and the TOML and JSON it
//! prints (`output`). The helpers here build a nat table around rules.

mod accepted;
mod output;
mod refused;

use super::*;

/// `rules` inside a nat table as iptables-save prints it: the first rule is on line 6.
pub(super) fn nat(rules: &str) -> String {
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n{rules}COMMIT\n"
    )
}

/// The only rule of `rules`, which must translate.
pub(super) fn one(rules: &str) -> ImportedRule {
    let c = convert(&nat(rules));
    assert!(c.untranslated.is_empty(), "{:#?}", c.untranslated);
    assert_eq!(c.rules.len(), 1, "{c:#?}");
    c.rules[0].clone()
}

/// The only untranslated line of `rules`, as (line, reason).
pub(super) fn refused(rules: &str) -> (usize, String) {
    let c = convert(&nat(rules));
    assert!(c.rules.is_empty(), "{:#?}", c.rules);
    assert_eq!(c.untranslated.len(), 1, "{c:#?}");
    (c.untranslated[0].line, c.untranslated[0].reason.clone())
}

pub(super) fn rule(name: &str, listen: u16, target: &str, line: usize, text: &str) -> ImportedRule {
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

pub(super) const FIXTURE: &str = include_str!("../../../../tests/fixtures/ip_fwd_nat.save");
pub(super) const DNAT_9093: &str =
    "-A PREROUTING -i eth0 -p tcp -m tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092";
