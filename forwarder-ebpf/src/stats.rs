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
