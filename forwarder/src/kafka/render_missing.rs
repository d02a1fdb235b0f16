//! Output of `kafka discover --config`: only what the running config lacks, as text for
//! people (the `[[rule]]`s, the `rule add` commands, the Azure commands for the new
//! brokers) and as one JSON object for scripts. The daemon's `[kafka]` watch logs the same
//! `rule add` lines.

use super::{
    azure,
    coverage::Coverage,
    discover::{BrokerPlan, Plan},
    render::{cells, table},
    rules_toml::rule_blocks,
};
use crate::config::rule_text::rule_block;
use std::{fmt::Write, path::Path};

/// `forwarder rule add NAME --listen PORT --target HOST:PORT`, with `--config PATH` when
/// the daemon's config is not the default one (`config`: the command finds the daemon
/// through it).
pub fn rule_add_command(b: &BrokerPlan, config: Option<&Path>) -> String {
    format!(
        "forwarder{} rule add {} --listen {} --target {}",
        config_flag(config),
        shell_word(&b.rule.name),
        b.rule.listen,
        shell_word(&b.rule.target)
    )
}

/// ` --config PATH`, or nothing for the default config.
fn config_flag(config: Option<&Path>) -> String {
    match config {
        None => String::new(),
        Some(path) => format!(" --config {}", shell_word(&path.display().to_string())),
    }
}

/// A word for a shell command line: as it is when it holds only safe characters, else in
/// single quotes.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/,=@+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `config`: the config file compared against; `flag`: it, unless it is the default path.
pub fn missing_text(
    config: &Path,
    flag: Option<&Path>,
    coverage: &Coverage,
    plan: &Plan,
    setup: &azure::Setup,
) -> String {
    let mut out = String::new();
    let advertised = coverage.mapped.len() + coverage.unmapped.len();
    let _ = writeln!(
        out,
        "Cluster {} via {}: {advertised} broker(s) advertised, {} forwarded by {}, {} missing",
        plan.cluster_id.as_deref().unwrap_or("(no id)"),
        plan.bootstrap,
        coverage.mapped.len(),
        config.display(),
        coverage.unmapped.len(),
    );
    for r in &coverage.gone {
        let _ = writeln!(
            out,
            "\nwarning: rule {} (listen {}) forwards to {}:{}, which the cluster no longer \
             advertises; remove it once no client uses it: forwarder{} rule remove {}",
            r.name,
            r.listen,
            r.host,
            r.port,
            config_flag(flag),
            shell_word(&r.name)
        );
    }
    if plan.brokers.is_empty() {
        out.push_str("\nNothing missing: every advertised broker has a rule.\n");
        return out;
    }
    let mut rows = vec![cells(["ID", "ADVERTISED", "RULE", "LISTEN"])];
    for b in &plan.brokers {
        rows.push(vec![
            b.broker.id.to_string(),
            b.broker.address(),
            b.rule.name.clone(),
            b.rule.listen.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&table(&rows, "  "));
    let _ = writeln!(out, "\n# On each NAT VM, live (written back to {}):", config.display());
    for b in &plan.brokers {
        let _ = writeln!(out, "{}", rule_add_command(b, flag));
    }
    let _ = writeln!(out, "\n# or add to {} and reload:", config.display());
    out.push_str(&rule_blocks(plan));
    for w in plan.warnings() {
        let _ = writeln!(out, "\nwarning: {w}");
    }
    let _ = writeln!(
        out,
        "\nAzure CLI for the new broker(s) only (the load balancer, probe and endpoints of the \
         others exist):\n"
    );
    for v in setup.variables.iter().filter(|v| !v.derived) {
        let _ = writeln!(out, "{}=\"{}\"  # {}", v.name, v.value, v.about);
    }
    for (i, step) in setup.steps.iter().enumerate() {
        let _ = write!(out, "\n# {}. {}\n{}", i + 1, step.title, step.script);
    }
    out
}

pub fn missing_json(
    config: &Path,
    flag: Option<&Path>,
    coverage: &Coverage,
    plan: &Plan,
    setup: &azure::Setup,
) -> serde_json::Value {
    serde_json::json!({
        "config": config.display().to_string(),
        "bootstrap": plan.bootstrap,
        "cluster_id": plan.cluster_id,
        "mapped": coverage.mapped.iter().map(|(b, rule)| {
            serde_json::json!({"broker": b, "rule": rule})
        }).collect::<Vec<_>>(),
        "gone": coverage.gone,
        "missing": plan.brokers.iter().map(|b| &b.broker).collect::<Vec<_>>(),
        "rules": plan.brokers.iter().map(|b| &b.rule).collect::<Vec<_>>(),
        "rules_toml": rule_blocks(plan),
        "rule_add_commands": plan.brokers.iter().map(|b| rule_add_command(b, flag)).collect::<Vec<_>>(),
        "client": setup.client,
        "nat_vms": setup.nat_vms,
        "variables": setup.variables,
        "az_commands": if plan.brokers.is_empty() { &[][..] } else { &setup.steps[..] },
        "warnings": plan.warnings(),
    })
}

/// The `[[rule]]` for one broker, on one line (for the daemon's log).
pub fn rule_inline(b: &BrokerPlan) -> String {
    rule_block(&b.rule.name, b.rule.listen, &b.rule.target).replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::client::Broker;

    #[test]
    fn rule_add_names_the_config_unless_it_is_the_default() {
        let broker = Broker { id: 4, host: "b4.corp".into(), port: 9092, rack: None };
        let b = crate::kafka::discover::broker_plan(broker, "broker-4".into(), 9095);
        assert_eq!(
            rule_add_command(&b, None),
            "forwarder rule add broker-4 --listen 9095 --target b4.corp:9092"
        );
        assert_eq!(
            rule_add_command(&b, Some(Path::new("/tmp/my config.toml"))),
            "forwarder --config '/tmp/my config.toml' rule add broker-4 --listen 9095 --target \
             b4.corp:9092"
        );
        assert_eq!(
            rule_inline(&b),
            "[[rule]] name = \"broker-4\" listen = 9095 target = \"b4.corp:9092\""
        );
    }
}
