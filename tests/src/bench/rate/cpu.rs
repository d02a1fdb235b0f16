//! CPU time around a send window: busy time of every CPU (/proc/stat), of the generator's
//! own CPU, and of the generator thread itself.

use anyhow::{bail, Context, Result};

/// Non-idle jiffies (user + nice + system + irq + softirq + steal) per CPU.
#[derive(Clone, Debug)]
pub struct Busy(Vec<u64>);

impl Busy {
    pub fn now() -> Result<Busy> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let mut cpus = Vec::new();
        for line in stat.lines() {
            let mut f = line.split_whitespace();
            let Some(name) = f.next() else { continue };
            // "cpu" is the sum; "cpuN" one CPU each, in order.
            if !name.starts_with("cpu") || name == "cpu" {
                continue;
            }
            let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
            if v.len() < 8 {
                bail!("/proc/stat: short line {line:?}");
            }
            // user nice system idle iowait irq softirq steal
            cpus.push(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
        }
        Ok(Busy(cpus))
    }

    /// Busy nanoseconds since `before`, over all CPUs and on CPU `cpu`.
    pub fn since(&self, before: &Busy, cpu: usize) -> (f64, f64) {
        let ns = 1e9 / clock_ticks();
        let d: Vec<u64> = self.0.iter().zip(&before.0).map(|(a, b)| a.saturating_sub(*b)).collect();
        (d.iter().sum::<u64>() as f64 * ns, d.get(cpu).copied().unwrap_or(0) as f64 * ns)
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time of the calling thread, ns.
pub fn thread_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning the generator to CPU {cpu}"))
}

/// The CPU the generator runs on: the last one.
pub fn generator_cpu() -> usize {
    std::thread::available_parallelism().map(|n| n.get() - 1).unwrap_or(0)
}
