//! `forwarder unload`: detach the program, remove the pins, put back the sysctls the
//! forwarder changed. Works without a running daemon (it may have been killed).

use crate::error::{Step, StepError};
use crate::{config::Locations, daemon::state, datapath::pins::Pins, host::sysctl};

/// Does the unload in this process; returns what was done, for the operator.
pub fn offline(settings: &Locations) -> Result<Vec<String>, StepError> {
    let mut done = Vec::new();
    let pins = Pins::new(&settings.pin_path);
    let removed = pins.remove_all().step("removing the pins")?;
    if removed.is_empty() {
        done.push(format!("nothing pinned in {}", pins.dir().display()));
    } else {
        done.push(format!(
            "removed {} pins from {} (program detached, tables freed)",
            removed.len(),
            pins.dir().display()
        ));
    }
    let path = state::path_for(&settings.control_socket);
    let st = state::State::load(&path).plain()?;
    for (file, e) in sysctl::restore(&st.sysctl_before) {
        done.push(format!("could not restore {file}: {e}"));
    }
    if !st.sysctl_before.is_empty() {
        let names: Vec<&str> = st.sysctl_before.keys().map(String::as_str).collect();
        done.push(format!("restored {}", names.join(", ")));
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => done.push(format!("could not remove {}: {e}", path.display())),
    }
    Ok(done)
}
