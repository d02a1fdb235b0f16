//! What the connection table costs in kernel memory: the daemon's maps as the kernel
//! accounts them (`bpftool map show`: bytes_memlock), per flow of `max_flows`, next to one
//! netfilter conntrack entry (the nf_conntrack slab object), which is what `ip_fwd.sh`'s
//! iptables NAT spends per connection.

use crate::topology::{cli, Daemon, Topology, NATVM};
use anyhow::{bail, Context, Result};
use std::process::Command;

pub struct MapMemory {
    pub name: String,
    pub max_entries: u64,
    pub bytes: u64,
}

pub struct Memory {
    pub max_flows: u64,
    pub maps: Vec<MapMemory>,
    /// Size of one nf_conntrack slab object, when the module is loaded.
    pub nf_conntrack_objsize: Option<u64>,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.maps.iter().map(|m| m.bytes).sum()
    }

    /// The conntrack maps only (CT_*), per flow: a flow takes two entries (both directions).
    pub fn ct_bytes_per_flow(&self) -> f64 {
        let ct: u64 = self.maps.iter().filter(|m| m.name.starts_with("CT_")).map(|m| m.bytes).sum();
        ct as f64 / self.max_flows as f64
    }
}

fn bpftool_json(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("bpftool").args(args).arg("-j").output().context("running bpftool")?;
    if !out.status.success() {
        bail!("bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub fn measure(max_flows: u64) -> Result<Memory> {
    let topo = Topology::new("bm", false, false)?;
    let config = format!("max_flows = {max_flows}\n{}", topo.config("xdp", &NATVM.to_string()));
    let daemon = Daemon::start(&topo.natvm, &config)?;
    let status: serde_json::Value =
        serde_json::from_slice(&cli(&topo.natvm, &daemon.config, &["status", "--json"])?.stdout)?;
    let prog = status["program_ids"][0].as_u64().context("status: no program id")?;
    let info = bpftool_json(&["prog", "show", "id", &prog.to_string()])?;
    let mut maps = Vec::new();
    for id in info["map_ids"].as_array().context("bpftool prog show: map_ids")? {
        let m = bpftool_json(&["map", "show", "id", &id.to_string()])?;
        maps.push(MapMemory {
            name: m["name"].as_str().unwrap_or("?").to_string(),
            max_entries: m["max_entries"].as_u64().unwrap_or(0),
            bytes: m["bytes_memlock"].as_u64().unwrap_or(0),
        });
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.bytes));
    let config_path = daemon.config.clone();
    daemon.stop()?;
    topo.unload(&config_path)?;
    let nf_conntrack_objsize = std::fs::read_to_string("/proc/slabinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.split_whitespace().next() == Some("nf_conntrack"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
    });
    Ok(Memory { max_flows, maps, nf_conntrack_objsize })
}
