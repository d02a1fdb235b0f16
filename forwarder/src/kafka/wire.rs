//! Kafka framing on a blocking [`Stream`] (TCP, or TLS over it): size-prefixed request and
//! response frames, every read and write bounded by a deadline, and the version negotiation of
//! the ApiVersions handshake.
//!
//! The message bodies are kafka-protocol's; this module decides what a listener that does
//! not answer like a broker is (see [`Garbage`]) and which versions to speak.

use super::{
    error::{Api, CodecError, Garbage, Hop, KafkaError},
    stream::{remaining, Stream},
};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes},
};
use std::{
    io,
    time::{Duration, Instant},
};

/// A response larger than this is not one: the size prefix is something else's bytes
/// ("HTTP" reads as 1.2 GB). Fetches ask for far less (see `client::FETCH_MAX_BYTES`).
pub const MAX_FRAME: usize = 64 << 20;

/// How long to wait for more bytes of something that is clearly not a Kafka frame, only to
/// show the operator what the listener sent.
const PREVIEW_WAIT: Duration = Duration::from_millis(300);

/// The versions this tool encodes and understands, per API. Lower bounds: the first version
/// with the fields we use (Metadata v1: racks and "no topics"; Produce v3 and Fetch v4:
/// record batches, the only record format kafka-protocol decodes). Upper bounds: the last
/// version before the request names topics by id instead of by name (Produce v13, Fetch v13)
/// or before fields we do not fill in. Fetch stops at v11, the last without tagged fields:
/// tansu 0.6 answers Fetch v12 with tagged field 0 at the top (NodeEndpoints, which Kafka
/// defines from v16 on), and kafka-protocol refuses a tag its version does not define.
/// SaslHandshake v1 only: in v0 the SASL tokens that follow are sent unframed.
pub fn ours(api: Api) -> (i16, i16) {
    match api {
        Api::ApiVersions => (0, 3),
        Api::SaslHandshake => (1, 1),
        Api::SaslAuthenticate => (0, 2),
        Api::Metadata => (1, 12),
        Api::CreateTopics => (2, 7),
        Api::Produce => (3, 9),
        Api::Fetch => (4, 11),
    }
}

pub fn api_key(api: Api) -> i16 {
    (match api {
        Api::ApiVersions => ApiKey::ApiVersions,
        Api::SaslHandshake => ApiKey::SaslHandshake,
        Api::SaslAuthenticate => ApiKey::SaslAuthenticate,
        Api::Metadata => ApiKey::Metadata,
        Api::CreateTopics => ApiKey::CreateTopics,
        Api::Produce => ApiKey::Produce,
        Api::Fetch => ApiKey::Fetch,
    }) as i16
}

/// The result of the handshake: per API, the broker's range and the version both speak.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    broker: Vec<(Api, i16, i16)>,
}

impl Versions {
    /// From the broker's ApiVersions list of (api key, min, max); keys we do not use are
    /// ignored.
    pub fn negotiate(broker: &[(i16, i16, i16)]) -> Versions {
        let broker = Api::ALL
            .iter()
            .filter_map(|&api| {
                broker.iter().find(|(k, _, _)| *k == api_key(api)).map(|&(_, lo, hi)| (api, lo, hi))
            })
            .collect();
        Versions { broker }
    }

    /// The highest version both sides support, if any.
    pub fn get(&self, api: Api) -> Option<i16> {
        let (our_lo, our_hi) = ours(api);
        let &(_, lo, hi) = self.broker.iter().find(|(a, _, _)| *a == api)?;
        let v = hi.min(our_hi);
        (v >= lo.max(our_lo)).then_some(v)
    }

    /// [`Versions::get`], or the error naming both sides' ranges.
    pub fn require(&self, api: Api, addr: &str) -> Result<i16, KafkaError> {
        self.get(api).ok_or_else(|| {
            let (lo, hi) = ours(api);
            KafkaError::Unsupported {
                addr: addr.into(),
                api,
                broker: self.broker_range(api),
                ours: format!("{lo}..{hi}"),
            }
        })
    }

    /// "3..9", or "none" when the broker did not list the API.
    pub fn broker_range(&self, api: Api) -> String {
        match self.broker.iter().find(|(a, _, _)| *a == api) {
            Some((_, lo, hi)) => format!("{lo}..{hi}"),
            None => "none".into(),
        }
    }
}

/// Our end of one connection: correlation ids and the deadline of every exchange.
pub struct Wire {
    stream: Stream,
    addr: String,
    timeout: Duration,
    correlation: i32,
    /// The broker answered ApiVersions: later oddities are a broker's, not a stranger's.
    handshake_done: bool,
    /// Requests answered since the handshake; a close on the first one suggests SASL.
    answered: u32,
}

enum ReadFail {
    /// The peer closed after this many bytes.
    Eof(usize),
    /// The deadline passed after this many bytes.
    Timeout(usize),
    Io(io::Error),
}

impl Wire {
    pub fn new(stream: Stream, addr: &str, timeout: Duration) -> Wire {
        // Requests are small and each waits for its answer: send them at once.
        let _ = stream.tcp().set_nodelay(true);
        Wire {
            stream,
            addr: addr.into(),
            timeout,
            correlation: 0,
            handshake_done: false,
            answered: 0,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn set_handshake_done(&mut self) {
        self.handshake_done = true;
    }

    /// Sends `req` at `version` and returns the response body (after the response header).
    /// `wait` is how long the broker may hold the request on purpose (Fetch's max_wait).
    pub fn exchange<R: Request>(
        &mut self,
        api: Api,
        req: &R,
        version: i16,
        wait: Duration,
    ) -> Result<Bytes, KafkaError> {
        let deadline = Instant::now() + self.timeout + wait;
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let frame = encode_request(req, version, correlation).map_err(|e| {
            self.protocol_because(api, &format!("encoding the v{version} request"), e)
        })?;
        self.write_all(api, &frame, deadline)?;
        let body = self.read_frame(api, deadline)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| {
                let cause = CodecError::Message(e.into());
                self.strange(api, "a response header that does not parse".into(), Some(cause))
            })?;
        if header.correlation_id != correlation {
            return Err(self.strange(
                api,
                format!(
                    "a response to request {} where {correlation} was expected",
                    header.correlation_id
                ),
                None,
            ));
        }
        if self.handshake_done && api != Api::ApiVersions {
            self.answered += 1;
        }
        Ok(body)
    }

    /// Decodes a response body at `version`.
    pub fn decode<M: Decodable>(
        &self,
        api: Api,
        mut body: Bytes,
        version: i16,
    ) -> Result<M, KafkaError> {
        M::decode(&mut body, version).map_err(|e| {
            let cause = CodecError::Message(e.into());
            self.strange(api, format!("a v{version} response that does not parse"), Some(cause))
        })
    }

    /// The error for an answer that is not a Kafka one: before the handshake the listener is
    /// probably not Kafka at all; after it, the broker sent something we cannot read.
    /// `cause`: the decoder's error, when that is how it showed.
    fn strange(&self, api: Api, what: String, cause: Option<CodecError>) -> KafkaError {
        let addr = self.addr.clone();
        if self.handshake_done {
            KafkaError::Protocol { addr, api, detail: format!("the broker sent {what}"), cause }
        } else {
            KafkaError::NotKafka { addr, detail: format!("it answered {api} with {what}"), cause }
        }
    }

    pub fn protocol(&self, api: Api, detail: String) -> KafkaError {
        KafkaError::Protocol { addr: self.addr.clone(), api, detail, cause: None }
    }

    /// [`Wire::protocol`] for what the encoder or decoder refused: `doing`, then its message.
    pub fn protocol_because(
        &self,
        api: Api,
        doing: &str,
        cause: impl Into<CodecError>,
    ) -> KafkaError {
        let (addr, detail) = (self.addr.clone(), doing.to_string());
        KafkaError::Protocol { addr, api, detail, cause: Some(cause.into()) }
    }

    fn timed_out(&self, api: Api) -> KafkaError {
        KafkaError::Timeout { addr: self.addr.clone(), api, timeout: self.timeout }
    }

    /// The peer closed (or reset) the connection instead of answering.
    fn closed(&self, api: Api, how: &str) -> KafkaError {
        let addr = self.addr.clone();
        if !self.handshake_done {
            let why = if self.stream.is_tls() {
                "after the TLS handshake (a TLS terminator that cannot reach its broker does \
                 that)"
            } else {
                "(a TLS listener does that too: --tls)"
            };
            let detail = format!("it {how} without answering {api} {why}");
            KafkaError::NotKafka { addr, detail, cause: None }
        } else if self.answered == 0 && api.hop() == Hop::Request {
            KafkaError::NeedsSecurity {
                addr,
                detail: format!(
                    "it answered ApiVersions, then {how} on {api}, as a SASL listener does \
                     before authentication"
                ),
            }
        } else {
            KafkaError::Closed { addr, api }
        }
    }

    fn io_error(&self, api: Api, e: io::Error) -> KafkaError {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => self.timed_out(api),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => self.closed(api, "reset the connection"),
            _ => KafkaError::Io { addr: self.addr.clone(), api, io: e },
        }
    }

    fn write_all(&mut self, api: Api, frame: &[u8], deadline: Instant) -> Result<(), KafkaError> {
        let mut sent = 0;
        while sent < frame.len() {
            match self.stream.write(&frame[sent..], deadline) {
                Ok(0) => return Err(self.closed(api, "closed the connection")),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(api, e)),
            }
        }
        Ok(())
    }

    /// Fills `buf` unless the peer closes or the deadline passes first.
    fn read_full(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), ReadFail> {
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..], deadline) {
                Ok(0) => return Err(ReadFail::Eof(got)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Err(ReadFail::Timeout(got))
                }
                Err(e) => return Err(ReadFail::Io(e)),
            }
        }
        Ok(())
    }

    /// One response frame, without its size prefix.
    fn read_frame(&mut self, api: Api, deadline: Instant) -> Result<Vec<u8>, KafkaError> {
        let mut size = [0u8; 4];
        match self.read_full(&mut size, deadline) {
            Ok(()) => {}
            Err(ReadFail::Eof(0)) => return Err(self.closed(api, "closed the connection")),
            Err(ReadFail::Timeout(0)) => return Err(self.timed_out(api)),
            Err(ReadFail::Eof(n) | ReadFail::Timeout(n)) => {
                return Err(self.garbage(api, size[..n].to_vec()))
            }
            Err(ReadFail::Io(e)) => return Err(self.io_error(api, e)),
        }
        let len = i32::from_be_bytes(size);
        // A frame holds at least the correlation id.
        if is_tls(&size) || !(4..=MAX_FRAME as i64).contains(&i64::from(len)) {
            let mut seen = size.to_vec();
            self.preview(&mut seen);
            return Err(self.garbage(api, seen));
        }
        let mut body = vec![0u8; len as usize];
        match self.read_full(&mut body, deadline) {
            Ok(()) => Ok(body),
            Err(ReadFail::Eof(n)) => Err(self.protocol_or_closed(
                api,
                format!("the connection closed after {n} of the {len} bytes of the response"),
            )),
            Err(ReadFail::Timeout(n)) => Err(self.protocol_or_closed(
                api,
                format!(
                    "only {n} of the {len} bytes of the response arrived within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
            Err(ReadFail::Io(e)) => Err(self.io_error(api, e)),
        }
    }

    fn protocol_or_closed(&self, api: Api, what: String) -> KafkaError {
        if self.handshake_done {
            self.protocol(api, what)
        } else {
            let detail = format!("{api}: {what}");
            KafkaError::NotKafka { addr: self.addr.clone(), detail, cause: None }
        }
    }

    fn garbage(&self, api: Api, seen: Vec<u8>) -> KafkaError {
        match Garbage::classify(&seen) {
            // TLS is worth naming whenever it shows up.
            g @ Garbage::Tls { .. } => g.into_error(&self.addr, api),
            g if !self.handshake_done => g.into_error(&self.addr, api),
            Garbage::Http(shown) | Garbage::Other(shown) => self.protocol(
                api,
                format!("the broker sent something that is not a response: {shown}"),
            ),
        }
    }

    /// Reads what else the listener sent (briefly, a few dozen bytes), to show it.
    fn preview(&mut self, seen: &mut Vec<u8>) {
        let mut more = [0u8; 60];
        let deadline = Instant::now() + PREVIEW_WAIT;
        let mut got = 0;
        while got < more.len() && remaining(deadline).is_some() {
            match self.stream.read(&mut more[got..], deadline) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        seen.extend_from_slice(&more[..got]);
    }
}

fn is_tls(first: &[u8]) -> bool {
    matches!(Garbage::classify(first), Garbage::Tls { .. })
}

/// A message kafka-protocol could not encode (a field the version cannot carry), with
/// kafka-protocol's own error as the source.
#[derive(Debug, thiserror::Error)]
#[error("encoding a Kafka message")]
pub struct EncodeError(#[source] crate::error::BoxError);

fn encoding<E: Into<crate::error::BoxError>>(e: E) -> EncodeError {
    EncodeError(e.into())
}

/// In a [`KafkaError`] line the encoder's own message is what is shown.
impl From<EncodeError> for CodecError {
    fn from(e: EncodeError) -> CodecError {
        CodecError::Message(e.0)
    }
}

/// size, request header, body.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation: i32,
) -> Result<Vec<u8>, EncodeError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("forwarder")))
        .encode(&mut buf, R::header_version(version))
        .map_err(encoding)?;
    req.encode(&mut buf, version).map_err(encoding)?;
    let len = i32::try_from(buf.len() - 4).map_err(encoding)?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.to_vec())
}

/// size, response header, body: what a broker sends (for fake brokers in tests).
pub fn encode_response<R: Request>(
    resp: &R::Response,
    version: i16,
    correlation: i32,
) -> Result<Vec<u8>, EncodeError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation)
        .encode(&mut buf, <R::Response as HeaderVersion>::header_version(version))
        .map_err(encoding)?;
    resp.encode(&mut buf, version).map_err(encoding)?;
    let len = i32::try_from(buf.len() - 4).map_err(encoding)?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let v = Versions::negotiate(&[
            (api_key(Api::ApiVersions), 0, 4),
            (api_key(Api::Metadata), 0, 13),
            (api_key(Api::Produce), 3, 7),
            // Fetch only from a version above ours: nothing in common.
            (api_key(Api::Fetch), 13, 17),
            (999, 0, 1),
        ]);
        assert_eq!(v.get(Api::ApiVersions), Some(3));
        assert_eq!(v.get(Api::Metadata), Some(12));
        assert_eq!(v.get(Api::Produce), Some(7));
        assert_eq!(v.get(Api::Fetch), None);
        // Not listed at all.
        assert_eq!(v.get(Api::CreateTopics), None);
        assert_eq!(v.broker_range(Api::CreateTopics), "none");
        assert_eq!(v.broker_range(Api::Fetch), "13..17");
    }

    #[test]
    fn negotiation_respects_our_lower_bounds() {
        // A broker that only speaks Metadata v0 (no racks, "no topics" impossible).
        let v = Versions::negotiate(&[(api_key(Api::Metadata), 0, 0)]);
        assert_eq!(v.get(Api::Metadata), None);
        let v = Versions::negotiate(&[(api_key(Api::Metadata), 0, 5)]);
        assert_eq!(v.get(Api::Metadata), Some(5));
    }

    #[test]
    fn request_frames_carry_their_size_and_header() {
        use kafka_protocol::messages::MetadataRequest;
        let frame = encode_request(&MetadataRequest::default(), 12, 7).unwrap();
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(i16::from_be_bytes([frame[4], frame[5]]), ApiKey::Metadata as i16);
        assert_eq!(i16::from_be_bytes([frame[6], frame[7]]), 12);
        assert_eq!(i32::from_be_bytes(frame[8..12].try_into().unwrap()), 7);
    }
}
