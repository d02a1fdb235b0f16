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

use super::{
    progs::{FRAME_LEN, MAX_FRAME_LEN},
    send::PAYLOAD,
};
use crate::packet::{flags, payload_pattern};

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

    /// The TCP flags of the generator's segment: a stream's carry no PSH, which would end
    /// a GRO merge at every frame.
    pub fn tcp_flags(self) -> u8 {
        match self {
            Load::Small => flags::ACK | flags::PSH,
            Load::Stream => flags::ACK,
        }
    }

    /// The generator's payload.
    pub fn payload(self) -> Vec<u8> {
        match self {
            Load::Small => PAYLOAD.to_vec(),
            Load::Stream => payload_pattern(STREAM_PAYLOAD, 7),
        }
    }

    /// How many segments the generator's sequence numbers run over (1: the same one).
    pub fn cycle(self) -> u32 {
        match self {
            Load::Small => 1,
            Load::Stream => STREAM_CYCLE,
        }
    }
}
