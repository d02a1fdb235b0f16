//! Check 2, `probe`: the load balancer's health probe arrived lately; if not, what in the local
//! firewall drops it.

use super::{firewall::FirewallView, Finding, AZURE_PROBE_SOURCE, PROBE_MAX_AGE_S};
use crate::{config::Settings, daemon::control::Status};

pub(super) fn check(settings: &Settings, status: &Status, blocks: &FirewallView) -> Finding {
    const CHECK: &str = "probe";
    let health = status.health.clone().or_else(|| settings.health.map(|h| h.to_string()));
    let Some(health) = health else {
        return Finding::ok(CHECK, "no health endpoint configured: the probe is not checked");
    };
    if let Some(p) = status.last_probe.as_ref().filter(|p| p.seconds_ago <= PROBE_MAX_AGE_S) {
        return Finding::ok(
            CHECK,
            format!("load balancer probe from {} {} s ago on {health}", p.from, p.seconds_ago),
        );
    }
    let last = match &status.last_probe {
        Some(p) => format!("last one {} s ago from {}", p.seconds_ago, p.from),
        None => "never".to_string(),
    };
    let port = health.rsplit(':').next().unwrap_or("?").to_string();
    let mut message = format!("no load balancer probe seen on {health} ({last})");
    let mut fix = format!(
        "allow TCP {port} from the AzureLoadBalancer service tag ({AZURE_PROBE_SOURCE}) in the \
         NSGs of the NIC and the subnet and in the local firewall, and point the LB health \
         probe at port {port}"
    );
    let health_port = port.parse::<u16>().ok();
    for b in blocks.blocks.iter().filter(|b| Some(b.port) == health_port) {
        message.push_str(&format!("; the local firewall drops it: {}", b.by));
        fix.push_str(&format!("\n{}", b.fix));
    }
    Finding::fail(CHECK, message, fix)
}
