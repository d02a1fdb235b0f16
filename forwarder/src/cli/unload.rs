//! `forwarder unload`: through the daemon when one runs (it stops after unloading), by
//! hand otherwise.

use super::{error::Message, CliError};
use crate::{
    config::Locations,
    daemon::{
        control::{self, Request},
        unload,
    },
};
use std::{process::ExitCode, time::Duration};

pub fn run(settings: &Locations) -> super::Outcome {
    // A daemon that answers: its pid, from its status as this build decodes it.
    let pid = control::call(&settings.control_socket, &Request::Status)
        .ok()
        .filter(|r| r.ok)
        .map(|r| super::output::decode::<control::Status>("status", &r.data))
        .transpose()?
        .map(|s| u64::from(s.pid));
    if let Some(pid) = pid {
        if control::call(&settings.control_socket, &Request::Unload).is_ok_and(|r| r.ok) {
            // The daemon unloads as it exits; it is done when it is gone.
            for _ in 0..200 {
                if !process_running(pid) {
                    println!("unloaded by the daemon (pid {pid}), which has stopped");
                    return Ok(ExitCode::SUCCESS);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return Err(CliError::runtime(Message(format!(
                "the daemon (pid {pid}) did not stop within 10 s"
            ))));
        }
    }
    for line in unload::offline(settings).map_err(CliError::runtime)? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `pid` is a live process. A zombie has exited (its fds, and with them the program
/// and maps it held, are closed) and only waits for its parent to reap it, which a
/// supervisor other than systemd may do late.
fn process_running(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')' (comm may hold one).
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
