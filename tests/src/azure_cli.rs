//! The real Azure CLI's parser as the judge of every `az` command `kafka discover` prints
//! (installed from PyPI by .ci/setup.sh at /opt/azure-cli, or FWT_AZ). Without a login the
//! CLI stops at "Please run 'az login'" once the command and its arguments are well-formed,
//! and exits 2 with "unrecognized arguments" or "the following arguments are required" when
//! not; validators that check an ID's form run before the login check too. No request
//! leaves the machine: the CLI has no account to send one with.

use std::{
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

/// What the tests give each variable of the commands: names as an operator would choose
/// them, and IDs in the form Azure's validators expect.
pub fn az_value(name: &str) -> String {
    match name {
        "SUBSCRIPTION_ID" => "6f1c2e34-5b7a-4c8d-9e0f-123456789abc".into(),
        "HEALTH_PORT" => "8080".into(),
        // Numbers and names the scale set's commands parse as such.
        "VMSS_MIN" => "2".into(),
        "VMSS_MAX" => "6".into(),
        "VMSS_IMAGE" => "Ubuntu2404".into(),
        "VMSS_SIZE" => "Standard_D2s_v5".into(),
        "CONNECTION" => "mpe-kafka-broker-1.8d3f0a4e-1b2c-4d5e-8f90-a1b2c3d4e5f6".into(),
        n if n.starts_with("PE_IP_BROKER_") => format!("10.1.0.{}", 10 + n.len()),
        // A network interface's resource id, as `private-endpoint show` prints it.
        n if n.starts_with("PE_NIC_BROKER_") => format!(
            "/subscriptions/6f1c2e34-5b7a-4c8d-9e0f-123456789abc/resourceGroups/client-rg/\
             providers/Microsoft.Network/networkInterfaces/{}.nic.1234",
            n.to_lowercase().replace('_', "-")
        ),
        n => n.to_lowercase().replace('_', "-"),
    }
}

/// `word` with every `${NAME}` replaced by [`az_value`].
pub fn expand(word: &str) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').expect("a closed reference");
        out.push_str(&rest[..start]);
        out.push_str(&az_value(&rest[start + 2..end]));
        rest = &rest[end + 1..];
    }
    out + rest
}

/// The commands of one `kafka discover --json` output (`az_commands`), expanded, labelled
/// `label`; the definition files they read are written into `work`.
pub fn commands_of(
    label: &str,
    j: &serde_json::Value,
    work: &std::path::Path,
) -> Vec<(String, Vec<String>)> {
    let mut jobs = Vec::new();
    for step in j["az_commands"].as_array().expect("az_commands") {
        for f in step["files"].as_array().expect("files") {
            let (name, text) = (f["name"].as_str().unwrap(), expand(f["text"].as_str().unwrap()));
            // The scale set's cloud-config (for --custom-data) is YAML, checked by cloud-init
            // in the library's tests; the others are JSON.
            if name.ends_with(".json") {
                serde_json::from_str::<serde_json::Value>(&text)
                    .expect("a definition file is JSON");
            } else {
                assert!(text.starts_with("#cloud-config\n"), "{name}: {text}");
            }
            std::fs::write(work.join(name), text).unwrap();
        }
        for c in step["commands"].as_array().expect("commands") {
            let argv: Vec<String> = c["argv"]
                .as_array()
                .expect("argv")
                .iter()
                .map(|w| expand(w.as_str().expect("a word")))
                .collect();
            jobs.push((label.to_string(), argv));
        }
    }
    jobs
}

/// Runs every job through the Azure CLI (in `work`, where the definition files are), two
/// at a time (each is a Python start-up of about half a CPU second), and fails the test
/// with every command the parser refused.
pub fn assert_parsed(jobs: &[(String, Vec<String>)], work: &std::path::Path) {
    let az = std::env::var("FWT_AZ").unwrap_or_else(|_| "/opt/azure-cli/bin/az".into());
    assert!(
        std::path::Path::new(&az).exists(),
        "the Azure CLI is not at {az}: run .ci/setup.sh (or set FWT_AZ)"
    );
    let config_dir = tempfile::tempdir().expect("AZURE_CONFIG_DIR");
    let results = std::sync::Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((label, argv)) = jobs.get(i) else { break };
                let out = Command::new(&az)
                    .args(argv)
                    .current_dir(work)
                    .env("AZURE_CONFIG_DIR", config_dir.path())
                    .env("AZURE_CORE_COLLECT_TELEMETRY", "false")
                    .env("AZURE_CORE_NO_COLOR", "true")
                    .stdin(Stdio::null())
                    .output()
                    .expect("running az");
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                results.lock().unwrap().push((
                    label.clone(),
                    argv.join(" "),
                    out.status.code(),
                    stderr,
                ));
            });
        }
    });
    let results = results.into_inner().unwrap();
    assert_eq!(results.len(), jobs.len());
    let bad: Vec<String> = results
        .iter()
        .filter(|(_, _, code, stderr)| {
            *code != Some(1) || !stderr.contains("Please run 'az login'")
        })
        .map(|(label, line, code, stderr)| {
            format!("{label}: az {line}\n  exit {code:?}: {}", stderr.trim())
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} commands refused:\n{}",
        bad.len(),
        results.len(),
        bad.join("\n")
    );
    println!("{} az commands parsed by the Azure CLI", results.len());
}
