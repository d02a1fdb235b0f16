//! What the NIC does, read with ethtool ioctls in the calling thread's network namespace:
//! its driver, its receive offloads (LRO, GRO), and the devices under it (an Azure
//! accelerated-networking VF under hv_netvsc's eth0), the latter from rtnetlink. sysfs is
//! only a fallback for the driver, because it shows the namespace it was mounted in.

use std::{
    fs, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// An AF_INET datagram socket for interface ioctls: they answer for the socket's network
/// namespace, which is the calling thread's.
pub(crate) fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn ifreq_for(iface: &str) -> io::Result<libc::ifreq> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    // SAFETY: ifreq is plain old data, for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

/// `struct ethtool_drvinfo` from linux/ethtool.h; the kernel fills all of it, doctor reads
/// only the driver name.
#[repr(C)]
#[allow(dead_code)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// The driver of `iface` (`hv_netvsc`, `mlx5_core`, ...), from ethtool in the calling
/// thread's namespace, else from the sysfs `device/driver` link.
pub fn iface_driver(iface: &str) -> Option<String> {
    match ethtool_driver(iface) {
        Ok(d) if !d.is_empty() => Some(d),
        // ENODEV: not in this namespace; sysfs could show a namesake from another one.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => None,
        _ => sysfs_driver(iface),
    }
}

fn ethtool_driver(iface: &str) -> io::Result<String> {
    // SAFETY: all-zero is a valid ethtool_drvinfo (integers and byte arrays).
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: ETHTOOL_GDRVINFO fills a struct ethtool_drvinfo, which `info` is.
    unsafe { ethtool(iface, &mut info)? };
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// One ethtool ioctl on `iface` in the calling thread's namespace: `data` holds the command
/// in its first field and receives the kernel's answer.
///
/// # Safety
/// `T` must be the struct the kernel writes for the command in `data`.
unsafe fn ethtool<T>(iface: &str, data: &mut T) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(iface)?;
    req.ifr_ifru.ifru_data = (data as *mut T).cast();
    // SAFETY: ifru_data points at a live T, which the caller vouches is what the command
    // fills.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct ethtool_value` from linux/ethtool.h: a command and one value.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const ETHTOOL_GFLAGS: u32 = 0x0000_0025;
/// LRO in ETHTOOL_GFLAGS' answer (ETH_FLAG_LRO).
const ETH_FLAG_LRO: u32 = 1 << 15;

/// Whether `iface` has LRO (large receive offload; receive segment coalescing, RSC, on
/// hv_netvsc) on, from ethtool in the calling thread's namespace; None when it cannot be
/// read.
pub fn iface_lro(iface: &str) -> Option<bool> {
    let mut value = EthtoolValue { cmd: ETHTOOL_GFLAGS, data: 0 };
    // SAFETY: ETHTOOL_GFLAGS fills a struct ethtool_value, which `value` is.
    unsafe { ethtool(iface, &mut value) }.ok()?;
    Some(value.data & ETH_FLAG_LRO != 0)
}

fn sysfs_driver(iface: &str) -> Option<String> {
    let link = fs::read_link(format!("/sys/class/net/{iface}/device/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

const ETHTOOL_SFLAGS: u32 = 0x0000_0026;

/// Turns LRO off on `iface` if it is on; returns whether it was on. hv_netvsc (and mlx5)
/// refuse native XDP while LRO is on, Azure hosts turn hv_netvsc's on (RSC) at boot, and a
/// host that forwards wants it off anyway (the kernel turns it off itself when an
/// interface's `forwarding` goes from 0 to 1, but not when it was 1 already).
pub fn turn_lro_off(iface: &str) -> io::Result<bool> {
    let mut value = EthtoolValue { cmd: ETHTOOL_GFLAGS, data: 0 };
    // SAFETY: ETHTOOL_GFLAGS fills a struct ethtool_value, which `value` is.
    unsafe { ethtool(iface, &mut value) }?;
    if value.data & ETH_FLAG_LRO == 0 {
        return Ok(false);
    }
    let mut set = EthtoolValue { cmd: ETHTOOL_SFLAGS, data: value.data & !ETH_FLAG_LRO };
    // SAFETY: ETHTOOL_SFLAGS reads a struct ethtool_value, which `set` is.
    unsafe { ethtool(iface, &mut set) }?;
    Ok(true)
}

const ETHTOOL_GGRO: u32 = 0x0000_002b;

/// Whether `iface` has GRO (generic receive offload) on; None when it cannot be read.
pub fn iface_gro(iface: &str) -> Option<bool> {
    let mut value = EthtoolValue { cmd: ETHTOOL_GGRO, data: 0 };
    // SAFETY: ETHTOOL_GGRO fills a struct ethtool_value, which `value` is.
    unsafe { ethtool(iface, &mut value) }.ok()?;
    Some(value.data != 0)
}

/// The devices under `iface` (whose master it is: the VF under hv_netvsc's eth0, a
/// bridge's or a bond's ports), by name, sorted; empty for a plain NIC, an unknown name or
/// when the kernel cannot be asked. Read with an rtnetlink link dump, which answers for the
/// calling thread's namespace (sysfs shows the one it was mounted in).
pub fn lower_devices(iface: &str) -> Vec<String> {
    let Ok(master) = nix::net::if_::if_nametoindex(iface) else {
        return Vec::new();
    };
    let mut lowers: Vec<String> = links()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.master == Some(master))
        .map(|l| l.name)
        .collect();
    lowers.sort();
    lowers
}

/// One link of a dump: its name and its master's index.
struct Link {
    name: String,
    master: Option<u32>,
}

/// Every link of the calling thread's namespace (RTM_GETLINK, NLM_F_DUMP).
fn links() -> io::Result<Vec<Link>> {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
    use netlink_packet_route::{
        link::{LinkAttribute, LinkMessage},
        RouteNetlinkMessage,
    };
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetLink(LinkMessage::default()));
    request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let bad = |e: netlink_packet_core::DecodeError| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < data.len() {
            let msg =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..]).map_err(bad)?;
            offset += msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(e.to_io());
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    let mut l = Link { name: String::new(), master: None };
                    for a in link.attributes {
                        match a {
                            LinkAttribute::IfName(n) => l.name = n,
                            LinkAttribute::Controller(m) => l.master = Some(m),
                            _ => {}
                        }
                    }
                    out.push(l);
                }
                _ => {}
            }
            if msg.header.length == 0 {
                break;
            }
        }
    }
}

/// A device under `iface` that merges received segments (GRO or LRO on), and which offload
/// does it. Its merged skbs reach `iface` with TCP checksums that hold only the
/// pseudo-header's sum (CHECKSUM_PARTIAL), which a generic XDP program on `iface` cannot
/// tell from complete ones.
pub fn merging_lower(iface: &str) -> Option<(String, &'static str)> {
    lower_devices(iface).into_iter().find_map(|lower| {
        if iface_gro(&lower) == Some(true) {
            Some((lower, "GRO"))
        } else if iface_lro(&lower) == Some(true) {
            Some((lower, "LRO"))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ethtool flags are read for real: loopback has no LRO, and a missing interface
    /// gives no answer rather than a guess.
    #[test]
    fn offloads_are_read_with_ethtool() {
        assert_eq!(iface_lro("lo"), Some(false));
        assert_eq!(iface_lro("no-such-if0"), None);
        assert_eq!(iface_gro("no-such-if0"), None);
        assert!(lower_devices("lo").is_empty());
        assert_eq!(merging_lower("lo"), None);
        // Loopback has no LRO to turn off; a missing interface is an error, not a guess.
        assert!(!turn_lro_off("lo").unwrap());
        assert!(turn_lro_off("no-such-if0").is_err());
    }
}
