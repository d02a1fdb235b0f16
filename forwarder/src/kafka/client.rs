//! A small blocking Kafka client: one connection to one broker, the way a client makes it
//! (system resolver, TCP connect, TLS if asked, ApiVersions, SASL if asked), then Metadata,
//! CreateTopics, Produce and Fetch at the versions negotiated. Every step is bounded by the
//! connection's timeout.
//!
//! Over 500 lines on purpose: `Connection` has one method per request it speaks, each with
//! its version-dependent fields, and they read best side by side with the shared handshake.

use super::{
    error::{Api, ErrorCode, KafkaError, RecordsError},
    sasl::SaslConfig,
    stream::Stream,
    tls::TlsConfig,
    wire::{self, Versions, Wire},
};
use crate::host::resolve::ResolveError;
use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        create_topics_request::CreatableTopic,
        fetch_request::{FetchPartition, FetchTopic},
        metadata_request::MetadataRequestTopic,
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
        FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, ProduceRequest,
        ProduceResponse, TopicName,
    },
    protocol::StrBytes,
    records::{
        Compression, Record as BatchRecord, RecordBatchDecoder, RecordBatchEncoder,
        RecordEncodeOptions, TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH,
        NO_PRODUCER_ID,
    },
};
use serde::Serialize;
use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// How long [`Connection::fetch`] lets the broker wait for data: short, so polling an empty
/// partition answers well within any timeout without spinning.
pub const FETCH_MAX_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<Broker>,
    pub topics: Vec<Topic>,
}

/// A broker as the cluster advertises it: where clients will connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broker {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

impl Broker {
    /// host:port, as a client dials it.
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topic {
    pub name: String,
    #[serde(serialize_with = "code_name")]
    pub error: Option<ErrorCode>,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub id: i32,
    /// -1 while the partition has no leader.
    pub leader: i32,
    #[serde(serialize_with = "code_name")]
    pub error: Option<ErrorCode>,
}

fn code_name<S: serde::Serializer>(c: &Option<ErrorCode>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_str(&c.name()),
        None => s.serialize_none(),
    }
}

/// A record read back by [`Connection::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub value: Vec<u8>,
}

/// Splits `host:port` or `[v6]:port`.
pub fn split_host_port(addr: &str) -> Result<(String, u16), KafkaError> {
    let bad = |why| KafkaError::BadAddress { addr: addr.to_string(), why };
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(|| bad("no port after [IPv6]"))?;
        (host, port)
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 address needs brackets: [ADDR]:PORT"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad("the port must be 1 to 65535"))?;
    Ok((host.to_string(), port))
}

pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves `addr` with the system resolver, as Kafka clients do, within `timeout`
/// (`host::resolve`).
pub fn resolve(addr: &str, timeout: Duration) -> Result<Vec<SocketAddr>, KafkaError> {
    let (host, port) = split_host_port(addr)?;
    crate::host::resolve::lookup(&host, port, timeout)
        .map_err(|cause| KafkaError::Resolve { addr: addr.into(), cause })
}

/// Connects to the first of `addrs` that accepts, all within `timeout`.
pub fn connect_tcp(
    addr: &str,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), KafkaError> {
    let Some(&first) = addrs.first() else {
        let cause = ResolveError::NoAddresses;
        return Err(KafkaError::Resolve { addr: addr.into(), cause });
    };
    let deadline = Instant::now() + timeout;
    let mut last = None;
    for &peer in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&peer, left) {
            Ok(s) => return Ok((s, peer)),
            Err(e) => last = Some((peer, e)),
        }
    }
    let (peer, io) =
        last.unwrap_or_else(|| (first, std::io::Error::from(std::io::ErrorKind::TimedOut)));
    Err(KafkaError::Connect { addr: addr.into(), peer, timeout, io })
}

/// What a listener asks beyond plaintext Kafka: TLS (SSL), SASL (SASL_PLAINTEXT), both
/// (SASL_SSL), or neither (the default).
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<TlsConfig>,
    /// The name the certificate is checked against on connections to an address given on
    /// the command line (`--bootstrap`, `--via`) instead of its host; never on a connection
    /// to an advertised broker, whose certificate must name what it advertises.
    pub tls_server_name: Option<String>,
    pub sasl: Option<SaslConfig>,
}

/// One connection to one broker, after the ApiVersions handshake.
pub struct Connection {
    wire: Wire,
    versions: Versions,
    peer: SocketAddr,
}

impl Connection {
    /// Resolves `addr` (host:port), connects, and does TLS, the ApiVersions handshake and
    /// SASL as `security` says, each step within `timeout`. The certificate must name
    /// `addr`'s host, or `security.tls_server_name`.
    pub fn connect(
        addr: &str,
        security: &Security,
        timeout: Duration,
    ) -> Result<Connection, KafkaError> {
        let (host, _) = split_host_port(addr)?;
        let addrs = resolve(addr, timeout)?;
        let (tcp, peer) = connect_tcp(addr, &addrs, timeout)?;
        let stream = match &security.tls {
            Some(tls) => {
                let name = security.tls_server_name.as_deref().unwrap_or(&host);
                tls.handshake(tcp, addr, name, timeout)?
            }
            None => Stream::from(tcp),
        };
        let mut conn = Connection::handshake(addr, stream, peer, timeout)?;
        if let Some(sasl) = &security.sasl {
            conn.authenticate(sasl)?;
        }
        Ok(conn)
    }

    /// The ApiVersions handshake on a connected socket (or TLS stream).
    pub fn handshake(
        addr: &str,
        stream: impl Into<Stream>,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<Connection, KafkaError> {
        let mut wire = Wire::new(stream.into(), addr, timeout);
        let versions = api_versions(&mut wire)?;
        Ok(Connection { wire, versions, peer })
    }

    /// SASL authentication, after the handshake.
    pub fn authenticate(&mut self, sasl: &SaslConfig) -> Result<(), KafkaError> {
        sasl.authenticate(&mut self.wire, &self.versions)
    }

    /// The address given to [`Connection::connect`].
    pub fn addr(&self) -> &str {
        self.wire.addr()
    }

    /// The address it resolved to and connected.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    fn version(&self, api: Api) -> Result<i16, KafkaError> {
        self.versions.require(api, self.addr())
    }

    fn broker_error(&self, api: Api, code: ErrorCode, message: Option<StrBytes>) -> KafkaError {
        let message = message.map(|m| m.to_string()).filter(|m| !m.is_empty());
        if code.is_authentication() {
            return KafkaError::NeedsSecurity {
                addr: self.addr().into(),
                detail: format!("{api} answered {code}"),
            };
        }
        KafkaError::Broker { addr: self.addr().into(), api, code, message }
    }

    /// The brokers, and the given topics (`None`: all topics; `Some(&[])`: none). Never
    /// creates topics.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<ClusterMetadata, KafkaError> {
        let api = Api::Metadata;
        let v = self.version(api)?;
        let mut req = MetadataRequest::default().with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect()
        }));
        // Before v4 the broker never auto-creates on Metadata, and the field does not exist.
        if v >= 4 {
            req.allow_auto_topic_creation = false;
        }
        let body = self.wire.exchange(api, &req, v, Duration::ZERO)?;
        let resp: MetadataResponse = self.wire.decode(api, body, v)?;
        let mut brokers = Vec::with_capacity(resp.brokers.len());
        for b in resp.brokers {
            let port = u16::try_from(b.port).ok().filter(|&p| p != 0).ok_or_else(|| {
                self.wire
                    .protocol(api, format!("broker {} advertises port {}", b.node_id.0, b.port))
            })?;
            brokers.push(Broker {
                id: b.node_id.0,
                host: b.host.to_string(),
                port,
                rack: b.rack.map(|r| r.to_string()),
            });
        }
        brokers.sort_by_key(|b| b.id);
        let topics = resp
            .topics
            .into_iter()
            .map(|t| Topic {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                error: ErrorCode::from_code(t.error_code),
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| Partition {
                        id: p.partition_index,
                        leader: p.leader_id.0,
                        error: ErrorCode::from_code(p.error_code),
                    })
                    .collect(),
            })
            .collect();
        Ok(ClusterMetadata {
            cluster_id: resp.cluster_id.map(|c| c.to_string()),
            controller_id: resp.controller_id.0,
            brokers,
            topics,
        })
    }

    /// Creates `name` with `partitions` partitions; fine if it already exists.
    pub fn create_topic(&mut self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        let api = Api::CreateTopics;
        let v = self.version(api)?;
        // -1: the broker's default.replication.factor (v4+); before that it must be given,
        // and 1 is what a one-node lab cluster can hold.
        let replication = if v >= 4 { -1 } else { 1 };
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(millis(self.wire.timeout()))
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(replication)]);
        let body = self.wire.exchange(api, &req, v, Duration::ZERO)?;
        let resp: CreateTopicsResponse = self.wire.decode(api, body, v)?;
        let Some(t) = resp.topics.into_iter().find(|t| t.name.0.as_str() == name) else {
            return Err(self
                .wire
                .protocol(api, format!("the response does not mention topic {name:?}")));
        };
        match ErrorCode::from_code(t.error_code) {
            None | Some(ErrorCode::TOPIC_ALREADY_EXISTS) => Ok(()),
            Some(code) => Err(self.broker_error(api, code, t.error_message)),
        }
    }

    /// Writes `values` as one uncompressed record batch (acks = all) and returns the offset
    /// of the first.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        values: &[Vec<u8>],
    ) -> Result<i64, KafkaError> {
        let api = Api::Produce;
        let v = self.version(api)?;
        let batch = encode_batch(values)
            .map_err(|e| self.wire.protocol_because(api, "encoding the batch", e))?;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(millis(self.wire.timeout()))
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let body = self.wire.exchange(api, &req, v, Duration::ZERO)?;
        let resp: ProduceResponse = self.wire.decode(api, body, v)?;
        let p = resp
            .responses
            .into_iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses)
            .find(|p| p.index == partition)
            .ok_or_else(|| {
                self.wire
                    .protocol(api, format!("the response does not mention {topic}-{partition}"))
            })?;
        match ErrorCode::from_code(p.error_code) {
            None => Ok(p.base_offset),
            Some(code) => Err(self.broker_error(api, code, p.error_message)),
        }
    }

    /// The records of `topic`-`partition` from `offset` on, as much as `max_bytes` holds;
    /// empty when there are none yet (after waiting up to [`FETCH_MAX_WAIT`] on the broker).
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> Result<Vec<Record>, KafkaError> {
        self.fetch_wait(topic, partition, offset, max_bytes, FETCH_MAX_WAIT)
    }

    /// [`Connection::fetch`] with the broker's wait for data (max_wait_ms) chosen. tansu 0.6
    /// holds a Fetch for part of max_wait_ms even when the data is already there, so a
    /// reader that knows the data exists asks with no wait.
    pub fn fetch_wait(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Vec<Record>, KafkaError> {
        let api = Api::Fetch;
        let v = self.version(api)?;
        let wait = max_wait.min(self.wire.timeout() / 2);
        let req = FetchRequest::default()
            .with_max_wait_ms(millis(wait))
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max_bytes)])]);
        let body = self.wire.exchange(api, &req, v, wait)?;
        let resp: FetchResponse = self.wire.decode(api, body, v)?;
        if let Some(code) = ErrorCode::from_code(resp.error_code) {
            return Err(self.broker_error(api, code, None));
        }
        let p = resp
            .responses
            .into_iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                self.wire
                    .protocol(api, format!("the response does not mention {topic}-{partition}"))
            })?;
        if let Some(code) = ErrorCode::from_code(p.error_code) {
            return Err(self.broker_error(api, code, None));
        }
        decode_records(p.records.unwrap_or_default(), offset)
            .map_err(|e| self.wire.protocol_because(api, "the records do not decode", e))
    }
}

/// ApiVersions at the highest version we speak; a broker that does not know it answers in
/// v0 with UNSUPPORTED_VERSION and its own range, and we ask again at its highest.
fn api_versions(wire: &mut Wire) -> Result<Versions, KafkaError> {
    let api = Api::ApiVersions;
    let mut version = wire::ours(api).1;
    for _ in 0..2 {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("forwarder"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let body = wire.exchange(api, &req, version, Duration::ZERO)?;
        let resp: ApiVersionsResponse = match wire.decode(api, body.clone(), version) {
            Ok(r) => r,
            Err(e) => match wire.decode::<ApiVersionsResponse>(api, body, 0) {
                Ok(r) if r.error_code == ErrorCode::UNSUPPORTED_VERSION.0 => r,
                _ => return Err(e),
            },
        };
        let list: Vec<(i16, i16, i16)> =
            resp.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        if resp.error_code == ErrorCode::UNSUPPORTED_VERSION.0 {
            let theirs =
                list.iter().find(|(k, _, _)| *k == wire::api_key(api)).map(|&(_, _, hi)| hi);
            match theirs {
                Some(hi) if (0..version).contains(&hi) => {
                    version = hi;
                    continue;
                }
                _ => {
                    return Err(KafkaError::Unsupported {
                        addr: wire.addr().into(),
                        api,
                        broker: Versions::negotiate(&list).broker_range(api),
                        ours: format!("0..{}", wire::ours(api).1),
                    })
                }
            }
        }
        if let Some(code) = ErrorCode::from_code(resp.error_code) {
            return Err(KafkaError::Broker { addr: wire.addr().into(), api, code, message: None });
        }
        if list.is_empty() {
            // Garbage can decode as an empty list; a broker always lists ApiVersions itself.
            return Err(KafkaError::NotKafka {
                addr: wire.addr().into(),
                detail: "its ApiVersions answer lists no APIs".into(),
                cause: None,
            });
        }
        wire.set_handshake_done();
        return Ok(Versions::negotiate(&list));
    }
    Err(KafkaError::Protocol {
        addr: wire.addr().into(),
        api,
        detail: format!("the broker refused v{version} after naming it as its highest"),
        cause: None,
    })
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// One record batch (magic 2), no compression, no producer id, stamped now.
pub fn encode_batch(values: &[Vec<u8>]) -> Result<Bytes, RecordsError> {
    let now =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    encode_batch_at(values, now)
}

/// The same batch with a given timestamp (ms since the epoch), for output that must not
/// change from run to run (the fuzz seeds).
pub fn encode_batch_at<V: AsRef<[u8]>>(
    values: &[V],
    timestamp: i64,
) -> Result<Bytes, RecordsError> {
    let records: Vec<BatchRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| BatchRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when offset - sequence changes; this keeps it
            // constant and makes the batch's base sequence -1 (no sequence).
            sequence: i as i32 - 1,
            timestamp,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_ref())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .map_err(|e| RecordsError::Encode(e.into()))?;
    Ok(buf.freeze())
}

/// The data records at `from` or later in a Fetch response's record batches. The broker may
/// cut the last batch short at max_bytes, and a batch may start before `from`.
pub fn decode_records(mut raw: Bytes, from: i64) -> Result<Vec<Record>, RecordsError> {
    let mut out = Vec::new();
    // base offset (8), batch length (4), then the batch.
    while raw.len() >= 12 {
        let len = i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
        let total = 12 + usize::try_from(len).map_err(|_| RecordsError::BadLength(len))?;
        if raw.len() < total {
            break;
        }
        let mut one = raw.split_to(total);
        let set =
            RecordBatchDecoder::decode(&mut one).map_err(|e| RecordsError::Decode(e.into()))?;
        out.extend(set.records.into_iter().filter(|r| !r.control && r.offset >= from).map(|r| {
            Record { offset: r.offset, value: r.value.map(|v| v.to_vec()).unwrap_or_default() }
        }));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
