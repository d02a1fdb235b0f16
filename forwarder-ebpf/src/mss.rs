//! MSS clamping of SYN and SYN-ACK, for paths (VPN, ExpressRoute) whose MTU is below 1500.

use crate::{
    context::{ptr_at, PacketContext},
    csum::CsumDelta,
    parse::Tcp,
};

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: u8 = 4;
/// Options walked at most; the MSS option comes first or nearly first in practice.
const MAX_OPTIONS: usize = 10;
const TCP_BASE_LEN: usize = 20;

/// Lowers the MSS option to `max_mss` if it is larger; returns the TCP checksum change.
#[inline(always)]
pub fn clamp<C: PacketContext>(ctx: &C, tcp: &Tcp, max_mss: u16) -> Option<CsumDelta> {
    let end = tcp.hdr_len;
    let mut off = TCP_BASE_LEN;
    for _ in 0..MAX_OPTIONS {
        // The walk ends at the header's end (at most 60 bytes); only then is the offset
        // masked, which keeps it visibly bounded for the verifier and changes nothing.
        // Masked first, an option length that carried it past 63 wrapped it back into the
        // TCP header: 20 + 44 became 0, and the ports were read as an MSS option.
        if off >= end {
            return None;
        }
        off &= 0x3f;
        // One 4-byte window per option: kind, length and (for MSS) the value. A window that
        // runs past the packet ends the walk; an MSS option cannot be there anyway.
        let opt: *mut [u8; 4] = ptr_at(ctx, tcp.ip.l4_off + off)?;
        // SAFETY: bounds checked by ptr_at.
        let [kind, len, v0, v1] = unsafe { *opt };
        if kind == TCPOPT_EOL {
            return None;
        }
        if kind == TCPOPT_NOP {
            off += 1;
            continue;
        }
        if kind == TCPOPT_MSS && len == TCPOLEN_MSS && off + 4 <= end {
            if u16::from_be_bytes([v0, v1]) <= max_mss {
                return None;
            }
            let new = max_mss.to_be_bytes();
            // SAFETY: as above.
            unsafe { *opt = [kind, len, new[0], new[1]] };
            let mut d = CsumDelta::new();
            let (old, new) = (u16::from_ne_bytes([v0, v1]), u16::from_ne_bytes(new));
            // The value sits at off + 2, which is even exactly when off is.
            if off % 2 == 0 {
                d.word(old, new);
            } else {
                d.odd_word(old, new);
            }
            return Some(d);
        }
        if len < 2 {
            return None;
        }
        off += len as usize;
    }
    None
}
