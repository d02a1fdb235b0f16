//! Where a stream frame's CPU goes: one more stream sample per contender under `perf record
//! -a -g`, read for its send window only and the generator thread alone (named
//! [`GEN_COMM`]; it runs the test-run loop and, inline, the softirq work of every hop, so
//! its samples are nearly all of a frame's cost).
//!
//! The parts that matter for reading the stream rows are the ones the veth bed adds and a
//! NIC with receive checksum offload and TSO does not: checksums computed in software (GRO
//! verifying a frame veth built without a checksum verdict), segmenting merged skbs again
//! in software on the way out (with their checksums: the veths have checksum offload off),
//! and the sender's copies of each frame: for live frames the template copied into each
//! page-pool page that does not come back to the test run's pool (pages that went into an
//! skb; a NIC driver refills its ring without copying); for the packet socket the frame
//! copied from userspace into a fresh skb, and veth copying that skb into a page-pool page
//! before an XDP program may see it (a NIC driver with native XDP runs on its own DMA
//! buffers). Those three are counted apart, each sample once (`report_by_parent`); GRO,
//! netfilter and the program are inclusive shares, for reading only.

use super::{sender::SenderKind, Contender};
use crate::bench::profile::{
    is_forwarder_entry, parent_lines, perf_report, report_by_parent, report_children, symbol_lines,
    Monotonic,
};
use anyhow::{bail, Result};
use std::path::Path;

/// The generator thread's name while it sends (`perf report --comms`).
pub const GEN_COMM: &str = "rate-gen";

/// The sender's copies of each frame (see the module's text), by the function that makes
/// them: live frames, then the packet socket's skb, then veth's copy for XDP.
const SENDER_COPIES: [&str; 4] = [
    "xdp_test_run_init_page",
    "sock_alloc_send_pskb",
    "skb_copy_datagram_from_iter",
    "skb_pp_cow_data",
];

/// The callers whose time is the bed's, for `report_by_parent`.
fn bed_parents() -> String {
    std::iter::once("skb_segment").chain(SENDER_COPIES).collect::<Vec<_>>().join("|")
}

/// Shares of the generator thread's samples, in percent.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    /// Checksum arithmetic outside segmentation (`csum_*` functions' own time; what calls
    /// them adds little): GRO verifying each frame.
    pub checksums: f64,
    /// Software segmentation on the way out (`skb_segment` and all it calls, its
    /// checksums included).
    pub segmentation: f64,
    /// The sender's copies of each frame (`SENDER_COPIES` and all they call).
    pub refill: f64,
    /// GRO (`dev_gro_receive`, inclusive).
    pub gro: f64,
    /// netfilter's hooks (`nf_hook_slow`, inclusive).
    pub netfilter: f64,
    /// The forwarder's XDP or TC program (its entry point, inclusive).
    pub program: f64,
}

impl Parts {
    /// The parts of `perf_data` between `window`'s start and end.
    pub fn of(perf_data: &Path, window: (Monotonic, Monotonic)) -> Result<Parts> {
        let span = Monotonic::perf_span(window.0, window.1);
        let report = report_children(perf_data, GEN_COMM, Some(&span))?;
        if symbol_lines(&report).next().is_none() {
            bail!("perf report of {} has no samples of {GEN_COMM} in {span}", perf_data.display());
        }
        let by_parent = report_by_parent(perf_data, GEN_COMM, Some(&span), &bed_parents())?;
        Ok(Parts::parse(&report, &by_parent))
    }

    /// What a profile without the program's time shows instead: every BPF program's and
    /// unnamed kernel address's line of the window, by thread, for the error that says so.
    pub fn unnamed_or_bpf(perf_data: &Path, window: (Monotonic, Monotonic)) -> String {
        let span = Monotonic::perf_span(window.0, window.1);
        let args = ["--no-children", "-g", "none", "--sort", "comm,sym"];
        match perf_report(perf_data, "", Some(&span), &args) {
            Ok(r) => r
                .lines()
                .filter(|l| !l.starts_with('#') && (l.contains("bpf_") || l.contains("0x")))
                .take(12)
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("{e:#}"),
        }
    }

    fn parse(report: &str, by_parent: &str) -> Parts {
        let mut p = Parts::default();
        for (own, parent, sym) in parent_lines(by_parent) {
            match parent {
                "skb_segment" => p.segmentation += own,
                parent if SENDER_COPIES.contains(&parent) => p.refill += own,
                _ if sym.starts_with("csum_") => p.checksums += own,
                _ => {}
            }
        }
        for (children, _own, sym) in symbol_lines(report) {
            match sym {
                "dev_gro_receive" => p.gro += children,
                "nf_hook_slow" => p.netfilter += children,
                s if is_forwarder_entry(s) => p.program += children,
                _ => {}
            }
        }
        p
    }

    /// Fails when the profile cannot be right for `c` sent by `sender`: every forwarder
    /// mode spends time in its program; with live frames every contender that takes the
    /// frames into an skb segments them again on the way out; with the packet socket every
    /// contender's samples show the sender's copies. A report without kernel symbols would
    /// otherwise read 0 % for all of them, and the figure without the bed's parts would
    /// silently be the raw one.
    pub fn check(&self, c: Contender, sender: SenderKind) -> Result<()> {
        let forwarder = c.is_forwarder();
        let skb = matches!(
            c,
            Contender::ForwarderTc
                | Contender::Iptables
                | Contender::Nftables
                | Contender::NftFlowtable
                | Contender::Routing
        );
        if forwarder && self.program == 0.0 {
            bail!("the profile of {} shows no time in the forwarder's program", c.name());
        }
        match sender {
            SenderKind::LiveFrames if skb && self.segmentation == 0.0 => {
                bail!("the profile of {} shows no software segmentation", c.name())
            }
            SenderKind::PacketSocket if self.refill == 0.0 => {
                bail!("the profile of {} shows no copy of a frame into an skb", c.name())
            }
            _ => Ok(()),
        }
    }

    /// The share (0..1) of the thread's time that the bed adds and a NIC would not.
    pub fn bed_only(&self) -> f64 {
        ((self.checksums + self.segmentation + self.refill) / 100.0).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_into_the_parts() {
        let report = "\
# Children      Self  Symbol
    20.00%     0.10%  [k] dev_gro_receive
     9.00%     9.00%  [k] csum_partial
     3.00%     0.20%  [k] nf_hook_slow
     2.00%     1.00%  [k] bpf_prog_55cc84dc459fcbe4_forwarder_tc
";
        let by_parent = "\
# Overhead  Parent symbol           Symbol
    40.00%  [other]                 [k] pv_native_safe_halt
     6.00%  [other]                 [k] csum_partial
     1.00%  [other]                 [k] csum_partial_copy_generic
     3.00%  skb_segment             [k] csum_partial
     2.00%  skb_segment             [k] ___slab_alloc
     4.00%  xdp_test_run_init_page  [k] __pi_memcpy
     1.00%  xdp_test_run_init_page  [k] get_netmem
";
        let p = Parts::parse(report, by_parent);
        assert_eq!(p.checksums, 7.0);
        assert_eq!(p.segmentation, 5.0);
        assert_eq!(p.refill, 5.0);
        assert_eq!(p.gro, 20.0);
        assert_eq!(p.netfilter, 3.0);
        assert_eq!(p.program, 2.0);
        assert!((p.bed_only() - 0.17).abs() < 1e-9);
    }
}
