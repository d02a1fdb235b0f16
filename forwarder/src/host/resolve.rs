//! The one way this crate turns a host name into addresses: the system resolver
//! (getaddrinfo: /etc/hosts, then DNS), as the Kafka clients and the kernel's own tools do,
//! bounded in time. getaddrinfo has no timeout of its own, so it runs on a thread of its
//! own that is no longer waited for after the timeout (it ends when the resolver gives up).
//! Used for rule targets (`plan`), `kafka discover / check` and the doctor.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs},
    sync::mpsc,
    time::Duration,
};

/// Why a name gave no address. A cause is the `source()` (print the chain, `error::chain`);
/// what getaddrinfo said is shown as itself.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("starting the resolver")]
    Thread(#[source] io::Error),
    /// What getaddrinfo said.
    #[error(transparent)]
    Lookup(io::Error),
    #[error("no answer from the resolver within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("no addresses")]
    NoAddresses,
    #[error("no IPv4 address")]
    NoIpv4,
}

/// Every address of `host` (a name or a literal), at most `timeout` waited for.
pub fn lookup(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, ResolveError> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(ResolveError::Thread)?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(ResolveError::NoAddresses),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(ResolveError::Lookup(e)),
        Err(_) => Err(ResolveError::Timeout(timeout)),
    }
}

/// The first IPv4 address of `host`; a literal is its own answer, without a lookup.
pub fn first_ipv4(host: &str, port: u16, timeout: Duration) -> Result<Ipv4Addr, ResolveError> {
    if let Ok(a) = host.parse() {
        return Ok(a);
    }
    lookup(host, port, timeout)?
        .into_iter()
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or(ResolveError::NoIpv4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_local_names() {
        let t = Duration::from_secs(5);
        assert_eq!(first_ipv4("10.1.2.3", 9092, t).unwrap(), Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(first_ipv4("localhost", 9092, t).unwrap(), Ipv4Addr::LOCALHOST);
        let v6 = lookup("::1", 9092, t).unwrap();
        assert_eq!(v6[0].ip(), IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        assert!(matches!(first_ipv4("::1", 9092, t), Err(ResolveError::NoIpv4)));
        let shown = ResolveError::Timeout(Duration::from_secs(5)).to_string();
        assert_eq!(shown, "no answer from the resolver within 5s");
    }
}
