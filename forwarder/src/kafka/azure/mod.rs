//! The Azure side of a [`Plan`], as `az` commands and as one bash script.
//!
//! The NAT side is the same for every client: the internal Standard Load Balancer with the
//! NAT VMs in its backend pool and an HTTP probe on the daemon's `health` port, the
//! network security rule that lets the probe in, then per broker a frontend, a rule
//! (the advertised port -> the broker's listen port) and a Private Link Service on that
//! frontend. The NAT VMs are two the operator made ([`NatVms::Two`]: their NICs join the
//! pool) or a scale set the script makes ([`NatVms::Vmss`], `vmss.rs`, with the
//! cloud-config of `cloud_init.rs`). The client side depends on where Spark runs ([`ClientSide`]); each ends with the
//! approval of the pending endpoint connections on the Private Link Services.
//!
//! Every name that only the operator knows is a variable at the top of the script; the
//! JSON output carries each command's argv with `${NAME}` references, which is what the
//! tests hand to the real Azure CLI.

mod cloud_init;
mod script;
mod shell;
mod step;
mod vmss;

pub use script::script;
pub use shell::{AzCommand, Word};
use step::StepBuilder;
pub use vmss::CLOUD_INIT_FILE;

use super::discover::{BrokerPlan, Plan};
use serde::Serialize;

/// Where the Spark (or copy) jobs that read Kafka run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientSide {
    /// A Synapse workspace in a managed VNet: a managed private endpoint per broker with
    /// the broker's name attached (the workspace resolves it to the endpoint).
    Synapse,
    /// A Data Factory in a managed VNet: the same managed private endpoints, through the
    /// ARM REST API (`az rest`).
    Adf,
    /// A VNet of your own: private endpoints and a private DNS zone for the names.
    Vnet,
}

/// What the load balancer's backend pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NatVms {
    /// Two VMs of your own, with the forwarder installed: their NICs join the pool.
    Two,
    /// A scale set the script creates in the pool, each VM set up by cloud-init from a
    /// stock image and the forwarder .deb, with autoscale on CPU.
    Vmss,
}

/// Minutes (the load balancer allows 4 to 100). Kafka clients leave connections idle for 9
/// minutes by default (`connections.max.idle.ms`), and a shorter LB timeout drops them
/// silently; 30 leaves the LB out of the question. It is not the limit that matters on this
/// path: the Private Link Service in front of each frontend resets flows idle for about 5
/// minutes whatever this says (Azure docs, private-link-service-overview, Limitations;
/// MicrosoftDocs/azure-docs#94724), which is why the notebook cell sets
/// [`CLIENT_MAX_IDLE_MS`].
const LB_IDLE_TIMEOUT_MIN: u32 = 30;

/// What `--client adf` prints where the others print a notebook cell. Data Factory runs
/// pipelines, not notebooks, and has no Kafka connector of its own: a factory reaches Kafka
/// through an activity that runs Spark or code elsewhere, whose client settings apply.
pub const NO_NOTEBOOK_ADF: &str = "No notebook cell for Data Factory: it runs pipelines, \
     not notebooks, and has no Kafka connector of its own. Test the path with `forwarder \
     kafka check --via BROKER:PORT` from a VM in a VNet with private endpoints to the same \
     Private Link Services, and give the Spark or code activity that reads Kafka \
     kafka.connections.max.idle.ms below 300000 (the Private Link Service resets idle \
     connections after about 5 minutes).";

/// Milliseconds: what the notebook cell sets as `kafka.connections.max.idle.ms`. Below the
/// Private Link Service's idle reset (about 300 s), so the client closes an idle connection
/// itself before the PLS resets it (and the job logs "Disconnected" and retries).
pub const CLIENT_MAX_IDLE_MS: u32 = 240_000;

/// The ARM API version of Data Factory's managed private endpoints.
const ADF_API_VERSION: &str = "2018-06-01";

/// A shell variable the commands refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variable {
    pub name: String,
    /// For an input, what the script starts with (a `<placeholder>` the operator replaces,
    /// or a default that works); for a derived one, an example of what a step sets.
    pub value: String,
    pub about: String,
    /// Set by a step of the script (from an earlier command's output), not by the operator.
    pub derived: bool,
}

/// A file a command reads (`--file @NAME`, `--body @NAME`), written by the script first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefinitionFile {
    pub name: String,
    /// The JSON text, `${NAME}` references expanded by the shell when written.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub title: String,
    pub files: Vec<DefinitionFile>,
    /// Every `az` invocation of the step, each once (a loop's body too).
    pub commands: Vec<AzCommand>,
    /// The step as bash: the commands, the files they read, captures and loops.
    pub script: String,
}

/// Everything to create, for one client side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setup {
    pub client: ClientSide,
    pub nat_vms: NatVms,
    pub variables: Vec<Variable>,
    pub steps: Vec<Step>,
    /// A notebook cell (PySpark) that reads a topic through the path; none for Data
    /// Factory, which runs no notebooks ([`NO_NOTEBOOK_ADF`] says what to do instead).
    pub notebook: Option<String>,
}

/// An input variable: what the operator sets (or leaves at `value`).
fn input(name: &str, value: &str, about: &str) -> Variable {
    Variable { name: name.into(), value: value.into(), about: about.into(), derived: false }
}

/// The variables every client side uses, the NAT VMs' own, then the client's own.
fn inputs(client: ClientSide, nat_vms: NatVms) -> Vec<Variable> {
    let v = input;
    let mut vars = vec![
        v("SUBSCRIPTION_ID", "<subscription-id>", "the subscription of the NAT VMs' resources"),
        v("NAT_RESOURCE_GROUP", "<nat-resource-group>", "the NAT VMs' resource group"),
        v("NAT_VNET", "<nat-vnet>", "the NAT VMs' virtual network"),
        v("LB_SUBNET", "<nat-subnet>", "the subnet of the load balancer's frontends"),
        v("PLS_SUBNET", "<pls-subnet>", "the subnet of the Private Link Services' NAT addresses"),
        v("LB_NAME", "lb-kafka-nat", "the internal Standard Load Balancer (created)"),
        v("BACKEND_POOL", "nat-vms", "its backend pool (created)"),
    ];
    match nat_vms {
        NatVms::Two => vars.extend([
            v("NAT_VM1_NIC", "<nat-vm-1-nic>", "the first NAT VM's NIC"),
            v("NAT_VM2_NIC", "<nat-vm-2-nic>", "the second NAT VM's NIC"),
            v("NAT_VM_IPCONFIG", "ipconfig1", "the NICs' IP configuration"),
        ]),
        NatVms::Vmss => vars.extend(vmss::inputs()),
    }
    vars.extend([
        v("NAT_NSG", "<nat-nsg>", "the network security group of the NAT VMs' NICs"),
        v("HEALTH_PORT", "8080", "forwarder.toml's `health` port"),
    ]);
    match client {
        ClientSide::Synapse => {
            vars.push(v("WORKSPACE_NAME", "<synapse-workspace>", "the Synapse workspace"));
        }
        ClientSide::Adf => {
            vars.push(v("ADF_RESOURCE_GROUP", "<adf-resource-group>", "the data factory's group"));
            vars.push(v("FACTORY_NAME", "<data-factory>", "the data factory"));
        }
        ClientSide::Vnet => {
            vars.push(v("CLIENT_RESOURCE_GROUP", "<client-resource-group>", "the clients' group"));
            vars.push(v("CLIENT_VNET", "<client-vnet>", "the clients' virtual network"));
            vars.push(v("CLIENT_SUBNET", "<client-subnet>", "the private endpoints' subnet"));
            vars.push(v(
                "DNS_RESOURCE_GROUP",
                "<dns-resource-group>",
                "the private DNS zones' group",
            ));
        }
    }
    vars
}

/// The steps for `client`, in the order they must run.
/// What the Kafka listeners ask of a client, as `kafka discover` met them: the notebook
/// cell must ask the same. Never the password: the cell reads it from Key Vault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSecurity {
    pub tls: bool,
    /// A CA file was given: the brokers' certificates are not from a public CA.
    pub private_ca: bool,
    /// The listeners require a client certificate (mTLS).
    pub client_cert: bool,
    pub sasl: Option<(crate::kafka::sasl::Mechanism, String)>,
}

impl ClientSecurity {
    pub fn of(s: &crate::kafka::client::Security) -> Self {
        Self {
            tls: s.tls.is_some(),
            private_ca: s.tls.as_ref().is_some_and(|t| t.ca_file.is_some()),
            client_cert: s.tls.as_ref().is_some_and(|t| t.client_auth),
            sasl: s.sasl.as_ref().map(|c| (c.mechanism, c.user().to_string())),
        }
    }
}

/// [`setup_with`] for two NAT VMs and plaintext listeners.
pub fn setup(plan: &Plan, client: ClientSide) -> Setup {
    setup_with(plan, client, NatVms::Two, &ClientSecurity::default())
}

pub fn setup_with(
    plan: &Plan,
    client: ClientSide,
    nat_vms: NatVms,
    security: &ClientSecurity,
) -> Setup {
    build(plan, client, nat_vms, security, Scope::Everything)
}

/// The Azure side of brokers added to a path that exists (`kafka discover --config`): per
/// broker of `plan` a frontend, a load balancer rule and a Private Link Service on the load
/// balancer already there, its endpoint, and the approval. Nothing shared is created again:
/// not the load balancer, the probe, the NSG rule, the scale set and its autoscale setting
/// or (with `--client vnet`) the DNS zones. The commands are the same for either `nat_vms`:
/// a frontend, rule and Private Link Service stand on the load balancer, whatever its
/// backend pool holds; with a scale set, a comment says where its new VMs get the rules.
pub fn additions(plan: &Plan, client: ClientSide, nat_vms: NatVms) -> Setup {
    build(plan, client, nat_vms, &ClientSecurity::default(), Scope::Additions)
}

/// Everything from nothing, or only what new brokers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Everything,
    Additions,
}

fn build(
    plan: &Plan,
    client: ClientSide,
    nat_vms: NatVms,
    security: &ClientSecurity,
    scope: Scope,
) -> Setup {
    let mut variables = inputs(client, nat_vms);
    if client == ClientSide::Vnet {
        for b in &plan.brokers {
            variables.push(Variable {
                name: endpoint_nic_var(b),
                value: format!(
                    "/subscriptions/.../resourceGroups/.../providers/Microsoft.Network/\
                     networkInterfaces/{}.nic.0000",
                    b.azure.private_endpoint
                ),
                about: format!("broker {}'s private endpoint's network interface", b.broker.id),
                derived: true,
            });
            variables.push(Variable {
                name: endpoint_ip_var(b),
                value: format!("10.1.0.{}", 10 + b.broker.id.rem_euclid(200)),
                about: format!("broker {}'s private endpoint address", b.broker.id),
                derived: true,
            });
        }
    }
    variables.push(Variable {
        name: "CONNECTION".into(),
        value: "pls-kafka-broker-1.1f2e3d4c-0000-4000-8000-000000000001".into(),
        about: "a pending endpoint connection of a Private Link Service".into(),
        derived: true,
    });
    let names: Vec<String> = variables.iter().map(|v| v.name.clone()).collect();
    let mut steps = nat_side(plan, nat_vms, &names, scope);
    match client {
        ClientSide::Synapse | ClientSide::Adf => {
            steps.push(managed_endpoints(plan, client, &names))
        }
        ClientSide::Vnet => steps.extend(vnet_endpoints(plan, &names, scope)),
    }
    steps.push(approvals(plan, client, &names));
    let notebook =
        (client != ClientSide::Adf && scope == Scope::Everything).then(|| notebook(plan, security));
    if scope == Scope::Additions {
        // Only what the added brokers' commands use: the load balancer's and the probe's
        // inputs were set when the path was made.
        let used = |name: &str| {
            let r = format!("${{{name}}}");
            steps
                .iter()
                .any(|s| s.script.contains(&r) || s.files.iter().any(|f| f.text.contains(&r)))
        };
        variables.retain(|v| v.derived || used(&v.name));
    }
    Setup { client, nat_vms, variables, steps, notebook }
}

fn pls_id_template(b: &BrokerPlan) -> String {
    format!(
        "/subscriptions/${{SUBSCRIPTION_ID}}/resourceGroups/${{NAT_RESOURCE_GROUP}}/providers/\
         Microsoft.Network/privateLinkServices/{}",
        b.azure.private_link_service
    )
}

fn endpoint_ip_var(b: &BrokerPlan) -> String {
    format!("PE_IP_BROKER_{}", b.broker.id.unsigned_abs())
}

fn endpoint_nic_var(b: &BrokerPlan) -> String {
    format!("PE_NIC_BROKER_{}", b.broker.id.unsigned_abs())
}

fn nat_side(plan: &Plan, nat_vms: NatVms, vars: &[String], scope: Scope) -> Vec<Step> {
    let mut per_broker = StepBuilder::new(
        "Per broker: a frontend, a rule (the advertised port -> the broker's listen port) and \
         a Private Link Service on that frontend",
        vars,
    );
    if scope == Scope::Additions {
        // The same commands for either NAT tier: they stand on the load balancer, not on
        // what its backend pool holds. The scale set and its autoscale exist already.
        per_broker.comment("On the load balancer ${LB_NAME} of the existing brokers.");
        if nat_vms == NatVms::Vmss {
            per_broker.comment(&format!(
                "The scale set ${{VMSS_NAME}}: the `rule add`s on each of its VMs, then the same\n\
                 [[rule]]s into {CLOUD_INIT_FILE} and `az vmss update --custom-data\n\
                 @{CLOUD_INIT_FILE}`, or the VMs autoscale adds boot without them.",
            ));
        }
        brokers_behind_lb(plan, &mut per_broker, scope);
        return vec![per_broker.done()];
    }
    let lb = load_balancer(plan, nat_vms, vars);
    per_broker.comment("A Private Link Service's NAT addresses need the subnet's policies off.");
    let cmd = per_broker
        .az_in("network vnet subnet update", "${NAT_RESOURCE_GROUP}")
        .arg("--vnet-name", per_broker.t("${NAT_VNET}"))
        .arg("--name", per_broker.t("${PLS_SUBNET}"))
        .arg("--private-link-service-network-policies", Word::text("Disabled"));
    per_broker.run(cmd);
    brokers_behind_lb(plan, &mut per_broker, scope);
    match nat_vms {
        NatVms::Two => vec![lb, per_broker.done()],
        NatVms::Vmss => {
            let (checks, scale_set) = vmss::steps(plan, vars);
            let mut steps = vec![checks, lb, per_broker.done()];
            steps.extend(scale_set);
            steps
        }
    }
}

/// The load balancer with the first broker's frontend, its backend pool (both NAT VMs' NICs
/// added; a scale set joins it itself), the probe and the NSG rule that lets the probe in.
fn load_balancer(plan: &Plan, nat_vms: NatVms, vars: &[String]) -> Step {
    let first = &plan.brokers[0].azure;
    let mut lb = StepBuilder::new(
        match nat_vms {
            NatVms::Two => {
                "Internal Standard Load Balancer: backend pool with both NAT VMs, HTTP probe \
                 on the health port"
            }
            NatVms::Vmss => {
                "Internal Standard Load Balancer: backend pool for the scale set, HTTP probe \
                 on the health port"
            }
        },
        vars,
    );
    let cmd = lb
        .az_in("network lb create", "${NAT_RESOURCE_GROUP}")
        .arg("--name", lb.t("${LB_NAME}"))
        .arg("--sku", Word::text("Standard"))
        .arg("--vnet-name", lb.t("${NAT_VNET}"))
        .arg("--subnet", lb.t("${LB_SUBNET}"))
        .arg("--frontend-ip-name", Word::text(&first.lb_frontend))
        .arg("--backend-pool-name", lb.t("${BACKEND_POOL}"));
    lb.run(cmd);
    let nics: &[&str] = match nat_vms {
        NatVms::Two => &["${NAT_VM1_NIC}", "${NAT_VM2_NIC}"],
        // The scale set joins the pool itself, VM by VM.
        NatVms::Vmss => &[],
    };
    for nic in nics {
        let cmd = lb
            .az_in("network nic ip-config address-pool add", "${NAT_RESOURCE_GROUP}")
            .arg("--nic-name", lb.t(nic))
            .arg("--ip-config-name", lb.t("${NAT_VM_IPCONFIG}"))
            .arg("--lb-name", lb.t("${LB_NAME}"))
            .arg("--address-pool", lb.t("${BACKEND_POOL}"));
        lb.run(cmd);
    }
    // The daemon answers 200 once attached and 503 while draining or detached: the load
    // balancer takes a VM out after two failed probes 5 s apart.
    let cmd = lb
        .az_in("network lb probe create", "${NAT_RESOURCE_GROUP}")
        .arg("--lb-name", lb.t("${LB_NAME}"))
        .arg("--name", Word::text("forwarder-health"))
        .arg("--protocol", Word::text("Http"))
        .arg("--port", lb.t("${HEALTH_PORT}"))
        .arg("--path", Word::text("/"))
        .arg("--interval", Word::text("5"))
        .arg("--probe-threshold", Word::text("2"));
    lb.run(cmd);
    lb.comment("The probe comes from 168.63.129.16 (service tag AzureLoadBalancer).");
    let cmd = lb
        .az_in("network nsg rule create", "${NAT_RESOURCE_GROUP}")
        .arg("--nsg-name", lb.t("${NAT_NSG}"))
        .arg("--name", Word::text("allow-azure-lb-probe-forwarder"))
        .arg("--priority", Word::text("200"))
        .arg("--direction", Word::text("Inbound"))
        .arg("--access", Word::text("Allow"))
        .arg("--protocol", Word::text("Tcp"))
        .arg("--source-address-prefixes", Word::text("AzureLoadBalancer"))
        .arg("--destination-port-ranges", lb.t("${HEALTH_PORT}"));
    lb.run(cmd);
    lb.done()
}

/// Per broker: its frontend (the first broker's comes with a new load balancer), its rule
/// and its Private Link Service.
fn brokers_behind_lb(plan: &Plan, per_broker: &mut StepBuilder, scope: Scope) {
    for (i, b) in plan.brokers.iter().enumerate() {
        let a = &b.azure;
        per_broker.comment(&format!("broker {} ({})", b.broker.id, b.broker.address()));
        if i > 0 || scope == Scope::Additions {
            let cmd = per_broker
                .az_in("network lb frontend-ip create", "${NAT_RESOURCE_GROUP}")
                .arg("--lb-name", per_broker.t("${LB_NAME}"))
                .arg("--name", Word::text(&a.lb_frontend))
                .arg("--vnet-name", per_broker.t("${NAT_VNET}"))
                .arg("--subnet", per_broker.t("${LB_SUBNET}"));
            per_broker.run(cmd);
        }
        // Floating IP off: packets reach the VM addressed to its own IP and the backend
        // port, which is what the rule listens on. TCP reset off, as in the seed set-up.
        let cmd = per_broker
            .az_in("network lb rule create", "${NAT_RESOURCE_GROUP}")
            .arg("--lb-name", per_broker.t("${LB_NAME}"))
            .arg("--name", Word::text(&a.lb_rule))
            .arg("--protocol", Word::text("Tcp"))
            .arg("--frontend-ip-name", Word::text(&a.lb_frontend))
            .arg("--frontend-port", Word::text(a.frontend_port.to_string()))
            .arg("--backend-pool-name", per_broker.t("${BACKEND_POOL}"))
            .arg("--backend-port", Word::text(a.backend_port.to_string()))
            .arg("--probe-name", Word::text("forwarder-health"))
            .arg("--idle-timeout", Word::text(LB_IDLE_TIMEOUT_MIN.to_string()))
            .arg("--enable-tcp-reset", Word::text("false"))
            .arg("--floating-ip", Word::text("false"));
        per_broker.run(cmd);
        let cmd = per_broker
            .az_in("network private-link-service create", "${NAT_RESOURCE_GROUP}")
            .arg("--name", Word::text(&a.private_link_service))
            .arg("--vnet-name", per_broker.t("${NAT_VNET}"))
            .arg("--subnet", per_broker.t("${PLS_SUBNET}"))
            .arg("--lb-name", per_broker.t("${LB_NAME}"))
            .arg("--lb-frontend-ip-configs", Word::text(&a.lb_frontend));
        per_broker.run(cmd);
    }
}

/// Synapse and Data Factory: one managed private endpoint per Private Link Service, with
/// the broker's advertised name as its FQDN.
fn managed_endpoints(plan: &Plan, client: ClientSide, vars: &[String]) -> Step {
    let title = match client {
        ClientSide::Synapse => {
            "Managed private endpoints in the Synapse workspace, one per broker, \
                                with the broker's advertised name"
        }
        _ => {
            "Managed private endpoints in the data factory's managed VNet, one per broker, with \
              the broker's advertised name"
        }
    };
    let mut step = StepBuilder::new(title, vars);
    for b in &plan.brokers {
        let name = &b.azure.managed_private_endpoint;
        let file = format!("{name}.json");
        let properties = serde_json::json!({
            "privateLinkResourceId": pls_id_template(b),
            "fqdns": [b.broker.host.trim_end_matches('.')],
        });
        match client {
            ClientSide::Synapse => {
                // The CLI wraps the file's object into the endpoint's "properties".
                step.file(&file, &properties);
                let cmd = step
                    .az("synapse managed-private-endpoints create")
                    .arg("--workspace-name", step.t("${WORKSPACE_NAME}"))
                    .arg("--pe-name", Word::text(name))
                    .arg("--file", Word::text(format!("@{file}")));
                step.run(cmd);
            }
            _ => {
                step.file(&file, &serde_json::json!({ "properties": properties }));
                let url = format!(
                    "https://management.azure.com/subscriptions/${{SUBSCRIPTION_ID}}/\
                     resourceGroups/${{ADF_RESOURCE_GROUP}}/providers/Microsoft.DataFactory/\
                     factories/${{FACTORY_NAME}}/managedVirtualNetworks/default/\
                     managedPrivateEndpoints/{name}?api-version={ADF_API_VERSION}"
                );
                let cmd = AzCommand::new("rest")
                    .arg("--method", Word::text("put"))
                    .arg("--url", step.t(&url))
                    .arg("--body", Word::text(format!("@{file}")));
                step.run(cmd);
            }
        }
    }
    step.done()
}

/// A VNet of the clients' own: a private endpoint per Private Link Service, then a private
/// DNS zone per domain of the advertised names with an A record per broker.
fn vnet_endpoints(plan: &Plan, vars: &[String], scope: Scope) -> Vec<Step> {
    let mut pe =
        StepBuilder::new("Private endpoints in the clients' VNet, and their addresses", vars);
    for b in &plan.brokers {
        let name = &b.azure.private_endpoint;
        let cmd = pe
            .az_in("network private-endpoint create", "${CLIENT_RESOURCE_GROUP}")
            .arg("--name", Word::text(name))
            .arg("--vnet-name", pe.t("${CLIENT_VNET}"))
            .arg("--subnet", pe.t("${CLIENT_SUBNET}"))
            .arg("--connection-name", Word::text(name))
            .arg("--private-connection-resource-id", pe.t(&pls_id_template(b)));
        pe.run(cmd);
        // The endpoint's address from its network interface: `customDnsConfigs` stays empty
        // for an endpoint to a custom Private Link Service (Azure quickstart templates
        // #11928).
        let cmd = pe
            .az_in("network private-endpoint show", "${CLIENT_RESOURCE_GROUP}")
            .arg("--name", Word::text(name))
            .arg("--query", Word::text("networkInterfaces[0].id"))
            .arg("--output", Word::text("tsv"));
        pe.capture(&endpoint_nic_var(b), cmd);
        let cmd = pe
            .az("network nic show")
            .arg("--ids", pe.t(&format!("${{{}}}", endpoint_nic_var(b))))
            .arg("--query", Word::text("ipConfigurations[0].privateIPAddress"))
            .arg("--output", Word::text("tsv"));
        pe.capture(&endpoint_ip_var(b), cmd);
    }
    let mut dns = StepBuilder::new(
        "Private DNS: each advertised name -> its private endpoint (a zone answers for every \
         name in it in the linked VNet)",
        vars,
    );
    let mut zones: Vec<&str> = Vec::new();
    for b in &plan.brokers {
        if let Some(d) = &b.azure.dns {
            if !zones.contains(&d.zone.as_str()) {
                zones.push(&d.zone);
            }
        }
    }
    dns.comment(
        "A private DNS zone answers for every name under it in the VNets linked to it: a zone\n\
         named after the corporate domain hides every other name of that domain there (only\n\
         the brokers' records exist in it). Link it to the clients' VNet only, never to the\n\
         NAT VMs': they would resolve the brokers to the endpoints and loop.",
    );
    dns.guard(
        "[ \"$CLIENT_RESOURCE_GROUP/$CLIENT_VNET\" != \"$NAT_RESOURCE_GROUP/$NAT_VNET\" ]",
        "CLIENT_VNET is the NAT VMs' VNet: the zone would send the NAT VMs' own lookups of the \
         brokers to the private endpoints (a loop). Put the clients in a VNet of their own",
    );
    let vnet_id = "/subscriptions/${SUBSCRIPTION_ID}/resourceGroups/${CLIENT_RESOURCE_GROUP}/\
                   providers/Microsoft.Network/virtualNetworks/${CLIENT_VNET}";
    if scope == Scope::Additions && !zones.is_empty() {
        dns.comment(&format!(
            "The zone(s) {} and their links to the clients' VNet exist with the first brokers'\n\
             records (create them as `kafka discover` without --config prints, if not).",
            zones.join(", ")
        ));
    }
    for z in zones.iter().filter(|_| scope == Scope::Everything) {
        let cmd = dns
            .az_in("network private-dns zone create", "${DNS_RESOURCE_GROUP}")
            .arg("--name", Word::text(*z));
        dns.run(cmd);
        let link = format!("{}-clients", z.replace(['.', '<', '>'], "-").trim_matches('-'));
        let cmd = dns
            .az_in("network private-dns link vnet create", "${DNS_RESOURCE_GROUP}")
            .arg("--zone-name", Word::text(*z))
            .arg("--name", Word::text(link))
            .arg("--virtual-network", dns.t(vnet_id))
            .arg("--registration-enabled", Word::text("false"));
        dns.run(cmd);
    }
    for b in &plan.brokers {
        let Some(d) = &b.azure.dns else {
            dns.comment(&format!(
                "broker {} advertises the address {}: no DNS record can redirect it",
                b.broker.id, b.broker.host
            ));
            continue;
        };
        let cmd = dns
            .az_in("network private-dns record-set a add-record", "${DNS_RESOURCE_GROUP}")
            .arg("--zone-name", Word::text(&d.zone))
            .arg("--record-set-name", Word::text(&d.name))
            .arg("--ipv4-address", dns.t(&format!("${{{}}}", endpoint_ip_var(b))));
        dns.run(cmd);
    }
    let mut out = vec![pe.done()];
    if !zones.is_empty() {
        out.push(dns.done());
    }
    out
}

/// The endpoint connections wait on each Private Link Service until approved there.
fn approvals(plan: &Plan, client: ClientSide, vars: &[String]) -> Step {
    let mut step = StepBuilder::new(
        "Approve each endpoint's connection on its Private Link Service, once it appears",
        vars,
    );
    step.comment(
        "The endpoint commands return before the connection exists: each Private Link Service\n\
         is polled for the connection of its own endpoint (matched by name: requests of others\n\
         on the same service are left alone), which is approved if pending. APPROVAL_TRIES x\n\
         APPROVAL_SLEEP seconds (60 x 10 by default) without it fail the script.",
    );
    for b in &plan.brokers {
        let pls = &b.azure.private_link_service;
        let endpoint = match client {
            ClientSide::Vnet => &b.azure.private_endpoint,
            ClientSide::Synapse | ClientSide::Adf => &b.azure.managed_private_endpoint,
        };
        let find = step
            .az_in("network private-link-service show", "${NAT_RESOURCE_GROUP}")
            .arg("--name", Word::text(pls))
            .arg(
                "--query",
                Word::text(format!(
                    "privateEndpointConnections[?contains(privateEndpoint.id, '{endpoint}')] \
                     | [0].[name, privateLinkServiceConnectionState.status]"
                )),
            )
            .arg("--output", Word::text("tsv"));
        let approve = step
            .az_in("network private-link-service connection update", "${NAT_RESOURCE_GROUP}")
            .arg("--service-name", Word::text(pls))
            .arg("--name", step.t("${CONNECTION}"))
            .arg("--connection-status", Word::text("Approved"))
            .arg("--description", Word::text("Kafka through the forwarder NAT VMs"));
        step.approve_when_it_appears(pls, endpoint, find, approve);
    }
    step.done()
}

/// A Synapse notebook cell (PySpark) that reads a topic through the whole path with the
/// advertised names, as the Spark jobs do; `display` shows the rows as they arrive. With
/// TLS or SASL it asks what the listeners asked `kafka discover`; the password (and a
/// private CA's certificates) come from Key Vault through the workspace's linked service,
/// never as a literal in the notebook.
fn notebook(plan: &Plan, security: &ClientSecurity) -> String {
    let servers: Vec<String> = plan.brokers.iter().map(|b| b.broker.address()).collect();
    let mut secrets = String::new();
    let mut options = String::new();
    let protocol = match (security.tls, security.sasl.is_some()) {
        (false, false) => None,
        (true, false) => Some("SSL"),
        (false, true) => Some("SASL_PLAINTEXT"),
        (true, true) => Some("SASL_SSL"),
    };
    if protocol.is_some() || security.private_ca || security.client_cert {
        secrets += "# Secrets from Key Vault through the workspace's linked service: set the three names.\n\
             KEY_VAULT, LINKED_SERVICE = \"<key-vault-name>\", \"<key-vault-linked-service>\"\n";
    }
    if let Some(p) = protocol {
        options += &format!("      .option(\"kafka.security.protocol\", \"{p}\")\n");
    }
    if let Some((mechanism, user)) = &security.sasl {
        let module = match mechanism {
            crate::kafka::sasl::Mechanism::Plain => {
                "org.apache.kafka.common.security.plain.PlainLoginModule"
            }
            crate::kafka::sasl::Mechanism::OAuthBearer => {
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
            }
            _ => "org.apache.kafka.common.security.scram.ScramLoginModule",
        };
        secrets += &match mechanism {
            // The token comes from the identity provider the Spark side is set up with
            // (kafka.sasl.oauthbearer.token.endpoint.url and its login callback handler).
            crate::kafka::sasl::Mechanism::OAuthBearer => {
                format!("jaas = '{module} required;'\n")
            }
            _ => format!(
                "password = mssparkutils.credentials.getSecret(KEY_VAULT, \"kafka-password\", LINKED_SERVICE)\n\
                 jaas = f'{module} required username=\"{user}\" password=\"{{password}}\";'\n"
            ),
        };
        options += &format!(
            "      .option(\"kafka.sasl.mechanism\", \"{}\")\n      \
             .option(\"kafka.sasl.jaas.config\", jaas)\n",
            mechanism.name()
        );
    }
    if security.tls && security.private_ca {
        secrets += "# The CA file's PEM text, stored as a secret.\n\
             ca_pem = mssparkutils.credentials.getSecret(KEY_VAULT, \"kafka-ca-pem\", LINKED_SERVICE)\n";
        options += "      .option(\"kafka.ssl.truststore.type\", \"PEM\")\n      \
             .option(\"kafka.ssl.truststore.certificates\", ca_pem)\n";
    }
    if security.tls && security.client_cert {
        // The workspace's own certificate for the brokers' ssl.client.auth=required, as PEM.
        secrets += "# The client certificate (PEM chain) and its unencrypted PKCS#8 key, stored as secrets.\n\
             client_pem = mssparkutils.credentials.getSecret(KEY_VAULT, \"kafka-client-pem\", LINKED_SERVICE)\n\
             client_key = mssparkutils.credentials.getSecret(KEY_VAULT, \"kafka-client-key\", LINKED_SERVICE)\n";
        options += "      .option(\"kafka.ssl.keystore.type\", \"PEM\")\n      \
             .option(\"kafka.ssl.keystore.certificate.chain\", client_pem)\n      \
             .option(\"kafka.ssl.keystore.key\", client_key)\n";
    }
    format!(
        "# Synapse notebook cell (PySpark): reads TOPIC through the managed private endpoints.\n\
         # Write to it first, e.g. `forwarder kafka check --via {first} --produce TOPIC`.\n\
         # The Private Link Service resets connections idle for about 5 minutes; Kafka's client\n\
         # keeps them 9 by default. Closing them after 4 avoids the resets.\n\
         {secrets}\
         df = (spark.readStream.format(\"kafka\")\n      \
         .option(\"kafka.bootstrap.servers\", \"{servers}\")\n      \
         .option(\"kafka.connections.max.idle.ms\", \"{idle}\")\n\
         {options}      \
         .option(\"subscribe\", \"TOPIC\")\n      \
         .option(\"startingOffsets\", \"earliest\")\n      \
         .load())\n\
         query = (df.selectExpr(\"CAST(value AS STRING) AS value\", \"partition\", \"offset\")\n         \
         .writeStream.format(\"memory\").queryName(\"kafka_path_check\").start())\n\
         query.processAllAvailable()\n\
         display(spark.sql(\"SELECT * FROM kafka_path_check\"))\n",
        first = servers[0],
        servers = servers.join(","),
        idle = CLIENT_MAX_IDLE_MS,
    )
}

#[cfg(test)]
mod tests;
