//! The CLI commands that talk to the running daemon, and how they print: a table for
//! people, `--json` for scripts. Each returns the process exit code (0 ok, 1 runtime
//! failure, 2 usage / invalid config).

use std::path::Path;

use crate::daemon::control::{self, FlowRow, Request, Response, RuleInfo, RuleStatsRow, Status};
use std::time::{Duration, Instant};

/// Sends `req` and prints the answer with `print` (or as JSON).
pub fn request(
    socket: &Path,
    req: &Request,
    as_json: bool,
    print: impl Fn(&serde_json::Value) -> String,
) -> u8 {
    match control::call(socket, req) {
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
        Ok(resp) => output(&resp, as_json, print),
    }
}

fn output(resp: &Response, as_json: bool, print: impl Fn(&serde_json::Value) -> String) -> u8 {
    if !resp.ok {
        eprintln!("error: {}", resp.error.as_deref().unwrap_or("unknown error"));
        if as_json {
            println!("{}", serde_json::to_string_pretty(resp).unwrap_or_default());
        }
        return resp.exit_code.max(1);
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&resp.data).unwrap_or_default());
    } else {
        let text = print(&resp.data);
        if !text.is_empty() {
            println!("{}", text.trim_end());
        }
    }
    0
}

/// A request whose answer is a message ("drained: ..."), printed as text.
pub fn command(socket: &Path, req: &Request) -> u8 {
    request(socket, req, false, message)
}

/// Plain messages ("drained: ...").
pub fn message(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn parse<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Option<T> {
    serde_json::from_value(v.clone()).ok()
}

pub fn rules_table(v: &serde_json::Value) -> String {
    let Some(rules) = parse::<Vec<RuleInfo>>(v) else { return v.to_string() };
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

pub fn status_text(v: &serde_json::Value) -> String {
    let Some(s) = parse::<Status>(v) else { return v.to_string() };
    let mut out = String::new();
    out += &format!("forwarder {} (pid {}), config {}\n", s.version, s.pid, s.config);
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
        out += &format!(
            "drained:     since {} s ago; {} flows remain\n",
            crate::host::clock::unix_now().saturating_sub(since),
            s.active_flows
        );
    }
    out += &match &s.last_probe {
        Some(p) => format!("last probe:  {} s ago from {}\n", p.seconds_ago, p.from),
        None => "last probe:  none seen yet (Azure probes come from 168.63.129.16; check the NSG and local firewall)\n".into(),
    };
    out += &format!("flows:       {}\n\n", s.active_flows);
    out += &rules_table(&serde_json::to_value(&s.rules).unwrap_or_default());
    out
}

pub fn flows_table(v: &serde_json::Value) -> String {
    let Some(flows) = parse::<Vec<FlowRow>>(v) else { return v.to_string() };
    let mut out = String::new();
    for f in &flows {
        out += &format!(
            "{:<16} {:<11} src={} dst={} -> src={} dst={} packets={} bytes={} age={}s idle={}s\n",
            f.rule,
            f.state,
            f.client,
            f.listen,
            f.snat,
            f.target,
            f.packets,
            f.bytes,
            f.age_s,
            f.idle_s
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

/// `forwarder stats [--watch]`: with `--watch`, a refreshed table every `interval` (rates
/// from the difference), `count` times or until interrupted.
pub fn stats(
    socket: &Path,
    as_json: bool,
    watch: bool,
    interval: Duration,
    count: Option<u64>,
) -> u8 {
    let mut prev: Option<(Vec<RuleStatsRow>, Instant)> = None;
    let mut n = 0u64;
    loop {
        let resp = match control::call(socket, &Request::Stats) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        if !resp.ok || as_json {
            let code = output(&resp, as_json, message);
            if code != 0 || !watch {
                return code;
            }
        } else {
            let rows: Vec<RuleStatsRow> = parse(&resp.data).unwrap_or_default();
            let rates = prev.as_ref().map(|(p, t)| (p.as_slice(), t.elapsed()));
            if watch {
                print!("\x1b[2J\x1b[H");
            }
            println!("{}", stats_table(&rows, rates).trim_end());
            prev = Some((rows, Instant::now()));
        }
        n += 1;
        if !watch || count.is_some_and(|c| n >= c) {
            return 0;
        }
        std::thread::sleep(interval);
    }
}
