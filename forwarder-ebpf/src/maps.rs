//! Every map of the program. Key and value types live in forwarder-common.
//!
//! The sizes below are defaults; the daemon sets the conntrack sizes from `max_flows` at load.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::LpmTrie, Array, HashMap, LruHashMap, PerCpuArray},
};
use forwarder_common::{
    Config, CtEntry, FlowKey, FragKey, FragTranslation, LogBudget, Rule, RuleStats, LOG_EVENTS,
    MAX_ALLOWED_SOURCES, MAX_LISTEN_ADDRS, MAX_RULES,
};

/// Global settings; entry 0.
#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Listen port (host order) -> rule.
#[map(name = "RULES")]
pub static RULES: HashMap<u16, Rule> = HashMap::with_max_entries(MAX_RULES, 0);

/// Local addresses (network order) a rule's port is accepted on, when `listen_mode` says so.
#[map(name = "LISTEN_ADDRS")]
pub static LISTEN_ADDRS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_LISTEN_ADDRS, 0);

/// `allowed_sources` prefixes (network order), consulted unless `allow_all_sources`.
#[map(name = "ALLOWED_SOURCES")]
pub static ALLOWED_SOURCES: LpmTrie<u32, u8> =
    LpmTrie::with_max_entries(MAX_ALLOWED_SOURCES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Flows that have not completed the three-way handshake. Kept apart from established flows
/// so that a SYN flood only churns this LRU and can never evict an established connection
/// (the same protection netfilter's early_drop gives assured flows).
#[map(name = "CT_EMBRYONIC")]
pub static CT_EMBRYONIC: LruHashMap<FlowKey, CtEntry> = LruHashMap::with_max_entries(65536, 0);

/// Flows past the handshake (and their closing states). A plain hash, not an LRU: an
/// established flow is never evicted to make room, idle ones included (a Kafka connection
/// idle for ten minutes is normal). The daemon sizes it for exactly `max_flows` flows: a
/// promotion past that fails, as netfilter refuses new conntracks at nf_conntrack_max.
/// `CT_COUNT` lets a SYN be refused early, before the handshake.
#[map(name = "CT_ESTABLISHED")]
pub static CT_ESTABLISHED: HashMap<FlowKey, CtEntry> = HashMap::with_max_entries(524288, 0);

/// Established flows: [`CT_COUNT_KERNEL`] promoted minus deleted by the program (atomic),
/// [`CT_COUNT_SWEPT`] deleted by the daemon's sweep.
///
/// [`CT_COUNT_KERNEL`]: forwarder_common::CT_COUNT_KERNEL
/// [`CT_COUNT_SWEPT`]: forwarder_common::CT_COUNT_SWEPT
#[map(name = "CT_COUNT")]
pub static CT_COUNT: Array<u64> = Array::with_max_entries(2, 0);

/// The next-hop generation: bumped by the daemon on every route, neighbour, address or
/// link change; a cached [`forwarder_common::NextHop`] of another generation is stale.
#[map(name = "NEXTHOP_GEN")]
pub static NEXTHOP_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// Per-rule counters, indexed by rule id.
#[map(name = "RULE_STATS")]
pub static RULE_STATS: PerCpuArray<RuleStats> = PerCpuArray::with_max_entries(MAX_RULES, 0);

/// Rate limits of the operator events (`events.rs`), one slot per [`forwarder_common::LogEvent`].
#[map(name = "LOG_BUDGET")]
pub static LOG_BUDGET: Array<LogBudget> = Array::with_max_entries(LOG_EVENTS as u32, 0);

/// A device under a configured interface (ifindex) -> that interface (ifindex). On Azure
/// with accelerated networking, native XDP on hv_netvsc's eth0 runs on the VF under it, so
/// a packet's ingress is the VF: the FIB is asked as if it came in on eth0 (whose
/// forwarding the daemon turned on), and an answer of eth0 means "back out where it came
/// from" (XDP_TX on the VF), not a redirect. Filled by the daemon.
#[map(name = "INGRESS_MASTER")]
pub static INGRESS_MASTER: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// IPv4 datagrams of tracked flows that arrived in fragments: the translation the first
/// fragment (the one with the ports) took, for the later ones. An LRU: a datagram whose last
/// fragment never came is forgotten as new ones arrive (Cilium's IPV4_FRAG_DATAGRAMS_MAP).
#[map(name = "FRAGMENTS")]
pub static FRAGMENTS: LruHashMap<FragKey, FragTranslation> = LruHashMap::with_max_entries(8192, 0);
