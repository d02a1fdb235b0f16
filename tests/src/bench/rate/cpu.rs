//! The generator's side of the CPU accounting: its CPU, pinning, and its own thread time
//! (the machine's busy time is `bench::cpu`).

use anyhow::{Context, Result};

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

/// Names the calling thread (its `comm`, as perf and /proc show it; at most 15 bytes).
pub fn name_thread(name: &str) -> Result<()> {
    let c = std::ffi::CString::new(name).context("a thread name without NUL")?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string, which `c` is, during the call.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
    anyhow::ensure!(rc == 0, "naming the thread: {}", std::io::Error::last_os_error());
    Ok(())
}
