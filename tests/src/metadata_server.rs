//! A small Kafka metadata server for the tests of `kafka discover --config` and the daemon's
//! `[kafka]` watch: it speaks the real wire protocol (kafka-protocol encodes and decodes
//! every frame) over a real TCP socket, and advertises a set of brokers the test changes
//! while it runs, which a tansu (one node, its id fixed) cannot.
//!
//! It answers ApiVersions and Metadata; with [`Auth::OAuthBearer`] it also answers
//! SaslHandshake and SaslAuthenticate and checks the client's OAUTHBEARER message itself,
//! per RFC 7628 §3.1 (GS2 header, 0x01-separated key=value pairs, `auth=Bearer TOKEN`,
//! ended by 0x01 0x01), refusing Metadata before authentication. A refused token gets
//! RFC 7628's error document, and after the client's 0x01 acknowledgement
//! SASL_AUTHENTICATION_FAILED, as Kafka's OAuthBearerSaslServer does. No tansu release
//! offers OAUTHBEARER, so this check is the server side of those tests.
//!
//! [`Mode::Silent`] accepts connections and never answers (a cluster that hangs).
//!
//! Also the fake cluster of kafka_cli.rs (brokers that are not where they are advertised).

use crate::netns::Netns;
use anyhow::{Context, Result};
use forwarder::kafka::{
    bytes::Bytes,
    kafka_protocol::{
        messages::{
            api_versions_response::ApiVersion, metadata_response::MetadataResponseBroker, ApiKey,
            ApiVersionsRequest, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse,
            SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
            SaslHandshakeResponse,
        },
        protocol::{decode_request_header_from_buffer, Decodable, StrBytes},
    },
    wire::encode_response,
};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long a server lives at most, and how many connections it takes: every loop bounded.
const LIFETIME: Duration = Duration::from_secs(180);
const MAX_CONNECTIONS: usize = 2000;

/// The cluster id every Metadata answer carries.
pub const CLUSTER_ID: &str = "fixture-cluster";

/// A broker as the server advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

impl Advertised {
    pub fn new(id: i32, host: &str, port: u16) -> Advertised {
        Advertised { id, host: host.into(), port, rack: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// SASL OAUTHBEARER with this bearer token, required before Metadata.
    OAuthBearer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    /// Accept, read, never answer.
    Silent,
}

struct State {
    brokers: Mutex<Vec<Advertised>>,
    mode: Mutex<Mode>,
    auth: Auth,
    stop: AtomicBool,
    metadata_answers: AtomicUsize,
    /// What each refused SASL exchange was refused for.
    refusals: Mutex<Vec<String>>,
}

/// The server, stopped (and its accept loop joined) when dropped.
pub struct MetadataServer {
    /// IP:PORT it listens on.
    pub addr: String,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl MetadataServer {
    /// On 127.0.0.1, an ephemeral port.
    pub fn start(brokers: Vec<Advertised>, auth: Auth) -> MetadataServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the metadata server");
        MetadataServer::serve(listener, brokers, auth)
    }

    /// On `bind` inside `ns` (the socket stays in the namespace; the threads serving it
    /// need not be there).
    pub fn start_in(
        ns: &Netns,
        bind: SocketAddr,
        brokers: Vec<Advertised>,
        auth: Auth,
    ) -> Result<MetadataServer> {
        let listener = ns
            .enter(move || TcpListener::bind(bind))?
            .with_context(|| format!("binding the metadata server on {bind} in {}", ns.name()))?;
        Ok(MetadataServer::serve(listener, brokers, auth))
    }

    fn serve(listener: TcpListener, brokers: Vec<Advertised>, auth: Auth) -> MetadataServer {
        listener.set_nonblocking(true).expect("a nonblocking listener");
        let addr = listener.local_addr().expect("the listener's address").to_string();
        let state = Arc::new(State {
            brokers: Mutex::new(brokers),
            mode: Mutex::new(Mode::Answer),
            auth,
            stop: AtomicBool::new(false),
            metadata_answers: AtomicUsize::new(0),
            refusals: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut accepted = 0;
            while !s.stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && accepted < MAX_CONNECTIONS
            {
                match listener.accept() {
                    Ok((conn, _)) => {
                        accepted += 1;
                        let s = s.clone();
                        // Each connection ends by itself: a read timeout, the client's hang
                        // up, or the server stopping.
                        std::thread::spawn(move || connection(conn, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        MetadataServer { addr, state, thread: Some(thread) }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("a port")
    }

    /// From the next Metadata request on, these brokers are advertised.
    pub fn set_brokers(&self, brokers: Vec<Advertised>) {
        *self.state.brokers.lock().unwrap() = brokers;
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Metadata requests answered so far.
    pub fn metadata_answers(&self) -> usize {
        self.state.metadata_answers.load(Ordering::Relaxed)
    }

    /// Why each refused SASL exchange was refused.
    pub fn refusals(&self) -> Vec<String> {
        self.state.refusals.lock().unwrap().clone()
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a connection is in the SASL exchange.
#[derive(PartialEq)]
enum Sasl {
    Start,
    Handshaken,
    /// The token was refused with an error document; the client's 0x01 comes next.
    Refused,
    Done,
}

fn connection(mut s: TcpStream, state: &State) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sasl = match state.auth {
        Auth::None => Sasl::Done,
        Auth::OAuthBearer(_) => Sasl::Start,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // A bounded number of requests, each read within the connection's deadline.
    for _ in 0..100 {
        let Some(mut body) = read_frame(&mut s, state, deadline) else { return };
        if *state.mode.lock().unwrap() == Mode::Silent {
            // Keep the connection, say nothing: the client's own timeout must end it.
            while !state.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        let Ok(header) = decode_request_header_from_buffer(&mut body) else { return };
        let (v, corr) = (header.request_api_version, header.correlation_id);
        let frame = match ApiKey::try_from(header.request_api_key) {
            Ok(ApiKey::ApiVersions) => {
                let resp = ApiVersionsResponse::default().with_api_keys(api_keys(&state.auth));
                encode_response::<ApiVersionsRequest>(&resp, v, corr)
            }
            Ok(ApiKey::SaslHandshake) if sasl == Sasl::Start => {
                let Ok(req) = SaslHandshakeRequest::decode(&mut body, v) else { return };
                let ok = req.mechanism.as_str() == "OAUTHBEARER";
                if ok {
                    sasl = Sasl::Handshaken;
                }
                let resp = SaslHandshakeResponse::default()
                    .with_error_code(if ok { 0 } else { 33 }) // UNSUPPORTED_SASL_MECHANISM
                    .with_mechanisms(vec![StrBytes::from_static_str("OAUTHBEARER")]);
                encode_response::<SaslHandshakeRequest>(&resp, v, corr)
            }
            Ok(ApiKey::SaslAuthenticate) if matches!(sasl, Sasl::Handshaken | Sasl::Refused) => {
                let Ok(req) = SaslAuthenticateRequest::decode(&mut body, v) else { return };
                let Auth::OAuthBearer(expected) = &state.auth else { return };
                let mut resp = SaslAuthenticateResponse::default();
                if sasl == Sasl::Refused {
                    // RFC 7628 §3.2.3: the client acknowledges the error with a lone 0x01.
                    let why = if &req.auth_bytes[..] == b"\x01" {
                        "invalid token"
                    } else {
                        "the client did not acknowledge the error document with 0x01"
                    };
                    resp = resp
                        .with_error_code(58) // SASL_AUTHENTICATION_FAILED
                        .with_error_message(Some(StrBytes::from_static_str(why)));
                    let frame = encode_response::<SaslAuthenticateRequest>(&resp, v, corr);
                    let _ = s.write_all(&frame.expect("encoding"));
                    return;
                }
                match check_oauthbearer(&req.auth_bytes, expected) {
                    Ok(()) => sasl = Sasl::Done,
                    Err(why) => {
                        state.refusals.lock().unwrap().push(why);
                        sasl = Sasl::Refused;
                        resp = resp
                            .with_auth_bytes(Bytes::from_static(br#"{"status":"invalid_token"}"#));
                    }
                }
                encode_response::<SaslAuthenticateRequest>(&resp, v, corr)
            }
            Ok(ApiKey::Metadata) if sasl == Sasl::Done => {
                state.metadata_answers.fetch_add(1, Ordering::Relaxed);
                let brokers = state.brokers.lock().unwrap().clone();
                let resp = MetadataResponse::default()
                    .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
                    .with_controller_id(BrokerId(brokers.first().map_or(-1, |b| b.id)))
                    .with_brokers(
                        brokers
                            .iter()
                            .map(|b| {
                                MetadataResponseBroker::default()
                                    .with_node_id(BrokerId(b.id))
                                    .with_host(StrBytes::from_string(b.host.clone()))
                                    .with_port(i32::from(b.port))
                                    .with_rack(b.rack.clone().map(StrBytes::from_string))
                            })
                            .collect(),
                    );
                encode_response::<MetadataRequest>(&resp, v, corr)
            }
            // Anything else, or out of order (Metadata before SASL): hang up, as a broker
            // that requires authentication does.
            _ => return,
        };
        if s.write_all(&frame.expect("encoding a response")).is_err() {
            return;
        }
    }
}

/// One request frame's body, or `None` once the client hangs up, the server stops or the
/// connection's deadline passes.
fn read_frame(s: &mut TcpStream, state: &State, deadline: Instant) -> Option<Bytes> {
    let mut size = [0u8; 4];
    read_all(s, &mut size, state, deadline)?;
    let mut body = vec![0u8; i32::from_be_bytes(size).clamp(0, 1 << 20) as usize];
    read_all(s, &mut body, state, deadline)?;
    Some(Bytes::from(body))
}

fn read_all(s: &mut TcpStream, buf: &mut [u8], state: &State, deadline: Instant) -> Option<()> {
    let mut got = 0;
    while got < buf.len() {
        if state.stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return None;
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some(())
}

fn api_keys(auth: &Auth) -> Vec<ApiVersion> {
    let mut keys = vec![(ApiKey::ApiVersions, 0, 3), (ApiKey::Metadata, 0, 12)];
    if *auth != Auth::None {
        keys.extend([(ApiKey::SaslHandshake, 0, 1), (ApiKey::SaslAuthenticate, 0, 2)]);
    }
    keys.into_iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default().with_api_key(k as i16).with_min_version(lo).with_max_version(hi)
        })
        .collect()
}

/// RFC 7628 §3.1: `gs2-header kvsep *kvpair kvsep`, the GS2 header `n,` (no channel
/// binding) with an optional `a=authzid`, then `,`; one pair `auth=Bearer TOKEN` (RFC 6750
/// b64token); every pair ended by 0x01. Ok when the token is `expected`.
pub fn check_oauthbearer(msg: &[u8], expected: &str) -> Result<(), String> {
    let text = std::str::from_utf8(msg).map_err(|_| "not UTF-8".to_string())?;
    let rest = text
        .strip_prefix("n,")
        .or_else(|| text.strip_prefix("y,"))
        .ok_or_else(|| format!("no GS2 header (n, or y,) at the start: {text:?}"))?;
    let (authzid, rest) =
        rest.split_once(',').ok_or_else(|| format!("the GS2 header does not end: {text:?}"))?;
    if !(authzid.is_empty() || authzid.starts_with("a=")) {
        return Err(format!("the GS2 header's authzid is not a=...: {authzid:?}"));
    }
    let pairs = rest
        .strip_prefix('\x01')
        .and_then(|r| r.strip_suffix("\x01\x01"))
        .ok_or_else(|| format!("not kvsep *kvpair kvsep after the GS2 header: {text:?}"))?;
    let mut token = None;
    for pair in pairs.split('\x01') {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| format!("a pair without '=': {pair:?}"))?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("a key that is not ALPHA+: {key:?}"));
        }
        if key == "auth" {
            let t = value
                .strip_prefix("Bearer ")
                .ok_or_else(|| format!("auth is not a Bearer credential: {value:?}"))?;
            let b64token = t.trim_end_matches('=');
            if b64token.is_empty()
                || !b64token.chars().all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c))
            {
                return Err(format!("the token is not an RFC 6750 b64token: {t:?}"));
            }
            token = Some(t);
        }
    }
    match token {
        Some(t) if t == expected => Ok(()),
        Some(t) => Err(format!("token {t:?} is not the one issued")),
        None => Err("no auth=Bearer pair".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_oauthbearer;

    #[test]
    fn the_server_side_check_follows_rfc_7628() {
        let ok = b"n,,\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        assert_eq!(check_oauthbearer(ok, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="), Ok(()));
        // RFC 7628 §4.1, with an authzid and host/port pairs.
        let full = b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer abc\x01\x01";
        assert_eq!(check_oauthbearer(full, "abc"), Ok(()));
        for bad in [
            &b"auth=Bearer abc\x01\x01"[..],
            b"n,,\x01auth=Bearer abc\x01",
            b"n,,\x01auth=Basic abc\x01\x01",
            b"n,,\x01auth=Bearer a b\x01\x01",
            b"n,,\x01\x01",
        ] {
            assert!(check_oauthbearer(bad, "abc").is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(check_oauthbearer(b"n,,\x01auth=Bearer abd\x01\x01", "abc").is_err());
    }
}
