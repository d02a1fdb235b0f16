//! The soak's rule changes, beside the rules the load uses (as faults.rs makes them, spread
//! over the whole run): every RULE_EVERY a `rule add` of another rule (listen EXTRA_PORT, to
//! broker 3), every CHECK_EVERY-th time a connection through it, then `rule remove`; every
//! RELOAD_EVERY-th cycle a `reload` of the file with another mss_clamp, or back. The file
//! ends as the daemon started with it.

use super::{bed::Bed, Tally};
use crate::{
    daemon_tests::listen,
    topology::{cli, BROKERS, BROKER_PORT},
    traffic::{connect, exchange},
};
use anyhow::{ensure, Result};
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

const RULE_EVERY: Duration = Duration::from_secs(1);
const CHECK_EVERY: u64 = 5;
const RELOAD_EVERY: u64 = 10;
/// The port of the rules added and removed.
pub const EXTRA_PORT: u16 = 9100;

/// Cycles until `stop` or `until`; every command or check counts in `tally`.
pub fn run(bed: &Bed, stop: &AtomicBool, until: Instant, tally: &Tally) {
    let cycles = until.saturating_duration_since(Instant::now()).as_secs() + 1;
    for i in 0..cycles {
        if stop.load(Ordering::Relaxed) || Instant::now() >= until {
            break;
        }
        let started = Instant::now();
        let name = format!("soak-extra-{i}");
        let target = format!("{}:{BROKER_PORT}", BROKERS[2]);
        let port = EXTRA_PORT.to_string();
        let add = ["rule", "add", &name, "--listen", &port, "--target", &target];
        tally.record(command(bed, &add));
        if i.is_multiple_of(CHECK_EVERY) {
            tally.record(through_extra(bed, i));
        }
        tally.record(command(bed, &["rule", "remove", &name]));
        if i % RELOAD_EVERY == RELOAD_EVERY - 1 {
            let mss = if (i / RELOAD_EVERY).is_multiple_of(2) { "1300" } else { "1360" };
            tally.record(reload(
                bed,
                &bed.base_config.replace("mss_clamp = 1360", &format!("mss_clamp = {mss}")),
            ));
        }
        std::thread::sleep(RULE_EVERY.saturating_sub(started.elapsed()));
    }
    tally.record(reload(bed, &bed.base_config));
}

fn command(bed: &Bed, args: &[&str]) -> Result<()> {
    let out = cli(&bed.topo.natvm, bed.config(), args)?;
    ensure!(
        out.status.success(),
        "forwarder {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn reload(bed: &Bed, text: &str) -> Result<()> {
    std::fs::write(bed.config(), text)?;
    command(bed, &["reload"])
}

/// A connection through the rule just added reaches its target.
fn through_extra(bed: &Bed, seed: u64) -> Result<()> {
    let ex = exchange(connect(&bed.topo.client, listen(EXTRA_PORT))?, 4096, seed)?;
    ensure!(ex.reached == BROKERS[2], "the added rule reached {}", ex.reached);
    Ok(())
}
