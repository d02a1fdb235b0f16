//! Check 7, `xdp-mode`: each interface runs the program in native XDP; if not, the likeliest
//! reason (a forced mode, an MTU too big for the driver, LRO on, a driver without native
//! XDP).

use super::{host::iface_mtu, Finding};
use crate::{
    config::{Mode, Settings},
    daemon::control::Status,
    host::nic::{iface_driver, iface_lro, merging_lower},
};

/// Native XDP without multi-buffer support needs a frame to fit one page with headroom;
/// mlx5 (the Azure accelerated networking VF) allows about this much, the others a bit more.
const NATIVE_XDP_MAX_MTU: u32 = 3498;
/// Drivers with native XDP whose limit above applies.
const PAGE_LIMITED_DRIVERS: &[&str] =
    &["hv_netvsc", "mlx4_en", "mlx4_core", "mlx5_core", "mana", "virtio_net", "veth"];
/// Drivers with native XDP support (ndo_bpf) that a NAT VM may run on.
const NATIVE_XDP_DRIVERS: &[&str] = &[
    "hv_netvsc",
    "mlx4_en",
    "mlx4_core",
    "mlx5_core",
    "mana",
    "virtio_net",
    "veth",
    "tun",
    "ena",
    "gve",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "iavf",
    "ice",
    "igb",
    "igc",
    "bnxt_en",
    "nfp",
    "qede",
    "sfc",
    "xen-netfront",
];

pub(super) fn check(settings: &Settings, status: &Status) -> Vec<Finding> {
    status.interfaces.iter().map(|a| xdp_mode_finding(settings, &a.interface, &a.mode)).collect()
}

fn xdp_mode_finding(settings: &Settings, iface: &str, mode: &str) -> Finding {
    const CHECK: &str = "xdp-mode";
    let driver = iface_driver(iface);
    let driver_text = driver.as_deref().unwrap_or("unknown driver");
    if mode == "xdp" {
        return Finding::ok(CHECK, format!("{iface}: native XDP ({driver_text})"));
    }
    let nic = Nic { driver: driver.as_deref(), mtu: iface_mtu(iface).ok(), lro: iface_lro(iface) };
    let (mut why, fix) = slow_mode_reason(settings, iface, &nic);
    if mode == "tc" {
        why += &generic_passed_over(iface, merging_lower(iface));
    }
    Finding::fail(CHECK, format!("{iface}: attached in {mode} mode, not native XDP: {why}"), fix)
}

/// Why TC runs where generic XDP would have been next: a device under the interface (the
/// VF under hv_netvsc's eth0) merges segments, whose checksums generic XDP cannot handle.
fn generic_passed_over(iface: &str, merging: Option<(String, &str)>) -> String {
    let Some((lower, offload)) = merging else {
        return String::new();
    };
    format!(
        "; and not generic XDP either: {lower} under {iface} merges received segments \
         ({offload} on), whose partial TCP checksums generic XDP cannot tell from complete \
         ones, so TC translates them (correctly: it knows the skb's checksum state)"
    )
}

/// What the reasons are read from; None where it could not be read.
struct Nic<'a> {
    driver: Option<&'a str>,
    mtu: Option<u32>,
    lro: Option<bool>,
}

/// The likeliest reason an interface did not get native XDP, and what to do.
fn slow_mode_reason(settings: &Settings, iface: &str, nic: &Nic) -> (String, String) {
    let config = settings.path.display();
    if matches!(settings.mode, Mode::XdpGeneric | Mode::Tc) {
        return (
            format!("mode = \"{}\" is forced in {config}", settings.mode.name()),
            format!(
                "set mode = \"auto\" (or \"xdp\") in {config}, then systemctl restart forwarder"
            ),
        );
    }
    let d = nic.driver.unwrap_or("unknown");
    if let Some(mtu) = nic.mtu.filter(|m| *m > NATIVE_XDP_MAX_MTU) {
        if PAGE_LIMITED_DRIVERS.contains(&d) {
            return (
                format!("MTU {mtu} is too big for native XDP on {d} (at most about {NATIVE_XDP_MAX_MTU})"),
                format!("ip link set {iface} mtu 1500 (if jumbo frames are not needed), then systemctl restart forwarder"),
            );
        }
    }
    // hv_netvsc and mlx5 refuse an XDP program while LRO is on, and Azure hosts turn
    // hv_netvsc's on (RSC) by default. Seen only while no xdp-generic program is attached:
    // attaching one turns LRO off (the kernel's generic_xdp_install), so after auto's
    // fallback the last reason below says it instead.
    if nic.lro == Some(true) && NATIVE_XDP_DRIVERS.contains(&d) {
        return (
            format!("LRO is on, and {d} refuses native XDP while it is"),
            format!(
                "ethtool -K {iface} lro off (and keep it off at boot, e.g. in the interface's \
                 network configuration), then systemctl restart forwarder"
            ),
        );
    }
    if !NATIVE_XDP_DRIVERS.contains(&d) {
        return (
            format!("driver {d} has no native XDP support"),
            "use a NIC whose driver has native XDP (on Azure: accelerated networking, hv_netvsc / mlx5 / mana), or accept the slower mode".into(),
        );
    }
    (
        format!("the kernel refused native XDP on {d}"),
        format!(
            "see `journalctl -u forwarder` for the attach error (hv_netvsc needs kernel 5.6+; \
             another XDP program may hold the interface). If LRO was on when the forwarder \
             started (hv_netvsc and mlx5 refuse native XDP with it; Azure turns it on), \
             attaching xdp-generic has turned it off since: systemctl restart forwarder now \
             gets native XDP, and `ethtool -K {iface} lro off` at boot keeps it"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::doctor::test_settings as settings;

    fn nic(driver: &str, mtu: u32, lro: bool) -> Nic<'_> {
        Nic { driver: Some(driver), mtu: Some(mtu), lro: Some(lro) }
    }

    #[test]
    fn a_merging_vf_is_named_as_why_generic_xdp_was_passed_over() {
        assert_eq!(generic_passed_over("eth0", None), "");
        let why = generic_passed_over("eth0", Some(("enP1s1".into(), "GRO")));
        assert!(why.starts_with("; and not generic XDP either: enP1s1 under eth0"), "{why}");
        assert!(why.contains("(GRO on)"), "{why}");
    }

    #[test]
    fn slow_mode_reasons() {
        let auto = settings("");
        let (why, fix) =
            slow_mode_reason(&settings("mode = \"tc\""), "eth0", &nic("hv_netvsc", 1500, false));
        assert!(why.contains("mode = \"tc\" is forced in t.toml"), "{why}");
        assert!(fix.contains("mode = \"auto\""), "{fix}");
        let (why, fix) = slow_mode_reason(&auto, "eth0", &nic("mlx5_core", 9000, false));
        assert!(why.contains("MTU 9000 is too big for native XDP on mlx5_core"), "{why}");
        assert!(fix.starts_with("ip link set eth0 mtu 1500"), "{fix}");
        let (why, fix) = slow_mode_reason(&auto, "eth0", &nic("hv_netvsc", 1500, true));
        assert_eq!(why, "LRO is on, and hv_netvsc refuses native XDP while it is");
        assert!(fix.starts_with("ethtool -K eth0 lro off"), "{fix}");
        let (why, _) = slow_mode_reason(&auto, "eth0", &nic("e1000", 1500, false));
        assert_eq!(why, "driver e1000 has no native XDP support");
        let (why, fix) = slow_mode_reason(&auto, "eth0", &nic("hv_netvsc", 1500, false));
        assert!(why.contains("kernel refused"), "{why}");
        assert!(fix.contains("ethtool -K eth0 lro off"), "{fix}");
        // LRO unknown (the ioctl failed): no guess about it.
        let unknown = Nic { driver: Some("hv_netvsc"), mtu: Some(1500), lro: None };
        let (why, _) = slow_mode_reason(&auto, "eth0", &unknown);
        assert!(why.contains("kernel refused"), "{why}");
    }
}
