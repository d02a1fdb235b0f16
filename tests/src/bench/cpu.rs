//! Busy CPU time of the whole machine, from /proc/stat: what a benchmark's traffic cost
//! when generator, forwarder and sink share the cores. Other work on the machine adds to
//! it, which is why samples are interleaved and medians taken.

use anyhow::{Context, Result};

/// Busy time of all CPUs so far (user, nice, system, irq, softirq, steal), in ns.
pub fn busy_ns() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let fields: Vec<u64> =
        line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    anyhow::ensure!(fields.len() >= 8, "unexpected /proc/stat line: {line}");
    // user nice system idle iowait irq softirq steal
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(busy * 1_000_000_000 / hz)
}
