//! The bench-only XDP programs (forwarder-bench-ebpf, built by tests/build.rs): the
//! live-frames generator (one established flow's segment again and again, its bulk stream,
//! or a SYN flood), the counting sink, the FIB-forwarding ceiling and the floor.

use crate::netns::Netns;
use anyhow::{Context, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use std::net::{Ipv4Addr, SocketAddrV4};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/forwarder-bench"));

/// The generator's frame length (forwarder-bench-ebpf's FRAME_LEN): 64 bytes on the wire
/// before the FCS, Ethernet + IPv4 + TCP + 10 payload bytes.
pub const FRAME_LEN: usize = 64;
/// The stream generator's frame length (forwarder-bench-ebpf's MAX_FRAME_LEN): an Ethernet
/// frame of a 1500-byte MTU.
pub const MAX_FRAME_LEN: usize = 1514;
/// IP id of the generator's frames; the sink counts only these.
pub const MARK: u16 = 0xbeef;
/// Frames per batch of a live-frames run (the kernel's default, NAPI_POLL_WEIGHT).
const BATCH: u32 = 64;

/// forwarder-bench-ebpf's `Expect` and `Count` indexes.
const EXPECT_SADDR: u32 = 0;
const EXPECT_DADDR: u32 = 1;
const EXPECT_PORTS: u32 = 2;
const COUNT_DELIVERED: u32 = 0;
const COUNT_UNTRANSLATED: u32 = 1;

fn load(program: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(OBJECT).context("loading forwarder-bench-ebpf")?;
    let prog: &mut Xdp =
        ebpf.program_mut(program).with_context(|| format!("no program {program}"))?.try_into()?;
    prog.load().with_context(|| format!("loading {program}"))?;
    Ok(ebpf)
}

/// Loads `program` and attaches it in driver mode to `iface` of `ns`; detached when the
/// returned object drops.
fn attach(ns: &Netns, iface: &str, program: &'static str) -> Result<Ebpf> {
    let iface = iface.to_string();
    ns.enter(move || -> Result<Ebpf> {
        let mut ebpf = load(program)?;
        let prog: &mut Xdp = ebpf.program_mut(program).expect("loaded above").try_into()?;
        prog.attach(&iface, XdpMode::Driver)
            .with_context(|| format!("attaching {program} to {iface}"))?;
        Ok(ebpf)
    })?
}

/// The counting sink on a receiving veth end.
pub struct Sink(Ebpf);

/// What the sink saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Marked frames that arrived with the expected addresses and ports.
    pub delivered: u64,
    /// Marked frames that arrived otherwise.
    pub untranslated: u64,
}

impl Sink {
    pub fn attach(ns: &Netns, iface: &str) -> Result<Sink> {
        Ok(Sink(attach(ns, iface, "bench_sink")?))
    }

    /// The addresses and ports a delivered frame must carry.
    pub fn expect(&mut self, src: SocketAddrV4, dst: SocketAddrV4) -> Result<()> {
        let mut m: Array<&mut MapData, u32> =
            Array::try_from(self.0.map_mut("EXPECT").context("no EXPECT map")?)?;
        let ports = [src.port().to_be_bytes(), dst.port().to_be_bytes()].concat();
        m.set(EXPECT_SADDR, u32::from_ne_bytes(src.ip().octets()), 0)?;
        m.set(EXPECT_DADDR, u32::from_ne_bytes(dst.ip().octets()), 0)?;
        m.set(EXPECT_PORTS, u32::from_ne_bytes(ports.try_into().expect("4 bytes")), 0)?;
        Ok(())
    }

    pub fn counts(&self) -> Result<Counts> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.0.map("COUNTS").context("no COUNTS map")?)?;
        let sum = |i| -> Result<u64> { Ok(m.get(&i, 0)?.iter().sum()) };
        Ok(Counts { delivered: sum(COUNT_DELIVERED)?, untranslated: sum(COUNT_UNTRANSLATED)? })
    }

    pub fn clear_sample(&mut self) -> Result<()> {
        let mut m: Array<&mut MapData, [u8; MAX_FRAME_LEN]> =
            Array::try_from(self.0.map_mut("FRAMES").context("no FRAMES map")?)?;
        m.set(0, [0u8; MAX_FRAME_LEN], 0)?;
        Ok(())
    }

    /// The last delivered frame of `len` bytes (FRAME_LEN or MAX_FRAME_LEN, what the
    /// generator sends) the sink kept whole (one in 4096 per CPU), if any yet.
    pub fn sample(&self, len: usize) -> Result<Option<Vec<u8>>> {
        anyhow::ensure!(
            len == FRAME_LEN || len == MAX_FRAME_LEN,
            "the sink keeps frames of {FRAME_LEN} or {MAX_FRAME_LEN} bytes, not {len}"
        );
        let m: Array<&MapData, [u8; MAX_FRAME_LEN]> =
            Array::try_from(self.0.map("FRAMES").context("no FRAMES map")?)?;
        let f = m.get(&0, 0)?;
        Ok(if f.iter().all(|b| *b == 0) { None } else { Some(f[..len].to_vec()) })
    }
}

/// The ceiling: FIB lookup + MAC rewrite + TTL decrement + XDP_TX / redirect.
pub struct Ceiling(#[allow(dead_code)] Ebpf);

impl Ceiling {
    pub fn attach(ns: &Netns, iface: &str) -> Result<Ceiling> {
        Ok(Ceiling(attach(ns, iface, "bench_ceiling")?))
    }
}

/// The floor: the ceiling without its FIB lookup, to a next hop given here.
pub struct Floor(#[allow(dead_code)] Ebpf);

impl Floor {
    /// On `iface` of `ns`: every IPv4 frame leaves by `out_ifindex` with these MACs.
    pub fn attach(
        ns: &Netns,
        iface: &str,
        (smac, dmac): ([u8; 6], [u8; 6]),
        out_ifindex: u32,
    ) -> Result<Floor> {
        let mut ebpf = attach(ns, iface, "bench_floor")?;
        // forwarder-bench-ebpf's Hop: smac, dmac, ifindex (native order), 16 bytes.
        let mut hop = [0u8; 16];
        hop[..6].copy_from_slice(&smac);
        hop[6..12].copy_from_slice(&dmac);
        hop[12..].copy_from_slice(&out_ifindex.to_ne_bytes());
        let mut m: Array<&mut MapData, [u8; 16]> =
            Array::try_from(ebpf.map_mut("FLOOR_HOP").context("no FLOOR_HOP map")?)?;
        m.set(0, hop, 0)?;
        Ok(Floor(ebpf))
    }
}

/// The live-frames generator. `send` must run on a thread inside the namespace of the
/// interface it sends from (the kernel resolves the context's ingress_ifindex there).
pub struct Generator {
    ebpf: Ebpf,
    program: &'static str,
    ifindex: u32,
    frame: Vec<u8>,
}

/// What the flood mode varies: sources drawn from `src` (an IPv4 network), destination
/// ports cycling over `ports` (at most MAX_FLOOD_PORTS).
#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub src: (Ipv4Addr, u8),
    pub ports: Vec<u16>,
}

impl FloodSpec {
    /// The source network's address and its host bits (host order): a source is
    /// `net | (random & mask)`.
    pub fn net_and_mask(&self) -> (u32, u32) {
        let (net, len) = self.src;
        let mask = u32::MAX.checked_shr(len as u32).unwrap_or(0);
        (u32::from(net) & !mask, mask)
    }
}

/// forwarder-bench-ebpf's MAX_FLOOD_PORTS.
pub const MAX_FLOOD_PORTS: usize = 8;

impl Generator {
    /// Sends `frame` as it is, again and again (one established flow).
    pub fn new(ifindex: u32, frame: [u8; FRAME_LEN]) -> Result<Generator> {
        Self::load_with(ifindex, frame.to_vec(), "bench_gen")
    }

    /// Sends `frame`, an MTU segment of an established flow, as the segments of a bulk
    /// stream: frame n carries `frame`'s sequence number plus `(n % cycle) * step`, where
    /// `step` is its payload length (numbered per CPU), its TCP checksum updated.
    pub fn stream(ifindex: u32, frame: Vec<u8>, step: u32, cycle: u32) -> Result<Generator> {
        anyhow::ensure!(
            frame.len() == MAX_FRAME_LEN,
            "the stream's frame is {} bytes, not {MAX_FRAME_LEN}",
            frame.len()
        );
        anyhow::ensure!(cycle >= 1, "a stream cycles over at least one segment");
        let mut g = Self::load_with(ifindex, frame, "bench_stream")?;
        // forwarder-bench-ebpf's Stream: step, cycle (native order), 8 bytes.
        let mut v = [0u8; 8];
        v[..4].copy_from_slice(&step.to_ne_bytes());
        v[4..].copy_from_slice(&cycle.to_ne_bytes());
        let mut m: Array<&mut MapData, [u8; 8]> =
            Array::try_from(g.ebpf.map_mut("STREAM").context("no STREAM map")?)?;
        m.set(0, v, 0)?;
        Ok(g)
    }

    /// Sends `frame`, a TCP SYN, each time from a random address of `spec.src` and a random
    /// port, to the next of `spec.ports`, with its checksums updated.
    pub fn flood(ifindex: u32, frame: [u8; FRAME_LEN], spec: &FloodSpec) -> Result<Generator> {
        let len = spec.src.1;
        anyhow::ensure!(len <= 32, "source prefix /{len}");
        anyhow::ensure!(
            (1..=MAX_FLOOD_PORTS).contains(&spec.ports.len()),
            "{} flood ports (1..={MAX_FLOOD_PORTS})",
            spec.ports.len()
        );
        let mut g = Self::load_with(ifindex, frame.to_vec(), "bench_flood")?;
        let (net, mask) = spec.net_and_mask();
        // forwarder-bench-ebpf's Flood: src_net, src_mask (octets as native u32s), nports,
        // ports (host order), 28 bytes.
        let mut v = [0u8; 28];
        v[..4].copy_from_slice(&net.to_be_bytes());
        v[4..8].copy_from_slice(&mask.to_be_bytes());
        v[8..12].copy_from_slice(&(spec.ports.len() as u32).to_ne_bytes());
        for (i, p) in spec.ports.iter().enumerate() {
            v[12 + 2 * i..14 + 2 * i].copy_from_slice(&p.to_ne_bytes());
        }
        let mut m: Array<&mut MapData, [u8; 28]> =
            Array::try_from(g.ebpf.map_mut("FLOOD").context("no FLOOD map")?)?;
        m.set(0, v, 0)?;
        Ok(g)
    }

    /// Loads `program` with `frame`'s first FRAME_LEN bytes as its template (the whole of a
    /// 64-byte frame; the headers of an MTU frame, whose payload the kernel copies into each
    /// page-pool page once and nobody rewrites).
    fn load_with(ifindex: u32, frame: Vec<u8>, program: &'static str) -> Result<Self> {
        let mut ebpf = load(program)?;
        let mut m: Array<&mut MapData, [u8; FRAME_LEN]> =
            Array::try_from(ebpf.map_mut("TEMPLATE").context("no TEMPLATE map")?)?;
        let head: [u8; FRAME_LEN] =
            frame.get(..FRAME_LEN).context("a frame shorter than the template")?.try_into()?;
        m.set(0, head, 0)?;
        Ok(Generator { ebpf, program, ifindex, frame })
    }

    /// One plain (not live) test run: the program's action and the frame it would send, to
    /// check what the generator makes of its template.
    pub fn one(&self) -> Result<(u32, Vec<u8>)> {
        let prog: &Xdp =
            self.ebpf.program(self.program).context("no generator program")?.try_into()?;
        let mut out = vec![0u8; self.frame.len()];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&self.frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .context("test run of the generator")?;
        anyhow::ensure!(
            r.data_size_out as usize == self.frame.len(),
            "{} bytes out",
            r.data_size_out
        );
        Ok((r.return_value, out))
    }

    /// Sends `frames` frames out of the interface in one live-frames test run; returns the
    /// time the kernel spent in its send loop (its mean per frame, in whole ns, times frames).
    pub fn send(&self, frames: u32) -> Result<std::time::Duration> {
        let prog: &Xdp =
            self.ebpf.program(self.program).context("no generator program")?.try_into()?;
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex }
        let md: [u32; 6] = [0, self.frame.len() as u32, 0, self.ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&self.frame),
                ctx_in: Some(&ctx),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..Default::default()
            })
            .context("live-frames test run of the generator")?;
        Ok(r.duration * frames)
    }
}
