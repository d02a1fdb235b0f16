//! The CLI commands that talk to the running daemon: a request over the control socket and
//! its answer printed (the tables are in `output`). Each returns the process exit code
//! (0 ok, or the daemon's for a refused request: 1 runtime failure, 2 usage / invalid
//! config), or the error of not reaching the daemon.

use super::{
    output::{self, message, stats_table},
    CliError, Outcome,
};
use crate::daemon::control::{self, Request, Response, RuleStatsRow};
use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

/// Sends `req`, decodes the answer as a `T` and prints it with `print` (or, with
/// `--json`, the daemon's JSON as it came).
pub fn request<T: serde::de::DeserializeOwned>(
    socket: &Path,
    req: &Request,
    as_json: bool,
    print: impl Fn(&T) -> String,
) -> Outcome {
    let resp = control::call(socket, req).map_err(CliError::runtime)?;
    if !resp.ok {
        return Ok(ExitCode::from(refused(&resp, as_json)));
    }
    let value: T = output::decode(req.name(), &resp.data)?;
    if as_json {
        output::print_json(&resp.data);
    } else {
        let text = print(&value);
        if !text.is_empty() {
            println!("{}", text.trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A request the daemon refused: its error on stderr (and the answer with `--json`); the
/// exit code it chose.
fn refused(resp: &Response, as_json: bool) -> u8 {
    eprintln!("error: {}", resp.error.as_deref().unwrap_or("unknown error"));
    if as_json {
        output::print_json(resp);
    }
    resp.exit_code.max(1)
}

/// A request whose answer is a message ("drained: ..."), printed as text.
pub fn command(socket: &Path, req: &Request) -> Outcome {
    request::<serde_json::Value>(socket, req, false, message)
}

/// `forwarder stats [--watch]`: with `--watch`, a refreshed table every `interval` (rates
/// from the difference), `count` times or until interrupted.
pub fn stats(
    socket: &Path,
    as_json: bool,
    watch: bool,
    interval: Duration,
    count: Option<u64>,
) -> Outcome {
    let mut prev: Option<(Vec<RuleStatsRow>, Instant)> = None;
    let mut n = 0u64;
    loop {
        let resp = control::call(socket, &Request::Stats).map_err(CliError::runtime)?;
        if !resp.ok {
            return Ok(ExitCode::from(refused(&resp, as_json)));
        }
        let rows: Vec<RuleStatsRow> = output::decode("stats", &resp.data)?;
        if as_json {
            output::print_json(&resp.data);
            if !watch {
                return Ok(ExitCode::SUCCESS);
            }
        } else {
            let rates = prev.as_ref().map(|(p, t)| (p.as_slice(), t.elapsed()));
            if watch {
                print!("\x1b[2J\x1b[H");
            }
            println!("{}", stats_table(&rows, rates).trim_end());
            prev = Some((rows, Instant::now()));
        }
        n += 1;
        if !watch || count.is_some_and(|c| n >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(interval);
    }
}
