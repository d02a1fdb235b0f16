//! The `[[rule]]` blocks of forwarder.toml for a [`Plan`]: what `kafka discover` prints for
//! the two named NAT VMs and what the scale set's cloud-init writes on each of its VMs, one
//! text for both.

use super::discover::Plan;
use std::fmt::Write;

/// The `[[rule]]` blocks for forwarder.toml, one per broker, blank-line separated.
pub fn rule_blocks(plan: &Plan) -> String {
    let mut out = String::new();
    for (i, b) in plan.brokers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "[[rule]]\nname = {}\nlisten = {}\ntarget = {}",
            toml_str(&b.rule.name),
            b.rule.listen,
            toml_str(&b.rule.target)
        );
    }
    out
}

/// A quoted TOML string (advertised names come from the network: escape them).
pub(super) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
