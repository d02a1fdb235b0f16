//! Where the CPU of the bulk figure goes: one iperf3 stream of the path bed under `perf
//! record -a -g`, and a breakdown of its profile into the few parts that tell the ways
//! apart (`cargo xtask bench --profile WAY`, and the path section's profile table).
//!
//! The parts are inclusive times of functions that nest little else of the path: the
//! forwarder's program, veth's copy of an skb into a page-pool page before an XDP program
//! may see it, netfilter's hooks, GRO, software segmentation. Percentages are of the path's busy
//! samples (the iperf3 processes, ksoftirqd, softirq in the idle task; other work on the
//! machine is left out), so a share is comparable between ways.

use super::path::{timed_stream, Iperf, Setup, WAYS};
use crate::topology::Topology;
use anyhow::{bail, Context, Result};
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Where the perf data is kept (relative to the workspace; large, so not beside the
/// report).
pub const DIR: &str = "target/bench-profile";

/// The processes the path's work runs in: iperf3 (with the softirq work it runs inline),
/// every CPU's ksoftirqd thread, and the idle task (softirq that lands while a CPU idles).
pub fn comms() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let softirqd: Vec<String> = (0..cpus).map(|c| format!("ksoftirqd/{c}")).collect();
    format!("iperf3,{},swapper", softirqd.join(","))
}

/// What a profiled stream did, besides the profile.
pub struct Recorded {
    pub gbit_s: f64,
    /// Busy CPU seconds of the machine per Gbit (perf's own cost included).
    pub cpu_s_per_gbit: f64,
    /// TCP retransmits of the stream: packets lost on the way.
    pub retransmits: u64,
    /// Frames the router's end could not hand to the NAT VM's veth (its receive ring full):
    /// where those losses happen when the NAT VM drains its ring slower than it fills.
    pub ring_drops: u64,
}

/// One iperf3 stream of `seconds` through `way` in a fresh topology, with `perf record -a
/// -g` writing `perf_data` around it (`bench profile WAY`): where the CPU of the bulk
/// figure goes.
pub fn record(way: &str, seconds: u32, perf_data: &Path) -> Result<Recorded> {
    if !WAYS.contains(&way) {
        bail!("no way {way:?} ({})", WAYS.join(", "));
    }
    let topo = Topology::new("bp", false, true)?;
    let _server = Iperf::start(&topo)?;
    let setup = Setup::enter(&topo, way)?;
    let perf = Perf::record(perf_data)?;
    std::thread::sleep(Duration::from_millis(500));
    let stream = timed_stream(&topo, way, seconds);
    perf.stop()?;
    // A veth counts as its transmit drops what its peer's receive ring had no room for.
    let ring_drops = topo.router.link_counter("r_n", "tx", "dropped");
    setup.leave(&topo)?;
    let (stream, cpu_s_per_gbit) = stream?;
    Ok(Recorded {
        gbit_s: stream.gbit_s,
        cpu_s_per_gbit,
        retransmits: stream.retransmits,
        ring_drops: ring_drops?,
    })
}

/// A time on CLOCK_MONOTONIC, the clock [`Perf::record`] stamps its samples with.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Monotonic(Duration);

impl Monotonic {
    pub fn now() -> Monotonic {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .expect("CLOCK_MONOTONIC is always there");
        Monotonic(Duration::from(t))
    }

    /// `perf report --time`'s span from `start` to `end`: seconds with microseconds.
    pub fn perf_span(start: Monotonic, end: Monotonic) -> String {
        format!("{:.6},{:.6}", start.0.as_secs_f64(), end.0.as_secs_f64())
    }
}

/// A `perf record` this process started, stopped with SIGINT so it writes its file.
pub struct Perf(Child);

impl Perf {
    /// `perf record -a -g` of every CPU into `perf_data`, until stopped; samples stamped
    /// with CLOCK_MONOTONIC, so that a report can be cut to a [`Monotonic`] span.
    pub fn record(perf_data: &Path) -> Result<Perf> {
        let child = Command::new("perf")
            .args(["record", "-a", "-g", "-q", "-k", "CLOCK_MONOTONIC", "-o"])
            .arg(perf_data)
            .stdout(Stdio::null())
            .spawn()
            .context("starting perf record (is perf installed?)")?;
        Ok(Perf(child))
    }

    pub fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )?;
        let status = self.0.wait()?;
        // perf writes its file, then dies of the SIGINT it was sent.
        use std::os::unix::process::ExitStatusExt;
        if !status.success() && status.signal() != Some(libc::SIGINT) {
            bail!("perf record exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `limit` symbols with the most samples of their own in the path's processes, as
/// `perf report` prints them, after the command that makes the same list.
pub fn top_symbols(perf_data: &Path, limit: usize) -> Result<Vec<String>> {
    let comms = comms();
    let report = perf_report(
        perf_data,
        &comms,
        None,
        &["--no-children", "-g", "none", "-F", "overhead,sym"],
    )?;
    let mut lines = vec![format!(
        "perf report --no-children -F overhead,sym --percentage relative --comms {comms} -i {}",
        perf_data.display()
    )];
    lines.extend(
        report
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(limit)
            .map(|l| l.trim_end().to_string()),
    );
    Ok(lines)
}

/// A profile's parts, in percent of the path's busy samples.
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    /// Of all the path's samples, the idle task halted (not busy).
    pub idle: f64,
    /// The forwarder's XDP or TC program (`bpf_prog_*_forwarder_xdp` / `_tc`, inclusive:
    /// its subprograms and helpers).
    pub program: f64,
    /// veth copying an skb into a page-pool page for an XDP program (`skb_pp_cow_data`).
    pub veth_copy: f64,
    /// netfilter's hooks: conntrack, NAT, the iptables tables (`nf_hook_slow`).
    pub netfilter: f64,
    /// Merging received segments (`dev_gro_receive`; a flush that hands a merged skb up the
    /// stack from inside it is counted too).
    pub gro: f64,
    /// Software segmentation of a GSO skb on transmit (`skb_segment`), checksums included.
    pub segmentation: f64,
}

impl Breakdown {
    /// `perf report` of `perf_data`, children (inclusive) and self per symbol, relative to
    /// the path's own samples.
    /// With `forwarder`, the profile must show the forwarder's program (a report without
    /// kernel symbols would give 0 % silently).
    pub fn of(perf_data: &Path, forwarder: bool) -> Result<Breakdown> {
        let b = Breakdown::parse(&report_children(perf_data, &comms(), None)?);
        if b.segmentation == 0.0 || (forwarder && b.program == 0.0) {
            bail!(
                "perf report of {} lacks {} (no kernel symbols?)",
                perf_data.display(),
                if b.segmentation == 0.0 { "skb_segment" } else { "the forwarder's program" }
            );
        }
        Ok(b)
    }

    fn parse(report: &str) -> Breakdown {
        let mut raw = Breakdown::default();
        for (children, own, sym) in symbol_lines(report) {
            match sym {
                s if is_forwarder_entry(s) => raw.program += children,
                "skb_pp_cow_data" => raw.veth_copy += children,
                "nf_hook_slow" => raw.netfilter += children,
                "dev_gro_receive" => raw.gro += children,
                "skb_segment" => raw.segmentation += children,
                s if IDLE.iter().any(|i| s.contains(i)) => raw.idle += own,
                _ => {}
            }
        }
        let busy = (100.0 - raw.idle).max(1e-9) / 100.0;
        Breakdown {
            idle: raw.idle,
            program: raw.program / busy,
            veth_copy: raw.veth_copy / busy,
            netfilter: raw.netfilter / busy,
            gro: raw.gro / busy,
            segmentation: raw.segmentation / busy,
        }
    }
}

/// Whether `sym` is the forwarder's XDP or TC entry point as perf names a JITed program.
/// The entry points only: their inclusive time holds their subprograms (events), and other
/// programs (the bed's XDP_PASS, a cgroup's) are not the forwarder's.
pub fn is_forwarder_entry(sym: &str) -> bool {
    sym.starts_with("bpf_prog_")
        && (sym.ends_with("_forwarder_xdp") || sym.ends_with("_forwarder_tc"))
}

/// The symbols of a `perf report --children -F overhead_children,overhead,sym`, lines such
/// as `  10.96%     0.52%  [k] skb_pp_cow_data`: (inclusive %, own %, symbol).
pub fn symbol_lines(report: &str) -> impl Iterator<Item = (f64, f64, &str)> {
    report.lines().filter(|l| !l.starts_with('#')).filter_map(|line| {
        let mut words = line.split_whitespace();
        let (children, own, _kind, sym) =
            (words.next()?, words.next()?, words.next()?, words.next()?);
        let pct = |w: &str| w.trim_end_matches('%').parse::<f64>().ok();
        Some((pct(children)?, pct(own)?, sym))
    })
}

/// `perf report` of `perf_data` with inclusive and own time per symbol, in percent of the
/// samples of the processes or threads named `comms`.
pub fn report_children(perf_data: &Path, comms: &str, span: Option<&str>) -> Result<String> {
    perf_report(
        perf_data,
        comms,
        span,
        &["--children", "-g", "none", "-F", "overhead_children,overhead,sym"],
    )
}

/// `perf report` of `perf_data` with each sample's own time under the nearest caller that
/// matches `parents` (a regex; `[other]` where none does), per symbol, in percent of the
/// samples of `comms`: time spent inside a function, callees included, without counting a
/// callee twice when two such callers nest.
pub fn report_by_parent(
    perf_data: &Path,
    comms: &str,
    span: Option<&str>,
    parents: &str,
) -> Result<String> {
    perf_report(
        perf_data,
        comms,
        span,
        &["--no-children", "-g", "none", "--sort", "parent,sym", "--parent", parents],
    )
}

/// `perf report --stdio` of `perf_data` with `args`, in percent of the samples of `comms`
/// (every thread's with `comms` empty; within `span`, `perf report --time`'s form, if given).
pub fn perf_report(
    perf_data: &Path,
    comms: &str,
    span: Option<&str>,
    args: &[&str],
) -> Result<String> {
    let out = Command::new("perf")
        .args(["report", "--stdio"])
        .args(args)
        .args(span.into_iter().flat_map(|s| ["--time", s]))
        .args(["--percentage", "relative"])
        .args(Some(comms).filter(|c| !c.is_empty()).into_iter().flat_map(|c| ["--comms", c]))
        .arg("-i")
        .arg(perf_data)
        .output()
        .context("running perf report")?;
    if !out.status.success() {
        bail!("perf report: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rows of a `report_by_parent`, lines such as
/// `     2.15%  skb_segment             [k] csum_partial`: (own %, parent, symbol).
pub fn parent_lines(report: &str) -> impl Iterator<Item = (f64, &str, &str)> {
    report.lines().filter(|l| !l.starts_with('#')).filter_map(|line| {
        let mut words = line.split_whitespace();
        let (own, parent, _kind, sym) =
            (words.next()?, words.next()?, words.next()?, words.next()?);
        Some((own.trim_end_matches('%').parse::<f64>().ok()?, parent, sym))
    })
}

/// Where a CPU waits for work: the halt of a VM, or a host's idle drivers.
const IDLE: [&str; 5] = ["safe_halt", "intel_idle", "acpi_idle", "poll_idle", "mwait_idle"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_into_shares_of_the_busy_time() {
        let report = "\
# Children      Self  Symbol
    50.00%    50.00%  [k] pv_native_safe_halt
    10.00%     0.50%  [k] skb_pp_cow_data
     5.00%     1.00%  [k] bpf_prog_55cc84dc459fcbe4_forwarder_xdp
     0.50%     0.50%  [k] bpf_prog_4f9302ba65b90ccd_memset
     2.50%     2.50%  [k] bpf_prog_1234_forwarder_xdp_pass
     4.00%     0.10%  [k] skb_segment
";
        let b = Breakdown::parse(report);
        assert_eq!(b.idle, 50.0);
        assert_eq!(b.veth_copy, 20.0);
        assert_eq!(b.program, 10.0);
        assert_eq!(b.segmentation, 8.0);
        assert_eq!(b.netfilter, 0.0);
    }
}
