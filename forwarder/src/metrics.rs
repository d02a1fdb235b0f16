//! Prometheus text exposition on `metrics` (prometheus-client encodes; this module only
//! maps a snapshot of the daemon onto metric families and serves them over plain HTTP).

use crate::{
    accept::Backoff,
    control::{Attachment, RuleStatsRow},
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::{net::SocketAddr, sync::Arc};
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

    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
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
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf))
                .await;
            let body =
                tokio::task::spawn_blocking(move || render(&snapshot())).await.unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
