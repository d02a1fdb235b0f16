//! `forwarder check-config`: the file validated and resolved, the effective rules printed,
//! and the hash a daemon that applies it reports (`forwarder status`, forwarder_config_info),
//! to compare a file with the VMs of a pool before it is applied.

use super::CliError;
use crate::{
    config::Settings,
    plan::{Plan, PlanError},
};

/// What check-config was doing when the plan failed (printed `error: resolving: ...`).
#[derive(Debug, thiserror::Error)]
#[error("resolving")]
struct Resolving(#[source] PlanError);

pub fn run(settings: &Settings, json: bool) -> super::Outcome {
    let plan = Plan::build(settings, false).map_err(|e| CliError::usage(Resolving(e)))?;
    let sha256 = crate::config::fingerprint::sha256(settings);
    if json {
        let rules: Vec<_> = plan
            .rules
            .iter()
            .map(|r| {
                let (a, p) = r.target.expect("Plan::build(.., false) resolves every target");
                serde_json::json!({"name": r.name, "listen": r.listen, "target": format!("{a}:{p}")})
            })
            .collect();
        let v = serde_json::json!({
            "interfaces": settings.interfaces,
            "mode": settings.mode.name(),
            "snat": plan.snat_addr.to_string(),
            "snat_ports": format!("{}-{}", plan.snat_ports.0, plan.snat_ports.1),
            "rules": rules,
            "kafka": settings.kafka.as_ref().map(|k| serde_json::json!({
                "bootstrap": k.bootstrap,
                "interval": humantime::format_duration(k.interval).to_string(),
                "security": kafka_security(k),
            })),
            "azure_scheduled_events": settings.azure.as_ref().map(|a| serde_json::json!({
                "interval": humantime::format_duration(a.interval).to_string(),
            })),
            "config_sha256": sha256,
        });
        super::output::print_json(&v);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    println!(
        "interface {} mode {} snat {} ports {}-{}",
        settings.interfaces.join(","),
        settings.mode.name(),
        plan.snat_addr,
        plan.snat_ports.0,
        plan.snat_ports.1
    );
    for r in &plan.rules {
        let (a, p) = r.target.expect("Plan::build(.., false) resolves every target");
        println!("rule {:<20} listen {:<5} -> {a}:{p}", r.name, r.listen);
    }
    if let Some(k) = &settings.kafka {
        println!(
            "kafka watch: {} every {} ({})",
            k.bootstrap.join(","),
            humantime::format_duration(k.interval),
            kafka_security(k)
        );
    }
    if let Some(a) = &settings.azure {
        println!(
            "azure scheduled events: read every {}; a Terminate, Preempt, Reboot or Redeploy \
             of this VM drains it once due within 15 min",
            humantime::format_duration(a.interval)
        );
    }
    println!("config hash: sha256 {sha256}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// How the watch connects, as Kafka names a listener's protocol, with what it presents.
fn kafka_security(k: &crate::config::kafka::KafkaWatch) -> String {
    use crate::config::kafka::KafkaSasl;
    let mechanism = k.sasl.as_ref().map(|s| match s {
        KafkaSasl::Password { mechanism, .. } => mechanism.name(),
        KafkaSasl::Token { .. } => crate::kafka::Mechanism::OAuthBearer.name(),
    });
    let mut out = match (&k.tls, mechanism) {
        (None, None) => "PLAINTEXT".to_string(),
        (Some(_), None) => "SSL".to_string(),
        (None, Some(m)) => format!("SASL_PLAINTEXT {m}"),
        (Some(_), Some(m)) => format!("SASL_SSL {m}"),
    };
    if k.tls.as_ref().is_some_and(|t| t.client_cert.is_some()) {
        out += ", client certificate";
    }
    out
}
