//! `kafka discover --script FILE`: the whole set-up as one bash script, its variables at the
//! top. It refuses to run while a variable still holds its `<placeholder>`.

use super::Setup;
use std::fmt::Write;

pub fn script(setup: &Setup, generated_from: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#!/usr/bin/env bash");
    let name = |v: serde_json::Value| v.as_str().map(String::from).unwrap_or_default();
    let _ = writeln!(
        out,
        "# The Azure side of the Kafka NAT VMs for {generated_from}, client side: {}, NAT VMs: {}.",
        name(serde_json::json!(setup.client)),
        name(serde_json::json!(setup.nat_vms)),
    );
    let _ =
        writeln!(out, "# Written by `forwarder kafka discover --script`. Needs `az login` first.");
    let _ = writeln!(
        out,
        "# Azure treats most of these creates as create-or-update, so a re-run after a failure\n\
         # is usually fine; an approval that is no longer pending is skipped."
    );
    out.push_str("set -euo pipefail\n\n# ---- set these (or export them before running) ----\n");
    let inputs: Vec<_> = setup.variables.iter().filter(|v| !v.derived).collect();
    let width = inputs.iter().map(|v| v.name.len() * 2 + v.value.len()).max().unwrap_or(0) + 8;
    for v in &inputs {
        let assign = format!("{}=\"${{{}:-{}}}\"", v.name, v.name, v.value);
        let _ = writeln!(out, "{assign:width$} # {}", v.about);
    }
    out.push_str("\nfor v in");
    for v in &inputs {
        let _ = write!(out, " {}", v.name);
    }
    out.push_str(
        "; do\n  case \"${!v}\" in\n    *'<'*) echo \"set $v first (top of $0, or export it)\" >&2; exit 2 ;;\n  esac\ndone\n",
    );
    for (i, step) in setup.steps.iter().enumerate() {
        let _ = write!(out, "\n# ---- {}. {} ----\n{}", i + 1, step.title, step.script);
    }
    match &setup.notebook {
        Some(cell) => {
            out.push_str(
                "\necho \"done: now run the notebook cell at the end of this script\"\n\n",
            );
            for line in cell.lines() {
                let _ = writeln!(out, "# | {line}");
            }
        }
        None => {
            out.push_str("\necho \"done\"\n\n");
            let _ = writeln!(out, "# {}", super::NO_NOTEBOOK_ADF);
        }
    }
    out
}
