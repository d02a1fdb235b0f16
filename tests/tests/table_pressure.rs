//! A full connection table, as a user met it: `max_flows` established connections through
//! the forwarder, 40 of them idle. A connection past the limit is refused at its SYN (the
//! SYN is dropped and counted as drop_table_full, so the client's connect times out), no
//! established connection is evicted to make room, idle ones included, and flows that
//! close and expire make room again.

use anyhow::{ensure, Context, Result};
use aya::maps::{Array, Map, MapData};
use forwarder_common::{map_names, CT_COUNT_KERNEL, CT_COUNT_SWEPT};
use forwarder_tests::{
    netns::Netns,
    require_root,
    topology::{cli, Daemon, Topology, BROKERS, BROKER_PORT, NATVM},
    traffic::echo_servers,
};
use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

/// The config's minimum.
const MAX_FLOWS: usize = 1024;
const IDLE: usize = 40;
const NEW: usize = 1160;
const CLOSED: usize = 100;
/// A refused SYN gets no answer: the connect times out. 1.5 s covers the first SYN and its
/// retransmit at 1 s; an admitted handshake in these namespaces takes well under 1 ms.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The daemon's expiry sweep runs every 10 s (GC_INTERVAL in forwarder/src/daemon/mod.rs); a
/// closed flow goes at the first sweep after `timeouts.closing` (1 s here).
const EXPIRY_LIMIT: Duration = Duration::from_secs(15);
/// The echo server's first bytes on every connection (see tests/src/traffic.rs).
const HEADER_LEN: usize = 10;

/// Every connection goes to broker-1's listen port.
fn listen() -> SocketAddrV4 {
    SocketAddrV4::new(NATVM, 9092)
}

/// Established flows as the program counts them when it admits a SYN (CT_COUNT: the
/// program's promotions minus its deletions, minus the daemon sweep's deletions).
struct FlowCount(Array<MapData, u64>);

impl FlowCount {
    fn open(topo: &Topology) -> Result<Self> {
        let map = topo.pinned_map(map_names::CT_COUNT)?;
        Ok(Self(Array::try_from(Map::Array(map)).context("CT_COUNT as an array")?))
    }

    fn get(&self) -> Result<u64> {
        let kernel = self.0.get(&CT_COUNT_KERNEL, 0)?;
        let swept = self.0.get(&CT_COUNT_SWEPT, 0)?;
        Ok(kernel.wrapping_sub(swept))
    }

    /// Waits until the count is `n`; fails with the count it saw.
    fn wait_for(&self, n: usize, limit: Duration, what: &str) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.get()?;
            if now == n as u64 {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{what}: {now} established flows, expected {n} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn connect_once(ns: &Netns) -> Result<std::io::Result<TcpStream>> {
    ns.enter(|| TcpStream::connect_timeout(&listen().into(), CONNECT_TIMEOUT))
}

/// `n` connects at once from inside `ns`, each bounded by CONNECT_TIMEOUT.
fn connect_all_at_once(ns: &Netns, n: usize) -> Result<Vec<std::io::Result<TcpStream>>> {
    ns.enter(move || {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| s.spawn(|| TcpStream::connect_timeout(&listen().into(), CONNECT_TIMEOUT)))
                .collect();
            handles.into_iter().map(|h| h.join().expect("connect thread")).collect()
        })
    })
}

/// Connections opened and connections refused.
struct Opened {
    conns: Vec<TcpStream>,
    refused: Vec<std::io::Error>,
}

/// Opens `n` connections, one handshake at a time until the first refusal, then the rest
/// at once (each refused one costs CONNECT_TIMEOUT, so they wait together).
///
/// One at a time because the program admits a SYN against the *established* flows, and a
/// handshake still in flight is not one yet: with handshakes in flight at the limit, more
/// than `max_flows` get through. So each connection is counted as established (its ACK went
/// through the program) before the next SYN goes, and the number admitted is exact.
fn open(topo: &Topology, count: &FlowCount, n: usize) -> Result<Opened> {
    let mut out = Opened { conns: Vec::new(), refused: Vec::new() };
    for i in 0..n {
        let before = count.get()? as usize;
        match connect_once(&topo.client)? {
            Ok(c) => {
                count.wait_for(before + 1, IO_TIMEOUT, "a connection that got through")?;
                out.conns.push(c);
            }
            Err(e) => {
                out.refused.push(e);
                for r in connect_all_at_once(&topo.client, n - i - 1)? {
                    match r {
                        Ok(c) => out.conns.push(c),
                        Err(e) => out.refused.push(e),
                    }
                }
                break;
            }
        }
    }
    for e in &out.refused {
        // A RST (ECONNREFUSED) would mean the SYN reached a stack instead of being dropped.
        ensure!(e.kind() == ErrorKind::TimedOut, "a refused connect failed otherwise: {e}");
    }
    Ok(out)
}

/// Reads the echo server's header: the server accepted the connection.
fn greet(conn: &mut TcpStream) -> Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut header = [0u8; HEADER_LEN];
    conn.read_exact(&mut header).context("reading the echo server's header")
}

/// A few bytes there and their echo back.
fn ping(conn: &mut TcpStream, seed: u8) -> Result<()> {
    let sent: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(7).wrapping_add(seed)).collect();
    conn.write_all(&sent).context("sending")?;
    let mut echo = [0u8; 32];
    conn.read_exact(&mut echo).context("reading the echo")?;
    ensure!(echo[..] == sent[..], "the echo differs");
    Ok(())
}

/// Pings every connection; fails naming each that does not answer.
fn all_answer(conns: &mut [TcpStream], what: &str) -> Result<()> {
    let broken: Vec<String> = conns
        .iter_mut()
        .enumerate()
        .filter_map(|(i, c)| ping(c, i as u8).err().map(|e| format!("#{i}: {e:#}")))
        .collect();
    ensure!(
        broken.is_empty(),
        "{} of {} {what} broke:\n{}",
        broken.len(),
        conns.len(),
        broken.join("\n")
    );
    Ok(())
}

/// Closes cleanly: FIN, the server's FIN back, nothing left unread (so no RST).
fn close(mut conn: TcpStream) -> Result<()> {
    conn.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).context("reading to the server's FIN")?;
    ensure!(rest.is_empty(), "{} unexpected bytes before the FIN", rest.len());
    Ok(())
}

fn counter(topo: &Topology, daemon: &Daemon, name: &str) -> Result<(u64, u64)> {
    let out = cli(&topo.natvm, &daemon.config, &["stats", "--json"])?;
    ensure!(out.status.success(), "stats: {}", String::from_utf8_lossy(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).context("stats --json")?;
    let rule = stats
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["name"] == "broker-1"))
        .with_context(|| format!("no broker-1 in stats: {stats}"))?;
    let value = rule["counters"][name].as_u64().with_context(|| format!("no {name}: {rule}"))?;
    let active =
        rule["active_flows"].as_u64().with_context(|| format!("no active_flows: {rule}"))?;
    Ok((value, active))
}

/// Lets the test process hold both ends of every connection (about 2 x 1300 sockets).
fn raise_fd_limit() -> Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid out pointer.
    ensure!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0, "getrlimit");
    ensure!(lim.rlim_max >= 4096, "RLIMIT_NOFILE hard limit {} is below 4096", lim.rlim_max);
    if lim.rlim_cur < 4096 {
        lim.rlim_cur = lim.rlim_max.min(8192);
        // SAFETY: a valid in pointer.
        ensure!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0, "setrlimit");
    }
    Ok(())
}

fn table_full(tag: &str, mode: &str) -> Result<()> {
    require_root();
    raise_fd_limit()?;
    let started = Instant::now();
    let topo = Topology::new(tag, false, mode == "xdp")?;
    let _servers = echo_servers(&topo.broker, &[SocketAddrV4::new(BROKERS[0], BROKER_PORT)])?;
    let config = topo.config(mode, "10.0.0.4").replace(
        "mss_clamp = 1360\n",
        &format!("mss_clamp = 1360\nmax_flows = {MAX_FLOWS}\n[timeouts]\nclosing = \"1s\"\n"),
    );
    let daemon = Daemon::start(&topo.natvm, &config)?;
    let count = FlowCount::open(&topo)?;

    // 40 connections that exchange a little, then sit idle.
    let mut idle = open(&topo, &count, IDLE)?;
    ensure!(idle.refused.is_empty(), "{} of the idle connections refused", idle.refused.len());
    for c in idle.conns.iter_mut() {
        greet(c)?;
    }
    all_answer(&mut idle.conns, "idle connections (first use)")?;

    // 1160 more: exactly the room left gets through, the rest is refused at the SYN.
    let mut new = open(&topo, &count, NEW)?;
    let room = MAX_FLOWS - IDLE;
    assert_eq!(
        (new.conns.len(), new.refused.len()),
        (room, NEW - room),
        "admitted and refused of {NEW} new connections with {IDLE} established and max_flows = {MAX_FLOWS}\ndaemon log:\n{}",
        daemon.log_text()
    );
    assert_eq!(count.get()?, MAX_FLOWS as u64, "established flows at the limit");
    let (dropped, active) = counter(&topo, &daemon, "drop_table_full")?;
    assert!(
        dropped >= new.refused.len() as u64,
        "drop_table_full = {dropped} for {} refused connections (each sent at least one SYN)",
        new.refused.len()
    );
    assert_eq!(active, MAX_FLOWS as u64, "active flows of broker-1 in `forwarder stats`");

    // Nothing was evicted: the idle ones and every admitted one work both ways.
    all_answer(&mut idle.conns, "idle connections after the table filled")?;
    for c in new.conns.iter_mut() {
        greet(c)?;
    }
    all_answer(&mut new.conns, "admitted connections")?;

    // 100 close; once their flows expire, exactly their room is given back.
    for c in new.conns.drain(..CLOSED) {
        close(c)?;
    }
    count.wait_for(MAX_FLOWS - CLOSED, EXPIRY_LIMIT, "closed flows expired by the sweep")?;
    let mut again = open(&topo, &count, CLOSED + 1)?;
    assert_eq!(
        (again.conns.len(), again.refused.len()),
        (CLOSED, 1),
        "admitted and refused after {CLOSED} flows closed and expired"
    );
    for c in again.conns.iter_mut() {
        greet(c)?;
    }
    all_answer(&mut again.conns, "connections admitted after the expiry")?;
    all_answer(&mut idle.conns, "idle connections at the end")?;
    let (dropped_end, _) = counter(&topo, &daemon, "drop_table_full")?;
    assert!(dropped_end > dropped, "the last refusal was not counted ({dropped_end})");

    drop((idle, new, again));
    let config_path = daemon.config.clone();
    let status = daemon.stop()?;
    assert!(status.success(), "daemon exited with {status}");
    topo.unload(&config_path)?;
    eprintln!("table_full {mode}: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn a_full_table_refuses_new_connections_and_evicts_none_native_xdp() -> Result<()> {
    table_full("tpx", "xdp")
}

#[test]
fn a_full_table_refuses_new_connections_and_evicts_none_tc() -> Result<()> {
    table_full("tpt", "tc")
}

/// Flows injected into the pinned established table, all idle past the timeout: enough
/// that the daemon's first sweep takes a while to remove them.
const STALE_FLOWS: u32 = 100_000;

/// A daemon SIGKILLed while its sweep removes expired flows: the established-flow count
/// must never be left above what the table holds (that refused SYNs as "table full" with
/// room in the table, until `unload`), and the next daemon's first sweep sets it to exactly
/// what the table holds. The count came after the removals before; it now comes first, per
/// batch, and each sweep puts the count right when it disagrees with the table.
#[test]
fn a_daemon_killed_mid_sweep_leaves_a_count_the_next_one_puts_right() -> Result<()> {
    use aya::maps::HashMap as BpfHashMap;
    use forwarder::{datapath::batch, host::clock::monotonic_ns};
    use forwarder_common::{CtEntry, FlowKey, TcpState, CT_FLAG_REPLY};
    require_root();
    let topo = Topology::new("tpk", false, false)?;
    let config = topo.config("tc", "10.0.0.4").replace(
        "mss_clamp = 1360\n",
        "mss_clamp = 1360\nmax_flows = 100000\n[timeouts]\nestablished = \"1m\"\n",
    );
    // A first daemon makes the pins; forwarding (and the tables) outlive it.
    let first = Daemon::start(&topo.natvm, &config)?;
    let config_path = first.config.clone();
    let log = first.log.clone();
    let status = first.stop()?;
    ensure!(
        status.success(),
        "the first daemon exited with {status}:\n{}",
        log.lock().unwrap().join("\n")
    );

    let mut count = FlowCount::open(&topo)?;
    let map = topo.pinned_map(map_names::CT_ESTABLISHED)?;
    let mut table: BpfHashMap<MapData, FlowKey, CtEntry> =
        BpfHashMap::try_from(Map::from_map_data(map)?).context("CT_ESTABLISHED as a hash map")?;
    let stale = monotonic_ns().saturating_sub(600_000_000_000);
    for i in 0..STALE_FLOWS {
        // Distinct for each i: the address's low three bytes are i's.
        let [_, h, a, b] = i.to_be_bytes();
        let ne = |o: [u8; 4]| u32::from_ne_bytes(o);
        let orig = FlowKey::new(
            ne([10, 1 + h, a, b]),
            ne([10, 0, 0, 4]),
            50000u16.to_be(),
            9092u16.to_be(),
            6,
        );
        let reply = FlowKey::new(
            ne([11, h, a, b]),
            ne([10, 0, 0, 4]),
            9092u16.to_be(),
            40000u16.to_be(),
            6,
        );
        let half = CtEntry {
            peer: reply,
            last_seen_ns: stale,
            created_ns: stale,
            state: TcpState::Established as u8,
            ..CtEntry::default()
        };
        table.insert(orig, half, 0)?;
        table.insert(reply, CtEntry { peer: orig, flags: CT_FLAG_REPLY, ..half }, 0)?;
    }
    // As the program would have counted their promotions.
    let kernel = count.0.get(&CT_COUNT_KERNEL, 0)?;
    count.0.set(CT_COUNT_KERNEL, kernel + STALE_FLOWS as u64, 0)?;
    ensure!(count.get()? == STALE_FLOWS as u64, "the injected flows are not counted");
    let originals = |t: &BpfHashMap<MapData, FlowKey, CtEntry>| -> Result<u64> {
        let all = batch::entries(t, 1 << 20)?;
        Ok(all.iter().filter(|(_, e)| !e.is_reply()).count() as u64)
    };

    ensure!(
        originals(&table)? == STALE_FLOWS as u64,
        "a batch read of the table finds {} of the {STALE_FLOWS} flows ({} keys)",
        originals(&table)?,
        table.keys().count(),
    );
    // The second daemon's first sweep starts at once; it is killed once it is under way.
    let second = Daemon::start(&topo.natvm, &config)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.get()? + 2048 > STALE_FLOWS as u64 {
        ensure!(Instant::now() < deadline, "the sweep did not start within 30 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    second.kill9()?;
    let (left, counted) = (originals(&table)?, count.get()?);
    ensure!(
        left > 0 && left < STALE_FLOWS as u64,
        "the kill did not land mid-sweep: {left} of {STALE_FLOWS} stale flows left"
    );
    ensure!(
        counted as i64 <= left as i64,
        "killed mid-sweep, the count says {counted} established flows; the table holds {left}"
    );

    // The next daemon's first sweep removes the rest and sets the count to the table's.
    let third = Daemon::spawn(&topo.natvm, &config_path)?;
    let deadline = Instant::now() + EXPIRY_LIMIT;
    while count.get()? != 0 || originals(&table)? != 0 {
        ensure!(
            Instant::now() < deadline,
            "count {} with {} flows in the table, {EXPIRY_LIMIT:?} after the restart:\n{}",
            count.get()? as i64,
            originals(&table)?,
            third.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("killed with {left} stale flows left and a count of {counted}; restarted: 0 and 0");
    let log = third.log_text();
    ensure!(log.contains("disagreed with the table"), "no word of the count put right:\n{log}");
    ensure!(third.stop()?.success(), "the third daemon failed");
    topo.unload(&config_path)
}
