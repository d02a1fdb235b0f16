//! `--nat-vms vmss`: the NAT VMs as a virtual machine scale set in the load balancer's
//! backend pool, rather than two VMs the operator made by hand. Each VM boots a stock image
//! with the [`cloud_config`] that installs and starts the forwarder with the same
//! forwarder.toml; an autoscale setting adds VMs when the pool's CPU runs high and removes
//! them when it stays low.
//!
//! The scale set joins the pool through its network profile (`--lb`, `--backend-pool-name`),
//! so every VM it adds is in the pool from its first boot; the load balancer sends it
//! connections once its health probe answers, that is once the daemon forwards.

use super::{cloud_init::cloud_config, step::StepBuilder, Step, Variable, Word};
use crate::kafka::{discover::Plan, rules_toml::rule_blocks};

/// The cloud-config file the script writes and `az vmss create --custom-data` reads.
pub const CLOUD_INIT_FILE: &str = "forwarder-cloud-init.yaml";

/// Scale out when the VMs' average CPU stays above this for [`OUT_WINDOW`]. XDP forwards in
/// softirq time, which the host's "Percentage CPU" counts; one step at a time, so a new VM
/// (a few minutes to boot and install) is taken into account before the next.
const OUT_ABOVE_PERCENT: u32 = 60;
const OUT_WINDOW: &str = "10m";
/// Scale in when it stays below this for [`IN_WINDOW`]: rarely and slowly, because the
/// VM removed takes its connections with it (the clients reconnect through the others).
const IN_BELOW_PERCENT: u32 = 20;
const IN_WINDOW: &str = "30m";
/// Minutes between Azure's notice of a scale-in (a Terminate scheduled event, which the
/// VM's `[azure] scheduled_events` drains for) and the VM's deletion, unless the forwarder
/// approves sooner once no connection is left (5 to 15).
const TERMINATE_NOTICE_MINUTES: &str = "10";

/// The scale set's variables (the load balancer's, the NSG's and the health port are the
/// two-VM layout's too).
pub(super) fn inputs() -> Vec<Variable> {
    let v = super::input;
    vec![
        v("VMSS_NAME", "vmss-kafka-nat", "the NAT VMs' scale set (created)"),
        v("VMSS_SUBNET", "<nat-vm-subnet>", "the subnet of the scale set's VMs"),
        v(
            "VMSS_IMAGE",
            "Ubuntu2404",
            "a stock image with cloud-init (an alias or URN: Ubuntu2404, Debian12, ...)",
        ),
        v("VMSS_SIZE", "Standard_D2s_v5", "the VMs' size (accelerated networking: 2+ vCPUs)"),
        v("VMSS_MIN", "2", "the fewest VMs autoscale leaves (2 or more: one can fail)"),
        v("VMSS_MAX", "6", "the most VMs autoscale adds"),
        v("ADMIN_USER", "azureuser", "the VMs' admin user"),
        v(
            "SSH_PUBLIC_KEY",
            "<ssh-public-key-file>",
            "the admin user's SSH public key (or its file)",
        ),
        v(
            "FORWARDER_DEB_URL",
            "<forwarder-deb-url>",
            "where each new VM downloads the forwarder .deb at first boot, e.g. a blob's \
             read-only SAS URL, valid for as long as the scale set may add VMs",
        ),
        v("FORWARDER_DEB_SHA256", "<forwarder-deb-sha256>", "the .deb's SHA-256 (sha256sum)"),
        v(
            "ALLOWED_SOURCES",
            "<pls-subnet-cidr>",
            "forwarder.toml's allowed_sources: PLS_SUBNET's address range, as CIDR",
        ),
        v("MSS_CLAMP", "1350", "forwarder.toml's mss_clamp (the on-prem path's MTU - 40)"),
        v(
            "METRICS_ADDR",
            "127.0.0.1:9464",
            "forwarder.toml's metrics (0.0.0.0:9464 for a Prometheus in the VNet to scrape)",
        ),
    ]
}

/// The checks of the inputs, the scale set, and its autoscale setting, in that order: the
/// checks come first in the script, before anything is created.
pub(super) fn steps(plan: &Plan, vars: &[String]) -> (Step, Vec<Step>) {
    (checks(vars), vec![scale_set(plan, vars), autoscale(vars)])
}

/// The values that end up in forwarder.toml and the installer: a wrong one would fail on
/// every VM at boot, long after the script said "done".
fn checks(vars: &[String]) -> Step {
    let mut step = StepBuilder::new(
        "The scale set's inputs: checked before anything is created (they end up in \
         forwarder.toml and the installer of every VM)",
        vars,
    );
    let ipv4 = r"[0-9]{1,3}(\.[0-9]{1,3}){3}";
    step.require(
        "FORWARDER_DEB_URL",
        r"^https://[A-Za-z0-9._~:/?#@\&+,\;=%-]+$",
        "an https URL without quotes or spaces",
    );
    step.require(
        "FORWARDER_DEB_SHA256",
        "^[0-9a-f]{64}$",
        "the .deb's SHA-256 as sha256sum prints it (64 hex digits)",
    );
    step.require("ALLOWED_SOURCES", &format!("^{ipv4}/[0-9]{{1,2}}$"), "one IPv4 CIDR");
    step.require("MSS_CLAMP", "^[0-9]{3,4}$", "a number of bytes");
    step.require("HEALTH_PORT", "^[0-9]{1,5}$", "a port number");
    step.require("METRICS_ADDR", &format!("^{ipv4}:[0-9]{{1,5}}$"), "an IPv4 address:port");
    step.done()
}

fn scale_set(plan: &Plan, vars: &[String]) -> Step {
    let mut step = StepBuilder::new(
        "The NAT VMs: a scale set in the backend pool, each VM set up by cloud-init",
        vars,
    );
    step.text_file(CLOUD_INIT_FILE, cloud_config(&rule_blocks(plan)));
    step.comment(
        "Uniform: every VM is a copy of one model. Manual upgrades: a change of the model\n\
         (new custom data) reaches a running VM only when the operator rolls it, drained\n\
         first. No overprovisioning: the extra VMs Azure would make and delete would join\n\
         the pool, take connections and drop them. No public IPs (none without\n\
         --public-ip-per-vm): the VMs reach the brokers and FORWARDER_DEB_URL through the VNet.",
    );
    let cmd = step
        .az_in("vmss create", "${NAT_RESOURCE_GROUP}")
        .arg("--name", step.t("${VMSS_NAME}"))
        .arg("--orchestration-mode", Word::text("Uniform"))
        .arg("--upgrade-policy-mode", Word::text("Manual"))
        .flag("--disable-overprovision")
        .arg("--image", step.t("${VMSS_IMAGE}"))
        .arg("--vm-sku", step.t("${VMSS_SIZE}"))
        .arg("--instance-count", step.t("${VMSS_MIN}"))
        .arg("--vnet-name", step.t("${NAT_VNET}"))
        .arg("--subnet", step.t("${VMSS_SUBNET}"))
        .arg("--lb", step.t("${LB_NAME}"))
        .arg("--backend-pool-name", step.t("${BACKEND_POOL}"))
        .arg("--nsg", step.t("${NAT_NSG}"))
        .arg("--accelerated-networking", Word::text("true"))
        .arg("--terminate-notification-time", Word::text(TERMINATE_NOTICE_MINUTES))
        .arg("--custom-data", Word::text(format!("@{CLOUD_INIT_FILE}")))
        .arg("--admin-username", step.t("${ADMIN_USER}"))
        .arg("--authentication-type", Word::text("ssh"))
        .arg("--ssh-key-values", step.t("${SSH_PUBLIC_KEY}"));
    step.run(cmd);
    step.done()
}

fn autoscale(vars: &[String]) -> Step {
    let mut step = StepBuilder::new(
        format!(
            "Autoscale on CPU: one more VM above {OUT_ABOVE_PERCENT}% for {OUT_WINDOW}, one \
             fewer below {IN_BELOW_PERCENT}% for {IN_WINDOW}"
        ),
        vars,
    );
    step.comment(
        "The rules are made with the setting, inside its guard: they have no names, and a\n\
         second run would add them again. A VM picked for scale-in is told 10 minutes ahead\n\
         (terminate notification) and drains: no new connection goes to it; those still on it\n\
         when it goes end with it, and Kafka clients reconnect through the others.",
    );
    let setting = step.t("${VMSS_NAME}-autoscale");
    let create = step
        .az_in("monitor autoscale create", "${NAT_RESOURCE_GROUP}")
        .arg("--name", setting.clone())
        .arg("--resource", step.t("${VMSS_NAME}"))
        .arg("--resource-type", Word::text("Microsoft.Compute/virtualMachineScaleSets"))
        .arg("--min-count", step.t("${VMSS_MIN}"))
        .arg("--max-count", step.t("${VMSS_MAX}"))
        .arg("--count", step.t("${VMSS_MIN}"));
    let rule = |condition: String, scale: &str| {
        step.az_in("monitor autoscale rule create", "${NAT_RESOURCE_GROUP}")
            .arg("--autoscale-name", setting.clone())
            .arg("--condition", Word::text(condition))
            .arg("--scale", Word::text(scale))
            .arg("--cooldown", Word::text("10"))
    };
    let out = rule(format!("Percentage CPU > {OUT_ABOVE_PERCENT} avg {OUT_WINDOW}"), "out 1");
    let inward = rule(format!("Percentage CPU < {IN_BELOW_PERCENT} avg {IN_WINDOW}"), "in 1");
    step.run_with(create, vec![out, inward]);
    step.done()
}
