//! The frames the packet socket sends, made in userspace as the generator programs make
//! them in the kernel: one segment again and again, the segments of a stream in turn, or a
//! SYN flood's frames, each from a random source to the next listen port.

use super::progs::FloodSpec;
use crate::packet::{ones_complement_sum, ETH_LEN};

/// Offsets in an Ethernet + IPv4 (no options) + TCP frame.
const IP: usize = ETH_LEN;
const IP_CSUM: usize = IP + 10;
const IP_SRC: usize = IP + 12;
const TCP: usize = IP + 20;
const TCP_CSUM: usize = TCP + 16;

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
    rng: u64,
}

impl Flood {
    pub fn new(template: &[u8], spec: &FloodSpec) -> Flood {
        let (net, len) = spec.src;
        let mask = u32::MAX.checked_shr(len as u32).unwrap_or(0);
        // Any non-zero seed; the time makes runs differ as the kernel's prandom does.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Flood {
            template: template.to_vec(),
            net: u32::from(net) & !mask,
            mask,
            ports: spec.ports.clone(),
            n: 0,
            rng: seed | 1,
        }
    }

    /// xorshift64*: a cheap, good enough spread of sources and ports.
    fn random(&mut self) -> u32 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn next_into(&mut self, f: &mut Vec<u8>) {
        f.clear();
        f.extend_from_slice(&self.template);
        let src = self.net | (self.random() & self.mask);
        // Ports 1024 and up, as a client's.
        let sport = 1024 + (self.random() % (65536 - 1024)) as u16;
        let dport = self.ports[self.n % self.ports.len()];
        self.n += 1;
        f[IP_SRC..IP_SRC + 4].copy_from_slice(&src.to_be_bytes());
        f[TCP..TCP + 2].copy_from_slice(&sport.to_be_bytes());
        f[TCP + 2..TCP + 4].copy_from_slice(&dport.to_be_bytes());
        set_checksums(f);
    }
}

/// Writes the IPv4 header and TCP checksums of `f` (Ethernet + IPv4 without options + TCP,
/// the IP total length telling where the segment ends: the rest is Ethernet padding).
pub fn set_checksums(f: &mut [u8]) {
    f[IP_CSUM..IP_CSUM + 2].fill(0);
    let ip = !ones_complement_sum(&[&f[IP..TCP]]);
    f[IP_CSUM..IP_CSUM + 2].copy_from_slice(&ip.to_be_bytes());
    let total = u16::from_be_bytes([f[IP + 2], f[IP + 3]]) as usize;
    let tcp_len = total - 20;
    f[TCP_CSUM..TCP_CSUM + 2].fill(0);
    let pseudo = [&[0u8, 6][..], &(tcp_len as u16).to_be_bytes()[..]];
    let sum = !ones_complement_sum(&[
        &f[IP_SRC..IP_SRC + 8],
        pseudo[0],
        pseudo[1],
        &f[TCP..TCP + tcp_len],
    ]);
    f[TCP_CSUM..TCP_CSUM + 2].copy_from_slice(&sum.to_be_bytes());
}
