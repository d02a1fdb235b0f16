//! What sends the bed's frames, and which one this kernel allows.
//!
//! Two senders make the same frames (addresses, ports, sequence numbers, checksums):
//! - **live frames** (`progs::Generator`): BPF_PROG_TEST_RUN with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES`. A generator program writes each frame into a page-pool
//!   page and XDP_TX sends it out of the interface, 64 per batch, timed by the kernel: no
//!   skb and no system call per frame, so the sender's own cost is small. The finer
//!   instrument.
//! - **packet socket** (`packet_socket`): AF_PACKET with `PACKET_QDISC_BYPASS`, frames
//!   made in userspace (`frames`) and handed to the driver 64 per `sendmmsg`. Each frame is
//!   an skb copied from userspace, and on veth the receiver's NAPI runs on the sending CPU
//!   as each frame's transmit ends. A costlier sender: figures made with it are read above
//!   the floor, which is measured with the same sender in the same run.
//!
//! Some kernels refuse live-frames runs (EPERM, even to root: kernel 6.18.44-fc-v1300
//! does). `SenderKind::chosen` probes once per process in a namespace of its own and picks
//! the packet socket then; `FWT_SENDER=live-frames|packet-socket` chooses by hand (and
//! fails if the kernel refuses the choice).

use super::{
    frames::{Flood, Frames},
    packet_socket::PacketSocket,
    progs::{FloodSpec, Generator, FRAME_LEN},
};
use anyhow::{bail, Context, Result};
use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The variable that chooses the sender by hand.
pub const SENDER_VAR: &str = "FWT_SENDER";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderKind {
    LiveFrames,
    PacketSocket,
}

impl SenderKind {
    /// Its name in FWT_SENDER and in the output.
    pub fn name(self) -> &'static str {
        match self {
            SenderKind::LiveFrames => "live-frames",
            SenderKind::PacketSocket => "packet-socket",
        }
    }

    /// What it is, for the reports.
    pub fn describe(self) -> &'static str {
        match self {
            SenderKind::LiveFrames => {
                "live-frames generator (BPF_PROG_TEST_RUN, `BPF_F_TEST_XDP_LIVE_FRAMES`, 64 \
                 frames per batch)"
            }
            SenderKind::PacketSocket => {
                "packet-socket sender (AF_PACKET, `PACKET_QDISC_BYPASS`, 64 frames per \
                 `sendmmsg`)"
            }
        }
    }

    /// FWT_SENDER if set, else live frames where this kernel runs them, else the packet
    /// socket. Decided once per process.
    pub fn chosen() -> Result<SenderKind> {
        static CHOSEN: OnceLock<std::result::Result<SenderKind, String>> = OnceLock::new();
        CHOSEN
            .get_or_init(|| choose().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow::anyhow!("choosing the packet sender: {e}"))
    }
}

fn choose() -> Result<SenderKind> {
    let live = live_frames_allowed();
    match std::env::var(SENDER_VAR).ok().as_deref() {
        None | Some("") | Some("auto") => Ok(match live? {
            Ok(()) => SenderKind::LiveFrames,
            Err(_) => SenderKind::PacketSocket,
        }),
        Some("live-frames") => match live? {
            Ok(()) => Ok(SenderKind::LiveFrames),
            Err(why) => bail!(
                "{SENDER_VAR}=live-frames, but this kernel refuses live-frames test runs \
                 ({why}); unset {SENDER_VAR} or set it to packet-socket"
            ),
        },
        Some("packet-socket") => Ok(SenderKind::PacketSocket),
        Some(other) => {
            bail!("{SENDER_VAR}={other}: expected auto, live-frames or packet-socket")
        }
    }
}

/// Whether a live-frames test run works here: one frame sent between two veth ends of a
/// namespace made for the probe. Err is a failure to probe at all; Ok(Err) the kernel's
/// refusal (EPERM on kernels that lock the mode away).
fn live_frames_allowed() -> Result<std::result::Result<(), String>> {
    let ns = crate::netns::Netns::new("probe")?;
    ns.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"])?;
    ns.ip(&["link", "set", "p0", "up"])?;
    ns.ip(&["link", "set", "p1", "up"])?;
    let ifindex = ns.ifindex("p0")?;
    let mut frame = [0u8; FRAME_LEN];
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let sent = ns.enter(move || -> Result<std::result::Result<(), String>> {
        let gen = Generator::new(ifindex, frame)?;
        Ok(match gen.send(1) {
            Ok(_) => Ok(()),
            Err(e) => {
                let eperm = e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error())
                        == Some(libc::EPERM)
                        || c.to_string().contains("Operation not permitted")
                });
                if !eperm {
                    return Err(e.context("probing live-frames test runs"));
                }
                Err(format!("{e:#}"))
            }
        })
    })??;
    Ok(sent)
}

/// What one `Sender::send` did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// Frames offered to the interface.
    pub offered: u64,
    /// Of them, refused by the driver (packet socket: its queue was stopped, the peer's
    /// receive ring full). Live frames counts those as ring drops on the receiving end.
    pub refused: u64,
    /// Time spent sending: the kernel's own timing of its send loop for live frames, the
    /// wall time of the system calls (and of making flood frames) for the packet socket.
    pub time: Duration,
}

/// A sender of one kind, set up with its frames, in the namespace it was made in.
pub enum Sender {
    LiveFrames(Generator),
    PacketSocket { socket: PacketSocket, frames: Frames, scratch: Vec<Vec<u8>> },
}

impl Sender {
    /// `frame` again and again (one established flow's segment).
    pub fn repeat(kind: SenderKind, ifindex: u32, frame: [u8; FRAME_LEN]) -> Result<Sender> {
        match kind {
            SenderKind::LiveFrames => Ok(Sender::LiveFrames(Generator::new(ifindex, frame)?)),
            SenderKind::PacketSocket => {
                Sender::socket(ifindex, Frames::cycle(vec![frame.to_vec()]))
            }
        }
    }

    /// The segments of a bulk stream in turn: `segments[k]` is the first one's sequence
    /// number plus `k * step`, each with its checksum (the live-frames generator makes them
    /// from the first).
    pub fn stream(
        kind: SenderKind,
        ifindex: u32,
        segments: Vec<Vec<u8>>,
        step: u32,
    ) -> Result<Sender> {
        match kind {
            SenderKind::LiveFrames => {
                let cycle = segments.len() as u32;
                let first = segments.into_iter().next().context("a stream of no segment")?;
                Ok(Sender::LiveFrames(Generator::stream(ifindex, first, step, cycle)?))
            }
            SenderKind::PacketSocket => Sender::socket(ifindex, Frames::cycle(segments)),
        }
    }

    /// SYNs from `template`, each from a random source of `spec.src` to the next port.
    pub fn flood(
        kind: SenderKind,
        ifindex: u32,
        template: [u8; FRAME_LEN],
        spec: &FloodSpec,
    ) -> Result<Sender> {
        match kind {
            SenderKind::LiveFrames => {
                Ok(Sender::LiveFrames(Generator::flood(ifindex, template, spec)?))
            }
            SenderKind::PacketSocket => {
                Sender::socket(ifindex, Frames::Flood(Flood::new(&template, spec)))
            }
        }
    }

    fn socket(ifindex: u32, frames: Frames) -> Result<Sender> {
        Ok(Sender::PacketSocket {
            socket: PacketSocket::open(ifindex)?,
            frames,
            scratch: Vec::new(),
        })
    }

    pub fn kind(&self) -> SenderKind {
        match self {
            Sender::LiveFrames(_) => SenderKind::LiveFrames,
            Sender::PacketSocket { .. } => SenderKind::PacketSocket,
        }
    }

    /// Sends `n` frames (at most u32::MAX). Must run in the namespace of the interface.
    pub fn send(&mut self, n: u64) -> Result<Sent> {
        match self {
            Sender::LiveFrames(g) => {
                let n32 = u32::try_from(n).context("a live-frames run of over 2^32 frames")?;
                Ok(Sent { offered: n, refused: 0, time: g.send(n32)? })
            }
            Sender::PacketSocket { socket, frames, scratch } => {
                let t0 = Instant::now();
                let mut refused = 0;
                let mut left = n;
                while left > 0 {
                    let k = left.min(1024) as usize;
                    let handed = socket.send(&frames.next(k, scratch))?;
                    refused += handed.refused;
                    left -= k as u64;
                }
                Ok(Sent { offered: n, refused, time: t0.elapsed() })
            }
        }
    }
}
