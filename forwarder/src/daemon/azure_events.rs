//! `[azure] scheduled_events`: Azure's notice that this VM is about to go (a scale set's
//! scale-in or a Spot eviction: Terminate, Preempt) or to restart elsewhere (Reboot,
//! Redeploy) drains it, so the load balancer sends new connections to the other VMs for
//! the minutes before the event (a scale set's terminate notification: 5 to 15).
//! Connections already here keep forwarding until the event starts.
//!
//! The journey of the events, a round every `scheduled_events_interval` (IMDS read by
//! `host::imds` in a blocking thread, every call bounded):
//! 1. an event of those types naming this VM is due (its `NotBefore` at most
//!    [`DRAIN_AHEAD`] away, or started): the VM is drained for it, unless it already is
//!    drained (an operator's drain stays the operator's). Who drained is kept in the state
//!    file (`drained_for_event`), so a restarted daemon knows it too. Maintenance announced
//!    days ahead does not hold the VM out of the pool for days;
//! 2. while the VM is drained and no established connection is left, each due event that
//!    names this VM alone and waits (Scheduled) is approved (IMDS `StartRequests`), so
//!    Azure goes ahead now instead of at its `NotBefore`; never one that names another VM
//!    too (an availability set's maintenance would then start on the other NAT VM at the
//!    same moment);
//! 3. once no such event names this VM any more while the daemon still runs (cancelled,
//!    or over without touching it), a drain made for an event is lifted; so is it when a
//!    reload turns `[azure]` off.
//!
//! Freeze (a pause of seconds) drains nothing. A failed call to IMDS is counted
//! (`forwarder_azure_events_failures_total`) and logged; the drain stays as it was. The
//! first call may take IMDS up to two minutes (it turns the service on for the VM), so
//! until one succeeds the calls wait [`FIRST_CALL_TIMEOUT`]. The settings are read at
//! every round.

use crate::{
    daemon::{live::Shared, state::Drain},
    datapath::flows::Flow,
    host::imds::{Imds, ImdsError, ScheduledEvent},
};
use forwarder_common::TcpState;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio_util::sync::CancellationToken;

/// The event types that end the VM's connections.
pub const DISRUPTIVE: [&str; 4] = ["Terminate", "Preempt", "Reboot", "Redeploy"];
/// How long before an event's `NotBefore` the VM is drained: the longest notice a scale
/// set's terminate notification gives.
pub const DRAIN_AHEAD: Duration = Duration::from_secs(15 * 60);
/// How often the settings are looked at while `[azure]` is off.
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// The bound on each call to IMDS once one has succeeded.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound before then: IMDS turns the scheduled events on at the first call, which may
/// take it two minutes to answer.
const FIRST_CALL_TIMEOUT: Duration = Duration::from_secs(130);

/// What the metrics show, without the daemon's lock; `None` while the watch is off.
pub type View = crate::daemon::watch_view::WatchView<Counts>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Disruptive events naming this VM, by type, as the last round saw them.
    pub pending: BTreeMap<String, u64>,
    /// Calls to IMDS that failed (reading the events, approving one).
    pub failures: u64,
    /// Events this daemon approved.
    pub approved: u64,
    /// When a round last read the events (Unix time); 0 until one does.
    pub last_success_unix: f64,
}

/// What the rounds remember between them.
#[derive(Debug, Default, Clone)]
struct Memory {
    /// This VM's name, once IMDS said it.
    vm: Option<String>,
    /// Whether a call to IMDS has succeeded (the first may be slow).
    answered: bool,
    /// Events approved, so that each is approved once.
    approved: BTreeSet<String>,
}

/// What a round does about the drain.
#[derive(Debug, PartialEq)]
enum Action {
    /// Drain for this due event.
    Drain(ScheduledEvent),
    /// No disruptive event names this VM any more: lift the drain made for `id`.
    Lift(String),
}

/// The disruptive events naming this VM, in the list's order.
fn naming<'a>(events: &'a [ScheduledEvent], vm: &str) -> Vec<&'a ScheduledEvent> {
    events
        .iter()
        .filter(|e| DISRUPTIVE.contains(&e.event_type.as_str()))
        .filter(|e| e.resources.iter().any(|r| r.eq_ignore_ascii_case(vm)))
        .collect()
}

/// Whether `e` starts within [`DRAIN_AHEAD`] of `now` (or has started, or says no time).
fn due(e: &ScheduledEvent, now: SystemTime) -> bool {
    if e.event_status != "Scheduled" || e.not_before.is_empty() {
        return true;
    }
    match httpdate::parse_http_date(&e.not_before) {
        Ok(at) => at.duration_since(now).map_or(true, |left| left <= DRAIN_AHEAD),
        // A time we cannot read: drain rather than miss the event.
        Err(_) => true,
    }
}

/// The round's drain decision.
fn decide(events: &[ScheduledEvent], vm: &str, now: SystemTime, drained: &Drain) -> Option<Action> {
    let ours = naming(events, vm);
    match drained {
        Drain::Off => ours.into_iter().find(|e| due(e, now)).map(|e| Action::Drain(e.clone())),
        Drain::Event(id) if ours.is_empty() => Some(Action::Lift(id.clone())),
        Drain::Event(_) | Drain::Operator => None,
    }
}

/// The events to approve once no established connection is left: due, naming this VM
/// alone, waiting, not approved before. Only while the VM is drained.
fn approvable(
    events: &[ScheduledEvent],
    vm: &str,
    now: SystemTime,
    drained: &Drain,
    approved: &BTreeSet<String>,
) -> Vec<String> {
    if *drained == Drain::Off {
        return Vec::new();
    }
    naming(events, vm)
        .into_iter()
        .filter(|e| due(e, now) && e.resources.len() == 1 && e.event_status == "Scheduled")
        .filter(|e| !approved.contains(&e.event_id))
        .map(|e| e.event_id.clone())
        .collect()
}

/// Established connections among `flows`: those a drain waits for.
fn established(flows: &[Flow]) -> usize {
    flows
        .iter()
        .filter(|f| f.established_table && f.entry.state == TcpState::Established as u8)
        .count()
}

/// Runs rounds until `stop` fires.
pub async fn run(shared: Shared, view: Arc<View>, stop: CancellationToken) {
    let mut memory = Memory::default();
    loop {
        let s = shared.clone();
        let Ok(settings) =
            tokio::task::spawn_blocking(move || s.lock().expect("lock").settings.azure.clone())
                .await
        else {
            return;
        };
        let (s, v, m) = (shared.clone(), view.clone(), memory.clone());
        let (wait, work) = match settings {
            None => {
                view.clear();
                (IDLE_CHECK, tokio::task::spawn_blocking(move || off(&s, m)))
            }
            Some(a) => (a.interval, tokio::task::spawn_blocking(move || round(&s, &v, m))),
        };
        tokio::select! {
            done = work => if let Ok(m) = done { memory = m },
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// `[azure]` is off (a reload removed it): a drain made for an event would never be
/// lifted, so it is lifted now.
fn off(shared: &Shared, memory: Memory) -> Memory {
    match shared.lock().expect("lock").lift_event_drain() {
        Ok(Some(id)) => tracing::info!(
            event = id,
            "azure events: [azure] scheduled_events is off; the drain made for the event is lifted"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!("azure events: undraining: {}", e.message),
    }
    memory
}

/// One round, in a blocking thread.
fn round(shared: &Shared, view: &View, mut memory: Memory) -> Memory {
    let timeout = if memory.answered { CALL_TIMEOUT } else { FIRST_CALL_TIMEOUT };
    let imds = Imds::new(timeout);
    let failed = |e: ImdsError| {
        view.update(|c| c.failures += 1);
        tracing::warn!("azure events: {}; the drain stays as it is", crate::error::chain(&e));
    };
    let vm = match memory.vm.clone().map_or_else(|| imds.vm_name(), Ok) {
        Ok(n) => n,
        Err(e) => {
            failed(e);
            return memory;
        }
    };
    memory.vm = Some(vm.clone());
    let events = match imds.scheduled_events() {
        Ok(d) => d.events,
        Err(e) => {
            failed(e);
            return memory;
        }
    };
    memory.answered = true;
    let mut pending = BTreeMap::new();
    for e in naming(&events, &vm) {
        *pending.entry(e.event_type.clone()).or_insert(0) += 1;
    }
    let now = SystemTime::now();
    let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    view.update(|c| {
        c.pending = pending;
        c.last_success_unix = unix;
    });

    let drain = shared.lock().expect("lock").state.drain();
    match decide(&events, &vm, now, &drain) {
        None => {}
        Some(Action::Drain(event)) => {
            match shared.lock().expect("lock").drain_for_event(&event.event_id) {
                // Drained meanwhile by an operator: the drain stays theirs.
                Ok(false) => {}
                Ok(true) => tracing::warn!(
                    vm,
                    event = event.event_id,
                    kind = event.event_type,
                    not_before = event.not_before,
                    "azure events: {} of this VM due: drained (the load balancer sends new \
                 connections elsewhere; these keep forwarding)",
                    event.event_type
                ),
                Err(e) => tracing::error!("azure events: draining: {}", e.message),
            }
        }
        Some(Action::Lift(id)) => match shared.lock().expect("lock").lift_event_drain() {
            Ok(None) => {}
            Ok(Some(_)) => tracing::info!(
                vm,
                event = id,
                "azure events: no event names this VM any more and it still runs: undrained"
            ),
            Err(e) => tracing::error!("azure events: undraining: {}", e.message),
        },
    }

    // The connections are counted only when an approval hangs on them: a walk of the
    // tables each round would cost a busy VM for nothing.
    let drain = shared.lock().expect("lock").state.drain();
    let candidates = approvable(&events, &vm, now, &drain, &memory.approved);
    if candidates.is_empty() {
        return memory;
    }
    match shared.tables.scan() {
        Ok(scan) if established(&scan.flows) == 0 => {
            for id in candidates {
                match imds.start(&id) {
                    Ok(()) => {
                        view.update(|c| c.approved += 1);
                        tracing::info!(
                            vm,
                            event = id,
                            "azure events: no connection left; approved"
                        );
                        memory.approved.insert(id);
                    }
                    Err(e) => failed(e),
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("azure events: reading the flows: {}", crate::error::chain(&e)),
    }
    memory
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "nat_1";

    fn now() -> SystemTime {
        httpdate::parse_http_date("Mon, 07 Dec 2026 10:00:00 GMT").unwrap()
    }

    /// An event `minutes` from [`now`].
    fn event(id: &str, kind: &str, vms: &[&str], minutes: u64) -> ScheduledEvent {
        ScheduledEvent {
            event_id: id.into(),
            event_type: kind.into(),
            resources: vms.iter().map(|v| v.to_string()).collect(),
            event_status: "Scheduled".into(),
            not_before: httpdate::fmt_http_date(now() + Duration::from_secs(minutes * 60)),
        }
    }

    #[test]
    fn only_a_due_disruptive_event_naming_this_vm_drains_it() {
        let no = Drain::Off;
        assert_eq!(decide(&[event("a", "Terminate", &["nat_2"], 10)], VM, now(), &no), None);
        assert_eq!(decide(&[event("b", "Freeze", &[VM], 10)], VM, now(), &no), None);
        let far = event("c", "Reboot", &[VM], 3 * 24 * 60);
        assert_eq!(decide(std::slice::from_ref(&far), VM, now(), &no), None, "days ahead");
        let started = ScheduledEvent { event_status: "Started".into(), ..far };
        assert_eq!(
            decide(std::slice::from_ref(&started), VM, now(), &no),
            Some(Action::Drain(started.clone()))
        );
        for kind in DISRUPTIVE {
            let e = event("d", kind, &["NAT_1"], 10);
            let got = decide(std::slice::from_ref(&e), VM, now(), &no);
            assert_eq!(got, Some(Action::Drain(e.clone())), "{kind}");
        }
    }

    #[test]
    fn a_drain_for_an_event_is_lifted_once_no_event_names_the_vm_and_never_an_operators() {
        let ours = Drain::Event("t".into());
        assert_eq!(decide(&[], VM, now(), &ours), Some(Action::Lift("t".into())));
        // The event it was made for left, another still names the VM: it stays.
        let other = [event("u", "Reboot", &[VM, "nat_2"], 60)];
        assert_eq!(decide(&other, VM, now(), &ours), None);
        assert_eq!(decide(&[], VM, now(), &Drain::Operator), None);
    }

    #[test]
    fn due_events_of_this_vm_alone_are_approved_once_while_it_is_drained() {
        let none = BTreeSet::new();
        let events = [
            event("t", "Terminate", &[VM], 10),
            event("both", "Reboot", &[VM, "nat_2"], 10),
            event("later", "Redeploy", &[VM], 60),
            event("other", "Terminate", &["nat_2"], 10),
        ];
        let ours = Drain::Event("t".into());
        assert_eq!(approvable(&events, VM, now(), &ours, &none), ["t"]);
        assert_eq!(approvable(&events, VM, now(), &Drain::Operator, &none), ["t"]);
        assert!(approvable(&events, VM, now(), &Drain::Off, &none).is_empty(), "not drained");
        let done: BTreeSet<String> = ["t".to_string()].into();
        assert!(approvable(&events, VM, now(), &ours, &done).is_empty(), "approved once");
        let started = [ScheduledEvent { event_status: "Started".into(), ..events[0].clone() }];
        assert!(approvable(&started, VM, now(), &ours, &none).is_empty(), "already started");
    }
}
