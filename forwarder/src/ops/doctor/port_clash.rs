//! Check 4, `port-clash`: no other process listens on the health port or a listen port.

use super::{
    host::{socket_owners, Owner, TcpSocket, TCP_LISTEN},
    unique_lines, Finding, Host,
};
use crate::{config::Settings, daemon::control::Status};
use std::{collections::HashMap, net::SocketAddr};

/// A listener on a port the forwarder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clash {
    port: u16,
    role: String,
    local: SocketAddr,
    owner: Option<Owner>,
}

pub(super) fn check(settings: &Settings, status: Option<&Status>, host: &Host) -> Finding {
    const CHECK: &str = "port-clash";
    let sockets = match &host.sockets {
        Ok(s) => s,
        Err(e) => {
            return Finding::fail(CHECK, crate::error::chain(e), "run forwarder doctor as root")
        }
    };
    let listeners: Vec<&TcpSocket> = sockets.iter().filter(|s| s.state == TCP_LISTEN).collect();
    let owners = socket_owners(&listeners.iter().map(|s| s.inode).collect());
    let clashes = find_clashes(settings, status, &listeners, &owners);
    if clashes.is_empty() {
        return Finding::ok(
            CHECK,
            format!("no other process listens on {}", needed_ports(settings)),
        );
    }
    let message = clashes
        .iter()
        .map(|c| {
            let who = c.owner.as_ref().map_or("an unknown process".into(), |o| o.to_string());
            format!("port {} ({}) is held by {who} listening on {}", c.port, c.role, c.local)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let fix = clashes.iter().map(clash_fix).collect::<Vec<_>>();
    Finding::fail(CHECK, message, unique_lines(fix.iter()))
}

fn needed_ports(settings: &Settings) -> String {
    let mut ports: Vec<String> =
        settings.health.iter().map(|h| format!("{} (health)", h.port())).collect();
    ports.extend(settings.rules.iter().map(|r| format!("{} (rule {})", r.listen, r.name)));
    if ports.is_empty() {
        "no port (no health endpoint and no rule)".into()
    } else {
        ports.join(", ")
    }
}

/// Listeners on the health port or a rule's listen port, except the daemon's own health
/// listener (recognised by its pid, or by its address when the owner is unknown).
fn find_clashes(
    settings: &Settings,
    status: Option<&Status>,
    listeners: &[&TcpSocket],
    owners: &HashMap<u64, Owner>,
) -> Vec<Clash> {
    let mut roles: Vec<(u16, String)> =
        settings.health.iter().map(|h| (h.port(), "health".to_string())).collect();
    roles.extend(settings.rules.iter().map(|r| (r.listen, format!("rule {}", r.name))));
    let daemon_health = status.and_then(|s| s.health.as_ref()?.parse::<SocketAddr>().ok());
    let mut out: Vec<Clash> = Vec::new();
    for s in listeners {
        let Some((port, role)) = roles.iter().find(|(p, _)| *p == s.local.port()) else { continue };
        let owner = owners.get(&s.inode).cloned();
        let is_health = settings.health.is_some_and(|h| h.port() == *port);
        let ours = match (&owner, status) {
            (Some(o), Some(st)) => o.pid == st.pid,
            (None, Some(_)) => daemon_health == Some(s.local),
            (_, None) => false,
        };
        if is_health && ours {
            continue;
        }
        // tcp and tcp6 listeners of one process on one port are one clash.
        let dup = out.iter().any(|c| c.port == *port && c.owner.is_some() && c.owner == owner);
        if !dup {
            out.push(Clash { port: *port, role: role.clone(), local: s.local, owner });
        }
    }
    out
}

fn clash_fix(c: &Clash) -> String {
    let stop = match &c.owner {
        Some(o) => format!("stop {} (`kill {}` or stop its service)", o.comm, o.pid),
        None => format!("find the process with `ss -ltnp 'sport = :{}'` and stop it", c.port),
    };
    if c.role == "health" {
        format!("{stop}, or move health to a free port (and the LB probe with it)")
    } else {
        format!("{stop}, or give {} another listen port (and its LB rule's backend port)", c.role)
    }
}
