//! Map key and value types shared by the kernel program (`forwarder-ebpf`) and the daemon.
//!
//! Every type here is `#[repr(C)]` with explicit padding and a compile-time size assertion:
//! the daemon re-attaches to maps pinned by an older build, so a layout change must be a
//! compile error (and a bump of [`LAYOUT_VERSION`]), never a silently corrupted map.
//!
//! Byte order: addresses and ports inside [`FlowKey`], [`Rule`] and [`Config::snat_addr`] are in
//! network byte order, exactly as they sit in the packet, so the data path never swaps bytes.
//! Rule map keys and the SNAT port range are in host order because they are compared
//! numerically.
#![no_std]

use core::mem::size_of;

/// Bumped whenever a map type below changes size or meaning.
///
/// 2: each conntrack half carries its own state, counters and cached next hop
/// ([`CtEntry`], [`NextHop`]); CT_ESTABLISHED is a plain hash that never evicts; new maps
/// NEXTHOP_GEN and CT_COUNT; `Config::max_flows`.
///
/// 3: [`CtEntry::established_ns`] (the handshake's length through the forwarder, for `flows`)
/// and `Config::flags` ([`CONFIG_FLAG_MIGRATING`], the window of an upgrade's map copy;
/// [`CONFIG_FLAG_UPGRADE_COPIED`], its pins being moved).
/// A daemon of this layout copies the tables of layout 2 into its own (the converter lives
/// with layout 2's definition, `forwarder/src/datapath/migrate/from_v2.rs`).
pub const LAYOUT_VERSION: u32 = 3;

/// Rules are numbered 0..MAX_RULES; the number indexes the per-rule counters.
pub const MAX_RULES: u32 = 256;

/// Entries of LISTEN_ADDRS: the addresses a rule's port is accepted on (`listen_ip`).
/// The config is checked against it, so a host with more addresses is a config error
/// rather than a map insert failing half-way through an apply.
pub const MAX_LISTEN_ADDRS: u32 = 64;

/// Entries of ALLOWED_SOURCES: the `allowed_sources` prefixes (checked with the config).
pub const MAX_ALLOWED_SOURCES: u32 = 1024;

/// Names of the maps in the object file, shared so the daemon cannot misspell one.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const RULES: &str = "RULES";
    pub const LISTEN_ADDRS: &str = "LISTEN_ADDRS";
    pub const ALLOWED_SOURCES: &str = "ALLOWED_SOURCES";
    pub const CT_EMBRYONIC: &str = "CT_EMBRYONIC";
    pub const CT_ESTABLISHED: &str = "CT_ESTABLISHED";
    pub const RULE_STATS: &str = "RULE_STATS";
    pub const NEXTHOP_GEN: &str = "NEXTHOP_GEN";
    pub const CT_COUNT: &str = "CT_COUNT";
    /// Not pinned: a new program starts its rate limits afresh.
    pub const LOG_BUDGET: &str = "LOG_BUDGET";
    /// Not pinned: each daemon fills it from the interfaces as they are when it starts.
    pub const INGRESS_MASTER: &str = "INGRESS_MASTER";
    /// Not pinned: it lives as long as a datagram's fragments are in flight.
    pub const FRAGMENTS: &str = "FRAGMENTS";
}

/// Program names in the object file.
pub mod program_names {
    pub const XDP: &str = "forwarder_xdp";
    pub const TC: &str = "forwarder_tc";
    /// An XDP program that passes everything: veth peers need one to receive native XDP_TX
    /// and XDP_REDIRECT frames promptly (see TOOLCHAIN.md); tests and the demo use it.
    pub const XDP_PASS: &str = "forwarder_xdp_pass";
}

/// An IPv4 address as the maps hold it: the packet's four bytes read as a native u32
/// (network byte order in memory), what the program compares without swapping.
pub fn ne_addr(a: core::net::Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// The address a map value holds ([`ne_addr`] backwards).
pub fn addr_from_ne(v: u32) -> core::net::Ipv4Addr {
    core::net::Ipv4Addr::from(v.to_ne_bytes())
}

/// One direction of a TCP connection, as seen in the packet (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    // Integer padding, not an array: the BPF backend turns zeroing a [u8; 3] into an
    // out-of-line memset call, which the SNAT port loop cannot afford.
    pub _pad0: u8,
    pub _pad1: u16,
}
const _: () = assert!(size_of::<FlowKey>() == 16);
// Every field where the kernel program and the daemon both expect it: a reordered field is
// a compile error, not a silently misread map.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(FlowKey, src_addr) == 0);
    assert!(offset_of!(FlowKey, dst_addr) == 4);
    assert!(offset_of!(FlowKey, src_port) == 8);
    assert!(offset_of!(FlowKey, dst_port) == 10);
    assert!(offset_of!(FlowKey, proto) == 12);
};

/// What every fragment of one IPv4 datagram carries (network byte order): the key of the
/// translation its first fragment left for the later ones, which carry no ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<FragKey>() == 12);

/// The addresses a datagram's later fragments are rewritten to (network byte order), and
/// whose counters they go to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragTranslation {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub rule_id: u16,
    /// 1 for the reply direction (target -> client).
    pub reply: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<FragTranslation>() == 12);

impl FlowKey {
    pub const fn new(
        src_addr: u32,
        dst_addr: u32,
        src_port: u16,
        dst_port: u16,
        proto: u8,
    ) -> Self {
        Self { src_addr, dst_addr, src_port, dst_port, proto, _pad0: 0, _pad1: 0 }
    }

    /// The key of the packets flowing the other way.
    pub const fn reversed(&self) -> Self {
        Self::new(self.dst_addr, self.src_addr, self.dst_port, self.src_port, self.proto)
    }
}

/// TCP connection state. Both halves of a flow carry it: the original half is the one the
/// state machine writes, the reply half a copy made on every transition, so that a packet
/// of an established flow learns everything it needs from the one entry it matched.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    Close = 5,
    TimeWait = 6,
}

impl TcpState {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::SynSent,
            2 => Self::SynRecv,
            3 => Self::Established,
            4 => Self::FinWait,
            5 => Self::Close,
            6 => Self::TimeWait,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::Established => "ESTABLISHED",
            Self::FinWait => "FIN_WAIT",
            Self::Close => "CLOSE",
            Self::TimeWait => "TIME_WAIT",
        }
    }
}

/// `CtEntry::flags`: this entry is the reply-direction half of its flow.
pub const CT_FLAG_REPLY: u8 = 1 << 0;
/// `CtEntry::flags` (original entry only): a FIN was seen from the client.
pub const CT_FLAG_FIN_ORIG: u8 = 1 << 1;
/// `CtEntry::flags` (original entry only): a FIN was seen from the target.
pub const CT_FLAG_FIN_REPLY: u8 = 1 << 2;
/// `CtEntry::flags` (original entry only): the RST that closed an established flow came
/// from the client (else from the target). See `TcpState::Close`.
pub const CT_FLAG_RST_ORIG: u8 = 1 << 3;
/// `CtEntry::flags` (original entry only): the flow was established when an RST closed it,
/// so a packet without SYN, FIN or RST from the RST's own side reopens it.
pub const CT_FLAG_RST_ESTABLISHED: u8 = 1 << 4;

/// The longest a flow closed by an RST stays tracked, whatever `closing` says: netfilter's
/// CLOSE timeout. A refused handshake (a broker that is down answers every SYN with an RST)
/// gives its SNAT port back this soon.
pub const CLOSE_AFTER_RST_NS: u64 = 10_000_000_000;

/// How often (at most) a half's `last_seen_ns` is rewritten, and its cached next hop
/// re-checked by a full FIB lookup. Writing the timestamp on every packet would dirty the
/// entry's cache line for nothing (Cilium's report interval does the same); the timeouts
/// it feeds are tens of seconds and more.
pub const REFRESH_NS: u64 = 1_000_000_000;

/// Where a half's packets leave, cached from `bpf_fib_lookup` so that an established
/// packet needs no route lookup (Katran keeps its gateway MAC in a map for the same reason).
///
/// Valid while `gen` equals the `NEXTHOP_GEN` value (the daemon bumps it on every route,
/// neighbour, address or link change it hears over rtnetlink) and the packet is no longer
/// than `max_len`; re-checked at least every [`REFRESH_NS`] even with no daemon running.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface; 0: nothing cached.
    pub ifindex: u32,
    /// `NEXTHOP_GEN` when cached.
    pub gen: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// Largest IP length known to fit the route's MTU (XDP: the largest packet the FIB
    /// accepted; TC: the egress device MTU the kernel reported).
    pub max_len: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<NextHop>() == 24);

/// One half of a tracked flow. Every flow has two, one per direction, in the same map: the
/// original one keyed by client -> listen address, the reply one keyed by target -> SNAT
/// address.
///
/// `peer` is the key of the other half. A packet that matches an entry is rewritten to the
/// reverse of `peer`: source := (peer.dst_addr, peer.dst_port), destination :=
/// (peer.src_addr, peer.src_port). That single rule serves both directions.
///
/// Each half holds what its own direction needs (translation, next hop, state, its own
/// counters and timestamp), so an established packet touches one entry, written only by the
/// CPU that receives that direction: no cache line bounces between the two directions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CtEntry {
    pub peer: FlowKey,
    pub nexthop: NextHop,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) of this direction's last packet,
    /// refreshed when it moved by [`REFRESH_NS`] or more. A flow is idle when both halves are.
    pub last_seen_ns: u64,
    /// When the SYN opened the flow: `bpf_ktime_get_ns()` (the same clock, to the
    /// nanosecond, so that `established_ns - created_ns` times the handshake).
    pub created_ns: u64,
    /// This direction's packets and bytes.
    pub packets: u64,
    pub bytes: u64,
    pub rule_id: u16,
    /// A [`TcpState`] as u8 (written on the original half, copied to the reply half).
    pub state: u8,
    /// `CT_FLAG_*`.
    pub flags: u8,
    pub _pad: u32,
    /// When the handshake completed (the flow moved to the established table), on the
    /// fine clock of `created_ns`; 0 before, and for flows an upgrade copied from layout 2,
    /// which did not record it.
    pub established_ns: u64,
}
const _: () = assert!(size_of::<CtEntry>() == 88);
// Field offsets too, so a reordered field is a compile error like a resized one.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(CtEntry, nexthop) == 16);
    assert!(offset_of!(CtEntry, last_seen_ns) == 40);
    assert!(offset_of!(CtEntry, packets) == 56);
    assert!(offset_of!(CtEntry, rule_id) == 72);
    assert!(offset_of!(CtEntry, state) == 74);
    assert!(offset_of!(CtEntry, flags) == 75);
    assert!(offset_of!(CtEntry, created_ns) == 48);
    assert!(offset_of!(CtEntry, bytes) == 64);
    assert!(offset_of!(CtEntry, established_ns) == 80);
    assert!(offset_of!(NextHop, gen) == 4);
    assert!(offset_of!(NextHop, smac) == 8);
    assert!(offset_of!(NextHop, dmac) == 14);
    assert!(offset_of!(NextHop, max_len) == 20);
};

impl CtEntry {
    pub const fn is_reply(&self) -> bool {
        self.flags & CT_FLAG_REPLY != 0
    }
}

/// `CT_COUNT` slots: established flows are admitted against `Config::max_flows` with this
/// count. Each slot has one kind of writer, so no update is lost without atomics across
/// the user/kernel boundary: the program adds promotions and subtracts the flows it
/// deletes (atomically), the daemon counts the flows its expiry sweep deletes.
pub const CT_COUNT_KERNEL: u32 = 0;
pub const CT_COUNT_SWEPT: u32 = 1;

/// `Config::listen_mode`: accept a rule's port on any destination address (floating IP).
pub const LISTEN_ANY: u8 = 0;
/// `Config::listen_mode`: only on addresses present in `LISTEN_ADDRS`.
pub const LISTEN_ADDRS: u8 = 1;

/// Global settings, the single entry of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// [`LAYOUT_VERSION`] of the daemon that wrote it; 0 means "not configured yet" and the
    /// program then passes everything.
    pub layout_version: u32,
    /// Source address of forwarded packets (network order).
    pub snat_addr: u32,
    /// Inclusive SNAT port range (host order).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// Largest MSS allowed in SYN / SYN-ACK; 0 disables clamping.
    pub mss_clamp: u16,
    /// `LISTEN_ANY` or `LISTEN_ADDRS`.
    pub listen_mode: u8,
    /// 1: every source is allowed; 0: only those in `ALLOWED_SOURCES`.
    pub allow_all_sources: u8,
    pub timeout_syn_ns: u64,
    pub timeout_established_ns: u64,
    pub timeout_closing_ns: u64,
    /// Established flows admitted at most; past it new flows are refused and counted
    /// (`drop_table_full`), never made room for by evicting a live one.
    pub max_flows: u32,
    /// `CONFIG_FLAG_*`.
    pub flags: u32,
}
const _: () = assert!(size_of::<Config>() == 48);
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Config, layout_version) == 0);
    assert!(offset_of!(Config, snat_addr) == 4);
    assert!(offset_of!(Config, snat_port_min) == 8);
    assert!(offset_of!(Config, snat_port_max) == 10);
    assert!(offset_of!(Config, mss_clamp) == 12);
    assert!(offset_of!(Config, listen_mode) == 14);
    assert!(offset_of!(Config, allow_all_sources) == 15);
    assert!(offset_of!(Config, timeout_syn_ns) == 16);
    assert!(offset_of!(Config, timeout_established_ns) == 24);
    assert!(offset_of!(Config, timeout_closing_ns) == 32);
    assert!(offset_of!(Config, max_flows) == 40);
    assert!(offset_of!(Config, flags) == 44);
};

/// `Config::flags`: an upgrade is copying the previous layout's tables into this program's
/// (`forwarder/src/datapath/migrate`). A packet no flow claims may then belong to a flow
/// not copied yet, so instead of going to the kernel (which answers it with a reset and
/// kills the connection) it is dropped, and TCP sends it again after the copy: a packet to
/// a rule's port (a SYN included: no flow is opened whose SNAT port a flow being copied
/// may hold), or to the SNAT address within the SNAT port range.
pub const CONFIG_FLAG_MIGRATING: u32 = 1 << 0;

/// `Config::flags`, the daemon's alone (the program ignores it): an upgrade's copy is
/// complete, the bulk copy and the catch-up both, and only moving its staged pins over the
/// old ones is left. Set on the staged CONFIG just before the moves, so that a start after
/// a daemon killed during them finishes them instead of finding half of each layout.
pub const CONFIG_FLAG_UPGRADE_COPIED: u32 = 1 << 1;

impl Config {
    /// How long an entry in `state` may stay idle before it counts as gone.
    pub const fn timeout_ns(&self, state: u8) -> u64 {
        match TcpState::from_u8(state) {
            Some(TcpState::SynSent) | Some(TcpState::SynRecv) => self.timeout_syn_ns,
            Some(TcpState::Established) => self.timeout_established_ns,
            Some(TcpState::Close) => {
                if self.timeout_closing_ns < CLOSE_AFTER_RST_NS {
                    self.timeout_closing_ns
                } else {
                    CLOSE_AFTER_RST_NS
                }
            }
            _ => self.timeout_closing_ns,
        }
    }
}

/// A forwarding rule, the value of `RULES` (key: listen port, host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Network order.
    pub target_addr: u32,
    /// Network order.
    pub target_port: u16,
    /// Index into `RULE_STATS`, < [`MAX_RULES`].
    pub rule_id: u16,
}
const _: () = assert!(size_of::<Rule>() == 8);
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Rule, target_addr) == 0);
    assert!(offset_of!(Rule, target_port) == 4);
    assert!(offset_of!(Rule, rule_id) == 6);
};

/// Per-rule counters, indexed by [`Counter`].
pub const COUNTERS: usize = 12;

/// The counters kept per rule and per CPU. Drops and passes are by named reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Client -> target packets forwarded.
    Packets = 0,
    Bytes = 1,
    /// Target -> client packets forwarded.
    ReplyPackets = 2,
    ReplyBytes = 3,
    /// Flows created (first SYN).
    NewConns = 4,
    /// SYN from a source outside `allowed_sources`: passed to the kernel untouched.
    NotAllowed = 5,
    /// Dropped: every port of `snat_ports` is taken for this target.
    DropNoSnatPort = 6,
    /// Dropped: the conntrack map refused the insert.
    DropTableFull = 7,
    /// Passed to the kernel after translation, because the next hop's MAC is not known yet
    /// (the kernel resolves it), the packet exceeds the egress MTU, or the TTL ran out.
    SlowPath = 8,
    /// Dropped: the FIB says the target is unreachable (blackhole, prohibit, ...).
    DropNoRoute = 9,
    /// ICMP errors about a tracked flow, translated.
    IcmpTranslated = 10,
    /// SYN / SYN-ACK whose MSS option was lowered to `mss_clamp`.
    MssClamped = 11,
}

impl Counter {
    pub const ALL: [Counter; COUNTERS] = [
        Counter::Packets,
        Counter::Bytes,
        Counter::ReplyPackets,
        Counter::ReplyBytes,
        Counter::NewConns,
        Counter::NotAllowed,
        Counter::DropNoSnatPort,
        Counter::DropTableFull,
        Counter::SlowPath,
        Counter::DropNoRoute,
        Counter::IcmpTranslated,
        Counter::MssClamped,
    ];

    /// Stable snake_case name, used in `stats` output and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::Bytes => "bytes",
            Counter::ReplyPackets => "reply_packets",
            Counter::ReplyBytes => "reply_bytes",
            Counter::NewConns => "new_conns",
            Counter::NotAllowed => "not_allowed",
            Counter::DropNoSnatPort => "drop_no_snat_port",
            Counter::DropTableFull => "drop_table_full",
            Counter::SlowPath => "slow_path",
            Counter::DropNoRoute => "drop_no_route",
            Counter::IcmpTranslated => "icmp_translated",
            Counter::MssClamped => "mss_clamped",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RuleStats {
    pub counters: [u64; COUNTERS],
}
const _: () = assert!(size_of::<RuleStats>() == 8 * COUNTERS);

impl RuleStats {
    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }
}

/// What the kernel program tells the operator (aya-log lines the daemon writes to its log),
/// each event rate-limited on its own: the index into `LOG_BUDGET`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEvent {
    /// A new flow found no free SNAT port towards its target.
    NoSnatPort = 0,
    /// A new flow was refused: `max_flows` flows are established.
    TableFull = 1,
    /// An ICMP error about a tracked flow could not be translated (no route back).
    IcmpUntranslated = 2,
    /// A handshake half found alone: the embryonic LRU evicted its other half.
    HalfEvicted = 3,
}

pub const LOG_EVENTS: usize = 4;

/// The events' names in logs and metrics, by index.
pub const LOG_EVENT_NAMES: [&str; LOG_EVENTS] =
    ["no_snat_port", "table_full", "icmp_untranslated", "half_evicted"];

/// Lines per event and second the program writes, over all CPUs (CPUs that race at the
/// start of a second may add one each).
pub const LOG_LINES_PER_SECOND: u64 = 3;

/// The rate limit of one event; a shared (not per-CPU) array slot, counted atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogBudget {
    /// Start of the current one-second window (bpf_ktime_get_coarse_ns).
    pub window_start_ns: u64,
    /// Lines tried in the current window.
    pub in_window: u64,
    /// Lines written since the program was loaded.
    pub logged: u64,
    /// Events not written because the window's lines were used up.
    pub suppressed: u64,
}
const _: () = assert!(size_of::<LogBudget>() == 32);
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(LogBudget, window_start_ns) == 0);
    assert!(offset_of!(LogBudget, in_window) == 8);
    assert!(offset_of!(LogBudget, logged) == 16);
    assert!(offset_of!(LogBudget, suppressed) == 24);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], plain integers, with explicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Rule {}
    unsafe impl aya::Pod for super::RuleStats {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::LogBudget {}
}
