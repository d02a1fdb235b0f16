//! The library's error for a step of a longer job (starting the daemon, unloading) that
//! failed because something under it failed: what was being done, and the cause kept as
//! its source, typed, so a caller can print the chain (`error: binding the control socket
//! /run/forwarder/control.sock: Permission denied`) or look at the cause; and [`chain`],
//! the one way such a chain is printed on a line.
//!
//! Every error of this crate follows that one style (Display says its own part, the cause
//! is the `source()`, [`chain`] prints the whole) but the Kafka client's (`kafka::error`):
//! those are `kafka check`'s report, one line per hop naming the likely cause and what to
//! do after the underlying error, which a chain (the cause last) cannot say. [`StepError`] is that style for a step
//! whose `what` is a sentence rather than a variant worth matching on, so a long job need
//! not grow an enum variant per step; a caller that matches on a cause gets a typed error.

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

    /// The errors that once wrote their cause into their own text keep it as their source
    /// now: the chain reads as their text did, and the cause is there to look at.
    #[test]
    fn errors_keep_their_cause_as_the_source_and_print_as_before() {
        use crate::{
            daemon::{control::ClientError, nexthop_watch::WatchError},
            datapath::handles::MapAccessError,
            host::{netif::NetifError, resolve::ResolveError},
            ops::doctor::DoctorError,
        };
        use aya::maps::MapError;
        use std::io;

        let enoent = || io::Error::from_raw_os_error(libc::ENOENT);
        let other = || io::Error::other("boom");
        const NOENT: &str = "No such file or directory (os error 2)";
        let map_enoent = || MapError::IoError(enoent());
        // (error, its chain, the cause's chain: what `source()` must be).
        let cases: Vec<(BoxError, String, String)> = vec![
            (
                MapAccessError::OpenPinned { path: "/x".into(), cause: map_enoent() }.into(),
                format!("opening the pinned map /x: {NOENT}"),
                NOENT.into(),
            ),
            (
                MapAccessError::Map("RULES", MapError::KeyNotFound).into(),
                "map RULES: key not found".into(),
                "key not found".into(),
            ),
            (
                MapAccessError::Batch("CT", other()).into(),
                "reading map CT in batches: boom".into(),
                "boom".into(),
            ),
            (
                MapAccessError::Cpus("STATS", other()).into(),
                "counting the CPUs for map STATS: boom".into(),
                "boom".into(),
            ),
            (
                ClientError::Connect { path: "/run/c.sock".into(), cause: enoent() }.into(),
                // The hint now comes before the cause, which ends the chain.
                format!(
                    "cannot reach the daemon at /run/c.sock (is `forwarder run` running?): {NOENT}"
                ),
                NOENT.into(),
            ),
            (ClientError::Io(other()).into(), "talking to the daemon: boom".into(), "boom".into()),
            (
                ClientError::Json(serde_json::from_str::<u8>("x").unwrap_err()).into(),
                "the daemon's answer is not valid: expected value at line 1 column 1".into(),
                "expected value at line 1 column 1".into(),
            ),
            (
                ResolveError::Thread(other()).into(),
                "starting the resolver: boom".into(),
                "boom".into(),
            ),
            (
                NetifError::Sys(nix::Error::EPERM).into(),
                "listing interfaces: EPERM: Operation not permitted".into(),
                "EPERM: Operation not permitted".into(),
            ),
            (
                WatchError::Socket(other()).into(),
                "opening the rtnetlink socket: boom".into(),
                "boom".into(),
            ),
            (
                DoctorError::Read { path: "/proc/x".into(), cause: enoent() }.into(),
                format!("reading /proc/x: {NOENT}"),
                NOENT.into(),
            ),
            (
                DoctorError::Spawn { cmd: "nft list ruleset".into(), cause: other() }.into(),
                "running nft list ruleset: boom".into(),
                "boom".into(),
            ),
            (
                DoctorError::Output {
                    cmd: "nft -j list ruleset".into(),
                    cause: serde_json::from_str::<u8>("x").unwrap_err(),
                }
                .into(),
                "reading the output of nft -j list ruleset: expected value at line 1 column 1"
                    .into(),
                "expected value at line 1 column 1".into(),
            ),
            (
                DoctorError::Ioctl { what: "MTU", iface: "eth0".into(), cause: other() }.into(),
                "MTU of eth0: boom".into(),
                "boom".into(),
            ),
        ];
        for (e, shown, cause) in &cases {
            assert_eq!(&chain(e.as_ref()), shown);
            let source = e.source().unwrap_or_else(|| panic!("no source: {shown}"));
            assert_eq!(&chain(source), cause, "{shown}");
        }
        // The cause is the typed error itself, for a caller to look at.
        let e = MapAccessError::OpenPinned { path: "/x".into(), cause: map_enoent() };
        let source = std::error::Error::source(&e).expect("a source");
        assert!(matches!(source.downcast_ref::<MapError>(), Some(MapError::IoError(_))));
        let e = NetifError::Sys(nix::Error::EPERM);
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.downcast_ref::<nix::Error>(), Some(&nix::Error::EPERM));

        // A syscall's errno sits one level further down, under aya's `SyscallError`: the
        // text that wrote only the first level in ended at "`BPF_OBJ_GET` failed".
        let syscall = aya::sys::SyscallError { call: "BPF_OBJ_GET", io_error: enoent() };
        let e = MapAccessError::OpenPinned { path: "/x".into(), cause: syscall.into() };
        assert_eq!(chain(&e), format!("opening the pinned map /x: `BPF_OBJ_GET` failed: {NOENT}"));
        // What getaddrinfo said is shown as itself; an error that wraps one goes on through it.
        assert_eq!(chain(&ResolveError::Lookup(other())), "boom");
        let plan = crate::plan::PlanError::Netif(NetifError::Sys(nix::Error::EPERM));
        assert_eq!(chain(&plan), "listing interfaces: EPERM: Operation not permitted");
    }
}
