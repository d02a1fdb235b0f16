//! TLS for the Kafka client (`--tls`, `--ca-file`): rustls with ring, TLS 1.2 and 1.3, the
//! server's certificate checked against the CAs given (or the system's) and against the
//! name dialed, as a Kafka client with ssl.endpoint.identification.algorithm=https does.
//! For a broker that is the host it advertises, whatever address the path goes through:
//! a Spark client behind a private endpoint checks exactly that.
//!
//! With `--client-cert` and `--client-key` the client also proves who it is (mTLS, a
//! listener with ssl.client.auth=required), as Kafka's ssl.keystore does.

use super::{
    error::{CaFileFailure, Garbage, KafkaError, KeyFailure, SetupError, TlsFailure},
    stream::{remaining, Stream, TlsStream},
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    CertificateError, ClientConfig, ClientConnection, RootCertStore,
};
use std::{
    io::{self, Read},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

/// The client side of TLS, shared by every connection of a run.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
    /// Where the trusted CAs come from, for the operator: "the CA file ca.pem".
    roots: String,
    /// The CA file given, if any (the notebook cell needs its certificates too).
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate is presented (mTLS).
    pub client_auth: bool,
}

/// The certificate chain and private key the client presents (`--client-cert`,
/// `--client-key`), as PEM files.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentity<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("roots", &self.roots).finish()
    }
}

impl TlsConfig {
    /// Trusts the certificates of the PEM file `ca_file`, or without one the system's
    /// (/etc/ssl/certs on Debian, where an enterprise CA is installed with
    /// update-ca-certificates).
    pub fn new(ca_file: Option<&Path>) -> Result<TlsConfig, SetupError> {
        TlsConfig::with_identity(ca_file, None)
    }

    /// [`TlsConfig::new`], presenting `identity` to listeners that ask for a client
    /// certificate.
    pub fn with_identity(
        ca_file: Option<&Path>,
        identity: Option<ClientIdentity>,
    ) -> Result<TlsConfig, SetupError> {
        let mut store = RootCertStore::empty();
        let roots = match ca_file {
            Some(path) => {
                let bad = |failure| SetupError::CaFile { path: path.into(), failure };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(CaFileFailure::Pem(e)))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(CaFileFailure::Pem(e)))?;
                for cert in certs {
                    store.add(cert).map_err(|e| bad(CaFileFailure::Certificate(e)))?;
                }
                if store.is_empty() {
                    return Err(bad(CaFileFailure::NoCertificate));
                }
                format!("the CA file {}", path.display())
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    let first = found.errors.into_iter().next();
                    return Err(SetupError::SystemRoots { first });
                }
                "the system's trusted CAs".into()
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(SetupError::Tls)?
            .with_root_certificates(store);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let (chain, key) = read_identity(id)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| SetupError::ClientKey {
                    path: id.key.into(),
                    failure: KeyFailure::Refused(e),
                })?
            }
        };
        Ok(TlsConfig {
            config: Arc::new(config),
            roots,
            ca_file: ca_file.map(Path::to_path_buf),
            client_auth: identity.is_some(),
        })
    }

    /// The TLS handshake on a connected socket, sending `name` as SNI (a DNS name) and
    /// checking the certificate against it (a name or an IP address), within `timeout`.
    pub fn handshake(
        &self,
        mut sock: TcpStream,
        addr: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Stream, KafkaError> {
        let fail = |failure| KafkaError::Tls { addr: addr.into(), name: name.into(), failure };
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| fail(TlsFailure::BadName(name.into())))?;
        let mut conn = ClientConnection::new(self.config.clone(), server_name)
            .map_err(|e| fail(TlsFailure::Refused(e)))?;
        let deadline = Instant::now() + timeout;
        let io_fail = |e: io::Error| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TlsFailure::Timeout(timeout),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => TlsFailure::Closed,
            _ => TlsFailure::Io(e),
        };
        let mut first = true;
        let mut buf = vec![0u8; 18 << 10];
        while conn.is_handshaking() {
            if conn.wants_write() {
                let sent = remaining(deadline)
                    .ok_or_else(|| io::ErrorKind::TimedOut.into())
                    .and_then(|left| sock.set_write_timeout(Some(left)))
                    .and_then(|()| conn.write_tls(&mut sock));
                sent.map_err(|e| fail(io_fail(e)))?;
                continue;
            }
            let got = remaining(deadline)
                .ok_or_else(|| io::ErrorKind::TimedOut.into())
                .and_then(|left| sock.set_read_timeout(Some(left)))
                .and_then(|()| sock.read(&mut buf));
            let n = got.map_err(|e| fail(io_fail(e)))?;
            if n == 0 {
                return Err(fail(TlsFailure::Closed));
            }
            // The first bytes back show what a listener that is not TLS speaks instead.
            if std::mem::take(&mut first) && !is_tls_record(&buf[..n]) {
                let shown = match Garbage::classify(&buf[..n]) {
                    Garbage::Http(line) => format!("HTTP ({line:?})"),
                    Garbage::Other(shown) => shown,
                    Garbage::Tls { .. } => "TLS".into(),
                };
                return Err(fail(TlsFailure::NotTls(shown)));
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                conn.read_tls(&mut rest).map_err(|e| fail(TlsFailure::Io(e)))?;
                if let Err(e) = conn.process_new_packets() {
                    // Tell the server why (the alert rustls queued), then report it.
                    let _ = conn.write_tls(&mut sock);
                    return Err(fail(self.failure(e)));
                }
            }
        }
        let mut stream = TlsStream { conn, sock };
        stream.flush(deadline).map_err(|e| fail(io_fail(e)))?;
        Ok(Stream::Tls(Box::new(stream)))
    }

    /// The operator's reading of what rustls refused.
    fn failure(&self, e: rustls::Error) -> TlsFailure {
        match e {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                TlsFailure::UnknownIssuer { roots: self.roots.clone() }
            }
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            }) => TlsFailure::NameMismatch {
                presented: presented.iter().map(|n| plain_name(n).to_string()).collect(),
            },
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => {
                TlsFailure::NameMismatch { presented: Vec::new() }
            }
            e => TlsFailure::Refused(e),
        }
    }
}

/// The client's certificate chain and key from their PEM files.
fn read_identity(
    id: ClientIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), SetupError> {
    let cert_fail = |failure| SetupError::ClientCert { path: id.cert.into(), failure };
    let chain = CertificateDer::pem_file_iter(id.cert)
        .map_err(|e| cert_fail(CaFileFailure::Pem(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_fail(CaFileFailure::Pem(e)))?;
    if chain.is_empty() {
        return Err(cert_fail(CaFileFailure::NoCertificate));
    }
    let key = PrivateKeyDer::from_pem_file(id.key)
        .map_err(|e| SetupError::ClientKey { path: id.key.into(), failure: KeyFailure::Pem(e) })?;
    Ok((chain, key))
}

/// A name as the certificate holds it, from webpki's `DnsName("b1.corp")` or
/// `IpAddress(10.0.0.5)`; other kinds as webpki shows them.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| presented.strip_prefix("IpAddress(").and_then(|n| n.strip_suffix(')')))
        .unwrap_or(presented)
}

/// A TLS record header: content type 20 to 23, then major version 3.
fn is_tls_record(bytes: &[u8]) -> bool {
    (20..=23).contains(&bytes[0]) && bytes.get(1).is_none_or(|&v| v == 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = TlsConfig::new(Some(&empty)).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = TlsConfig::new(Some(&missing)).unwrap_err().to_string();
        assert!(e.starts_with(&format!("--ca-file {}", missing.display())), "{e}");
    }

    /// The texts operators see, pinned: the cause's message is part of the line, and the
    /// error has no source that would print it again.
    #[test]
    fn ca_file_failures_show_their_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let cert = |body: &str| format!("-----BEGIN CERTIFICATE-----\n{body}");
        let cases = [
            (None, "I/O error: No such file or directory (os error 2)"),
            (
                Some(cert("AAAA\n-----END CERTIFICATE-----\n")),
                "a certificate it holds: invalid peer certificate: BadEncoding",
            ),
            (
                Some(cert("AAAA\n")),
                "missing section end marker: [67, 69, 82, 84, 73, 70, 73, 67, 65, 84, 69]",
            ),
        ];
        for (i, (content, why)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.pem"));
            if let Some(c) = content {
                std::fs::write(&path, c).unwrap();
            }
            let e = TlsConfig::new(Some(&path)).unwrap_err();
            assert_eq!(e.to_string(), format!("--ca-file {}: {why}", path.display()));
            assert!(std::error::Error::source(&e).is_none());
        }
    }

    #[test]
    fn no_system_roots_names_the_first_error_once() {
        let e = SetupError::SystemRoots { first: None };
        assert_eq!(
            e.to_string(),
            "the system's trusted CAs: none found (name a CA with --ca-file)"
        );
        let first = rustls_native_certs::Error {
            context: "failed to read PEM from file",
            kind: rustls_native_certs::ErrorKind::Pem(rustls::pki_types::pem::Error::NoItemsFound),
        };
        let e = SetupError::SystemRoots { first: Some(first) };
        assert_eq!(
            e.to_string(),
            "the system's trusted CAs: none found (failed to read PEM from file: no items found) \
             (name a CA with --ca-file)"
        );
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn presented_names_are_shown_plain() {
        assert_eq!(plain_name("DnsName(\"b1.corp.example\")"), "b1.corp.example");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("IpAddress(fd00::5)"), "fd00::5");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }

    #[test]
    fn tls_records_are_told_from_other_answers() {
        assert!(is_tls_record(&[0x16, 0x03, 0x03]));
        assert!(is_tls_record(&[0x15]));
        assert!(!is_tls_record(b"HTTP/1.1 400"));
        assert!(!is_tls_record(&[0, 0, 0, 12]));
    }
}
