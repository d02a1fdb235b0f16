//! Reading the conntrack tables for people: active flows per rule and the flow listing.
//! A walk over the tables costs time in proportion to the flows tracked; it runs on
//! demand (status, stats, flows, a metrics scrape), never per packet.

use crate::{
    datapath::map_access::{self, MapReadError},
    host::clock::monotonic_ns,
};
use aya::{
    maps::{HashMap as BpfHashMap, IterableMap, MapData},
    Ebpf,
};
use forwarder_common::{addr_from_ne, map_names, CtEntry, FlowKey, TcpState};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A walk over a table visits at most this many times its capacity in keys (restarts
/// included), so it ends while the table churns.
const WALK_BOUND: usize = 3;

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
    pub fn flows(&self) -> Result<Vec<Flow>, MapReadError> {
        Ok(scan(self.ebpf())?.flows)
    }

    /// One walk over both conntrack tables (see [`Scan`]).
    pub fn scan(&self) -> Result<Scan, MapReadError> {
        scan(self.ebpf())
    }
}

/// One walk over both conntrack tables: the flows, and how many entries (halves) each
/// table holds, so a metrics scrape reads the tables once.
pub struct Scan {
    pub flows: Vec<Flow>,
    /// Entries in use: CT_ESTABLISHED, CT_EMBRYONIC.
    pub used: [u64; 2],
}

fn scan(ebpf: &Ebpf) -> Result<Scan, MapReadError> {
    let mut out = Scan { flows: Vec::new(), used: [0; 2] };
    let mut replies: HashMap<FlowKey, CtEntry> = HashMap::new();
    for (i, (name, established_table)) in
        [(map_names::CT_ESTABLISHED, true), (map_names::CT_EMBRYONIC, false)]
            .into_iter()
            .enumerate()
    {
        let ct: BpfHashMap<&MapData, FlowKey, CtEntry> =
            BpfHashMap::try_from(map_access::map(ebpf, name)?).map_err(map_access::of(name))?;
        // The kernel answers "next key" after a key deleted meanwhile with the table's first
        // key, so a walk over a table that churns (a SYN flood in the embryonic LRU) starts
        // over and meets keys again: each is counted once, and the walk is bounded.
        let capacity =
            IterableMap::map(&ct).info().map_err(map_access::of(name))?.max_entries() as usize;
        let mut seen: HashSet<FlowKey> = HashSet::new();
        for item in ct.iter().take(capacity.saturating_mul(WALK_BOUND)) {
            // An error ends the walk; what was read stands.
            let Ok((key, entry)) = item else { break };
            if !seen.insert(key) {
                continue;
            }
            out.used[i] += 1;
            if entry.is_reply() {
                replies.insert(key, entry);
            } else {
                out.flows.push(Flow { key, entry, reply: None, established_table });
            }
        }
        // Nor is a walk a snapshot: keys that came while others went are all seen, more than
        // the table ever holds at once. It cannot hold more than its capacity.
        out.used[i] = out.used[i].min(capacity as u64);
    }
    for f in &mut out.flows {
        f.reply = replies.get(&f.entry.peer).copied();
    }
    Ok(out)
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
