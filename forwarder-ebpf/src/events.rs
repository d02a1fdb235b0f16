//! What an operator must hear about, as aya-log lines the daemon writes into its log
//! (journald under systemd): SNAT ports exhausted, the flow table full, an ICMP error that
//! could not be translated, a handshake half the LRU evicted.
//!
//! Each event has its own budget of LOG_LINES_PER_SECOND lines a second over all CPUs;
//! past it an event is only counted (`LOG_BUDGET`, exported as metrics), so a SYN flood
//! writes three lines a second, not fifty thousand. Only paths that already drop or give up
//! call these: an established packet never reaches a log call. Each event is a function
//! of its own (a BPF subprogram, never inlined): the record a log line builds would
//! otherwise sit in the caller's stack frame, past the verifier's 512 bytes.

use crate::maps::LOG_BUDGET;
use aya_log_ebpf::warn;
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use forwarder_common::{LogEvent, LOG_LINES_PER_SECOND};

const SECOND_NS: u64 = 1_000_000_000;

/// Whether `event` may write a line now; `Some(suppressed so far)` if so.
#[inline(always)]
fn admit(event: LogEvent, now: u64) -> Option<u64> {
    let b = LOG_BUDGET.get_ptr_mut(event as u32)?;
    // SAFETY: an aligned map value of a shared array. The window reset is a plain write:
    // CPUs racing at the start of a second may each write one more line, which is harmless.
    // The counts are atomic adds (a BPF atomic add: core's AtomicU64 has no fetch_add on
    // this target).
    unsafe {
        if now.wrapping_sub((*b).window_start_ns) >= SECOND_NS {
            (*b).window_start_ns = now;
            (*b).in_window = 0;
        }
        let tried = (*b).in_window;
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut (*b).in_window, 1);
        if tried < LOG_LINES_PER_SECOND {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut (*b).logged, 1);
            Some((*b).suppressed)
        } else {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut (*b).suppressed, 1);
            None
        }
    }
}

/// Addresses arrive in network order; aya-log's `{:i}` prints a host-order u32.
#[inline(always)]
fn host(addr: u32) -> u32 {
    u32::from_be(addr)
}

#[inline(never)]
pub fn no_snat_port(rule_id: u16, target_addr: u32, target_port: u16, now: u64) {
    if let Some(suppressed) = admit(LogEvent::NoSnatPort, now) {
        warn!(
            &(),
            "event=no_snat_port rule_id={} target={:i}:{}: no free SNAT port in snat_ports; new connection dropped ({} such events not logged so far)",
            rule_id,
            host(target_addr),
            u16::from_be(target_port),
            suppressed
        );
    }
}

#[inline(never)]
pub fn table_full(rule_id: u16, now: u64) {
    if let Some(suppressed) = admit(LogEvent::TableFull, now) {
        warn!(
            &(),
            "event=table_full rule_id={}: max_flows connections are established; new connection refused ({} such events not logged so far)",
            rule_id,
            suppressed
        );
    }
}

#[inline(never)]
pub fn icmp_untranslated(rule_id: u16, to: u32, now: u64) {
    if let Some(suppressed) = admit(LogEvent::IcmpUntranslated, now) {
        warn!(
            &(),
            "event=icmp_untranslated rule_id={} to={:i}: an ICMP error about a tracked flow has no route back; dropped ({} such events not logged so far)",
            rule_id,
            host(to),
            suppressed
        );
    }
}

#[inline(never)]
pub fn half_evicted(now: u64) {
    if let Some(suppressed) = admit(LogEvent::HalfEvicted, now) {
        warn!(
            &(),
            "event=half_evicted: a handshake half was found alone, its other half evicted from the embryonic table (a SYN flood, or max_flows too small for the handshake rate) ({} such events not logged so far)",
            suppressed
        );
    }
}
