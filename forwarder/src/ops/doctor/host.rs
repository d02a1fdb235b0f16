//! The host as the checks see it, read through the calling thread's network namespace
//! (`/proc/thread-self/net`, ioctls on a fresh socket, child processes): the firewall
//! tables, TCP sockets and their owners, the reserved ports sysctl, an interface's MTU and
//! driver, a command's output. sysfs is only a fallback, because it shows the namespace it
//! was mounted in.

use crate::{
    host::nic::{ifreq_for, ioctl_socket},
    ops::netfilter::{iptables_save, model::Table, nft},
};
use std::{
    collections::{HashMap, HashSet},
    fmt, fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    process::Command,
};

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
/// Reading the host failed; the checks turn these into findings (printed as the chain,
/// `error::chain`). Display says what was being read; the io error is the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        cause: io::Error,
    },
    #[error("running {cmd}")]
    Spawn {
        cmd: String,
        #[source]
        cause: io::Error,
    },
    /// What the command wrote to stderr is its own text, not an error under this one.
    #[error("{cmd} failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("reading the output of {cmd}")]
    Output {
        cmd: String,
        #[source]
        cause: serde_json::Error,
    },
    #[error("{what} of {iface}")]
    Ioctl {
        what: &'static str,
        iface: String,
        #[source]
        cause: io::Error,
    },
}

/// What several checks share, read once.
pub(super) struct Host {
    /// iptables and nft tables, with the tables iptables-nft manages listed only once.
    pub(super) tables: Vec<Table>,
    /// Which firewall tools answered, for messages.
    pub(super) tools: Vec<&'static str>,
    pub(super) firewall_errors: Vec<DoctorError>,
    pub(super) sockets: Result<Vec<TcpSocket>, DoctorError>,
    pub(super) reserved_ports: Result<String, DoctorError>,
}

impl Host {
    pub(super) fn read() -> Self {
        let mut tables = Vec::new();
        let mut tools = Vec::new();
        let mut firewall_errors = Vec::new();
        let mut managed = Vec::new();
        match command("iptables-save", &[]) {
            Ok(Some(text)) => {
                tools.push("iptables");
                managed = iptables_save::xtables_managed(&text);
                tables.extend(iptables_save::parse(&text, None));
            }
            Ok(None) => {}
            Err(e) => firewall_errors.push(e),
        }
        // JSON, nft's stable interface; it carries every rule's handle.
        const NFT_ARGS: [&str; 3] = ["-j", "list", "ruleset"];
        match command("nft", &NFT_ARGS) {
            Ok(Some(json)) => match nft::parse(&json) {
                Ok(nft_tables) => {
                    tools.push("nft");
                    // iptables-nft's tables also show in nft: keep the iptables view, whose
                    // delete commands are the ones that match how the rules were added.
                    tables.extend(
                        nft_tables
                            .into_iter()
                            .filter(|t| !(t.family == "ip" && managed.contains(&t.name))),
                    );
                }
                Err(cause) => firewall_errors
                    .push(DoctorError::Output { cmd: command_line("nft", &NFT_ARGS), cause }),
            },
            Ok(None) => {}
            Err(e) => firewall_errors.push(e),
        }
        let reserved_ports = fs::read_to_string(RESERVED_PORTS)
            .map_err(|cause| DoctorError::Read { path: RESERVED_PORTS.into(), cause });
        Host { tables, tools, firewall_errors, sockets: read_tcp_sockets(), reserved_ports }
    }
}

/// Runs a command and returns its stdout; `Ok(None)` when it is not installed (a host
/// without nft has no nft rules, which is not a failure).
pub(super) fn command(program: &str, args: &[&str]) -> Result<Option<String>, DoctorError> {
    let cmd = || command_line(program, args);
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => return Err(DoctorError::Spawn { cmd: cmd(), cause }),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(DoctorError::Command { cmd: cmd(), stderr });
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `program args...`, as errors name the command.
fn command_line(program: &str, args: &[&str]) -> String {
    format!("{program} {}", args.join(" ")).trim().to_string()
}

/// TCP sockets of the calling thread's namespace. `/proc/net` would follow the process's
/// main thread instead, which may sit in another namespace.
fn read_tcp_sockets() -> Result<Vec<TcpSocket>, DoctorError> {
    let mut out = Vec::new();
    for path in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        match fs::read_to_string(path) {
            Ok(text) => out.extend(parse_proc_net_tcp(&text)),
            // No tcp6 when IPv6 is disabled.
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.ends_with('6') => {}
            Err(cause) => return Err(DoctorError::Read { path: path.into(), cause }),
        }
    }
    Ok(out)
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) pid: u32,
    pub(super) comm: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.comm)
    }
}

/// Which process holds each of `inodes`, from the `socket:[N]` links in /proc/*/fd.
/// Processes that exit or deny access meanwhile are skipped.
pub(super) fn socket_owners(inodes: &HashSet<u64>) -> HashMap<u64, Owner> {
    let mut out = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = fs::read_dir("/proc") else { return out };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Some(inode) = fs::read_link(fd.path()).ok().and_then(|l| socket_inode(&l)) else {
                continue;
            };
            if inodes.contains(&inode) {
                let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                out.insert(inode, Owner { pid, comm: comm.trim().to_string() });
            }
        }
    }
    out
}

fn socket_inode(link: &std::path::Path) -> Option<u64> {
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The MTU of `iface` in the calling thread's namespace.
pub(super) fn iface_mtu(iface: &str) -> Result<u32, DoctorError> {
    let err = |cause| DoctorError::Ioctl { what: "MTU", iface: iface.into(), cause };
    let sock = ioctl_socket().map_err(err)?;
    let mut req = ifreq_for(iface).map_err(err)?;
    // SAFETY: req names the interface; SIOCGIFMTU only writes ifru_mtu inside it.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) };
    if rc < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: the kernel filled ifru_mtu, an int.
    Ok(unsafe { req.ifr_ifru.ifru_mtu }.max(0) as u32)
}

/// One line of /proc/net/tcp or tcp6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TcpSocket {
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) state: u8,
    pub(super) inode: u64,
}

pub(super) const TCP_LISTEN: u8 = 0x0a;

pub(super) fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0a => "LISTEN",
        0x0b => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Parses /proc/net/tcp or /proc/net/tcp6; lines that do not parse are skipped.
fn parse_proc_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines().skip(1).filter_map(parse_tcp_line).collect()
}

fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(TcpSocket {
        local: parse_hex_endpoint(f.get(1)?)?,
        remote: parse_hex_endpoint(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6). The kernel prints each 32-bit
/// word of the address as a host-order integer, so its native-endian bytes are the address.
fn parse_hex_endpoint(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word =
        |i: usize| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_parse() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C41 0B14000A:2384 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1
";
        let s = parse_proc_net_tcp(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local, "0.0.0.0:8080".parse().unwrap());
        assert_eq!((s[0].state, s[0].inode), (TCP_LISTEN, 12345));
        assert_eq!(s[1].local, "127.0.0.1:40001".parse().unwrap());
        assert_eq!(s[1].remote, "10.0.20.11:9092".parse().unwrap());
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
";
        let s = parse_proc_net_tcp(v6);
        assert_eq!(s[0].local, "[::1]:8080".parse().unwrap());
    }
}
