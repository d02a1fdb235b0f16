//! `forwarder drain --wait`: drain, then wait until the load balancer has taken this VM out
//! of its pool, the step a rolling upgrade waits for before it restarts anything.
//!
//! Once drained the health endpoint is closed, so this VM cannot see the probes fail. What
//! it can see is their effect: the load balancer marks a backend down after
//! `--probe-threshold` failed probes `--probe-interval` apart, and from then on sends it no
//! new flow. So the wait ends when both hold: that long has passed since the drain, and no
//! new connection arrived for one probe interval. Connections already here go on (they are
//! kept across the upgrade too).

use super::{error::Message, CliError, Outcome};
use crate::daemon::control::{self, Request, RuleStatsRow};
use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

pub struct Wait {
    pub probe_interval: Duration,
    pub probe_threshold: u32,
    pub timeout: Duration,
}

pub fn run(socket: &Path, wait: Option<&Wait>) -> Outcome {
    let drained = super::daemon_requests::command(socket, &Request::Drain)?;
    let Some(wait) = wait else { return Ok(drained) };
    if drained != ExitCode::SUCCESS {
        return Ok(drained);
    }
    let started = Instant::now();
    let marked_down = wait.probe_interval * wait.probe_threshold;
    let mut last = (new_connections(socket)?, Instant::now());
    println!(
        "waiting for the load balancer to take this VM out: {} probes {:?} apart, then {:?} \
         without a new connection (at most {:?})",
        wait.probe_threshold, wait.probe_interval, wait.probe_interval, wait.timeout
    );
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = new_connections(socket)?;
        if now != last.0 {
            last = (now, Instant::now());
        }
        let quiet = last.1.elapsed();
        if started.elapsed() >= marked_down && quiet >= wait.probe_interval {
            println!(
                "out of the pool: no new connection for {:.1?}, {:.1?} after the drain",
                quiet,
                started.elapsed()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() >= wait.timeout {
            return Err(CliError::runtime(Message(format!(
                "new connections still arrive {:.1?} after the drain (the last {:.1?} ago): is \
                 the health probe on this VM's `health` address, and the load balancer's only \
                 way in? The VM stays drained (`forwarder undrain`)",
                started.elapsed(),
                quiet
            ))));
        }
    }
}

/// New connections over all rules so far.
fn new_connections(socket: &Path) -> Result<u64, CliError> {
    let resp = control::call(socket, &Request::Stats).map_err(CliError::runtime)?;
    if !resp.ok {
        return Err(CliError::runtime(Message(resp.error.unwrap_or_default())));
    }
    let rows: Vec<RuleStatsRow> = super::output::decode("stats", &resp.data)?;
    Ok(rows.iter().map(|r| r.counters.get("new_conns").copied().unwrap_or(0)).sum())
}
