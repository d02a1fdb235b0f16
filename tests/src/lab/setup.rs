//! The lab's first and last phases: a fresh lab directory, the namespaces, the brokers, the
//! NAT VMs and the load balancer; then the teardown, checked to leave nothing behind.

use super::{
    brokers::{self, Tansu},
    check_interrupt,
    lb::LoadBalancer,
    natvm::{self, NatVm},
    net::{self, LabNet, NAT_VMS},
    Lab, Story,
};
use anyhow::{ensure, Context, Result};
use std::{path::Path, time::Duration};

/// Checks that tansu is there, removes what a killed run left, and makes a fresh lab
/// directory; the returned `Lab` tears down whatever the next phases start.
pub(super) fn open_lab(story: &mut Story) -> Result<Lab> {
    brokers::tansu_bin()?;
    for gone in sweep_stale(&story.opts.prefix)? {
        story.say(format!("removed {gone}, left by a lab run that was killed"));
    }
    let dir = std::env::temp_dir().join(format!("{}-{}", story.opts.prefix, std::process::id()));
    // Fresh: a store left by an earlier run with this pid would break the order checks.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(Lab { lb: None, vms: Vec::new(), brokers: Vec::new(), net: None, dir })
}

pub(super) fn build_network(lab: &mut Lab, story: &mut Story) -> Result<()> {
    story.say(format!(
        "topology: client, Private Link + load balancer, {} NAT VMs, {} on-prem brokers",
        NAT_VMS.len(),
        story.opts.brokers
    ));
    // Owned by `lab` at once, so any failure from here on tears down in order.
    lab.net = Some(LabNet::build(&story.opts.prefix, story.opts.brokers)?);
    Ok(())
}

/// One tansu per broker, in the on-prem namespace.
pub(super) fn start_brokers(lab: &mut Lab, story: &mut Story) -> Result<()> {
    let net = lab.net.as_ref().expect("the lab network is built before the brokers");
    for b in &net.brokers {
        check_interrupt()?;
        lab.brokers.push(Tansu::start(&net.onprem, b, &lab.dir)?);
        story.say(format!(
            "broker{}: tansu on {}:9092, advertised as {}:9092",
            b.id, b.onprem, b.fqdn
        ));
    }
    story.summary.brokers = net.brokers.len();
    Ok(())
}

/// `forwarder` on every NAT VM from one shared config, each in the mode `auto` must choose.
pub(super) fn start_vms(lab: &mut Lab, story: &mut Story) -> Result<()> {
    let net = lab.net.as_ref().expect("the lab network is built before the NAT VMs");
    let config = lab.dir.join("forwarder.toml");
    std::fs::write(&config, natvm::shared_config(&net.brokers))?;
    for ((name, addr), ns) in NAT_VMS.iter().zip(&net.natvms) {
        check_interrupt()?;
        let vm = NatVm::start(name, ns, &config)?;
        let status = vm.cli_json(&["status"])?;
        let mode = status["interfaces"][0]["mode"].as_str().unwrap_or("?").to_string();
        // auto: native XDP on the plain NIC; over the VF that merges segments, TC (generic
        // XDP would send wrong checksums there, and the bridge has no native XDP).
        let want = if *name == net::ACCELERATED_VM { "tc" } else { "xdp" };
        ensure!(mode == want, "{name}: auto chose {mode}, expected {want}: {status}");
        story.say(format!(
            "{name} ({addr}): forwarder running (pid {}, mode {mode}), config {}",
            vm.pid(),
            config.display()
        ));
        lab.vms.push(vm);
    }
    Ok(())
}

/// Starts the load balancer and waits until its health probe admits both NAT VMs.
pub(super) fn probe_admits_both(lab: &mut Lab, story: &mut Story) -> Result<()> {
    let net = lab.net.as_ref().expect("the lab network is built before the load balancer");
    let lb = lab.lb.insert(LoadBalancer::start(&net.azure, &net.brokers)?);
    lb.wait_pool(&[true, true], Duration::from_secs(15))?;
    story.say("load balancer: probe on :8080 from 168.63.129.16 admits natvm-a and natvm-b".into());
    Ok(())
}

/// Tears down in order and checks that no daemon, broker, namespace, hosts file or lab file
/// is left.
pub(super) fn teardown_leaves_nothing(mut lab: Lab, story: &mut Story) -> Result<()> {
    let names = lab.net().names();
    let mut pids: Vec<u32> = lab.vms.iter().map(NatVm::pid).collect();
    pids.extend(lab.brokers.iter().map(Tansu::pid));
    let dir = lab.dir.clone();
    lab.lb.take();
    for vm in lab.vms.drain(..) {
        vm.unload()?;
    }
    drop(lab);
    let left = net::namespaces_with_prefix(&story.opts.prefix)?;
    let ours: Vec<&String> = left.iter().filter(|n| names.contains(n)).collect();
    ensure!(ours.is_empty(), "namespaces left after teardown: {ours:?}");
    let etc: Vec<&String> =
        names.iter().filter(|n| Path::new("/etc/netns").join(n).exists()).collect();
    ensure!(etc.is_empty(), "/etc/netns entries left after teardown: {etc:?}");
    ensure!(!dir.exists(), "{} left after teardown", dir.display());
    for pid in pids {
        // Every child was reaped by its owner's drop, so a live /proc entry would be a
        // process that outlived its handle.
        ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} (a daemon or broker) still running after teardown"
        );
    }
    story.say(
        "teardown: daemons unloaded, brokers stopped, namespaces, hosts files and lab files removed"
            .into(),
    );
    Ok(())
}

/// Removes what a killed lab run left: namespaces `<prefix>-<role>-<pid>-<n>` (with their
/// /etc/netns entries) and `/tmp/<prefix>-<pid>` whose pid is no longer running. Its
/// brokers and daemons died with it (they get a parent-death signal).
fn sweep_stale(prefix: &str) -> Result<Vec<String>> {
    let dead = |pid: &str| !Path::new("/proc").join(pid).exists();
    let mut removed = Vec::new();
    for name in net::namespaces_with_prefix(prefix)? {
        let parts: Vec<&str> = name.rsplitn(3, '-').collect();
        if let [_, pid, _] = parts[..] {
            if pid.chars().all(|c| c.is_ascii_digit()) && dead(pid) {
                crate::netns::run("ip", &["netns", "del", &name])?;
                let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&name));
                removed.push(format!("namespace {name}"));
            }
        }
    }
    for entry in std::fs::read_dir(std::env::temp_dir())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(&format!("{prefix}-")) {
            if pid.chars().all(|c| c.is_ascii_digit()) && dead(pid) {
                std::fs::remove_dir_all(entry.path())?;
                removed.push(entry.path().display().to_string());
            }
        }
    }
    Ok(removed)
}
