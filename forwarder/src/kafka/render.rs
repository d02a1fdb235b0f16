//! Output of `kafka discover` and `kafka check`: text for people, one JSON object for
//! scripts. Nothing here talks to the network.

pub use super::rules_toml::rule_blocks;
use super::{
    azure,
    check::{Failure, ProduceReport, Report},
    discover::Plan,
};
use std::fmt::Write;

pub fn discover_text(plan: &Plan, setup: &azure::Setup) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Cluster {} via {}: {} broker(s), controller {}\n",
        plan.cluster_id.as_deref().unwrap_or("(no id)"),
        plan.bootstrap,
        plan.brokers.len(),
        plan.controller_id
    );
    let mut rows = vec![cells(["ID", "ADVERTISED", "RACK"])];
    for b in &plan.brokers {
        rows.push(vec![
            b.broker.id.to_string(),
            b.broker.address(),
            b.broker.rack.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&table(&rows, "  "));

    out.push_str("\n# forwarder.toml: one rule per broker (target: the address it advertises)\n");
    out.push_str(&rule_blocks(plan));

    out.push_str("\nAzure resources per broker:\n");
    let managed = setup.client != azure::ClientSide::Vnet;
    let mut rows = vec![cells([
        "BROKER",
        "LB FRONTEND",
        "LB RULE",
        "FRONTEND -> BACKEND PORT",
        "PRIVATE LINK SERVICE",
        if managed { "MANAGED PRIVATE ENDPOINT" } else { "PRIVATE ENDPOINT" },
        if managed { "ITS FQDN" } else { "PRIVATE DNS A RECORD" },
    ])];
    for b in &plan.brokers {
        let a = &b.azure;
        rows.push(vec![
            b.broker.id.to_string(),
            a.lb_frontend.clone(),
            a.lb_rule.clone(),
            format!("{} -> {}", a.frontend_port, a.backend_port),
            a.private_link_service.clone(),
            if managed { a.managed_private_endpoint.clone() } else { a.private_endpoint.clone() },
            match (&a.dns, managed) {
                (Some(d), true) => d.fqdn.clone(),
                (Some(d), false) => format!("{} -> {} (zone {})", d.fqdn, a.endpoint_ip, d.zone),
                (None, _) => "(advertised as an IP: none possible)".into(),
            },
        ]);
    }
    out.push_str(&table(&rows, "  "));
    for w in plan.warnings() {
        let _ = writeln!(out, "\nwarning: {w}");
    }

    let _ = writeln!(
        out,
        "\nAzure CLI, client side {} (set the variables first; --script FILE writes it all as \
         one script):\n",
        client_name(setup.client)
    );
    for v in setup.variables.iter().filter(|v| !v.derived) {
        let _ = writeln!(out, "{}=\"{}\"  # {}", v.name, v.value, v.about);
    }
    for (i, step) in setup.steps.iter().enumerate() {
        let _ = write!(out, "\n# {}. {}\n{}", i + 1, step.title, step.script);
    }
    let _ = match &setup.notebook {
        Some(cell) => {
            write!(out, "\nThen test the path from a notebook of the workspace:\n\n{cell}")
        }
        None => writeln!(out, "\n{}", azure::NO_NOTEBOOK_ADF),
    };
    out
}

fn client_name(c: azure::ClientSide) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub fn discover_json(plan: &Plan, setup: &azure::Setup) -> serde_json::Value {
    serde_json::json!({
        "bootstrap": plan.bootstrap,
        "cluster_id": plan.cluster_id,
        "controller_id": plan.controller_id,
        "brokers": plan.brokers.iter().map(|b| &b.broker).collect::<Vec<_>>(),
        "rules": plan.brokers.iter().map(|b| &b.rule).collect::<Vec<_>>(),
        "rules_toml": rule_blocks(plan),
        "azure": plan.brokers.iter().map(|b| {
            let mut v = serde_json::to_value(&b.azure).unwrap_or_default();
            v["broker_id"] = b.broker.id.into();
            v
        }).collect::<Vec<_>>(),
        "client": setup.client,
        "nat_vms": setup.nat_vms,
        "variables": setup.variables,
        "az_commands": setup.steps,
        "notebook": setup.notebook,
        "notebook_absent": setup.notebook.is_none().then_some(azure::NO_NOTEBOOK_ADF),
        "warnings": plan.warnings(),
    })
}

pub fn check_text(report: &Report) -> String {
    let mut out = String::new();
    let mut rows = vec![cells(["VIA", "BROKER", "ADVERTISED", "RESOLVED", "RESULT", "LATENCY"])];
    let mut failures = Vec::new();
    for via in &report.vias {
        if let Some(f) = &via.failure {
            rows.push(vec![
                via.via.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                failed(f),
                "-".into(),
            ]);
            failures.push(format!("via {}: {}: {}", via.via, f.hop, f.error));
        }
        for b in &via.brokers {
            let result = match &b.failure {
                None => "ok".into(),
                Some(f) => {
                    failures.push(format!(
                        "via {} broker {} ({}): {}: {}",
                        b.via, b.id, b.advertised, f.hop, f.error
                    ));
                    failed(f)
                }
            };
            rows.push(vec![
                b.via.clone(),
                b.id.to_string(),
                b.advertised.clone(),
                b.connected
                    .clone()
                    .or_else(|| b.resolved.first().cloned())
                    .unwrap_or_else(|| "-".into()),
                result,
                b.latency_ms.map(|m| format!("{m:.1} ms")).unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    out.push_str(&table(&rows, "  "));

    if let Some(p) = &report.produce {
        let _ = writeln!(
            out,
            "\nProduce and fetch back, topic {}: {} message(s) of {} bytes per broker",
            p.topic, p.messages, p.message_size
        );
        let created: Vec<&str> =
            report.vias.iter().filter(|v| v.topic_created).map(|v| v.via.as_str()).collect();
        if !created.is_empty() {
            let _ = writeln!(out, "(created the topic through {})", created.join(", "));
        }
        let mut rows = vec![cells([
            "VIA",
            "BROKER",
            "PARTITION",
            "PRODUCED",
            "CONSUMED",
            "PRODUCE MB/s",
            "FETCH MB/s",
            "RESULT",
        ])];
        for b in report.vias.iter().flat_map(|v| &v.brokers) {
            let Some(pr) = &b.produce else { continue };
            if let Some(f) = &pr.failure {
                failures.push(format!("via {} broker {} produce/fetch: {}", b.via, b.id, f.error));
            }
            rows.push(vec![
                b.via.clone(),
                b.id.to_string(),
                pr.partition.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                pr.produced.to_string(),
                pr.consumed.to_string(),
                rate(pr.produce_mb_s),
                rate(pr.fetch_mb_s),
                produce_result(pr),
            ]);
        }
        out.push_str(&table(&rows, "  "));
    }

    let brokers: Vec<_> = report.vias.iter().flat_map(|v| &v.brokers).collect();
    let good = brokers.iter().filter(|b| b.ok()).count();
    let bad_vias = report.vias.iter().filter(|v| v.failure.is_some()).count();
    out.push('\n');
    for f in &failures {
        let _ = writeln!(out, "FAILED {f}");
    }
    let _ = write!(out, "{good} of {} broker(s) ok", brokers.len());
    if bad_vias > 0 {
        let _ = write!(out, "; {bad_vias} of {} --via address(es) failed", report.vias.len());
    }
    out.push('\n');
    out
}

fn failed(f: &Failure) -> String {
    format!("FAILED at {}", f.hop)
}

fn produce_result(p: &ProduceReport) -> String {
    match (&p.failure, &p.note) {
        (Some(_), _) => "FAILED".into(),
        (None, Some(n)) => n.clone(),
        (None, None) => "ok".into(),
    }
}

fn rate(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into())
}

pub(super) fn cells<const N: usize>(c: [&str; N]) -> Vec<String> {
    c.iter().map(|s| s.to_string()).collect()
}

/// Left-aligned columns; the last one unpadded.
pub(super) fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        out.push_str(indent);
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{
        check::{BrokerReport, ViaReport},
        discover::{plan, three_broker_metadata},
        error::Hop,
    };

    fn sample() -> Plan {
        let meta = three_broker_metadata(true);
        plan("10.0.0.4:9092", &meta, 9092).unwrap()
    }

    #[test]
    fn rule_blocks_are_exact() {
        let p = sample();
        assert_eq!(
            rule_blocks(&p),
            "[[rule]]\nname = \"broker-1\"\nlisten = 9092\ntarget = \"broker1.corp.example:9092\"\n\n\
             [[rule]]\nname = \"broker-2\"\nlisten = 9093\ntarget = \"broker2.corp.example:9092\"\n\n\
             [[rule]]\nname = \"broker-3\"\nlisten = 9094\ntarget = \"broker3.corp.example:9092\"\n"
        );
    }

    #[test]
    fn rule_blocks_parse_as_config() {
        let text = format!("interface = \"lo\"\n\n{}", rule_blocks(&sample()));
        let s = crate::config::parse(std::path::Path::new("discovered.toml"), &text).unwrap();
        let got: Vec<_> = s.rules.iter().map(|r| (r.name.as_str(), r.listen)).collect();
        assert_eq!(got, [("broker-1", 9092), ("broker-2", 9093), ("broker-3", 9094)]);
    }

    #[test]
    fn hostile_names_are_escaped() {
        let mut p = sample();
        p.brokers[0].rule.target = "a\"b'\n:1".into();
        let v: toml::Value = toml::from_str(&rule_blocks(&p)).unwrap();
        assert_eq!(v["rule"][0]["target"].as_str(), Some("a\"b'\n:1"));
    }

    #[test]
    fn discover_text_has_every_part() {
        let p = sample();
        let vnet = discover_text(&p, &azure::setup(&p, azure::ClientSide::Vnet));
        let synapse = discover_text(&p, &azure::setup(&p, azure::ClientSide::Synapse));
        for t in [&vnet, &synapse] {
            for needle in [
                "Cluster abc via 10.0.0.4:9092: 3 broker(s), controller 2",
                "broker2.corp.example:9092  az2",
                "name = \"broker-3\"",
                "9092 -> 9094",
                "SUBSCRIPTION_ID=\"<subscription-id>\"  # the subscription",
                // Inside the `if ! ... show; then` that keeps a second run from replacing it.
                "az network lb rule create --subscription \"${SUBSCRIPTION_ID}\" \\\n      --resource-group",
                "--name kafka-broker-1 ",
                "--name pls-kafka-broker-2 ",
                "spark.readStream",
            ] {
                assert!(t.contains(needle), "missing {needle:?} in\n{t}");
            }
        }
        for needle in [
            "broker3.corp.example -> <PE_IP_BROKER_3> (zone corp.example)",
            "--record-set-name broker3 --ipv4-address \"${PE_IP_BROKER_3}\"",
        ] {
            assert!(vnet.contains(needle), "missing {needle:?} in\n{vnet}");
        }
        for needle in ["mpe-kafka-broker-3", "\"fqdns\": [\n    \"broker3.corp.example\"\n  ]"] {
            assert!(synapse.contains(needle), "missing {needle:?} in\n{synapse}");
        }
        assert!(!synapse.contains("private-dns"), "{synapse}");
        let j = discover_json(&p, &azure::setup(&p, azure::ClientSide::Synapse));
        assert_eq!(j["client"], "synapse");
        assert_eq!(j["brokers"][2]["rack"], "az3");
        assert_eq!(j["rules"][1]["listen"], 9093);
        assert_eq!(j["azure"][0]["broker_id"], 1);
    }

    #[test]
    fn check_text_names_the_via_and_the_hop() {
        let broker = |id, failure: Option<Failure>| BrokerReport {
            via: "127.0.0.1:9092".into(),
            id,
            advertised: format!("b{id}:9092"),
            rack: None,
            resolved: vec![],
            connected: None,
            reachable: failure.is_none(),
            failure,
            dns_ms: None,
            tcp_ms: None,
            tls_ms: None,
            handshake_ms: None,
            sasl_ms: None,
            latency_ms: Some(1.5),
            produce: None,
        };
        let r = Report {
            ok: false,
            produce: None,
            vias: vec![ViaReport {
                via: "127.0.0.1:9092".into(),
                ok: false,
                failure: None,
                metadata_ms: Some(1.0),
                cluster_id: None,
                topic_created: false,
                brokers: vec![
                    broker(1, None),
                    broker(
                        2,
                        Some(Failure {
                            hop: Hop::Dns,
                            error: "b2:9092: the name does not resolve: x".into(),
                        }),
                    ),
                ],
            }],
        };
        let t = check_text(&r);
        assert!(t.contains("FAILED at DNS"), "{t}");
        assert!(t.contains("FAILED via 127.0.0.1:9092 broker 2 (b2:9092): DNS: b2:9092: the name does not resolve"), "{t}");
        assert!(t.ends_with("1 of 2 broker(s) ok\n"), "{t}");
    }
}
