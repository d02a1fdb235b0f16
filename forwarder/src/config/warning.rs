//! What a file may say but probably should not: it loads, `check-config` prints it, and the
//! daemon logs it when it starts and at every change, at the place an error would name.

use super::ConfigError;

/// A setting that loads but is likely a mistake, with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {message}")]
pub struct ConfigWarning {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl ConfigWarning {
    /// The place and message of `e` (built by the same span arithmetic as an error), as a
    /// warning. Only errors of the file's own text are turned into warnings: they have no
    /// cause.
    pub(super) fn at(e: ConfigError) -> ConfigWarning {
        debug_assert!(e.cause.is_none(), "a warning is about the text, not a failure under it");
        ConfigWarning {
            file: e.file,
            line: e.line,
            column: e.column,
            field: e.field,
            message: e.message,
        }
    }
}
