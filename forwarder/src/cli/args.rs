//! The command line's grammar (clap): every subcommand, flag and value parser of
//! `forwarder`. What each command does is in the other modules of `cli`; `main.rs` only
//! dispatches.

use super::CliError;
use crate::kafka;
use clap::{Parser, Subcommand};
use std::{path::PathBuf, time::Duration};

#[derive(Parser)]
#[command(name = "forwarder", version, about = "In-kernel TCP port forwarder for NAT VMs")]
pub struct Cli {
    /// The configuration file (it also says where the daemon's control socket is);
    /// /etc/forwarder/forwarder.toml when not given. `kafka discover --config FILE` compares
    /// the cluster with that file's rules.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The daemon's control socket, when not the one the config file names.
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// How log lines look on stderr: `text` (colours only on a terminal, so journald gets
    /// none) or `json`, one object a line, for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd Type=notify).
    Run {
        /// Start even if a hostname target does not resolve (its rule waits until it does).
        #[arg(long)]
        allow_unresolved: bool,
        /// Start on maps pinned by a newer build (another map layout) by removing them: every
        /// connection they track is dropped. Without it such a start is refused and says
        /// what it would lose. (The .deb's downgrade takes FORWARDER_FORCE_DOWNGRADE=1.)
        #[arg(long)]
        force_downgrade: bool,
    },
    /// Validate the configuration, resolve targets and print the effective rules.
    CheckConfig {
        #[arg(long)]
        json: bool,
    },
    /// List, add or remove rules on the running daemon (written back to the config file).
    Rule {
        #[command(subcommand)]
        action: RuleAction,
    },
    /// Re-read the config file and apply the difference (as SIGHUP does).
    Reload,
    /// Make the health probe fail so the load balancer sends no new flows here.
    Drain {
        /// Then wait until the load balancer has taken this VM out: the probes have had
        /// time to fail and no new connection arrived for a probe interval (a rolling
        /// upgrade's step before the upgrade). Exits 1 if new connections keep arriving.
        #[arg(long)]
        wait: bool,
        /// The load balancer probe's interval (Azure's default: 5 s).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, requires = "wait")]
        probe_interval: Duration,
        /// Failed probes before the load balancer marks a backend down.
        #[arg(long, default_value_t = 2, requires = "wait")]
        probe_threshold: u32,
        /// Give up waiting after this long.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration, requires = "wait")]
        timeout: Duration,
    },
    /// Let the health probe answer again.
    Undrain,
    /// Detach the program, remove the pins and restore the sysctls (with or without daemon).
    Unload,
    /// Before the package is replaced by VERSION (the .deb's prerm runs it): exits 0 unless
    /// VERSION is older and cannot read the pinned maps, then says what would be lost and
    /// exits 1; FORWARDER_FORCE_DOWNGRADE=1 unloads instead.
    DowngradeCheck { version: String },
    /// Mode, interfaces, program ids, health, last probe, rules.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Per rule: active flows, connections/s, packets/s, bytes, drops.
    Stats {
        #[arg(long)]
        json: bool,
        /// Refresh every --interval until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// With --watch: stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Check this host for the known causes of a dead path (probe blocked, stray NAT, ...).
    Doctor {
        #[arg(long)]
        json: bool,
        /// How long to wait for each target's TCP connect.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Shell completions and the man page, from these definitions (the .deb ships them).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generated,
    },
    /// Turn `iptables-save -t nat` output (the ip_fwd.sh rules) into [[rule]] blocks.
    ImportIptables {
        /// A file, or - for standard input.
        #[arg(default_value = "-")]
        file: String,
        #[arg(long)]
        json: bool,
    },
    /// The connection table, like `conntrack -L`.
    Flows {
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Plan the rules from a Kafka cluster's metadata, or test the path to its brokers.
    Kafka {
        // Boxed: its flags (TLS, SASL, mTLS) make it many times the size of the others.
        #[command(subcommand)]
        action: Box<KafkaAction>,
    },
}

#[derive(Subcommand)]
pub enum Generated {
    /// A completion script for SHELL on standard output.
    Completions { shell: clap_complete::Shell },
    /// The man page (roff) on standard output.
    Man,
}

#[derive(Subcommand)]
pub enum KafkaAction {
    /// Ask a broker for the cluster's brokers; print one [[rule]] per broker, and the load
    /// balancer rules, Private Link services and private DNS records to create in Azure.
    /// With --config, only what that config lacks: the rules and Azure resources of brokers
    /// no rule forwards to (the cluster from --bootstrap, else from its [kafka] section).
    Discover {
        /// Any broker's listener (with the --tls and --sasl-* options it needs).
        #[arg(long, value_name = "HOST:PORT", value_parser = kafka::host_port_arg)]
        bootstrap: Option<String>,
        /// The listen port of the lowest broker id's rule; the next brokers get the next ports
        /// (9092; with --config, the first free port above the highest rule's).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        first_port: Option<u16>,
        /// Where the Kafka clients run: managed private endpoints of a Synapse workspace or
        /// a data factory, or private endpoints and private DNS in a VNet of your own.
        #[arg(long, value_enum, default_value_t = kafka::azure::ClientSide::Synapse)]
        client: kafka::azure::ClientSide,
        /// The NAT VMs behind the load balancer: two VMs of your own (their NICs join the
        /// backend pool), or a scale set the commands create, each VM set up by cloud-init
        /// from the forwarder .deb, with autoscale on CPU. With --config, the new brokers'
        /// commands are the same for both (a scale set's model needs their rules too).
        #[arg(long, value_enum, default_value_t = kafka::azure::NatVms::Two)]
        nat_vms: kafka::azure::NatVms,
        /// Also write the Azure commands as one bash script (variables at the top).
        #[arg(long, value_name = "FILE")]
        script: Option<PathBuf>,
        #[command(flatten)]
        client_args: KafkaClientArgs,
    },
    /// Fetch metadata through the forwarder, then connect to every advertised broker as a
    /// client would (resolve, TCP, TLS, ApiVersions, SASL). Exit 0 only if every broker works.
    Check {
        /// Where clients bootstrap (the forwarder); repeat it to check several clusters.
        #[arg(long, value_name = "HOST:PORT", required = true, value_parser = kafka::host_port_arg)]
        via: Vec<String>,
        /// Also produce test messages to TOPIC on every broker leading a partition of it and
        /// fetch them back (creates TOPIC, one partition per broker, if it does not exist).
        #[arg(long, value_name = "TOPIC")]
        produce: Option<String>,
        /// Messages per broker, with --produce.
        #[arg(long, default_value_t = 1, requires = "produce",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(kafka::check::MAX_MESSAGES)))]
        messages: u32,
        /// Bytes per message, with --produce (above the path MTU to test PMTU discovery).
        #[arg(long, default_value_t = 1024, requires = "produce", value_parser = message_size)]
        message_size: usize,
        #[command(flatten)]
        client_args: KafkaClientArgs,
    },
}

/// What both Kafka commands take: the output form, the bound on each step and how to
/// connect.
#[derive(clap::Args)]
pub struct KafkaClientArgs {
    #[arg(long)]
    pub json: bool,
    /// The bound on each step: resolving, connecting, each request.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// The environment variable `--sasl-mechanism` takes the password from when no
/// `--sasl-password-file` is given (never a flag: ps shows a process's arguments).
const SASL_PASSWORD_ENV: &str = "FORWARDER_SASL_PASSWORD";

/// TLS and SASL as the listeners need them (SSL, SASL_PLAINTEXT, SASL_SSL), the same for
/// every connection of the run.
#[derive(clap::Args)]
pub struct SecurityArgs {
    /// Speak TLS to the listeners, checking each certificate against the name dialed: an
    /// advertised broker's against the host it advertises (implied by --ca-file).
    #[arg(long)]
    pub tls: bool,
    /// The CA certificate(s) to trust, as PEM, instead of the system's (/etc/ssl/certs).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Check the certificate of --bootstrap / --via against NAME instead of its host (when
    /// dialing an IP address); advertised brokers are always checked against their own name.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// mTLS: the client certificate (PEM, with its chain) to present to listeners that
    /// require one (ssl.client.auth=required); implies --tls.
    #[arg(long, value_name = "PATH", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Authenticate with SASL after the handshake (PLAIN sends the password as it is: with
    /// --tls only, unless the path is trusted). OAUTHBEARER takes --sasl-token-file, the
    /// others --sasl-username and the password.
    #[arg(long, value_enum, value_name = "MECHANISM")]
    pub sasl_mechanism: Option<kafka::Mechanism>,
    /// The SASL user name (PLAIN, SCRAM).
    #[arg(long, value_name = "USER", requires = "sasl_mechanism")]
    pub sasl_username: Option<String>,
    /// A file holding the SASL password (its first line); without it, the password is taken
    /// from the environment variable FORWARDER_SASL_PASSWORD.
    #[arg(long, value_name = "PATH", requires = "sasl_mechanism")]
    pub sasl_password_file: Option<PathBuf>,
    /// OAUTHBEARER: a file holding the bearer token (its first line), as the identity
    /// provider's token fetcher writes it.
    #[arg(long, value_name = "PATH", requires = "sasl_mechanism")]
    pub sasl_token_file: Option<PathBuf>,
}

impl SecurityArgs {
    /// The client's settings for `forwarder kafka SUBCOMMAND`; a flag whose value cannot be
    /// used is a usage error (exit 2).
    pub fn load(&self, subcommand: &str) -> Result<kafka::Security, CliError> {
        use clap::{error::ErrorKind, CommandFactory};
        let usage = |kind, msg: &str| -> CliError {
            let mut cli = Cli::command();
            cli.build();
            let kafka = cli.find_subcommand_mut("kafka").expect("the kafka command");
            let e =
                kafka.find_subcommand_mut(subcommand).expect("a kafka subcommand").error(kind, msg);
            let _ = e.print();
            CliError::Reported(2)
        };
        let tls = self.tls || self.ca_file.is_some() || self.client_cert.is_some();
        if self.tls_server_name.is_some() && !tls {
            return Err(usage(
                ErrorKind::MissingRequiredArgument,
                "--tls-server-name needs --tls (or --ca-file)",
            ));
        }
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(kafka::tls::ClientIdentity { cert, key }),
            _ => None,
        };
        let tls = match tls {
            false => None,
            true => Some(
                kafka::TlsConfig::with_identity(self.ca_file.as_deref(), identity)
                    .map_err(CliError::usage)?,
            ),
        };
        let password_flags = self.sasl_username.is_some() || self.sasl_password_file.is_some();
        let sasl = match (&self.sasl_mechanism, &self.sasl_username) {
            (Some(kafka::Mechanism::OAuthBearer), _) => {
                let (Some(token), false) = (&self.sasl_token_file, password_flags) else {
                    return Err(usage(
                        ErrorKind::ArgumentConflict,
                        "--sasl-mechanism oauthbearer takes the token from --sasl-token-file \
                         PATH, and no --sasl-username or --sasl-password-file",
                    ));
                };
                // Read here for the flag's error (exit 2); again at every connection.
                kafka::sasl::read_secret_file("--sasl-token-file", token)
                    .map_err(CliError::usage)?;
                Some(kafka::SaslConfig::oauthbearer(token))
            }
            (Some(_), _) if self.sasl_token_file.is_some() => {
                return Err(usage(
                    ErrorKind::ArgumentConflict,
                    "--sasl-token-file is for --sasl-mechanism oauthbearer",
                ));
            }
            (Some(_), None) => {
                return Err(usage(
                    ErrorKind::MissingRequiredArgument,
                    "--sasl-mechanism needs --sasl-username USER (and the password)",
                ));
            }
            (Some(mechanism), Some(user)) => {
                let password = match &self.sasl_password_file {
                    Some(path) => kafka::sasl::read_secret_file("--sasl-password-file", path)
                        .map_err(CliError::usage)?,
                    None => match std::env::var(SASL_PASSWORD_ENV) {
                        Ok(p) if !p.is_empty() => p,
                        _ => {
                            let msg = format!(
                                "--sasl-mechanism needs the password: --sasl-password-file \
                                 PATH, or the environment variable {SASL_PASSWORD_ENV}"
                            );
                            return Err(usage(ErrorKind::MissingRequiredArgument, &msg));
                        }
                    },
                };
                Some(kafka::SaslConfig::new(*mechanism, user, &password))
            }
            _ => None,
        };
        Ok(kafka::Security { tls, tls_server_name: self.tls_server_name.clone(), sasl })
    }
}

impl SecurityArgs {
    /// No flag about TLS or SASL was given.
    pub fn is_empty(&self) -> bool {
        !self.tls
            && self.ca_file.is_none()
            && self.tls_server_name.is_none()
            && self.client_cert.is_none()
            && self.sasl_mechanism.is_none()
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn message_size(s: &str) -> Result<usize, String> {
    use kafka::check::{MAX_MESSAGE_SIZE as MAX, MIN_MESSAGE_SIZE as MIN};
    match s.parse::<usize>() {
        Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of bytes from {MIN} to {MAX}")),
    }
}

#[derive(Subcommand)]
pub enum RuleAction {
    List {
        #[arg(long)]
        json: bool,
    },
    Add {
        name: String,
        #[arg(long)]
        listen: u16,
        /// HOST:PORT, hostname or IPv4.
        #[arg(long)]
        target: String,
    },
    Remove {
        name: String,
    },
}
