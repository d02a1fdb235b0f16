//! Per-rule, per-CPU counters.

use crate::maps::RULE_STATS;
use forwarder_common::Counter;

#[inline(always)]
pub fn add(rule_id: u16, counter: Counter, n: u64) {
    if let Some(s) = RULE_STATS.get_ptr_mut(rule_id as u32) {
        // SAFETY: per-CPU value, no other writer on this CPU while the program runs.
        unsafe { (*s).counters[counter as usize] += n };
    }
}

#[inline(always)]
pub fn inc(rule_id: u16, counter: Counter) {
    add(rule_id, counter, 1);
}

/// A forwarded packet of `rule_id`'s flow: packets and bytes of its direction, one lookup.
#[inline(always)]
pub fn forwarded(rule_id: u16, reply: bool, packets: u64, bytes: u64) {
    let (p, b) = if reply {
        (Counter::ReplyPackets, Counter::ReplyBytes)
    } else {
        (Counter::Packets, Counter::Bytes)
    };
    if let Some(s) = RULE_STATS.get_ptr_mut(rule_id as u32) {
        // SAFETY: per-CPU value, no other writer on this CPU while the program runs.
        unsafe {
            (*s).counters[p as usize] += packets;
            (*s).counters[b as usize] += bytes;
        }
    }
}
