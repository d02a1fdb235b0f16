//! The `forwarder` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage or invalid
//! configuration.
//!
//! `main` only parses (`cli::args`), dispatches to the command's module and prints the
//! error a command returns: every command is a [`cli::Outcome`].

use clap::Parser;
use forwarder::{
    cli::{
        self,
        args::{Cli, Command, Generated, KafkaAction, KafkaClientArgs, LogFormat, RuleAction},
        daemon_requests as requests,
        error::Message,
        CliError, Outcome,
    },
    config, daemon,
    daemon::control::Request,
    kafka,
};
use std::{path::Path, process::ExitCode, time::Duration};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match try_main(cli) {
        Ok(code) => code,
        Err(e) => {
            if !matches!(e, CliError::Reported(_)) {
                eprintln!("{}", e.report());
            }
            e.exit_code()
        }
    }
}

fn try_main(cli: Cli) -> Outcome {
    let config_flag = cli.config.clone();
    let config_path = config_flag.clone().unwrap_or_else(|| config::DEFAULT_PATH.into());
    // The commands that need no configuration.
    match &cli.command {
        Command::ImportIptables { file, json } => return cli::ops::import_iptables(file, *json),
        Command::Kafka { action } => return kafka_cmd(action, config_flag.as_deref()),
        Command::Generate { what } => return generate(what),
        _ => {}
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
    let full = || -> Result<config::Settings, CliError> {
        let settings = config::load(&config_path).map_err(CliError::usage)?;
        for w in &settings.warnings {
            eprintln!("warning: {w}");
        }
        Ok(settings)
    };
    match cli.command {
        Command::Run { allow_unresolved, force_downgrade } => {
            let settings = full()?;
            let rt = tokio::runtime::Runtime::new().map_err(|e| runtime("starting tokio", e))?;
            let opts = daemon::RunOptions { allow_unresolved, force_downgrade };
            let result =
                rt.block_on(async { daemon::run(settings, opts, daemon::termination()?).await });
            // Not the runtime's drop, which waits for every blocking thread: a DNS lookup
            // abandoned on a silent resolver may hang in one for minutes.
            rt.shutdown_timeout(Duration::from_millis(500));
            result.map_err(CliError::runtime)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { json } => cli::check_config::run(&full()?, json),
        Command::Rule { action: RuleAction::List { json } } => {
            requests::request(socket, &Request::RuleList, json, |r: &Vec<_>| {
                cli::output::rules_table(r)
            })
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
        Command::Unload => cli::unload::run(&loc),
        Command::DowngradeCheck { version } => cli::downgrade::run(&loc, &version),
        Command::Status { json } => {
            requests::request(socket, &Request::Status, json, cli::output::status_text)
        }
        Command::Stats { json, watch, interval, count } => {
            requests::stats(socket, json, watch, interval, count)
        }
        Command::Flows { rule, json } => {
            requests::request(socket, &Request::Flows { rule }, json, |f: &Vec<_>| {
                cli::output::flows_table(f)
            })
        }
        Command::Doctor { json, timeout } => {
            let settings = config::load_unchecked(&config_path).map_err(CliError::usage)?;
            cli::ops::doctor(&settings, json, timeout)
        }
        Command::ImportIptables { .. } | Command::Kafka { .. } | Command::Generate { .. } => {
            unreachable!("handled before loading the config")
        }
    }
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

/// `forwarder generate`: completions and the man page, from the clap definitions.
fn generate(what: &Generated) -> Outcome {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    match what {
        Generated::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "forwarder", &mut out)
        }
        Generated::Man => clap_mangen::Man::new(cmd)
            .render(&mut out)
            .map_err(|e| runtime("writing the man page", e))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Kafka's subcommands: the security options read (a password file), then the work.
/// `config`: `--config`, when given.
fn kafka_cmd(action: &KafkaAction, config: Option<&Path>) -> Outcome {
    match action {
        KafkaAction::Discover { bootstrap, first_port, client, nat_vms, script, client_args } => {
            let KafkaClientArgs { json, timeout, security: flags } = client_args;
            let security = flags.load("discover")?;
            if let Some(path) = config {
                if script.is_some() {
                    return Err(usage("--script writes the whole set-up: not with --config"));
                }
                // The file's text only: discover may run where its interfaces do not exist.
                let settings = config::load_unchecked(path).map_err(CliError::usage)?;
                // The default path is the one `rule add` finds by itself.
                let flag = (path != Path::new(config::DEFAULT_PATH)).then_some(path);
                return cli::kafka::discover_missing(&cli::kafka::DiscoverMissing {
                    settings: &settings,
                    config_flag: flag,
                    bootstrap: bootstrap.as_deref(),
                    first_port: *first_port,
                    client: *client,
                    nat_vms: *nat_vms,
                    json: *json,
                    timeout: *timeout,
                    security: (!flags.is_empty()).then_some(&security),
                });
            }
            let Some(bootstrap) = bootstrap else {
                return Err(usage(
                    "kafka discover needs --bootstrap HOST:PORT (or --config FILE with a [kafka] \
                     section)",
                ));
            };
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
        }
        KafkaAction::Check { via, produce, messages, message_size, client_args } => {
            let KafkaClientArgs { json, timeout, security } = client_args;
            let opts = kafka::check::Options {
                vias: via.clone(),
                security: security.load("check")?,
                timeout: *timeout,
                produce: produce.as_ref().map(|topic| kafka::check::ProduceOptions {
                    topic: topic.clone(),
                    messages: *messages,
                    message_size: *message_size,
                }),
            };
            cli::kafka::check(&opts, *json)
        }
    }
}

/// A wrong combination of arguments clap cannot see (exit 2).
fn usage(message: &str) -> CliError {
    CliError::usage(Message(message.to_string()))
}

/// A failure of `what` (exit 1), `e` kept as its source.
fn runtime(what: &str, e: impl Into<forwarder::error::BoxError>) -> CliError {
    CliError::runtime(forwarder::error::StepError::because(what, e))
}
