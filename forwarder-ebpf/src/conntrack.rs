//! Connection tracking: an LRU table for handshakes (a SYN flood churns only it) and a plain
//! hash for established flows (never evicted; new flows are refused at `max_flows`), each
//! flow stored as two halves (original and reply), an explicit TCP state machine and
//! per-state timeouts.
//!
//! One lookup per packet: the half a packet matches holds everything its direction needs.
//! The other half is read only by packets that can change the flow's state (a SYN, FIN or
//! RST, or any packet before the flow is established) and when a half looks idle.

use crate::{
    maps::{CT_COUNT, CT_EMBRYONIC, CT_ESTABLISHED},
    parse::{Tcp, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};
use aya_ebpf::bindings::BPF_NOEXIST;
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use forwarder_common::{
    Config, CtEntry, FlowKey, TcpState, CT_COUNT_KERNEL, CT_COUNT_SWEPT, CT_FLAG_FIN_ORIG,
    CT_FLAG_FIN_REPLY, CT_FLAG_REPLY, CT_FLAG_RST_ESTABLISHED, CT_FLAG_RST_ORIG,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Embryonic,
    Established,
}

impl Table {
    #[inline(always)]
    fn other(self) -> Table {
        match self {
            Table::Embryonic => Table::Established,
            Table::Established => Table::Embryonic,
        }
    }
}

// The two tables have different map types (LRU and plain hash) with the same operations.
#[inline(always)]
fn get(t: Table, key: &FlowKey) -> Option<*mut CtEntry> {
    match t {
        Table::Embryonic => CT_EMBRYONIC.get_ptr_mut(key),
        Table::Established => CT_ESTABLISHED.get_ptr_mut(key),
    }
}

/// Whether the key was there (and is now gone).
#[inline(always)]
fn remove(t: Table, key: &FlowKey) -> bool {
    match t {
        Table::Embryonic => CT_EMBRYONIC.remove(key).is_ok(),
        Table::Established => CT_ESTABLISHED.remove(key).is_ok(),
    }
}

#[inline(always)]
fn insert(t: Table, key: &FlowKey, value: &CtEntry, flags: u64) -> bool {
    try_insert(t, key, value, flags).is_ok()
}

/// An insert that says why it failed (a negative errno).
#[inline(always)]
fn try_insert(t: Table, key: &FlowKey, value: &CtEntry, flags: u64) -> Result<(), i64> {
    let r = match t {
        Table::Embryonic => CT_EMBRYONIC.insert(key, value, flags),
        Table::Established => CT_ESTABLISHED.insert(key, value, flags),
    };
    r.map_err(|e| e as i64)
}

const EEXIST: i64 = 17;

/// A live half that a packet matched.
pub struct Found {
    pub table: Table,
    /// The matched half: a map value, valid for the rest of the program run.
    pub entry: *mut CtEntry,
    pub key: FlowKey,
}

/// What one lookup says about a packet's key.
pub enum Lookup {
    /// Not tracked (or its flow just expired).
    New,
    /// The client -> listen address half.
    Original(Found),
    /// The target -> SNAT address half.
    Reply(Found),
}

/// Looks a key up, established flows first. A flow idle past its timeout is deleted on the
/// spot and reported absent, as is a handshake half whose other half the LRU evicted.
#[inline(always)]
pub fn lookup(key: &FlowKey, cfg: &Config, now: u64) -> Lookup {
    let Some((table, entry)) = find(key) else {
        return Lookup::New;
    };
    // One copy of the checks for both tables keeps the program (and its verification) small.
    check(table, key, entry, cfg, now)
}

/// The half stored under `key`, established flows first.
#[inline(always)]
fn find(key: &FlowKey) -> Option<(Table, *mut CtEntry)> {
    if let Some(e) = CT_ESTABLISHED.get_ptr_mut(key) {
        return Some((Table::Established, e));
    }
    CT_EMBRYONIC.get_ptr_mut(key).map(|e| (Table::Embryonic, e))
}

#[inline(always)]
fn check(table: Table, key: &FlowKey, entry: *mut CtEntry, cfg: &Config, now: u64) -> Lookup {
    // SAFETY: map values stay valid until the program returns.
    let e = unsafe { &*entry };
    // Only the LRU evicts one half alone. An original half whose reply half went would
    // keep translating with a SNAT port that looks free to the next flow (or that a new
    // flow already took). During a promotion the other half is briefly in the other table
    // only, so both are asked.
    if table == Table::Embryonic && partner(table, key, &e.peer).is_none() {
        remove(table, key);
        crate::events::half_evicted(now);
        return Lookup::New;
    }
    if now.saturating_sub(e.last_seen_ns) > cfg.timeout_ns(e.state)
        && expire_if_idle(table, key, e, cfg, now)
    {
        return Lookup::New;
    }
    let found = Found { table, entry, key: *key };
    if e.is_reply() {
        Lookup::Reply(found)
    } else {
        Lookup::Original(found)
    }
}

/// This half is idle past its state's timeout; the flow is gone only if the other half is
/// idle too (each half stamps its own direction). Returns whether it was deleted.
#[inline(always)]
fn expire_if_idle(table: Table, key: &FlowKey, e: &CtEntry, cfg: &Config, now: u64) -> bool {
    let peer = e.peer;
    let Some((_, p)) = partner(table, key, &peer) else {
        // A half alone: it goes by itself. The key it names may be another flow's now.
        if e.is_reply() {
            remove(table, key);
        } else {
            remove_original(table, key);
        }
        return true;
    };
    // SAFETY: a live map value.
    let peer_seen = unsafe { (*p).last_seen_ns };
    if now.saturating_sub(peer_seen) <= cfg.timeout_ns(e.state) {
        return false;
    }
    let (orig, reply) = if e.is_reply() { (peer, *key) } else { (*key, peer) };
    delete_flow(table, &orig, &reply);
    true
}

/// The other half of a flow: in `table`, or during a promotion in the other table.
#[inline(always)]
fn other_half(table: Table, peer: &FlowKey) -> Option<(Table, *mut CtEntry)> {
    if let Some(p) = get(table, peer) {
        return Some((table, p));
    }
    get(table.other(), peer).map(|p| (table.other(), p))
}

/// The other half of the flow whose half `me` names `peer`: found as `other_half` does, and
/// only if it names `me` back. A half left alone (its partner deleted by a sweep that
/// stopped between the two deletions, or evicted) may name a key that a new flow has taken
/// since: that flow's half is not its partner, and must neither keep it alive nor take its
/// state changes.
#[inline(always)]
fn partner(table: Table, me: &FlowKey, peer: &FlowKey) -> Option<(Table, *mut CtEntry)> {
    // SAFETY: a live map value.
    other_half(table, peer).filter(|(_, p)| unsafe { (**p).peer } == *me)
}

/// Deletes both halves, the original first: a reply half left alone for a moment is
/// harmless (its SNAT port stays taken until it goes too), the reverse is not.
#[inline(always)]
fn delete_flow(table: Table, orig: &FlowKey, reply: &FlowKey) {
    remove_original(table, orig);
    remove(table, reply);
}

/// Removes an original half, and its flow from the count of established flows (which
/// counts established original halves).
#[inline(always)]
fn remove_original(table: Table, orig: &FlowKey) {
    if remove(table, orig) && table == Table::Established {
        count_add(u64::MAX); // -1
    }
}

/// Adds `n` (wrapping: u64::MAX subtracts one) to the program's established-flow count.
#[inline(always)]
fn count_add(n: u64) {
    if let Some(p) = CT_COUNT.get_ptr_mut(CT_COUNT_KERNEL) {
        // SAFETY: an aligned u64 map value; every writer of this slot adds atomically (a
        // BPF atomic add: core's AtomicU64 has no fetch_add on the BPF target, and a
        // fetching add needs BPF CPU v3, which the build does not target).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
    }
}

/// Whether one more established flow fits under `max_flows`: the early answer at the SYN,
/// so that a client of a full NAT VM sees its SYN dropped (and retried) rather than a
/// reset. Handshakes in flight are not counted here; the limit itself is the established
/// table's size (`max_flows` flows exactly), which `promote` cannot get past.
#[inline(always)]
pub fn has_room(cfg: &Config) -> bool {
    let kernel = CT_COUNT.get(CT_COUNT_KERNEL).copied().unwrap_or(0);
    let swept = CT_COUNT.get(CT_COUNT_SWEPT).copied().unwrap_or(0);
    (kernel.wrapping_sub(swept) as i64) < cfg.max_flows as i64
}

/// CLOCK_MONOTONIC to the nanosecond (the packet path reads the coarse clock instead).
#[inline(always)]
fn fine_now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// Inserts a new flow (both halves) into the embryonic table.
/// `reply_key` is the key its reply packets will carry (target -> SNAT address); `len` is the
/// IP length of the SYN, the flow's first packet.
#[inline(always)]
pub fn create(
    orig_key: &FlowKey,
    reply_key: &FlowKey,
    rule_id: u16,
    len: u16,
    now: u64,
) -> Result<(), ()> {
    // One entry on the stack, written as the original half and then turned into the reply
    // half: the program's stack frame is near the verifier's 512 bytes, and two 80-byte
    // entries cost the room the operator events (events.rs) need for their calls.
    let mut half = CtEntry {
        peer: *reply_key,
        last_seen_ns: now,
        // The fine clock, once per flow: with `established_ns` it times the handshake,
        // which the coarse clock's tick (4 ms at HZ=250) would round away.
        created_ns: fine_now(),
        packets: 1,
        bytes: len as u64,
        rule_id,
        state: TcpState::SynSent as u8,
        ..CtEntry::default()
    };
    // The original half first: a reply half never exists without its original, so the
    // SNAT search may take the port of a reply half found alone (`port_taken`). NOEXIST on
    // the reply half: if another CPU took the same SNAT port a moment ago, fail rather than
    // steal its flow.
    if !insert(Table::Embryonic, orig_key, &half, 0) {
        return Err(());
    }
    half.peer = *orig_key;
    half.packets = 0;
    half.bytes = 0;
    half.flags = CT_FLAG_REPLY;
    if !insert(Table::Embryonic, reply_key, &half, BPF_NOEXIST as u64) {
        remove(Table::Embryonic, orig_key);
        return Err(());
    }
    Ok(())
}

/// Result of feeding a packet to the state machine.
#[derive(PartialEq, Eq)]
pub enum Transition {
    Stay,
    /// The flow is established but still in the embryonic table: move it.
    Promote,
}

/// Whether a packet of this half may go without the state machine: an established flow in
/// its table, and no flag that changes TCP state.
#[inline(always)]
pub fn is_steady(found: &Found, tcp: &Tcp) -> bool {
    // SAFETY: a live map value.
    let state = unsafe { (*found.entry).state };
    found.table == Table::Established
        && state == TcpState::Established as u8
        && tcp.flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0
}

/// Runs the state machine for a packet that may change the flow's state. It writes the
/// original half and copies the new state into the reply half. `reply` is the packet's
/// direction.
#[inline(always)]
pub fn track(found: &Found, tcp: &Tcp, reply: bool) -> Transition {
    // SAFETY: map values, valid for the rest of the program run.
    let own = unsafe { &mut *found.entry };
    let other = partner(found.table, &found.key, &own.peer);
    let state = match (reply, other) {
        (false, other) => {
            advance(own, tcp, false);
            if let Some((_, p)) = other {
                // SAFETY: as above.
                unsafe { (*p).state = own.state };
            }
            own.state
        }
        (true, Some((_, master))) => {
            // SAFETY: as above.
            let master = unsafe { &mut *master };
            advance(master, tcp, true);
            own.state = master.state;
            own.state
        }
        // A reply half without its original (or whose original is another flow's now):
        // nothing to keep in step.
        (true, None) => {
            advance(own, tcp, true);
            own.state
        }
    };
    if found.table == Table::Embryonic && state == TcpState::Established as u8 {
        Transition::Promote
    } else {
        Transition::Stay
    }
}

/// The TCP state machine, on the original half. `reply` is the packet's direction.
#[inline(always)]
fn advance(m: &mut CtEntry, tcp: &Tcp, reply: bool) {
    let state = m.state;
    if tcp.has(TCP_RST) {
        if state == TcpState::Established as u8 {
            // Remembered for an RST the endpoint ignores (below).
            m.flags &= !CT_FLAG_RST_ORIG;
            m.flags |= CT_FLAG_RST_ESTABLISHED | if reply { 0 } else { CT_FLAG_RST_ORIG };
        }
        if state != TcpState::Close as u8 {
            m.state = TcpState::Close as u8;
        }
    } else if state == TcpState::Close as u8
        && m.flags & CT_FLAG_RST_ESTABLISHED != 0
        && !tcp.has(TCP_SYN)
        && !tcp.has(TCP_FIN)
        && (m.flags & CT_FLAG_RST_ORIG != 0) == !reply
    {
        // The side the RST claimed to come from talks on: its endpoint did not send it, or
        // it was out of its window and the receiver ignored it (this table keeps no
        // sequence numbers to check it against). The connection lives; so does its flow.
        // Packets from the other side that crossed a real RST in flight do not count.
        m.state = TcpState::Established as u8;
        m.flags &= !(CT_FLAG_RST_ESTABLISHED | CT_FLAG_RST_ORIG);
    } else if tcp.has(TCP_SYN) {
        if !reply && !tcp.has(TCP_ACK) {
            // A new SYN on a closed flow reopens it (client port reuse).
            if state == TcpState::Close as u8 || state == TcpState::TimeWait as u8 {
                m.state = TcpState::SynSent as u8;
                m.flags &= !(CT_FLAG_FIN_ORIG
                    | CT_FLAG_FIN_REPLY
                    | CT_FLAG_RST_ESTABLISHED
                    | CT_FLAG_RST_ORIG);
            }
        } else if reply && tcp.has(TCP_ACK) && state == TcpState::SynSent as u8 {
            m.state = TcpState::SynRecv as u8;
        }
    } else if tcp.has(TCP_FIN) {
        m.flags |= if reply { CT_FLAG_FIN_REPLY } else { CT_FLAG_FIN_ORIG };
        let both = CT_FLAG_FIN_ORIG | CT_FLAG_FIN_REPLY;
        m.state =
            if m.flags & both == both { TcpState::TimeWait as u8 } else { TcpState::FinWait as u8 };
    } else if !reply && tcp.has(TCP_ACK) && state == TcpState::SynRecv as u8 {
        m.state = TcpState::Established as u8;
    }
}

/// Moves a flow that completed its handshake into the established table, where nothing
/// evicts it. `found` is either half. Fails when the table is full (`max_flows` flows):
/// the caller then forgets the flow, so no established flow ever lives in the evicting
/// table.
#[inline(always)]
pub fn promote(found: &Found) -> Result<(), ()> {
    // SAFETY: map values, valid for the rest of the program run.
    let own = unsafe { &mut *found.entry };
    // Gone from here: another CPU promoted it a moment ago (or the LRU took it, which the
    // next lookup sees).
    let Some(other) = get(Table::Embryonic, &own.peer) else {
        return Ok(());
    };
    // SAFETY: as above.
    let other = unsafe { &mut *other };
    let established = fine_now();
    own.established_ns = established;
    other.established_ns = established;
    let (own, other) = (&*own, &*other);
    let (orig_key, orig, reply_key, reply) = if own.is_reply() {
        (own.peer, other, found.key, own)
    } else {
        (found.key, own, own.peer, other)
    };
    // Original first: a reply packet on another CPU that finds its half here finds the
    // original too. NOEXIST: two CPUs promoting the same flow count it once.
    match try_insert(Table::Established, &orig_key, orig, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => return Ok(()),
        Err(_) => return Err(()),
    }
    if !insert(Table::Established, &reply_key, reply, 0) {
        remove(Table::Established, &orig_key);
        return Err(());
    }
    count_add(1);
    remove(Table::Embryonic, &orig_key);
    remove(Table::Embryonic, &reply_key);
    Ok(())
}

/// Deletes a flow that was refused its promotion (both halves, from the embryonic table).
#[inline(always)]
pub fn forget(found: &Found) {
    // SAFETY: a live map value.
    let peer = unsafe { (*found.entry).peer };
    remove(Table::Embryonic, &found.key);
    remove(Table::Embryonic, &peer);
}

/// Whether a reply key (target -> SNAT address:port) is taken, for the SNAT port search.
/// The search runs this up to 32 times and the verifier walks every try, so it stays small.
///
/// A port is free again, and the flow holding it deleted here, when that flow:
/// - is a reply half in the embryonic table whose original half the LRU evicted (a SYN
///   flood leaves many: the LRU evicts halves one by one);
/// - has timed out in both halves (the lookup path and the daemon's sweep delete such flows
///   too, but only when a packet or the next sweep comes by: up to 10 s late);
/// - was refused (an RST before it was established): the target never had a connection
///   on that port. Without this, a broker restart (every client retrying once a second from
///   a new port, each try refused) fills a small SNAT range with refused handshakes, and
///   new connections are refused until they time out after the broker is back. An RST on
///   an established flow does not free its port early: the endpoint may have ignored it;
/// - was closed by both FINs more than [`TIME_WAIT_NS`] ago. The endpoint that closed first
///   keeps the connection in TIME_WAIT that long and answers a new SYN on the same
///   addresses and ports with an ACK for the old one: taking the port sooner halved the
///   bench's rate of short connections (their SYNs waited for a retransmission).
/// netfilter hands out ports of closing flows too (`nf_nat_used_tuple_harder`).
#[inline(always)]
pub fn port_taken(reply_key: &FlowKey, cfg: &Config, now: u64) -> bool {
    let Some((table, reply)) = find(reply_key) else {
        return false;
    };
    // SAFETY: map values, valid for the rest of the program run.
    let reply = unsafe { &*reply };
    let orig_key = reply.peer;
    let Some((orig_table, orig)) = partner(table, reply_key, &orig_key) else {
        if table == Table::Embryonic {
            remove(table, reply_key);
            return false;
        }
        return true;
    };
    // A flow in the middle of its promotion (halves in two tables) is left to it.
    if orig_table != table {
        return true;
    }
    // SAFETY: as above.
    let orig = unsafe { &*orig };
    if !finished(orig, reply, cfg, now) {
        return true;
    }
    delete_flow(table, &orig_key, reply_key);
    false
}

/// Linux's TIME_WAIT (TCP_TIMEWAIT_LEN).
const TIME_WAIT_NS: u64 = 60_000_000_000;

/// Whether a flow (its original half holds the state) may give up its SNAT port.
#[inline(always)]
fn finished(orig: &CtEntry, reply: &CtEntry, cfg: &Config, now: u64) -> bool {
    let state = orig.state;
    if state == TcpState::Close as u8 && orig.flags & CT_FLAG_RST_ESTABLISHED == 0 {
        return true;
    }
    let timeout =
        if state == TcpState::TimeWait as u8 { TIME_WAIT_NS } else { cfg.timeout_ns(state) };
    now.saturating_sub(orig.last_seen_ns) > timeout
        && now.saturating_sub(reply.last_seen_ns) > timeout
}
