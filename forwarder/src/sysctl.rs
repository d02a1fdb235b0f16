//! The kernel settings the forwarder needs while it runs, each restored on exit.

use std::{fs, io, ops::RangeInclusive, path::PathBuf};

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// A sysctl value changed by us, put back when dropped.
#[derive(Debug)]
pub struct Restore {
    path: PathBuf,
    old: String,
}

impl Restore {
    /// Writes `value` to `path`, remembering the old value. `None` if it already held it.
    pub fn set(path: impl Into<PathBuf>, value: &str) -> io::Result<Option<Restore>> {
        let path = path.into();
        let old = fs::read_to_string(&path)?.trim().to_string();
        if old == value {
            return Ok(None);
        }
        fs::write(&path, value)?;
        Ok(Some(Restore { path, old }))
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        // Always with a newline: writing an empty value would be zero bytes, which the
        // kernel never sees as a write (an empty reserved-ports list stayed set).
        if let Err(e) = fs::write(&self.path, format!("{}\n", self.old)) {
            tracing::warn!(path = %self.path.display(), "could not restore sysctl: {e}");
        }
    }
}

/// Adds `ports` to `net.ipv4.ip_local_reserved_ports`, so no local socket takes a port the
/// data path hands out as an SNAT port.
pub fn reserve_ports(ports: &RangeInclusive<u16>) -> io::Result<Option<Restore>> {
    let old = fs::read_to_string(RESERVED_PORTS)?.trim().to_string();
    let ours = format!("{}-{}", ports.start(), ports.end());
    if old.split(',').any(|r| r == ours) {
        return Ok(None);
    }
    let new = if old.is_empty() { ours } else { format!("{old},{ours}") };
    Restore::set(RESERVED_PORTS, &new)
}

/// Settings of `iface` that the slow path needs: the FIB lookup of the data path requires
/// forwarding on the ingress interface, and a packet handed to the kernel after translation
/// (to resolve a neighbour) carries a local source address, which the kernel only accepts
/// with accept_local.
pub fn slow_path(iface: &str) -> io::Result<Vec<Restore>> {
    let mut out = Vec::new();
    for (key, value) in [("forwarding", "1"), ("accept_local", "1")] {
        if let Some(r) = Restore::set(format!("/proc/sys/net/ipv4/conf/{iface}/{key}"), value)? {
            out.push(r);
        }
    }
    Ok(out)
}
