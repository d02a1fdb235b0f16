//! What the tests that drive a daemon in the seed topology share: the seed's listen
//! addresses and brokers, echo servers on the brokers, the CLI's output read as text or
//! JSON, and polling with a bound.

use crate::{
    topology::{Topology, BROKERS, BROKER_PORT, LISTEN_PORTS, NATVM},
    traffic::{connect, echo_servers, EchoServers},
};
use anyhow::Result;
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4},
    process::Output,
    time::{Duration, Instant},
};

/// The broker a listen port of the seed config forwards to.
pub fn seed_broker(to: SocketAddrV4) -> Ipv4Addr {
    let i = LISTEN_PORTS.iter().position(|p| *p == to.port()).expect("a seed listen port");
    BROKERS[i]
}

/// A listen port on the NAT VM's address.
pub fn listen(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(NATVM, port)
}

pub fn all_listen() -> Vec<SocketAddrV4> {
    LISTEN_PORTS.iter().map(|p| listen(*p)).collect()
}

/// An echo server on every broker's port.
pub fn brokers(topo: &Topology) -> Result<EchoServers> {
    let addrs: Vec<SocketAddrV4> =
        BROKERS.iter().map(|b| SocketAddrV4::new(*b, BROKER_PORT)).collect();
    echo_servers(&topo.broker, &addrs)
}

/// A CLI run's stdout; fails the test with its output if it did not succeed.
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CLI run's `--json` output.
pub fn json(out: &Output, what: &str) -> serde_json::Value {
    let text = ok(out, what);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// An HTTP GET to the health endpoint (port 8080 of the NAT VM) from the client, the load
/// balancer's side; the whole response.
pub fn health_probe(topo: &Topology) -> Result<String> {
    let mut s = connect(&topo.client, listen(8080))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: nat\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp)
}

/// Polls `cond` every 100 ms for up to `secs`.
pub fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("{what}: not within {secs} s")
}
