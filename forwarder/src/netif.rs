//! Interface facts the daemon needs: index and IPv4 addresses.

use nix::ifaddrs::getifaddrs;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("interface {0:?} does not exist here")]
    Missing(String),
    #[error("interface {0:?} has no IPv4 address")]
    NoAddress(String),
    #[error("listing interfaces: {0}")]
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
