//! The daemon stays responsive when its surroundings misbehave: a resolver that never
//! answers (during a DNS refresh, a rule add or a reload), an unload racing the load
//! balancer's probe, a process out of file descriptors.

use anyhow::{Context, Result};
use forwarder_tests::daemon_tests::{
    eventually, http_get, ok, scrape_metrics, with_local_endpoints, TestBed, METRICS,
};
use forwarder_tests::{
    netns::Netns,
    require_root,
    topology::{cli, forwarder_bin, Daemon, Topology},
};
use std::{
    net::{SocketAddrV4, TcpStream, UdpSocket},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// How long a control request or a SIGTERM may take, at most, whatever else is going on.
const PROMPT: Duration = Duration::from_secs(2);

/// Rewrites a file in place: `ip netns exec` bind-mounts it, so the inode must stay.
fn rewrite(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?
        .write_all(text.as_bytes())?;
    Ok(())
}

/// While a DNS refresh hangs on a resolver that never answers, the control socket answers
/// and SIGTERM ends the daemon at once; the hung lookup is abandoned after its timeout.
#[test]
fn a_hung_resolver_delays_neither_control_requests_nor_sigterm() -> Result<()> {
    require_root();
    let bed = TestBed::new("rdns", "xdp-generic")?;
    let topo = &bed.topo;
    let (dns, hosts) = silent_name_server(topo, "127.0.0.1 localhost\n10.20.0.11 kafka-a.test\n")?;

    let text = bed
        .seed_config()
        .replace("\"10.20.0.11:9092\"", "\"kafka-a.test:9092\"")
        .replace("mss_clamp = 1360\n", "mss_clamp = 1360\ndns_refresh = \"1s\"\n");
    let (daemon, config) = bed.start(&text)?;

    // The name leaves the hosts file: the next refresh asks the silent server.
    rewrite(&hosts, "127.0.0.1 localhost\n")?;
    let mut buf = [0u8; 512];
    dns.recv_from(&mut buf).context("no DNS query reached the silent server")?;

    for _ in 0..3 {
        let t = Instant::now();
        let status = ok(&cli(&topo.natvm, &config, &["status", "--json"])?, "status");
        let took = t.elapsed();
        assert!(took < PROMPT, "status took {took:?} while a lookup hung");
        let status: serde_json::Value = serde_json::from_str(&status)?;
        assert_eq!(
            status["rules"][0]["resolved"], "10.20.0.11:9092",
            "the last good address is kept: {status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The lookup is given up (its thread left to the resolver) and logged: each name has 5 s
    // (`plan::RESOLVE_TIMEOUT`), a whole round 10 s.
    eventually(20, "the hung lookup is given up", || {
        let log = daemon.log_text();
        Ok(log.contains("target did not resolve; keeping the last address")
            || log.contains("abandoned"))
    })?;

    let t = Instant::now();
    let exit = daemon.stop()?;
    let took = t.elapsed();
    assert!(took < PROMPT, "SIGTERM took {took:?} while a lookup hung");
    eprintln!("SIGTERM while a lookup hung: the daemon exited in {took:?}");
    assert!(exit.success(), "the daemon exited with {exit}");
    topo.unload(&config)
}

/// How long a read of the daemon's state may take while a change waits on DNS: the lookup
/// takes 5 s (`plan::RESOLVE_TIMEOUT`), so a reader that waited for it shows.
const READ_PROMPTLY: Duration = Duration::from_secs(1);

/// Points the NAT VM's resolver at a name server on 127.0.0.1:53 that reads the queries
/// and never answers, no ICMP unreachable either (the daemon runs under `ip netns exec`,
/// which bind-mounts these files over /etc/hosts and /etc/resolv.conf), with `hosts` as
/// its hosts file; returns that server's socket and the hosts file's path.
fn silent_name_server(topo: &Topology, hosts: &str) -> Result<(UdpSocket, PathBuf)> {
    // /etc/netns/<ns>/ goes with the namespace (Netns::drop), also on failure.
    let etc = Path::new("/etc/netns").join(topo.natvm.name());
    std::fs::create_dir_all(&etc)?;
    std::fs::write(etc.join("hosts"), hosts)?;
    // The longest the resolver itself would wait: 30 s per try, 5 tries.
    std::fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:30 attempts:5\n",
    )?;
    let dns = topo.natvm.enter(|| UdpSocket::bind("127.0.0.1:53"))??;
    dns.set_read_timeout(Some(Duration::from_secs(15)))?;
    Ok((dns, etc.join("hosts")))
}

/// Waits for a query for `label` (one label of the name) at the silent server: from then
/// on the daemon waits on it.
fn await_query(dns: &UdpSocket, label: &str) -> Result<()> {
    let mut buf = [0u8; 512];
    loop {
        let (n, _) = dns
            .recv_from(&mut buf)
            .with_context(|| format!("no DNS query for {label} reached the silent server"))?;
        let wanted = [&[label.len() as u8], label.as_bytes()].concat();
        if buf[..n].windows(wanted.len()).any(|w| w == wanted) {
            return Ok(());
        }
    }
}

/// Asks each reader of the daemon's state (`status`, a metrics scrape, the health probe)
/// over and over while `waiting` says `change` still waits on DNS; fails unless each
/// answered in full within [`READ_PROMPTLY`] every time, at least twice meanwhile.
fn readers_while(
    topo: &Topology,
    config: &Path,
    change: &str,
    waiting: impl Fn() -> bool,
) -> Result<()> {
    let health = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8080);
    let mut slowest = [Duration::ZERO; 3];
    let mut rounds = 0;
    while waiting() {
        let t = Instant::now();
        let status = ok(&cli(&topo.natvm, config, &["status", "--json"])?, "status");
        slowest[0] = slowest[0].max(t.elapsed());
        let status: serde_json::Value = serde_json::from_str(&status)?;
        assert_eq!(status["rules"].as_array().map(Vec::len), Some(3), "{status}");
        let t = Instant::now();
        let metrics = scrape_metrics(&topo.natvm, METRICS)?;
        slowest[1] = slowest[1].max(t.elapsed());
        assert!(metrics.contains("forwarder_"), "not a scrape: {metrics}");
        let t = Instant::now();
        let probe = http_get(&topo.natvm, health, "/", Duration::from_secs(10))?;
        slowest[2] = slowest[2].max(t.elapsed());
        assert!(probe.starts_with("HTTP/1.1 200"), "the probe got {probe:?}");
        if waiting() {
            rounds += 1;
        }
    }
    eprintln!(
        "while {change} waited on DNS, {rounds} rounds of reads; slowest status / metrics \
         scrape / health probe: {slowest:?}"
    );
    for (what, took) in ["status", "a metrics scrape", "the health probe"].iter().zip(slowest) {
        assert!(took < READ_PROMPTLY, "{what} took {took:?} while {change} waited on DNS");
    }
    anyhow::ensure!(rounds >= 2, "only {rounds} rounds of reads while {change} waited");
    Ok(())
}

/// A rule add, then a SIGHUP reload, whose new target's name server never answers: each
/// waits for its lookup without the daemon's lock, so status, a metrics scrape and the
/// health probe answer at once meanwhile; the rule add then fails as before (exit 2,
/// nothing changed), and SIGTERM ends the daemon during the reload's lookup.
#[test]
fn a_change_waiting_on_dns_holds_up_no_reader_of_the_state() -> Result<()> {
    require_root();
    let bed = TestBed::new("rchg", "xdp-generic")?;
    let topo = &bed.topo;
    let (dns, _) = silent_name_server(topo, "127.0.0.1 localhost\n")?;
    let text = with_local_endpoints(&bed.seed_config());
    let (daemon, config) = bed.start(&text)?;
    eventually(5, "the probe answers", || {
        topo.natvm.enter(|| TcpStream::connect("127.0.0.1:8080").is_ok())
    })?;

    let args = ["rule", "add", "slow", "--listen", "9095", "--target", "slow.test:9092"];
    let mut add = topo.natvm.command(forwarder_bin().to_str().expect("utf-8 path"));
    add.arg("--config").arg(&config).args(args).env("NO_COLOR", "1");
    let adding = std::thread::spawn(move || {
        let t = Instant::now();
        (add.output(), t.elapsed())
    });
    await_query(&dns, "slow")?;
    readers_while(topo, &config, "a rule add", || !adding.is_finished())?;
    let (out, took) = adding.join().expect("rule add thread");
    let out = out?;
    eprintln!("the rule add waited {took:?} on the silent name server");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "rule \"slow\": target slow.test:9092 does not resolve to an IPv4 address: no \
             answer from the resolver within 5s (use --allow-unresolved to start anyway)"
        ),
        "{err}"
    );
    assert!(took >= Duration::from_secs(3), "the rule add did not wait on DNS ({took:?})");
    assert_eq!(std::fs::read_to_string(&config)?, text, "the refused rule reached the file");

    // The same through SIGHUP; SIGTERM then ends the daemon without waiting for the lookup.
    let slower = "\n[[rule]]\nname = \"slower\"\nlisten = 9096\ntarget = \"slower.test:9092\"\n";
    std::fs::write(&config, format!("{text}{slower}"))?;
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)?;
    await_query(&dns, "slower")?;
    // The lookup gives up 5 s after its query: read for 2 s of that.
    let until = Instant::now() + Duration::from_secs(2);
    readers_while(topo, &config, "a SIGHUP reload", || Instant::now() < until)?;
    let log = daemon.log_text();
    assert!(!log.contains("SIGHUP: reload"), "the reload ended before the reads did:\n{log}");
    let t = Instant::now();
    let exit = daemon.stop()?;
    let took = t.elapsed();
    eprintln!("SIGTERM during the SIGHUP reload's lookup: the daemon exited in {took:?}");
    assert!(took < PROMPT, "SIGTERM took {took:?} while a reload waited on DNS");
    assert!(exit.success(), "the daemon exited with {exit}");
    std::fs::write(&config, &text)?;
    topo.unload(&config)
}

/// Whether an XDP program is attached to `iface` in `ns`.
fn xdp_attached(ns: &Netns, iface: &str) -> Result<bool> {
    let out = ns.ip(&["link", "show", "dev", iface])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("xdp"))
}

/// `forwarder unload` closes the health endpoint before it detaches the program: the load
/// balancer must stop sending new flows before they would no longer be forwarded.
#[test]
fn unload_fails_the_health_probe_before_it_detaches() -> Result<()> {
    require_root();
    let bed = TestBed::new("rhu", "xdp-generic")?;
    let topo = &bed.topo;
    let text = bed
        .seed_config()
        .replace("mss_clamp = 1360\n", "mss_clamp = 1360\nhealth = \"0.0.0.0:8080\"\n");
    let (daemon, config) = bed.start(&text)?;
    let health: std::net::SocketAddr = "127.0.0.1:8080".parse()?;
    eventually(5, "the probe answers", || {
        topo.natvm.enter(move || TcpStream::connect(health).is_ok())
    })?;
    assert!(xdp_attached(&topo.natvm, "n0")?);

    // A prober as fast as it can go, each attempt stamped with its start.
    let stop = Arc::new(AtomicBool::new(false));
    let probes: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let prober = {
        let (stop, probes) = (stop.clone(), probes.clone());
        topo.natvm.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let at = Instant::now();
                let answered =
                    TcpStream::connect_timeout(&health, Duration::from_millis(200)).is_ok();
                probes.lock().unwrap().push((at, answered));
            }
        })?
    };
    let unload = {
        let (ns, config) = (topo.natvm.name().to_string(), config.clone());
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(forwarder_tests::topology::forwarder_bin())
                .arg("--config")
                .arg(config)
                .arg("unload")
                .output()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let detached = loop {
        if !xdp_attached(&topo.natvm, "n0")? {
            break Instant::now();
        }
        anyhow::ensure!(Instant::now() < deadline, "the program was not detached");
    };
    let out = unload.join().expect("unload thread")?;
    stop.store(true, Ordering::SeqCst);
    prober.join().expect("prober");
    ok(&out, "unload");

    let probes = probes.lock().unwrap();
    assert!(probes.iter().any(|(_, a)| *a), "no probe ever answered");
    let late: Vec<_> = probes.iter().filter(|(at, a)| *a && *at >= detached).collect();
    assert!(
        late.is_empty(),
        "{} probes answered after the program was seen detached (of {})",
        late.len(),
        probes.len()
    );
    // The order, from the daemon itself.
    eventually(5, "the daemon logs its unload", || Ok(daemon.log_text().contains("unloaded")))?;
    let log = daemon.log_text();
    let closed = log.find("health endpoint closed").context(format!("never closed:\n{log}"))?;
    let removed = log.find("pins from").context(format!("no pins removed:\n{log}"))?;
    let detach = log.find("program detached").context(format!("no detach logged:\n{log}"))?;
    assert!(
        closed < removed && removed < detach,
        "not closed, then unloaded, then detached:\n{log}"
    );
    eprintln!("{} probes during the unload, none answered after the detach", probes.len());
    Ok(())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm)": state is field 3, utime 14, stime 15.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn set_nofile(pid: u32, n: u64) -> Result<()> {
    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: prlimit only reads `lim`; a null old-limit pointer is allowed.
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    anyhow::ensure!(r == 0, "prlimit: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Out of file descriptors (EMFILE), the accept loops back off instead of spinning, and
/// serve again once descriptors are free.
#[test]
fn accept_loops_back_off_when_out_of_descriptors() -> Result<()> {
    require_root();
    let bed = TestBed::new("rfd", "xdp-generic")?;
    let topo = &bed.topo;
    let text = with_local_endpoints(&bed.seed_config());
    let (daemon, config) = bed.start(&text)?;
    let pid = daemon.pid();
    let socket = topo.run_dir().join("control.sock");
    eventually(5, "the probe answers", || {
        topo.natvm.enter(|| TcpStream::connect("127.0.0.1:8080").is_ok())
    })?;

    // A few descriptors to spare, then more connections than that on every listener: the
    // control connections are held open (the daemon waits for their request), the others
    // wait in the listen queues with accept failing on EMFILE.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    set_nofile(pid, open + 4)?;
    let mut held: Vec<UnixStream> = Vec::new();
    for _ in 0..32 {
        held.push(UnixStream::connect(&socket)?);
    }
    let tcp: Vec<TcpStream> = topo.natvm.enter(|| -> std::io::Result<Vec<TcpStream>> {
        let mut v = Vec::new();
        for port in [8080, 9464] {
            for _ in 0..8 {
                v.push(TcpStream::connect(("127.0.0.1", port))?);
            }
        }
        Ok(v)
    })??;
    // Wait until every slot is taken and an accept has failed for it. A single reading is
    // not enough: `open` may have counted a descriptor another task held only for a moment
    // (a netlink query, a /proc read), and its slot stays free until the accept loop's next
    // try, up to a back-off later.
    let limit = open + 4;
    eventually(10, "the daemon runs out of descriptors", || {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
        Ok(fds >= limit && daemon.log_text().contains("accept failed"))
    })?;

    let window = Duration::from_secs(2);
    let before = cpu_ticks(pid)?;
    std::thread::sleep(window);
    let used = cpu_ticks(pid)? - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let share = used as f64 / hz / window.as_secs_f64();
    eprintln!("daemon CPU while out of descriptors: {:.0} % of one CPU", share * 100.0);
    assert!(share < 0.2, "the daemon used {:.0} % of a CPU out of descriptors", share * 100.0);

    drop(held);
    drop(tcp);
    eventually(10, "the control socket answers again", || {
        Ok(cli(&topo.natvm, &config, &["status"])?.status.success())
    })?;
    eventually(10, "the probe answers again", || {
        topo.natvm.enter(|| TcpStream::connect("127.0.0.1:8080").is_ok())
    })?;
    let log = daemon.log_text();
    assert!(log.contains("accept"), "the accept failures were not logged:\n{log}");
    bed.finish(daemon)
}

/// SNAT ports run out: the SYN is dropped and counted, the daemon says so in its log (once
/// per interval, naming the rule and what to do), and once a port is free again new
/// connections get through and the log says the drops stopped.
#[test]
fn snat_ports_running_out_is_logged_and_recovers() -> Result<()> {
    require_root();
    let bed = TestBed::new("rsn", "xdp-generic")?;
    let topo = &bed.topo;
    let text = bed
        .seed_config()
        .replace("snat_ports = \"40000-59999\"", "snat_ports = \"40000-40001\"")
        .replace("[timeouts]", "[timeouts]\nclosing = \"1s\"");
    let text = if text.contains("[timeouts]") {
        text
    } else {
        format!("{text}\n[timeouts]\nclosing = \"1s\"\n")
    };
    let daemon = Daemon::start(&topo.natvm, &text)?;
    let listen = SocketAddrV4::new(forwarder_tests::topology::NATVM, 9092);
    let connect = || -> Result<std::io::Result<TcpStream>> {
        topo.client
            .enter(move || TcpStream::connect_timeout(&listen.into(), Duration::from_millis(1500)))
    };
    let held: Vec<TcpStream> =
        (0..2).map(|_| connect()?.context("one of two ports")).collect::<Result<_>>()?;
    assert!(connect()?.is_err(), "a third connection got a port out of two");
    let line = "every SNAT port tried was taken";
    eventually(25, "the daemon logs the SNAT drops", || Ok(daemon.log_text().contains(line)))?;
    let log = daemon.log_text();
    let warn = log.lines().find(|l| l.contains(line)).unwrap();
    assert!(warn.contains("rule=") && warn.contains("drop_no_snat_port"), "{warn}");
    // And the program itself, through aya-log, at once: which rule and which target.
    let event = "event=no_snat_port rule_id=0 target=10.20.0.11:9092: no free SNAT port";
    eventually(5, "the program's event in the daemon's log", || {
        Ok(daemon.log_text().contains(event))
    })?;
    let line = daemon.log_text().lines().find(|l| l.contains(event)).unwrap().to_string();
    assert!(line.contains("WARN"), "{line}");

    // The two connections close; their ports come back after the closing timeout and the
    // next sweep, and a new connection gets through.
    drop(held);
    eventually(30, "a new connection after the ports freed up", || Ok(connect()?.is_ok()))?;
    eventually(25, "the daemon logs that the drops stopped", || {
        Ok(daemon.log_text().contains("no more drops since the last look"))
    })?;
    Ok(())
}
