//! The optional `[kafka]` section: the cluster whose metadata the daemon watches (bootstrap
//! addresses, how often, and TLS / SASL as `forwarder kafka check` takes them), and how
//! those settings become the Kafka client's [`Security`] and its rules' targets.
//!
//! Validated in `validate/kafka.rs` (the text alone); the files it names (CA, client
//! certificate and key, password) are read by [`KafkaWatch::security`], which the host
//! check (`host.rs`) runs once at load, and the watch at every round (a renewed certificate
//! is used without a restart). The bearer token file is only read when connecting: a token
//! fetcher may write it after the daemon starts.

use super::Settings;
use crate::kafka::{
    coverage::RuleTarget,
    tls::{ClientIdentity, TlsConfig},
    Mechanism, SaslConfig, Security, SetupError,
};
use std::{path::PathBuf, time::Duration};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaWatch {
    /// HOST:PORT of brokers to ask, in order, until one answers.
    pub bootstrap: Vec<String>,
    /// How often the metadata is fetched.
    pub interval: Duration,
    /// The bound on each step (resolving, connecting, each request) of one fetch.
    pub timeout: Duration,
    pub tls: Option<KafkaTls>,
    pub sasl: Option<KafkaSasl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaTls {
    /// `None`: the system's CAs.
    pub ca_file: Option<PathBuf>,
    /// The name a bootstrap address's certificate is checked against instead of its host.
    pub server_name: Option<String>,
    /// mTLS: the client certificate (chain) and its key, both PEM.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaSasl {
    /// PLAIN or SCRAM, the password the first line of `password_file`.
    Password { mechanism: Mechanism, username: String, password_file: PathBuf },
    /// OAUTHBEARER, the token the first line of `token_file` (read at every connection).
    Token { token_file: PathBuf },
}

/// Which key of `[kafka]` a [`SetupError`] is about, for the error's place.
pub(super) fn field_of(e: &SetupError) -> &'static str {
    match e {
        SetupError::CaFile { .. } => "ca_file",
        SetupError::SystemRoots { .. } | SetupError::Tls(_) => "tls",
        SetupError::ClientCert { .. } => "client_cert",
        SetupError::ClientKey { .. } => "client_key",
        SetupError::SecretFile { .. } => "sasl_password_file",
    }
}

impl KafkaWatch {
    /// The client's settings: the CA, certificate, key and password files read now.
    pub fn security(&self) -> Result<Security, SetupError> {
        let tls = match &self.tls {
            None => None,
            Some(t) => {
                let identity = t
                    .client_cert
                    .as_ref()
                    .map(|(cert, key)| ClientIdentity { cert: cert.as_path(), key: key.as_path() });
                Some(TlsConfig::with_identity(t.ca_file.as_deref(), identity)?)
            }
        };
        let sasl = match &self.sasl {
            None => None,
            Some(KafkaSasl::Password { mechanism, username, password_file }) => {
                let password =
                    crate::kafka::sasl::read_secret_file("sasl_password_file", password_file)?;
                Some(SaslConfig::new(*mechanism, username, &password))
            }
            Some(KafkaSasl::Token { token_file }) => Some(SaslConfig::oauthbearer(token_file)),
        };
        let tls_server_name = self.tls.as_ref().and_then(|t| t.server_name.clone());
        Ok(Security { tls, tls_server_name, sasl })
    }
}

impl Settings {
    /// The rules as the Kafka comparison takes them (targets resolved only when written as
    /// IPv4 addresses).
    pub fn rule_targets(&self) -> Vec<RuleTarget> {
        self.rules
            .iter()
            .map(|r| RuleTarget {
                name: r.name.clone(),
                listen: r.listen,
                host: r.target.host.clone(),
                port: r.target.port,
                addr: r.target.addr,
            })
            .collect()
    }

    /// Whether a new rule may listen on `port`: no rule does, it is outside `snat_ports`,
    /// and it is not the health or metrics port.
    pub fn listen_port_taken(&self, port: u16) -> bool {
        self.rules.iter().any(|r| r.listen == port)
            || self.snat_ports.contains(&port)
            || [self.health, self.metrics].iter().flatten().any(|s| s.port() == port)
    }

    /// Where a new rule's listen port search starts: after the highest rule's, or 9092.
    pub fn next_listen_port(&self) -> u16 {
        self.rules.iter().map(|r| r.listen).max().map_or(9092, |p| p.saturating_add(1))
    }
}
