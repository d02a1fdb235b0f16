//! The bench programs' maps. Values are plain integers and byte arrays (and `Hop`, 16 bytes:
//! two MACs and an ifindex; `Flood`, 28 bytes; `Stream`, 8 bytes), so userspace
//! (tests/src/bench/rate/progs.rs) needs no shared type crate; the index enums, `Hop`,
//! `Flood` and `Stream` are mirrored there.

use crate::parse::{FRAME_LEN, MAX_FRAME_LEN};
use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
    EbpfContext,
};

/// The generator's frame (its first FRAME_LEN bytes: the headers, for a longer frame);
/// entry 0.
#[map(name = "TEMPLATE")]
pub static TEMPLATE: Array<[u8; FRAME_LEN]> = Array::with_max_entries(1, 0);

/// The floor program's next hop (entry 0), set by userspace.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hop {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub ifindex: u32,
}

const _: () = assert!(core::mem::size_of::<Hop>() == 16);

#[map(name = "FLOOR_HOP")]
pub static FLOOR_HOP: Array<Hop> = Array::with_max_entries(1, 0);

/// Destination ports the flood cycles over, at most.
pub const MAX_FLOOD_PORTS: usize = 8;

/// The flood generator's settings (entry 0), set by userspace.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Flood {
    /// Source network, its octets read as a native u32 (network order in memory).
    pub src_net: u32,
    /// The bits of the source address drawn at random, in the same representation.
    pub src_mask: u32,
    /// How many of `ports` are used (1..=MAX_FLOOD_PORTS).
    pub nports: u32,
    /// Destination ports, host order.
    pub ports: [u16; MAX_FLOOD_PORTS],
}

const _: () = assert!(core::mem::size_of::<Flood>() == 28);

#[map(name = "FLOOD")]
pub static FLOOD: Array<Flood> = Array::with_max_entries(1, 0);

/// The stream generator's settings (entry 0), set by userspace: frame n carries the
/// template's sequence number plus `(n % cycle) * step`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Stream {
    /// The payload length of a frame: the sequence number advances by it.
    pub step: u32,
    /// How many segments the sequence number runs over before it starts again (so it
    /// stays inside the receiver's window).
    pub cycle: u32,
}

const _: () = assert!(core::mem::size_of::<Stream>() == 8);

#[map(name = "STREAM")]
pub static STREAM: Array<Stream> = Array::with_max_entries(1, 0);

/// The generator's frame count per CPU (entry 0): the flood's destination port and the
/// stream's sequence number advance on it.
#[map(name = "FRAME_COUNT")]
pub static FRAME_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's next frame number (1, 2, ...).
#[inline(always)]
pub fn next_frame() -> u64 {
    match FRAME_COUNT.get_ptr_mut(0) {
        // SAFETY: a per-CPU value; only this program on this CPU writes it.
        Some(v) => unsafe {
            *v += 1;
            *v
        },
        None => 0,
    }
}

/// What a delivered frame must look like.
#[repr(u32)]
pub enum Expect {
    /// Source address, network order as read from the header.
    Saddr = 0,
    Daddr = 1,
    /// Source and destination ports, the header's 4 bytes read as a native u32.
    Ports = 2,
}

#[map(name = "EXPECT")]
pub static EXPECT: Array<u32> = Array::with_max_entries(3, 0);

/// The sink's counters, per CPU.
#[repr(u32)]
pub enum Count {
    /// Marked frames that arrived as expected (dropped).
    Delivered = 0,
    /// Marked frames with other addresses or ports (dropped, not counted as delivered).
    Untranslated = 1,
}

#[map(name = "COUNTS")]
pub static COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Frames the sink keeps whole.
#[repr(u32)]
pub enum Slot {
    /// One delivered frame in `SAMPLE_EVERY`.
    Sample = 0,
}

/// A kept frame: its first MAX_FRAME_LEN bytes, or FRAME_LEN of a shorter one (the rest as
/// it was: userspace clears the slot before a window).
#[map(name = "FRAMES")]
pub static FRAMES: Array<[u8; MAX_FRAME_LEN]> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn expect(e: Expect) -> u32 {
    EXPECT.get(e as u32).copied().unwrap_or(0)
}

/// Adds one to a counter; returns the new value on this CPU.
#[inline(always)]
pub fn count(c: Count) -> u64 {
    match COUNTS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU value, only this program on this CPU writes it.
        Some(v) => unsafe {
            *v += 1;
            *v
        },
        None => 0,
    }
}

/// Copies the frame into `slot`: a whole MTU frame, else its first FRAME_LEN bytes (the
/// helper's length must be a constant, so these are the two a generator sends); shorter
/// frames are not kept.
#[inline(always)]
pub fn record(ctx: &XdpContext, slot: Slot) {
    let len = ctx.data_end() - ctx.data();
    let Some(dst) = FRAMES.get_ptr_mut(slot as u32) else { return };
    // SAFETY: dst is a map value of MAX_FRAME_LEN bytes, no shorter than either length; the
    // helper checks the packet bounds.
    unsafe {
        if len >= MAX_FRAME_LEN {
            aya_ebpf::helpers::bpf_xdp_load_bytes(
                ctx.as_ptr() as *mut _,
                0,
                dst as *mut _,
                MAX_FRAME_LEN as u32,
            );
        } else if len >= FRAME_LEN {
            aya_ebpf::helpers::bpf_xdp_load_bytes(
                ctx.as_ptr() as *mut _,
                0,
                dst as *mut _,
                FRAME_LEN as u32,
            );
        }
    }
}
