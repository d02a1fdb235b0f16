//! Where a stream frame's CPU goes: one more stream sample per contender with `perf record
//! -a -g` around its send window only, read for the generator thread alone (named
//! [`GEN_COMM`]; it runs the test-run loop and, inline, the softirq work of every hop, so
//! its samples are nearly all of a frame's cost).
//!
//! The parts that matter for reading the stream rows are the ones the veth bed adds and a
//! NIC does not: checksums computed in software (GRO verifying a frame veth built without a
//! checksum verdict, segmentation with the veths' checksum offload off), and the copy of a
//! whole template frame into each page-pool page that does not come back to the test run's
//! pool (pages that went into an skb; a NIC driver refills its ring without copying).

use crate::bench::profile::{report_children, symbol_lines};
use anyhow::{bail, Result};
use std::path::Path;

/// The generator thread's name while it sends (`perf report --comms`).
pub const GEN_COMM: &str = "rate-gen";

/// Shares of the generator thread's samples, in percent.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    /// Checksum arithmetic (`csum_*` functions' own time; what calls them adds little).
    pub checksums: f64,
    /// Page-pool pages filled with the template frame (`xdp_test_run_init_page`, inclusive).
    pub refill: f64,
    /// GRO (`dev_gro_receive`, inclusive).
    pub gro: f64,
    /// netfilter's hooks (`nf_hook_slow`, inclusive).
    pub netfilter: f64,
    /// The forwarder's XDP or TC program (its entry point, inclusive).
    pub program: f64,
}

impl Parts {
    pub fn of(perf_data: &Path) -> Result<Parts> {
        let report = report_children(perf_data, GEN_COMM)?;
        if symbol_lines(&report).next().is_none() {
            bail!("perf report of {} has no samples of {GEN_COMM}", perf_data.display());
        }
        Ok(Parts::parse(&report))
    }

    fn parse(report: &str) -> Parts {
        let mut p = Parts::default();
        for (children, own, sym) in symbol_lines(report) {
            match sym {
                s if s.starts_with("csum_") => p.checksums += own,
                "xdp_test_run_init_page" => p.refill += children,
                "dev_gro_receive" => p.gro += children,
                "nf_hook_slow" => p.netfilter += children,
                s if s.starts_with("bpf_prog_")
                    && (s.ends_with("_forwarder_xdp") || s.ends_with("_forwarder_tc")) =>
                {
                    p.program += children
                }
                _ => {}
            }
        }
        p
    }

    /// The share (0..1) of the thread's time that the bed adds and a NIC would not.
    pub fn bed_only(&self) -> f64 {
        ((self.checksums + self.refill) / 100.0).clamp(0.0, 1.0)
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
     1.00%     1.00%  [k] csum_partial_copy_generic
     6.00%     0.50%  [k] xdp_test_run_init_page
     3.00%     0.20%  [k] nf_hook_slow
     2.00%     1.00%  [k] bpf_prog_55cc84dc459fcbe4_forwarder_tc
";
        let p = Parts::parse(report);
        assert_eq!(p.checksums, 10.0);
        assert_eq!(p.refill, 6.0);
        assert_eq!(p.gro, 20.0);
        assert_eq!(p.netfilter, 3.0);
        assert_eq!(p.program, 2.0);
        assert!((p.bed_only() - 0.16).abs() < 1e-9);
    }
}
