//! Packet rate of one established TCP flow of 64-byte frames through the NAT VM, and what
//! each frame costs in CPU, for every way of forwarding it, side by side.
//!
//! - `bed`: the namespaces (hairpin: one NIC, XDP_TX; router: two NICs, redirect).
//! - `contender`: the ways of forwarding, set up and taken down in a fresh bed each;
//!   `rules` what each is configured with.
//! - `flow`: the real TCP connection opened through the contender, then frozen.
//! - `progs`: the bench-only XDP programs: live-frames generator, counting sink, ceiling.
//! - `send`: one measured send window (frames, delivered, CPU time).
//! - `report`: medians, ratios, the Markdown tables.
//!
//! The generator is BPF_PROG_TEST_RUN in live-frames mode from a thread pinned to one CPU
//! in the client's namespace; it sends out of g0, N forwards, the sink on the broker's veth
//! end counts the frames that arrive translated and drops them. The generator, N and the
//! sink run on the generator's CPU (veth NAPI runs where the frames are sent), so busy CPU
//! per delivered frame is the figure; packets/s is what that CPU manages with all three.

pub mod bed;
pub mod contender;
mod cpu;
pub mod flow;
pub mod progs;
pub mod report;
mod rules;
pub mod send;

use anyhow::Result;
pub use bed::Shape;
pub use contender::Contender;

#[derive(Clone, Debug)]
pub struct Options {
    /// Frames per measured send window.
    pub frames: u64,
    pub rounds: usize,
    pub shapes: Vec<Shape>,
    pub contenders: Vec<Contender>,
}

impl Options {
    pub fn full() -> Options {
        Options {
            frames: 5_000_000,
            rounds: 3,
            shapes: Shape::ALL.to_vec(),
            contenders: Contender::ALL.to_vec(),
        }
    }

    /// Every shape and contender once, with few frames: checks the bed, not the speed.
    pub fn quick() -> Options {
        Options { frames: 200_000, rounds: 1, ..Options::full() }
    }
}

/// One contender in one shape: its samples, or why it could not run.
pub struct Outcome {
    pub shape: Shape,
    pub contender: Contender,
    pub samples: Vec<send::Sample>,
    pub unavailable: Option<String>,
}

/// Every shape and contender, rounds interleaved (each round runs every contender once, so
/// the machine's noise hits them alike), each sample in a fresh bed. Fails on the first
/// contender that cannot be set up or delivers nothing, except one the kernel lacks.
pub fn measure(opts: &Options, say: &mut dyn FnMut(&str)) -> Result<Vec<Outcome>> {
    let mut out: Vec<Outcome> = Vec::new();
    for &shape in &opts.shapes {
        for &contender in &opts.contenders {
            out.push(Outcome { shape, contender, samples: Vec::new(), unavailable: None });
        }
    }
    for round in 0..opts.rounds {
        for o in out.iter_mut() {
            if o.unavailable.is_some() {
                continue;
            }
            match send::sample(o.shape, o.contender, opts.frames)? {
                Ok(s) => {
                    say(&format!(
                        "round {}/{} {:?} {}: {:.2} Mpps, {:.0} ns busy CPU per packet",
                        round + 1,
                        opts.rounds,
                        o.shape,
                        o.contender.name(),
                        s.mpps(),
                        s.busy_ns_per_packet()
                    ));
                    o.samples.push(s);
                }
                Err(why) => {
                    say(&format!("{:?} {}: {}", o.shape, o.contender.name(), why.0));
                    o.unavailable = Some(why.0);
                }
            }
        }
    }
    Ok(out)
}
