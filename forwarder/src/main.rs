//! The `forwarder` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage or invalid
//! configuration.

use anyhow::Context;
use clap::{Parser, Subcommand};
use forwarder::{config, daemon, plan::Plan};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "forwarder", version, about = "In-kernel TCP port forwarder for NAT VMs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Run {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Start even if a hostname target does not resolve (its rule waits until it does).
        #[arg(long)]
        allow_unresolved: bool,
    },
    /// Validate the configuration, resolve targets and print the effective rules.
    CheckConfig {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, allow_unresolved } => {
            let settings = match config::load(&config) {
                Ok(s) => s,
                Err(e) => return usage_error(e),
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return runtime_error(anyhow::Error::new(e).context("starting tokio")),
            };
            match rt.block_on(daemon::run(settings, daemon::RunOptions { allow_unresolved })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_error(e),
            }
        }
        Command::CheckConfig { config } => {
            let settings = match config::load(&config) {
                Ok(s) => s,
                Err(e) => return usage_error(e),
            };
            match Plan::build(&settings, false).context("resolving") {
                Ok(plan) => {
                    println!(
                        "interface {} mode {} snat {} ports {}-{}",
                        settings.interfaces.join(","),
                        settings.mode.name(),
                        plan.snat_addr,
                        plan.snat_ports.0,
                        plan.snat_ports.1
                    );
                    for r in &plan.rules {
                        let (a, p) =
                            r.target.expect("Plan::build(.., false) resolves every target");
                        println!("rule {:<20} listen {:<5} -> {a}:{p}", r.name, r.listen);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => usage_error(e),
            }
        }
    }
}

fn usage_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(2)
}

fn runtime_error(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(1)
}
