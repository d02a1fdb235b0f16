//! `forwarder run`: load (or take over) the pinned data path, fill the maps, serve the
//! control socket, the health probe and metrics, expire flows, re-resolve targets.
//!
//! Exiting on SIGTERM / SIGINT leaves the data path running in the kernel, pinned, so a
//! restart or an upgrade drops no connection; `forwarder unload` removes it.

// The daemon's tasks and the state they share (`live`); `control` is the protocol the CLI
// speaks to it and its server here, `unload` the way out (also without a daemon).
pub mod accept;
pub mod attach_watch;
pub mod azure_events;
pub mod change;
pub mod control;
pub mod dns_refresh;
pub mod drop_watch;
pub mod flow_expiry;
pub mod health;
pub mod kafka_watch;
pub mod live;
pub mod metrics;
pub mod nexthop_watch;
pub mod state;
pub mod ticker;
pub mod unload;
pub mod watch_view;

use self::{
    live::{Common, HealthView, Live, Shared},
    state::State,
};
use crate::{
    config::Settings,
    datapath::{handles::Conntrack, pins::Pins, Datapath, Downgrade},
    error::{Step, StepError},
    host::{capabilities, sysctl},
    plan::{Plan, Resolutions},
};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::Notify,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

const GC_INTERVAL: Duration = Duration::from_secs(10);
/// How often each interface's attachment is checked (someone else may detach it).
const ATTACH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a stopping daemon waits for one of its tasks to finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub struct RunOptions {
    pub allow_unresolved: bool,
    /// Start on a newer build's pinned maps by removing them (`run --force-downgrade`).
    pub force_downgrade: bool,
}

/// Runs the daemon until `shutdown` completes (then the data path stays, pinned) or an
/// unload request (then it goes). `main` passes [`termination`]; SIGHUP, a reload, is the
/// daemon's own.
pub async fn run(
    settings: Settings,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StepError> {
    let hup = signal(SignalKind::hangup()).step("handling SIGHUP")?;
    let (started, events) = start(settings, &opts).await?;
    let running = spawn_tasks(&started, events)?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let unload = main_loop(&started.shared, &running.unload_requested, shutdown, hup).await?;
    stop(started, running, unload).await
}

/// The data path forwarding with the configured rules, and the state the tasks share: what
/// `start` leaves for the other phases.
struct Started {
    settings: Settings,
    shared: Shared,
    pins: Pins,
    health_view: Arc<HealthView>,
}

/// What the kernel tells the daemon, opened during the start and followed by tasks: route
/// changes (subscribed before the load) and the program's log lines.
struct KernelEvents {
    nexthop: nexthop_watch::Subscription,
    log: Option<KernelLog>,
}

/// The forwarding of the program's log lines into the daemon's log.
type KernelLog = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The tasks beside the main loop, stopped by one token.
struct Running {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    unload_requested: Arc<Notify>,
}

/// Phase 1, in the order the kernel needs: resolve and validate before touching it; the
/// sysctls (their old values saved for `unload` before an error can stop us); subscribe to
/// route changes before the load, so none is missed; load (or take over, or upgrade) the
/// pinned maps; settle the rule ids against the flows they hold; fill the maps before
/// attaching, so the first packet sees the rules; attach; end an upgrade once the program
/// is in every link.
async fn start(
    settings: Settings,
    opts: &RunOptions,
) -> Result<(Started, KernelEvents), StepError> {
    let state_path = state::path_for(&settings.control_socket);
    control::server::refuse_if_running(&settings.control_socket)?;
    let mut state = State::load(&state_path).plain()?;
    let old_ids = state.rule_ids.clone();
    let mut ids = old_ids.clone();
    // Resolve and validate before touching the kernel; new rules' ids are settled below,
    // once the pinned maps show which ids tracked flows still carry. The lookups, as those
    // of a reload, in a thread of their own: the runtime's threads never wait on DNS.
    let s = settings.clone();
    let resolved = tokio::task::spawn_blocking(move || Resolutions::lookup(&s))
        .await
        .step("resolving the rules' targets")?;
    let mut plan = Plan::build_with_ids(
        &settings,
        opts.allow_unresolved,
        &resolved,
        &mut ids,
        &Default::default(),
    )
    .step_with(|| format!("{}: resolving the configuration", settings.path.display()))?;

    // Kernel settings first; their old values go into the state file for `unload`, also
    // when one fails: those set before it stay set until `unload` puts them back.
    let set = kernel_settings(&settings, &mut state.sysctl_before);
    state.save(&state_path).plain()?;
    // Without a capability this and the loading below fail with a bare EPERM, EACCES or a
    // verifier rejection: `explain` names what is missing.
    set.map_err(capabilities::explain)?;

    // Before the load: a route or neighbour change from here on reaches the watch below.
    let nexthop_events =
        crate::daemon::nexthop_watch::subscribe().step("subscribing to route changes")?;
    let pins = Pins::new(&settings.pin_path);
    let resumed = pins.exist();
    let downgrade = if opts.force_downgrade { Downgrade::Force } else { Downgrade::Refuse };
    let mut dp = Datapath::load_pinned_with(settings.max_flows, &pins, downgrade)
        .step("loading the BPF program")
        .map_err(capabilities::explain)?;
    // A rule removed from the file while no daemon ran may still have flows: its id stays
    // theirs, so their counters do not land on a new rule.
    let tracked = dp.flows().step("reading the tracked flows")?;
    let held = crate::datapath::flows::held_rule_ids(&tracked);
    state.rule_ids = plan.settle_ids(&old_ids, &held);
    state.save(&state_path).plain()?;
    // Maps before attaching, so the first packet already sees the rules.
    dp.apply(&plan).step("filling the BPF maps")?;
    let lowers = dp.set_ingress_masters(&settings.interfaces).plain()?;
    for (lower, iface) in &lowers {
        tracing::info!(iface, lower, "native XDP packets arriving on {lower} go out as {iface}'s");
    }
    if matches!(settings.mode, crate::config::Mode::Auto | crate::config::Mode::Xdp) {
        let devices = settings.interfaces.iter().chain(lowers.iter().map(|(lower, _)| lower));
        lro_off(devices);
    }
    for iface in &settings.interfaces {
        let how = dp.attach(iface, settings.mode).plain().map_err(capabilities::explain)?;
        tracing::info!(iface, mode = how.name(), "program attached");
    }
    // An upgrade from the previous map layout ends once this program is in every link.
    if let Some(r) = dp.finish_migration().step("upgrading the pinned maps")? {
        tracing::info!(
            from = r.from_version,
            to = forwarder_common::LAYOUT_VERSION,
            halves = r.copied,
            caught_up = r.caught_up,
            bulk_ms = r.bulk.as_secs_f64() * 1e3,
            window_ms = r.window.as_secs_f64() * 1e3,
            catch_up_ms = r.catch_up.as_secs_f64() * 1e3,
            "upgraded the pinned maps; every tracked flow was copied"
        );
    }
    // A program that cannot log still forwards: say so and go on.
    let kernel_log = dp
        .kernel_log()
        .inspect_err(|e| {
            tracing::warn!(
                "{}: the data path's events (SNAT ports, table full) are not logged",
                crate::error::chain(&e)
            )
        })
        .ok();
    if resumed {
        let flows = tracked.len();
        tracing::info!(flows, pins = %pins.dir().display(), "resumed the pinned data path");
    }
    log_rules(&plan);

    let health_view = Arc::new(HealthView::default());
    let live = Live {
        settings: settings.clone(),
        plan,
        dp,
        state,
        state_path,
        allow_unresolved: opts.allow_unresolved,
        health: health_view.clone(),
        kafka_watch: Default::default(),
        azure_events: Default::default(),
        attach_faults: Default::default(),
        stopping: false,
    };
    live.update_health();
    let tables = Conntrack::open_pinned(&pins).step("opening the conntrack tables")?;
    let shared: Shared = Common::new(live, tables);
    let kernel_log: Option<KernelLog> = kernel_log.map(|f| Box::pin(f) as KernelLog);
    let events = KernelEvents { nexthop: nexthop_events, log: kernel_log };
    Ok((Started { settings, shared, pins, health_view }, events))
}

/// Phase 2: every task, in one set. Those with something to finish (the health endpoint
/// closing its socket, a sweep counting what it removed, an attachment check under way)
/// watch the token themselves; the others are simply dropped at it.
fn spawn_tasks(started: &Started, events: KernelEvents) -> Result<Running, StepError> {
    let Started { settings, shared, pins, .. } = started;
    let KernelEvents { nexthop: nexthop_events, log: kernel_log } = events;
    let health_view = started.health_view.clone();
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    {
        let pins = pins.clone();
        tasks.spawn(until_stopped(&stop, async move {
            if let Err(e) = nexthop_events.watch(pins).await {
                tracing::error!(
                    "route changes are not followed: {}; cached next hops are still \
                         re-checked every second",
                    crate::error::chain(&e)
                );
            }
        }));
    }
    if let Some(forward) = kernel_log {
        tasks.spawn(until_stopped(&stop, forward));
    }
    let unload_requested = Arc::new(Notify::new());
    let control = control::server::bind(&settings.control_socket)?;
    tasks.spawn(until_stopped(
        &stop,
        control::server::serve(control, shared.clone(), unload_requested.clone()),
    ));
    if let Some(addr) = settings.health {
        tasks.spawn(health::serve(addr, health_view, stop.clone()));
    }
    // Flow expiry and DNS refresh run beside the main loop, never under the lock for long:
    // a big sweep or a silent resolver must not hold up signals, control requests or health.
    {
        let s = shared.clone();
        let config = move || s.lock().expect("lock").plan.config();
        tasks.spawn(flow_expiry::run(pins.clone(), GC_INTERVAL, config, stop.clone()));
    }
    tasks.spawn(dns_refresh::run(settings.dns_refresh, shared.clone(), stop.clone()));
    // Always running: a reload may add [kafka]; without one it only looks at the settings.
    {
        let view = shared.lock().expect("lock").kafka_watch.clone();
        tasks.spawn(kafka_watch::run(shared.clone(), view, stop.clone()));
    }
    // The same for [azure]: a reload may turn the scheduled events on or off.
    {
        let view = shared.lock().expect("lock").azure_events.clone();
        tasks.spawn(azure_events::run(shared.clone(), view, stop.clone()));
    }
    {
        let s = shared.clone();
        let names: drop_watch::RuleNames = Box::new(move || {
            let l = s.lock().expect("lock");
            l.plan.rules.iter().map(|r| (r.rule_id, r.name.clone())).collect()
        });
        tasks.spawn(drop_watch::run(pins.clone(), GC_INTERVAL, names, stop.clone()));
    }
    tasks.spawn(attach_watch::run(ATTACH_CHECK_INTERVAL, shared.clone(), stop.clone()));
    if let Some(addr) = settings.metrics {
        let s = shared.clone();
        tasks.spawn(until_stopped(&stop, metrics::serve(addr, Arc::new(move || snapshot(&s)))));
    }
    {
        let l = shared.lock().expect("lock");
        tracing::info!(snat = %l.plan.snat_addr, ports = ?l.plan.snat_ports, control = %settings.control_socket.display(), "forwarding");
    }
    Ok(Running { tasks, stop, unload_requested })
}

/// Phase 4: every task stopped (the health endpoint closed before an unload detaches),
/// then the unload if one was asked for; otherwise the data path stays in the kernel.
async fn stop(started: Started, running: Running, unload: bool) -> Result<(), StepError> {
    let Started { shared, settings, .. } = started;
    let Running { mut tasks, stop, .. } = running;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // All tasks stop before anything below: the health endpoint must be closed before an
    // unload detaches the program (the load balancer stops sending new flows first), a
    // check under way must not find the pins `unload` removes and re-attach, and a sweep
    // stopped half-way still counts what it removed.
    stop.cancel();
    let all_stopped = tokio::time::timeout(STOP_GRACE, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::warn!("a task ended badly: {e}");
            }
        }
    })
    .await;
    if all_stopped.is_err() {
        tracing::warn!("{} task(s) did not stop within {STOP_GRACE:?}; dropped", tasks.len());
        tasks.abort_all();
    }
    let _ = std::fs::remove_file(&settings.control_socket);
    // Tasks still hold the shared state; everything below works under its lock. Without
    // an unload the file descriptors close when the process exits, which detaches nothing:
    // the pinned links hold the program.
    let mut live = shared.lock().expect("lock");
    // A reload or rule change still looking names up commits nothing from here on.
    live.stopping = true;
    log_final_counters(&live);
    let settings = live.settings.clone();
    if unload {
        for line in unload::offline(&crate::config::Locations::of(&settings))? {
            tracing::info!("{line}");
        }
        // The link pins are gone: letting go of our own handles detaches the program now.
        match live.dp.detach() {
            Ok(()) => tracing::info!("program detached"),
            Err(e) => tracing::warn!(
                "detaching: {}; the program goes when the daemon exits",
                crate::error::chain(&e)
            ),
        }
        tracing::info!("unloaded");
    } else {
        tracing::info!(
            pins = %settings.pin_path.display(),
            "stopped; forwarding continues in the kernel (`forwarder unload` removes it)"
        );
    }
    Ok(())
}

/// `task`, dropped when `stop` is cancelled: for tasks with nothing to finish.
fn until_stopped<F>(stop: &CancellationToken, task: F) -> impl Future<Output = ()> + Send + 'static
where
    F: Future<Output = ()> + Send + 'static,
{
    let stop = stop.clone();
    async move {
        tokio::select! {
            () = task => {}
            () = stop.cancelled() => {}
        }
    }
}

/// Native XDP on hv_netvsc needs LRO off, and nothing keeps it off across a reboot: each
/// start turns it off on `devices` (the interfaces and the devices under them, the VF, as
/// `set_ingress_masters` found them), before the attach. In-process rather than a udev rule or a `.link` file: it follows the config's
/// interface names, runs at every start (boot, restart, upgrade), needs neither udev nor
/// networkd, and says in the log what it did. A failure only costs native XDP: `auto`
/// falls back, and `doctor` says LRO is why.
fn lro_off<'a>(devices: impl Iterator<Item = &'a String>) {
    for dev in devices {
        match crate::host::nic::turn_lro_off(dev) {
            Ok(true) => tracing::info!(dev, "LRO turned off (native XDP needs it off)"),
            Ok(false) => {}
            Err(e) => tracing::warn!(dev, "could not turn LRO off: {e}"),
        }
    }
}

/// The sysctls forwarding needs; the values they had go into `before`.
fn kernel_settings(settings: &Settings, before: &mut sysctl::Before) -> Result<(), StepError> {
    sysctl::reserve_ports(&settings.snat_ports, before)
        .step("reserving snat_ports in net.ipv4.ip_local_reserved_ports")?;
    for iface in &settings.interfaces {
        sysctl::slow_path(iface, before)
            .step_with(|| format!("setting forwarding/accept_local on {iface}"))?;
    }
    Ok(())
}

/// SIGTERM or SIGINT, the daemon's shutdown. The handlers are installed when this is
/// called (before the daemon starts), not when the main loop first polls it: a SIGTERM
/// that came after the "forwarding" line (a `systemctl stop` right after a start) killed
/// the process by the default action, with no clean stop and a failed unit. One that comes
/// during the start now waits for the loop.
pub fn termination() -> Result<impl Future<Output = ()>, StepError> {
    let mut term = signal(SignalKind::terminate()).step("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).step("handling SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Runs until `shutdown` or an unload request; returns whether to unload. Reloads on
/// SIGHUP (`hup`).
async fn main_loop(
    shared: &Shared,
    unload_requested: &Notify,
    shutdown: impl Future<Output = ()>,
    mut hup: Signal,
) -> Result<bool, StepError> {
    tokio::pin!(shutdown);
    // A reload runs beside the loop, so that its lookups never hold up SIGTERM; a SIGHUP
    // meanwhile starts one more when it ends, which reads the file as it is then.
    let mut reloading = JoinSet::new();
    let mut again = false;
    let reload = |set: &mut JoinSet<_>| {
        let s = shared.clone();
        set.spawn_blocking(move || change::reload(&s));
    };
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(false),
            _ = unload_requested.notified() => return Ok(true),
            _ = hup.recv() => {
                if reloading.is_empty() {
                    reload(&mut reloading);
                } else {
                    again = true;
                }
            }
            Some(done) = reloading.join_next() => {
                match done.step("SIGHUP: the reload task")? {
                    Ok(summary) => tracing::info!("SIGHUP: reloaded: {summary}"),
                    Err(e) => tracing::error!("SIGHUP: reload failed: {e}"),
                }
                if std::mem::take(&mut again) {
                    reload(&mut reloading);
                }
            }
        }
    }
}

fn log_rules(plan: &Plan) {
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
}

fn log_final_counters(live: &Live) {
    for r in &live.plan.rules {
        match live.dp.rule_totals(r.rule_id) {
            Ok(t) => tracing::info!(rule = %r.name, "final counters: {}", t.summary()),
            Err(e) => {
                tracing::warn!(rule = %r.name, "reading counters: {}", crate::error::chain(&e))
            }
        }
    }
}

/// What a metrics scrape shows, from one walk over the conntrack tables (without the lock).
fn snapshot(shared: &Shared) -> metrics::Snapshot {
    let Ok(scan) = shared.tables.scan() else {
        return metrics::Snapshot::default();
    };
    let l = shared.lock().expect("lock");
    let status = l.status_of(&scan.flows);
    let tables = crate::datapath::flows::table_fill(&scan, l.dp.max_flows());
    let probes = l.settings.health.map(|_| metrics::Probes {
        total: l.health.probes.load(std::sync::atomic::Ordering::Relaxed),
        last_unix: l.health.last_probe.lock().expect("probe lock").and_then(|(at, _)| {
            at.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
        }),
    });
    metrics::Snapshot {
        kernel_events: l.dp.kernel_events(),
        rules: l.stats_of(&scan.flows).unwrap_or_default(),
        attached: status.interfaces,
        healthy: status.healthy,
        drained: status.drained,
        tables,
        probes,
        kafka: l.kafka_watch.counts(),
        azure: l.azure_events.counts(),
        config_sha256: Some(crate::config::fingerprint::sha256(&l.settings)),
    }
}
