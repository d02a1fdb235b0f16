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

impl State {
    /// The saved state, or an empty one if there is none.
    pub fn load(path: &Path) -> Result<State, StateError> {
        let err = |message: String| StateError { path: path.display().to_string(), message };
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes the state whole (temporary file, then rename), so a crash never leaves half.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |message: String| StateError { path: path.display().to_string(), message };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }
}
