//! `[azure] scheduled_events`: Azure's notice that this VM is about to go (a scale set's
//! scale-in or a Spot eviction: Terminate, Preempt) or to restart elsewhere (Reboot,
//! Redeploy) drains it, so the load balancer sends new connections to the other VMs for
//! the minutes the notice gives (a scale set's terminate notification: 5 to 15; platform
//! maintenance: at least 5). Connections already here keep forwarding until the event
//! starts.
//!
//! The journey of one event, a round every `scheduled_events_interval` (the events from
//! IMDS, `host::imds`, in a blocking thread, every call bounded):
//! 1. an event of those types naming this VM appears: the VM is drained (as `forwarder
//!    drain`, kept across a daemon restart), unless it already was (an operator's drain
//!    stays the operator's);
//! 2. once no established connection is left, the event is approved (IMDS `StartRequests`),
//!    so Azure goes ahead now instead of at its `NotBefore`; never an event that names
//!    another VM too (an availability set's maintenance would then start on the other NAT
//!    VM at the same moment) and never one a drain of ours is not waiting for;
//! 3. the event leaves the list while this daemon still runs (cancelled, or over without
//!    touching this VM): a drain of ours is lifted.
//!
//! Freeze (a pause of seconds) drains nothing. A round that cannot reach IMDS is counted
//! (`forwarder_azure_events_failures_total`) and logged; the drain stays as it was. The
//! settings are read at every round: a reload can turn the watch on or off.

use crate::{
    daemon::live::Shared,
    datapath::flows::Flow,
    host::imds::{Imds, ImdsError, ScheduledEvent},
};
use forwarder_common::TcpState;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio_util::sync::CancellationToken;

/// The event types that end the VM's connections.
pub const DISRUPTIVE: [&str; 4] = ["Terminate", "Preempt", "Reboot", "Redeploy"];
/// How often the settings are looked at while `[azure]` is off.
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// The bound on each call to IMDS.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the metrics show, without the daemon's lock; `None` while the watch is off.
#[derive(Default)]
pub struct View {
    counts: Mutex<Option<Counts>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Disruptive events naming this VM, by type, as the last round saw them.
    pub pending: BTreeMap<String, u64>,
    /// Rounds that could not read the events.
    pub failures: u64,
    /// Events this daemon approved.
    pub approved: u64,
    /// When a round last read the events (Unix time); 0 until one does.
    pub last_success_unix: f64,
}

impl View {
    pub fn counts(&self) -> Option<Counts> {
        self.counts.lock().expect("azure view lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        f(self.counts.lock().expect("azure view lock").get_or_insert_with(Counts::default))
    }

    fn clear(&self) {
        *self.counts.lock().expect("azure view lock") = None;
    }
}

/// What the rounds remember: the event a drain of ours waits for.
#[derive(Debug, Default, Clone, PartialEq)]
struct Memory {
    /// The event, and whether the drain is ours to lift (the VM was not drained before).
    draining_for: Option<(String, bool)>,
    /// The event approved, so it is approved once.
    approved: Option<String>,
}

/// What a round does.
#[derive(Debug, PartialEq)]
enum Action {
    /// Drain for this event (type, id, not before).
    Drain { event: ScheduledEvent },
    /// Approve the event the drain waits for: no connection is left.
    Approve { id: String },
    /// The event left the list: lift our drain (if it is ours).
    Lift { id: String, ours: bool },
}

/// The events of this round that concern this VM, in the list's order.
fn disruptive<'a>(events: &'a [ScheduledEvent], vm: &str) -> Vec<&'a ScheduledEvent> {
    events
        .iter()
        .filter(|e| DISRUPTIVE.contains(&e.event_type.as_str()))
        .filter(|e| e.resources.iter().any(|r| r.eq_ignore_ascii_case(vm)))
        .collect()
}

/// One round's decision: from the events, this VM's name, the memory, and how many
/// established connections the VM still forwards.
fn decide(
    events: &[ScheduledEvent],
    vm: &str,
    memory: &Memory,
    established: usize,
) -> Option<Action> {
    let ours = disruptive(events, vm);
    match &memory.draining_for {
        None => ours.first().map(|e| Action::Drain { event: (*e).clone() }),
        Some((id, lift)) => match ours.iter().find(|e| &e.event_id == id) {
            None => Some(Action::Lift { id: id.clone(), ours: *lift }),
            Some(e) => {
                let alone = e.resources.len() == 1;
                let waiting = e.event_status == "Scheduled";
                let done_before = memory.approved.as_deref() == Some(id.as_str());
                (alone && waiting && !done_before && established == 0)
                    .then(|| Action::Approve { id: id.clone() })
            }
        },
    }
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
    let mut vm: Option<String> = None;
    loop {
        let s = shared.clone();
        let Ok(settings) =
            tokio::task::spawn_blocking(move || s.lock().expect("lock").settings.azure.clone())
                .await
        else {
            return;
        };
        let wait = match settings {
            None => {
                view.clear();
                IDLE_CHECK
            }
            Some(a) => {
                let (s, v, m, name) = (shared.clone(), view.clone(), memory.clone(), vm.clone());
                let round = tokio::task::spawn_blocking(move || round(&s, &v, m, name));
                tokio::select! {
                    done = round => if let Ok((m, name)) = done {
                        memory = m;
                        vm = name;
                    },
                    _ = stop.cancelled() => return,
                }
                a.interval
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One round, in a blocking thread: returns the memory and the VM's name for the next.
fn round(
    shared: &Shared,
    view: &View,
    memory: Memory,
    vm: Option<String>,
) -> (Memory, Option<String>) {
    let imds = Imds::new(CALL_TIMEOUT);
    let failed = |e: ImdsError| {
        view.update(|c| c.failures += 1);
        tracing::warn!("azure events: {}; the drain stays as it is", crate::error::chain(&e));
    };
    let name = match vm {
        Some(n) => n,
        None => match imds.vm_name() {
            Ok(n) => n,
            Err(e) => {
                failed(e);
                return (memory, None);
            }
        },
    };
    let events = match imds.scheduled_events() {
        Ok(d) => d.events,
        Err(e) => {
            failed(e);
            return (memory, Some(name));
        }
    };
    let mut pending = BTreeMap::new();
    for e in disruptive(&events, &name) {
        *pending.entry(e.event_type.clone()).or_insert(0) += 1;
    }
    let now = crate::host::clock::unix_now() as f64;
    view.update(|c| {
        c.pending = pending;
        c.last_success_unix = now;
    });
    let flows = shared.tables.scan().map(|s| established(&s.flows));
    let established = match flows {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("azure events: reading the flows: {}", crate::error::chain(&e));
            usize::MAX
        }
    };
    let mut memory = memory;
    match decide(&events, &name, &memory, established) {
        None => {}
        Some(Action::Drain { event }) => {
            let (was, drained) = {
                let mut live = shared.lock().expect("lock");
                (live.state.drained_since.is_some(), live.drain(true))
            };
            match drained {
                Ok(_) => {
                    tracing::warn!(
                        vm = name,
                        event = event.event_id,
                        kind = event.event_type,
                        not_before = event.not_before,
                        "azure events: {} of this VM scheduled: drained (the load balancer \
                         sends new connections elsewhere; these keep forwarding)",
                        event.event_type
                    );
                    memory.draining_for = Some((event.event_id, !was));
                }
                Err(e) => tracing::error!("azure events: draining: {}", e.message),
            }
        }
        Some(Action::Approve { id }) => match imds.start(&id) {
            Ok(()) => {
                view.update(|c| c.approved += 1);
                tracing::info!(vm = name, event = id, "azure events: no connection left; approved");
                memory.approved = Some(id);
            }
            Err(e) => failed(e),
        },
        Some(Action::Lift { id, ours }) => {
            if ours {
                match shared.lock().expect("lock").drain(false) {
                    Ok(_) => tracing::info!(
                        vm = name,
                        event = id,
                        "azure events: the event is gone and this VM still runs: undrained"
                    ),
                    Err(e) => tracing::error!("azure events: undraining: {}", e.message),
                }
            } else {
                tracing::info!(
                    vm = name,
                    event = id,
                    "azure events: the event is gone; the drain was not ours, it stays"
                );
            }
            memory = Memory::default();
        }
    }
    (memory, Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: &str, vms: &[&str]) -> ScheduledEvent {
        ScheduledEvent {
            event_id: id.into(),
            event_type: kind.into(),
            resources: vms.iter().map(|v| v.to_string()).collect(),
            event_status: "Scheduled".into(),
            not_before: "Mon, 07 Dec 2026 10:00:00 GMT".into(),
        }
    }

    const VM: &str = "nat_1";

    #[test]
    fn only_a_disruptive_event_naming_this_vm_drains_it() {
        let none = Memory::default();
        assert_eq!(decide(&[event("a", "Terminate", &["nat_2"])], VM, &none, 3), None);
        assert_eq!(decide(&[event("b", "Freeze", &[VM])], VM, &none, 3), None);
        for kind in DISRUPTIVE {
            let e = event("c", kind, &["NAT_1"]);
            assert_eq!(
                decide(std::slice::from_ref(&e), VM, &none, 3),
                Some(Action::Drain { event: e.clone() }),
                "{kind}"
            );
        }
    }

    #[test]
    fn the_event_is_approved_once_no_connection_is_left_and_only_if_it_is_ours_alone() {
        let draining = Memory { draining_for: Some(("t".into(), true)), approved: None };
        let mine = [event("t", "Terminate", &[VM])];
        assert_eq!(decide(&mine, VM, &draining, 2), None, "connections are left");
        assert_eq!(decide(&mine, VM, &draining, 0), Some(Action::Approve { id: "t".into() }));
        let approved = Memory { approved: Some("t".into()), ..draining.clone() };
        assert_eq!(decide(&mine, VM, &approved, 0), None, "approved once");
        let shared = [event("t", "Reboot", &[VM, "nat_2"])];
        assert_eq!(decide(&shared, VM, &draining, 0), None, "the other VM's too");
        let started = [ScheduledEvent { event_status: "Started".into(), ..mine[0].clone() }];
        assert_eq!(decide(&started, VM, &draining, 0), None, "already started");
    }

    #[test]
    fn an_event_that_leaves_the_list_lifts_a_drain_of_ours_only() {
        let ours = Memory { draining_for: Some(("t".into(), true)), approved: None };
        assert_eq!(decide(&[], VM, &ours, 5), Some(Action::Lift { id: "t".into(), ours: true }));
        let operators = Memory { draining_for: Some(("t".into(), false)), approved: None };
        let other = [event("u", "Terminate", &["nat_2"])];
        assert_eq!(
            decide(&other, VM, &operators, 5),
            Some(Action::Lift { id: "t".into(), ours: false })
        );
    }
}
