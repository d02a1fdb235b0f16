//! The `forwarder` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage or invalid
//! configuration.

use clap::{Parser, Subcommand};
use forwarder::{
    cli::{self, daemon_requests as requests},
    config, daemon,
    daemon::control::Request,
    kafka,
};
use std::{path::PathBuf, process::ExitCode, time::Duration};

#[derive(Parser)]
#[command(name = "forwarder", version, about = "In-kernel TCP port forwarder for NAT VMs")]
struct Cli {
    /// The configuration file (it also says where the daemon's control socket is);
    /// /etc/forwarder/forwarder.toml when not given. `kafka discover --config FILE` compares
    /// the cluster with that file's rules.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The daemon's control socket, when not the one the config file names.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// How log lines look on stderr: `text` (colours only on a terminal, so journald gets
    /// none) or `json`, one object a line, for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr (journald under the unit) at RUST_LOG's level, `info` by default.
/// Colour only when stderr is a terminal and NO_COLOR is unset: under systemd the escape
/// codes ended up in the journal as text.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[derive(Subcommand)]
enum Command {
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
enum Generated {
    /// A completion script for SHELL on standard output.
    Completions { shell: clap_complete::Shell },
    /// The man page (roff) on standard output.
    Man,
}

#[derive(Subcommand)]
enum KafkaAction {
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
struct KafkaClientArgs {
    #[arg(long)]
    json: bool,
    /// The bound on each step: resolving, connecting, each request.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    timeout: Duration,
    #[command(flatten)]
    security: SecurityArgs,
}

/// The environment variable `--sasl-mechanism` takes the password from when no
/// `--sasl-password-file` is given (never a flag: ps shows a process's arguments).
const SASL_PASSWORD_ENV: &str = "FORWARDER_SASL_PASSWORD";

/// TLS and SASL as the listeners need them (SSL, SASL_PLAINTEXT, SASL_SSL), the same for
/// every connection of the run.
#[derive(clap::Args)]
struct SecurityArgs {
    /// Speak TLS to the listeners, checking each certificate against the name dialed: an
    /// advertised broker's against the host it advertises (implied by --ca-file).
    #[arg(long)]
    tls: bool,
    /// The CA certificate(s) to trust, as PEM, instead of the system's (/etc/ssl/certs).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Check the certificate of --bootstrap / --via against NAME instead of its host (when
    /// dialing an IP address); advertised brokers are always checked against their own name.
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// mTLS: the client certificate (PEM, with its chain) to present to listeners that
    /// require one (ssl.client.auth=required); implies --tls.
    #[arg(long, value_name = "PATH", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Authenticate with SASL after the handshake (PLAIN sends the password as it is: with
    /// --tls only, unless the path is trusted). OAUTHBEARER takes --sasl-token-file, the
    /// others --sasl-username and the password.
    #[arg(long, value_enum, value_name = "MECHANISM")]
    sasl_mechanism: Option<kafka::Mechanism>,
    /// The SASL user name (PLAIN, SCRAM).
    #[arg(long, value_name = "USER", requires = "sasl_mechanism")]
    sasl_username: Option<String>,
    /// A file holding the SASL password (its first line); without it, the password is taken
    /// from the environment variable FORWARDER_SASL_PASSWORD.
    #[arg(long, value_name = "PATH", requires = "sasl_mechanism")]
    sasl_password_file: Option<PathBuf>,
    /// OAUTHBEARER: a file holding the bearer token (its first line), as the identity
    /// provider's token fetcher writes it.
    #[arg(long, value_name = "PATH", requires = "sasl_mechanism")]
    sasl_token_file: Option<PathBuf>,
}

impl SecurityArgs {
    /// The client's settings for `forwarder kafka SUBCOMMAND`; a flag whose value cannot be
    /// used is a usage error (exit 2).
    fn load(&self, subcommand: &str) -> Result<kafka::Security, ExitCode> {
        use clap::{error::ErrorKind, CommandFactory};
        let usage = |kind, msg: &str| -> ExitCode {
            let mut cli = Cli::command();
            cli.build();
            let kafka = cli.find_subcommand_mut("kafka").expect("the kafka command");
            let e =
                kafka.find_subcommand_mut(subcommand).expect("a kafka subcommand").error(kind, msg);
            let _ = e.print();
            ExitCode::from(2)
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
                    .map_err(usage_error)?,
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
                kafka::sasl::read_secret_file("--sasl-token-file", token).map_err(usage_error)?;
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
                        .map_err(usage_error)?,
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
    fn is_empty(&self) -> bool {
        !self.tls
            && self.ca_file.is_none()
            && self.tls_server_name.is_none()
            && self.client_cert.is_none()
            && self.sasl_mechanism.is_none()
    }
}

fn generate(what: &Generated) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    match what {
        Generated::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "forwarder", &mut out);
            ExitCode::SUCCESS
        }
        Generated::Man => match clap_mangen::Man::new(cmd).render(&mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => runtime_error(anyhow::anyhow!("writing the man page: {e}")),
        },
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
enum RuleAction {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config_flag = cli.config.clone();
    let config_path = config_flag.clone().unwrap_or_else(|| config::DEFAULT_PATH.into());
    // The one command that needs no configuration.
    if let Command::ImportIptables { file, json } = &cli.command {
        return exit(cli::ops::import_iptables(file, *json));
    }
    if let Command::Kafka { action } = &cli.command {
        return kafka_cmd(action, config_flag.as_deref());
    }
    if let Command::Generate { what } = &cli.command {
        return generate(what);
    }
    // Commands for a running daemon only need to find it: they must work while the file
    // has an error (to see it refused by `reload`) or the host changed (to fix or unload).
    let mut loc = config::Locations::read(&config_path);
    if let Some(s) = &cli.socket {
        loc.control_socket = s.clone();
    }
    let socket = loc.control_socket.as_path();
    // Settings that load but are likely mistakes: on stderr for check-config, and in the
    // daemon's log (journald) when it starts.
    let full = || {
        let settings = config::load(&config_path).map_err(config_error)?;
        for w in &settings.warnings {
            eprintln!("warning: {w}");
        }
        Ok(settings)
    };
    let code = match cli.command {
        Command::Run { allow_unresolved, force_downgrade } => {
            let settings = match full() {
                Ok(s) => s,
                Err(code) => return code,
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return runtime_error(anyhow::Error::new(e).context("starting tokio")),
            };
            let opts = daemon::RunOptions { allow_unresolved, force_downgrade };
            let result = rt.block_on(daemon::run(settings, opts));
            // Not the runtime's drop, which waits for every blocking thread: a DNS lookup
            // abandoned on a silent resolver may hang in one for minutes.
            rt.shutdown_timeout(Duration::from_millis(500));
            match result {
                Ok(()) => 0,
                Err(e) => return runtime_error(e.into()),
            }
        }
        Command::CheckConfig { json } => match full() {
            Ok(settings) => return exit(cli::check_config::run(&settings, json).map(|()| 0)),
            Err(code) => return code,
        },
        Command::Rule { action: RuleAction::List { json } } => {
            requests::request(socket, &Request::RuleList, json, cli::output::rules_table)
        }
        Command::Rule { action: RuleAction::Add { name, listen, target } } => {
            requests::command(socket, &Request::RuleAdd { name, listen, target })
        }
        Command::Rule { action: RuleAction::Remove { name } } => {
            requests::command(socket, &Request::RuleRemove { name })
        }
        Command::Reload => requests::command(socket, &Request::Reload),
        Command::Drain { wait, probe_interval, probe_threshold, timeout } => {
            let w = cli::drain::Wait { probe_interval, probe_threshold, timeout };
            cli::drain::run(socket, wait.then_some(&w))
        }
        Command::Undrain => requests::command(socket, &Request::Undrain),
        Command::Unload => return exit(cli::unload::run(&loc).map(|()| 0)),
        Command::DowngradeCheck { version } => {
            return exit(cli::downgrade::run(&loc, &version).map(|()| 0))
        }
        Command::Status { json } => {
            requests::request(socket, &Request::Status, json, cli::output::status_text)
        }
        Command::Stats { json, watch, interval, count } => {
            requests::stats(socket, json, watch, interval, count)
        }
        Command::Flows { rule, json } => {
            requests::request(socket, &Request::Flows { rule }, json, cli::output::flows_table)
        }
        Command::Doctor { json, timeout } => match config::load_unchecked(&config_path) {
            Ok(settings) => cli::ops::doctor(&settings, json, timeout),
            Err(e) => return config_error(e),
        },
        Command::ImportIptables { .. } | Command::Kafka { .. } | Command::Generate { .. } => {
            unreachable!("handled before loading the config")
        }
    };
    ExitCode::from(code)
}

/// A command's result as the process's exit code, its error printed with its sources.
fn exit(result: Result<u8, cli::CliError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", e.report());
            e.exit_code()
        }
    }
}

/// Kafka's subcommands: the security options read (a password file), then the work.
/// `config`: `--config`, when given.
fn kafka_cmd(action: &KafkaAction, config: Option<&std::path::Path>) -> ExitCode {
    match action {
        KafkaAction::Discover { bootstrap, first_port, client, nat_vms, script, client_args } => {
            let KafkaClientArgs { json, timeout, security: flags } = client_args;
            let security = match flags.load("discover") {
                Ok(s) => s,
                Err(code) => return code,
            };
            if let Some(path) = config {
                if script.is_some() {
                    return usage_error("--script writes the whole set-up: not with --config");
                }
                // The file's text only: discover may run where its interfaces do not exist.
                let settings = match config::load_unchecked(path) {
                    Ok(s) => s,
                    Err(e) => return config_error(e),
                };
                // The default path is the one `rule add` finds by itself.
                let flag = (path != std::path::Path::new(config::DEFAULT_PATH)).then_some(path);
                return exit(
                    cli::kafka::discover_missing(&cli::kafka::DiscoverMissing {
                        settings: &settings,
                        config_flag: flag,
                        bootstrap: bootstrap.as_deref(),
                        first_port: *first_port,
                        client: *client,
                        nat_vms: *nat_vms,
                        json: *json,
                        timeout: *timeout,
                        security: (!flags.is_empty()).then_some(&security),
                    })
                    .map(|()| 0),
                );
            }
            let Some(bootstrap) = bootstrap else {
                return usage_error(
                    "kafka discover needs --bootstrap HOST:PORT (or --config FILE with a [kafka] \
                     section)",
                );
            };
            exit(
                cli::kafka::discover(&cli::kafka::Discover {
                    bootstrap,
                    first_port: first_port.unwrap_or(9092),
                    client: *client,
                    nat_vms: *nat_vms,
                    script: script.as_deref(),
                    json: *json,
                    timeout: *timeout,
                    security: &security,
                })
                .map(|()| 0),
            )
        }
        KafkaAction::Check { via, produce, messages, message_size, client_args } => {
            let KafkaClientArgs { json, timeout, security } = client_args;
            let security = match security.load("check") {
                Ok(s) => s,
                Err(code) => return code,
            };
            let opts = kafka::check::Options {
                vias: via.clone(),
                security,
                timeout: *timeout,
                produce: produce.as_ref().map(|topic| kafka::check::ProduceOptions {
                    topic: topic.clone(),
                    messages: *messages,
                    message_size: *message_size,
                }),
            };
            ExitCode::from(cli::kafka::check(&opts, *json))
        }
    }
}

/// An argument or config error (exit 2), printed as [`exit`] prints a command's; `{:#}`
/// keeps an anyhow chain whole.
fn usage_error(e: impl std::fmt::Display) -> ExitCode {
    exit(Err(cli::CliError::usage(cli::error::Message(format!("{e:#}")))))
}

/// An invalid config file (exit 2), printed with the failure under it when there is one
/// (the file unreadable, not TOML).
fn config_error(e: config::ConfigError) -> ExitCode {
    exit(Err(cli::CliError::usage(e)))
}

/// Any other failure (exit 1), printed the same way.
fn runtime_error(e: anyhow::Error) -> ExitCode {
    exit(Err(cli::CliError::runtime(cli::error::Message(format!("{e:#}")))))
}
