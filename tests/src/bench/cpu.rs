//! Busy CPU time from /proc/stat: what a benchmark's traffic cost when generator, forwarder
//! and sink share the cores. Other work on the machine adds to it, which is why samples are
//! interleaved and medians taken.

use anyhow::{bail, Context, Result};

/// Busy time of all CPUs so far (user, nice, system, irq, softirq, steal), in ns.
pub fn busy_ns() -> Result<u64> {
    let b = Busy::now()?;
    Ok((b.0.iter().sum::<u64>() as f64 * tick_ns()) as u64)
}

/// Non-idle jiffies (user + nice + system + irq + softirq + steal) of each CPU, in order.
#[derive(Clone, Debug)]
pub struct Busy(Vec<u64>);

impl Busy {
    pub fn now() -> Result<Busy> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let mut cpus = Vec::new();
        for line in stat.lines() {
            let mut f = line.split_whitespace();
            // "cpu" is the sum; "cpuN" one CPU each.
            match f.next() {
                Some(name) if name.starts_with("cpu") && name != "cpu" => {}
                _ => continue,
            }
            let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
            if v.len() < 8 {
                bail!("unexpected /proc/stat line: {line}");
            }
            // user nice system idle iowait irq softirq steal
            cpus.push(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
        }
        Ok(Busy(cpus))
    }

    /// Busy nanoseconds since `before`: over all CPUs, and on CPU `cpu` alone.
    pub fn since(&self, before: &Busy, cpu: usize) -> (f64, f64) {
        let d: Vec<u64> = self.0.iter().zip(&before.0).map(|(a, b)| a.saturating_sub(*b)).collect();
        let on_cpu = d.get(cpu).copied().unwrap_or(0);
        (d.iter().sum::<u64>() as f64 * tick_ns(), on_cpu as f64 * tick_ns())
    }
}

/// One jiffy of /proc/stat (USER_HZ), in ns.
fn tick_ns() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    1e9 / hz as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry per CPU, and the per-CPU sum is the machine's "cpu" line (to a jiffy per
    /// CPU: the two reads are not atomic).
    #[test]
    fn per_cpu_busy_adds_up_to_the_machine_line() {
        let b = Busy::now().unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(b.0.len(), cpus);
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        let line = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
        let sum: u64 = b.0.iter().sum();
        assert!(
            line >= sum && line - sum <= 10 * cpus as u64,
            "cpu line {line}, per-CPU sum {sum}"
        );
        assert!(busy_ns().unwrap() > 0);
    }
}
