//! Incremental Internet checksum updates (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
//!
//! Values are the raw 16/32-bit words as they sit in the packet (read with `from_ne_bytes`),
//! so no byte swapping is needed: one's complement sums do not care about byte order as long
//! as every word is read the same way.

/// Accumulates the changes to one checksum, then applies them once.
#[derive(Clone, Copy, Default)]
pub struct CsumDelta(u64);

impl CsumDelta {
    #[inline(always)]
    pub fn new() -> Self {
        Self(0)
    }

    /// A 16-bit word at an even offset changed from `old` to `new`.
    #[inline(always)]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u64 + new as u64;
    }

    /// A 16-bit value at an odd offset from the start of the summed data: it straddles two
    /// words, which adds it byte-swapped.
    #[inline(always)]
    pub fn odd_word(&mut self, old: u16, new: u16) {
        self.word(old.swap_bytes(), new.swap_bytes());
    }

    /// A 32-bit field (two words) changed.
    #[inline(always)]
    pub fn dword(&mut self, old: u32, new: u32) {
        self.word(old as u16, new as u16);
        self.word((old >> 16) as u16, (new >> 16) as u16);
    }

    /// Another delta's changes also apply here: the pseudo-header shares the IP addresses,
    /// and on XDP the pseudo-header's and the segment's changes go to one checksum.
    #[inline(always)]
    pub fn merge(&mut self, other: CsumDelta) {
        self.0 += other.0;
    }

    /// The whole change as one folded 16-bit one's complement difference (what the kernel's
    /// checksum helpers take as a `diff`).
    #[inline(always)]
    pub fn folded(&self) -> u16 {
        fold(self.0)
    }

    /// The checksum field value after the changes, given the one before.
    #[inline(always)]
    pub fn apply(&self, check: u16) -> u16 {
        !fold((!check) as u64 + self.0)
    }
}

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    // Four rounds fold any sum of the few dozen words a delta ever holds.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}
