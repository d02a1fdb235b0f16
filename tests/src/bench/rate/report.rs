//! Medians of the samples, ratios against iptables and the ceiling, and the Markdown.

use super::{send::Sample, sender::SenderKind, Contender, Load, Options, Outcome, Shape};
use crate::bench::median;
use std::fmt::Write;

/// One contender's medians in one shape under one load.
pub struct Row {
    pub shape: Shape,
    pub load: Load,
    pub contender: Contender,
    /// What sent its frames.
    pub sender: Option<SenderKind>,
    /// Frames offered per second of sending.
    pub offered_mpps: f64,
    pub mpps: f64,
    /// Busy CPU (all CPUs) per delivered frame, ns.
    pub ns: f64,
    /// Busy time of the generator's CPU per delivered frame, ns.
    pub gen_cpu_ns: f64,
    /// The generator thread's own CPU time per delivered frame, ns.
    pub gen_thread_ns: f64,
    /// Delivered / sent.
    pub delivered_share: f64,
    /// Lost at the NAT VM's receive ring / sent (the bed's loss, see `Sample::ring_drops`;
    /// with the packet socket also the frames the sending end refused while it was full).
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
                sender: o.samples.first().map(|s| s.sender),
                offered_mpps: m(Sample::offered_mpps),
                mpps: m(Sample::mpps),
                ns: m(Sample::busy_ns_per_packet),
                gen_cpu_ns: m(Sample::gen_cpu_ns_per_packet),
                gen_thread_ns: m(Sample::gen_thread_ns_per_packet),
                delivered_share: m(|s| s.delivered as f64 / s.sent.max(1) as f64),
                ring_drop_share: m(|s| (s.ring_drops + s.refused) as f64 / s.sent.max(1) as f64),
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
    let senders: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r.sender).map(SenderKind::name).collect();
    let sender = match rows.iter().find_map(|r| r.sender) {
        Some(k) if senders.len() == 1 => k,
        _ => {
            let _ = writeln!(md, "No samples from exactly one sender: {senders:?}.\n");
            return md;
        }
    };
    let _ = writeln!(
        md,
        "**Sender: the {}**, pinned to one CPU, for every row of every table below. It sends \
         {} frames of 64 bytes per sample: the next segments (ACK + 10 bytes, in the \
         window) of a real TCP connection first opened through the contender, client -> NAT VM \
         listen port -> broker. A counting XDP sink on the broker's veth end counts the frames \
         that arrive translated (addresses and ports; one in 4096 is also checked whole: \
         checksums, TTL, MACs, payload) and drops them. The sender, the NAT VM and the sink \
         share the sender's CPU (veth runs the receiver's NAPI where the frame was sent), \
         so every row includes the same cost of sending and receiving, and a costlier \
         contender is offered fewer frames per second: *Mpps offered* is what the sender \
         managed with it, *Mpps delivered* what reached the sink.\n\n\
         {}\n\n\
         - **ns/pkt**: busy time of all CPUs (/proc/stat: user, nice, system, irq, softirq, \
         steal) over the send window per delivered frame. It also holds whatever ran on the \
         other CPU meanwhile (*other CPUs busy*), hence {} interleaved round(s), each sample in \
         fresh namespaces, and medians; *gen. CPU* is the sender CPU's busy time alone and \
         *gen. thread* the sending thread's own CPU time (the send loop with the softirq \
         work it runs inline): the two figures unrelated load does not reach.\n\
         - **above the floor**: the row's figure less the floor's, measured with the same \
         sender in the same run: what the contender adds to the bed. Its ratio to iptables' \
         (*vs. iptables above the floor*) is the comparison a costlier sender does not blur.\n\
         - **Mpps**: frames per second of sending ({}).\n\
         - **delivered**: median share of the sent frames that reached the sink translated; \
         **lost at the NAT VM's ring**: median share the sender could not hand to the \
         NAT VM because its veth receive ring was full (n0's receive drops, and frames the \
         sending end refused meanwhile): the bed's loss when a contender drains its ring \
         slower than the sender fills it, at times, not a frame the contender dropped.\n\
         - **vs. iptables**: iptables' ns/pkt over the row's (how many times less CPU); \
         **vs. ceiling**: the row's over the ceiling's. The ceiling is an XDP program doing only \
         FIB lookup, MAC rewrite, TTL decrement and XDP_TX / redirect; the floor the same \
         without the FIB lookup (a fixed next hop), so its row is what the bed itself costs \
         per frame (sender, veth hops, sink) plus the least any forwarder does; `Linux \
         routing` forwards frames addressed to the broker with no NAT and no netfilter. These \
         three need no connection, so none is made.\n\
         - The second table of each shape takes the sender's CPU alone: *gen. CPU* (its \
         busy jiffies) and *gen. thread* (the thread's own CPU time, the send loop with the \
         softirq work it runs inline; the finest figure here). *above the floor* is gen. thread \
         less the floor's, compared again with iptables and the ceiling.\n",
        sender.describe(),
        opts.frames,
        sender_text(sender),
        opts.rounds,
        match sender {
            SenderKind::LiveFrames => {
                "timed by the kernel around its send loop; each test run's page-pool set-up and \
                 tear-down leaves the CPU idle ~25 ms"
            }
            SenderKind::PacketSocket => "the wall time of the `sendmmsg` calls",
        }
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
                let _ = writeln!(md, "{}", stream_text(opts, sender));
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
        "Where the sending thread's time goes (one more sample per contender under `perf \
         record -a -g`, its send window only, shares of the thread's samples). The first \
         three parts are the bed's, not the NAT VM's, each sample counted once: checksums \
         GRO computes in software because veth gives the frames no checksum verdict; \
         segmenting merged skbs again on the way out, their checksums included (a NIC with \
         TSO does it in hardware); the sender's copies of each frame (live frames: the \
         template copied into page-pool pages that went into an skb and did not come back; \
         packet socket: the frame copied from userspace into an skb, and veth copying that \
         skb into a page-pool page for an XDP program; a NIC driver does neither). The last \
         two columns take the three out of gen. thread ns/pkt and compare again with \
         iptables: the figure for a NIC with receive checksum offload and TSO. GRO (its \
         checksums included), netfilter and the program are inclusive shares, for \
         reading.\n\n\
         | contender | software checksums | segmentation | sender's frame copies | GRO | netfilter | program | gen. thread ns/pkt less the bed's three | vs. iptables |\n\
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

/// What the sender is, and what that means for the figures.
fn sender_text(kind: SenderKind) -> &'static str {
    match kind {
        SenderKind::LiveFrames => {
            "The live-frames generator is an XDP program that BPF_PROG_TEST_RUN runs in \
             live-frames mode: it writes each frame into a page-pool page and sends it out of \
             g0 with XDP_TX, 64 per batch, with no skb and no system call per frame, so the \
             bed's own cost per frame is small."
        }
        SenderKind::PacketSocket => {
            "The kernel of this run refuses live-frames test runs (EPERM, even to root), so a \
             packet socket sends: AF_PACKET with `PACKET_QDISC_BYPASS`, the frames made in \
             userspace and handed to g0's driver 64 per `sendmmsg`. Each frame is an skb \
             copied from userspace, and the NAT VM's NAPI runs at the end of each frame's \
             transmit, one frame per poll. The bed's cost per frame is many times the \
             live-frames generator's: read the contenders above the floor, and do not compare \
             raw figures with a live-frames run's."
        }
    }
}

/// What the stream rows measure, and what they leave out.
fn stream_text(opts: &Options, sender: SenderKind) -> String {
    let merging = match sender {
        SenderKind::LiveFrames => "",
        SenderKind::PacketSocket => {
            "**With the packet socket GRO merges nothing**: every frame reaches the NAT VM in \
             a NAPI poll of its own, so the skb contenders do their work once per frame here, \
             as behind a NIC that delivers one frame per interrupt. Letting GRO hold across \
             polls (`gro_flush_timeout`) was tried and made them twice as costly: the timer \
             is re-armed at every frame. A NIC that delivers frames in batches lets GRO merge; \
             the live-frames runs show what that saves them.\n\n"
        }
    };
    format!(
        "The same bed, contenders and sender; it sends {} frames per sample that a NIC \
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
         out.\n\n{merging}",
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

/// Rate and busy CPU of all CPUs per delivered frame, raw and above the floor: the judged
/// figures.
fn judged_table(md: &mut String, rows: &[&Row]) {
    let ipt = figure(rows, Contender::Iptables, |r| r.ns);
    let ceil = figure(rows, Contender::Ceiling, |r| r.ns);
    let floor = figure(rows, Contender::Floor, |r| r.ns);
    let ipt_above = ipt.zip(floor).map(|(i, f)| i - f);
    let _ = writeln!(
        md,
        "| contender | Mpps offered | Mpps delivered | busy CPU ns/pkt | above the floor | vs. iptables | vs. iptables above the floor | vs. ceiling | other CPUs busy | delivered | lost at the NAT VM's ring |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        if let Some(why) = &r.unavailable {
            let _ = writeln!(md, "| {} | {why} | | | | | | | | | |", r.contender.name());
            continue;
        }
        let above = floor.map(|f| r.ns - f);
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.0} | {} | {} | {} | {} | {:.0} % | {:.1} % | {:.1} % |",
            r.contender.name(),
            r.offered_mpps,
            r.mpps,
            r.ns,
            above.map(|a| format!("{a:.0}")).unwrap_or("-".into()),
            ratio(ipt.map(|i| i / r.ns)),
            ratio(ipt_above.zip(above).map(|(i, a)| i / a)),
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
