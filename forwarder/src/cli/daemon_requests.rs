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

/// Sends `req` and prints the answer with `print` (or as JSON).
pub fn request(
    socket: &Path,
    req: &Request,
    as_json: bool,
    print: impl Fn(&serde_json::Value) -> String,
) -> Outcome {
    let resp = control::call(socket, req).map_err(CliError::runtime)?;
    Ok(ExitCode::from(output(&resp, as_json, print)))
}

fn output(resp: &Response, as_json: bool, print: impl Fn(&serde_json::Value) -> String) -> u8 {
    if !resp.ok {
        eprintln!("error: {}", resp.error.as_deref().unwrap_or("unknown error"));
        if as_json {
            output::print_json(resp);
        }
        return resp.exit_code.max(1);
    }
    output::print(as_json, &resp.data, print);
    0
}

/// A request whose answer is a message ("drained: ..."), printed as text.
pub fn command(socket: &Path, req: &Request) -> Outcome {
    request(socket, req, false, message)
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
        if !resp.ok || as_json {
            let code = output(&resp, as_json, message);
            if code != 0 || !watch {
                return Ok(ExitCode::from(code));
            }
        } else {
            let rows: Vec<RuleStatsRow> = output::parse(&resp.data).unwrap_or_default();
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
