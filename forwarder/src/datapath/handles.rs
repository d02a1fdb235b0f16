//! The program's maps as typed handles, taken out of the loaded object once, at load: a
//! wrong key or value type or a missing map fails the load, not a later status request, and
//! the readers and writers (maps, flows, stats, gc, kernel_log) are methods on the handles
//! instead of name lookups.
//!
//! Whatever must not wait for the daemon's lock (flow expiry, the drop watch, the next-hop
//! watch, and the readers' and rule changes' walks of the tables, `Common::tables`) opens
//! handles of its own on the pins with [`open_pinned`]: the same typed handles, on the same
//! kernel maps.

use crate::datapath::pins::Pins;
use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray},
    Ebpf,
};
use forwarder_common::{map_names, Config, CtEntry, FlowKey, LogBudget, Rule, RuleStats};

/// A map that could not be had as its typed handle, or an access aya refused. Display says
/// which map and what was being done; the cause is the `source()` (print the chain,
/// `error::chain`).
#[derive(Debug, thiserror::Error)]
pub enum MapAccessError {
    #[error("map {0} is missing from the object")]
    Missing(&'static str),
    #[error("opening the pinned map {path}")]
    OpenPinned {
        path: String,
        #[source]
        cause: MapError,
    },
    #[error("map {0}")]
    Map(&'static str, #[source] MapError),
    #[error("reading map {0} in batches")]
    Batch(&'static str, #[source] std::io::Error),
    #[error("counting the CPUs for map {0}")]
    Cpus(&'static str, #[source] std::io::Error),
}

/// `aya::maps::MapError` of map `name` as a [`MapAccessError`].
pub fn of(name: &'static str) -> impl Fn(MapError) -> MapAccessError {
    move |e| MapAccessError::Map(name, e)
}

/// Every map of the program the daemon reads or writes, typed. The log ring buffer is not
/// here: aya-log takes it from the object itself (`kernel_log`).
pub struct MapHandles {
    pub config: Array<MapData, Config>,
    /// Listen port -> rule.
    pub rules: HashMap<MapData, u16, Rule>,
    /// Listen addresses (network byte order), value unused.
    pub listen_addrs: HashMap<MapData, u32, u8>,
    /// Source prefixes allowed to open flows, value unused.
    pub allowed_sources: LpmTrie<MapData, u32, u8>,
    pub nexthop_gen: Array<MapData, u32>,
    pub rule_stats: RuleStatsMap,
    pub conntrack: Conntrack,
    pub log_budget: Array<MapData, LogBudget>,
    /// A device under a configured interface (ifindex) -> that interface (ifindex).
    pub ingress_master: HashMap<MapData, u32, u32>,
}

impl MapHandles {
    /// Takes every map out of the freshly loaded `ebpf` as its typed handle. The programs
    /// keep their own references to the maps; the object keeps only the log buffer.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapAccessError> {
        Ok(Self {
            config: take(ebpf, map_names::CONFIG)?,
            rules: take(ebpf, map_names::RULES)?,
            listen_addrs: take(ebpf, map_names::LISTEN_ADDRS)?,
            allowed_sources: take(ebpf, map_names::ALLOWED_SOURCES)?,
            nexthop_gen: take(ebpf, map_names::NEXTHOP_GEN)?,
            rule_stats: RuleStatsMap(take(ebpf, map_names::RULE_STATS)?),
            conntrack: Conntrack {
                embryonic: take(ebpf, map_names::CT_EMBRYONIC)?,
                established: take(ebpf, map_names::CT_ESTABLISHED)?,
                count: take(ebpf, map_names::CT_COUNT)?,
            },
            log_budget: take(ebpf, map_names::LOG_BUDGET)?,
            ingress_master: take(ebpf, map_names::INGRESS_MASTER)?,
        })
    }
}

/// Both conntrack tables and the established-flow count: what flow listing and expiry
/// work on.
pub struct Conntrack {
    pub embryonic: HashMap<MapData, FlowKey, CtEntry>,
    pub established: HashMap<MapData, FlowKey, CtEntry>,
    /// Slot 0: the program's count of established flows; `CT_COUNT_SWEPT`: those the daemon
    /// removed (the program subtracts them).
    pub count: Array<MapData, u64>,
}

impl Conntrack {
    /// Handles of their own on the pinned tables, shared with nothing in this process.
    pub fn open_pinned(pins: &Pins) -> Result<Self, MapAccessError> {
        Ok(Self {
            embryonic: open_pinned(pins, map_names::CT_EMBRYONIC)?,
            established: open_pinned(pins, map_names::CT_ESTABLISHED)?,
            count: open_pinned(pins, map_names::CT_COUNT)?,
        })
    }
}

/// The per-rule, per-CPU counters (`stats`).
pub struct RuleStatsMap(pub PerCpuArray<MapData, RuleStats>);

impl RuleStatsMap {
    pub fn open_pinned(pins: &Pins) -> Result<Self, MapAccessError> {
        Ok(Self(open_pinned(pins, map_names::RULE_STATS)?))
    }
}

/// Map `name` of `ebpf`, taken out of it as the handle type `M`.
fn take<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, MapAccessError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(MapAccessError::Missing(name))?;
    M::try_from(map).map_err(of(name))
}

/// A handle of type `M` of its own on the map pinned as `name`.
pub fn open_pinned<M>(pins: &Pins, name: &'static str) -> Result<M, MapAccessError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let path = pins.map(name);
    let opened = MapData::from_pin(&path).and_then(Map::from_map_data);
    let map = opened
        .map_err(|cause| MapAccessError::OpenPinned { path: path.display().to_string(), cause })?;
    M::try_from(map).map_err(of(name))
}
