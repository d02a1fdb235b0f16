//! Incremental checksum updates (RFC 1624) for the generators, which rewrite a few header
//! fields of a template whose checksums are right.

/// A ones' complement checksum being updated: ~check, plus ~old and new of each changed
/// 16-bit word (RFC 1624, eqn. 3), folded at the end.
pub struct Csum(u32);

impl Csum {
    #[inline(always)]
    pub fn from_check(check: [u8; 2]) -> Csum {
        Csum(!u16::from_be_bytes(check) as u32)
    }

    #[inline(always)]
    pub fn replace2(&mut self, old: [u8; 2], new: [u8; 2]) {
        self.0 += !u16::from_be_bytes(old) as u32 + u16::from_be_bytes(new) as u32;
    }

    #[inline(always)]
    pub fn replace4(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.replace2([old[0], old[1]], [new[0], new[1]]);
        self.replace2([old[2], old[3]], [new[2], new[3]]);
    }

    #[inline(always)]
    pub fn check(self) -> [u8; 2] {
        let mut s = self.0;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        (!(s as u16)).to_be_bytes()
    }
}
