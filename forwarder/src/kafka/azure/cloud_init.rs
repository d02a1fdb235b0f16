//! The cloud-config each VM of the scale set boots with (`--nat-vms vmss`): it writes
//! forwarder.toml, keeps large receive offload off, and installs and starts the forwarder
//! from the .deb the operator names. It needs nothing from the internet: the .deb comes
//! from `FORWARDER_DEB_URL` (a storage blob, say), everything else is already in a stock
//! Ubuntu or Debian image (curl, sha256sum, dpkg, ethtool, systemd).
//!
//! The text holds `${NAME}` references to the script's variables: the script writes it with
//! an unquoted here-document, which expands them, so its literal text has no `$`, backquote
//! or backslash of its own (a unit test holds it to that); the rule blocks are
//! [`rule_blocks`](crate::kafka::rules_toml::rule_blocks) of validated broker names.

/// Where cloud-init writes the installer it runs once, at the VM's first boot.
const INSTALLER: &str = "/usr/local/sbin/forwarder-install";

/// The cloud-config, for the plan's `[[rule]]` blocks.
pub(super) fn cloud_config(rule_blocks: &str) -> String {
    let mut out = String::from(
        "#cloud-config\n\
         # Each VM of the NAT scale set, at its first boot: forwarder.toml, LRO kept off, then\n\
         # the forwarder .deb installed and its unit enabled and started.\n\
         # Written by forwarder kafka discover --nat-vms vmss.\n\
         write_files:\n",
    );
    file(&mut out, "/etc/forwarder/forwarder.toml", "0644", &forwarder_toml(rule_blocks));
    file(&mut out, "/etc/udev/rules.d/60-forwarder-lro-off.rules", "0644", LRO_OFF_RULE);
    file(&mut out, INSTALLER, "0700", INSTALL_SCRIPT);
    out.push_str(&format!("runcmd:\n  - [{INSTALLER}]\n"));
    out
}

/// One `write_files` entry, its content as a literal block (kept as written).
fn file(out: &mut String, path: &str, permissions: &str, content: &str) {
    out.push_str(&format!(
        "  - path: {path}\n    owner: root:root\n    permissions: \"{permissions}\"\n    content: |\n"
    ));
    for line in content.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&format!("      {line}\n"));
        }
    }
}

/// The same settings on every VM: its own addresses come from `auto` (each VM has its own),
/// the rest from the script's variables. The hash `forwarder status` shows is the same on
/// every VM that runs this file unchanged.
fn forwarder_toml(rule_blocks: &str) -> String {
    format!(
        "# Written by cloud-init from the scale set's model (forwarder kafka discover\n\
         # --nat-vms vmss): the same on every VM of the scale set. A rule changed on one VM\n\
         # only shows as a different hash in forwarder_config_info and forwarder status.\n\
         interface = \"eth0\"\n\
         mode = \"auto\"\n\
         listen_ip = \"auto\"\n\
         snat_ip = \"auto\"\n\
         allowed_sources = [\"${{ALLOWED_SOURCES}}\"]\n\
         mss_clamp = ${{MSS_CLAMP}}\n\
         health = \"0.0.0.0:${{HEALTH_PORT}}\"\n\
         metrics = \"${{METRICS_ADDR}}\"\n\
         \n\
         # A scale-in's notice (the scale set's terminate notification) drains this VM.\n\
         [azure]\n\
         scheduled_events = true\n\
         \n\
         {rule_blocks}"
    )
}

/// udev runs it for every network device as it appears: at boot, and again for the
/// accelerated-networking VF that Azure removes and adds back during host maintenance,
/// which comes back with the driver's defaults. Large receive offload merges TCP segments
/// into frames bigger than the MTU: drivers refuse native XDP while it is on, and in the
/// other modes the merged frames would leave towards the brokers too big for the path. The
/// daemon turns it off on its devices when it starts; this keeps it off for devices that
/// come later. A device without LRO makes ethtool fail, which changes nothing.
const LRO_OFF_RULE: &str = "\
# Large receive offload off on every network device as it appears (forwarder: native XDP
# needs it off, and merged frames would be too big to forward).
ACTION==\"add\", SUBSYSTEM==\"net\", KERNEL!=\"lo\", RUN+=\"/bin/sh -c '/usr/sbin/ethtool -K %k lro off || true'\"
";

/// Once, from runcmd. The checksum makes every VM the scale set ever adds run the one
/// build the operator named, or fail visibly (cloud-init's log, no healthy probe) rather
/// than run another. dpkg keeps the forwarder.toml written above (--force-confold: the
/// package's conffile is an example). `set -e`: nothing after a failed step runs.
const INSTALL_SCRIPT: &str = "\
#!/bin/sh
# Installs the forwarder .deb named by the scale set's model and starts it (cloud-init
# runcmd, first boot). Its log: /var/log/cloud-init-output.log.
set -eu
mkdir -p /var/cache/forwarder
curl --fail --silent --show-error --location --retry 10 --retry-connrefused --output /var/cache/forwarder/forwarder.deb '${FORWARDER_DEB_URL}'
echo '${FORWARDER_DEB_SHA256}  /var/cache/forwarder/forwarder.deb' | sha256sum --check --strict
dpkg --force-confdef --force-confold --install /var/cache/forwarder/forwarder.deb
systemctl enable --now forwarder.service
";

#[cfg(test)]
mod tests {
    use super::*;

    /// The here-document expands `${NAME}` and would also expand any other `$`, run
    /// backquotes, and eat backslashes: the literal text holds none but the references.
    #[test]
    fn the_literal_text_survives_an_unquoted_here_document() {
        let text = cloud_config("[[rule]]\nname = \"b\"\nlisten = 9092\ntarget = \"b:9092\"\n");
        let mut rest = text;
        for name in [
            "ALLOWED_SOURCES",
            "MSS_CLAMP",
            "HEALTH_PORT",
            "METRICS_ADDR",
            "FORWARDER_DEB_URL",
            "FORWARDER_DEB_SHA256",
        ] {
            let reference = format!("${{{name}}}");
            assert!(rest.contains(&reference), "{name} unused");
            rest = rest.replace(&reference, "");
        }
        assert!(!rest.contains(['$', '`', '\\']), "{rest}");
    }
}
