//! What the NIC does, read with ethtool ioctls in the calling thread's network namespace:
//! its driver, its receive offloads (LRO, GRO), and the devices under it (an Azure
//! accelerated-networking VF under hv_netvsc's eth0). sysfs is only a fallback for the
//! driver, and the source of lower devices, because it shows the namespace it was mounted in
//! (the daemon's, under `ip netns exec` and systemd alike).

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

const ETHTOOL_GGRO: u32 = 0x0000_002b;

/// Whether `iface` has GRO (generic receive offload) on; None when it cannot be read.
pub fn iface_gro(iface: &str) -> Option<bool> {
    let mut value = EthtoolValue { cmd: ETHTOOL_GGRO, data: 0 };
    // SAFETY: ETHTOOL_GGRO fills a struct ethtool_value, which `value` is.
    unsafe { ethtool(iface, &mut value) }.ok()?;
    Some(value.data != 0)
}

/// The devices under `iface` (sysfs `lower_*` links): the VF under hv_netvsc's eth0, a
/// bridge's or a bond's ports. Sorted; empty for a plain NIC or an unknown name.
pub fn lower_devices(iface: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/sys/class/net/{iface}")) else {
        return Vec::new();
    };
    let mut lowers: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("lower_").map(String::from))
        .collect();
    lowers.sort();
    lowers
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
    }
}
