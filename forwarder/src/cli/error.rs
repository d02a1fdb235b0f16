//! How a command fails: the exit code says whose fault it is (2: the invocation or the
//! config file, 1: the world), the error keeps its sources for the message.

use std::process::ExitCode;

pub type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A wrong argument or an invalid config file: exit 2.
    #[error(transparent)]
    Usage(Source),
    /// Anything else that went wrong: exit 1.
    #[error(transparent)]
    Runtime(Source),
    /// Already printed where it happened (clap's own formatting of a usage error): exit
    /// with this code and print nothing more.
    #[error("exit {0}")]
    Reported(u8),
}

impl CliError {
    pub fn usage(e: impl Into<Source>) -> Self {
        CliError::Usage(e.into())
    }

    pub fn runtime(e: impl Into<Source>) -> Self {
        CliError::Runtime(e.into())
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Runtime(_) => ExitCode::from(1),
            CliError::Reported(code) => ExitCode::from(*code),
        }
    }

    /// The error and its sources, outermost first, as `error: a: b: c`.
    pub fn report(&self) -> String {
        // `transparent`: Display is the inner error's, source() continues with its sources.
        format!("error: {}", crate::error::chain(self))
    }
}

/// A message with no source of its own, for [`CliError`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Message(pub String);

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("resolving")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_report_names_every_source_and_the_code_the_kind() {
        let e = CliError::usage(Outer(std::io::Error::other("no such host")));
        assert_eq!(e.report(), "error: resolving: no such host");
        assert_eq!(e.exit_code(), ExitCode::from(2));
        let e = CliError::runtime(Message("the daemon did not stop".into()));
        assert_eq!(e.report(), "error: the daemon did not stop");
        assert_eq!(e.exit_code(), ExitCode::from(1));
    }
}
