//! `forwarder kafka check`: take the path a Kafka client takes through the forwarder and
//! report, per advertised broker, the hop where it breaks.
//!
//! For each `--via` (a bootstrap address, normally the forwarder's): connect and fetch the
//! metadata there, then for every broker it lists resolve the advertised host with the
//! system resolver (so /etc/hosts and the private DNS zone apply, as for clients), connect,
//! do TLS (the certificate checked against the advertised host, as clients check it), the
//! ApiVersions handshake and SASL, as the listener needs. With `--produce`, also write test
//! messages to a partition each broker leads and read them back through the same
//! connection.
//!
//! Broker ids are only unique within one cluster, and a lab may put a one-node cluster
//! behind each `--via`: everything here is keyed by the via first.

use super::{
    client::{
        connect_tcp, resolve, Broker, Connection, Partition, Security, Topic, FETCH_MAX_WAIT,
    },
    error::{ErrorCode, Hop, KafkaError},
    stream::Stream,
};
use serde::Serialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A record batch holds at most this many messages / bytes: brokers refuse batches above
/// their message.max.bytes (1 MB by default).
const BATCH_MESSAGES: usize = 1000;
const BATCH_BYTES: usize = 512 << 10;
/// What one Fetch may return; above the largest message (`MAX_MESSAGE_SIZE`).
const FETCH_BYTES: i32 = 4 << 20;
pub const MIN_MESSAGE_SIZE: usize = 64;
pub const MAX_MESSAGE_SIZE: usize = 256 << 10;
pub const MAX_MESSAGES: u32 = 100_000;
/// Metadata polls while a new topic's partitions get leaders.
const LEADER_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Options {
    pub vias: Vec<String>,
    pub security: Security,
    pub timeout: Duration,
    pub produce: Option<ProduceOptions>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProduceOptions {
    pub topic: String,
    pub messages: u32,
    /// Bytes per message; above the path MTU, it also tests PMTU discovery across the NAT.
    pub message_size: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub hop: Hop,
    pub error: String,
}

impl From<&KafkaError> for Failure {
    fn from(e: &KafkaError) -> Failure {
        Failure { hop: e.hop(), error: e.to_string() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub produce: Option<ProduceOptions>,
    pub vias: Vec<ViaReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViaReport {
    pub via: String,
    pub ok: bool,
    /// The via itself failed: no metadata, so no brokers to check.
    pub failure: Option<Failure>,
    pub metadata_ms: Option<f64>,
    pub cluster_id: Option<String>,
    /// With --produce: whether this run created the topic in this cluster.
    pub topic_created: bool,
    pub brokers: Vec<BrokerReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerReport {
    /// The --via whose metadata listed this broker.
    pub via: String,
    pub id: i32,
    /// host:port as advertised.
    pub advertised: String,
    pub rack: Option<String>,
    /// What the system resolver returned for the advertised host.
    pub resolved: Vec<String>,
    /// The address that accepted the connection.
    pub connected: Option<String>,
    /// TCP connect, TLS, ApiVersions and SASL all worked (those asked for).
    pub reachable: bool,
    pub failure: Option<Failure>,
    pub dns_ms: Option<f64>,
    pub tcp_ms: Option<f64>,
    /// With --tls.
    pub tls_ms: Option<f64>,
    pub handshake_ms: Option<f64>,
    /// With --sasl-mechanism.
    pub sasl_ms: Option<f64>,
    /// TCP connect, TLS and the ApiVersions round trip: SYN to first Kafka answer.
    pub latency_ms: Option<f64>,
    pub produce: Option<ProduceReport>,
}

impl BrokerReport {
    pub fn ok(&self) -> bool {
        self.reachable && self.produce.as_ref().is_none_or(|p| p.ok)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    pub topic: String,
    pub partition: Option<i32>,
    pub ok: bool,
    pub produced: u32,
    pub consumed: u32,
    /// Payload bytes produced.
    pub bytes: u64,
    pub produce_mb_s: Option<f64>,
    pub fetch_mb_s: Option<f64>,
    /// Why nothing was produced although nothing failed (the broker leads no partition).
    pub note: Option<String>,
    pub failure: Option<Failure>,
}

impl ProduceReport {
    fn new(topic: &str, partition: Option<i32>) -> ProduceReport {
        ProduceReport {
            topic: topic.into(),
            partition,
            ok: false,
            produced: 0,
            consumed: 0,
            bytes: 0,
            produce_mb_s: None,
            fetch_mb_s: None,
            note: None,
            failure: None,
        }
    }

    fn failed(mut self, f: Failure) -> ProduceReport {
        self.ok = false;
        self.failure = Some(f);
        self
    }
}

pub fn run(opts: &Options) -> Report {
    let run_id = run_id();
    let vias: Vec<ViaReport> = opts.vias.iter().map(|v| check_via(v, opts, &run_id)).collect();
    Report { ok: vias.iter().all(|v| v.ok), produce: opts.produce.clone(), vias }
}

fn check_via(via: &str, opts: &Options, run_id: &str) -> ViaReport {
    let mut report = ViaReport {
        via: via.into(),
        ok: false,
        failure: None,
        metadata_ms: None,
        cluster_id: None,
        topic_created: false,
        brokers: Vec::new(),
    };
    let started = Instant::now();
    let mut conn = match Connection::connect(via, &opts.security, opts.timeout) {
        Ok(c) => c,
        Err(e) => {
            report.failure = Some(Failure::from(&e));
            return report;
        }
    };
    let topics: Vec<String> = opts.produce.iter().map(|p| p.topic.clone()).collect();
    let meta = match conn.metadata(Some(&topics)) {
        Ok(m) => m,
        Err(e) => {
            report.failure = Some(Failure::from(&e));
            return report;
        }
    };
    report.metadata_ms = Some(ms(started.elapsed()));
    report.cluster_id = meta.cluster_id.clone();
    if meta.brokers.is_empty() {
        report.failure = Some(Failure {
            hop: Hop::Request,
            error: format!("{via}: the metadata lists no brokers"),
        });
        return report;
    }
    let mut probed: Vec<(BrokerReport, Option<Connection>)> =
        meta.brokers.iter().map(|b| probe(via, b, &opts.security, opts.timeout)).collect();
    if let Some(p) = &opts.produce {
        let listed = meta.topics.iter().find(|t| t.name == p.topic).cloned();
        let leaders = ensure_topic(&mut conn, &p.topic, listed, meta.brokers.len(), opts.timeout);
        if let Ok((_, created)) = &leaders {
            report.topic_created = *created;
        }
        for (broker, conn) in &mut probed {
            let Some(conn) = conn else { continue };
            broker.produce = Some(match &leaders {
                Err(f) => ProduceReport::new(&p.topic, None).failed(f.clone()),
                Ok((partitions, _)) => match partitions.iter().find(|q| q.leader == broker.id) {
                    None => ProduceReport {
                        ok: true,
                        note: Some(format!("leads no partition of {}", p.topic)),
                        ..ProduceReport::new(&p.topic, None)
                    },
                    Some(q) => exercise(conn, p, q.id, broker.id, run_id, opts.timeout),
                },
            });
        }
    }
    report.brokers = probed.into_iter().map(|(b, _)| b).collect();
    report.ok = report.brokers.iter().all(BrokerReport::ok);
    report
}

/// Connects to `broker` as a client does, timing each hop; keeps the connection for
/// producing. TLS checks the certificate against the advertised host, never against
/// `--tls-server-name`: a client knows only the advertised name.
fn probe(
    via: &str,
    broker: &Broker,
    security: &Security,
    timeout: Duration,
) -> (BrokerReport, Option<Connection>) {
    let addr = broker.address();
    let mut r = BrokerReport {
        via: via.into(),
        id: broker.id,
        advertised: addr.clone(),
        rack: broker.rack.clone(),
        resolved: Vec::new(),
        connected: None,
        reachable: false,
        failure: None,
        dns_ms: None,
        tcp_ms: None,
        tls_ms: None,
        handshake_ms: None,
        sasl_ms: None,
        latency_ms: None,
        produce: None,
    };
    match connect_timed(&mut r, broker, security, timeout) {
        Ok(conn) => {
            r.reachable = true;
            (r, Some(conn))
        }
        Err(e) => {
            r.failure = Some(Failure::from(&e));
            (r, None)
        }
    }
}

/// The hops to `broker` in turn, each one's time recorded in `r` once it is done.
fn connect_timed(
    r: &mut BrokerReport,
    broker: &Broker,
    security: &Security,
    timeout: Duration,
) -> Result<Connection, KafkaError> {
    let addr = broker.address();
    let t = Instant::now();
    let addrs = resolve(&addr, timeout)?;
    r.dns_ms = Some(ms(t.elapsed()));
    r.resolved = addrs.iter().map(|a| a.to_string()).collect();
    let t = Instant::now();
    let (tcp, peer) = connect_tcp(&addr, &addrs, timeout)?;
    let mut latency = t.elapsed();
    r.tcp_ms = Some(ms(latency));
    r.connected = Some(peer.to_string());
    let stream = match &security.tls {
        None => Stream::from(tcp),
        Some(tls) => {
            let t = Instant::now();
            let stream = tls.handshake(tcp, &addr, &broker.host, timeout)?;
            latency += t.elapsed();
            r.tls_ms = Some(ms(t.elapsed()));
            stream
        }
    };
    let t = Instant::now();
    let mut conn = Connection::handshake(&addr, stream, peer, timeout)?;
    r.handshake_ms = Some(ms(t.elapsed()));
    r.latency_ms = Some(ms(latency + t.elapsed()));
    if let Some(sasl) = &security.sasl {
        let t = Instant::now();
        conn.authenticate(sasl)?;
        r.sasl_ms = Some(ms(t.elapsed()));
    }
    Ok(conn)
}

/// The topic's partitions once each has a leader, creating the topic (one partition per
/// broker) when the cluster does not know it. `created`: this run created it.
fn ensure_topic(
    conn: &mut Connection,
    topic: &str,
    mut listed: Option<Topic>,
    brokers: usize,
    timeout: Duration,
) -> Result<(Vec<Partition>, bool), Failure> {
    let deadline = Instant::now() + timeout;
    let mut created = false;
    let fail = |e: KafkaError| Failure::from(&e);
    // Bounded in count as well as time: a broker that never elects a leader stops us.
    for _ in 0..100 {
        match &listed {
            Some(t)
                if t.error.is_none()
                    && !t.partitions.is_empty()
                    && t.partitions.iter().all(|p| p.leader >= 0) =>
            {
                return Ok((t.partitions.clone(), created))
            }
            None => create(conn, topic, brokers, &mut created).map_err(fail)?,
            Some(t) if t.error == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {
                create(conn, topic, brokers, &mut created).map_err(fail)?
            }
            // Leaders being elected: wait.
            Some(t) if t.error.is_none() || t.error == Some(ErrorCode::LEADER_NOT_AVAILABLE) => {}
            Some(t) => {
                return Err(fail(KafkaError::Broker {
                    addr: conn.addr().into(),
                    api: super::error::Api::Metadata,
                    code: t.error.expect("matched above"),
                    message: Some(format!("for topic {topic}")),
                }))
            }
        }
        if Instant::now() + LEADER_POLL > deadline {
            break;
        }
        std::thread::sleep(LEADER_POLL);
        listed = conn
            .metadata(Some(&[topic.to_string()]))
            .map_err(fail)?
            .topics
            .into_iter()
            .find(|t| t.name == topic);
    }
    Err(Failure {
        hop: Hop::Request,
        error: format!(
            "{}: topic {topic} has no leader for every partition within {}",
            conn.addr(),
            humantime::format_duration(timeout)
        ),
    })
}

fn create(
    conn: &mut Connection,
    topic: &str,
    brokers: usize,
    created: &mut bool,
) -> Result<(), KafkaError> {
    if !*created {
        conn.create_topic(topic, i32::try_from(brokers).unwrap_or(i32::MAX))?;
        *created = true;
    }
    Ok(())
}

/// Produces the test messages to `partition` and fetches them back, checking each one's
/// content and their order.
fn exercise(
    conn: &mut Connection,
    p: &ProduceOptions,
    partition: i32,
    broker_id: i32,
    run_id: &str,
    timeout: Duration,
) -> ProduceReport {
    let mut report = ProduceReport::new(&p.topic, Some(partition));
    let prefix = format!("forwarder-check {run_id} broker {broker_id} ");
    let values: Vec<Vec<u8>> =
        (0..p.messages).map(|i| payload(&prefix, i, p.message_size)).collect();

    let started = Instant::now();
    let mut first_offset = None;
    for batch in batches(&values) {
        match conn.produce(&p.topic, partition, batch) {
            Ok(base) => {
                first_offset.get_or_insert(base);
                report.produced += batch.len() as u32;
                report.bytes += batch.iter().map(|v| v.len() as u64).sum::<u64>();
            }
            Err(e) => return report.failed(Failure::from(&e)),
        }
    }
    report.produce_mb_s = mb_per_s(report.bytes, started.elapsed());
    let Some(mut offset) = first_offset else { return report };

    let started = Instant::now();
    let deadline = started + timeout;
    let mut back: Vec<Vec<u8>> = Vec::new();
    let mut back_bytes = 0u64;
    // One fetch returns at least one message; allow for empty answers while the broker
    // makes the writes visible. The writes are acknowledged, so ask without waiting (the
    // rate measures the path, not the broker's max_wait) unless the last answer was empty.
    let mut wait = Duration::ZERO;
    for _ in 0..values.len() + 20 {
        if back.len() >= values.len() || Instant::now() >= deadline {
            break;
        }
        let records = match conn.fetch_wait(&p.topic, partition, offset, FETCH_BYTES, wait) {
            Ok(r) => r,
            Err(e) => return report.failed(Failure::from(&e)),
        };
        wait = if records.is_empty() { FETCH_MAX_WAIT } else { Duration::ZERO };
        for r in records {
            offset = r.offset + 1;
            // Other producers may write to the topic too.
            if r.value.starts_with(prefix.as_bytes()) {
                back_bytes += r.value.len() as u64;
                back.push(r.value);
            }
        }
    }
    report.fetch_mb_s = mb_per_s(back_bytes, started.elapsed());
    report.consumed = back.len() as u32;
    if let Some(i) = values.iter().zip(&back).position(|(a, b)| a != b) {
        return report.failed(Failure {
            hop: Hop::Request,
            error: format!(
                "{}: message {i} came back as {:?} (content or order differs)",
                conn.addr(),
                String::from_utf8_lossy(&back[i][..back[i].len().min(60)])
            ),
        });
    }
    if back.len() < values.len() {
        return report.failed(Failure {
            hop: Hop::Request,
            error: format!(
                "{}: {} of the {} messages produced came back within {}",
                conn.addr(),
                back.len(),
                values.len(),
                humantime::format_duration(timeout)
            ),
        });
    }
    report.ok = true;
    report
}

/// Consecutive slices of at most BATCH_MESSAGES messages and BATCH_BYTES bytes (at least
/// one message each).
fn batches(values: &[Vec<u8>]) -> Vec<&[Vec<u8>]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < values.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < values.len()
            && end - start < BATCH_MESSAGES
            && (end == start || bytes + values[end].len() <= BATCH_BYTES)
        {
            bytes += values[end].len();
            end += 1;
        }
        out.push(&values[start..end]);
        start = end;
    }
    out
}

/// `size` bytes: the prefix, the message's number, then filler that differs per message.
fn payload(prefix: &str, i: u32, size: usize) -> Vec<u8> {
    let mut v = format!("{prefix}{i:08} ").into_bytes();
    let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut k = i as usize;
    while v.len() < size {
        v.push(fill[k % fill.len()]);
        k += 1;
    }
    v.truncate(size.max(prefix.len() + 9));
    v
}

/// Tells this run's messages from earlier runs' in a reused topic.
fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn mb_per_s(bytes: u64, d: Duration) -> Option<f64> {
    let s = d.as_secs_f64();
    (s > 0.0 && bytes > 0).then(|| (bytes as f64 / s / 1e4).round() / 100.0)
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
