//! The `[[rule]]` blocks of forwarder.toml for a [`Plan`]: what `kafka discover` prints for
//! the two named NAT VMs and what the scale set's cloud-init writes on each of its VMs, one
//! text for both.

use super::discover::Plan;
use crate::config::rule_text::rule_block;
use std::fmt::Write;

/// The `[[rule]]` blocks for forwarder.toml, one per broker, blank-line separated.
pub fn rule_blocks(plan: &Plan) -> String {
    let mut out = String::new();
    for (i, b) in plan.brokers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", rule_block(&b.rule.name, b.rule.listen, &b.rule.target));
    }
    out
}
