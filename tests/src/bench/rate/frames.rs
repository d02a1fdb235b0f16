//! The frames the packet socket sends, made in userspace as the generator programs make
//! them in the kernel: one segment again and again, the segments of a stream in turn, or a
//! SYN flood's frames, each from a random source to the next listen port.

use super::progs::FloodSpec;
use crate::{
    packet::{fix_checksums, ETH_LEN},
    rng::Rng,
};

/// Offsets in an Ethernet + IPv4 (no options) + TCP frame.
const IP_SRC: usize = ETH_LEN + 12;
const TCP: usize = ETH_LEN + 20;

pub enum Frames {
    /// These frames in turn, again and again.
    Cycle { frames: Vec<Vec<u8>>, next: usize },
    /// A new SYN each time.
    Flood(Flood),
}

impl Frames {
    pub fn cycle(frames: Vec<Vec<u8>>) -> Frames {
        Frames::Cycle { frames, next: 0 }
    }

    /// The next `n` frames: borrowed where they never change, made into `scratch` (its
    /// buffers reused) where each is new.
    pub fn next<'a>(&'a mut self, n: usize, scratch: &'a mut Vec<Vec<u8>>) -> Vec<&'a [u8]> {
        match self {
            Frames::Cycle { frames, next } => {
                let start = *next;
                *next = (start + n) % frames.len();
                let frames: &'a Vec<Vec<u8>> = frames;
                (0..n).map(|i| frames[(start + i) % frames.len()].as_slice()).collect()
            }
            Frames::Flood(f) => {
                scratch.resize_with(n, Vec::new);
                for s in scratch.iter_mut() {
                    f.next_into(s);
                }
                scratch.iter().map(Vec::as_slice).collect()
            }
        }
    }
}

/// The flood's frames: `template` (a SYN, IPv4 without options) from a random address of
/// `spec.src` and a random port, to the next of `spec.ports`.
pub struct Flood {
    template: Vec<u8>,
    net: u32,
    mask: u32,
    ports: Vec<u16>,
    n: usize,
    rng: Rng,
}

impl Flood {
    pub fn new(template: &[u8], spec: &FloodSpec) -> Flood {
        let (net, mask) = spec.net_and_mask();
        // Seeded from the clock: runs differ, as the kernel's prandom makes them differ.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Flood {
            template: template.to_vec(),
            net,
            mask,
            ports: spec.ports.clone(),
            n: 0,
            rng: Rng(seed),
        }
    }

    fn next_into(&mut self, f: &mut Vec<u8>) {
        f.clear();
        f.extend_from_slice(&self.template);
        let src = self.net | (self.rng.next_u64() as u32 & self.mask);
        // Ports 1024 and up, as a client's.
        let sport = 1024 + self.rng.below(65536 - 1024) as u16;
        let dport = self.ports[self.n % self.ports.len()];
        self.n += 1;
        f[IP_SRC..IP_SRC + 4].copy_from_slice(&src.to_be_bytes());
        f[TCP..TCP + 2].copy_from_slice(&sport.to_be_bytes());
        f[TCP + 2..TCP + 4].copy_from_slice(&dport.to_be_bytes());
        fix_checksums(f);
    }
}
