//! `forwarder downgrade-check VERSION`: what the .deb's prerm asks before the package is
//! replaced by VERSION. Installing an older release whose map layout differs would leave
//! its daemon refusing this build's pins (the VM out of the load balancer's pool) or,
//! unloaded, drop every tracked connection: refused, saying what would be lost, unless
//! FORWARDER_FORCE_DOWNGRADE=1, which unloads first so the older daemon starts afresh.

use super::{error::Message, CliError};
use crate::{
    config::Locations,
    datapath::{migrate, pins::Pins},
};
use forwarder_common::LAYOUT_VERSION;

/// The environment variable that lets a downgrade drop the tracked connections.
pub const FORCE_ENV: &str = "FORWARDER_FORCE_DOWNGRADE";

pub fn run(loc: &Locations, version: &str) -> super::Outcome {
    if !migrate::is_older(version) {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let layout = migrate::release_layout(version);
    if layout == Some(LAYOUT_VERSION) {
        println!(
            "forwarder {version} uses this build's map layout ({LAYOUT_VERSION}): nothing is lost"
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let pins = Pins::new(&loc.pin_path);
    if !pins.exist() {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let (flows, handshakes) = pins.tracked().map_err(CliError::runtime)?;
    let theirs = layout.map_or("an unknown map layout".to_string(), |l| format!("map layout {l}"));
    let loss = format!(
        "forwarder {version} ({theirs}) cannot read the maps this build (layout \
         {LAYOUT_VERSION}) pinned in {}: it would drop the {flows} established connection(s) \
         and {handshakes} handshake(s) tracked now, and the per-rule counters",
        pins.dir().display()
    );
    if std::env::var(FORCE_ENV).is_ok_and(|v| v == "1") {
        println!("{loss}; {FORCE_ENV}=1: unloading");
        return super::unload::run(loc);
    }
    Err(CliError::runtime(Message(format!(
        "{loss}. The downgrade is refused and nothing was changed. To go on anyway: \
         {FORCE_ENV}=1 dpkg -i (or apt install) the older package"
    ))))
}
