//! Map layout 2 (forwarder 0.1.x), as its pins hold it, and its conversion into this
//! build's layout. Kept until no supported release writes layout 2.
//!
//! What changed in layout 3: `CtEntry` grew `established_ns` (88 bytes instead of 80) and
//! `Config::_pad` became `Config::flags`. Every other map kept its key and value.

use forwarder_common::{CtEntry, FlowKey, NextHop};
use std::mem::{offset_of, size_of};

pub const VERSION: u32 = 2;

/// Layout 2's `CtEntry`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntryV2 {
    pub peer: FlowKey,
    pub nexthop: NextHop,
    pub last_seen_ns: u64,
    pub created_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub rule_id: u16,
    pub state: u8,
    pub flags: u8,
    pub _pad: u32,
}
const _: () = {
    assert!(size_of::<CtEntryV2>() == 80);
    assert!(offset_of!(CtEntryV2, nexthop) == 16);
    assert!(offset_of!(CtEntryV2, last_seen_ns) == 40);
    assert!(offset_of!(CtEntryV2, created_ns) == 48);
    assert!(offset_of!(CtEntryV2, packets) == 56);
    assert!(offset_of!(CtEntryV2, bytes) == 64);
    assert!(offset_of!(CtEntryV2, rule_id) == 72);
    assert!(offset_of!(CtEntryV2, state) == 74);
    assert!(offset_of!(CtEntryV2, flags) == 75);
    // The fields both layouts share sit at the same offsets: a conversion that only
    // appends is what `convert` does, and these say it still is.
    assert!(offset_of!(CtEntry, nexthop) == 16);
    assert!(offset_of!(CtEntry, last_seen_ns) == 40);
    assert!(offset_of!(CtEntry, created_ns) == 48);
    assert!(offset_of!(CtEntry, packets) == 56);
    assert!(offset_of!(CtEntry, bytes) == 64);
    assert!(offset_of!(CtEntry, rule_id) == 72);
    assert!(offset_of!(CtEntry, state) == 74);
    assert!(offset_of!(CtEntry, flags) == 75);
    assert!(offset_of!(CtEntry, established_ns) == 80);
    assert!(size_of::<CtEntry>() == 88);
};

// SAFETY: #[repr(C)], plain integers, explicit padding.
unsafe impl aya::Pod for CtEntryV2 {}

/// Every map layout 2 pins, with its key and value sizes: what an upgrade checks before it
/// reads them.
pub const MAPS: [(&str, usize, usize); 9] = {
    use forwarder_common::map_names as m;
    [
        (m::CONFIG, 4, 48),
        (m::RULES, 2, 8),
        (m::LISTEN_ADDRS, 4, 1),
        (m::ALLOWED_SOURCES, 8, 1),
        (m::CT_EMBRYONIC, 16, size_of::<CtEntryV2>()),
        (m::CT_ESTABLISHED, 16, size_of::<CtEntryV2>()),
        (m::RULE_STATS, 4, 8 * forwarder_common::COUNTERS),
        (m::NEXTHOP_GEN, 4, 4),
        (m::CT_COUNT, 4, 8),
    ]
};

/// One half of a flow in this build's layout: everything layout 2 kept (key, peer, state,
/// flags, counters, timestamps, SNAT port in the peer key, cached next hop); when its
/// handshake completed is unknown (0).
pub fn convert(old: &CtEntryV2) -> CtEntry {
    CtEntry {
        peer: old.peer,
        nexthop: old.nexthop,
        last_seen_ns: old.last_seen_ns,
        created_ns: old.created_ns,
        packets: old.packets,
        bytes: old.bytes,
        rule_id: old.rule_id,
        state: old.state,
        flags: old.flags,
        _pad: 0,
        established_ns: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_keeps_every_field_layout_2_had() {
        let old = CtEntryV2 {
            peer: FlowKey::new(1, 2, 3, 4, 6),
            nexthop: NextHop {
                ifindex: 7,
                gen: 8,
                smac: [1, 2, 3, 4, 5, 6],
                dmac: [6, 5, 4, 3, 2, 1],
                max_len: 1400,
                _pad: 0,
            },
            last_seen_ns: 9,
            created_ns: 10,
            packets: 11,
            bytes: 12,
            rule_id: 13,
            state: 3,
            flags: 1,
            _pad: 0,
        };
        let new = convert(&old);
        // Byte for byte over the shared 76 bytes, so a field added to both and forgotten
        // here shows.
        let bytes = |p: *const u8| unsafe { std::slice::from_raw_parts(p, 76) }.to_vec();
        assert_eq!(bytes(&old as *const _ as *const u8), bytes(&new as *const _ as *const u8));
        assert_eq!(new.established_ns, 0);
    }
}
