//! `forwarder kafka discover | check`: the Kafka client's work, printed as text or JSON.
//! With `discover --config`, only what that config lacks.

use super::{error::Message, CliError};
use crate::{
    config::Settings,
    kafka::{
        self,
        azure::{ClientSide, NatVms},
        coverage, Security,
    },
};
use std::{path::Path, process::ExitCode, time::Duration};

pub struct Discover<'a> {
    pub bootstrap: &'a str,
    pub first_port: u16,
    pub client: ClientSide,
    pub nat_vms: NatVms,
    pub script: Option<&'a Path>,
    pub json: bool,
    pub timeout: Duration,
    pub security: &'a Security,
}

pub fn discover(d: &Discover) -> super::Outcome {
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
    let setup = kafka::azure::setup_with(&plan, d.client, d.nat_vms, &security);
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
    Ok(ExitCode::SUCCESS)
}

/// `kafka discover --config`: the cluster of `bootstrap` (else the config's `[kafka]`)
/// against the config's rules; only the missing rules and Azure resources are printed.
pub struct DiscoverMissing<'a> {
    pub settings: &'a Settings,
    /// `--config` as given, for the `rule add` commands; `None` when it is the default.
    pub config_flag: Option<&'a Path>,
    /// `--bootstrap`, which takes the place of `[kafka].bootstrap`.
    pub bootstrap: Option<&'a str>,
    /// `--first-port`: where the new rules' ports start (default: above the highest rule's).
    pub first_port: Option<u16>,
    pub client: ClientSide,
    /// `--nat-vms`: the Azure commands are the same for both (see `azure::additions`).
    pub nat_vms: NatVms,
    pub json: bool,
    pub timeout: Duration,
    /// The flags' security; `None`: the config's `[kafka]` settings.
    pub security: Option<&'a Security>,
}

pub fn discover_missing(d: &DiscoverMissing) -> super::Outcome {
    let s = d.settings;
    let path = s.path.display();
    let from_config = s.kafka.as_ref();
    let bootstraps: Vec<String> = match (d.bootstrap, from_config) {
        (Some(b), _) => vec![b.to_string()],
        (None, Some(k)) => k.bootstrap.clone(),
        (None, None) => {
            let msg = format!("{path} has no [kafka] section: give the cluster with --bootstrap");
            return Err(CliError::usage(Message(msg)));
        }
    };
    let owned;
    let security = match (d.security, from_config) {
        (Some(flags), _) => flags,
        (None, Some(k)) => {
            owned = k.security().map_err(|e| {
                CliError::usage(Message(format!("{path}: [kafka]: {}", crate::error::chain(&e))))
            })?;
            &owned
        }
        (None, None) => {
            owned = Security::default();
            &owned
        }
    };
    let (bootstrap, meta) = kafka::discover::fetch_first(&bootstraps, security, d.timeout)
        .map_err(CliError::runtime)?;
    let coverage = crate::plan::kafka_coverage(s, &meta.brokers);
    let port = |p: u16| s.listen_port_taken(p);
    let taken =
        coverage::Taken { names: s.rules.iter().map(|r| r.name.as_str()).collect(), port: &port };
    let first_port = d.first_port.unwrap_or_else(|| s.next_listen_port());
    let plan = coverage::plan_missing(&bootstrap, &meta, &coverage, &taken, first_port)
        .map_err(|e| CliError::runtime(Message(format!("{bootstrap}: {e}"))))?;
    let setup = kafka::azure::additions(&plan, d.client, d.nat_vms);
    if d.json {
        let v =
            kafka::render_missing::missing_json(&s.path, d.config_flag, &coverage, &plan, &setup);
        super::output::print_json(&v);
    } else {
        let text =
            kafka::render_missing::missing_text(&s.path, d.config_flag, &coverage, &plan, &setup);
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 only if every broker works.
pub fn check(opts: &kafka::check::Options, json: bool) -> super::Outcome {
    let report = kafka::check::run(opts);
    if json {
        super::output::print_json(&report);
    } else {
        print!("{}", kafka::render::check_text(&report));
    }
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// An executable script (0755).
fn write_script(path: &Path, text: &str) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| CliError::runtime(Message(format!("writing {}: {e}", path.display()))))
}
