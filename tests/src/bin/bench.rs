//! `cargo xtask bench`: runs tests/src/bench and writes BENCHMARKS.md (or the path given)
//! with the command, the machine and the results; charts go beside it.
//!
//! `bench [--quick] [--only SECTION]... [OUT]`: `--quick` runs the packet-rate bed only,
//! with few frames, into target/bench-quick/BENCHMARKS.md unless OUT is given; `--only`
//! runs the named sections (program, path, kafka, rate, memory, upgrade).
//!
//! `bench profile WAY [SECONDS]`: one iperf3 stream through WAY (`iptables`, `forwarder
//! xdp`, ...) under `perf record -a -g`, into target/bench-profile/WAY.perf.data, and the
//! top of its `perf report`: the profile behind the bulk figures.

use forwarder_tests::{bench, require_root};
use std::{process::Command, time::Instant};

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    require_root();
    if std::env::args().nth(1).as_deref() == Some("profile") {
        return profile();
    }
    let (opts, out) = parse_args()?;
    let out = std::path::PathBuf::from(out);
    let out_dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(".".as_ref());
    std::fs::create_dir_all(out_dir)?;
    let start = Instant::now();
    let results = bench::run(&opts, out_dir, &mut |s| {
        eprintln!("[{:>5.1}s] {s}", start.elapsed().as_secs_f64())
    })?;
    let cpu = sh("sh", &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]);
    let doc = format!(
        "# Benchmarks\n\nMade by `cargo xtask bench` (as root) on {}, commit {}: kernel {}, {} \
         CPUs ({}), shared with other work. Ratios are what to compare: every figure was \
         measured next to its baseline in the same run.\n\n{results}{}",
        sh("date", &["-u", "+%Y-%m-%d"]),
        sh("git", &["rev-parse", "--short", "HEAD"]),
        sh("uname", &["-r"]),
        sh("nproc", &[]),
        cpu.trim(),
        include_str!("../bench/reading.md"),
    );
    std::fs::write(&out, doc)?;
    eprintln!("wrote {} in {:.0} s", out.display(), start.elapsed().as_secs_f64());
    Ok(())
}

fn profile() -> anyhow::Result<()> {
    let way = std::env::args().nth(2).ok_or_else(|| anyhow::anyhow!("profile needs a way"))?;
    let seconds: u32 = std::env::args().nth(3).map_or(Ok(5), |s| s.parse())?;
    let dir = std::path::Path::new(bench::profile::DIR);
    std::fs::create_dir_all(dir)?;
    let data = dir.join(format!("{}.perf.data", way.replace(' ', "-")));
    let r = bench::profile::record(&way, seconds, &data)?;
    println!(
        "{way}: {:.2} Gbit/s, {:.3} CPU s per Gbit, {} TCP retransmits, {} frames dropped at \
         the NAT VM's veth ring; {}",
        r.gbit_s,
        r.cpu_s_per_gbit,
        r.retransmits,
        r.ring_drops,
        data.display()
    );
    let b = bench::profile::Breakdown::of(&data, way.starts_with("forwarder"))?;
    println!(
        "idle {:.1} % of the path's samples; of the busy ones: program {:.1} %, veth copy for \
         XDP {:.1} %, GRO {:.1} %, netfilter {:.1} %, software segmentation {:.1} %",
        b.idle, b.program, b.veth_copy, b.gro, b.netfilter, b.segmentation
    );
    for line in bench::profile::top_symbols(&data, 50)? {
        println!("{line}");
    }
    Ok(())
}

fn parse_args() -> anyhow::Result<(bench::Options, String)> {
    let mut args = std::env::args().skip(1);
    let (mut quick, mut only, mut out) = (false, Vec::new(), None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => {
                let name = args.next().ok_or_else(|| anyhow::anyhow!("--only needs a section"))?;
                only.push(bench::Section::parse(&name)?);
            }
            flag if flag.starts_with("--") => anyhow::bail!("unknown option {flag}"),
            path => out = Some(path.to_string()),
        }
    }
    let mut opts = if quick { bench::Options::quick() } else { bench::Options::default() };
    if !only.is_empty() {
        opts.sections = only;
    }
    let default_out = if quick { "target/bench-quick/BENCHMARKS.md" } else { "BENCHMARKS.md" };
    Ok((opts, out.unwrap_or_else(|| default_out.into())))
}
