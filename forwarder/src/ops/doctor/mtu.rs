//! Check 8, `mtu`: the path MTU towards every target is 1500 or more, or `mss_clamp` fits it.

use super::{
    host::{command, iface_mtu},
    targets::TargetProbe,
    Finding,
};
use crate::config::Settings;

/// Below this path MTU, full-size segments from a peer that assumed 1500 get dropped or
/// fragmented unless the SYN's MSS is clamped.
const STANDARD_MTU: u32 = 1500;
/// IPv4 + TCP headers without options: MSS = MTU - 40.
const TCP_IP_HEADERS: u32 = 40;

/// What `ip route get ADDR` says about the path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct RouteInfo {
    dev: Option<String>,
    /// From a route metric or the learned path MTU (`cache ... mtu N`, `mtu lock N`).
    mtu: Option<u32>,
    /// The address is this host's own.
    local: bool,
}

fn parse_ip_route_get(text: &str) -> RouteInfo {
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| words.iter().position(|w| *w == key).and_then(|p| words.get(p + 1));
    // `mtu 1400` or `mtu lock 1400`.
    let mtu = words.iter().position(|w| *w == "mtu").and_then(|p| {
        let at = if words.get(p + 1) == Some(&"lock") { p + 2 } else { p + 1 };
        words.get(at)?.parse().ok()
    });
    RouteInfo {
        dev: after("dev").map(|d| d.to_string()),
        mtu,
        local: words.first() == Some(&"local"),
    }
}

/// One MTU on the way, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MtuSource {
    mtu: u32,
    what: String,
}

fn path_mtus(settings: &Settings, targets: &[TargetProbe]) -> Vec<MtuSource> {
    let mut out: Vec<MtuSource> = settings
        .interfaces
        .iter()
        .filter_map(|i| Some(MtuSource { mtu: iface_mtu(i).ok()?, what: format!("{i} mtu") }))
        .collect();
    for t in targets {
        let Some(addr) = t.addr else { continue };
        let Ok(Some(text)) = command("ip", &["route", "get", &addr.to_string()]) else { continue };
        let route = parse_ip_route_get(&text);
        if route.local {
            continue;
        }
        if let Some(mtu) = route.mtu {
            out.push(MtuSource { mtu, what: format!("route to {addr} ({}) mtu", t.rule) });
        }
        if let Some(dev) = route.dev.filter(|d| !settings.interfaces.contains(d)) {
            if let Ok(mtu) = iface_mtu(&dev) {
                out.push(MtuSource {
                    mtu,
                    what: format!("{dev} mtu (towards {addr}, {})", t.rule),
                });
            }
        }
    }
    out
}

pub(super) fn check(settings: &Settings, targets: &[TargetProbe]) -> Finding {
    const CHECK: &str = "mtu";
    let mtus = path_mtus(settings, targets);
    let Some(low) = mtus.iter().min_by_key(|m| m.mtu) else {
        return Finding::ok(CHECK, "no MTU to check (interface not found)");
    };
    mtu_finding(settings, low)
}

fn mtu_finding(settings: &Settings, low: &MtuSource) -> Finding {
    const CHECK: &str = "mtu";
    if low.mtu >= STANDARD_MTU {
        return Finding::ok(
            CHECK,
            format!("path MTU {} or more ({} {})", STANDARD_MTU, low.what, low.mtu),
        );
    }
    let need = low.mtu.saturating_sub(TCP_IP_HEADERS);
    let fix = format!("set mss_clamp = {need} in {}", settings.path.display());
    match settings.mss_clamp.map(u32::from) {
        None => Finding::fail(
            CHECK,
            format!(
                "path MTU {} ({} {}) is below {STANDARD_MTU} and mss_clamp is not set: \
                 full-size segments will not fit",
                low.mtu, low.what, low.mtu
            ),
            fix,
        ),
        Some(clamp) if clamp > need => Finding::fail(
            CHECK,
            format!(
                "mss_clamp {clamp} is above {need} (path MTU {} from {} minus {TCP_IP_HEADERS})",
                low.mtu, low.what
            ),
            fix,
        ),
        Some(clamp) => Finding::ok(
            CHECK,
            format!("path MTU {} ({}); mss_clamp {clamp} fits", low.mtu, low.what),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::doctor::test_settings as settings;

    #[test]
    fn ip_route_get_output_parses() {
        let r = parse_ip_route_get(
            "10.40.0.5 via 10.99.0.2 dev d0 src 10.99.0.1 uid 0 \n    cache mtu lock 1280 \n",
        );
        assert_eq!(r, RouteInfo { dev: Some("d0".into()), mtu: Some(1280), local: false });
        let r = parse_ip_route_get("10.30.0.5 dev d0 src 10.99.0.1 uid 0 \n    cache mtu 1300 \n");
        assert_eq!(r.mtu, Some(1300));
        let r = parse_ip_route_get("10.99.0.7 dev d0 src 10.99.0.1 uid 0 \n    cache \n");
        assert_eq!(r.mtu, None);
        assert!(
            parse_ip_route_get("local 10.99.0.1 dev lo src 10.99.0.1 uid 0 \n    cache <local> \n")
                .local
        );
    }

    #[test]
    fn mtu_below_1500_needs_a_fitting_clamp() {
        let low = MtuSource { mtu: 1400, what: "eth0 mtu".into() };
        let f = mtu_finding(&settings(""), &low);
        assert!(!f.ok);
        assert_eq!(f.fix.as_deref(), Some("set mss_clamp = 1360 in t.toml"));
        assert!(!mtu_finding(&settings("mss_clamp = 1400"), &low).ok);
        assert!(mtu_finding(&settings("mss_clamp = 1360"), &low).ok);
        assert!(mtu_finding(&settings(""), &MtuSource { mtu: 1500, what: "x".into() }).ok);
    }
}
