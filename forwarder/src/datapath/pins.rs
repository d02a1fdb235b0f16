//! What lives in bpffs under `pin_path`, so that forwarding survives the daemon: every map
//! (the conntrack tables above all) and one link per interface. A new daemon re-opens the
//! maps and swaps its program into the pinned links atomically (`bpf_link_update`).
//!
//! Layout of the directory:
//! - one file per map, named as in `forwarder_common::map_names`;
//! - `link_<mode>_<interface>`: the program's attachment to an interface in that mode.

use crate::datapath::Attached;
use aya::maps::{Array, Map, MapData};
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

    /// The pinned link of `iface`, if any, and the mode it was attached in.
    pub fn find_link(&self, iface: &str) -> Option<(Attached, PathBuf)> {
        [Attached::XdpDriver, Attached::XdpGeneric, Attached::Tc]
            .into_iter()
            .map(|how| (how, self.link(iface, how)))
            .find(|(_, p)| p.exists())
    }

    /// Refuses pinned maps this build cannot read or write correctly: a different layout
    /// version in CONFIG, a map this build lacks or has of another type, or a key or value
    /// size that differs. Returns the `max_flows` the pinned tables were made for, if
    /// pinned and configured.
    pub fn check_compatible(&self) -> Result<Option<u32>, PinError> {
        let dir = self.dir.display().to_string();
        let incompatible = |what: String| PinError::Incompatible { dir: dir.clone(), what };
        if !self.exist() {
            return Ok(None);
        }
        // The version first: it says more than any size that follows from it.
        let (version, max_flows) = pinned_config_head(&self.map(map_names::CONFIG))?;
        if version != 0 && version != LAYOUT_VERSION {
            return Err(incompatible(format!("layout version {version}")));
        }
        for (name, key_size, value_size) in MAPS {
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
        Ok((version != 0).then_some(max_flows))
    }

    /// Removes links first (that detaches the program once no daemon holds it), then maps,
    /// then the directory. Returns what was removed.
    pub fn remove_all(&self) -> Result<Vec<PathBuf>, PinError> {
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(removed);
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        // Links before maps.
        paths.sort_by_key(|p| {
            !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_"))
        });
        for p in paths {
            fs::remove_file(&p).map_err(|source| PinError::Io {
                action: "removing",
                path: p.display().to_string(),
                source,
            })?;
            removed.push(p);
        }
        fs::remove_dir(&self.dir).map_err(|source| PinError::Io {
            action: "removing",
            path: self.dir.display().to_string(),
            source,
        })?;
        Ok(removed)
    }
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
    let map = Map::from_map_data(md).map_err(err)?;
    let value: Vec<u8> = match size {
        // Layout 1's Config.
        40 => raw_value::<40>(map).map_err(err)?.to_vec(),
        48 => raw_value::<48>(map).map_err(err)?.to_vec(),
        other => {
            return Err(PinError::Incompatible {
                dir: path.parent().unwrap_or(path).display().to_string(),
                what: format!("map CONFIG has a value of {other} bytes"),
            })
        }
    };
    let word = |off: usize| u32::from_ne_bytes(value[off..off + 4].try_into().expect("4 bytes"));
    let max_flows =
        if size == size_of::<Config>() { word(std::mem::offset_of!(Config, max_flows)) } else { 0 };
    Ok((word(0), max_flows))
}

fn raw_value<const N: usize>(map: Map) -> Result<[u8; N], aya::maps::MapError> {
    let arr: Array<MapData, [u8; N]> = Array::try_from(map)?;
    arr.get(&0, 0)
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    // The field's type is the C library's `__fsword_t`: i64 here, narrower on other targets.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}
