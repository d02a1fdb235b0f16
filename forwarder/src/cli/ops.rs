//! The host tools: `forwarder doctor` and `forwarder import-iptables`.

use super::{error::Message, CliError};
use crate::{
    config::Settings,
    daemon::control::{self, Request, Status},
    ops::{doctor, import_iptables},
};
use std::{process::ExitCode, time::Duration};

/// Exit 0 only when every check passed.
pub fn doctor(settings: &Settings, json: bool, timeout: Duration) -> super::Outcome {
    let status: Option<Status> = control::call(&settings.control_socket, &Request::Status)
        .ok()
        .filter(|r| r.ok)
        .and_then(|r| serde_json::from_value(r.data).ok());
    let input = doctor::Input { settings, status: status.as_ref(), netns_probe_timeout: timeout };
    let findings = doctor::run(&input);
    if json {
        super::output::print_json(&findings);
    } else {
        print!("{}", doctor::render(&findings));
    }
    if doctor::all_ok(&findings) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// Rules that could not be carried over are a failure (exit 1): the operator must look at
/// them.
pub fn import_iptables(file: &str, json: bool) -> super::Outcome {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let text = text.map_err(|e| CliError::usage(Message(format!("{file}: {e}"))))?;
    let conv = import_iptables::convert(&text);
    if json {
        super::output::print_json(&conv);
    } else {
        print!("{}", conv.to_toml());
    }
    for u in &conv.untranslated {
        eprintln!("{file}:{}: not translated: {} ({})", u.line, u.text, u.reason);
    }
    Ok(if conv.untranslated.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
