//! Changes to the running rules (reload, `rule add`, `rule remove`), in two steps so that a
//! slow name server holds up only the change that waits for it, never the daemon's readers
//! (status, health, metrics, flow expiry, the attachment check):
//!
//! 1. [`prepare`], without the daemon's lock: read (or edit) the file, parse it, check it
//!    against this host and look up every hostname target (`plan::Resolutions`); then walk
//!    the conntrack tables for the rule ids tracked flows still carry (`in_turn`).
//! 2. [`commit`], under the lock: check the change against the state of that moment (keys
//!    fixed while running, rule ids; the ids held by flows as that walk found them), build
//!    the plan from the answers, fill the maps, write the file and the state. Nothing is
//!    looked up here. A change the maps or the file refuse is undone; one whose state file
//!    cannot be saved runs, and its answer says so.
//!
//! Changes take turns (`Common::changes`), so a rule add edits the file as the change before
//! it left it, and two reloads cannot commit out of order.

use crate::{
    config::{self, write_back, Settings},
    daemon::live::{ChangeError, Live, Shared},
    datapath::{flows, maps::RuleMaps},
    plan::{Plan, Resolutions},
};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::PoisonError,
};

/// A change made ready without the daemon's lock, for [`commit`].
pub struct Prepared {
    /// The new config file's text and its settings.
    pub text: String,
    pub settings: Settings,
    /// The answers for its hostname targets.
    pub resolved: Resolutions,
    /// Whether `text` is to be written as the file (rule add / remove) or came from it.
    pub write: bool,
}

/// Re-reads the config file and applies the difference (SIGHUP, `forwarder reload`).
pub fn reload(shared: &Shared) -> Result<String, ChangeError> {
    in_turn(shared, |running| {
        let text = current_text(&running.path)?;
        prepare(running, text, false)
    })
}

/// `forwarder rule add`: validated as part of the whole file, applied, then written.
pub fn rule_add(
    shared: &Shared,
    name: &str,
    listen: u16,
    target: &str,
) -> Result<String, ChangeError> {
    in_turn(shared, |running| {
        let text = current_text(&running.path)?;
        let new =
            write_back::add(&text, name, listen, target).map_err(ChangeError::invalid_because)?;
        prepare(running, new, true)
    })
}

/// `forwarder rule remove`: existing connections of the rule keep running until they end.
pub fn rule_remove(shared: &Shared, name: &str) -> Result<String, ChangeError> {
    in_turn(shared, |running| {
        let text = current_text(&running.path)?;
        let new = write_back::remove(&text, name).map_err(ChangeError::invalid_because)?;
        prepare(running, new, true)
    })
}

/// Waits for the change under way to end, prepares this one from the settings it left
/// (without the daemon's lock), then commits it under the lock.
fn in_turn(
    shared: &Shared,
    prepare: impl FnOnce(&Settings) -> Result<Prepared, ChangeError>,
) -> Result<String, ChangeError> {
    // The turn guards no data: one a panicking change poisoned is as good.
    let _turn = shared.changes.lock().unwrap_or_else(PoisonError::into_inner);
    let running = shared.lock().expect("lock").settings.clone();
    let prepared = prepare(&running)?;
    // Walked without the lock, but within the turn: no other change can put a rule into
    // the maps meanwhile, so a flow that starts after the walk carries the id of a running
    // rule. Those keep their ids, except one this change removes: its id is free for a new
    // rule if the walk saw no flow of it, and a flow that starts in that gap (until the
    // maps change) then shares its id with the new rule's flows. The data path takes no
    // lock, so no walk could close that gap entirely.
    let scan = shared.tables.scan().map_err(ChangeError::runtime_because)?;
    let held = flows::held_rule_ids(&scan.flows);
    commit(&mut shared.lock().expect("lock"), prepared, &held)
}

/// The config file as it is now. A file that cannot be read is an invalid config (exit 2),
/// for every change alike and as `check-config` reports it.
fn current_text(path: &Path) -> Result<String, ChangeError> {
    std::fs::read_to_string(path)
        .map_err(|e| ChangeError::invalid(format!("{}: cannot read: {e}", path.display())))
}

/// Parses `text` as the config file, checks it against this host and against the keys of
/// `running` that cannot change while running, and looks up its hostname targets: blocks
/// for as long as the lookups take (`plan::RESOLVE_TIMEOUT` per round of them).
pub fn prepare(running: &Settings, text: String, write: bool) -> Result<Prepared, ChangeError> {
    let settings = config::parse(&running.path, &text).map_err(ChangeError::invalid_because)?;
    config::check_host(&settings, &text).map_err(ChangeError::invalid_because)?;
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    // Checked again at the commit; here too, so that a refused change looks nothing up.
    check_live_changeable(running, &settings)?;
    let resolved = Resolutions::lookup(&settings);
    Ok(Prepared { text, settings, resolved, write })
}

/// Applies a prepared change to the maps and, with `write`, saves its text as the file;
/// validated against `live` as it is now. Nothing changes unless all of that can be done.
pub fn commit(
    live: &mut Live,
    change: Prepared,
    held: &BTreeSet<u16>,
) -> Result<String, ChangeError> {
    live.refuse_if_stopping()?;
    let running = Running {
        settings: &live.settings,
        plan: &live.plan,
        rule_ids: &live.state.rule_ids,
        allow_unresolved: live.allow_unresolved,
    };
    let Applied { settings, plan, rule_ids, summary } =
        apply(&mut live.dp, &running, change, held)?;
    live.settings = settings;
    live.plan = plan;
    live.state.rule_ids = rule_ids;
    live.update_health();
    // The change runs and the file has it; only the record of the rule ids is behind.
    if let Err(e) = live.save_state() {
        return Err(ChangeError::runtime(format!(
            "{summary}; but the state file was not saved ({e}): the change is applied and in \
             the file, and a restart may give rules other ids (their counters restart)"
        )));
    }
    Ok(summary)
}

/// What runs now, as a change is checked and undone against it.
struct Running<'a> {
    settings: &'a Settings,
    plan: &'a Plan,
    rule_ids: &'a BTreeMap<String, u16>,
    allow_unresolved: bool,
}

/// A change that is in the maps and, if it was to be written, in the file.
struct Applied {
    settings: Settings,
    plan: Plan,
    rule_ids: BTreeMap<String, u16>,
    summary: String,
}

/// The maps and the file part of [`commit`]: the plan built with ids that no flow of
/// another rule holds, fresh ids' counters zeroed, the maps filled, then the file written.
/// A failure of the maps or the file puts the maps back to `running`'s plan.
fn apply(
    maps: &mut impl RuleMaps,
    running: &Running,
    change: Prepared,
    held: &BTreeSet<u16>,
) -> Result<Applied, ChangeError> {
    let Prepared { text, settings: new, resolved, write } = change;
    check_live_changeable(running.settings, &new)?;
    let mut rule_ids = running.rule_ids.clone();
    let plan = Plan::build_with_ids(&new, running.allow_unresolved, &resolved, &mut rule_ids, held)
        .map_err(ChangeError::invalid_because)?;
    let summary = describe_change(running.plan, &plan);
    // Ids given to a new rule may have counted for a removed one.
    let fresh: Vec<u16> = plan
        .rules
        .iter()
        .filter(|r| !running.plan.rules.iter().any(|o| o.rule_id == r.rule_id && o.name == r.name))
        .map(|r| r.rule_id)
        .collect();
    for id in fresh {
        maps.reset_rule_stats(id).map_err(ChangeError::runtime_because)?;
    }
    if let Err(e) = maps.apply(&plan) {
        let e = crate::error::chain(&e);
        let undone = undo(maps, running.plan);
        return Err(ChangeError::runtime(format!("applying to the BPF maps: {e}; {undone}")));
    }
    // After the maps: a change the maps refuse never reaches the file. A file that
    // cannot be written (full disk) undoes the live change, so the running rules stay
    // what the file says and a restart brings back what runs now.
    if write {
        if let Err(e) = config::file_replace::replace(&new.path, text.as_bytes()) {
            return Err(ChangeError::runtime(format!(
                "{}: cannot write the config: {}; {}",
                new.path.display(),
                crate::error::chain(&e),
                undo(maps, running.plan)
            )));
        }
    }
    Ok(Applied { settings: new, plan, rule_ids, summary })
}

/// Puts the maps back to the running plan after a failed change; says how that went.
fn undo(maps: &mut impl RuleMaps, running: &Plan) -> String {
    match maps.apply(running) {
        Ok(()) => "change undone, the rules are as they were".into(),
        Err(e) => format!(
            "undoing the change failed too ({}): the maps may hold part of it; run \
             `forwarder reload`",
            crate::error::chain(&e)
        ),
    }
}

/// Keys whose change needs a restart are refused whole rather than half applied.
fn check_live_changeable(old: &Settings, new: &Settings) -> Result<(), ChangeError> {
    let fixed: Vec<&str> = [
        ("interface", old.interfaces != new.interfaces),
        ("mode", old.mode != new.mode),
        ("max_flows", old.max_flows != new.max_flows),
        ("snat_ports", old.snat_ports != new.snat_ports),
        ("pin_path", old.pin_path != new.pin_path),
        ("control_socket", old.control_socket != new.control_socket),
        ("health", old.health != new.health),
        ("metrics", old.metrics != new.metrics),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    if fixed.is_empty() {
        Ok(())
    } else {
        Err(ChangeError::invalid(format!(
            "{}: {} cannot change while running; nothing was applied (restart the daemon: \
             established connections survive a restart)",
            new.path.display(),
            fixed.join(", ")
        )))
    }
}

/// A one-line account of what a change did, for the log and the CLI.
fn describe_change(old: &Plan, new: &Plan) -> String {
    let mut parts = Vec::new();
    for r in &new.rules {
        match old.rules.iter().find(|o| o.name == r.name) {
            None => parts.push(format!("added {}", r.name)),
            Some(o) if o != r => parts.push(format!("changed {}", r.name)),
            Some(_) => {}
        }
    }
    for o in &old.rules {
        if !new.rules.iter().any(|r| r.name == o.name) {
            parts.push(format!("removed {}", o.name));
        }
    }
    if parts.is_empty() {
        "no rule changed".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{handles::MapAccessError, DatapathError};

    /// Settings from a config text whose rules are `(name, listen, target)`.
    fn settings(head: &str, rules: &[(&str, u16, &str)]) -> Settings {
        let mut text =
            format!("interface = \"lo\"\nlisten_ip = \"any\"\nsnat_ip = \"10.9.9.9\"\n{head}\n");
        for (name, listen, target) in rules {
            text +=
                &format!("[[rule]]\nname = \"{name}\"\nlisten = {listen}\ntarget = \"{target}\"\n");
        }
        config::parse(Path::new("/etc/forwarder/forwarder.toml"), &text).unwrap()
    }

    /// The plan of `settings` (literal targets only: nothing is looked up).
    fn plan(settings: &Settings) -> Plan {
        let resolved = Resolutions::lookup(settings);
        Plan::build_with_ids(settings, false, &resolved, &mut BTreeMap::new(), &BTreeSet::new())
            .unwrap()
    }

    #[test]
    fn a_change_is_described_rule_by_rule() {
        let old = plan(&settings(
            "",
            &[
                ("a", 9092, "10.1.0.1:9092"),
                ("b", 9093, "10.1.0.2:9092"),
                ("c", 9094, "10.1.0.3:9092"),
            ],
        ));
        let new = plan(&settings(
            "",
            &[
                ("a", 9092, "10.1.0.1:9092"),
                ("b", 9093, "10.1.0.9:9092"),
                ("d", 9095, "10.1.0.4:9092"),
            ],
        ));
        assert_eq!(describe_change(&old, &new), "changed b, added d, removed c");
        assert_eq!(describe_change(&old, &old), "no rule changed");
    }

    #[test]
    fn keys_that_need_a_restart_are_named_and_nothing_else_is_refused() {
        let rules = [("a", 9092, "10.1.0.1:9092")];
        let old = settings("mode = \"xdp\"\nmax_flows = 65536", &rules);
        let more_rules = [("a", 9092, "10.1.0.1:9092"), ("b", 9093, "10.1.0.2:9092")];
        let fine = settings("mode = \"xdp\"\nmax_flows = 65536", &more_rules);
        assert!(check_live_changeable(&old, &fine).is_ok(), "a rule change is live");

        let fixed = settings("mode = \"tc\"\nmax_flows = 1024\nhealth = \"0.0.0.0:8080\"", &rules);
        let e = check_live_changeable(&old, &fixed).unwrap_err();
        assert_eq!(e.exit_code, 2);
        assert!(
            e.message.starts_with(
                "/etc/forwarder/forwarder.toml: mode, max_flows, health cannot change while running"
            ),
            "{}",
            e.message
        );
        assert!(e.message.contains("nothing was applied"), "{}", e.message);
    }

    /// The maps as a rule change sees them, in memory: which rules each `apply` left in
    /// them, which counters were zeroed, and a number of `apply` calls still to refuse.
    #[derive(Default)]
    struct FakeMaps {
        /// After each `apply` that succeeded: its rules as (name, id, listen port).
        holds: Vec<Vec<(String, u16, u16)>>,
        resets: Vec<u16>,
        refuse_applies: usize,
        applies: usize,
    }

    impl RuleMaps for FakeMaps {
        fn apply(&mut self, plan: &Plan) -> Result<(), DatapathError> {
            self.applies += 1;
            if self.refuse_applies > 0 {
                self.refuse_applies -= 1;
                return Err(DatapathError::Maps(MapAccessError::Missing("RULES")));
            }
            self.holds
                .push(plan.rules.iter().map(|r| (r.name.clone(), r.rule_id, r.listen)).collect());
            Ok(())
        }

        fn reset_rule_stats(&mut self, rule_id: u16) -> Result<(), MapAccessError> {
            self.resets.push(rule_id);
            Ok(())
        }
    }

    impl FakeMaps {
        fn rules_now(&self) -> Vec<&str> {
            self.holds.last().map_or(vec![], |h| h.iter().map(|(n, ..)| n.as_str()).collect())
        }
    }

    /// A running set of rules a, b (ids 0, 1), and a change to `rules` from the file at
    /// `path`, prepared as `rule add` would (to be written).
    struct Case {
        settings: Settings,
        plan: Plan,
        ids: BTreeMap<String, u16>,
        change: Prepared,
    }

    const RUNNING: [(&str, u16, &str); 2] =
        [("a", 9092, "10.1.0.1:9092"), ("b", 9093, "10.1.0.2:9092")];

    fn case(path: &Path, head: &str, rules: &[(&str, u16, &str)]) -> Case {
        let at = |s: Settings| Settings { path: path.to_path_buf(), ..s };
        let running = at(settings("", &RUNNING));
        let mut ids = BTreeMap::new();
        let resolved = Resolutions::lookup(&running);
        let plan =
            Plan::build_with_ids(&running, false, &resolved, &mut ids, &BTreeSet::new()).unwrap();
        let new = at(settings(head, rules));
        let text = format!("# the new file: {rules:?}\n");
        let resolved = Resolutions::lookup(&new);
        let change = Prepared { text, settings: new, resolved, write: true };
        Case { settings: running, plan, ids, change }
    }

    /// A config file holding "# the old file", in a directory of its own (kept while the
    /// first value lives).
    fn old_file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forwarder.toml");
        std::fs::write(&path, "# the old file\n").unwrap();
        (dir, path)
    }

    fn run(maps: &mut FakeMaps, c: Case, held: &[u16]) -> Result<Applied, ChangeError> {
        let running = Running {
            settings: &c.settings,
            plan: &c.plan,
            rule_ids: &c.ids,
            allow_unresolved: false,
        };
        apply(maps, &running, c.change, &held.iter().copied().collect())
    }

    #[test]
    fn a_change_zeroes_only_fresh_ids_fills_the_maps_then_writes_the_file() {
        let (_dir, path) = old_file();
        let new = [
            ("a", 9092, "10.1.0.1:9092"),
            ("b", 9093, "10.1.0.9:9092"),
            ("c", 9094, "10.1.0.3:9092"),
        ];
        let mut maps = FakeMaps::default();
        let done = run(&mut maps, case(&path, "", &new), &[]).unwrap();
        assert_eq!(done.summary, "changed b, added c");
        assert_eq!(maps.resets, vec![2], "only the new rule's counters are zeroed");
        assert_eq!(maps.rules_now(), ["a", "b", "c"]);
        assert_eq!(done.rule_ids.get("c"), Some(&2));
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("# the new file"));
    }

    #[test]
    fn an_id_a_flow_still_holds_is_not_given_to_a_new_rule() {
        let (_dir, path) = old_file();
        // b is removed while a flow of it (id 1) still runs: c must not count as b.
        let new = [("a", 9092, "10.1.0.1:9092"), ("c", 9094, "10.1.0.3:9092")];
        let mut maps = FakeMaps::default();
        let done = run(&mut maps, case(&path, "", &new), &[1]).unwrap();
        assert_eq!(done.summary, "added c, removed b");
        let c_id = done.rule_ids["c"];
        assert_ne!(c_id, 1, "c took the id b's flow still carries");
        assert_eq!(maps.resets, vec![c_id]);
    }

    #[test]
    fn maps_that_refuse_a_change_are_put_back_and_the_file_is_left_alone() {
        let (_dir, path) = old_file();
        let new = [("c", 9094, "10.1.0.3:9092")];
        let mut maps = FakeMaps { refuse_applies: 1, ..FakeMaps::default() };
        let e = run(&mut maps, case(&path, "", &new), &[]).err().expect("refused");
        assert_eq!(e.exit_code, 1);
        assert!(e.message.starts_with("applying to the BPF maps: map RULES"), "{}", e.message);
        assert!(e.message.ends_with("change undone, the rules are as they were"), "{}", e.message);
        assert_eq!(maps.rules_now(), ["a", "b"], "the running plan is back in the maps");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# the old file\n");
    }

    #[test]
    fn an_undo_the_maps_refuse_too_says_what_to_do() {
        let (_dir, path) = old_file();
        let mut maps = FakeMaps { refuse_applies: 2, ..FakeMaps::default() };
        let e = run(&mut maps, case(&path, "", &[("c", 9094, "10.1.0.3:9092")]), &[])
            .err()
            .expect("refused");
        assert!(e.message.contains("undoing the change failed too"), "{}", e.message);
        assert!(e.message.ends_with("run `forwarder reload`"), "{}", e.message);
        assert_eq!(maps.applies, 2);
    }

    #[test]
    fn a_file_that_cannot_be_written_undoes_the_maps() {
        let dir = tempfile::tempdir().unwrap();
        // No such file: the change cannot replace it.
        let path = dir.path().join("gone").join("forwarder.toml");
        let mut maps = FakeMaps::default();
        let e = run(&mut maps, case(&path, "", &[("c", 9094, "10.1.0.3:9092")]), &[])
            .err()
            .expect("refused");
        assert_eq!(e.exit_code, 1);
        assert!(
            e.message.starts_with(&format!("{}: cannot write the config", path.display())),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("change undone, the rules are as they were"), "{}", e.message);
        let holds: Vec<Vec<&str>> =
            maps.holds.iter().map(|h| h.iter().map(|(n, ..)| n.as_str()).collect()).collect();
        assert_eq!(holds, [vec!["c"], vec!["a", "b"]], "applied, then put back");
    }

    #[test]
    fn a_change_to_a_key_fixed_while_running_touches_nothing() {
        let (_dir, path) = old_file();
        let mut maps = FakeMaps::default();
        let e = run(&mut maps, case(&path, "mode = \"tc\"", &RUNNING), &[]).err().expect("refused");
        assert_eq!(e.exit_code, 2);
        assert_eq!((maps.applies, maps.resets.len()), (0, 0));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# the old file\n");
    }
}
