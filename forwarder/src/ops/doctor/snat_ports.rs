//! Check 5, `snat-ports`: the SNAT port range is reserved from local connections and no
//! local socket holds a port in it.

use super::{
    host::{socket_owners, tcp_state_name, Host, TcpSocket, TCP_LISTEN},
    Finding,
};
use crate::config::Settings;
use std::ops::RangeInclusive;

/// At most this many examples in a one-line message.
const EXAMPLES: usize = 3;

/// `net.ipv4.ip_local_reserved_ports`: a comma list of ports and `A-B` ranges.
fn parse_reserved_ports(text: &str) -> Vec<RangeInclusive<u16>> {
    let items = text.trim().split(',').map(str::trim).filter(|s| !s.is_empty());
    items
        .filter_map(|s| {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            Some(a.trim().parse().ok()?..=b.trim().parse().ok()?)
        })
        .collect()
}

/// The parts of `want` that no range in `have` covers.
fn uncovered(want: &RangeInclusive<u16>, have: &[RangeInclusive<u16>]) -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    let mut start = None;
    for port in want.clone() {
        let covered = have.iter().any(|r| r.contains(&port));
        match (covered, start) {
            (false, None) => start = Some(port),
            (true, Some(s)) => {
                out.push(s..=port - 1);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..=*want.end());
    }
    out
}

fn range_text(r: &RangeInclusive<u16>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

pub(super) fn check(settings: &Settings, host: &Host) -> Finding {
    const CHECK: &str = "snat-ports";
    let range = &settings.snat_ports;
    let (reserved, sockets) = match (&host.reserved_ports, &host.sockets) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => {
            return Finding::fail(CHECK, crate::error::chain(e), "run forwarder doctor as root")
        }
    };
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    let missing = uncovered(range, &parse_reserved_ports(reserved));
    if !missing.is_empty() {
        let (msg, fix) = unreserved(range, &missing, reserved.trim());
        problems.push(msg);
        fixes.push(fix);
    }
    let users: Vec<&TcpSocket> =
        sockets.iter().filter(|s| range.contains(&s.local.port())).collect();
    if !users.is_empty() {
        problems.push(sockets_in_range(range, &users));
        fixes.push(
            "restart or close the processes holding those ports once the range is reserved, \
             or move snat_ports to a range nothing uses"
                .to_string(),
        );
    }
    if problems.is_empty() {
        return Finding::ok(
            CHECK,
            format!("snat_ports {} are reserved and no local socket uses them", range_text(range)),
        );
    }
    Finding::fail(CHECK, problems.join("; "), fixes.join("\n"))
}

fn unreserved(
    range: &RangeInclusive<u16>,
    missing: &[RangeInclusive<u16>],
    current: &str,
) -> (String, String) {
    let missing_text = missing.iter().map(range_text).collect::<Vec<_>>().join(",");
    let value = if current.is_empty() {
        range_text(range)
    } else {
        format!("{current},{}", range_text(range))
    };
    (
        format!(
            "snat_ports {} are not all in net.ipv4.ip_local_reserved_ports (missing {missing_text}; \
             now {current:?}): local connections may take a port the forwarder hands out",
            range_text(range)
        ),
        format!(
            "sysctl -w net.ipv4.ip_local_reserved_ports={value}\n\
             echo 'net.ipv4.ip_local_reserved_ports = {value}' > /etc/sysctl.d/60-forwarder.conf\n\
             (the daemon reserves the range only while it runs; a socket opened before keeps its port)"
        ),
    )
}

fn sockets_in_range(range: &RangeInclusive<u16>, users: &[&TcpSocket]) -> String {
    let owners = socket_owners(&users.iter().map(|s| s.inode).filter(|i| *i != 0).collect());
    let examples = users
        .iter()
        .take(EXAMPLES)
        .map(|s| {
            let who = owners.get(&s.inode).map(|o| format!(", {o}")).unwrap_or_default();
            let remote =
                if s.state == TCP_LISTEN { String::new() } else { format!(" -> {}", s.remote) };
            format!("{}{remote} ({}{who})", s.local, tcp_state_name(s.state))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} local TCP socket(s) use ports inside snat_ports {}: {examples}",
        users.len(),
        range_text(range)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_and_coverage() {
        let r = parse_reserved_ports("8080,40000-40049, 40060-40099\n");
        assert_eq!(r, vec![8080..=8080, 40000..=40049, 40060..=40099]);
        assert_eq!(uncovered(&(40000..=40099), &r), vec![40050..=40059]);
        assert_eq!(uncovered(&(40000..=40099), &parse_reserved_ports("\n")), vec![40000..=40099]);
        assert!(uncovered(&(40000..=40099), &parse_reserved_ports("39000-65535")).is_empty());
        assert_eq!(uncovered(&(1..=3), &[2..=2]), vec![1..=1, 3..=3]);
    }
}
