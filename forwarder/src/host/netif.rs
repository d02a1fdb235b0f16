//! Interface facts the daemon needs: index and IPv4 addresses.

use nix::ifaddrs::getifaddrs;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("interface {0:?} does not exist here")]
    Missing(String),
    #[error("interface {0:?} has no IPv4 address")]
    NoAddress(String),
    /// The errno is the `source()`.
    #[error("listing interfaces")]
    Sys(#[from] nix::Error),
}

pub fn ifindex(name: &str) -> Result<u32, NetifError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| NetifError::Missing(name.to_string()))
}

/// The IPv4 addresses of `name`, primary (first configured) first.
pub fn ipv4_addrs(name: &str) -> Result<Vec<Ipv4Addr>, NetifError> {
    ifindex(name)?;
    let mut out = Vec::new();
    for ifa in getifaddrs()? {
        if ifa.interface_name != name {
            continue;
        }
        if let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            out.push(sin.ip());
        }
    }
    Ok(out)
}

pub fn primary_ipv4(name: &str) -> Result<Ipv4Addr, NetifError> {
    ipv4_addrs(name)?.into_iter().next().ok_or_else(|| NetifError::NoAddress(name.to_string()))
}

/// Every IPv4 address of every interface in this thread's network namespace, with its
/// interface's name: the addresses that are this host's own.
pub fn host_ipv4_addrs() -> Result<Vec<(String, Ipv4Addr)>, NetifError> {
    let mut out = Vec::new();
    for ifa in getifaddrs()? {
        if let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            out.push((ifa.interface_name.clone(), sin.ip()));
        }
    }
    Ok(out)
}

/// The interface `addr` is on, if it is one of `host`'s addresses ([`host_ipv4_addrs`]).
pub fn interface_of(host: &[(String, Ipv4Addr)], addr: Ipv4Addr) -> Option<&str> {
    host.iter().find(|(_, a)| *a == addr).map(|(i, _)| i.as_str())
}
