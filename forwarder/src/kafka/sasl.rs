//! SASL authentication after the ApiVersions handshake (`--sasl-mechanism`), as Kafka
//! clients do it: SaslHandshake v1 names the mechanism, then SaslAuthenticate requests carry
//! its messages. PLAIN (RFC 4616) is one message; SCRAM-SHA-256/512 ([`scram`]) two, the
//! second answered with the server's signature, which is checked; OAUTHBEARER (RFC 7628,
//! [`oauthbearer`]) one, the bearer token read from its file at every connection, so that
//! the token fetcher that refreshes the file is followed without a restart.
//!
//! Over plaintext TCP, PLAIN sends the password as it is: use it with `--tls`. The same goes
//! for a bearer token.

use super::{
    error::{Api, ErrorCode, KafkaError, SaslFailure, SecretFailure, SetupError},
    oauthbearer, scram,
    wire::{Versions, Wire},
};
use bytes::Bytes;
use kafka_protocol::{
    messages::{
        SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
        SaslHandshakeResponse,
    },
    protocol::StrBytes,
};
use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    Plain,
    #[value(name = "scram-sha-256")]
    ScramSha256,
    #[value(name = "scram-sha-512")]
    ScramSha512,
    /// A bearer token from an identity provider (`--sasl-token-file`).
    #[value(name = "oauthbearer")]
    OAuthBearer,
}

impl Mechanism {
    /// As SaslHandshake and Kafka's sasl.mechanism name it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// As `--sasl-mechanism` (and the config's `sasl_mechanism`) spells it.
    pub fn flag_value(self) -> &'static str {
        match self {
            Mechanism::Plain => "plain",
            Mechanism::ScramSha256 => "scram-sha-256",
            Mechanism::ScramSha512 => "scram-sha-512",
            Mechanism::OAuthBearer => "oauthbearer",
        }
    }

    /// The mechanism `--sasl-mechanism` calls `value`.
    pub fn from_flag_value(value: &str) -> Option<Mechanism> {
        [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512, Mechanism::OAuthBearer]
            .into_iter()
            .find(|m| m.flag_value() == value)
    }

    /// Whether it authenticates with a user name and password (else a bearer token).
    pub fn uses_password(self) -> bool {
        !matches!(self, Mechanism::OAuthBearer)
    }
}

/// The first line of the file at `path` (given as `flag`), without its line end: the SASL
/// password or bearer token.
pub fn read_secret_file(flag: &'static str, path: &Path) -> Result<String, SetupError> {
    let fail = |failure| SetupError::SecretFile { flag, path: path.into(), failure };
    let text = std::fs::read_to_string(path).map_err(|e| fail(SecretFailure::Read(e)))?;
    let line = text.lines().next().unwrap_or_default().trim_end();
    if line.is_empty() {
        return Err(fail(SecretFailure::Empty));
    }
    Ok(line.to_string())
}

/// Who to authenticate as. The password never shows in `Debug`.
#[derive(Clone)]
pub struct SaslConfig {
    pub mechanism: Mechanism,
    /// Empty with OAUTHBEARER, whose token says who the client is.
    pub user: String,
    secret: Secret,
}

/// What proves the identity: a password known at start, or a token file read at every
/// connection (tokens expire within the hour; the fetcher rewrites the file).
#[derive(Clone)]
enum Secret {
    Password(String),
    TokenFile(PathBuf),
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl SaslConfig {
    /// PLAIN or SCRAM with a user name and password.
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> SaslConfig {
        SaslConfig { mechanism, user: user.into(), secret: Secret::Password(password.into()) }
    }

    /// OAUTHBEARER with the token in `token_file` (its first line), read at every
    /// connection.
    pub fn oauthbearer(token_file: &Path) -> SaslConfig {
        SaslConfig {
            mechanism: Mechanism::OAuthBearer,
            user: String::new(),
            secret: Secret::TokenFile(token_file.into()),
        }
    }

    fn password(&self) -> &str {
        match &self.secret {
            Secret::Password(p) => p,
            Secret::TokenFile(_) => "",
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Authenticates the connection behind `wire`, whose handshake gave `versions`.
    pub fn authenticate(&self, wire: &mut Wire, versions: &Versions) -> Result<(), KafkaError> {
        let mut session = Session { wire, versions, config: self };
        session.handshake()?;
        match self.mechanism {
            Mechanism::Plain => {
                // authzid (empty), authcid, password, NUL-separated.
                let token = format!("\0{}\0{}", self.user, self.password());
                session.step(token.into_bytes())?;
                Ok(())
            }
            Mechanism::ScramSha256 => session.scram(scram::Hash::Sha256),
            Mechanism::ScramSha512 => session.scram(scram::Hash::Sha512),
            Mechanism::OAuthBearer => session.oauthbearer(),
        }
    }
}

struct Session<'a> {
    wire: &'a mut Wire,
    versions: &'a Versions,
    config: &'a SaslConfig,
}

impl Session<'_> {
    fn fail(&self, failure: SaslFailure) -> KafkaError {
        KafkaError::Sasl {
            addr: self.wire.addr().into(),
            mechanism: self.config.mechanism.name(),
            user: self.config.user.clone(),
            failure,
        }
    }

    fn version(&self, api: Api) -> Result<i16, KafkaError> {
        self.versions.require(api, self.wire.addr())
    }

    /// SaslHandshake: is the mechanism enabled on this listener?
    fn handshake(&mut self) -> Result<(), KafkaError> {
        let api = Api::SaslHandshake;
        let v = self.version(api)?;
        let ours = self.config.mechanism.name();
        let req = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(ours));
        let body = match self.wire.exchange(api, &req, v, Duration::ZERO) {
            Ok(body) => body,
            // tansu 0.6 hangs up on a mechanism it lacks instead of answering.
            Err(KafkaError::Closed { .. }) => {
                return Err(self.fail(SaslFailure::ClosedOnHandshake));
            }
            Err(e) => return Err(e),
        };
        let resp: SaslHandshakeResponse = self.wire.decode(api, body, v)?;
        match ErrorCode::from_code(resp.error_code) {
            None => Ok(()),
            Some(ErrorCode::UNSUPPORTED_SASL_MECHANISM) => {
                // tansu 0.6 lists the mechanism asked for, not the ones it has: leave it out.
                let enabled =
                    resp.mechanisms.iter().map(|m| m.to_string()).filter(|m| m != ours).collect();
                Err(self.fail(SaslFailure::MechanismNotEnabled { enabled }))
            }
            Some(code @ ErrorCode::ILLEGAL_SASL_STATE) => {
                Err(self.fail(SaslFailure::NotSasl(code)))
            }
            Some(code) => {
                Err(KafkaError::Broker { addr: self.wire.addr().into(), api, code, message: None })
            }
        }
    }

    /// One SaslAuthenticate round: our message out, the server's back.
    fn step(&mut self, message: Vec<u8>) -> Result<Bytes, KafkaError> {
        let api = Api::SaslAuthenticate;
        let v = self.version(api)?;
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
        let body = self.wire.exchange(api, &req, v, Duration::ZERO)?;
        let resp: SaslAuthenticateResponse = self.wire.decode(api, body, v)?;
        let message = resp.error_message.map(|m| m.to_string()).filter(|m| !m.is_empty());
        match ErrorCode::from_code(resp.error_code) {
            None => Ok(resp.auth_bytes),
            Some(ErrorCode::SASL_AUTHENTICATION_FAILED) => {
                Err(self.fail(SaslFailure::AuthenticationFailed { message }))
            }
            Some(code) => {
                Err(KafkaError::Broker { addr: self.wire.addr().into(), api, code, message })
            }
        }
    }

    fn scram(&mut self, hash: scram::Hash) -> Result<(), KafkaError> {
        let scram_fail = |s: &Self, e| s.fail(SaslFailure::Scram(e));
        let client = scram::Client::new(hash, &self.config.user, self.config.password())
            .map_err(|e| scram_fail(self, e))?;
        let server_first = self.step(client.first_message().into_bytes())?;
        let (last, check) = client.final_message(&server_first).map_err(|e| scram_fail(self, e))?;
        let server_final = self.step(last.into_bytes())?;
        check.verify(&server_final).map_err(|e| scram_fail(self, e))
    }

    /// RFC 7628: the token in the client's first message; an empty answer is success. A
    /// refusal comes as an error document (JSON) the client acknowledges with a lone 0x01,
    /// after which the server fails the exchange.
    fn oauthbearer(&mut self) -> Result<(), KafkaError> {
        // Named without a flag: the daemon's [kafka] watch reads it too (sasl_token_file).
        let Secret::TokenFile(path) = &self.config.secret else {
            unreachable!("OAUTHBEARER configs are made by SaslConfig::oauthbearer")
        };
        let token = read_secret_file("the token file", path)
            .map_err(|e| self.fail(SaslFailure::Token(e.to_string())))?;
        let challenge = self.step(oauthbearer::initial_response(&token))?;
        if challenge.is_empty() {
            return Ok(());
        }
        let message = Some(String::from_utf8_lossy(&challenge).into_owned());
        match self.step(oauthbearer::ACKNOWLEDGE_ERROR.to_vec()) {
            Err(KafkaError::Sasl { failure: SaslFailure::AuthenticationFailed { .. }, .. })
            | Ok(_) => Err(self.fail(SaslFailure::AuthenticationFailed { message })),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The client's side of the exchange against a scripted socket: what PLAIN puts on the
    //! wire (tansu 0.6, the real broker of the integration tests, has no PLAIN), and how a
    //! refusal reads. SCRAM runs against tansu in tests/tests/kafka_security.rs.
    use super::*;
    use crate::kafka::{
        client::Connection,
        error::Hop,
        wire::{api_key, encode_response},
    };
    use kafka_protocol::{
        messages::{api_versions_response::ApiVersion, ApiVersionsRequest, ApiVersionsResponse},
        protocol::{decode_request_header_from_buffer, Decodable},
    };
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
    };

    /// A listener that answers ApiVersions, SaslHandshake with `handshake_error`, then
    /// SaslAuthenticate with `auth_error`; returns the auth bytes it was sent.
    fn scripted(handshake_error: i16, auth_error: i16) -> (String, std::thread::JoinHandle<Bytes>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut sent = Bytes::new();
            for _ in 0..3 {
                let mut size = [0u8; 4];
                if s.read_exact(&mut size).is_err() {
                    break;
                }
                let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
                s.read_exact(&mut body).unwrap();
                let mut body = Bytes::from(body);
                let h = decode_request_header_from_buffer(&mut body).unwrap();
                let (v, c) = (h.request_api_version, h.correlation_id);
                let frame = match h.request_api_key {
                    18 => {
                        let keys = [(Api::ApiVersions, 3), (Api::SaslHandshake, 1)]
                            .into_iter()
                            .chain([(Api::SaslAuthenticate, 2)])
                            .map(|(a, hi)| {
                                ApiVersion::default().with_api_key(api_key(a)).with_max_version(hi)
                            })
                            .collect();
                        let resp = ApiVersionsResponse::default().with_api_keys(keys);
                        encode_response::<ApiVersionsRequest>(&resp, v, c)
                    }
                    17 => {
                        let resp = SaslHandshakeResponse::default()
                            .with_error_code(handshake_error)
                            .with_mechanisms(vec![StrBytes::from_static_str("SCRAM-SHA-512")]);
                        encode_response::<SaslHandshakeRequest>(&resp, v, c)
                    }
                    _ => {
                        sent = SaslAuthenticateRequest::decode(&mut body, v).unwrap().auth_bytes;
                        let resp = SaslAuthenticateResponse::default()
                            .with_error_code(auth_error)
                            .with_error_message(Some(StrBytes::from_static_str("bad creds")));
                        encode_response::<SaslAuthenticateRequest>(&resp, v, c)
                    }
                };
                s.write_all(&frame.unwrap()).unwrap();
            }
            sent
        });
        (addr, broker)
    }

    fn authenticate(addr: &str) -> Result<(), KafkaError> {
        let stream = TcpStream::connect(addr).unwrap();
        let peer = stream.peer_addr().unwrap();
        let mut conn = Connection::handshake(addr, stream, peer, Duration::from_secs(5))?;
        conn.authenticate(&SaslConfig::new(Mechanism::Plain, "user", "pass word"))
    }

    #[test]
    fn plain_sends_user_and_password_nul_separated() {
        let (addr, broker) = scripted(0, 0);
        authenticate(&addr).unwrap();
        assert_eq!(&broker.join().unwrap()[..], b"\0user\0pass word");
    }

    #[test]
    fn a_refused_password_fails_at_the_sasl_hop() {
        let (addr, broker) = scripted(0, ErrorCode::SASL_AUTHENTICATION_FAILED.0);
        let e = authenticate(&addr).unwrap_err();
        broker.join().unwrap();
        assert_eq!(e.hop(), Hop::Sasl);
        let shown = e.to_string();
        assert!(shown.contains("SASL PLAIN as \"user\" failed: authentication failed"), "{shown}");
        assert!(shown.ends_with(": bad creds"), "{shown}");
        assert!(!shown.contains("pass word"), "{shown}");
    }

    #[test]
    fn a_mechanism_not_enabled_names_the_ones_that_are() {
        let (addr, broker) = scripted(ErrorCode::UNSUPPORTED_SASL_MECHANISM.0, 0);
        let e = authenticate(&addr).unwrap_err();
        broker.join().unwrap();
        assert_eq!(e.hop(), Hop::Sasl);
        assert!(
            e.to_string().contains("not enabled on this listener (it offers SCRAM-SHA-512)"),
            "{e}"
        );
        let (addr, broker) = scripted(ErrorCode::ILLEGAL_SASL_STATE.0, 0);
        let e = authenticate(&addr).unwrap_err();
        broker.join().unwrap();
        assert!(
            e.to_string().ends_with(
                "failed: the listener does not do SASL (SaslHandshake answered \
                 ILLEGAL_SASL_STATE (34)): a PLAINTEXT or SSL listener; drop --sasl-mechanism \
                 or use the SASL port"
            ),
            "{e}"
        );
    }
}
