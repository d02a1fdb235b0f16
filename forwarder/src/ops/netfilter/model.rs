//! The one model of netfilter rules: what `iptables_save` and `nft` read into and what the
//! doctor and import-iptables read. Tables hold chains, chains hold rules in order; a rule
//! has its matches (values as written), its verdict, the text it came from and the command
//! that deletes it. iptables rules also keep their options as written, in order, for
//! readers that need more than the matches (import-iptables).

use super::error::SyntaxError;
use ipnet::Ipv4Net;
use std::{net::Ipv4Addr, ops::RangeInclusive};

/// Which tool a table was read from; messages and fixes name rules in its syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Iptables,
    Nft,
}

impl Tool {
    /// How a port range is written: `9093:9095` (iptables), `9093-9095` (nft).
    pub fn range_sep(self) -> char {
        match self {
            Tool::Iptables => ':',
            Tool::Nft => '-',
        }
    }
}

/// A match on one field: any of `items`, or none of them when negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond<T> {
    pub negated: bool,
    pub items: Vec<T>,
}

impl<T> Cond<T> {
    pub fn holds(&self, f: impl Fn(&T) -> bool) -> bool {
        self.items.iter().any(f) != self.negated
    }

    /// True when the match certainly covers something `f` accepts (a negated match is
    /// never taken as naming a value).
    pub fn names(&self, f: impl Fn(&T) -> bool) -> bool {
        !self.negated && self.items.iter().any(f)
    }
}

/// The matches of a rule that the model names, each value as written. Anything else lands
/// in `unknown` (as written), which makes the rule's effect on a packet undecidable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matches {
    pub protocols: Option<Cond<String>>,
    /// Ports and port ranges (`Tool::range_sep`).
    pub dports: Option<Cond<String>>,
    pub in_ifaces: Option<Cond<String>>,
    pub out_ifaces: Option<Cond<String>>,
    /// Addresses and networks.
    pub sources: Option<Cond<String>>,
    /// Addresses and networks.
    pub destinations: Option<Cond<String>>,
    /// Conntrack states.
    pub states: Option<Cond<String>>,
    pub unknown: Vec<String>,
}

/// Ports and ranges (`9092`, `9093:9095` with `range_sep` ':'); `None` when one is not.
pub fn port_ranges<'a>(
    items: impl IntoIterator<Item = &'a String>,
    range_sep: char,
) -> Option<Vec<RangeInclusive<u16>>> {
    items
        .into_iter()
        .map(|s| {
            let (a, b) = s.split_once(range_sep).unwrap_or((s, s));
            Some(a.trim().parse().ok()?..=b.trim().parse().ok()?)
        })
        .collect()
}

/// IPv4 networks and addresses; `None` when one is neither (a hostname, an nft `@set`).
pub fn nets<'a>(items: impl IntoIterator<Item = &'a String>) -> Option<Vec<Ipv4Net>> {
    items
        .into_iter()
        .map(|s| s.parse::<Ipv4Net>().ok().or_else(|| s.parse::<Ipv4Addr>().ok().map(Into::into)))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    Jump(String),
    Goto(String),
    Return,
    /// The `--to-destination` / `dnat to` address.
    Dnat(String),
    Masquerade,
    /// Non-terminal (LOG, MARK, counter-only) or a target the model does not judge (SNAT,
    /// REDIRECT, ...: by name).
    Other(String),
}

/// One option of an iptables rule as written: `-A PREROUTING`, `! -s 10.0.0.0/8`,
/// `-i ! eth0` (the old syntax), `--tcp-flags SYN,RST SYN`, `-j DNAT`, `--to 10.0.0.5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// `!` before the option.
    pub negated: bool,
    /// As written (`-s`, `--source`).
    pub name: String,
    /// `!` between the option and its value (the old syntax).
    pub negated_after: bool,
    pub values: Vec<String>,
}

impl Opt {
    /// As written, for messages: `! --sport 1024`.
    pub fn text(&self) -> String {
        let bang = if self.negated { "! " } else { "" };
        format!("{bang}{} {}", self.name, self.values.join(" ")).trim_end().to_string()
    }
}

/// The iptables options that name a rule's target.
pub fn is_target_option(name: &str) -> bool {
    matches!(name, "-j" | "--jump" | "-g" | "--goto")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// iptables: 1-based line of the input; nft: 1-based index in the JSON listing. Orders
    /// rules of several chains as the input does.
    pub line: usize,
    pub matches: Matches,
    pub verdict: Verdict,
    /// For messages. iptables: as listed, without `-c` counters; nft: in nft syntax, written
    /// from the JSON (`nft_text`), without the handle.
    pub text: String,
    /// The command that deletes exactly this rule.
    pub delete: String,
    /// iptables: every option in order, the target and its options included. Empty for nft.
    pub opts: Vec<Opt>,
}

impl Rule {
    /// The iptables `-j` / `-g` target as written (the last, should there be several).
    pub fn target(&self) -> Option<&str> {
        let opt = self.opts.iter().rev().find(|o| is_target_option(&o.name))?;
        opt.values.first().map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    pub name: String,
    /// The netfilter hook of a base chain ("input", "prerouting", ...); `None` for a chain
    /// that is only jumped to.
    pub hook: Option<String>,
    /// nft chain type ("filter", "nat"); iptables: the table name.
    pub kind: String,
    pub policy_drop: bool,
    pub rules: Vec<Rule>,
}

/// A line of the input that is not iptables-save syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// 1-based.
    pub line: usize,
    /// Without `-c` counters.
    pub text: String,
    pub error: SyntaxError,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub tool: Tool,
    pub family: String,
    pub name: String,
    pub chains: Vec<Chain>,
    /// iptables only.
    pub unreadable: Vec<Unreadable>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// How to describe a rule of this table in a message.
    pub fn describe(&self, chain: &str, rule: &Rule) -> String {
        match self.tool {
            Tool::Iptables => format!("iptables -t {} `{}`", self.name, rule.text),
            Tool::Nft => {
                format!("nft {} {} chain {chain} `{}`", self.family, self.name, rule.text)
            }
        }
    }
}
