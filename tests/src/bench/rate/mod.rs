//! Packet rate of one established TCP flow through the NAT VM, and what each frame costs in
//! CPU, for every way of forwarding it, side by side: 64-byte frames in both shapes, and the
//! MTU frames of a bulk stream in the hairpin.
//!
//! - `bed`: the namespaces (hairpin: one NIC, XDP_TX; router: two NICs, redirect).
//! - `load`: what the generator sends (one small segment again and again, or a stream).
//! - `contender`: the ways of forwarding, set up and taken down in a fresh bed each;
//!   `rules` what each is configured with.
//! - `flow`: the real TCP connection opened through the contender, then frozen.
//! - `progs`: the bench-only XDP programs: live-frames generator, counting sink, ceiling.
//! - `sender`: what sends the frames (the live-frames generator where the kernel allows it,
//!   else `packet_socket` with the frames of `frames`), chosen once per process.
//! - `send`: one measured send window (frames, delivered, CPU time).
//! - `report`: medians, ratios, the Markdown tables.
//!
//! The sender runs on a thread pinned to one CPU in the client's namespace; it sends out of
//! g0, N forwards, the sink on the broker's veth end counts the frames that arrive
//! translated and drops them. The sender, N and the sink run on the sender's CPU (veth NAPI
//! runs where the frames are sent), so busy CPU per delivered frame is the figure, and
//! above the floor (the same sender's) what the contender adds; packets/s is what that CPU
//! manages with all three.

pub mod bed;
pub mod contender;
mod cpu;
pub mod flow;
pub mod frames;
pub mod load;
pub mod packet_socket;
pub mod profile;
pub mod progs;
pub mod report;
mod rules;
pub mod send;
pub mod sender;

use anyhow::{Context, Result};
pub use bed::Shape;
pub use contender::Contender;
pub use load::Load;

/// The fewest frames a profiled window sends. `tc`'s program is 1-2 % of its thread's
/// time, so `--quick`'s 100,000 stream frames (about 50 ms, a hundred-odd perf samples)
/// could leave it without one sample and fail `Parts::check`; a million give it dozens.
const PROFILE_FRAMES: u64 = 1_000_000;

#[derive(Clone, Debug)]
pub struct Options {
    /// Frames per measured send window of 64-byte frames.
    pub frames: u64,
    /// Frames per measured send window of the stream (MTU frames, each costing more).
    pub stream_frames: u64,
    pub rounds: usize,
    /// The beds measured and what is sent through each.
    pub cases: Vec<(Shape, Load)>,
    pub contenders: Vec<Contender>,
    /// One more stream sample per contender under `perf record`, for the profile table.
    pub profile_stream: bool,
}

impl Options {
    /// Five million 64-byte frames per window (two million of the stream) from the
    /// live-frames generator, a fifth of that from the packet socket: it sends 20-50 times
    /// slower, and its windows would otherwise run into LIMIT.
    pub fn full() -> Options {
        let socket = sender::SenderKind::chosen().ok() == Some(sender::SenderKind::PacketSocket);
        let scale = if socket { 5 } else { 1 };
        Options {
            frames: 5_000_000 / scale,
            stream_frames: 2_000_000 / scale,
            rounds: 3,
            cases: vec![
                (Shape::Hairpin, Load::Small),
                (Shape::Router, Load::Small),
                (Shape::Hairpin, Load::Stream),
            ],
            contenders: Contender::ALL.to_vec(),
            profile_stream: true,
        }
    }

    /// Frames per measured send window under `load`.
    pub fn frames_for(&self, load: Load) -> u64 {
        match load {
            Load::Small => self.frames,
            Load::Stream => self.stream_frames,
        }
    }

    /// Every shape and contender once, with few frames: checks the bed, not the speed.
    pub fn quick() -> Options {
        Options { frames: 200_000, stream_frames: 100_000, rounds: 1, ..Options::full() }
    }
}

/// One contender in one shape under one load: its samples, or why it could not run.
pub struct Outcome {
    pub shape: Shape,
    pub load: Load,
    pub contender: Contender,
    pub samples: Vec<send::Sample>,
    pub unavailable: Option<String>,
    /// The stream's profile (`Options::profile_stream`).
    pub parts: Option<profile::Parts>,
}

/// Every shape and contender, rounds interleaved (each round runs every contender once, so
/// the machine's noise hits them alike), each sample in a fresh bed. Fails on the first
/// contender that cannot be set up or delivers nothing, except one the kernel lacks.
pub fn measure(opts: &Options, say: &mut dyn FnMut(&str)) -> Result<Vec<Outcome>> {
    let kind = sender::SenderKind::chosen()?;
    say(&format!("sender: the {} ({}={})", kind.describe(), sender::SENDER_VAR, kind.name()));
    let mut out: Vec<Outcome> = Vec::new();
    for &(shape, load) in &opts.cases {
        for &contender in &opts.contenders {
            out.push(Outcome {
                shape,
                load,
                contender,
                samples: Vec::new(),
                unavailable: None,
                parts: None,
            });
        }
    }
    for round in 0..opts.rounds {
        for o in out.iter_mut() {
            if o.unavailable.is_some() {
                continue;
            }
            match send::sample(o.shape, o.load, o.contender, opts.frames_for(o.load), None)? {
                Ok(s) => {
                    say(&format!(
                        "round {}/{} {:?} {:?} {}: {:.2} Mpps, {:.0} ns busy CPU per packet",
                        round + 1,
                        opts.rounds,
                        o.shape,
                        o.load,
                        o.contender.name(),
                        s.mpps(),
                        s.busy_ns_per_packet()
                    ));
                    o.samples.push(s);
                }
                Err(why) => {
                    say(&format!("{:?} {:?} {}: {}", o.shape, o.load, o.contender.name(), why.0));
                    o.unavailable = Some(why.0);
                }
            }
        }
    }
    if opts.profile_stream {
        let dir = tempfile::TempDir::new()?;
        for o in out.iter_mut().filter(|o| o.load == Load::Stream && o.unavailable.is_none()) {
            let file = dir.path().join("perf.data");
            let frames = opts.frames_for(o.load).max(PROFILE_FRAMES);
            let s = match send::sample(o.shape, o.load, o.contender, frames, Some(&file))? {
                Ok(s) => s,
                Err(why) => {
                    anyhow::bail!("{} could not be profiled: {}", o.contender.name(), why.0)
                }
            };
            let parts = profile::Parts::of(&file, s.window)?;
            parts.check(o.contender, kind).with_context(|| {
                format!(
                    "BPF lines of the window: {}",
                    profile::Parts::unnamed_or_bpf(&file, s.window)
                )
            })?;
            say(&format!("profiled {:?} {:?} {}: {parts:?}", o.shape, o.load, o.contender.name()));
            o.parts = Some(parts);
        }
    }
    Ok(out)
}
