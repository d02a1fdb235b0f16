//! Medians of the samples, ratios against iptables and the ceiling, and the Markdown.

use super::{send::Sample, Contender, Load, Options, Outcome, Shape};
use crate::bench::median;
use std::fmt::Write;

/// One contender's medians in one shape under one load.
pub struct Row {
    pub shape: Shape,
    pub load: Load,
    pub contender: Contender,
    pub mpps: f64,
    /// Busy CPU (all CPUs) per delivered frame, ns.
    pub ns: f64,
    /// Busy time of the generator's CPU per delivered frame, ns.
    pub gen_cpu_ns: f64,
    /// The generator thread's own CPU time per delivered frame, ns.
    pub gen_thread_ns: f64,
    /// Delivered / sent.
    pub delivered_share: f64,
    /// Lost at the NAT VM's receive ring / sent (the bed's loss, see `Sample::ring_drops`).
    pub ring_drop_share: f64,
    /// How busy the other CPUs were (0..1).
    pub others_busy: f64,
    pub unavailable: Option<String>,
    /// The stream's profile, if one was taken.
    pub parts: Option<super::profile::Parts>,
}

pub fn rows(outcomes: &[Outcome]) -> Vec<Row> {
    outcomes
        .iter()
        .map(|o| {
            let m =
                |f: fn(&Sample) -> f64| median(&mut o.samples.iter().map(f).collect::<Vec<_>>());
            Row {
                shape: o.shape,
                load: o.load,
                contender: o.contender,
                mpps: m(Sample::mpps),
                ns: m(Sample::busy_ns_per_packet),
                gen_cpu_ns: m(Sample::gen_cpu_ns_per_packet),
                gen_thread_ns: m(Sample::gen_thread_ns_per_packet),
                delivered_share: m(|s| s.delivered as f64 / s.sent.max(1) as f64),
                ring_drop_share: m(|s| s.ring_drops as f64 / s.sent.max(1) as f64),
                others_busy: m(Sample::others_busy),
                unavailable: o.unavailable.clone(),
                parts: o.parts.clone(),
            }
        })
        .collect()
}

/// The Markdown section: what was measured, then one table per shape.
pub fn markdown(opts: &Options, rows: &[Row], plot: Option<&str>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Packet rate: one TCP flow through the NAT VM\n");
    let _ = writeln!(
        md,
        "A live-frames generator (BPF_PROG_TEST_RUN, `BPF_F_TEST_XDP_LIVE_FRAMES`) pinned to one \
         CPU sends {} frames of 64 bytes per sample: the next segments (ACK + 10 bytes, in the \
         window) of a real TCP connection first opened through the contender, client -> NAT VM \
         listen port -> broker. A counting XDP sink on the broker's veth end counts the frames \
         that arrive translated (addresses and ports; one in 4096 is also checked whole: \
         checksums, TTL, MACs, payload) and drops them. The generator, the NAT VM and the sink \
         share the generator's CPU (veth runs the receiver's NAPI where the frame was sent), \
         so every row includes the same cost of generating and receiving.\n\n\
         - **ns/pkt**: busy time of all CPUs (/proc/stat: user, nice, system, irq, softirq, \
         steal) over the send window per delivered frame. It also holds whatever ran on the \
         other CPU meanwhile (*other CPUs busy*), hence {} interleaved round(s), each sample in \
         fresh namespaces, and medians; *gen. CPU* is the generator CPU's busy time alone and \
         *gen. thread* the generator thread's own CPU time (the test-run loop with the softirq \
         work it runs inline): the two figures unrelated load does not reach.\n\
         - **Mpps**: delivered frames per second of sending, timed by the kernel around its send \
         loop (each test run's page-pool set-up and tear-down leaves the CPU idle ~25 ms).\n\
         - **delivered**: median share of the sent frames that reached the sink translated; \
         **lost at the NAT VM's ring**: median share the generator could not hand to the \
         NAT VM because its veth receive ring was full (n0's receive drops): the bed's loss \
         when a contender drains its ring slower than the generator fills it, at times, not \
         a frame the contender dropped.\n\
         - **vs. iptables**: iptables' ns/pkt over the row's (how many times less CPU); \
         **vs. ceiling**: the row's over the ceiling's. The ceiling is an XDP program doing only \
         FIB lookup, MAC rewrite, TTL decrement and XDP_TX / redirect; the floor the same \
         without the FIB lookup (a fixed next hop), so its row is what the bed itself costs \
         per frame (generator, veth hops, sink) plus the least any forwarder does; `Linux \
         routing` forwards frames addressed to the broker with no NAT and no netfilter. These \
         three need no connection, so none is made.\n\
         - The second table of each shape takes the generator's CPU alone: *gen. CPU* (its \
         busy jiffies) and *gen. thread* (the thread's own CPU time, the test-run loop with the \
         softirq work it runs inline; the finest figure here). *above the floor* is gen. thread \
         less the floor's: what the contender adds to the bed, compared again with iptables and \
         the ceiling.\n",
        opts.frames, opts.rounds
    );
    if let Some(p) = plot {
        let _ = writeln!(md, "![busy CPU ns per delivered packet, hairpin]({p})\n");
    }
    for &(shape, load) in &opts.cases {
        let of_case: Vec<&Row> =
            rows.iter().filter(|r| r.shape == shape && r.load == load).collect();
        if of_case.is_empty() {
            continue;
        }
        match load {
            Load::Small => {
                let _ = writeln!(md, "### {}\n", shape.name());
            }
            Load::Stream => {
                let _ = writeln!(md, "### {}: a bulk stream of 1514-byte frames\n", shape.name());
                let _ = writeln!(md, "{}", stream_text(opts));
            }
        }
        judged_table(&mut md, &of_case);
        breakdown_table(&mut md, &of_case);
        if of_case.iter().any(|r| r.parts.is_some()) {
            profile_table(&mut md, &of_case);
        }
    }
    md
}

/// The stream's profile: the parts of the generator thread's time, and its figure less
/// what the bed adds and a NIC would not.
fn profile_table(md: &mut String, rows: &[&Row]) {
    let less = |r: &Row| r.parts.as_ref().map(|p| r.gen_thread_ns * (1.0 - p.bed_only()));
    let ipt = rows.iter().find(|r| r.contender == Contender::Iptables).and_then(|r| less(r));
    let _ = writeln!(
        md,
        "Where the generator thread's time goes (one more sample per contender under `perf \
         record -a -g`, its send window only, shares of the thread's samples). The first \
         three parts are the bed's, not the NAT VM's, each sample counted once: checksums \
         GRO computes in software because veth gives frames built from XDP frames no \
         checksum verdict; segmenting merged skbs again on the way out, their checksums \
         included (a NIC with TSO does it in hardware); copying the template into page-pool \
         pages that went into an skb and did not come back (a NIC driver refills its ring \
         without a copy). The last two columns take the three out of gen. thread ns/pkt and \
         compare again with iptables: the figure for a NIC with receive checksum offload \
         and TSO. GRO (its checksums included), netfilter and the program are inclusive \
         shares, for reading.\n\n\
         | contender | software checksums | segmentation | page-pool refill copies | GRO | netfilter | program | gen. thread ns/pkt less the bed's three | vs. iptables |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows.iter().filter(|r| r.unavailable.is_none()) {
        let Some(p) = &r.parts else { continue };
        let l = less(r);
        let _ = writeln!(
            md,
            "| {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {} | {} |",
            r.contender.name(),
            p.checksums,
            p.segmentation,
            p.refill,
            p.gro,
            p.netfilter,
            p.program,
            l.map(|l| format!("{l:.0}")).unwrap_or("-".into()),
            ratio(ipt.zip(l).map(|(i, l)| i / l)),
        );
    }
    let _ = writeln!(md);
}

/// What the stream rows measure, and what they leave out.
fn stream_text(opts: &Options) -> String {
    format!(
        "The same bed and contenders; the generator sends {} frames per sample that a NIC \
         would deliver during a bulk transfer: the flow's next MTU segments (1460 bytes each, \
         ACK only, DF set) with sequence numbers that follow one another, cycling over {} \
         segments to stay inside the broker's window. The NAT VM's GRO merges them for \
         iptables, nftables, routing and `tc`, which then do their work once per merged skb \
         and segment it again on the way out (the sink's XDP program takes no multi-buffer \
         frames, so veth segments in software); the XDP programs see every frame. Every \
         figure is still per delivered 1514-byte frame.\n\n\
         What a veth bed adds that a NIC does in hardware: the frames arrive without a \
         checksum verdict (veth builds the skb from an XDP frame), so GRO verifies each \
         TCP checksum in software, and the merged skbs are segmented again in software, \
         checksums included (the veths have checksum offload off); a NIC with receive \
         checksum offload and TSO does both. Rows that take the frames into an skb pay \
         them, the XDP rows do not; the profile table below measures them and takes them \
         out.\n",
        opts.stream_frames,
        super::load::STREAM_CYCLE
    )
}

/// The figure of a contender that ran (not the unavailable ones).
fn figure(rows: &[&Row], c: Contender, f: fn(&Row) -> f64) -> Option<f64> {
    rows.iter().find(|r| r.contender == c && r.unavailable.is_none()).map(|r| f(r))
}

fn ratio(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite() && *v > 0.0).map(|v| format!("{v:.2}x")).unwrap_or("-".into())
}

/// Rate and busy CPU of all CPUs per delivered frame: the judged figures.
fn judged_table(md: &mut String, rows: &[&Row]) {
    let ipt = figure(rows, Contender::Iptables, |r| r.ns);
    let ceil = figure(rows, Contender::Ceiling, |r| r.ns);
    let _ = writeln!(
        md,
        "| contender | Mpps delivered | busy CPU ns/pkt | vs. iptables | vs. ceiling | other CPUs busy | delivered | lost at the NAT VM's ring |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        if let Some(why) = &r.unavailable {
            let _ = writeln!(md, "| {} | {why} | | | | | | |", r.contender.name());
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.0} | {} | {} | {:.0} % | {:.1} % | {:.1} % |",
            r.contender.name(),
            r.mpps,
            r.ns,
            ratio(ipt.map(|i| i / r.ns)),
            ratio(ceil.map(|c| r.ns / c)),
            r.others_busy * 100.0,
            r.delivered_share * 100.0,
            r.ring_drop_share * 100.0
        );
    }
    let _ = writeln!(md);
}

/// The generator's CPU alone, and what each contender adds above the floor.
fn breakdown_table(md: &mut String, rows: &[&Row]) {
    let floor = figure(rows, Contender::Floor, |r| r.gen_thread_ns);
    let above = |r: &Row| floor.map(|f| r.gen_thread_ns - f);
    let ipt = figure(rows, Contender::Iptables, |r| r.gen_thread_ns).zip(floor).map(|(i, f)| i - f);
    let ceil = figure(rows, Contender::Ceiling, |r| r.gen_thread_ns).zip(floor).map(|(c, f)| c - f);
    let _ = writeln!(
        md,
        "| contender | gen. CPU ns/pkt | gen. thread ns/pkt | above the floor | vs. iptables | vs. ceiling |\n|---|---:|---:|---:|---:|---:|"
    );
    for r in rows.iter().filter(|r| r.unavailable.is_none()) {
        let a = above(r);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {} | {} | {} |",
            r.contender.name(),
            r.gen_cpu_ns,
            r.gen_thread_ns,
            a.map(|a| format!("{a:.0}")).unwrap_or("-".into()),
            ratio(ipt.zip(a).map(|(i, a)| i / a)),
            ratio(ceil.zip(a).map(|(c, a)| a / c)),
        );
    }
    let _ = writeln!(md);
}
