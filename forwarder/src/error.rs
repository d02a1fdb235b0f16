//! The library's error for a step of a longer job (starting the daemon, unloading) that
//! failed because something under it failed: what was being done, and the cause kept as
//! its source, typed, so a caller can print the chain (`error: binding the control socket
//! /run/forwarder/control.sock: Permission denied`) or look at the cause; and [`chain`],
//! the one way such a chain is printed on a line.

use std::fmt;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its sources, outermost first, as one line: `a: b: c`. The way this crate's
/// errors are shown where only text can go (the CLI's `error:` line, the control socket's
/// answer): each error's Display says its own part and leaves the rest to its source.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[derive(Debug)]
pub struct StepError {
    /// What was being done; `None` when the cause says it all (the error is then shown as
    /// its cause, as if it were that error).
    what: Option<String>,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Error(BoxError),
    /// A failure with nothing under it.
    None,
}

impl StepError {
    /// A failure with no cause under it.
    pub fn msg(what: impl Into<String>) -> Self {
        StepError { what: Some(what.into()), cause: Cause::None }
    }

    /// `cause`, shown as itself.
    pub fn of(cause: impl Into<BoxError>) -> Self {
        StepError { what: None, cause: Cause::Error(cause.into()) }
    }

    /// `what` failed because of `cause`.
    pub fn because(what: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        StepError { what: Some(what.into()), cause: Cause::Error(cause.into()) }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.what, &self.cause) {
            (Some(w), _) => f.write_str(w),
            (None, Cause::Error(e)) => write!(f, "{e}"),
            (None, Cause::None) => f.write_str("failed"),
        }
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match (&self.what, &self.cause) {
            (Some(_), Cause::Error(e)) => Some(e.as_ref()),
            // Shown as its cause: what comes after it is the cause's own source.
            (None, Cause::Error(e)) => e.source(),
            (_, Cause::None) => None,
        }
    }
}

/// `.step("what")` on a result: its error becomes the cause of a [`StepError`].
pub trait Step<T> {
    fn step(self, what: &str) -> Result<T, StepError>;
    fn step_with(self, what: impl FnOnce() -> String) -> Result<T, StepError>;
    /// The error as it is, typed as a [`StepError`].
    fn plain(self) -> Result<T, StepError>;
}

impl<T, E: Into<BoxError>> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, StepError> {
        self.map_err(|e| StepError::because(what, e))
    }

    fn step_with(self, what: impl FnOnce() -> String) -> Result<T, StepError> {
        self.map_err(|e| StepError::because(what(), e))
    }

    fn plain(self) -> Result<T, StepError> {
        self.map_err(StepError::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_reads_as_before() {
        let io = || std::io::Error::other("Permission denied");
        let r: Result<(), _> = Err(io());
        let e = r.step("binding the control socket /run/x").unwrap_err();
        assert_eq!(chain(&e), "binding the control socket /run/x: Permission denied");
        let outer = StepError::because("missing capability CAP_BPF", e);
        assert_eq!(
            chain(&outer),
            "missing capability CAP_BPF: binding the control socket /run/x: Permission denied"
        );
        let plain: Result<(), StepError> = Err::<(), _>(io()).plain();
        assert_eq!(chain(&plain.unwrap_err()), "Permission denied");
        assert_eq!(
            chain(&StepError::msg("another forwarder is running")),
            "another forwarder is running"
        );
    }
}
