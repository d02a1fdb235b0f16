//! Netfilter rules as the host's tools print them, read once for every user: the doctor
//! (what drops the probe, which NAT rules are left over) and import-iptables (which DNATs
//! become `[[rule]]` blocks).
//!
//! - `lexer`: shell words of iptables-save lines, `-c` counters;
//! - `model`: tables, chains, rules, matches (`Cond`), verdicts, iptables options as written;
//! - `iptables_save`: `iptables-save` (and `iptables -S`) text -> tables; `error` why a line
//!   is not iptables-save syntax;
//! - `nft`: `nft -j list ruleset` JSON -> tables; `nft_text` writes its statements in nft
//!   syntax for messages;
//! - `eval`: a new connection through the INPUT chains; the jump paths into a chain.
//!
//! The readers are pure (output in, tables out) and unit tested on captured output.

pub mod error;
pub mod eval;
pub mod iptables_save;
pub mod lexer;
pub mod model;
pub mod nft;
pub mod nft_text;

/// Captured output the unit tests of the readers and of the doctor's checks share.
#[cfg(test)]
pub(crate) mod fixtures {
    /// `iptables-save` of iptables-nft: a filter table that drops and rejects listen ports, a
    /// nat table with ip_fwd.sh's rules and Docker's MASQUERADE.
    pub const IPT_NFT: &str = include_str!("../../../tests/fixtures/iptables_nft.save");
    /// `nft -j list ruleset` of nftables 1.0.6 after `nft -f nft_ruleset.nft` in a fresh
    /// network namespace (one object a line, otherwise as printed): an ip filter table, an
    /// inet table with a set and a drop policy, and a nat table with ip_fwd.sh's rules.
    pub const NFT: &str = include_str!("../../../tests/fixtures/nft_ruleset.json");
}
