//! Check 1, `daemon`: the daemon answers on its control socket, is not drained and is healthy.

use super::Finding;
use crate::{config::Settings, daemon::control::Status};

pub(super) fn check(settings: &Settings, status: Option<&Status>) -> Finding {
    const CHECK: &str = "daemon";
    let Some(s) = status else {
        return Finding::fail(
            CHECK,
            format!(
                "the forwarder daemon is not running (no answer on {})",
                settings.control_socket.display()
            ),
            "systemctl start forwarder",
        );
    };
    let running = format!("running (pid {}, version {})", s.pid, s.version);
    if s.drained {
        return Finding::fail(
            CHECK,
            format!("{running} but drained: the health endpoint fails so the load balancer sends nothing"),
            "forwarder undrain",
        );
    }
    if !s.healthy {
        let why = s.unhealthy_reason.as_deref().unwrap_or("no reason given");
        return Finding::fail(
            CHECK,
            format!("{running} but unhealthy: {why}"),
            "see `forwarder status` and `journalctl -u forwarder`",
        );
    }
    Finding::ok(CHECK, format!("{running}, healthy"))
}
