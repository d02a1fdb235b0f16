//! The phases that send Kafka traffic through the path and check what came back: the
//! kafka-python round trips, the Rust client, the stats it left, the throughput, and the
//! receivers' checksum counters.

use super::{check_interrupt, clients, Lab, Story, Throughput};
use crate::{bench::median, netns::Netns};
use anyhow::{ensure, Context, Result};

/// kafka-python, the independent client: every broker, produce + consume in order.
pub(super) fn python_roundtrips(lab: &Lab, story: &mut Story) -> Result<()> {
    let opts = story.opts;
    let mut python_ok = 0;
    for b in &lab.net().brokers {
        check_interrupt()?;
        let r = clients::python(
            &lab.net().client,
            "roundtrip",
            b,
            "lab-orders",
            opts.messages,
            opts.message_size,
            opts.partitions,
        )?;
        let advertised = vec![format!("{}:9092", b.fqdn)];
        ensure!(
            r.brokers == advertised,
            "broker{} advertised {:?}, not {advertised:?}",
            b.id,
            r.brokers
        );
        ensure!(
            r.produced == opts.messages as u64 && r.consumed == Some(opts.messages as u64),
            "broker{}: produced {} and consumed {:?} of {}",
            b.id,
            r.produced,
            r.consumed,
            opts.messages
        );
        ensure!(r.in_order == Some(true), "broker{}: messages out of order", b.id);
        story.summary.python_messages += r.produced;
        python_ok += 1;
        story.say(format!(
            "kafka-python via {}:9092: {} messages produced and consumed in order over {} partitions",
            b.fqdn, r.produced, opts.partitions
        ));
    }
    // Lowered by `rust_client_check` to the brokers both clients reached.
    story.summary.brokers_reached = python_ok;
    Ok(())
}

/// The project's own client: metadata through the path, then each advertised broker.
pub(super) fn rust_client_check(lab: &Lab, story: &mut Story) -> Result<()> {
    check_interrupt()?;
    let brokers = &lab.net().brokers;
    let rust_messages = 100.min(story.opts.messages);
    let check = clients::rust_check(&lab.net().client, brokers, "lab-rust", rust_messages)?;
    // Each via is one broker's cluster; its metadata must list that broker by its FQDN, and
    // the client must have reached it through its private endpoint and moved the messages.
    let mut rust_reached = 0;
    for (b, via) in brokers.iter().zip(check["vias"].as_array().context("kafka check: vias")?) {
        let listed = via["brokers"].as_array().context("kafka check: brokers")?;
        ensure!(listed.len() == 1, "broker{}: metadata lists {} brokers", b.id, listed.len());
        let r = &listed[0];
        ensure!(
            r["advertised"] == format!("{}:9092", b.fqdn).as_str()
                && r["connected"] == format!("{}:9092", b.private_endpoint).as_str()
                && r["reachable"] == true,
            "broker{} through the Rust client: {r}",
            b.id
        );
        let produced = r["produce"]["produced"].as_u64().unwrap_or(0);
        let consumed = r["produce"]["consumed"].as_u64().unwrap_or(0);
        ensure!(
            produced == rust_messages as u64 && consumed == produced,
            "broker{}: the Rust client produced {produced} and read back {consumed} of {rust_messages}",
            b.id
        );
        story.summary.rust_messages += consumed;
        rust_reached += 1;
        story.say(format!(
            "forwarder kafka check via {}:9092: reached {} in {:.1} ms, {consumed} messages produced and read back",
            b.fqdn,
            r["connected"].as_str().unwrap_or("?"),
            r["latency_ms"].as_f64().unwrap_or(0.0)
        ));
    }
    story.summary.brokers_reached = story.summary.brokers_reached.min(rust_reached);
    Ok(())
}

/// Stats, per rule and per VM, as `forwarder stats` counts them.
pub(super) fn stats_per_vm(lab: &Lab, story: &mut Story) -> Result<()> {
    story.say("forwarder stats per NAT VM:".into());
    for vm in &lab.vms {
        let rows = vm.cli_json(&["stats"])?;
        story.say(format!("  {}:", vm.name));
        for r in rows.as_array().context("stats --json is an array")? {
            let c = |k: &str| r["counters"][k].as_u64().unwrap_or(0);
            story.say(format!(
                "    {:<10} conns {:>4}  packets {:>7}  bytes {:>10}  reply bytes {:>10}  active {:>3}",
                r["name"].as_str().unwrap_or("?"),
                c("new_conns"),
                c("packets"),
                c("bytes"),
                c("reply_bytes"),
                r["active_flows"].as_u64().unwrap_or(0)
            ));
        }
    }
    Ok(())
}

/// Produce throughput: the same client and broker, through the forwarder and direct, in
/// turns, with kafka-python (the independent client) and the Rust client (faster, so more
/// of the path's own cost shows).
pub(super) fn throughput(lab: &Lab, story: &mut Story) -> Result<()> {
    let opts = story.opts;
    let net = lab.net();
    let mut py = [Vec::new(), Vec::new()];
    let mut rs = [Vec::new(), Vec::new()];
    let b = &net.brokers[0];
    for round in 0..opts.bench_rounds {
        for (i, (ns, path)) in
            [(&net.direct, "direct"), (&net.client, "forwarded")].into_iter().enumerate()
        {
            check_interrupt()?;
            let topic = format!("lab-bench-py-{path}-{round}");
            py[i].push(
                clients::python(ns, "produce", b, &topic, opts.bench_messages, 1000, 1)?.mb_per_s,
            );
            let topic = format!("lab-bench-rs-{path}-{round}");
            rs[i].push(clients::rust_produce_mb_s(ns, b, &topic, opts.bench_messages)?);
        }
    }
    let [mut py_direct, mut py_forwarded] = py;
    let [mut rs_direct, mut rs_forwarded] = rs;
    story.summary.throughput = Throughput {
        direct_mb_s: median(&mut py_direct),
        forwarded_mb_s: median(&mut py_forwarded),
    };
    story.summary.rust_throughput = Throughput {
        direct_mb_s: median(&mut rs_direct),
        forwarded_mb_s: median(&mut rs_forwarded),
    };
    let measured = [
        ("kafka-python", story.summary.throughput.clone()),
        ("Rust client", story.summary.rust_throughput.clone()),
    ];
    for (client, t) in measured {
        story.say(format!(
            "produce throughput, {client}, {} x 1000 B, median of {}: direct {:.2} MB/s, through the forwarder {:.2} MB/s ({:.0} %)",
            opts.bench_messages,
            opts.bench_rounds,
            t.direct_mb_s,
            t.forwarded_mb_s,
            t.ratio() * 100.0
        ));
    }
    Ok(())
}

/// Every receiver's stack verified every TCP checksum (each veth computes them in
/// software): none may have found one wrong.
pub(super) fn checksums_clean(lab: &Lab, story: &mut Story) -> Result<()> {
    let net = lab.net();
    let mut receivers: Vec<&Netns> = vec![&net.client, &net.direct, &net.azure, &net.onprem];
    receivers.extend(&net.natvms);
    for ns in receivers {
        let errors = ns.tcp_in_csum_errors()?;
        ensure!(errors == 0, "{}: {errors} TCP segments arrived with a wrong checksum", ns.name());
    }
    story.say("0 TCP checksum errors at every receiver (Spark, VNet, NAT VMs, on-prem)".into());
    Ok(())
}
