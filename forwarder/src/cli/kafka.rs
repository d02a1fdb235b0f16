//! `forwarder kafka discover | check`: the Kafka client's work, printed as text or JSON.

use super::{error::Message, CliError};
use crate::kafka::{self, azure::ClientSide, Security};
use std::{path::Path, time::Duration};

pub struct Discover<'a> {
    pub bootstrap: &'a str,
    pub first_port: u16,
    pub client: ClientSide,
    pub script: Option<&'a Path>,
    pub json: bool,
    pub timeout: Duration,
    pub security: &'a Security,
}

pub fn discover(d: &Discover) -> Result<(), CliError> {
    let meta =
        kafka::discover::fetch(d.bootstrap, d.security, d.timeout).map_err(CliError::runtime)?;
    let plan = kafka::discover::plan(d.bootstrap, &meta, d.first_port).map_err(|e| {
        if e.is_usage() {
            CliError::usage(e)
        } else {
            CliError::runtime(Message(format!("{}: {e}", d.bootstrap)))
        }
    })?;
    let security = kafka::azure::ClientSecurity::of(d.security);
    let setup = kafka::azure::setup_with(&plan, d.client, &security);
    if let Some(path) = d.script {
        write_script(path, &kafka::azure::script(&setup, d.bootstrap))?;
        eprintln!("wrote {}", path.display());
    }
    if d.json {
        let v = kafka::render::discover_json(&plan, &setup);
        super::output::print_json(&v);
    } else {
        print!("{}", kafka::render::discover_text(&plan, &setup));
    }
    Ok(())
}

/// Exit 0 only if every broker works.
pub fn check(opts: &kafka::check::Options, json: bool) -> u8 {
    let report = kafka::check::run(opts);
    if json {
        super::output::print_json(&report);
    } else {
        print!("{}", kafka::render::check_text(&report));
    }
    if report.ok {
        0
    } else {
        1
    }
}

/// An executable script (0755).
fn write_script(path: &Path, text: &str) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| CliError::runtime(Message(format!("writing {}: {e}", path.display()))))
}
