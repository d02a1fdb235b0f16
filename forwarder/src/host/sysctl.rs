//! The kernel settings the forwarder needs while it forwards. The value each had before
//! is recorded in the daemon's state file the first time it is changed, so it outlives
//! daemon restarts and is put back by `forwarder unload`, not by a daemon exit: the
//! in-kernel forwarding keeps running (and needs these) while no daemon runs.

use std::{collections::BTreeMap, fs, io, ops::RangeInclusive};

pub const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Sysctl file -> the value it held before the forwarder changed it.
pub type Before = BTreeMap<String, String>;

/// Writes `value` to `path` unless it holds it already, recording the old value in
/// `before` (only the first time: a restarted daemon finds its own value there).
pub fn set(path: &str, value: &str, before: &mut Before) -> io::Result<()> {
    let old = fs::read_to_string(path)?.trim().to_string();
    if old == value {
        return Ok(());
    }
    write(path, value)?;
    before.entry(path.to_string()).or_insert(old);
    Ok(())
}

/// Puts every recorded value back; returns the ones that failed.
pub fn restore(before: &Before) -> Vec<(String, io::Error)> {
    before.iter().filter_map(|(p, v)| write(p, v).err().map(|e| (p.clone(), e))).collect()
}

fn write(path: &str, value: &str) -> io::Result<()> {
    // Always with a newline: writing an empty value would be zero bytes, which the kernel
    // never sees as a write (an empty reserved-ports list stayed set).
    fs::write(path, format!("{value}\n"))
}

/// Adds `ports` to `net.ipv4.ip_local_reserved_ports`, so no local socket takes a port the
/// data path hands out as an SNAT port.
pub fn reserve_ports(ports: &RangeInclusive<u16>, before: &mut Before) -> io::Result<()> {
    let old = fs::read_to_string(RESERVED_PORTS)?.trim().to_string();
    let ours = format!("{}-{}", ports.start(), ports.end());
    if old.split(',').any(|r| r == ours) {
        return Ok(());
    }
    let new = if old.is_empty() { ours } else { format!("{old},{ours}") };
    set(RESERVED_PORTS, &new, before)
}

/// Settings of `iface` that the slow path needs: the FIB lookup of the data path requires
/// forwarding on the ingress interface, and a packet handed to the kernel after translation
/// (to resolve a neighbour) carries a local source address, which the kernel only accepts
/// with accept_local.
pub fn slow_path(iface: &str, before: &mut Before) -> io::Result<()> {
    for (key, value) in [("forwarding", "1"), ("accept_local", "1")] {
        set(&format!("/proc/sys/net/ipv4/conf/{iface}/{key}"), value, before)?;
    }
    Ok(())
}
