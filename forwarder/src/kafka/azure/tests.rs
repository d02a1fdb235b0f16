use super::*;
use crate::kafka::discover::{plan, three_broker_metadata};
use std::{collections::HashMap, process::Command};

fn three_brokers() -> Plan {
    plan("boot:9092", &three_broker_metadata(false), 9092).unwrap()
}

const CLIENTS: [ClientSide; 3] = [ClientSide::Synapse, ClientSide::Adf, ClientSide::Vnet];

fn vmss(client: ClientSide) -> Setup {
    setup_with(&three_brokers(), client, NatVms::Vmss, &ClientSecurity::default())
}

/// Every set-up: each client side with two NAT VMs, and with a scale set.
fn every_setup() -> Vec<Setup> {
    CLIENTS.iter().flat_map(|c| [setup(&three_brokers(), *c), vmss(*c)]).collect()
}

/// Values that pass the scale set's checks of its inputs (`vmss::checks`), for the tests
/// that run the script; `None` for the variables any value does.
fn checked_value(name: &str) -> Option<&'static str> {
    Some(match name {
        "FORWARDER_DEB_URL" => {
            "https://acct.blob.core.windows.net/debs/forwarder_0.1.0_amd64.deb?sv=2022-11-02&sp=r&sig=AbC%2Fd%3D"
        }
        "FORWARDER_DEB_SHA256" => {
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        }
        "ALLOWED_SOURCES" => "10.0.0.0/16",
        "MSS_CLAMP" => "1350",
        "HEALTH_PORT" => "8080",
        "METRICS_ADDR" => "127.0.0.1:9464",
        _ => return None,
    })
}

fn lines(s: &Setup) -> Vec<String> {
    s.steps.iter().flat_map(|s| &s.commands).map(|c| c.argv().join(" ")).collect()
}

fn count(s: &Setup, prefix: &str) -> usize {
    lines(s).iter().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn the_nat_side_is_complete_for_every_client() {
    for client in CLIENTS {
        let s = setup(&three_brokers(), client);
        assert_eq!(count(&s, "network lb create"), 1, "{client:?}");
        assert_eq!(count(&s, "network nic ip-config address-pool add"), 2);
        assert_eq!(count(&s, "network lb probe create"), 1);
        assert_eq!(count(&s, "network nsg rule create"), 1);
        // The first frontend comes with the load balancer.
        assert_eq!(count(&s, "network lb frontend-ip create"), 2);
        assert_eq!(count(&s, "network lb rule create"), 3);
        assert_eq!(count(&s, "network private-link-service create"), 3);
        assert_eq!(count(&s, "network private-link-service connection update"), 3);
        let all = lines(&s);
        let rule2 = all.iter().find(|c| c.contains("--name kafka-broker-2 ")).unwrap();
        for want in [
            "--frontend-port 9092 ",
            "--backend-port 9093 ",
            "--frontend-ip-name fe-kafka-broker-2 ",
            "--probe-name forwarder-health ",
            "--idle-timeout 30 ",
            "--enable-tcp-reset false ",
            "--floating-ip false",
        ] {
            assert!(rule2.contains(want), "{want} in {rule2}");
        }
        let probe = all.iter().find(|c| c.starts_with("network lb probe create")).unwrap();
        assert!(probe.contains("--protocol Http --port ${HEALTH_PORT} --path /"), "{probe}");
        let nsg = all.iter().find(|c| c.starts_with("network nsg rule create")).unwrap();
        assert!(nsg.contains("--source-address-prefixes AzureLoadBalancer"), "{nsg}");
    }
}

#[test]
fn each_client_side_gets_its_own_endpoints() {
    let synapse = setup(&three_brokers(), ClientSide::Synapse);
    assert_eq!(count(&synapse, "synapse managed-private-endpoints create"), 3);
    assert_eq!(count(&synapse, "network private-endpoint create"), 0);
    assert_eq!(count(&synapse, "network private-dns"), 0, "the workspace resolves the names");
    let files: Vec<&DefinitionFile> = synapse.steps.iter().flat_map(|s| &s.files).collect();
    assert_eq!(files.len(), 3);
    let f2: serde_json::Value = serde_json::from_str(&files[1].text).unwrap();
    assert_eq!(f2["fqdns"], serde_json::json!(["broker2.corp.example"]));
    assert_eq!(
        f2["privateLinkResourceId"],
        "/subscriptions/${SUBSCRIPTION_ID}/resourceGroups/${NAT_RESOURCE_GROUP}/providers/\
         Microsoft.Network/privateLinkServices/pls-kafka-broker-2"
    );

    let adf = setup(&three_brokers(), ClientSide::Adf);
    let rest: Vec<String> = lines(&adf).into_iter().filter(|l| l.starts_with("rest ")).collect();
    assert_eq!(rest.len(), 3);
    assert!(rest[2].contains(
        "/providers/Microsoft.DataFactory/factories/${FACTORY_NAME}/managedVirtualNetworks/\
         default/managedPrivateEndpoints/mpe-kafka-broker-3?api-version=2018-06-01"
    ));
    let body: serde_json::Value =
        serde_json::from_str(&adf.steps.iter().flat_map(|s| &s.files).next().unwrap().text)
            .unwrap();
    assert_eq!(body["properties"]["fqdns"], serde_json::json!(["broker1.corp.example"]));

    let vnet = setup(&three_brokers(), ClientSide::Vnet);
    assert_eq!(count(&vnet, "network private-endpoint create"), 3);
    assert_eq!(count(&vnet, "network private-dns zone create"), 1);
    assert_eq!(count(&vnet, "network private-dns record-set a add-record"), 3);
    let rec3 = lines(&vnet).into_iter().find(|c| c.contains("--record-set-name broker3 ")).unwrap();
    assert!(rec3.ends_with("--ipv4-address ${PE_IP_BROKER_3}"), "{rec3}");
}

#[test]
fn every_reference_is_a_declared_variable() {
    for s in every_setup() {
        let (client, nat_vms) = (s.client, s.nat_vms);
        let declared: Vec<&str> = s.variables.iter().map(|v| v.name.as_str()).collect();
        for c in s.steps.iter().flat_map(|s| &s.commands) {
            for v in c.variables() {
                assert!(declared.contains(&v), "{client:?} {nat_vms:?}: {v} in {:?}", c.argv());
            }
        }
        // The files' references too: the here-document expands them.
        for f in s.steps.iter().flat_map(|s| &s.files) {
            for piece in f.text.split("${").skip(1) {
                let name = piece.split('}').next().unwrap_or_default();
                assert!(declared.contains(&name), "{client:?}: {name} in {}", f.name);
            }
        }
    }
}

/// A stand-in `az` that logs its arguments, one invocation per line (words NUL-separated),
/// and answers the two queries whose output the script uses (a connection is
/// `$FAKE_CONNECTION` in state `$FAKE_STATUS`, Pending by default; none when empty).
const FAKE_AZ: &str = r#"#!/usr/bin/env bash
printf '%s\0' "$@" >> "$AZ_LOG"; echo >> "$AZ_LOG"
# A resource is its command group and the values of the flags that name it; `create` makes
# it (in $AZ_STATE), `show` without a query fails (exit 3, as az's not found) until then.
key=""; verb=""; prev=""
for a in "$@"; do
  case "$prev" in
    --name|--nsg-name|--zone-name|--workspace-name|--pe-name|--resource-group) key="$key|$a" ;;
  esac
  case "$a" in
    create|show) [ -z "$verb" ] && verb="$a" ;;
    --*) ;;
    *) [ -z "$verb" ] && [ "${prev#--}" = "$prev" ] && key="$key $a" ;;
  esac
  prev="$a"
done
if [ "$verb" = create ]; then echo "$key" >> "$AZ_STATE"; exit 0; fi
case "$*" in
  *"--query"*) ;;
  *" show "*) grep -qxF -- "$key" "$AZ_STATE" 2>/dev/null && exit 0; echo "ResourceNotFound" >&2; exit 3 ;;
esac
case "$*" in
  *"private-link-service show"*)
    if [ -n "$FAKE_CONNECTION" ]; then printf '%s\t%s\n' "$FAKE_CONNECTION" "${FAKE_STATUS:-Pending}"; fi ;;
  *"private-endpoint show"*) echo "$FAKE_NIC" ;;
  *"nic show"*) echo "$FAKE_IP" ;;
esac
"#;

/// A value for every input variable of `s` (`value-<name>`, or one the checks take), as
/// the operator sets them.
fn input_values(s: &Setup) -> Vec<(String, String)> {
    s.variables
        .iter()
        .filter(|v| !v.derived)
        .map(|v| {
            let value = checked_value(&v.name)
                .map_or_else(|| format!("value-{}", v.name.to_lowercase()), String::from);
            (v.name.clone(), value)
        })
        .collect()
}

/// Runs the script under bash with the fake `az`; returns its exit status, stderr and the
/// logged invocations.
fn run_script(s: &Setup, env: &[(String, String)]) -> (bool, String, Vec<Vec<String>>) {
    run_script_in(&tempfile::tempdir().unwrap(), s, env)
}

/// [`run_script`] in `dir`, where the files the script writes stay.
fn run_script_in(
    dir: &tempfile::TempDir,
    s: &Setup,
    env: &[(String, String)],
) -> (bool, String, Vec<Vec<String>>) {
    let az = dir.path().join("az");
    std::fs::write(&az, FAKE_AZ).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("setup.sh");
    std::fs::write(&path, script(s, "boot:9092")).unwrap();
    let log = dir.path().join("az.log");
    let state = env.iter().find(|(k, _)| k == "AZ_STATE").map(|(_, v)| v.clone());
    let out = Command::new("bash")
        .arg(&path)
        .current_dir(dir.path())
        .env("PATH", format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap()))
        .env("AZ_LOG", &log)
        // No waiting between polls unless a test asks for it: a run without a connection
        // fails in no time rather than in ten minutes.
        .env("APPROVAL_SLEEP", "0")
        .env("AZ_STATE", state.unwrap_or_else(|| dir.path().join("az.state").display().to_string()))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('\0').filter(|w| !w.is_empty()).map(String::from).collect())
        .collect();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into(), calls)
}

#[test]
fn the_script_runs_exactly_the_listed_commands() {
    for s in every_setup() {
        let client = (s.client, s.nat_vms);
        let values: HashMap<String, String> = s
            .variables
            .iter()
            .map(|v| {
                let value = checked_value(&v.name)
                    .map_or_else(|| format!("value of {}", v.name.to_lowercase()), String::from);
                (v.name.clone(), value)
            })
            .collect();
        let mut env: Vec<(String, String)> = values
            .iter()
            .filter(|(k, _)| !k.starts_with("PE_") && *k != "CONNECTION")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("FAKE_CONNECTION".into(), values["CONNECTION"].clone()));
        // Every endpoint answers with the same interface and address in the fake.
        env.push(("FAKE_IP".into(), "10.1.0.99".into()));
        env.push(("FAKE_NIC".into(), "/subscriptions/s/nic-pe".into()));
        let (ok, stderr, calls) = run_script(&s, &env);
        assert!(ok, "{client:?}: {stderr}");
        let want: Vec<Vec<String>> = s
            .steps
            .iter()
            .flat_map(|s| &s.commands)
            .map(|c| {
                c.words[1..]
                    .iter()
                    .map(|w| {
                        w.expand(|v| {
                            if v.starts_with("PE_IP") {
                                "10.1.0.99".into()
                            } else if v.starts_with("PE_NIC") {
                                "/subscriptions/s/nic-pe".into()
                            } else {
                                values[v].clone()
                            }
                        })
                    })
                    .collect()
            })
            .collect();
        assert_eq!(calls, want, "{client:?}");
    }
}

#[test]
fn the_script_refuses_to_run_with_placeholders() {
    let s = setup(&three_brokers(), ClientSide::Synapse);
    let (ok, stderr, calls) = run_script(&s, &[]);
    assert!(!ok);
    assert!(stderr.contains("set SUBSCRIPTION_ID first"), "{stderr}");
    assert!(calls.is_empty(), "{calls:?}");
}

#[test]
fn the_notebook_reads_through_the_advertised_names() {
    let nb = setup(&three_brokers(), ClientSide::Synapse).notebook.expect("a cell");
    assert!(nb.contains(
        "\"kafka.bootstrap.servers\", \"broker1.corp.example:9092,broker2.corp.example:9092,\
         broker3.corp.example:9092\""
    ));
    assert!(nb.contains("spark.readStream.format(\"kafka\")"), "{nb}");
}

/// The Private Link Service resets flows idle for about 300 s: the cell makes the Kafka
/// client close idle connections before that, and says why.
#[test]
fn the_notebook_closes_idle_connections_before_private_link_resets_them() {
    let nb = setup(&three_brokers(), ClientSide::Synapse).notebook.expect("a cell");
    let idle: u32 = nb
        .split("\"kafka.connections.max.idle.ms\", \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no kafka.connections.max.idle.ms in\n{nb}"));
    assert!((60_000..300_000).contains(&idle), "{idle} ms");
    assert!(nb.contains("resets connections idle for about 5 minutes"), "{nb}");
}

/// Data Factory runs no notebooks: no PySpark cell for it, and the script and the text say
/// what to do instead.
#[test]
fn data_factory_gets_no_notebook_cell_and_is_told_why() {
    let adf = setup(&three_brokers(), ClientSide::Adf);
    assert!(adf.notebook.is_none());
    let text = script(&adf, "boot:9092");
    assert!(!text.contains("spark.readStream"), "{text}");
    assert!(text.contains("No notebook cell for Data Factory"), "{text}");
    assert!(setup(&three_brokers(), ClientSide::Vnet).notebook.is_some());
}

/// The cell asks what the listeners asked `kafka discover` (TLS, SASL, a private CA), reads
/// the password and the CA from Key Vault (never a literal), and is valid Python (parsed by
/// python3's own parser) with and without them.
#[test]
fn the_notebook_carries_the_listeners_security_with_secrets_from_key_vault() {
    use crate::kafka::sasl::Mechanism;
    let plan = three_brokers();
    let plain = setup(&plan, ClientSide::Synapse).notebook.unwrap();
    assert!(!plain.contains("security.protocol") && !plain.contains("getSecret"), "{plain}");
    let security = ClientSecurity {
        tls: true,
        private_ca: true,
        client_cert: false,
        sasl: Some((Mechanism::ScramSha512, "spark-reader".into())),
    };
    let nb = setup_with(&plan, ClientSide::Synapse, NatVms::Two, &security).notebook.unwrap();
    for want in [
        ".option(\"kafka.security.protocol\", \"SASL_SSL\")",
        ".option(\"kafka.sasl.mechanism\", \"SCRAM-SHA-512\")",
        "ScramLoginModule required username=\"spark-reader\" password=\"{password}\"",
        "password = mssparkutils.credentials.getSecret(KEY_VAULT, \"kafka-password\", LINKED_SERVICE)",
        ".option(\"kafka.ssl.truststore.type\", \"PEM\")",
        ".option(\"kafka.ssl.truststore.certificates\", ca_pem)",
    ] {
        assert!(nb.contains(want), "missing {want}:\n{nb}");
    }
    let sasl_only =
        ClientSecurity { sasl: Some((Mechanism::Plain, "u".into())), ..Default::default() };
    let nb2 = setup_with(&plan, ClientSide::Synapse, NatVms::Two, &sasl_only).notebook.unwrap();
    assert!(nb2.contains("\"SASL_PLAINTEXT\"") && nb2.contains("PlainLoginModule"), "{nb2}");
    assert!(!nb2.contains("truststore"), "{nb2}");
    // mTLS and OAUTHBEARER: the client certificate from Key Vault, no password.
    let mtls_oauth = ClientSecurity {
        tls: true,
        private_ca: false,
        client_cert: true,
        sasl: Some((Mechanism::OAuthBearer, String::new())),
    };
    let nb3 = setup_with(&plan, ClientSide::Synapse, NatVms::Two, &mtls_oauth).notebook.unwrap();
    for want in [
        ".option(\"kafka.ssl.keystore.type\", \"PEM\")",
        ".option(\"kafka.ssl.keystore.certificate.chain\", client_pem)",
        ".option(\"kafka.ssl.keystore.key\", client_key)",
        ".option(\"kafka.sasl.mechanism\", \"OAUTHBEARER\")",
        "OAuthBearerLoginModule required;",
    ] {
        assert!(nb3.contains(want), "missing {want}:\n{nb3}");
    }
    assert!(!nb3.contains("kafka-password"), "{nb3}");
    for cell in [&plain, &nb, &nb2, &nb3] {
        let out = Command::new("python3")
            .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(cell.as_bytes())?;
                child.wait_with_output()
            })
            .expect("python3 (installed by .ci/setup.sh) parses the cell");
        assert!(out.status.success(), "{}\n{cell}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The approval waits for the connection of its own endpoint: none yet fails the script
/// after its tries with what to do, an approved one is left alone, a rejected one fails.
#[test]
fn the_approval_waits_for_its_own_endpoints_connection() {
    let s = setup(&three_brokers(), ClientSide::Synapse);
    let step = s.steps.last().unwrap();
    assert!(
        step.script.contains("contains(privateEndpoint.id, 'mpe-kafka-broker-1')"),
        "{}",
        step.script
    );
    let mut env = input_values(&s);
    env.extend([("APPROVAL_TRIES".into(), "3".into()), ("APPROVAL_SLEEP".into(), "0".into())]);
    let with = |extra: &[(&str, &str)]| {
        let mut e = env.clone();
        e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        run_script(&s, &e)
    };
    let updates = |calls: &[Vec<String>]| {
        calls.iter().filter(|c| c.join(" ").contains("connection update")).count()
    };
    let (ok, stderr, calls) = with(&[("FAKE_CONNECTION", "")]);
    assert!(!ok, "no connection must fail the script");
    assert!(stderr.contains("no connection from mpe-kafka-broker-1 yet"), "{stderr}");
    let polls = calls
        .iter()
        .filter(|c| {
            c.join(" ").contains("private-link-service show") && c.contains(&"--query".into())
        })
        .count();
    assert_eq!((polls, updates(&calls)), (3, 0), "three tries, nothing approved");
    let (ok, stderr, calls) = with(&[("FAKE_CONNECTION", "c1"), ("FAKE_STATUS", "Approved")]);
    assert!(ok, "{stderr}");
    assert_eq!(updates(&calls), 0, "an approved connection is left alone");
    let (ok, stderr, _) = with(&[("FAKE_CONNECTION", "c1"), ("FAKE_STATUS", "Rejected")]);
    assert!(!ok && stderr.contains("is Rejected; delete it"), "{stderr}");
    let (ok, stderr, calls) = with(&[("FAKE_CONNECTION", "c1")]);
    assert!(ok, "{stderr}");
    assert_eq!(updates(&calls), 3, "each pending connection approved");
}

/// `--client vnet` reads each endpoint's address from its network interface (customDnsConfigs
/// is empty for a custom Private Link Service), says what a zone named after the corporate
/// domain does, and refuses to link it to the NAT VMs' VNet.
#[test]
fn the_vnet_dns_step_reads_nic_addresses_and_never_links_the_nat_vnet() {
    let s = setup(&three_brokers(), ClientSide::Vnet);
    let text = script(&s, "boot:9092");
    assert!(!text.contains("customDnsConfigs"), "{text}");
    assert!(text.contains("networkInterfaces[0].id") && text.contains("privateIPAddress"));
    assert!(text.contains("hides every other name of that domain there"), "{text}");
    let mut env = input_values(&s);
    for (k, v) in env.iter_mut() {
        if k == "CLIENT_VNET" {
            *v = "value-nat_vnet".into();
        }
        if k == "CLIENT_RESOURCE_GROUP" {
            *v = "value-nat_resource_group".into();
        }
    }
    env.extend([("FAKE_IP".into(), "10.1.0.99".into()), ("FAKE_NIC".into(), "nic".into())]);
    let (ok, stderr, calls) = run_script(&s, &env);
    assert!(!ok && stderr.contains("CLIENT_VNET is the NAT VMs' VNet"), "{stderr}");
    assert!(
        !calls.iter().any(|c| c.join(" ").contains("private-dns")),
        "nothing of the zone made before the refusal: {calls:?}"
    );
}

/// The script can run twice (after a partial failure, or by mistake): against a fake `az`
/// that keeps what was created, the second run creates nothing (every create is guarded
/// by its show), replaces nothing and deletes nothing.
#[test]
fn a_second_run_of_the_script_creates_and_deletes_nothing() {
    for s in every_setup() {
        let client = (s.client, s.nat_vms);
        let state = tempfile::NamedTempFile::new().unwrap();
        let mut env = input_values(&s);
        env.extend([
            ("AZ_STATE".into(), state.path().display().to_string()),
            ("FAKE_CONNECTION".into(), "c1".into()),
            ("FAKE_IP".into(), "10.1.0.99".into()),
            ("FAKE_NIC".into(), "nic".into()),
        ]);
        let kinds = |calls: &[Vec<String>], verb: &str| {
            calls.iter().filter(|c| c.iter().any(|w| w == verb)).count()
        };
        let (ok, stderr, first) = run_script(&s, &env);
        assert!(ok, "{client:?} first run: {stderr}");
        assert!(kinds(&first, "create") >= 3, "{client:?}: the first run created little");
        env.push(("FAKE_STATUS".into(), "Approved".into()));
        let (ok, stderr, second) = run_script(&s, &env);
        assert!(ok, "{client:?} second run: {stderr}");
        assert_eq!(kinds(&second, "create"), 0, "{client:?}: {second:?}");
        assert_eq!(kinds(&second, "delete"), 0, "{client:?}");
        let approvals = second.iter().filter(|c| c.join(" ").contains("connection update"));
        assert_eq!(approvals.count(), 0, "{client:?}: approved twice");
    }
}

/// `--nat-vms vmss`: no NICs of the operator's join the pool; the scale set does, through
/// its network profile, with the cloud-config as custom data; autoscale follows it; the
/// checks of the inputs come before anything is created.
#[test]
fn the_scale_set_joins_the_pool_and_autoscales_on_cpu() {
    for client in CLIENTS {
        let s = vmss(client);
        assert_eq!(count(&s, "network nic ip-config address-pool add"), 0, "{client:?}");
        assert_eq!(count(&s, "network lb create"), 1);
        assert_eq!(count(&s, "vmss create"), 1);
        assert_eq!(count(&s, "monitor autoscale create"), 1);
        assert_eq!(count(&s, "monitor autoscale rule create"), 2);
        let names: Vec<&str> = s.variables.iter().map(|v| v.name.as_str()).collect();
        assert!(!names.contains(&"NAT_VM1_NIC") && names.contains(&"FORWARDER_DEB_URL"));
        assert!(s.steps[0].commands.is_empty(), "the checks come first: {}", s.steps[0].title);
        let all = lines(&s);
        let create = all.iter().find(|c| c.starts_with("vmss create")).unwrap();
        for want in [
            "--lb ${LB_NAME} --backend-pool-name ${BACKEND_POOL} ",
            "--custom-data @forwarder-cloud-init.yaml ",
            "--image ${VMSS_IMAGE} ",
            "--nsg ${NAT_NSG} ",
            "--disable-overprovision ",
            "--upgrade-policy-mode Manual ",
        ] {
            assert!(create.contains(want), "{want} in {create}");
        }
        let rules: Vec<&String> =
            all.iter().filter(|c| c.starts_with("monitor autoscale rule create")).collect();
        assert!(rules[0].contains("--condition Percentage CPU > 60 avg 10m --scale out 1"));
        assert!(rules[1].contains("--condition Percentage CPU < 20 avg 30m --scale in 1"));
        // The scale set comes after the load balancer it joins and the rules it serves.
        let at = |prefix: &str| all.iter().position(|c| c.starts_with(prefix)).unwrap();
        assert!(at("network private-link-service create") < at("vmss create"));
        assert!(at("vmss create") < at("monitor autoscale create"));
    }
    assert_eq!(count(&setup(&three_brokers(), ClientSide::Synapse), "vmss"), 0);
}

/// The autoscale rules have no names and no `show`: they are made inside their setting's
/// guard, so a second run (see a_second_run_of_the_script_creates_and_deletes_nothing)
/// adds none.
#[test]
fn the_autoscale_rules_go_with_their_setting() {
    let s = vmss(ClientSide::Synapse);
    let step = s.steps.iter().find(|s| s.title.starts_with("Autoscale")).unwrap();
    let script = &step.script;
    let guard = script.find("if ! az monitor autoscale show").expect(script);
    let end = script.find("\nfi\n").expect(script);
    for rule in script.match_indices("az monitor autoscale rule create").map(|(i, _)| i) {
        assert!(guard < rule && rule < end, "a rule outside the guard:\n{script}");
    }
}

/// A value that would break forwarder.toml or the installer on every VM stops the script
/// before it creates anything, naming the variable.
#[test]
fn the_scale_sets_inputs_are_checked_before_anything_is_created() {
    let s = vmss(ClientSide::Vnet);
    for (var, bad, says) in [
        ("FORWARDER_DEB_SHA256", "abc", "FORWARDER_DEB_SHA256 must be the .deb's SHA-256"),
        ("FORWARDER_DEB_URL", "https://x/a'b", "FORWARDER_DEB_URL must be an https URL"),
        ("FORWARDER_DEB_URL", "http://x/f.deb", "FORWARDER_DEB_URL must be an https URL"),
        ("ALLOWED_SOURCES", "10.0.0.0/16,10.1.0.0/16", "ALLOWED_SOURCES must be one IPv4 CIDR"),
        ("METRICS_ADDR", "localhost:9464", "METRICS_ADDR must be an IPv4 address:port"),
    ] {
        let mut env = input_values(&s);
        env.iter_mut().filter(|(k, _)| k == var).for_each(|(_, v)| *v = bad.into());
        let (ok, stderr, calls) = run_script(&s, &env);
        assert!(!ok && stderr.contains(says), "{var}={bad}: {stderr}");
        assert!(calls.is_empty(), "{var}={bad}: ran {calls:?}");
    }
}

/// The cloud-config as a VM receives it (the script's here-document expanded): valid for
/// `cloud-init schema` (Debian's cloud-init package), with a forwarder.toml the daemon's
/// own parser takes, holding the plan's rules, the installer bash reads, and the LRO rule.
#[test]
fn the_cloud_config_passes_cloud_init_schema_and_writes_a_valid_config() {
    let s = vmss(ClientSide::Synapse);
    let env = input_values(&s);
    let mut run_env = env.clone();
    run_env.push(("FAKE_CONNECTION".into(), "c1".into()));
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr, _) = run_script_in(&dir, &s, &run_env);
    assert!(ok, "{stderr}");
    let path = dir.path().join(CLOUD_INIT_FILE);
    let text = std::fs::read_to_string(&path).expect("the script writes the cloud-config");
    // What the JSON output lists is what the script wrote, references expanded.
    let file = s.steps.iter().flat_map(|s| &s.files).find(|f| f.name == CLOUD_INIT_FILE).unwrap();
    let values: HashMap<String, String> = env.into_iter().collect();
    let names: Vec<&str> = values.keys().map(String::as_str).collect();
    assert_eq!(text, Word::template(&file.text, &names).expand(|v| values[v].clone()));
    assert!(text.starts_with("#cloud-config\n"), "{text}");

    let schema = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cloud-init: {e}. Install Debian's cloud-init package (.ci/setup.sh does)")
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&schema.stdout),
        String::from_utf8_lossy(&schema.stderr)
    );
    assert!(schema.status.success() && said.contains("Valid cloud-config"), "{said}\n{text}");

    // The files as cloud-init writes them, read back by Python's YAML parser (which
    // cloud-init itself uses).
    let read = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; d = yaml.safe_load(open(sys.argv[1])); \
             print(json.dumps(d))",
        ])
        .arg(&path)
        .output()
        .expect("python3 with PyYAML (a dependency of cloud-init)");
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let d: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    let content = |p: &str| -> String {
        let f = d["write_files"].as_array().unwrap().iter().find(|f| f["path"] == p);
        f.unwrap_or_else(|| panic!("no {p} in {d}"))["content"].as_str().unwrap().to_string()
    };
    let toml = content("/etc/forwarder/forwarder.toml");
    let settings = crate::config::parse(std::path::Path::new("forwarder.toml"), &toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let rules: Vec<(u16, String)> =
        settings.rules.iter().map(|r| (r.listen, r.target.to_string())).collect();
    assert_eq!(
        rules,
        [
            (9092, "broker1.corp.example:9092"),
            (9093, "broker2.corp.example:9092"),
            (9094, "broker3.corp.example:9092")
        ]
        .map(|(p, t)| (p, t.to_string()))
    );
    assert_eq!(settings.health.unwrap().port(), 8080);
    assert_eq!(settings.allowed_sources.unwrap()[0].to_string(), "10.0.0.0/16");
    let installer = content("/usr/local/sbin/forwarder-install");
    assert!(installer.contains(&format!("'{}'", checked_value("FORWARDER_DEB_URL").unwrap())));
    assert!(installer.contains("sha256sum --check") && installer.contains("enable --now"));
    let syntax = Command::new("sh").args(["-n", "-c", &installer]).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    assert!(content("/etc/udev/rules.d/60-forwarder-lro-off.rules").contains("lro off"));
    assert_eq!(d["runcmd"], serde_json::json!([["/usr/local/sbin/forwarder-install"]]));
}

/// `discover --config`: the new brokers' commands stand on the load balancer whatever its
/// pool holds, so a scale set changes none of them and is not created again; a comment
/// says how its model gets the new rules.
#[test]
fn additions_are_the_same_commands_for_either_nat_tier() {
    for client in CLIENTS {
        let two = additions(&three_brokers(), client, NatVms::Two);
        let scale_set = additions(&three_brokers(), client, NatVms::Vmss);
        assert_eq!(lines(&two), lines(&scale_set), "{client:?}");
        assert_eq!(scale_set.nat_vms, NatVms::Vmss);
        for prefix in ["network lb create", "vmss create", "monitor autoscale create"] {
            assert_eq!(count(&scale_set, prefix), 0, "{client:?}: {prefix}");
        }
        assert_eq!(count(&scale_set, "network lb frontend-ip create"), 3, "{client:?}");
        let script: String = scale_set.steps.iter().map(|s| s.script.as_str()).collect();
        assert!(script.contains(&format!("--custom-data\n# @{CLOUD_INIT_FILE}")), "{script}");
        assert!(!two.steps.iter().any(|s| s.script.contains(CLOUD_INIT_FILE)));
        // The comment names the scale set: its name is among the variables printed.
        assert!(scale_set.variables.iter().any(|v| v.name == "VMSS_NAME"));
        assert!(!scale_set.variables.iter().any(|v| v.name == "FORWARDER_DEB_URL"));
    }
}
