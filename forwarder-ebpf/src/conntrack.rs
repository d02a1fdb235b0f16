//! Connection tracking: two LRU tables (embryonic, established), each flow stored as two
//! halves (original and reply), an explicit TCP state machine, per-state timeouts.

use crate::{
    maps::{CT_EMBRYONIC, CT_ESTABLISHED},
    parse::{Tcp, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};
use aya_ebpf::{bindings::BPF_NOEXIST, maps::LruHashMap};
use forwarder_common::{
    Config, CtEntry, FlowKey, TcpState, CT_FLAG_FIN_ORIG, CT_FLAG_FIN_REPLY, CT_FLAG_REPLY,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Embryonic,
    Established,
}

#[inline(always)]
fn map(t: Table) -> &'static LruHashMap<FlowKey, CtEntry> {
    match t {
        Table::Embryonic => &CT_EMBRYONIC,
        Table::Established => &CT_ESTABLISHED,
    }
}

/// A live flow that a packet matched.
pub struct Found {
    pub table: Table,
    /// The half the packet's key matched.
    pub entry: *mut CtEntry,
    /// The original-direction half, which holds state and counters.
    pub master: *mut CtEntry,
    pub master_key: FlowKey,
}

impl Found {
    #[inline(always)]
    pub fn is_reply(&self) -> bool {
        // SAFETY: entry points into a map value that lives for the rest of the program run.
        unsafe { (*self.entry).is_reply() }
    }

    #[inline(always)]
    pub fn peer(&self) -> FlowKey {
        // SAFETY: as above.
        unsafe { (*self.entry).peer }
    }
}

/// Looks a key up, established flows first. A half whose flow timed out, or whose other half
/// is gone, is deleted on the spot and reported absent.
#[inline(always)]
pub fn lookup(key: &FlowKey, cfg: &Config, now: u64) -> Option<Found> {
    match lookup_in(Table::Established, key, cfg, now) {
        Some(f) => Some(f),
        None => lookup_in(Table::Embryonic, key, cfg, now),
    }
}

#[inline(always)]
fn lookup_in(table: Table, key: &FlowKey, cfg: &Config, now: u64) -> Option<Found> {
    let m = map(table);
    let entry = m.get_ptr_mut(key)?;
    // SAFETY: map values stay valid until the program returns.
    let e = unsafe { *entry };
    let (master, master_key) = if e.is_reply() {
        match m.get_ptr_mut(&e.peer) {
            Some(p) => (p, e.peer),
            None => {
                let _ = m.remove(key);
                return None;
            }
        }
    } else {
        // An original half whose reply half the LRU evicted must not live on: its SNAT port
        // would look free and be given to a second flow. During a promotion the reply half
        // is briefly in the other table only, so both are asked.
        if !in_use(&e.peer) {
            let _ = m.remove(key);
            return None;
        }
        (entry, *key)
    };
    // SAFETY: as above.
    let mst = unsafe { &*master };
    if now.saturating_sub(mst.last_seen_ns) > cfg.timeout_ns(mst.state) {
        let _ = m.remove(key);
        let _ = m.remove(&e.peer);
        return None;
    }
    Some(Found { table, entry, master, master_key })
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
    let master = CtEntry {
        peer: *reply_key,
        last_seen_ns: now,
        created_ns: now,
        packets: 1,
        bytes: len as u64,
        rule_id,
        state: TcpState::SynSent as u8,
        ..CtEntry::default()
    };
    let reply = CtEntry { peer: *orig_key, rule_id, flags: CT_FLAG_REPLY, ..CtEntry::default() };
    // NOEXIST on the reply half: if another CPU took the same SNAT port a moment ago, fail
    // rather than steal its flow.
    CT_EMBRYONIC.insert(reply_key, &reply, BPF_NOEXIST as u64).map_err(|_| ())?;
    if CT_EMBRYONIC.insert(orig_key, &master, 0).is_err() {
        let _ = CT_EMBRYONIC.remove(reply_key);
        return Err(());
    }
    Ok(())
}

/// Moves a flow that completed its handshake into the established table, where new SYNs
/// cannot evict it.
#[inline(always)]
pub fn promote(found: &Found) {
    // SAFETY: master is a live map value.
    let master = unsafe { *found.master };
    let reply = CtEntry {
        peer: found.master_key,
        rule_id: master.rule_id,
        flags: CT_FLAG_REPLY,
        ..CtEntry::default()
    };
    // Master first: a reply packet on another CPU that finds the reply half here must also
    // find its master, or lookup_in would delete the reply half as an orphan.
    if CT_ESTABLISHED.insert(&found.master_key, &master, 0).is_err() {
        return;
    }
    if CT_ESTABLISHED.insert(&master.peer, &reply, 0).is_err() {
        let _ = CT_ESTABLISHED.remove(&found.master_key);
        return;
    }
    let _ = CT_EMBRYONIC.remove(&found.master_key);
    let _ = CT_EMBRYONIC.remove(&master.peer);
}

/// Result of feeding one packet to the state machine.
#[derive(PartialEq, Eq)]
pub enum Transition {
    Stay,
    /// The handshake just completed: move the flow to the established table.
    Promote,
}

/// The TCP state machine. `reply` is the packet's direction.
#[inline(always)]
pub fn advance(m: &mut CtEntry, tcp: &Tcp, reply: bool, len: u16, now: u64) -> Transition {
    m.last_seen_ns = now;
    m.packets += 1;
    m.bytes += len as u64;

    let state = m.state;
    let mut t = Transition::Stay;
    if tcp.has(TCP_RST) {
        m.state = TcpState::Close as u8;
    } else if tcp.has(TCP_SYN) {
        if !reply && !tcp.has(TCP_ACK) {
            // A new SYN on a closed flow reopens it (client port reuse).
            if state == TcpState::Close as u8 || state == TcpState::TimeWait as u8 {
                m.state = TcpState::SynSent as u8;
                m.flags &= !(CT_FLAG_FIN_ORIG | CT_FLAG_FIN_REPLY);
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
        t = Transition::Promote;
    }
    t
}

/// Whether a reply key (target -> SNAT address:port) is taken. A plain existence check: the
/// SNAT loop runs it up to 32 times and the verifier walks every try, so it must stay
/// small. Timed-out flows give their port back when the lookup path or the daemon's GC
/// deletes them.
#[inline(always)]
pub fn in_use(reply_key: &FlowKey) -> bool {
    CT_ESTABLISHED.get_ptr(reply_key).is_some() || CT_EMBRYONIC.get_ptr(reply_key).is_some()
}
