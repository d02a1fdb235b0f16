//! The control socket's and the pins' places, read from the config file as leniently as
//! possible (the CLI's way to the daemon when the file does not validate).

use super::{Settings, DEFAULT_CONTROL_SOCKET, DEFAULT_PIN_PATH};
use std::path::{Path, PathBuf};

/// Where a running forwarder keeps its control socket and pins, read from the config file
/// as leniently as possible: the CLI must reach the daemon (to reload, unload, look) even
/// while the file has an error in some other place.
#[derive(Debug, Clone)]
pub struct Locations {
    pub control_socket: PathBuf,
    pub pin_path: PathBuf,
}

impl Locations {
    pub fn of(settings: &Settings) -> Self {
        Self {
            control_socket: settings.control_socket.clone(),
            pin_path: settings.pin_path.clone(),
        }
    }

    /// The two paths from the file; a path that cannot be read falls back to the default.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let doc = text.parse::<toml_edit::DocumentMut>().ok();
        let get = |key: &str, default: &str| {
            let value = match &doc {
                Some(d) => d.get(key).and_then(|v| v.as_str()).map(str::to_string),
                // A file TOML cannot read at all: take the key's line as written.
                None => text.lines().find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
                }),
            };
            value
                .filter(|s| s.starts_with('/'))
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        Self {
            control_socket: get("control_socket", DEFAULT_CONTROL_SOCKET),
            pin_path: get("pin_path", DEFAULT_PIN_PATH),
        }
    }
}
