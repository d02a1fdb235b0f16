//! `cargo xtask bench`: the numbers behind BENCHMARKS.md. Every figure is measured side by
//! side with its baseline in the same run (these machines are shared and noisy), so the
//! ratios are the result; absolute numbers only describe this machine on this day.

pub mod cpu;
pub mod memory;
pub mod path;
pub mod plot;
pub mod profile;
pub mod program;
pub mod rate;
pub mod upgrade;

use anyhow::{bail, Result};
use std::{fmt::Write, path::Path};

/// The parts of the report, in the order they are run and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Program,
    Path,
    /// The Kafka lab's produce ratio (about a minute; needs tansu).
    Kafka,
    Rate,
    Memory,
    /// An upgrade's copy of the previous map layout at growing table sizes.
    Upgrade,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::Program,
        Section::Path,
        Section::Kafka,
        Section::Rate,
        Section::Memory,
        Section::Upgrade,
    ];

    pub fn parse(name: &str) -> Result<Section> {
        Ok(match name {
            "program" => Section::Program,
            "path" => Section::Path,
            "kafka" => Section::Kafka,
            "rate" => Section::Rate,
            "memory" => Section::Memory,
            "upgrade" => Section::Upgrade,
            other => {
                bail!("no bench section {other:?} (program, path, kafka, rate, memory, upgrade)")
            }
        })
    }
}

pub struct Options {
    pub sections: Vec<Section>,
    /// Single test runs per program path.
    pub runs: usize,
    pub rounds: usize,
    pub iperf_seconds: u32,
    pub conns: usize,
    pub max_flows: u64,
    /// Tracked flows at which the program cost is measured.
    pub fills: Vec<u32>,
    pub rate: rate::Options,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sections: Section::ALL.to_vec(),
            runs: 20_000,
            rounds: 5,
            iperf_seconds: 4,
            conns: 1000,
            max_flows: 262_144,
            fills: program::FILLS.to_vec(),
            rate: rate::Options::full(),
        }
    }
}

impl Options {
    /// `cargo xtask bench --quick`: the packet-rate bed only, every shape and contender
    /// once with few frames. It checks that the bed works, its figures are rough.
    pub fn quick() -> Self {
        Options { sections: vec![Section::Rate], rate: rate::Options::quick(), ..Self::default() }
    }
}

/// The conntrack entries' clock (CLOCK_MONOTONIC_COARSE), for entries made by hand.
pub fn coarse_now_ns() -> u64 {
    forwarder::host::clock::monotonic_ns()
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The mean of the middle half of `v` (from the 25th to the 75th percentile): finer than a
/// median when the values come in coarse steps, and as deaf to outliers.
pub fn middle_mean(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let (lo, hi) = (v.len() / 4, v.len() - v.len() / 4);
    let mid = &v[lo..hi.max(lo + 1)];
    mid.iter().sum::<f64>() / mid.len() as f64
}

/// Runs the benchmarks of `opts.sections` (bounded: a few minutes) and returns the Markdown
/// report; charts are written into `out_dir`, beside the report.
pub fn run(opts: &Options, out_dir: &Path, say: &mut dyn FnMut(&str)) -> Result<String> {
    let mut md = String::new();
    for section in &opts.sections {
        match section {
            Section::Program => program_section(opts, out_dir, &mut md, say)?,
            Section::Path => path_section(opts, &mut md, say)?,
            Section::Kafka => kafka_section(&mut md, say)?,
            Section::Rate => rate_section(opts, out_dir, &mut md, say)?,
            Section::Memory => memory_section(opts, &mut md, say)?,
            Section::Upgrade => upgrade_section(opts, &mut md, say)?,
        }
        md.push('\n');
    }
    Ok(md)
}

fn program_section(
    opts: &Options,
    out_dir: &Path,
    md: &mut String,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    say("program cost (BPF_PROG_TEST_RUN) at 1 to 1M tracked flows...");
    let fills = program::measure(opts.runs, &opts.fills)?;
    program_cost_tables(md, opts.runs, &fills)?;
    let Some(first) = fills.first() else { return Ok(()) };
    const CHART: &str = "bench-program-cost.svg";
    let series = first
        .cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let points = fills.iter().map(|f| ((f.flows as f64).log10(), f.cases[i].ns)).collect();
            (c.name.to_string(), points)
        })
        .collect();
    plot::lines(
        &out_dir.join(CHART),
        &plot::Lines {
            title: "XDP program cost per packet against tracked flows (BPF_PROG_TEST_RUN)",
            x_label: "tracked flows, log10 (0 = 1 flow, 6 = 1M)",
            y_label: "ns per packet",
            series,
        },
    )?;
    writeln!(md, "\n![program cost against tracked flows]({CHART})")?;
    Ok(())
}

fn path_section(opts: &Options, md: &mut String, say: &mut dyn FnMut(&str)) -> Result<()> {
    say("whole connections: direct, iptables, forwarder modes (iperf3, connection rate)...");
    let ways = path::measure(opts.rounds, opts.iperf_seconds, opts.conns)?;
    let mut rows: Vec<(String, f64, f64, f64, f64, f64)> = ways
        .into_iter()
        .map(|(w, mut s)| {
            let slowest = s.slowest_ms.iter().copied().fold(0.0, f64::max);
            let cpu = median(&mut s.cpu_s_per_gbit);
            let retransmits = median(&mut s.retransmits);
            (w, median(&mut s.gbit_s), cpu, median(&mut s.conns_s), slowest, retransmits)
        })
        .collect();
    let (ipt_g, ipt_cpu, ipt_c) =
        rows.iter().find(|r| r.0 == "iptables").map(|r| (r.1, r.2, r.3)).unwrap_or((1.0, 1.0, 1.0));
    writeln!(md, "## Whole connections through the NAT VM\n")?;
    writeln!(
        md,
        "The e2e topology (client -> router -> NAT VM -> router -> broker, veth, GRO on the NAT \
         VM): one iperf3 stream for {} s, then {} sequential short connections (connect, one \
         byte each way, close); median of {} interleaved rounds. `iptables` is what \
         `ip_fwd.sh` sets up (DNAT + MASQUERADE); `direct` skips the NAT VM. CPU per Gbit is \
         the busy time of both cores (every namespace of the path, /proc/stat) over the \
         gigabits the stream moved; \"Gbit per CPU-s vs iptables\" is iptables' CPU per Gbit \
         over this way's; TCP retransmits are the stream's (iperf3's count): packets lost on \
         the way.\n",
        opts.iperf_seconds, opts.conns, opts.rounds
    )?;
    writeln!(
        md,
        "| way | Gbit/s | vs. iptables | CPU s per Gbit | Gbit per CPU-s vs. iptables | TCP retransmits | connections/s | vs. iptables | slowest connection |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for (w, g, cpu, c, slowest, retransmits) in rows.iter_mut() {
        writeln!(
            md,
            "| {w} | {g:.2} | {:.2}x | {cpu:.3} | {:.2}x | {retransmits:.0} | {c:.0} | {:.2}x | {slowest:.1} ms |",
            *g / ipt_g,
            ipt_cpu / *cpu,
            *c / ipt_c
        )?;
    }
    profile_table(opts, md, Path::new(profile::DIR), say)
}

/// One more stream per way under `perf record`, broken down into the parts that tell the
/// ways apart: the profile behind the bulk figures.
fn profile_table(
    opts: &Options,
    md: &mut String,
    dir: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    writeln!(
        md,
        "\nWhere the CPU goes: one more {} s stream per way under `perf record -a -g` \
         (`cargo xtask bench --profile WAY` makes one, with its top symbols). Shares of the \
         path's busy samples (iperf3, ksoftirqd, softirq in the idle task), inclusive: the \
         forwarder's program; veth copying each skb into a page-pool page before an XDP \
         program may see it (`skb_pp_cow_data`: veth's, a NIC driver with native XDP runs on \
         its own DMA buffers; the router's ends carry an XDP_PASS program for the hairpin's \
         XDP_TX, so every way pays it once there); GRO (`dev_gro_receive`); netfilter \
         (`nf_hook_slow`); software segmentation on transmit (`skb_segment`, checksums \
         included: the veths have checksum offload off). *idle* is of all the path's \
         samples. *TCP retransmits* are the stream's lost packets; *dropped at the NAT VM's \
         veth ring* counts the frames the router's end could not hand to the NAT VM because \
         its receive ring (256 frames, fixed in veth) was full.\n",
        opts.iperf_seconds
    )?;
    writeln!(
        md,
        "| way | Gbit/s under perf | TCP retransmits | dropped at the NAT VM's veth ring | idle | program | veth copy for XDP | GRO | netfilter | segmentation |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for way in path::WAYS.iter().filter(|w| **w != "direct") {
        say(&format!("profile of {way}..."));
        let data = dir.join(format!("{}.perf.data", way.replace(' ', "-")));
        let r = profile::record(way, opts.iperf_seconds, &data)?;
        let b = profile::Breakdown::of(&data, way.starts_with("forwarder"))?;
        writeln!(
            md,
            "| {way} | {:.2} | {} | {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % |",
            r.gbit_s,
            r.retransmits,
            r.ring_drops,
            b.idle,
            b.program,
            b.veth_copy,
            b.gro,
            b.netfilter,
            b.segmentation
        )?;
    }
    Ok(())
}

/// The Kafka lab's produce throughput, direct and through the forwarder.
fn kafka_section(md: &mut String, say: &mut dyn FnMut(&str)) -> Result<()> {
    say("Kafka produce through the lab (tansu brokers, kafka-python and the Rust client)...");
    let mut lab = crate::lab::Options::demo();
    lab.prefix = "fwd-bench".into();
    let summary = crate::lab::run(&lab, &mut |line| say(&line))?;
    writeln!(md, "## Kafka produce through the Azure path\n")?;
    writeln!(
        md,
        "The lab of `cargo xtask demo` ({} tansu brokers behind the load balancer and two \
         NAT VMs running the forwarder in `auto` mode: native XDP on natvm-a, TC on \
         natvm-b, whose NIC has accelerated networking): {} x {} B produced per run, the \
         same client direct to the broker and through the whole path in turns, median of \
         {} pairs. The forwarded path also crosses the load balancer's nftables NAT and \
         two more veth hops on the same two cores.\n",
        lab.brokers, lab.bench_messages, lab.message_size, lab.bench_rounds
    )?;
    writeln!(
        md,
        "| client | direct MB/s | through the forwarder MB/s | ratio |\n|---|---:|---:|---:|"
    )?;
    for (name, t) in
        [("kafka-python", &summary.throughput), ("Rust (kafka-protocol)", &summary.rust_throughput)]
    {
        writeln!(
            md,
            "| {name} | {:.2} | {:.2} | {:.2}x |",
            t.direct_mb_s,
            t.forwarded_mb_s,
            t.ratio()
        )?;
    }
    Ok(())
}

/// The packet-rate bed (rate/), its tables and its chart.
fn rate_section(
    opts: &Options,
    out_dir: &Path,
    md: &mut String,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    say("packet rate: one TCP flow, every contender: 64-byte frames in both shapes, a stream...");
    let outcomes = rate::measure(&opts.rate, say)?;
    let rows = rate::report::rows(&outcomes);
    let bars: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| {
            r.shape == rate::Shape::Hairpin
                && r.load == rate::Load::Small
                && r.unavailable.is_none()
        })
        .map(|r| (r.contender.name().to_string(), r.ns))
        .collect();
    const CHART: &str = "bench-cpu-per-packet.svg";
    let chart = if bars.is_empty() {
        None
    } else {
        plot::bars(
            &out_dir.join(CHART),
            &plot::Bars {
                title: "Busy CPU per delivered 64-byte packet, hairpin (lower is better)",
                x_label: "busy CPU ns per delivered packet (all CPUs)",
                bars,
            },
        )?;
        Some(CHART)
    };
    md.push_str(&rate::report::markdown(&opts.rate, &rows, chart));
    Ok(())
}

fn memory_section(opts: &Options, md: &mut String, say: &mut dyn FnMut(&str)) -> Result<()> {
    say("memory of the connection table...");
    let mem = memory::measure(opts.max_flows)?;
    writeln!(md, "## Kernel memory\n")?;
    writeln!(
        md,
        "The daemon's maps with `max_flows = {}` as the kernel accounts them (`bpftool map \
         show`, bytes_memlock), allocated up front:\n",
        mem.max_flows
    )?;
    writeln!(md, "| map | max entries | bytes |\n|---|---:|---:|")?;
    for m in &mem.maps {
        writeln!(md, "| {} | {} | {} |", m.name, m.max_entries, m.bytes)?;
    }
    writeln!(
        md,
        "| **total** | | **{}** ({:.1} MiB) |",
        mem.total(),
        mem.total() as f64 / 1048576.0
    )?;
    let per_flow = mem.ct_bytes_per_flow();
    match mem.nf_conntrack_objsize {
        Some(nf) => writeln!(
            md,
            "\nConnection tracking per flow (both directions, CT_* maps / max_flows): {per_flow:.0} \
             bytes, {:.2}x one netfilter conntrack entry ({nf} bytes, nf_conntrack slab object) \
             of the iptables set-up, which it replaces.",
            per_flow / nf as f64
        )?,
        None => writeln!(md, "\nConnection tracking per flow: {per_flow:.0} bytes.")?,
    }
    Ok(())
}

fn upgrade_section(opts: &Options, md: &mut String, say: &mut dyn FnMut(&str)) -> Result<()> {
    say("an upgrade's copy of layout 2's tables at growing sizes...");
    let max_flows = opts.max_flows as u32;
    let rows = upgrade::measure(max_flows, &upgrade::FLOWS)?;
    writeln!(
        md,
        "## Upgrade across map layouts
"
    )?;
    writeln!(
        md,
        "Layout 2's maps (as forwarder 0.1.0 pins them, `max_flows = {max_flows}`) staged \
         with N established flows, then upgraded by this build's daemon code \
         (`datapath::migrate`). The bulk copy runs while the old program still forwards; the \
         catch-up (here 1 % of the flows changed after the bulk copy) and the renames run \
         after the program swap, inside the window in which a packet of a flow opened during \
         the bulk copy is dropped and resent instead of forwarded (flows present at the bulk \
         copy are never affected). Baseline, same run: one batch read of the old established \
         table. `tests/tests/package_upgrade.rs` measures the whole window, swap included, \
         under systemd with live connections (in its output).\n"
    )?;
    writeln!(
        md,
        "| flows | one read of the table | bulk copy | vs. one read | catch-up + renames | vs. one read |\n|---:|---:|---:|---:|---:|---:|"
    )?;
    for r in &rows {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        writeln!(
            md,
            "| {} | {:.1} ms | {:.1} ms | {:.1}x | {:.1} ms | {:.1}x |",
            r.flows,
            ms(r.read),
            ms(r.bulk),
            ms(r.bulk) / ms(r.read),
            ms(r.catch_up),
            ms(r.catch_up) / ms(r.read)
        )?;
    }
    Ok(())
}

/// The per-path table at one flow, then each path's cost against the tracked flows.
fn program_cost_tables(md: &mut String, runs: usize, fills: &[program::AtFill]) -> Result<()> {
    let Some(first) = fills.first() else { return Ok(()) };
    let base = first.cases[0].ns;
    writeln!(md, "## Per-packet cost of the XDP program\n")?;
    writeln!(
        md,
        "BPF_PROG_TEST_RUN, median of {runs} single runs per path, each timed by the kernel \
         around the program (the timer's own cost is in every row, the baseline's included), \
         paths interleaved run by run. The baseline is an XDP program that only returns \
         XDP_PASS; the forwarded rows include the next hop (cached in the flow) and the \
         rewrite. The kernel's timer reads in steps of about 10 ns here, so a median moves \
         by whole steps; the last two columns take the mean of the middle half of the runs \
         (25th to 75th percentile), which resolves finer. {} tracked flow(s):\n",
        first.flows
    )?;
    let base_mid = first.cases[0].mid_mean;
    writeln!(
        md,
        "| path | ns / packet | above XDP_PASS | vs. XDP_PASS | middle-half mean | above XDP_PASS |\n\
         |---|---:|---:|---:|---:|---:|"
    )?;
    for c in &first.cases {
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.2}x | {:.1} | {:.1} |",
            c.name,
            c.ns,
            c.ns - base,
            c.ns / base,
            c.mid_mean,
            c.mid_mean - base_mid
        )?;
    }
    writeln!(md, "\n### Against the number of tracked flows\n")?;
    writeln!(
        md,
        "The established table prefilled with that many flows (both halves each), the same \
         measurement; the last column is the cost at the largest fill over the cost at 1 flow.\n"
    )?;
    let mut head = String::from("| path |");
    let mut rule = String::from("|---|");
    for f in fills {
        head += &format!(" {} flows |", f.flows);
        rule += "---:|";
    }
    writeln!(md, "{head} largest / 1 |\n{rule}---:|")?;
    let last = fills.last().expect("not empty");
    for (i, c) in first.cases.iter().enumerate() {
        let mut row = format!("| {} |", c.name);
        for f in fills {
            row += &format!(" {:.0} |", f.cases[i].ns);
        }
        writeln!(md, "{row} {:.2}x |", last.cases[i].ns / c.ns)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_middle_mean_resolves_steps_and_ignores_outliers() {
        // Timer steps of 10 ns, a third of the runs one step up, and two outliers.
        let mut v = vec![50.0; 6];
        v.extend([60.0; 3]);
        v.extend([5000.0, 1.0]);
        assert_eq!(median(&mut v.clone()), 50.0);
        let m = middle_mean(&mut v);
        // The middle half (sorted, from index 2 to 9): 50 x5, 60 x2 (after 1 and 50 x1 go).
        assert!((m - (5.0 * 50.0 + 2.0 * 60.0) / 7.0).abs() < 1e-9, "{m}");
        assert_eq!(middle_mean(&mut []), 0.0);
        assert_eq!(middle_mean(&mut [7.0]), 7.0);
    }
}
