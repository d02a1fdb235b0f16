//! The kernel program, embedded at build time (see build.rs), and loading it.

use crate::datapath::pins::{Pins, ALL_MAPS};
use aya::{Ebpf, EbpfLoader};
use forwarder_common::map_names;

/// The compiled forwarder-ebpf object.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/forwarder"));

/// Embryonic flows get a quarter of the table: enough for a burst of new connections, small
/// enough that a SYN flood cannot take the memory of established flows.
pub fn embryonic_capacity(max_flows: u32) -> u32 {
    (max_flows / 4).max(1024)
}

/// Entries (halves) of CT_ESTABLISHED: exactly `max_flows` flows. The table's size is the
/// limit itself: a preallocated hash refuses a new key when full, so no count can let more
/// flows in than there are places.
pub fn established_capacity(max_flows: u32) -> u32 {
    max_flows.saturating_mul(2)
}

/// Loads the object with conntrack tables sized for `max_flows` connections (each flow is
/// two entries, one per direction). With `pins`, every map is opened from its pin if one
/// exists (a previous daemon's maps, flows included) and pinned there if not.
pub fn load(max_flows: u32, pins: Option<&Pins>) -> Result<Ebpf, aya::EbpfError> {
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(map_names::CT_ESTABLISHED, established_capacity(max_flows))
        .map_max_entries(map_names::CT_EMBRYONIC, embryonic_capacity(max_flows) * 2);
    let paths: Vec<(&str, std::path::PathBuf)> = match pins {
        Some(p) => ALL_MAPS.iter().map(|m| (*m, p.map(m))).collect(),
        None => Vec::new(),
    };
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    loader.load(OBJECT)
}
