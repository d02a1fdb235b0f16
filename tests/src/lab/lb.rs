//! The internal Standard Load Balancer behind the Private Link Services, in nftables: one rule
//! per broker (frontend :9092 -> backend port 9092 + i), flows spread over the healthy NAT VMs
//! by a 5-tuple hash, and SNAT to the Private Link NAT address.
//!
//! A prober thread plays the LB's health probe (HTTP GET on the NAT VMs' health port from
//! 168.63.129.16, every 500 ms): two failures in a row take a VM out of the pool, one success
//! puts it back. As in Azure, established flows stay on their VM either way (conntrack keeps
//! their translation); only new flows follow the pool.

use super::net::{Broker, HEALTH_PORT, KAFKA_PORT, NAT_VMS};
use crate::netns::Netns;
use anyhow::{bail, Context, Result};
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

const PROBE_INTERVAL: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// Consecutive failures that take a VM out of the pool (Azure's "unhealthy threshold").
const UNHEALTHY_AFTER: u32 = 2;

/// The nftables ruleset for `brokers` with `pool` (the healthy NAT VMs) as the backend pool.
/// An empty pool leaves the frontends with no backend, so new flows are refused as by Azure.
pub fn ruleset(brokers: &[Broker], pool: &[Ipv4Addr]) -> String {
    let mut rules = String::new();
    for b in brokers {
        let match_ = format!("ip daddr {} tcp dport {KAFKA_PORT}", b.private_endpoint);
        match pool {
            [] => rules += &format!("    {match_} reject with tcp reset\n"),
            [one] => rules += &format!("    {match_} dnat to {one}:{}\n", b.backend_port),
            many => {
                let targets: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, vm)| format!("{i} : {vm} . {}", b.backend_port))
                    .collect();
                rules += &format!(
                    "    {match_} dnat to jhash ip saddr . tcp sport . ip daddr . tcp dport mod {} map {{ {} }}\n",
                    many.len(),
                    targets.join(", ")
                );
            }
        }
    }
    format!(
        "table ip azlb\ndelete table ip azlb\ntable ip azlb {{\n  chain frontends {{\n    type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n  chain private_link_nat {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ct status dnat oifname \"vnet\" masquerade\n  }}\n}}\n"
    )
}

/// Loads `text` with `nft -f -` in the namespace `ns_name`: one transaction, so flows never
/// see half a pool. (By name: the prober thread holds no `Netns`, whose drop deletes it.)
fn apply(ns_name: &str, text: &str) -> Result<()> {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns_name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed?)")?;
    child.stdin.take().expect("piped").write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft -f failed: {}\n{text}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One HTTP probe; healthy only on a 200.
fn probe(vm: Ipv4Addr) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&SocketAddrV4::new(vm, HEALTH_PORT).into(), PROBE_TIMEOUT)
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// A pool change, for the demo's progress output.
#[derive(Debug, Clone)]
pub struct PoolEvent {
    pub vm: &'static str,
    pub healthy: bool,
}

pub struct LoadBalancer {
    stop: Arc<AtomicBool>,
    prober: Option<JoinHandle<()>>,
    pool: Arc<Mutex<Vec<bool>>>,
    events: Arc<Mutex<Vec<PoolEvent>>>,
}

impl LoadBalancer {
    /// Installs the frontends with an empty pool and starts probing; VMs join as they pass.
    pub fn start(ns: &Netns, brokers: &[Broker]) -> Result<LoadBalancer> {
        apply(ns.name(), &ruleset(brokers, &[]))?;
        let stop = Arc::new(AtomicBool::new(false));
        let pool = Arc::new(Mutex::new(vec![false; NAT_VMS.len()]));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (stop2, pool2, events2) = (stop.clone(), pool.clone(), events.clone());
        let brokers = brokers.to_vec();
        let ns_name = ns.name().to_string();
        let prober = ns.spawn(move || {
            let mut failures = vec![UNHEALTHY_AFTER; NAT_VMS.len()];
            while !stop2.load(Ordering::Relaxed) {
                let mut changed = false;
                {
                    let mut healthy = pool2.lock().unwrap();
                    for (i, (name, addr)) in NAT_VMS.iter().enumerate() {
                        failures[i] = if probe(*addr) { 0 } else { failures[i] + 1 };
                        let now = failures[i] < UNHEALTHY_AFTER;
                        if now != healthy[i] {
                            healthy[i] = now;
                            changed = true;
                            events2.lock().unwrap().push(PoolEvent { vm: name, healthy: now });
                        }
                    }
                    if changed {
                        let members: Vec<Ipv4Addr> = NAT_VMS
                            .iter()
                            .zip(healthy.iter())
                            .filter(|(_, h)| **h)
                            .map(|((_, a), _)| *a)
                            .collect();
                        if let Err(e) = apply(&ns_name, &ruleset(&brokers, &members)) {
                            eprintln!("lab: load balancer update failed: {e:#}");
                        }
                    }
                }
                std::thread::sleep(PROBE_INTERVAL);
            }
        })?;
        Ok(LoadBalancer { stop, prober: Some(prober), pool, events })
    }

    /// Which NAT VMs are in the backend pool now (in NAT_VMS order).
    pub fn pool(&self) -> Vec<bool> {
        self.pool.lock().unwrap().clone()
    }

    /// Pool changes since the last call.
    pub fn take_events(&self) -> Vec<PoolEvent> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    /// Waits until the pool is `want`, for at most `limit`.
    pub fn wait_pool(&self, want: &[bool], limit: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if self.pool() == want {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the load balancer pool is {:?}, not {want:?}, after {limit:?}", self.pool())
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.prober.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::net::brokers;

    #[test]
    fn two_vms_hash_one_vm_direct_none_reset() {
        let b = brokers(2);
        let two = ruleset(&b, &[Ipv4Addr::new(10, 0, 0, 4), Ipv4Addr::new(10, 0, 0, 5)]);
        assert!(two.contains("ip daddr 10.1.0.12 tcp dport 9092 dnat to jhash ip saddr . tcp sport . ip daddr . tcp dport mod 2 map { 0 : 10.0.0.4 . 9093, 1 : 10.0.0.5 . 9093 }"), "{two}");
        let one = ruleset(&b, &[Ipv4Addr::new(10, 0, 0, 5)]);
        assert!(one.contains("ip daddr 10.1.0.11 tcp dport 9092 dnat to 10.0.0.5:9092"), "{one}");
        let none = ruleset(&b, &[]);
        assert!(none.contains("reject with tcp reset") && !none.contains("dnat to"), "{none}");
    }
}
