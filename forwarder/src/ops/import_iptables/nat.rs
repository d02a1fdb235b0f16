//! The nat table as import-iptables reads it: its rules in input order (every `*nat`
//! section, and rules pasted before any header), the names of its chains, the lines that
//! are not iptables-save syntax, and the conditions under which a built-in chain reaches
//! each chain.

use super::{
    scope::{and, scope, tagged, Reached},
    Untranslated,
};
use crate::ops::netfilter::{
    eval::jump_paths,
    model::{Matches, Rule, Table},
};
use std::collections::{HashMap, HashSet};

pub(super) struct Nat<'a> {
    /// (chain, rule), in input order.
    pub(super) rules: Vec<(&'a str, &'a Rule)>,
    /// Declared (`:NAME`, `-N NAME`) or holding a rule.
    chains: HashSet<&'a str>,
    tables: Vec<&'a Table>,
}

impl<'a> Nat<'a> {
    pub(super) fn new(tables: &'a [Table]) -> Self {
        let tables: Vec<&Table> = tables.iter().filter(|t| t.name == "nat").collect();
        let chains = tables.iter().flat_map(|t| &t.chains);
        let mut rules: Vec<(&str, &Rule)> = chains
            .clone()
            .flat_map(|c| c.rules.iter().map(move |r| (c.name.as_str(), r)))
            .collect();
        rules.sort_by_key(|(_, r)| r.line);
        let chains = chains.map(|c| c.name.as_str()).collect();
        Nat { rules, chains, tables }
    }

    /// The lines of the nat table that are not iptables-save syntax, in input order.
    pub(super) fn unreadable(&self) -> Vec<Untranslated> {
        let lines = self.tables.iter().flat_map(|t| &t.unreadable);
        lines
            .map(|u| Untranslated {
                line: u.line,
                text: u.text.clone(),
                reason: u.error.to_string(),
            })
            .collect()
    }

    /// The chains reached from the built-in chain `start`, each with the conditions of the
    /// jumps on the first path found to it (or why no connection gets there).
    pub(super) fn contexts(&self, start: &str) -> HashMap<String, Reached> {
        let paths = jump_paths(&self.rules, start, |t| self.chains.contains(t));
        paths
            .into_iter()
            .map(|(chain, jumps)| {
                let reached = jumps.iter().try_fold(Matches::default(), |outer, jump| {
                    and(outer, &tagged(scope(jump), jump.line))
                });
                (chain, reached)
            })
            .collect()
    }
}
