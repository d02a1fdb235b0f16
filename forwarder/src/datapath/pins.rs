//! What lives in bpffs under `pin_path`, so that forwarding survives the daemon: every map
//! (the conntrack tables above all) and one link per interface. A new daemon re-opens the
//! maps and swaps its program into the pinned links atomically (`bpf_link_update`).
//!
//! Layout of the directory:
//! - one file per map, named as in `forwarder_common::map_names`;
//! - `link_<mode>_<interface>`: the program's attachment to an interface in that mode.

use crate::datapath::Attached;
use aya::maps::MapData;
use forwarder_common::{map_names, Config, CtEntry, FlowKey, Rule, LAYOUT_VERSION};
use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Every map of the program, with the key and value sizes this build expects.
const MAPS: [(&str, usize, usize); 9] = [
    (map_names::CONFIG, 4, size_of::<Config>()),
    (map_names::RULES, 2, size_of::<Rule>()),
    (map_names::LISTEN_ADDRS, 4, 1),
    // LPM trie keys are a 4-byte prefix length followed by the data.
    (map_names::ALLOWED_SOURCES, 8, 1),
    (map_names::CT_EMBRYONIC, size_of::<FlowKey>(), size_of::<CtEntry>()),
    (map_names::CT_ESTABLISHED, size_of::<FlowKey>(), size_of::<CtEntry>()),
    (map_names::RULE_STATS, 4, size_of::<forwarder_common::RuleStats>()),
    (map_names::NEXTHOP_GEN, 4, 4),
    (map_names::CT_COUNT, 4, 8),
];

pub const ALL_MAPS: [&str; 9] = {
    let mut names = [""; 9];
    let mut i = 0;
    while i < MAPS.len() {
        names[i] = MAPS[i].0;
        i += 1;
    }
    names
};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "the pinned maps in {dir} were made by an incompatible build ({what}); this build \
         uses layout version {LAYOUT_VERSION}. Run `forwarder unload` with the build that \
         made them (or remove {dir}) -- that drops the tracked connections"
    )]
    Incompatible { dir: String, what: String },
    /// A build older than the pins' (a downgrade): starting would drop what they track.
    #[error(
        "the pinned maps in {dir} were made by a newer build (layout version {version}; this \
         build reads layouts up to {LAYOUT_VERSION}). Starting would drop the {flows} \
         established connection(s) and {handshakes} handshake(s) they track, and the \
         per-rule counters. Run the newer build, or start with --force-downgrade to drop them"
    )]
    Newer { dir: String, version: u32, flows: usize, handshakes: usize },
    #[error("reading pinned map {path}")]
    Map {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not on a bpffs mount (mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs(String),
}

/// What a pin directory holds, to this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    Nothing,
    /// This layout's maps; `max_flows` once configured.
    Current {
        max_flows: Option<u32>,
    },
    /// The previous layout's maps: an upgrade copies them (`datapath::migrate`).
    Previous {
        version: u32,
        max_flows: u32,
    },
}

/// The pin directory of one forwarder instance.
#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link(&self, iface: &str, how: Attached) -> PathBuf {
        self.dir.join(format!("link_{}_{iface}", how.name()))
    }

    /// Whether a previous daemon left forwarding state here.
    pub fn exist(&self) -> bool {
        self.map(map_names::CONFIG).exists()
    }

    /// Creates the directory; it must be on a bpffs for pins to work.
    pub fn create_dir(&self) -> Result<(), PinError> {
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) {
            return Err(PinError::NotBpffs(parent.display().to_string()));
        }
        fs::create_dir_all(&self.dir).map_err(|source| PinError::Io {
            action: "creating",
            path: self.dir.display().to_string(),
            source,
        })
    }

    /// Creates the directory inside an existing pin directory (an upgrade's staging).
    pub fn create_subdir(&self) -> Result<(), PinError> {
        fs::create_dir(&self.dir).map_err(|source| PinError::Io {
            action: "creating",
            path: self.dir.display().to_string(),
            source,
        })
    }

    /// The pinned link of `iface`, if any, and the mode it was attached in.
    pub fn find_link(&self, iface: &str) -> Option<(Attached, PathBuf)> {
        [Attached::XdpDriver, Attached::XdpGeneric, Attached::Tc]
            .into_iter()
            .map(|how| (how, self.link(iface, how)))
            .find(|(_, p)| p.exists())
    }

    /// What the pinned maps are to this build: none, this layout's, or the previous
    /// layout's (an upgrade copies those). Refuses what it cannot read or write correctly:
    /// an older layout, a map missing or of another type, a key or value size that
    /// differs; and a newer layout (a downgrade), saying what starting would lose.
    pub fn check_compatible(&self) -> Result<Pinned, PinError> {
        let dir = self.dir.display().to_string();
        let incompatible = |what: String| PinError::Incompatible { dir: dir.clone(), what };
        if !self.exist() {
            return Ok(Pinned::Nothing);
        }
        // The version first: it says more than any size that follows from it.
        let (version, max_flows) = pinned_config_head(&self.map(map_names::CONFIG))?;
        if version > LAYOUT_VERSION {
            let (flows, handshakes) = self.tracked()?;
            return Err(PinError::Newer { dir, version, flows, handshakes });
        }
        if version == crate::datapath::migrate::from_v2::VERSION {
            self.check_sizes(&crate::datapath::migrate::from_v2::MAPS)?;
            return Ok(Pinned::Previous { version, max_flows });
        }
        if version != 0 && version != LAYOUT_VERSION {
            return Err(incompatible(format!("layout version {version}")));
        }
        self.check_sizes(&MAPS)?;
        Ok(Pinned::Current { max_flows: (version != 0).then_some(max_flows) })
    }

    /// Refuses pins that are not `maps` (name, key size, value size) exactly.
    pub fn check_sizes(&self, maps: &[(&str, usize, usize)]) -> Result<(), PinError> {
        let dir = self.dir.display().to_string();
        let incompatible = |what: String| PinError::Incompatible { dir: dir.clone(), what };
        for &(name, key_size, value_size) in maps {
            let path = self.map(name);
            if !path.exists() {
                return Err(incompatible(format!("map {name} is not pinned")));
            }
            let md = open(&path)?;
            let info = md
                .info()
                .map_err(|source| PinError::Map { path: path.display().to_string(), source })?;
            // Per-CPU arrays report the per-CPU value size.
            if info.key_size() as usize != key_size || info.value_size() as usize != value_size {
                return Err(incompatible(format!(
                    "map {name} has key/value sizes {}/{}, expected {key_size}/{value_size}",
                    info.key_size(),
                    info.value_size()
                )));
            }
            if name == map_names::CT_ESTABLISHED
                && !matches!(info.map_type(), Ok(aya::maps::MapType::Hash))
            {
                return Err(incompatible(format!("map {name} is not a plain hash")));
            }
        }
        Ok(())
    }

    /// Moves every map pinned in `staging` over the one of the same name here (rename(2)
    /// on the bpffs: no moment without a pin), CONFIG last since it carries the layout
    /// version, then removes `staging`.
    pub fn replace_with(&self, staging: &Pins) -> Result<(), PinError> {
        let io = |action, path: &Path| {
            let path = path.display().to_string();
            move |source| PinError::Io { action, path, source }
        };
        let mut names: Vec<String> = fs::read_dir(&staging.dir)
            .map_err(io("reading", &staging.dir))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort_by_key(|n| n == map_names::CONFIG);
        for name in names {
            let from = staging.dir.join(&name);
            fs::rename(&from, self.dir.join(&name)).map_err(io("moving", &from))?;
        }
        fs::remove_dir(&staging.dir).map_err(io("removing", &staging.dir))
    }

    /// The established flows and the handshakes the pinned tables hold (two halves each),
    /// whatever their layout: what unloading them would drop.
    pub fn tracked(&self) -> Result<(usize, usize), PinError> {
        let flows = self.count_keys(map_names::CT_ESTABLISHED)? / 2;
        let handshakes = self.count_keys(map_names::CT_EMBRYONIC)? / 2;
        Ok((flows, handshakes))
    }

    /// Entries of the pinned hash map `name`, whatever its value size (a newer layout's).
    fn count_keys(&self, name: &str) -> Result<usize, PinError> {
        let path = self.map(name);
        let md = open(&path)?;
        let err = |source| PinError::Io {
            action: "walking the keys of",
            path: path.display().to_string(),
            source,
        };
        let key_size = md
            .info()
            .map_err(|source| PinError::Map { path: path.display().to_string(), source })?;
        crate::datapath::batch::count_keys(&md, key_size.key_size() as usize).map_err(err)
    }

    /// Removes what a forwarder pinned here: links first (that detaches the program once no
    /// daemon holds it), then maps, an upgrade's staging directory, then the directory if
    /// nothing else is left in it. Anything else (a file someone put there) stays, and is
    /// named in the log. Returns what was removed.
    pub fn remove_all(&self) -> Result<Vec<PathBuf>, PinError> {
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(removed);
        };
        let (mut ours, foreign): (Vec<PathBuf>, Vec<PathBuf>) =
            entries.filter_map(|e| e.ok().map(|e| e.path())).partition(|p| is_ours(p));
        // Links before maps.
        ours.sort_by_key(|p| {
            !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_"))
        });
        for p in ours {
            // An upgrade's staging directory, left by a daemon that died during it.
            if p.is_dir() {
                removed.extend(Pins::new(&p).remove_all()?);
                continue;
            }
            fs::remove_file(&p).map_err(|source| PinError::Io {
                action: "removing",
                path: p.display().to_string(),
                source,
            })?;
            removed.push(p);
        }
        if !foreign.is_empty() {
            let names: Vec<String> = foreign.iter().map(|p| p.display().to_string()).collect();
            tracing::warn!(
                dir = %self.dir.display(),
                "left in place, not made by forwarder: {}",
                names.join(", ")
            );
            return Ok(removed);
        }
        fs::remove_dir(&self.dir).map_err(|source| PinError::Io {
            action: "removing",
            path: self.dir.display().to_string(),
            source,
        })?;
        Ok(removed)
    }
}

/// Whether a forwarder made `path` in a pin directory: a map of this layout or the
/// previous one (same names), a link, or an upgrade's staging directory.
fn is_ours(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    if path.is_dir() {
        return name.starts_with("staging-layout");
    }
    name.starts_with("link_")
        || ALL_MAPS.contains(&name.as_str())
        || crate::datapath::migrate::from_v2::MAPS.iter().any(|(m, _, _)| *m == name)
}

fn open(path: &Path) -> Result<MapData, PinError> {
    MapData::from_pin(path)
        .map_err(|source| PinError::Map { path: path.display().to_string(), source })
}

/// The layout version and `max_flows` of a pinned CONFIG. The first field has been the
/// version in every layout, so it is read from the raw value whatever its size.
fn pinned_config_head(path: &Path) -> Result<(u32, u32), PinError> {
    let err = |source| PinError::Map { path: path.display().to_string(), source };
    let md = open(path)?;
    let size = md.info().map_err(err)?.value_size() as usize;
    let value =
        crate::datapath::batch::lookup_bytes(&md, &0u32.to_ne_bytes(), size).map_err(|source| {
            PinError::Io { action: "reading", path: path.display().to_string(), source }
        })?;
    if size < 4 {
        return Err(PinError::Incompatible {
            dir: path.parent().unwrap_or(path).display().to_string(),
            what: format!("map CONFIG has a value of {size} bytes"),
        });
    }
    let word = |off: usize| u32::from_ne_bytes(value[off..off + 4].try_into().expect("4 bytes"));
    // `max_flows` sits where layouts 2 and 3 keep it; other layouts report none.
    let max_flows =
        if size == size_of::<Config>() { word(std::mem::offset_of!(Config, max_flows)) } else { 0 };
    Ok((word(0), max_flows))
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    // The field's type is the C library's `__fsword_t`: i64 here, narrower on other targets.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_all_takes_only_what_forwarder_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::new(dir.path().join("forwarder"));
        let staging = pins.dir().join("staging-layout3");
        fs::create_dir_all(&staging).unwrap();
        for f in ["link_xdp_n0", map_names::CONFIG, map_names::CT_ESTABLISHED, "notes.txt"] {
            fs::write(pins.dir().join(f), "").unwrap();
        }
        fs::write(staging.join(map_names::CONFIG), "").unwrap();
        fs::create_dir(pins.dir().join("someone-elses")).unwrap();

        let removed = pins.remove_all().unwrap();
        assert_eq!(removed.len(), 4, "{removed:?}");
        let mut left: Vec<String> = fs::read_dir(pins.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "someone-elses"]);

        // With only its own pins, the directory goes too.
        fs::remove_file(pins.dir().join("notes.txt")).unwrap();
        fs::remove_dir(pins.dir().join("someone-elses")).unwrap();
        fs::write(pins.dir().join(map_names::RULES), "").unwrap();
        pins.remove_all().unwrap();
        assert!(!pins.dir().exists());
    }
}
