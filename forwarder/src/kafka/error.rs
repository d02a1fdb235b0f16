//! What can go wrong between a client and a Kafka listener, named after the hop that failed
//! (DNS, TCP, TLS, the Kafka handshake, SASL, a later request) so `kafka check` can say where
//! the path breaks, and worded for the operator: which address, which step, the likely cause.

use super::scram::ScramError;
use crate::{error::BoxError, host::resolve::ResolveError};
use std::{fmt, io, net::SocketAddr, path::PathBuf, time::Duration};

/// The Kafka requests this tool sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    ApiVersions,
    SaslHandshake,
    SaslAuthenticate,
    Metadata,
    CreateTopics,
    Produce,
    Fetch,
}

impl Api {
    pub const ALL: [Api; 7] = [
        Api::ApiVersions,
        Api::SaslHandshake,
        Api::SaslAuthenticate,
        Api::Metadata,
        Api::CreateTopics,
        Api::Produce,
        Api::Fetch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Api::ApiVersions => "ApiVersions",
            Api::SaslHandshake => "SaslHandshake",
            Api::SaslAuthenticate => "SaslAuthenticate",
            Api::Metadata => "Metadata",
            Api::CreateTopics => "CreateTopics",
            Api::Produce => "Produce",
            Api::Fetch => "Fetch",
        }
    }

    /// The hop a failure of this request belongs to.
    pub fn hop(self) -> Hop {
        match self {
            Api::ApiVersions => Hop::Handshake,
            Api::SaslHandshake | Api::SaslAuthenticate => Hop::Sasl,
            Api::Metadata | Api::CreateTopics | Api::Produce | Api::Fetch => Hop::Request,
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The hops of a client's way to a broker, in the order it takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hop {
    Dns,
    Tcp,
    /// The TLS handshake, the certificate checked against the name dialed (`--tls`).
    Tls,
    /// The ApiVersions exchange every client starts with.
    Handshake,
    /// SaslHandshake and SaslAuthenticate (`--sasl-mechanism`).
    Sasl,
    /// Metadata, CreateTopics, Produce, Fetch after a good handshake.
    Request,
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hop::Dns => "DNS",
            Hop::Tcp => "TCP",
            Hop::Tls => "TLS",
            Hop::Handshake => "Kafka handshake",
            Hop::Sasl => "SASL",
            Hop::Request => "Kafka request",
        })
    }
}

/// A Kafka error code from a response, shown the way Kafka's documentation names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = ErrorCode(3);
    pub const LEADER_NOT_AVAILABLE: ErrorCode = ErrorCode(5);
    pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = ErrorCode(6);
    pub const UNSUPPORTED_SASL_MECHANISM: ErrorCode = ErrorCode(33);
    pub const ILLEGAL_SASL_STATE: ErrorCode = ErrorCode(34);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(35);
    pub const TOPIC_ALREADY_EXISTS: ErrorCode = ErrorCode(36);
    pub const SASL_AUTHENTICATION_FAILED: ErrorCode = ErrorCode(58);

    /// `None` for 0 (no error).
    pub fn from_code(code: i16) -> Option<ErrorCode> {
        (code != 0).then_some(ErrorCode(code))
    }

    /// UNKNOWN_TOPIC_OR_PARTITION, as in Kafka's protocol guide and broker logs.
    pub fn name(self) -> String {
        match kafka_protocol::ResponseError::try_from_code(self.0) {
            None => "NONE".into(),
            Some(kafka_protocol::ResponseError::Unknown(_)) => "UNKNOWN".into(),
            Some(e) => screaming_snake(&format!("{e}")),
        }
    }

    /// Codes a listener answers with when the client has not authenticated.
    pub fn is_authentication(self) -> bool {
        matches!(self, Self::ILLEGAL_SASL_STATE | Self::SASL_AUTHENTICATION_FAILED)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A failure on the way to one broker.
///
/// Causes are kept typed (`cause`, `io`, `failure`) but none is a `#[source]`: the Display is
/// the whole line that `kafka check` shows per broker (text, and JSON `failure.error`), so
/// the cause's message must be in it, and `CliError::report`, which appends every source,
/// would then print it twice. Match on the field to get at the cause. A cause that keeps
/// sources of its own (`ResolveError`) is written in through `error::chain`, so the line
/// still says everything under it.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("{addr:?}: expected HOST:PORT ({why})")]
    BadAddress { addr: String, why: &'static str },
    #[error("{addr}: the name does not resolve: {}", crate::error::chain(cause))]
    Resolve { addr: String, cause: ResolveError },
    #[error("{addr}: TCP connection to {peer} failed: {}", connect_cause(io, *timeout))]
    Connect { addr: String, peer: SocketAddr, timeout: Duration, io: io::Error },
    /// `cause`: what the decoder said, when that is why the answer is not Kafka's.
    #[error("{addr} answered but not as a Kafka broker: {detail}{}", after_colon(cause))]
    NotKafka { addr: String, detail: String, cause: Option<CodecError> },
    #[error("{addr} probably needs TLS or SASL (--tls, --sasl-mechanism): {detail}")]
    NeedsSecurity { addr: String, detail: String },
    /// The TLS handshake failed; `name` is the server name: sent as SNI, and the name the
    /// certificate must hold.
    #[error("{addr}: TLS handshake failed (server name {name:?}): {failure}")]
    Tls { addr: String, name: String, failure: TlsFailure },
    #[error("{addr}: SASL {mechanism}{} failed: {failure}", as_user(user))]
    Sasl { addr: String, mechanism: &'static str, user: String, failure: SaslFailure },
    #[error("{addr}: no answer to {api} within {}{}", humantime::format_duration(*timeout), timeout_hint(*api))]
    Timeout { addr: String, api: Api, timeout: Duration },
    #[error("{addr}: the connection closed while waiting for the {api} response")]
    Closed { addr: String, api: Api },
    #[error("{addr}: {api}: {io}{}", tls_alert_hint(io))]
    Io { addr: String, api: Api, io: io::Error },
    #[error("{addr}: {api}: the broker supports versions {broker}, this tool {ours}")]
    Unsupported { addr: String, api: Api, broker: String, ours: String },
    #[error("{addr}: {api} failed: {code}{}", after_colon(message))]
    Broker { addr: String, api: Api, code: ErrorCode, message: Option<String> },
    /// `cause`: what the encoder or decoder said, when that is what went wrong.
    #[error("{addr}: {api}: {detail}{}", after_colon(cause))]
    Protocol { addr: String, api: Api, detail: String, cause: Option<CodecError> },
}

/// What kafka-protocol could not encode or decode (a request, a response, a header), or
/// what the record-batch codec could not: the typed cause at the end of a
/// [`KafkaError::Protocol`] or [`KafkaError::NotKafka`] line.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// kafka-protocol's `anyhow::Error`, boxed: shown as its message (the top one, as
    /// anyhow's `{}` shows it), what it wraps as its sources.
    #[error(transparent)]
    Message(BoxError),
    #[error(transparent)]
    Records(#[from] RecordsError),
}

/// What the record-batch codec (`client::encode_batch`, `client::decode_records`) could
/// not do.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// kafka-protocol's encoder refused the records (its `anyhow::Error`, boxed).
    #[error(transparent)]
    Encode(BoxError),
    /// kafka-protocol's decoder could not read a batch (its `anyhow::Error`, boxed).
    #[error(transparent)]
    Decode(BoxError),
    /// A batch whose length field is negative.
    #[error("a batch of length {0}")]
    BadLength(i32),
}

/// What a TLS alert after the handshake means: under TLS 1.3 the server checks the client's
/// certificate after the client has finished, so a listener that requires one (mTLS)
/// refuses it with an alert on the first read, not during the handshake.
fn tls_alert_hint(io: &io::Error) -> &'static str {
    use rustls::AlertDescription as A;
    let alert = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match alert {
        Some(rustls::Error::AlertReceived(A::CertificateRequired)) => {
            " (the listener requires a client certificate: --client-cert and --client-key)"
        }
        Some(rustls::Error::AlertReceived(
            A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::AccessDenied,
        )) => {
            " (the listener refused the client certificate: is it from a CA the listener trusts?)"
        }
        _ => "",
    }
}

/// " as \"USER\"", or nothing when there is no user name (OAUTHBEARER: the token says who).
fn as_user(user: &str) -> String {
    if user.is_empty() {
        String::new()
    } else {
        format!(" as {user:?}")
    }
}

/// ": CAUSE" to end a message with, or nothing when there is none.
fn after_colon<T: fmt::Display>(cause: &Option<T>) -> String {
    cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
}

impl KafkaError {
    /// Where on the client's way to the broker this failed.
    pub fn hop(&self) -> Hop {
        match self {
            KafkaError::BadAddress { .. } | KafkaError::Resolve { .. } => Hop::Dns,
            KafkaError::Connect { .. } => Hop::Tcp,
            KafkaError::Tls { .. } => Hop::Tls,
            KafkaError::NotKafka { .. } | KafkaError::NeedsSecurity { .. } => Hop::Handshake,
            KafkaError::Sasl { .. } => Hop::Sasl,
            KafkaError::Timeout { api, .. }
            | KafkaError::Closed { api, .. }
            | KafkaError::Io { api, .. }
            | KafkaError::Unsupported { api, .. }
            | KafkaError::Broker { api, .. }
            | KafkaError::Protocol { api, .. } => api.hop(),
        }
    }
}

fn connect_cause(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on that port, or a firewall rejects it)".into()
        }
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "no answer within {} (SYNs dropped by a firewall or NSG, a wrong address, or no route)",
            humantime::format_duration(timeout)
        ),
        _ => e.to_string(),
    }
}

fn timeout_hint(api: Api) -> &'static str {
    if api == Api::ApiVersions {
        // A broker answers ApiVersions at once, on any listener it speaks plaintext on.
        " (the port accepted the connection, but a Kafka broker answers at once: not a Kafka \
         listener, or one that expects TLS first: --tls)"
    } else {
        ""
    }
}

/// What a listener that is not a plaintext Kafka one sent instead of a response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Garbage {
    /// A TLS record (0x15 alert, 0x16 handshake; then 0x03, the TLS major version).
    Tls { alert: bool },
    /// The first line of an HTTP answer.
    Http(String),
    /// Anything else, shown as text if it is text, else as hex.
    Other(String),
}

impl Garbage {
    /// Names the first bytes a listener sent where a Kafka response's size was expected.
    pub fn classify(bytes: &[u8]) -> Garbage {
        if bytes.len() >= 2 && (bytes[0] == 0x15 || bytes[0] == 0x16) && bytes[1] == 0x03 {
            return Garbage::Tls { alert: bytes[0] == 0x15 };
        }
        if bytes.starts_with(b"HTTP/") {
            let line = bytes.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or(bytes);
            return Garbage::Http(String::from_utf8_lossy(line).into_owned());
        }
        let shown = &bytes[..bytes.len().min(32)];
        let printable = shown
            .iter()
            .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\r' || b == b'\n' || b == b'\t');
        if printable && !shown.is_empty() {
            Garbage::Other(format!("{:?}", String::from_utf8_lossy(shown)))
        } else {
            let hex: Vec<String> = shown.iter().map(|b| format!("{b:02x}")).collect();
            Garbage::Other(format!("bytes {}", hex.join(" ")))
        }
    }

    /// The error for a listener that sent these bytes in answer to `api`.
    pub fn into_error(self, addr: &str, api: Api) -> KafkaError {
        let addr = addr.to_string();
        match self {
            Garbage::Tls { alert } => KafkaError::NeedsSecurity {
                addr,
                detail: format!(
                    "it answered {api} with a TLS {} record: the listener speaks TLS \
                     (SSL or SASL_SSL)",
                    if alert { "alert" } else { "handshake" }
                ),
            },
            Garbage::Http(line) => KafkaError::NotKafka {
                addr,
                detail: format!("it answered {api} with HTTP ({line:?})"),
                cause: None,
            },
            Garbage::Other(shown) => KafkaError::NotKafka {
                addr,
                detail: format!("it answered {api} with {shown}"),
                cause: None,
            },
        }
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    #[error(
        "its chain leads to no CA in {roots} (unknown issuer): is --ca-file the CA that signed \
         the broker's certificate?"
    )]
    UnknownIssuer { roots: String },
    #[error(
        "the certificate is for {}, not that name (a client checks the name it dials, for a \
         broker the one it advertises: the certificate must hold it)",
        if presented.is_empty() { "other names".to_string() } else { presented.join(", ") }
    )]
    NameMismatch { presented: Vec<String> },
    #[error("{0}")]
    Refused(rustls::Error),
    #[error("{0:?} is not a name a certificate can be checked against (--tls-server-name)")]
    BadName(String),
    #[error(
        "the listener answered the TLS ClientHello with {0}: it does not speak TLS (a \
         plaintext listener? then drop --tls)"
    )]
    NotTls(String),
    #[error(
        "the connection closed during the handshake (a listener that is not TLS, or one that \
         accepts none of this client's TLS versions and ciphers)"
    )]
    Closed,
    #[error(
        "no answer to the TLS ClientHello within {} (a plaintext Kafka listener waits like \
         this: is it the TLS port?)",
        humantime::format_duration(*.0)
    )]
    Timeout(Duration),
    #[error("{0}")]
    Io(io::Error),
}

/// Why SASL authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum SaslFailure {
    #[error(
        "the listener does not do SASL (SaslHandshake answered {0}): a PLAINTEXT or SSL \
         listener; drop --sasl-mechanism or use the SASL port"
    )]
    NotSasl(ErrorCode),
    #[error(
        "the mechanism is not enabled on this listener{}",
        match enabled.as_slice() {
            [] => String::new(),
            e => format!(" (it offers {})", e.join(", ")),
        }
    )]
    MechanismNotEnabled { enabled: Vec<String> },
    #[error(
        "the broker closed the connection instead of answering SaslHandshake: the mechanism \
         is probably not enabled on this listener"
    )]
    ClosedOnHandshake,
    #[error("authentication failed (wrong user name, password or token?){}", after_colon(message))]
    AuthenticationFailed { message: Option<String> },
    #[error("{0}")]
    Scram(ScramError),
    /// The bearer token could not be read (`--sasl-token-file`).
    #[error("no token: {0}")]
    Token(String),
}

/// A flag whose value cannot be used: the operator's to fix (exit 2).
///
/// As in [`KafkaError`], the causes are typed fields shown in the Display, not sources:
/// the message is printed as one line, and a source would repeat the cause after it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--ca-file {}: {failure}", path.display())]
    CaFile { path: PathBuf, failure: CaFileFailure },
    /// No usable CA among the system's; `first` is the first error loading them, if any.
    #[error(
        "the system's trusted CAs: none found{} (name a CA with --ca-file)",
        first.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    SystemRoots { first: Option<rustls_native_certs::Error> },
    #[error("TLS setup: {0}")]
    Tls(rustls::Error),
    #[error("--client-cert {}: {failure}", path.display())]
    ClientCert { path: PathBuf, failure: CaFileFailure },
    #[error("--client-key {}: {failure}", path.display())]
    ClientKey { path: PathBuf, failure: KeyFailure },
    /// The SASL password or token file (`--sasl-password-file`, `--sasl-token-file`).
    #[error("{flag} {}: {failure}", path.display())]
    SecretFile { flag: &'static str, path: PathBuf, failure: SecretFailure },
}

/// What is wrong with the `--client-key`.
#[derive(Debug, thiserror::Error)]
pub enum KeyFailure {
    /// Reading it, or no private key (PKCS#8, PKCS#1 or SEC1) in it.
    #[error(transparent)]
    Pem(rustls::pki_types::pem::Error),
    /// The key does not go with the certificate, or is of a kind rustls cannot sign with.
    #[error("unusable with --client-cert: {0}")]
    Refused(rustls::Error),
}

/// What is wrong with a file holding a SASL secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretFailure {
    #[error(transparent)]
    Read(std::io::Error),
    #[error("empty (the secret is its first line)")]
    Empty,
}

/// What is wrong with the `--ca-file`.
#[derive(Debug, thiserror::Error)]
pub enum CaFileFailure {
    /// Reading it, or a PEM section in it (I/O errors included).
    #[error(transparent)]
    Pem(rustls::pki_types::pem::Error),
    #[error("a certificate it holds: {0}")]
    Certificate(rustls::Error),
    #[error("no PEM certificate in it")]
    NoCertificate,
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
