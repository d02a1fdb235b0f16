//! `[azure] scheduled_events` with a daemon in the NAT VM and a stand-in for Azure's
//! instance metadata service at 169.254.169.254 in the NAT VM's namespace
//! (`forwarder_tests::imds`): a scale-in's Terminate of this VM drains it while its
//! connections keep forwarding, and is approved once they have ended; events of other
//! VMs, a Freeze, and an event that also names the other VM are not acted on beyond
//! what they call for; an event days ahead drains nothing yet; an event that leaves the
//! list lifts the drain, also after a daemon restart, but never an operator's.

use anyhow::Result;
use forwarder_tests::{
    daemon_tests::{
        all_listen, eventually, gauges, health_answers, ok, scrape_metrics, seed_broker, TestBed,
    },
    imds::FakeImds,
    require_root,
    streams::{assert_all_intact, Streams},
    topology::{cli, Daemon},
};
use std::net::{Ipv4Addr, SocketAddrV4};

const VM: &str = "vmss-kafka-nat_1";
const OTHER: &str = "vmss-kafka-nat_2";
const METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 4), 9100);

/// Waits for `rounds` more reads of the events than `imds` has seen so far: the daemon has
/// acted on what they held.
fn rounds(imds: &FakeImds, rounds: usize) -> Result<()> {
    let from = imds.event_reads();
    eventually(15, "the daemon reading the scheduled events", || {
        Ok(imds.event_reads() >= from + rounds)
    })
}

#[test]
fn a_terminate_of_this_vm_drains_it_and_is_approved_once_its_connections_end() -> Result<()> {
    require_root();
    let bed = TestBed::new("az", "xdp-generic")?;
    let topo = &bed.topo;
    let imds = FakeImds::start(&topo.natvm, VM)?;
    let text = bed.seed_config().replace(
        "mss_clamp = 1360\n",
        "mss_clamp = 1360\nhealth = \"0.0.0.0:8080\"\nmetrics = \"10.0.0.4:9100\"\n\
         [azure]\nscheduled_events = true\nscheduled_events_interval = \"1s\"\n",
    );
    // [azure] before the first [[rule]]: the seed's rules follow mss_clamp.
    let (daemon, config) = bed.start(&text)?;
    eventually(5, "the probe answers", || Ok(health_answers(topo)))?;
    let checked = ok(&cli(&topo.natvm, &config, &["check-config"])?, "check-config");
    assert!(checked.contains("azure scheduled events: read every 1s"), "{checked}");

    // Another VM's Terminate, this VM's Freeze, and a Reboot of it two days ahead:
    // nothing to drain for yet.
    imds.set_events_at(&[
        ("e-other", "Terminate", &[OTHER], 5),
        ("e-freeze", "Freeze", &[VM], 5),
        ("e-later", "Reboot", &[VM], 2 * 24 * 60),
    ]);
    rounds(&imds, 3)?;
    assert!(health_answers(topo), "drained for another VM's event, a Freeze or a far Reboot");
    let seen = imds.seen();
    assert!(seen.iter().all(|s| s.method == "GET"), "approved something: {seen:?}");
    assert!(
        seen.iter().any(|s| s.path.starts_with("/metadata/instance/compute/name")),
        "the VM's name was never asked for: {seen:?}"
    );

    // This VM's Terminate while connections run: drained, they keep going, not approved.
    let streams = Streams::start(&topo.client, &all_listen(), 1)?;
    imds.set_events(&[("e-term", "Terminate", &[VM])]);
    eventually(10, "the probe fails once the Terminate is seen", || Ok(!health_answers(topo)))?;
    streams.wait_progress()?;
    rounds(&imds, 3)?;
    assert!(imds.approved().is_empty(), "approved with connections left: {:?}", imds.approved());
    let metrics = scrape_metrics(&topo.natvm, METRICS)?;
    let pending = gauges(&metrics, "forwarder_azure_scheduled_events", "type");
    assert_eq!(pending.get("Terminate"), Some(&1), "{metrics}");
    let status = ok(&cli(&topo.natvm, &config, &["status"])?, "status");
    assert!(
        status.contains("drained:") && status.contains("Azure scheduled event e-term"),
        "{status}"
    );

    // The connections end: the event is approved, once.
    assert_all_intact(&streams.finish(), seed_broker);
    eventually(20, "the Terminate approved once no connection is left", || {
        Ok(imds.approved() == ["e-term"])
    })?;
    rounds(&imds, 2)?;
    assert_eq!(imds.approved(), ["e-term"], "approved more than once");
    let metrics = scrape_metrics(&topo.natvm, METRICS)?;
    assert!(metrics.contains("forwarder_azure_events_approved_total 1\n"), "{metrics}");

    // It leaves the list and the VM still runs (the scale-in was called off): undrained.
    imds.set_events(&[]);
    eventually(10, "the probe answers again", || Ok(health_answers(topo)))?;

    // A Reboot of both NAT VMs: drained, but never approved (it would start on the other
    // VM at the same moment), though no connection is left.
    imds.set_events(&[("e-both", "Reboot", &[VM, OTHER])]);
    eventually(10, "the probe fails for the shared Reboot", || Ok(!health_answers(topo)))?;
    rounds(&imds, 3)?;
    assert_eq!(imds.approved(), ["e-term"], "approved an event of the other VM too");
    imds.set_events(&[]);
    eventually(10, "the probe answers after the Reboot left", || Ok(health_answers(topo)))?;

    // A daemon restarted while drained for an event still lifts that drain when the event
    // goes (who drained is in the state file).
    imds.set_events(&[("e-restart", "Terminate", &[VM])]);
    eventually(10, "the probe fails for e-restart", || Ok(!health_answers(topo)))?;
    daemon.stop()?;
    let daemon = Daemon::spawn(&topo.natvm, &config)?;
    rounds(&imds, 2)?;
    assert!(!health_answers(topo), "the restart lifted the drain while the event was there");
    imds.set_events(&[]);
    eventually(10, "the probe answers once e-restart left", || Ok(health_answers(topo)))?;

    // An operator's drain stays the operator's: an event comes (and, no connection being
    // left, is approved) and goes; the VM stays drained.
    ok(&cli(&topo.natvm, &config, &["drain"])?, "drain");
    imds.set_events(&[("e-again", "Terminate", &[VM])]);
    eventually(10, "e-again seen", || {
        let m = scrape_metrics(&topo.natvm, METRICS)?;
        Ok(gauges(&m, "forwarder_azure_scheduled_events", "type").get("Terminate") == Some(&1))
    })?;
    eventually(10, "e-again approved", || Ok(imds.approved().contains(&"e-again".to_string())))?;
    imds.set_events(&[]);
    rounds(&imds, 3)?;
    assert!(!health_answers(topo), "the event's end lifted the operator's drain");
    ok(&cli(&topo.natvm, &config, &["undrain"])?, "undrain");
    eventually(5, "the probe answers after undrain", || Ok(health_answers(topo)))?;

    drop(imds);
    bed.finish(daemon)
}
