//! Drain natvm-a as a rolling upgrade does, check that new flows go to natvm-b while
//! connections opened before the drain keep working, then bring natvm-a back.

use super::{check_interrupt, clients, natvm::NatVm, net, Lab, Story};
use crate::netns::Netns;
use anyhow::{ensure, Context, Result};
use forwarder::kafka;
use std::{collections::BTreeMap, time::Duration};

/// Connections opened before the drain; their produce after it proves established flows
/// keep working on a drained VM (and on the other one).
const LIVE_CONNECTIONS: usize = 8;

/// Drains natvm-a: its probe fails, the LB takes it out, new flows go to natvm-b, and
/// connections opened before the drain (hash-spread over both VMs) keep working. Then
/// undrains it. Returns those connections, still open, for the caller to close.
pub(super) fn drain_and_back(lab: &Lab, story: &mut Story) -> Result<LiveConnections> {
    check_interrupt()?;
    let opts = story.opts;
    let net = lab.net();
    let lb = lab.lb();
    let mut live = LiveConnections::open(&net.client, &net.brokers, LIVE_CONNECTIONS)?;
    let before = new_conns_per_vm(&lab.vms)?;
    // As a rolling upgrade does: drain and wait until the LB has taken the VM out (the
    // lab's probe runs every 500 ms).
    let wait = ["--wait", "--probe-interval", "500ms", "--probe-threshold", "2"];
    lab.vms[0].cli_ok(&[&["drain"][..], &wait, &["--timeout", "20s"]].concat())?;
    lb.wait_pool(&[false, true], Duration::from_secs(5))?;
    let status = lab.vms[0].cli_json(&["status"])?;
    ensure!(status["drained"] == true, "natvm-a status after drain: {status}");
    story.say(format!(
        "natvm-a drained: the probe fails, the LB sends new flows to natvm-b only ({} flows left on natvm-a)",
        status["active_flows"].as_u64().unwrap_or(0)
    ));
    for b in &net.brokers {
        check_interrupt()?;
        let r = clients::python(
            &net.client,
            "roundtrip",
            b,
            "lab-drain",
            opts.messages,
            opts.message_size,
            opts.partitions,
        )?;
        ensure!(
            r.consumed == Some(opts.messages as u64) && r.in_order == Some(true),
            "broker{} while natvm-a is drained: {r:?}",
            b.id
        );
        story.summary.python_messages += r.produced;
    }
    let kept = live.produce_again()?;
    story.summary.live_connections_kept = kept;
    story.say(format!(
        "{kept} connections opened before the drain, over both VMs, kept producing through it"
    ));
    let after = new_conns_per_vm(&lab.vms)?;
    let while_drained = &mut story.summary.conns_while_drained;
    for (vm, n) in &after {
        while_drained.insert(vm.clone(), n - before.get(vm).copied().unwrap_or(0));
    }
    ensure!(
        while_drained["natvm-a"] == 0 && while_drained["natvm-b"] > 0,
        "while natvm-a was drained, new connections went {while_drained:?}"
    );
    let on_b = while_drained["natvm-b"];
    story.say(format!(
        "traffic continued through natvm-b: {on_b} new connections there, 0 on natvm-a"
    ));
    lab.vms[0].cli_ok(&["undrain"])?;
    lb.wait_pool(&[true, true], Duration::from_secs(10))?;
    story.say("natvm-a undrained: back in the pool".into());
    story.summary.conns_per_vm = new_conns_per_vm(&lab.vms)?;
    Ok(live)
}

/// New connections each VM has forwarded (all rules), from `forwarder stats --json`.
fn new_conns_per_vm(vms: &[NatVm]) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for vm in vms {
        let rows = vm.cli_json(&["stats"])?;
        let n = rows
            .as_array()
            .context("stats --json is an array")?
            .iter()
            .map(|r| r["counters"]["new_conns"].as_u64().unwrap_or(0))
            .sum();
        out.insert(vm.name.to_string(), n);
    }
    Ok(out)
}

pub(super) struct LiveConnections {
    conns: Vec<(kafka::Connection, String)>,
}

impl LiveConnections {
    /// `per_broker` connections to every broker's private endpoint from `ns`, each producing
    /// one message to its own topic.
    fn open(ns: &Netns, brokers: &[net::Broker], per_broker: usize) -> Result<Self> {
        let targets: Vec<(String, String)> = brokers
            .iter()
            .flat_map(|b| {
                (0..per_broker).map(move |i| {
                    (format!("{}:9092", b.private_endpoint), format!("lab-live-{}-{i}", b.id))
                })
            })
            .collect();
        let conns = ns.enter(move || -> Result<Vec<(kafka::Connection, String)>> {
            let mut out = Vec::new();
            for (addr, topic) in targets {
                let mut c = kafka::Connection::connect(
                    &addr,
                    &kafka::Security::default(),
                    Duration::from_secs(5),
                )?;
                c.create_topic(&topic, 1)?;
                out.push((c, topic));
            }
            Ok(out)
        })??;
        let mut live = LiveConnections { conns };
        live.produce(b"before the drain")?;
        Ok(live)
    }

    fn produce(&mut self, value: &[u8]) -> Result<()> {
        for (c, topic) in &mut self.conns {
            clients::produce_when_ready(c, topic, &[value.to_vec()])?;
        }
        Ok(())
    }

    /// Produces on every connection again and reads both messages back on it; the count.
    fn produce_again(&mut self) -> Result<usize> {
        self.produce(b"after the drain")?;
        for (c, topic) in &mut self.conns {
            let records = c.fetch(topic, 0, 0, 1 << 20)?;
            let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
            ensure!(
                values == [&b"before the drain"[..], &b"after the drain"[..]],
                "{topic} on {}: read back {values:?}",
                c.addr()
            );
        }
        Ok(self.conns.len())
    }
}
