//! The text of a `[[rule]]` block, as every printer of rules writes it: `kafka discover`
//! (for the two NAT VMs, for a scale set's cloud-init, for what a config lacks), the
//! `[kafka]` watch's log and `import-iptables`. `rule add` edits the file in place with
//! toml_edit instead (`write_back`), keeping its comments and layout.

/// The lines of one `[[rule]]` block, without a final newline. Names and targets may come
/// from the network (advertised brokers) or an iptables dump: they are TOML-quoted.
pub fn rule_block(name: &str, listen: u16, target: &str) -> String {
    format!(
        "[[rule]]\nname = {}\nlisten = {listen}\ntarget = {}",
        toml_string(name),
        toml_string(target)
    )
}

/// A quoted TOML string, escaped.
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_parses_back_whatever_the_name_holds() {
        let name = "b\"1\\\n";
        let text = rule_block(name, 9093, "broker1.corp:9092");
        let doc: toml::Table = text.parse().unwrap();
        let rule = &doc["rule"][0];
        assert_eq!(rule["name"].as_str(), Some(name));
        assert_eq!(rule["listen"].as_integer(), Some(9093));
        assert_eq!(rule["target"].as_str(), Some("broker1.corp:9092"));
    }
}
