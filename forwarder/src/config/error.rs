//! The config layer's error: [`ConfigError`], what `parse`, `load` and `check_host` return.
//! It names the file, line, column and field (the places come from `spans.rs`). Most are
//! the file's own mistakes ("expected ...; found ...") and are only a message. When
//! something under a check failed instead (reading the file, the TOML parser, listing the
//! host's addresses), that failure is kept, typed, as the source ([`ConfigCause`]) and the
//! message says only what was being done. Display is the place, the field and the message;
//! print the chain (`crate::error::chain`, as the CLI and the daemon's answers do) to show
//! the cause after it: `FILE:0:0: -: cannot read the file: No such file or directory (os
//! error 2)`.

use crate::{error::chain, host::netif::NetifError, kafka::SetupError};
use std::{io, sync::Arc};
use toml_edit::TomlError;

/// A configuration error with its place in the file, and the failure under it if there is
/// one. Display is the place, the field and the message; the cause is the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    /// What was expected and found; with a `cause`, what was being done when it failed.
    pub message: String,
    #[source]
    pub cause: Option<ConfigCause>,
}

/// What failed under a [`ConfigError`] that is not a mistake in the file. Clone and
/// PartialEq for the error's sake (the fuzz target compares results): the I/O errors are
/// shared (`Arc`) and compare by kind and text. Every variant is one pointer, so that the
/// `Result`s of every check stay small.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigCause {
    /// Reading the file.
    #[error(transparent)]
    Read(Arc<io::Error>),
    /// The TOML parser. Shown as its message on one line (its own Display adds the text
    /// around the place over several lines, which the error's place already gives); the
    /// parser's error itself is the field.
    #[error("{}", one_line(.0))]
    Toml(Box<TomlError>),
    /// Listing this host's addresses, for the checks against them.
    #[error(transparent)]
    HostAddresses(Arc<NetifError>),
    /// Reading a file `[kafka]` names (CA, client certificate or key, password).
    #[error(transparent)]
    Kafka(Arc<SetupError>),
}

/// The TOML parser's message, its lines joined with "; ".
fn one_line(e: &TomlError) -> String {
    let lines: Vec<&str> = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("; ")
}

impl PartialEq for ConfigCause {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Read(a), Self::Read(b)) => {
                a.kind() == b.kind() && a.to_string() == b.to_string()
            }
            (Self::Toml(a), Self::Toml(b)) => a == b,
            (Self::HostAddresses(a), Self::HostAddresses(b)) => chain(a) == chain(b),
            (Self::Kafka(a), Self::Kafka(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

impl Eq for ConfigCause {}

impl ConfigError {
    /// The error with `cause` as the failure under it.
    pub(super) fn because(self, cause: ConfigCause) -> Self {
        ConfigError { cause: Some(cause), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::ConfigCause;
    use crate::config::test_text::{err, BASE};

    #[test]
    fn a_syntax_error_keeps_the_parser_error_as_its_source() {
        let text = format!("{BASE}mode = \"auto\n");
        let e = err(&text);
        let parser = toml_edit::ImDocument::parse(text.as_str()).unwrap_err();
        assert_eq!(e.cause, Some(ConfigCause::Toml(Box::new(parser))));
        assert_eq!(e.to_string(), "f.toml:2:13: mode: invalid TOML");
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.downcast_ref::<ConfigCause>().is_some(), "{source:?}");
        // What the CLI prints, as it read when the parser's message was in `message`.
        let shown = crate::error::chain(&e);
        assert_eq!(shown, "f.toml:2:13: mode: invalid TOML: invalid basic string");
        // A mistake in the file has nothing under it.
        assert_eq!(err("interface = 5\n").cause, None);
    }
}
