//! The loaded program: attaching it in the chosen mode and keeping its maps in step with a
//! [`Plan`](crate::plan::Plan). Dropping a `Datapath` detaches the program.

// The kernel side as the daemon sees it: the object and its loading, the pins that keep it
// across restarts, and the readers and writers of its maps.
pub mod attach;
pub mod batch;
pub mod flows;
pub mod gc;
pub mod handles;
pub mod kernel_log;
pub mod link_info;
pub mod maps;
pub mod migrate;
pub mod object;
pub mod pins;
pub mod stats;

use crate::datapath::{
    handles::{MapAccessError, MapHandles},
    migrate::{MigrateError, Migration},
    pins::{PinError, Pinned, Pins},
};
use aya::{
    programs::{
        links::{LinkError, PinnedLink},
        tc::SchedClassifierLinkId,
        xdp::XdpLinkId,
    },
    Ebpf,
};
use forwarder_common::{program_names, LAYOUT_VERSION};

/// What the data path could not do. Each variant names the step; the cause is its
/// `source()` (aya's errors carry their own, such as the syscall's errno), so print the
/// whole chain (`error::chain`), not only the Display.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the BPF object")]
    Load(#[from] aya::EbpfError),
    #[error("program {0}")]
    Program(&'static str, #[source] aya::programs::ProgramError),
    #[error("attaching to {iface} in {mode} mode")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Generic XDP runs after the device under `iface` merged segments: the program would
    /// write wrong TCP checksums into the merged skbs.
    #[error(
        "not attaching generic XDP to {iface}: {lower} under it merges received segments \
         ({offload} on), and the merged packets' TCP checksums hold only the pseudo-header's \
         sum, which generic XDP cannot tell from complete ones (it would send wrong \
         checksums); use mode \"tc\" or \"auto\", or turn {offload} off on {lower} \
         (ethtool -K {lower} {flag} off)"
    )]
    MergedBelow { iface: String, lower: String, offload: &'static str, flag: &'static str },
    #[error(transparent)]
    Maps(#[from] MapAccessError),
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error("upgrading the pinned maps of layout {from} to layout {to}")]
    Migrate {
        from: u32,
        to: u32,
        #[source]
        source: MigrateError,
    },
    #[error("pinned link {0}")]
    Link(String, #[source] LinkError),
    #[error("pinning link {0}")]
    Pin(String, #[source] aya::pin::PinError),
}

/// How the program ended up attached to one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    XdpDriver,
    XdpGeneric,
    Tc,
}

impl Attached {
    /// The configured mode that asks for exactly this attachment: its name is the one the
    /// config, the CLI and the metrics use.
    pub fn mode(self) -> crate::config::Mode {
        match self {
            Attached::XdpDriver => crate::config::Mode::Xdp,
            Attached::XdpGeneric => crate::config::Mode::XdpGeneric,
            Attached::Tc => crate::config::Mode::Tc,
        }
    }

    pub fn name(self) -> &'static str {
        self.mode().name()
    }
}

pub struct Datapath {
    /// The programs, and the log buffer aya-log reads; every other map is in `maps`.
    ebpf: Ebpf,
    maps: MapHandles,
    /// The `max_flows` the conntrack tables were made for (the pinned ones' when resumed).
    max_flows: u32,
    /// Per interface: how the program is attached there, and this process's handle on the
    /// link.
    attachments: std::collections::BTreeMap<String, Attachment>,
    pins: Option<Pins>,
    /// An upgrade from the previous map layout under way: set by `load_pinned`, ended by
    /// `finish_migration` once the program is in every link.
    migration: Option<Migration>,
    /// The CONFIG value last written (`apply`), so the end of a migration can clear its
    /// flag without the plan.
    config: forwarder_common::Config,
}

/// An upgrade's error, from layout `from` to this one.
fn migrate_err(from: u32) -> impl Fn(MigrateError) -> DatapathError + Copy {
    move |source| DatapathError::Migrate { from, to: LAYOUT_VERSION, source }
}

/// Whether a daemon may start on the maps of a newer build (a downgrade), dropping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Downgrade {
    #[default]
    Refuse,
    Force,
}

impl Datapath {
    /// Loads the program with tables for `max_flows` flows; attaches nothing yet. Nothing
    /// is pinned: everything goes away with this value (tests, helpers).
    pub fn load(max_flows: u32) -> Result<Self, DatapathError> {
        let mut ebpf = object::load(max_flows, None)?;
        Ok(Self {
            maps: MapHandles::take(&mut ebpf)?,
            ebpf,
            max_flows,
            attachments: Default::default(),
            pins: None,
            migration: None,
            config: Default::default(),
        })
    }

    /// Loads the program on the maps pinned in `pins` (creating and pinning them the first
    /// time); attachments made with `attach` are pinned too, so forwarding outlives this
    /// process. Refuses pins made by an incompatible build; a newer build's too (see
    /// [`Self::load_pinned_with`]).
    pub fn load_pinned(max_flows: u32, pins: &Pins) -> Result<Self, DatapathError> {
        Self::load_pinned_with(max_flows, pins, Downgrade::Refuse)
    }

    /// As [`Self::load_pinned`]. Pins of the previous map layout are upgraded: this
    /// build's maps are made beside them and every flow copied in (`migrate`); the daemon
    /// ends the upgrade with [`Self::finish_migration`] once it has attached. A newer
    /// layout's pins are refused unless `downgrade` is `Force`, which removes them (every
    /// tracked connection with them).
    pub fn load_pinned_with(
        max_flows: u32,
        pins: &Pins,
        downgrade: Downgrade,
    ) -> Result<Self, DatapathError> {
        // The moves of an upgrade to this layout: its staged pins are this layout's.
        let interrupted =
            Migration::complete_interrupted(pins).map_err(migrate_err(LAYOUT_VERSION))?;
        if interrupted {
            tracing::warn!(
                pins = %pins.dir().display(),
                "an upgrade of the pinned maps stopped after its copy, while moving its pins: \
                 finished them"
            );
        }
        let pinned = match pins.check_compatible() {
            Err(e @ PinError::Newer { .. }) if downgrade == Downgrade::Force => {
                tracing::warn!("{e}; --force-downgrade: removing them");
                pins.remove_all()?;
                Pinned::Nothing
            }
            other => other?,
        };
        let (pinned_flows, from) = match pinned {
            Pinned::Nothing | Pinned::Current { max_flows: None } => (None, None),
            Pinned::Current { max_flows: Some(p) } => (Some(p), None),
            Pinned::Previous { version, max_flows } => {
                ((max_flows != 0).then_some(max_flows), Some(version))
            }
        };
        let mut effective = max_flows;
        if let Some(p) = pinned_flows {
            if p != max_flows {
                tracing::warn!(
                    pinned = p,
                    configured = max_flows,
                    "max_flows differs from the pinned tables; the pinned size stays until \
                     `forwarder unload`"
                );
                effective = p;
            }
        }
        pins.create_dir()?;
        let migrate_err = migrate_err(from.unwrap_or(0));
        let migration = from.map(|v| Migration::begin(pins, v)).transpose().map_err(migrate_err)?;
        // An upgrade makes its tables as large as the pinned ones, which it copies.
        let load_flows = if migration.is_some() { effective } else { max_flows };
        let mut ebpf =
            object::load(load_flows, Some(migration.as_ref().map_or(pins, |m| m.staging())))?;
        let mut dp = Self {
            maps: MapHandles::take(&mut ebpf)?,
            ebpf,
            max_flows: effective,
            attachments: Default::default(),
            pins: Some(pins.clone()),
            migration,
            config: Default::default(),
        };
        if let Some(m) = dp.migration.as_mut() {
            let report = m.bulk_copy(&mut dp.maps).map_err(migrate_err)?;
            tracing::info!(
                from = report.from_version,
                to = LAYOUT_VERSION,
                halves = report.copied,
                ms = report.bulk.as_secs_f64() * 1e3,
                "upgrading the pinned maps: the tracked flows are copied; the old program \
                 forwards until the swap"
            );
        }
        // Whatever changed while no daemon listened, no cached next hop survives a start.
        dp.bump_nexthop_gen()?;
        Ok(dp)
    }

    /// Ends an upgrade begun by `load_pinned` (nothing to do otherwise): call it once the
    /// program is in every link. Copies what the old program changed since the bulk
    /// copy, puts this build's pins in place of the old ones and lets unknown packets go to
    /// the kernel again. Returns what the upgrade did.
    pub fn finish_migration(&mut self) -> Result<Option<migrate::Report>, DatapathError> {
        self.catch_up_migration()?;
        let Some(m) = self.migration.take() else {
            return Ok(None);
        };
        let from = m.report().from_version;
        let report = m.finish().map_err(migrate_err(from))?;
        // `config` never had UPGRADE_COPIED: it was set on the map alone.
        self.config.flags &= !forwarder_common::CONFIG_FLAG_MIGRATING;
        let name = forwarder_common::map_names::CONFIG;
        self.maps.config.set(0, self.config, 0).map_err(handles::of(name))?;
        Ok(Some(report))
    }

    /// The first part of [`Self::finish_migration`]: copies what the old program changed
    /// since the bulk copy and marks the copy complete, but moves no pin yet (a daemon
    /// killed now leaves that to the next start; tests/tests/upgrade.rs stops here).
    pub fn catch_up_migration(&mut self) -> Result<(), DatapathError> {
        let Some(m) = self.migration.as_mut() else {
            return Ok(());
        };
        let from = m.report().from_version;
        m.catch_up(&mut self.maps).map_err(migrate_err(from))
    }

    /// The upgrade under way (`finish_migration` not called yet): its bulk copy so far.
    pub fn migration_report(&self) -> Option<&migrate::Report> {
        self.migration.as_ref().map(|m| m.report())
    }

    pub fn max_flows(&self) -> u32 {
        self.max_flows
    }

    /// Each interface the program is attached to, and how (by interface name).
    pub fn attached(&self) -> Vec<(String, Attached)> {
        self.attachments.iter().map(|(iface, a)| (iface.clone(), a.how)).collect()
    }

    /// Lets go of every attachment this process holds. Once `forwarder unload` has removed
    /// the link pins, that detaches the program now, at a moment the daemon chooses (after
    /// the health endpoint closed), rather than whenever the process ends. Errors from an
    /// attachment that is already gone do not matter; the first other one is returned.
    pub fn detach(&mut self) -> Result<(), DatapathError> {
        self.attachments.clear();
        let mut first_err = None;
        for name in [program_names::XDP, program_names::TC] {
            let result = match self.ebpf.program_mut(name) {
                Some(aya::programs::Program::Xdp(p)) => p.unload(),
                Some(aya::programs::Program::SchedClassifier(p)) => p.unload(),
                _ => continue,
            };
            match result {
                Ok(()) | Err(aya::programs::ProgramError::NotLoaded) => {}
                Err(e) => {
                    first_err.get_or_insert(DatapathError::Program(name, e));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Program ids of the loaded programs that are attached somewhere.
    pub fn program_ids(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        for name in [program_names::XDP, program_names::TC] {
            if let Some(p) = self.ebpf.program(name) {
                if let Ok(info) = p.info() {
                    if self
                        .attachments
                        .values()
                        .any(|a| (a.how == Attached::Tc) == (name == program_names::TC))
                    {
                        ids.push(info.id());
                    }
                }
            }
        }
        ids
    }

    /// The loaded object: its programs, and the log buffer (every other map is taken out
    /// into [`Self::maps_mut`]), for tests and tools that run a program or read its log.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The typed map handles, for tests and tools; the daemon goes through the methods
    /// (apply, flows, rule_totals, kernel_events, ...) and, for what it does without its
    /// lock, through handles of its own opened from the pins.
    pub fn maps_mut(&mut self) -> &mut MapHandles {
        &mut self.maps
    }
}

/// The program on one interface.
struct Attachment {
    how: Attached,
    /// The handle this process keeps on the link (holding one only keeps a file
    /// descriptor: the pin keeps the attachment); none for a TC attachment through netlink
    /// (no TCX before 6.6), which is no link, and while a re-attach is under way.
    link: Option<HeldLink>,
}

/// A link an attach just made, owned by the program object until it is pinned.
enum NewLink {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

/// A handle this process keeps on an interface's link.
enum HeldLink {
    /// A link this process made and pinned.
    Pinned(PinnedLink),
    /// A pinned link a previous daemon made, which this program was swapped into; the
    /// program object holds it.
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attach_error_prints_its_cause_once() {
        let e = DatapathError::Attach {
            iface: "eth0".into(),
            mode: "xdp",
            source: aya::programs::ProgramError::NotLoaded,
        };
        assert_eq!(e.to_string(), "attaching to eth0 in xdp mode");
        let text = crate::error::chain(&e);
        let cause = aya::programs::ProgramError::NotLoaded.to_string();
        assert_eq!(text, format!("attaching to eth0 in xdp mode: {cause}"));
    }
}
