//! What the generator sends through the contender.
//!
//! - `Small`: the same 64-byte segment of the flow (ACK + 10 bytes) again and again: the
//!   packet-rate figure, every frame a separate packet for every contender (GRO cannot
//!   merge repeats of one segment).
//! - `Stream`: the MTU segments of a bulk transfer, as a NIC delivers them: 1514-byte
//!   frames whose sequence numbers follow one another, ACK only, DF set, so the NAT VM's
//!   GRO merges them for iptables and `tc` as it would merge a real stream, while an XDP
//!   program still sees every frame. The sequence numbers run over `STREAM_CYCLE` segments
//!   and start again, which keeps them inside the broker's window (netfilter's window
//!   tracking would otherwise mark them invalid and leave them untranslated).

use super::progs::{FRAME_LEN, MAX_FRAME_LEN};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    Small,
    Stream,
}

/// The stream's payload per frame: a 1500-byte MTU less the IPv4 and TCP headers.
pub const STREAM_PAYLOAD: usize = MAX_FRAME_LEN - 14 - 20 - 20;
/// Segments the stream's sequence numbers run over: 16 x 1460 bytes, 23 KB, well inside
/// the window a Linux receiver advertises from its first segment on.
pub const STREAM_CYCLE: u32 = 16;

impl Load {
    pub fn frame_len(self) -> usize {
        match self {
            Load::Small => FRAME_LEN,
            Load::Stream => MAX_FRAME_LEN,
        }
    }
}
