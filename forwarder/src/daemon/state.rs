//! What the daemon keeps between its runs, next to the control socket (`state.json`): the
//! sysctl values to put back on unload, the rule ids (conntrack entries and counters refer
//! to rules by id, so a rule keeps its id across reloads and restarts), and the drain.

use crate::host::sysctl;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub sysctl_before: sysctl::Before,
    #[serde(default)]
    pub rule_ids: BTreeMap<String, u16>,
    /// Seconds since the Unix epoch; set while drained.
    #[serde(default)]
    pub drained_since: Option<u64>,
    /// The Azure scheduled event the drain is for, when the daemon drained for one
    /// (`daemon::azure_events`); `None` for an operator's drain. Kept here, not in the
    /// task, so a restarted daemon still lifts the drain when the event goes, and never an
    /// operator's.
    #[serde(default)]
    pub drained_for_event: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {message}")]
pub struct StateError {
    pub path: String,
    pub message: String,
}

/// The state file that belongs to a control socket.
pub fn path_for(control_socket: &Path) -> PathBuf {
    control_socket.parent().unwrap_or(Path::new("/")).join("state.json")
}

/// Whose drain the VM is under.
#[derive(Debug, Clone, PartialEq)]
pub enum Drain {
    Off,
    /// `forwarder drain`.
    Operator,
    /// The daemon's, for this Azure scheduled event (`daemon::azure_events`).
    Event(String),
}

impl State {
    pub fn drain(&self) -> Drain {
        match (&self.drained_since, &self.drained_for_event) {
            (None, _) => Drain::Off,
            (Some(_), None) => Drain::Operator,
            (Some(_), Some(id)) => Drain::Event(id.clone()),
        }
    }

    /// Why the VM is drained, for the health probe's reason and `status`; `None` when it
    /// is not.
    pub fn drain_reason(&self) -> Option<String> {
        match self.drain() {
            Drain::Off => None,
            Drain::Operator => Some("drained (forwarder drain)".into()),
            Drain::Event(id) => Some(format!(
                "drained for Azure scheduled event {id} (lifted when the event goes; \
                 forwarder undrain lifts it now)"
            )),
        }
    }

    /// The saved state, or an empty one if there is none.
    pub fn load(path: &Path) -> Result<State, StateError> {
        let err = |message: String| StateError { path: path.display().to_string(), message };
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes the state whole (`file_replace`: temporary file, synced, renamed), so a
    /// crash never leaves half.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |message: String| StateError { path: path.display().to_string(), message };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        crate::config::file_replace::write_whole(path, &text, 0o600)
            .map_err(|e| err(crate::error::chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_state_loads_back_whole_and_only_root_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("run/control.sock"));
        assert!(State::load(&path).unwrap().rule_ids.is_empty(), "no file: an empty state");
        let mut state = State {
            drained_since: Some(1_700_000_000),
            drained_for_event: Some("C7061BAC".into()),
            ..State::default()
        };
        state.rule_ids.insert("broker-1".into(), 0);
        state.rule_ids.insert("broker-2".into(), 7);
        state.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        state.rule_ids.insert("broker-3".into(), 2);
        state.save(&path).unwrap();
        let back = State::load(&path).unwrap();
        assert_eq!(back.rule_ids, state.rule_ids);
        assert_eq!(back.drained_since, state.drained_since);
        assert_eq!(back.drained_for_event, state.drained_for_event);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");
        fs::write(&path, "{ not json").unwrap();
        let e = State::load(&path).unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
    }

    #[test]
    fn the_drain_says_whose_it_is() {
        assert_eq!(State::default().drain_reason(), None);
        let operator = State { drained_since: Some(1), ..State::default() };
        assert_eq!(operator.drain_reason().unwrap(), "drained (forwarder drain)");
        let event = State { drained_for_event: Some("E1".into()), ..operator };
        assert!(event.drain_reason().unwrap().starts_with("drained for Azure scheduled event E1"));
    }
}
