//! `forwarder run`: load, attach, fill the maps, expire flows, and detach cleanly on
//! SIGTERM / SIGINT.

use crate::{config::Settings, datapath::Datapath, gc, plan::Plan, stats, sysctl};
use anyhow::Context;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

const GC_INTERVAL: Duration = Duration::from_secs(10);

pub struct RunOptions {
    pub allow_unresolved: bool,
}

pub async fn run(settings: Settings, opts: RunOptions) -> anyhow::Result<()> {
    let plan = Plan::build(&settings, opts.allow_unresolved)
        .with_context(|| format!("{}: resolving the configuration", settings.path.display()))?;

    // Kernel settings first; each is put back when `_restore` is dropped on exit.
    let mut _restore = Vec::new();
    _restore.extend(
        sysctl::reserve_ports(&settings.snat_ports)
            .context("reserving snat_ports in net.ipv4.ip_local_reserved_ports")?,
    );
    for iface in &settings.interfaces {
        _restore.extend(
            sysctl::slow_path(iface)
                .with_context(|| format!("setting forwarding/accept_local on {iface}"))?,
        );
    }

    let mut dp = Datapath::load(settings.max_flows).context("loading the BPF program")?;
    // Maps before attaching, so the first packet already sees the rules.
    dp.apply(&plan).context("filling the BPF maps")?;
    for iface in &settings.interfaces {
        let how = dp.attach(iface, settings.mode)?;
        tracing::info!(iface, mode = how.name(), "program attached");
    }
    for r in &plan.rules {
        match r.target {
            Some((a, p)) => {
                tracing::info!(rule = %r.name, listen = r.listen, target = %format!("{a}:{p}"), "rule active")
            }
            None => {
                tracing::warn!(rule = %r.name, listen = r.listen, "rule inactive: target unresolved")
            }
        }
    }
    tracing::info!(snat = %plan.snat_addr, ports = ?plan.snat_ports, "forwarding");

    let cfg = plan.config();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(GC_INTERVAL);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                match gc::sweep(dp.ebpf_mut(), &cfg) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(flows = n, "expired flows removed"),
                    Err(e) => tracing::warn!("flow expiry failed: {e:#}"),
                }
            }
        }
    }
    tracing::info!("signal received, detaching");
    for r in &plan.rules {
        match stats::rule_totals(dp.ebpf(), r.rule_id) {
            Ok(t) => tracing::info!(rule = %r.name, "final counters: {}", t.summary()),
            Err(e) => tracing::warn!(rule = %r.name, "reading counters: {e:#}"),
        }
    }
    drop(dp);
    drop(_restore);
    tracing::info!("stopped");
    Ok(())
}
