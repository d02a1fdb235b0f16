//! The daemon's own sockets and places: `health` and `metrics` (IP:PORT, clear of
//! `snat_ports` and of each other), `control_socket` (a Unix socket path) and `pin_path`
//! (a directory in a bpffs). Whether a rule's `listen` port collides with `health` or
//! `metrics` is the rules' check (`rules.rs`), made once the rules are read.

use crate::config::{
    spans::{Section, Span},
    ConfigError, DEFAULT_CONTROL_SOCKET, DEFAULT_PIN_PATH,
};
use std::{
    net::SocketAddr,
    ops::RangeInclusive,
    path::{Component, Path, PathBuf},
};

const EXPECT_SOCKET: &str =
    "expected IP:PORT like \"0.0.0.0:8080\" or \"127.0.0.1:9464\", with a port from 1 to 65535";
const EXPECT_CONTROL: &str =
    "expected an absolute path like \"/run/forwarder/control.sock\" of at most 107 bytes";
const EXPECT_PIN: &str =
    "expected an absolute directory inside a bpffs mount, like \"/sys/fs/bpf/forwarder\"";

/// sockaddr_un.sun_path holds 108 bytes, one of them the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// `health` and `metrics`, both optional: neither port inside `snat_ports`, and not one
/// port for both where the two sockets would overlap.
pub(super) fn health_and_metrics(
    root: &Section,
    snat_ports: &RangeInclusive<u16>,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), ConfigError> {
    let health = socket_addr(root, "health")?;
    let metrics = socket_addr(root, "metrics")?;
    for (key, sock) in [("health", &health), ("metrics", &metrics)] {
        if let Some((a, span)) = sock {
            if snat_ports.contains(&a.port()) {
                return Err(root.error(
                    span.clone(),
                    key,
                    format!(
                        "expected a port outside snat_ports {}-{} (reserved for forwarded \
                         connections); found {a}",
                        snat_ports.start(),
                        snat_ports.end()
                    ),
                ));
            }
        }
    }
    if let (Some((h, _)), Some((m, span))) = (&health, &metrics) {
        if h.port() == m.port()
            && (h.ip() == m.ip() || h.ip().is_unspecified() || m.ip().is_unspecified())
        {
            return Err(root.error(
                span.clone(),
                "metrics",
                format!("expected a port other than the health port ({h}); found {m}"),
            ));
        }
    }
    Ok((health.map(|(a, _)| a), metrics.map(|(a, _)| a)))
}

/// IP:PORT with a port other than 0.
fn socket_addr(root: &Section, key: &str) -> Result<Option<(SocketAddr, Span)>, ConfigError> {
    let Some((s, span)) = root.string(key, EXPECT_SOCKET)? else { return Ok(None) };
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(Some((a, span))),
        _ => Err(root.bad(key, span, EXPECT_SOCKET)),
    }
}

/// `control_socket`: an absolute path that fits a sockaddr_un.
pub(super) fn control_socket(root: &Section) -> Result<PathBuf, ConfigError> {
    Ok(match root.string("control_socket", EXPECT_CONTROL)? {
        None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        Some((s, _))
            if s.starts_with('/')
                && !s.ends_with('/')
                && s.len() <= MAX_SOCKET_PATH
                && !s.contains('\0') =>
        {
            PathBuf::from(s)
        }
        Some((_, span)) => return Err(root.bad("control_socket", span, EXPECT_CONTROL)),
    })
}

/// `pin_path`: a directory inside a bpffs mount (the daemon checks the mount when it
/// starts; tests use a bpffs of their own, so the place is not fixed).
pub(super) fn pin_path(root: &Section) -> Result<PathBuf, ConfigError> {
    let Some((s, span)) = root.string("pin_path", EXPECT_PIN)? else {
        return Ok(PathBuf::from(DEFAULT_PIN_PATH));
    };
    let parts: Vec<Component> = Path::new(s).components().collect();
    match parts.first() {
        Some(Component::RootDir)
            if parts.len() >= 3
                && parts[1..].iter().all(|c| matches!(c, Component::Normal(_)))
                && !s.contains('\0')
                && !s.split('/').any(|c| c == "." || c == "..") =>
        {
            Ok(PathBuf::from(s))
        }
        _ => Err(root.bad("pin_path", span, EXPECT_PIN)),
    }
}
