//! `forwarder doctor`: checks the host for the known causes of a dead forwarding path.
//!
//! Users come from `ip_fwd.sh` (one iptables DNAT + MASQUERADE per broker port) and hit the
//! same few failures: the load balancer probe blocked (NSG or local firewall), leftover NAT
//! rules, another process on a port, SNAT ports taken by local sockets, an unreachable broker,
//! a path MTU below 1500 without MSS clamping, and the program running in a slower mode than
//! native XDP. Each check yields one-line findings and, for a failure, the fix.
//!
//! Parsers take text and are pure, so they are unit tested on captured output. The functions
//! that read the host (`host`) only read through the calling thread's network namespace
//! (`/proc/thread-self/net`, ioctls on a fresh socket, child processes): a doctor run on a
//! thread that entered a namespace inspects that namespace, which is how the tests stage
//! each failure. sysfs is only a fallback, because it shows the namespace it was mounted in.
//!
//! - `host`: the snapshot of the host the checks share (read once per run);
//! - one file per check, in the order they run: `daemon`, `probe`, `firewall`,
//!   `port_clash`, `snat_ports`, `targets`, `xdp_mode`, `mtu`, `stray_nat`;
//! - the firewall rules are read and judged by `ops::netfilter`.

mod daemon;
mod firewall;
mod host;
mod mtu;
mod port_clash;
mod probe;
mod snat_ports;
mod stray_nat;
mod targets;
mod xdp_mode;

use crate::{config::Settings, daemon::control::Status};
use host::Host;
use serde::Serialize;
use std::{collections::HashSet, net::Ipv4Addr, time::Duration};

pub use host::DoctorError;

/// The load balancer probes every 5 s by default; 30 s without one means it cannot reach us.
pub const PROBE_MAX_AGE_S: u64 = 30;
/// Where Azure's load balancer probes come from (service tag AzureLoadBalancer).
pub const AZURE_PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

/// One result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub ok: bool,
    pub message: String,
    /// What to do about a failure; may span lines (one command per line).
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self { check, ok: true, message: message.into(), fix: None }
    }

    fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { check, ok: false, message: message.into(), fix: Some(fix.into()) }
    }
}

/// What the doctor looks at besides the host itself.
pub struct Input<'a> {
    pub settings: &'a Settings,
    /// The running daemon's report; `None` when it does not answer (not running).
    pub status: Option<&'a Status>,
    /// How long each TCP connect to a target may take (name resolution gets at least 5 s).
    pub netns_probe_timeout: Duration,
}

/// Runs every check. Checks that need the daemon's report are skipped when it is `None`.
pub fn run(input: &Input) -> Vec<Finding> {
    let settings = input.settings;
    let host = Host::read();
    let blocks = firewall::firewall_blocks(settings, &host.tables);
    let mut out = vec![daemon::check(settings, input.status)];
    if let Some(status) = input.status {
        out.push(probe::check(settings, status, &blocks));
    }
    out.push(firewall::check(&host, &blocks));
    out.push(port_clash::check(settings, input.status, &host));
    out.push(snat_ports::check(settings, &host));
    let targets = targets::probe_all(&settings.rules, input.netns_probe_timeout);
    out.extend(targets.iter().map(|t| t.finding.clone()));
    if let Some(status) = input.status {
        out.extend(xdp_mode::check(settings, status));
    }
    out.push(mtu::check(settings, &targets));
    out.push(stray_nat::check(settings, &host));
    out
}

pub fn all_ok(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.ok)
}

/// Human text: `ok   check: message`, or `FAIL check: message` with the fix below it.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let tag = if f.ok { "ok  " } else { "FAIL" };
        out.push_str(&format!("{tag} {}: {}\n", f.check, f.message));
        if let Some(fix) = &f.fix {
            let mut lines = fix.lines();
            if let Some(first) = lines.next() {
                out.push_str(&format!("     fix: {first}\n"));
            }
            for line in lines {
                out.push_str(&format!("          {line}\n"));
            }
        }
    }
    out
}

/// The lines of a multi-line fix, each once, in order.
fn unique_lines<'a>(lines: impl Iterator<Item = &'a String>) -> String {
    let mut seen = HashSet::new();
    lines.filter(|l| seen.insert(l.as_str())).cloned().collect::<Vec<_>>().join("\n")
}

/// The settings the checks' unit tests start from: health on 8080, two rules on 9092 and
/// 9093, `extra` added to the top level.
#[cfg(test)]
fn test_settings(extra: &str) -> Settings {
    let text = format!(
        "interface = \"eth0\"\nhealth = \"0.0.0.0:8080\"\nsnat_ports = \"40000-40099\"\n{extra}\n\
         [[rule]]\nname = \"broker-1\"\nlisten = 9092\ntarget = \"10.20.0.11:9092\"\n\
         [[rule]]\nname = \"broker-2\"\nlisten = 9093\ntarget = \"10.20.0.12:9092\"\n"
    );
    crate::config::parse(std::path::Path::new("t.toml"), &text).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_ok_fail_and_fix_lines() {
        let text = render(&[
            Finding::ok("daemon", "running"),
            Finding::fail("stray-nat", "2 rules", "iptables -t nat -D A\niptables -t nat -D B"),
        ]);
        assert_eq!(
            text,
            "ok   daemon: running\nFAIL stray-nat: 2 rules\n     fix: iptables -t nat -D A\n          iptables -t nat -D B\n"
        );
        assert!(!all_ok(&[Finding::ok("a", "b"), Finding::fail("c", "d", "e")]));
        assert!(all_ok(&[Finding::ok("a", "b")]));
    }
}
