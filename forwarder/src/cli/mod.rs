//! What each command does and prints, apart from the argument parsing in `main.rs`: a
//! table or text for people, `--json` for scripts. Errors are [`CliError`]s, whose kind is
//! the exit code (2 usage or invalid config, 1 anything else).

pub mod args;
pub mod check_config;
pub mod daemon_requests;
pub mod downgrade;
pub mod drain;
pub mod error;
pub mod kafka;
pub mod ops;
pub mod output;
pub mod unload;

pub use error::CliError;

/// What every command returns: the process's exit code (the command printed its own
/// output, and an answer's error when the daemon gave one), or an error for `main` to
/// print with its sources and turn into 1 or 2.
pub type Outcome = Result<std::process::ExitCode, CliError>;
