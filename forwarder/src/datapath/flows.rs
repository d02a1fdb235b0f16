//! Reading the conntrack tables for people: active flows per rule and the flow listing.
//! A walk over the tables costs time in proportion to the flows tracked; it runs on
//! demand (status, stats, flows, a metrics scrape), never per packet.

use crate::{
    datapath::handles::{Conntrack, MapAccessError},
    host::clock::monotonic_ns,
};
use aya::maps::{HashMap as BpfHashMap, MapData};
use forwarder_common::{addr_from_ne, map_names, CtEntry, FlowKey, TcpState};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One flow: its original half, and its reply half when the walk saw it.
#[derive(Debug, Clone)]
pub struct Flow {
    pub key: FlowKey,
    pub entry: CtEntry,
    pub reply: Option<CtEntry>,
    pub established_table: bool,
}

impl Flow {
    /// Both directions.
    pub fn packets(&self) -> u64 {
        self.entry.packets + self.reply.map_or(0, |r| r.packets)
    }

    pub fn bytes(&self) -> u64 {
        self.entry.bytes + self.reply.map_or(0, |r| r.bytes)
    }

    /// The last packet of either direction.
    pub fn last_seen_ns(&self) -> u64 {
        self.entry.last_seen_ns.max(self.reply.map_or(0, |r| r.last_seen_ns))
    }
}

impl crate::datapath::Datapath {
    /// Every tracked flow (original halves only; the reply half is `entry.peer`).
    pub fn flows(&self) -> Result<Vec<Flow>, MapAccessError> {
        Ok(self.maps.conntrack.scan()?.flows)
    }
}

/// One walk over both conntrack tables: the flows, and how many entries (halves) each
/// table holds, so a metrics scrape reads the tables once.
pub struct Scan {
    pub flows: Vec<Flow>,
    /// Entries in use: CT_ESTABLISHED, CT_EMBRYONIC.
    pub used: [u64; 2],
}

impl Conntrack {
    /// One walk over both tables (see [`Scan`]).
    pub fn scan(&self) -> Result<Scan, MapAccessError> {
        let mut replies: HashMap<FlowKey, CtEntry> = HashMap::new();
        let (mut flows, established) =
            walk(map_names::CT_ESTABLISHED, &self.established, true, &mut replies)?;
        let (embryonic_flows, embryonic) =
            walk(map_names::CT_EMBRYONIC, &self.embryonic, false, &mut replies)?;
        flows.extend(embryonic_flows);
        for f in &mut flows {
            f.reply = replies.get(&f.entry.peer).copied();
        }
        Ok(Scan { flows, used: [established, embryonic] })
    }
}

/// Walks one table: its flows (original halves) and how many entries it holds; reply halves
/// go to `replies`, to be joined to their flows.
fn walk(
    name: &'static str,
    ct: &BpfHashMap<MapData, FlowKey, CtEntry>,
    established_table: bool,
    replies: &mut HashMap<FlowKey, CtEntry>,
) -> Result<(Vec<Flow>, u64), MapAccessError> {
    // A batch read (see `batch`): each bucket once, also while the table churns (a SYN
    // flood in the embryonic LRU); keys are still counted once each.
    let (entries, capacity) = crate::datapath::batch::table(name, ct)?;
    let mut flows = Vec::new();
    let mut seen: HashSet<FlowKey> = HashSet::new();
    for (key, entry) in entries {
        if !seen.insert(key) {
            continue;
        }
        if entry.is_reply() {
            replies.insert(key, entry);
        } else {
            flows.push(Flow { key, entry, reply: None, established_table });
        }
    }
    // Nor is a walk a snapshot: keys that came while others went are all seen, more than
    // the table ever holds at once. It cannot hold more than its capacity.
    Ok((flows, (seen.len() as u64).min(capacity as u64)))
}

/// Rule ids that `flows` carry: a removed rule's stays reserved while its flows live, so
/// their counters do not land on a new rule.
pub fn held_rule_ids(flows: &[Flow]) -> BTreeSet<u16> {
    flows.iter().map(|f| f.entry.rule_id).collect()
}

/// Flow count per rule id.
pub fn active_per_rule(flows: &[Flow]) -> BTreeMap<u16, u64> {
    let mut m = BTreeMap::new();
    for f in flows {
        *m.entry(f.entry.rule_id).or_insert(0) += 1;
    }
    m
}

pub fn endpoint(addr: u32, port_be: u16) -> String {
    format!("{}:{}", addr_from_ne(addr), u16::from_be(port_be))
}

/// Seconds between a `bpf_ktime_get_ns` timestamp and now.
pub fn seconds_since(ns: u64) -> u64 {
    monotonic_ns().saturating_sub(ns) / 1_000_000_000
}

pub fn state_name(entry: &CtEntry) -> &'static str {
    TcpState::from_u8(entry.state).map_or("?", TcpState::name)
}

/// (table, entries in use, capacity) of both conntrack tables, entries being halves. The
/// established table's capacity is what admission allows (`max_flows` flows); its map holds
/// some more for handshakes in flight (see `object::established_capacity`).
pub fn table_fill(scan: &Scan, max_flows: u32) -> Vec<(String, u64, u64)> {
    vec![
        (
            map_names::CT_ESTABLISHED.to_lowercase(),
            scan.used[0],
            crate::datapath::object::established_capacity(max_flows) as u64,
        ),
        (
            map_names::CT_EMBRYONIC.to_lowercase(),
            scan.used[1],
            crate::datapath::object::embryonic_capacity(max_flows) as u64 * 2,
        ),
    ]
}
