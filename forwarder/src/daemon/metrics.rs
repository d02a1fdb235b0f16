//! Prometheus text exposition on `metrics` (prometheus-client encodes; this module only
//! maps a snapshot of the daemon onto metric families and serves them over plain HTTP).

use crate::{
    daemon::accept::Backoff,
    daemon::azure_events::Counts as AzureCounts,
    daemon::control::{Attachment, RuleStatsRow},
    daemon::kafka_watch::Counts as KafkaCounts,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// What a scrape reports, taken under the daemon's lock.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub rules: Vec<RuleStatsRow>,
    pub attached: Vec<Attachment>,
    pub healthy: bool,
    pub drained: bool,
    /// (table, entries in use, capacity) of the conntrack tables, in halves.
    pub tables: Vec<(String, u64, u64)>,
    /// With a `health` endpoint configured: the load balancer's probes.
    pub probes: Option<Probes>,
    /// The program's operator events: (event, lines logged, held back by the rate limit).
    pub kernel_events: Vec<(&'static str, u64, u64)>,
    /// With a `[kafka]` section: the watch's counts.
    pub kafka: Option<KafkaCounts>,
    /// With `[azure] scheduled_events`: what the rounds saw and did.
    pub azure: Option<AzureCounts>,
    /// [`crate::config::fingerprint::sha256`] of the applied settings; `None` in a
    /// snapshot that could not be taken.
    pub config_sha256: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// Accepted since the daemon started.
    pub total: u64,
    /// When the last one arrived, in seconds since the Unix epoch.
    pub last_unix: Option<f64>,
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Counters named as in `forwarder_common::Counter::name` that are drops, with the reason
/// label they get.
const DROPS: [(&str, &str); 4] = [
    ("not_allowed", "not_allowed"),
    ("drop_no_snat_port", "no_snat_port"),
    ("drop_table_full", "table_full"),
    ("drop_no_route", "no_route"),
];

/// The two expositions a scraper may ask for (its `Accept` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text`, which Prometheus asks for: what prometheus-client
    /// writes.
    OpenMetrics,
    /// `text/plain; version=0.0.4`, for everything else (curl, promtool, older scrapers).
    Text,
}

impl Format {
    pub fn negotiate(request: &str) -> Format {
        let accepts_openmetrics = request.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("accept:")
                && l.to_ascii_lowercase().contains("application/openmetrics-text")
        });
        if accepts_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// A snapshot in `format`.
pub fn exposition(s: &Snapshot, format: Format) -> String {
    let open = render(s);
    match format {
        Format::OpenMetrics => open,
        Format::Text => openmetrics_to_text(&open),
    }
}

/// The Prometheus text format of an OpenMetrics exposition: a counter family's HELP and
/// TYPE name its samples' `_total` name, an info family's its `_info` name with type
/// `gauge` (the text format has no info type), `unknown` is `untyped`, no `# EOF`.
/// (OpenMetrics names the family `x` and its sample `x_total`; the text format names both
/// `x_total`, and promtool reports every counter "without help text" otherwise.)
fn openmetrics_to_text(open: &str) -> String {
    let families_of = |kind: &str| -> std::collections::HashSet<&str> {
        let suffix = format!(" {kind}");
        open.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(suffix.as_str()))
            .collect()
    };
    let (counters, infos) = (families_of("counter"), families_of("info"));
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else if infos.contains(name) {
                    format!("{name}_info")
                } else {
                    name.into()
                };
                let tail = match (prefix, tail) {
                    ("# TYPE ", "unknown") => "untyped",
                    ("# TYPE ", "info") => "gauge",
                    _ => tail,
                };
                out.push_str(&format!("{prefix}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

pub fn render(s: &Snapshot) -> String {
    let mut reg = Registry::with_prefix("forwarder");
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let conns = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    let slow = Family::<Labels, Counter>::default();
    let icmp = Family::<Labels, Counter>::default();
    let mss = Family::<Labels, Counter>::default();
    let active = Family::<Labels, Gauge>::default();
    for r in &s.rules {
        let c = |name: &str| r.counters.get(name).copied().unwrap_or(0);
        for (dir, p, b) in
            [("original", "packets", "bytes"), ("reply", "reply_packets", "reply_bytes")]
        {
            let l = labels(&[("rule", &r.name), ("direction", dir)]);
            packets.get_or_create(&l).inc_by(c(p));
            bytes.get_or_create(&l).inc_by(c(b));
        }
        let l = labels(&[("rule", &r.name)]);
        conns.get_or_create(&l).inc_by(c("new_conns"));
        slow.get_or_create(&l).inc_by(c("slow_path"));
        icmp.get_or_create(&l).inc_by(c("icmp_translated"));
        mss.get_or_create(&l).inc_by(c("mss_clamped"));
        active.get_or_create(&l).set(r.active_flows as i64);
        for (counter, reason) in DROPS {
            drops
                .get_or_create(&labels(&[("rule", &r.name), ("reason", reason)]))
                .inc_by(c(counter));
        }
    }
    reg.register("packets", "Packets forwarded per rule and direction", packets);
    reg.register("bytes", "IP bytes forwarded per rule and direction", bytes);
    reg.register("connections", "Connections opened per rule", conns);
    reg.register("drops", "Packets dropped or refused per rule, by reason", drops);
    reg.register("slow_path", "Translated packets handed to the kernel to send", slow);
    reg.register("icmp_translated", "ICMP errors translated per rule", icmp);
    reg.register("mss_clamped", "SYN / SYN-ACK whose MSS was lowered", mss);
    reg.register("active_flows", "Tracked connections per rule", active);

    let attached = Family::<Labels, Gauge>::default();
    for a in &s.attached {
        attached.get_or_create(&labels(&[("interface", &a.interface), ("mode", &a.mode)])).set(1);
    }
    reg.register(
        "program_attached",
        "1 per interface the program is attached to, by mode",
        attached,
    );
    let healthy = Gauge::<i64>::default();
    healthy.set(s.healthy as i64);
    reg.register("healthy", "1 while the health probe endpoint answers", healthy);
    let drained = Gauge::<i64>::default();
    drained.set(s.drained as i64);
    reg.register("drained", "1 after `forwarder drain`", drained);
    let used = Family::<Labels, Gauge>::default();
    let cap = Family::<Labels, Gauge>::default();
    for (t, u, c) in &s.tables {
        used.get_or_create(&labels(&[("table", t)])).set(*u as i64);
        cap.get_or_create(&labels(&[("table", t)])).set(*c as i64);
    }
    reg.register("conntrack_entries", "Conntrack entries in use (two per flow)", used);
    reg.register("conntrack_capacity", "Conntrack table capacity in entries", cap);
    let logged = Family::<Labels, Counter>::default();
    let suppressed = Family::<Labels, Counter>::default();
    for (event, l, h) in &s.kernel_events {
        logged.get_or_create(&labels(&[("event", event)])).inc_by(*l);
        suppressed.get_or_create(&labels(&[("event", event)])).inc_by(*h);
    }
    reg.register(
        "kernel_events_logged",
        "Data-path events the program wrote to the log (SNAT ports, table full, ...)",
        logged,
    );
    reg.register(
        "kernel_events_suppressed",
        "Data-path events not logged: past the rate limit of a few lines per second",
        suppressed,
    );
    if let Some(p) = &s.probes {
        total(
            &mut reg,
            "health_probes",
            "Health probes accepted since the daemon started",
            p.total,
        );
        if let Some(at) = p.last_unix {
            let what = "When the last health probe arrived (Unix time)";
            timestamp(&mut reg, "health_last_probe_timestamp_seconds", what, at);
        }
    }

    if let Some(k) = &s.kafka {
        register_kafka(&mut reg, k);
    }
    if let Some(a) = &s.azure {
        register_azure(&mut reg, a);
    }
    if let Some(sha) = &s.config_sha256 {
        // Exposed as forwarder_config_info{sha256="..."} 1. The VMs of one pool must show
        // one value: alerts.yml's ForwarderConfigDiffers counts them.
        reg.register(
            "config",
            "SHA-256 of the applied settings and rules, comments and order aside \
             (forwarder status shows it too)",
            Info::new(vec![("sha256".to_string(), sha.clone())]),
        );
    }

    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

/// The `[kafka]` watch: advertised brokers by state, and how reaching the cluster goes.
fn register_kafka(reg: &mut Registry, k: &KafkaCounts) {
    let brokers = Family::<Labels, Gauge>::default();
    for (state, n) in [("mapped", k.mapped), ("unmapped", k.unmapped), ("gone", k.gone)] {
        brokers.get_or_create(&labels(&[("state", state)])).set(n as i64);
    }
    reg.register(
        "kafka_brokers",
        "Kafka brokers by state: mapped (advertised, a rule forwards to it), unmapped \
         (advertised, no rule: clients hang), gone (a rule's broker is no longer advertised)",
        brokers,
    );
    let failed = "Rounds of the [kafka] watch that got no metadata from the cluster";
    total(reg, "kafka_watch_failures", failed, k.failures);
    let what = "When the [kafka] watch last got the cluster's metadata (Unix time; 0: never)";
    timestamp(reg, "kafka_watch_last_success_timestamp_seconds", what, k.last_success_unix);
}

/// `[azure] scheduled_events`: the disruptive events naming this VM, by type (every type
/// shown, 0 when none), and how following them goes.
fn register_azure(reg: &mut Registry, a: &AzureCounts) {
    let pending = Family::<Labels, Gauge>::default();
    for kind in crate::daemon::azure_events::DISRUPTIVE {
        let n = a.pending.get(kind).copied().unwrap_or(0);
        pending.get_or_create(&labels(&[("type", kind)])).set(n as i64);
    }
    reg.register(
        "azure_scheduled_events",
        "Azure scheduled events that will end this VM's connections (Terminate, Preempt, \
         Reboot, Redeploy), by type; the VM is drained while one is pending",
        pending,
    );
    let failed = "Calls to Azure's instance metadata service that failed (reading the \
                  scheduled events, approving one)";
    total(reg, "azure_events_failures", failed, a.failures);
    let approved = "Scheduled events of this VM approved once no connection was left";
    total(reg, "azure_events_approved", approved, a.approved);
    let what = "When the scheduled events were last read (Unix time; 0: never)";
    timestamp(reg, "azure_events_last_success_timestamp_seconds", what, a.last_success_unix);
}

/// A moment as a gauge of Unix seconds.
fn timestamp(reg: &mut Registry, name: &str, help: &str, unix: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(unix);
    reg.register(name, help, g);
}

/// A counter the daemon keeps itself (not the kernel's per-CPU ones), at `value`.
fn total(reg: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    reg.register(name, help, c);
}

/// Serves `GET /metrics` (any path) with a fresh snapshot per request.
pub async fn serve<F>(addr: SocketAddr, snapshot: Arc<F>)
where
    F: Fn() -> Snapshot + Send + Sync + 'static,
{
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, "cannot open the metrics endpoint: {e}");
            return;
        }
    };
    tracing::info!(%addr, "metrics endpoint open");
    let mut backoff = Backoff::new("metrics");
    loop {
        let (mut stream, _) = backoff.accept(|| listener.accept()).await;
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let format = Format::negotiate(&String::from_utf8_lossy(&buf[..n]));
            let body = tokio::task::spawn_blocking(move || exposition(&snapshot(), format))
                .await
                .unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                format.content_type(),
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_and_everyone_else_gets_text() {
        let prometheus = "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\r\n";
        assert_eq!(Format::negotiate(prometheus), Format::OpenMetrics);
        assert_eq!(Format::negotiate("GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n"), Format::Text);
        assert_eq!(Format::negotiate(""), Format::Text);
    }

    #[test]
    fn the_text_format_names_counter_families_by_their_samples() {
        let s = Snapshot { healthy: true, probes: Some(Probes::default()), ..Snapshot::default() };
        let open = exposition(&s, Format::OpenMetrics);
        assert!(open.contains("# TYPE forwarder_health_probes counter\n"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
        let text = exposition(&s, Format::Text);
        assert!(text.contains("# HELP forwarder_health_probes_total Health probes"), "{text}");
        assert!(text.contains("# TYPE forwarder_health_probes_total counter\n"), "{text}");
        assert!(text.contains("forwarder_health_probes_total 0\n"), "{text}");
        assert!(text.contains("# TYPE forwarder_healthy gauge\nforwarder_healthy 1\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("kafka"), "no [kafka], no kafka metrics: {text}");
    }

    #[test]
    fn the_azure_events_export_every_disruptive_type() {
        let none = exposition(&Snapshot::default(), Format::Text);
        assert!(!none.contains("azure"), "no [azure], no azure metrics: {none}");
        let azure = AzureCounts {
            pending: [("Terminate".to_string(), 1)].into(),
            failures: 2,
            approved: 1,
            last_success_unix: 1.5e9,
        };
        let text =
            exposition(&Snapshot { azure: Some(azure), ..Snapshot::default() }, Format::Text);
        for want in [
            "forwarder_azure_scheduled_events{type=\"Terminate\"} 1\n",
            "forwarder_azure_scheduled_events{type=\"Reboot\"} 0\n",
            "forwarder_azure_events_failures_total 2\n",
            "forwarder_azure_events_approved_total 1\n",
            "forwarder_azure_events_last_success_timestamp_seconds 1500000000",
        ] {
            assert!(text.contains(want), "{want:?} missing: {text}");
        }
    }

    #[test]
    fn the_kafka_watch_exports_every_state_and_its_failures() {
        let kafka =
            KafkaCounts { mapped: 3, unmapped: 1, gone: 0, failures: 2, last_success_unix: 1.5e9 };
        let text =
            exposition(&Snapshot { kafka: Some(kafka), ..Snapshot::default() }, Format::Text);
        for want in [
            "forwarder_kafka_brokers{state=\"mapped\"} 3\n",
            "forwarder_kafka_brokers{state=\"unmapped\"} 1\n",
            "forwarder_kafka_brokers{state=\"gone\"} 0\n",
            "# TYPE forwarder_kafka_watch_failures_total counter\nforwarder_kafka_watch_failures_total 2\n",
            "forwarder_kafka_watch_last_success_timestamp_seconds 1500000000",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn the_config_hash_is_an_info_metric_and_a_gauge_in_the_text_format() {
        let s = Snapshot { config_sha256: Some("ab12".into()), ..Snapshot::default() };
        let open = exposition(&s, Format::OpenMetrics);
        assert!(open.contains("# TYPE forwarder_config info\n"), "{open}");
        assert!(open.contains("\nforwarder_config_info{sha256=\"ab12\"} 1\n"), "{open}");
        let text = exposition(&s, Format::Text);
        assert!(text.contains("# HELP forwarder_config_info SHA-256 of the applied"), "{text}");
        assert!(text.contains("# TYPE forwarder_config_info gauge\n"), "{text}");
        assert!(text.contains("\nforwarder_config_info{sha256=\"ab12\"} 1\n"), "{text}");
        let none = exposition(&Snapshot::default(), Format::Text);
        assert!(!none.contains("forwarder_config"), "{none}");
    }
}
