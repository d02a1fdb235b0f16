//! One sample: a fresh bed, the contender in it, the flow through it, then a bounded send
//! window measured and its delivered frames checked.

use super::{
    bed::{Bed, Shape, CLIENT},
    contender::{Contender, Setup, Unavailable},
    cpu,
    flow::Flow,
    load::{Load, STREAM_PAYLOAD},
    progs::{FRAME_LEN, MARK},
    sender::{Sender, SenderKind},
};
use crate::{
    bench::{
        cpu::Busy,
        profile::{Monotonic, Perf},
    },
    packet::{parse_tcp, Tcp},
};
use anyhow::{bail, ensure, Context, Result};
use std::{
    net::SocketAddrV4,
    path::Path,
    time::{Duration, Instant},
};

/// Frames per send: the send window is checked against its time limit between sends. Each
/// live-frames test run also sets up and tears down its page pool, which leaves the CPU
/// idle for ~25 ms (seen here: 250k-frame runs put the ceiling at half its rate), so runs
/// are long and the rate is taken from the kernel's own timing of the send loop.
const CHUNK: u64 = 1_000_000;
/// Longest send window; a contender slower than FRAMES / LIMIT is cut short.
const LIMIT: Duration = Duration::from_secs(20);
/// Frames sent before the window, which must arrive (neighbours, caches, the contender's
/// first-packet work).
const WARMUP: u64 = 20_000;
/// The generator's payload: 10 bytes make the frame 64.
pub const PAYLOAD: &[u8; 10] = b"bench-rate";

#[derive(Clone, Debug)]
pub struct Sample {
    /// What sent the frames.
    pub sender: SenderKind,
    /// Frames offered to the NAT VM's link.
    pub sent: u64,
    /// Of them, refused by the sending driver (see `sender::Sent::refused`).
    pub refused: u64,
    pub delivered: u64,
    pub wall_ns: f64,
    /// Time spent sending: inside the test runs' send loops as the kernel timed them (the
    /// window less each run's set-up and tear-down), or in the packet socket's calls.
    pub loop_ns: f64,
    /// Busy time of all CPUs during the window.
    pub busy_ns: f64,
    /// Busy time of the generator's CPU.
    pub gen_cpu_busy_ns: f64,
    /// CPU time of the generator thread itself.
    pub gen_thread_ns: f64,
    /// Frames of the window the generator could not hand to the NAT VM because its veth
    /// receive ring was full (counted by n0 as dropped on receive): the bed's losses, not
    /// the contender's, when the contender drains its ring slower than the generator fills
    /// it.
    pub ring_drops: u64,
    /// When the window began and ended, on the clock `perf record` stamps its samples with:
    /// the part of a profile that is this window.
    pub window: (Monotonic, Monotonic),
}

impl Sample {
    /// Delivered frames per second of sending.
    pub fn mpps(&self) -> f64 {
        self.delivered as f64 / self.loop_ns * 1e3
    }
    /// Frames offered per second of sending: what the sender managed with the contender
    /// (on veth the NAT VM's receive work runs on the sender's CPU, so a costlier contender
    /// is offered fewer frames per second).
    pub fn offered_mpps(&self) -> f64 {
        self.sent as f64 / self.loop_ns * 1e3
    }
    pub fn busy_ns_per_packet(&self) -> f64 {
        self.busy_ns / self.delivered.max(1) as f64
    }
    pub fn gen_cpu_ns_per_packet(&self) -> f64 {
        self.gen_cpu_busy_ns / self.delivered.max(1) as f64
    }
    /// How busy the other CPUs were during the window (0..1): unrelated load there shows
    /// up in `busy_ns`.
    pub fn others_busy(&self) -> f64 {
        let others = std::thread::available_parallelism().map(|n| n.get() - 1).unwrap_or(1);
        (self.busy_ns - self.gen_cpu_busy_ns).max(0.0) / (self.wall_ns * others.max(1) as f64)
    }
    pub fn gen_thread_ns_per_packet(&self) -> f64 {
        self.gen_thread_ns / self.delivered.max(1) as f64
    }
}

/// The generator's frame and what it must look like at the sink.
struct Plan {
    frame: Tcp,
    expect_src: SocketAddrV4,
    expect_dst: SocketAddrV4,
}

/// With `perf_data`, `perf record` runs into that file from before the contender is set up
/// until the window ends, and the sample's `window` says which part of it to read (see
/// `profile`): a sample to read the profile of, not one to measure with. Recording from
/// before the contender loads makes the kernel itself announce each of its programs to perf
/// (a ksymbol event at load) rather than leaving their names to what perf lists of the
/// programs already loaded when it starts.
pub fn sample(
    shape: Shape,
    load: Load,
    c: Contender,
    frames: u64,
    perf_data: Option<&Path>,
) -> Result<Result<Sample, Unavailable>> {
    let mut bed = Bed::new(shape, "rt")?;
    let perf = match perf_data {
        Some(file) => {
            let p = Perf::record(file)?;
            // perf record takes a moment to open its events on every CPU.
            std::thread::sleep(Duration::from_millis(500));
            Some(p)
        }
        None => None,
    };
    let setup = match Setup::enter(&bed, c).with_context(|| format!("setting up {}", c.name()))? {
        Ok(s) => s,
        Err(why) => return Ok(Err(why)),
    };
    let result = measure(&mut bed, &setup, load, c, frames).and_then(|s| match perf {
        Some(p) => p.stop().map(|()| s),
        None => Ok(s),
    });
    let left = setup.leave(&bed).with_context(|| format!("taking {} down", c.name()));
    let s = result.with_context(|| format!("{shape:?} bed, {load:?} load, {}", c.name()))?;
    left?;
    Ok(Ok(s))
}

fn measure(bed: &mut Bed, setup: &Setup, load: Load, c: Contender, frames: u64) -> Result<Sample> {
    let ((gen_smac, gen_dmac), (fwd_smac, fwd_dmac)) = bed.macs();
    let tcp_flags = load.tcp_flags();
    let (flow, plan) = if c.nat() {
        let flow = Flow::open(bed)?;
        setup.check_flow(bed, flow.client)?;
        let frame = Tcp::new(flow.client, bed.listen(), tcp_flags).seq(flow.seq).ack(flow.ack);
        let plan = Plan { frame, expect_src: flow.snat, expect_dst: bed.broker() };
        (Some(flow), plan)
    } else {
        // No connection: routing and the ceiling forward by address alone.
        let src = SocketAddrV4::new(CLIENT, 40001);
        let frame = Tcp::new(src, bed.broker(), tcp_flags);
        (None, Plan { frame, expect_src: src, expect_dst: bed.broker() })
    };
    let payload = load.payload();
    let frame = plan.frame.clone().macs(gen_smac, gen_dmac).payload(payload.clone());
    let bytes = marked(&frame);
    ensure!(
        bytes.len() == load.frame_len(),
        "the generator's frame is {} bytes, not {}",
        bytes.len(),
        load.frame_len()
    );
    bed.sink().expect(plan.expect_src, plan.expect_dst)?;

    // The segments the sender cycles over (one for the small load), each a whole frame.
    let segments: Vec<Vec<u8>> = (0..load.cycle())
        .map(|k| {
            let step = payload.len() as u32;
            marked(&frame.clone().seq(frame.seq.wrapping_add(k * step)))
        })
        .collect();
    ensure!(segments[0] == bytes, "the first segment is the generator's frame");
    let kind = SenderKind::chosen()?;
    let ifindex = bed.gen.ifindex("g0")?;
    let gen = bed.gen.enter(move || match load {
        Load::Small => Sender::repeat(kind, ifindex, bytes.try_into().expect("checked above")),
        Load::Stream => Sender::stream(kind, ifindex, segments, STREAM_PAYLOAD as u32),
    })??;
    let (gen, _) = window(bed, gen, WARMUP)?;
    let warm = bed.sink().counts()?;
    if warm.delivered == 0 {
        bail!(
            "{} delivered none of {WARMUP} warm-up frames ({} arrived untranslated)",
            c.name(),
            warm.untranslated
        );
    }
    // The sample checked below must come from the measured window.
    bed.sink().clear_sample()?;
    let drops_before = bed.nat.link_counter("n0", "rx", "dropped")?;
    let (_gen, mut s) = window(bed, gen, frames)?;
    s.ring_drops = bed.nat.link_counter("n0", "rx", "dropped")? - drops_before;
    let after = bed.sink().counts()?;
    s.delivered = after.delivered - warm.delivered;

    // The frames that arrived were translated as a whole and correctly.
    let sample =
        bed.sink().sample(load.frame_len())?.context("the sink kept no delivered frame")?;
    let got = parse_tcp(&sample);
    ensure!(
        got.src() == plan.expect_src && got.dst() == plan.expect_dst,
        "delivered {} -> {}",
        got.src(),
        got.dst()
    );
    ensure!(got.ip.identification == MARK, "delivered frame's IP id {:#x}", got.ip.identification);
    ensure!(got.ip.time_to_live == frame.ttl - 1, "delivered TTL {}", got.ip.time_to_live);
    // The small load repeats one segment; the stream's is one of its cycle.
    let advanced = got.tcp.sequence_number.wrapping_sub(frame.seq);
    let cycle = load.cycle();
    ensure!(
        advanced % payload.len() as u32 == 0 && advanced / (payload.len() as u32) < cycle,
        "delivered seq {} is not one of the {cycle} segment(s) from {}",
        got.tcp.sequence_number,
        frame.seq
    );
    ensure!(got.payload == payload, "delivered payload differs from the generator's");
    ensure!(
        got.eth.source == fwd_smac && got.eth.destination == fwd_dmac,
        "delivered MACs {:x?} -> {:x?}",
        got.eth.source,
        got.eth.destination
    );
    if let Some(client_sink) = bed.client_sink() {
        let back = client_sink.counts()?;
        ensure!(
            back.delivered + back.untranslated == 0,
            "{} frames came back to the client",
            back.untranslated
        );
    }
    if let Some(client) = flow.as_ref().map(|f| f.client) {
        if let Some(p) = setup.flow_packets(bed, client)? {
            ensure!(
                p >= s.delivered,
                "the forwarder counted {p} packets on the flow, the sink {}",
                s.delivered
            );
        }
    }
    Ok(s)
}

/// `tcp` as the generator sends it: marked, 64 bytes.
pub fn generator_frame(tcp: &Tcp) -> Result<[u8; FRAME_LEN]> {
    marked(tcp).try_into().map_err(|f: Vec<u8>| {
        anyhow::anyhow!("the generator's frame is {} bytes, not {FRAME_LEN}", f.len())
    })
}

/// `tcp`'s frame with the generator's IP id, which the sink counts.
fn marked(tcp: &Tcp) -> Vec<u8> {
    let mut tcp = tcp.clone();
    tcp.ip_id = MARK;
    tcp.frame()
}

/// Sends `frames` from a thread in G pinned to the generator's CPU, in chunks, stopping at
/// LIMIT; measures wall, CPU and the generator thread's time around the sending. The thread
/// is named for the profile, and the window's span kept on perf's clock.
fn window(bed: &mut Bed, mut gen: Sender, frames: u64) -> Result<(Sender, Sample)> {
    let cpu_n = cpu::generator_cpu();
    bed.gen.enter(move || -> Result<(Sender, Sample)> {
        cpu::pin(cpu_n)?;
        cpu::name_thread(super::profile::GEN_COMM)?;
        let start = Monotonic::now();
        let (busy0, thread0, t0) = (Busy::now()?, cpu::thread_ns(), Instant::now());
        let (mut sent, mut refused, mut loop_ns) = (0, 0, 0.0);
        while sent < frames && t0.elapsed() < LIMIT {
            let n = CHUNK.min(frames - sent);
            let s = gen.send(n)?;
            loop_ns += s.time.as_nanos() as f64;
            sent += s.offered;
            refused += s.refused;
        }
        let (thread1, wall) = (cpu::thread_ns(), t0.elapsed());
        let (busy_ns, gen_cpu_busy_ns) = Busy::now()?.since(&busy0, cpu_n);
        let window = (start, Monotonic::now());
        let s = Sample {
            sender: gen.kind(),
            sent,
            refused,
            delivered: 0,
            wall_ns: wall.as_nanos() as f64,
            loop_ns,
            busy_ns,
            gen_cpu_busy_ns,
            gen_thread_ns: (thread1 - thread0) as f64,
            ring_drops: 0,
            window,
        };
        Ok((gen, s))
    })?
}
