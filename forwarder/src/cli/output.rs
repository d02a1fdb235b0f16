//! How the commands print, apart from the work: `--json` for scripts (pretty JSON of the
//! same data), or text for people (the tables of the daemon's answers are here).

use crate::daemon::control::{FlowRow, RuleInfo, RuleStatsRow, Status};
use serde::Serialize;
use std::time::Duration;

/// `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// `value` as JSON with `--json`, else as `text` makes it for people (nothing when empty).
pub fn print<T: Serialize + ?Sized>(json: bool, value: &T, text: impl FnOnce(&T) -> String) {
    if json {
        print_json(value);
        return;
    }
    let text = text(value);
    if !text.is_empty() {
        println!("{}", text.trim_end());
    }
}

/// Plain messages ("drained: ...").
pub fn message(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// The daemon's answer as the type this build expects of it. An answer that does not fit
/// (a daemon of another version that renamed a field) is an error that says so, never raw
/// JSON printed as if it were the table.
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    v: &serde_json::Value,
) -> Result<T, super::CliError> {
    serde_json::from_value(v.clone()).map_err(|e| {
        super::CliError::runtime(super::error::Message(format!(
            "the daemon's answer to `{what}` is not what this build expects ({e}); is the \
             running daemon of another version? (`forwarder status --json` shows its version)"
        )))
    })
}

pub fn rules_table(rules: &[RuleInfo]) -> String {
    let mut out = format!(
        "{:<20} {:>3} {:>6}  {:<32} {:<22} {:>7}\n",
        "RULE", "ID", "LISTEN", "TARGET", "RESOLVED", "FLOWS"
    );
    for r in rules {
        out += &format!(
            "{:<20} {:>3} {:>6}  {:<32} {:<22} {:>7}\n",
            r.name,
            r.id,
            r.listen,
            r.target,
            r.resolved.as_deref().unwrap_or("(unresolved)"),
            r.active_flows
        );
    }
    out
}

pub fn status_text(s: &Status) -> String {
    let mut out = String::new();
    out += &format!("forwarder {} (pid {}), config {}\n", s.version, s.pid, s.config);
    if !s.config_sha256.is_empty() {
        // What the daemon applied, comments and order aside: equal on every VM of a pool.
        out += &format!("config hash: sha256 {}\n", s.config_sha256);
    }
    let ifaces: Vec<String> =
        s.interfaces.iter().map(|a| format!("{} ({})", a.interface, a.mode)).collect();
    out += &format!(
        "attached:    {}\n",
        if ifaces.is_empty() { "nothing".into() } else { ifaces.join(", ") }
    );
    out += &format!("program ids: {:?}, pins in {}\n", s.program_ids, s.pin_path);
    out += &format!("snat:        {} ports {}\n", s.snat, s.snat_ports);
    let health = match (&s.health, s.healthy) {
        (None, true) => "no health endpoint configured".to_string(),
        (None, false) => format!(
            "no health endpoint configured; NOT healthy ({})",
            s.unhealthy_reason.as_deref().unwrap_or("?")
        ),
        (Some(a), true) => format!("{a}: answering"),
        (Some(a), false) => {
            format!("{a}: FAILING ({})", s.unhealthy_reason.as_deref().unwrap_or("?"))
        }
    };
    out += &format!("health:      {health}\n");
    if let Some(since) = s.drained_since {
        let whose = match &s.drained_for_event {
            Some(id) => format!(", for Azure scheduled event {id}"),
            None => String::new(),
        };
        out += &format!(
            "drained:     since {} s ago{whose}; {} flows remain\n",
            crate::host::clock::unix_now().saturating_sub(since),
            s.active_flows
        );
    }
    out += &match &s.last_probe {
        Some(p) => format!("last probe:  {} s ago from {}\n", p.seconds_ago, p.from),
        None => "last probe:  none seen yet (Azure probes come from 168.63.129.16; check the NSG and local firewall)\n".into(),
    };
    out += &format!("flows:       {}\n\n", s.active_flows);
    out += &rules_table(&s.rules);
    out
}

pub fn flows_table(flows: &[FlowRow]) -> String {
    let mut out = String::new();
    for f in flows {
        out += &format!(
            "{:<16} {:<11} src={} dst={} -> src={} dst={} packets={} bytes={} age={}s idle={}s \
             handshake={}\n",
            f.rule,
            f.state,
            f.client,
            f.listen,
            f.snat,
            f.target,
            f.packets,
            f.bytes,
            f.age_s,
            f.idle_s,
            f.handshake_us.map_or("-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0))
        );
    }
    out += &format!("{} flows", flows.len());
    out
}

pub fn stats_table(rows: &[RuleStatsRow], rates: Option<(&[RuleStatsRow], Duration)>) -> String {
    let mut out = format!(
        "{:<20} {:>7} {:>9} {:>10} {:>12} {:>10} {:>12} {:>8}\n",
        "RULE", "FLOWS", "CONNS/S", "PPS", "BYTES", "R_PPS", "R_BYTES", "DROPS"
    );
    for r in rows {
        let c = |n: &str| r.counters.get(n).copied().unwrap_or(0);
        let rate = |n: &str| match rates {
            Some((prev, dt)) => {
                let before = prev
                    .iter()
                    .find(|p| p.id == r.id)
                    .and_then(|p| p.counters.get(n).copied())
                    .unwrap_or(0);
                format!("{:.0}", c(n).saturating_sub(before) as f64 / dt.as_secs_f64())
            }
            None => "-".into(),
        };
        let drops =
            c("not_allowed") + c("drop_no_snat_port") + c("drop_table_full") + c("drop_no_route");
        out += &format!(
            "{:<20} {:>7} {:>9} {:>10} {:>12} {:>10} {:>12} {:>8}\n",
            r.name,
            r.active_flows,
            rate("new_conns"),
            rate("packets"),
            c("bytes"),
            rate("reply_packets"),
            c("reply_bytes"),
            drops
        );
    }
    out
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn an_answer_of_another_shape_is_an_error_naming_the_command_not_raw_json() {
        let renamed = serde_json::json!([{ "rule_name": "broker-1", "state": "ESTABLISHED" }]);
        let e = decode::<Vec<FlowRow>>("flows", &renamed).unwrap_err();
        let text = e.report();
        assert!(text.contains("`flows`") && text.contains("another version"), "{text}");
        assert_eq!(e.exit_code(), std::process::ExitCode::from(1));
    }
}
