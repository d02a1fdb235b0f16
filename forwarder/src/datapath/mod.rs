//! The loaded program: attaching it in the chosen mode and keeping its maps in step with a
//! [`Plan`]. Dropping a `Datapath` detaches the program.

// The kernel side as the daemon sees it: the object and its loading, the pins that keep it
// across restarts, and the readers and writers of its maps.
pub mod flows;
pub mod gc;
pub mod kernel_log;
pub mod link_info;
pub mod object;
pub mod pins;
pub mod stats;

use crate::{
    config::Mode,
    datapath::pins::{PinError, Pins},
    plan::{ne_addr, Plan},
};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink, SchedClassifierLinkId, TcAttachType},
        xdp::{XdpLink, XdpLinkId},
        SchedClassifier, Xdp, XdpMode,
    },
    util::KernelVersion,
    Ebpf,
};
use forwarder_common::{map_names, program_names, Config, Rule};
use std::{collections::HashSet, net::Ipv4Addr, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {0}: {1}")]
    Program(&'static str, #[source] aya::programs::ProgramError),
    #[error("attaching to {iface} in {mode} mode: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error("pinned link {0}: {1}")]
    Link(String, #[source] LinkError),
    #[error("pinning link {0}: {1}")]
    Pin(String, #[source] aya::pin::PinError),
}

/// Whether an attachment in mode `how` satisfies the configured `mode`.
fn mode_allows(mode: Mode, how: Attached) -> bool {
    match mode {
        Mode::Auto => true,
        Mode::Xdp => how == Attached::XdpDriver,
        Mode::XdpGeneric => how == Attached::XdpGeneric,
        Mode::Tc => how == Attached::Tc,
    }
}

/// How the program ended up attached to one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    XdpDriver,
    XdpGeneric,
    Tc,
}

impl Attached {
    pub fn name(self) -> &'static str {
        match self {
            Attached::XdpDriver => "xdp",
            Attached::XdpGeneric => "xdp-generic",
            Attached::Tc => "tc",
        }
    }
}

pub struct Datapath {
    ebpf: Ebpf,
    /// The `max_flows` the conntrack tables were made for (the pinned ones' when resumed).
    max_flows: u32,
    pub attached: Vec<(String, Attached)>,
    pins: Option<Pins>,
    /// The links this process holds, per interface; holding one only keeps a file
    /// descriptor (the pin keeps the attachment).
    held: Vec<(String, HeldLink)>,
    /// The link of the last attach, until it is pinned.
    last_xdp_link: Option<XdpLinkId>,
    last_tc_link: Option<SchedClassifierLinkId>,
}

impl Datapath {
    /// Loads the program with tables for `max_flows` flows; attaches nothing yet. Nothing
    /// is pinned: everything goes away with this value (tests, helpers).
    pub fn load(max_flows: u32) -> Result<Self, DatapathError> {
        Ok(Self {
            ebpf: object::load(max_flows, None)?,
            max_flows,
            attached: Vec::new(),
            pins: None,
            held: Vec::new(),
            last_xdp_link: None,
            last_tc_link: None,
        })
    }

    /// Loads the program on the maps pinned in `pins` (creating and pinning them the first
    /// time); attachments made with `attach` are pinned too, so forwarding outlives this
    /// process. Refuses pins made by an incompatible build.
    pub fn load_pinned(max_flows: u32, pins: &Pins) -> Result<Self, DatapathError> {
        let pinned = pins.check_compatible()?;
        let mut effective = max_flows;
        if let Some(p) = pinned {
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
        let mut dp = Self {
            ebpf: object::load(max_flows, Some(pins))?,
            max_flows: effective,
            attached: Vec::new(),
            pins: Some(pins.clone()),
            held: Vec::new(),
            last_xdp_link: None,
            last_tc_link: None,
        };
        // Whatever changed while no daemon listened, no cached next hop survives a start.
        dp.bump_nexthop_gen()?;
        Ok(dp)
    }

    pub fn max_flows(&self) -> u32 {
        self.max_flows
    }

    /// Invalidates every next hop cached in the flows: their next packet looks its route
    /// up again.
    pub fn bump_nexthop_gen(&mut self) -> Result<(), DatapathError> {
        let name = map_names::NEXTHOP_GEN;
        let mut arr: Array<&mut MapData, u32> =
            Array::try_from(self.map(name)?).map_err(|e| DatapathError::Map(name, e))?;
        bump_nexthop_gen(&mut arr).map_err(|e| DatapathError::Map(name, e))?;
        Ok(())
    }

    /// Lets go of every attachment this process holds. Once `forwarder unload` has removed
    /// the link pins, that detaches the program now, at a moment the daemon chooses (after
    /// the health endpoint closed), rather than whenever the process ends. Errors from an
    /// attachment that is already gone do not matter; the first other one is returned.
    pub fn detach(&mut self) -> Result<(), DatapathError> {
        self.held.clear();
        self.attached.clear();
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
                        .attached
                        .iter()
                        .any(|(_, a)| (*a == Attached::Tc) == (name == program_names::TC))
                    {
                        ids.push(info.id());
                    }
                }
            }
        }
        ids
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches to `iface` in `mode`; `auto` tries native XDP, then generic XDP, then TC.
    /// With pins, an attachment a previous daemon pinned is taken over by swapping this
    /// program into its link (no packet sees a gap); a new one is pinned.
    pub fn attach(&mut self, iface: &str, mode: Mode) -> Result<Attached, DatapathError> {
        let Some(pins) = self.pins.clone() else {
            return self.attach_new(iface, mode);
        };
        if let Some((how, path)) = pins.find_link(iface) {
            if mode_allows(mode, how) {
                self.take_over(iface, how, &path)?;
                self.attached.push((iface.to_string(), how));
                tracing::info!(iface, mode = how.name(), "took over the pinned attachment");
                return Ok(how);
            }
            tracing::warn!(
                iface,
                pinned = how.name(),
                configured = mode.name(),
                "the configured mode differs from the pinned attachment; re-attaching"
            );
            let _ = std::fs::remove_file(&path);
        }
        let how = self.attach_new(iface, mode)?;
        self.pin_link(iface, how, &pins)?;
        Ok(how)
    }

    /// Why this program no longer runs on `iface` as it was attached, if it does not: its
    /// pinned link detached or handed to another program by someone else, or the pin gone.
    /// Not checked: an attachment without a link (TC through netlink, before TCX) and an
    /// unpinned `Datapath`.
    pub fn attachment_problem(&self, iface: &str, how: Attached) -> Option<String> {
        let pins = self.pins.as_ref()?;
        if how == Attached::Tc && !tcx_available() {
            return None;
        }
        let path = pins.link(iface, how);
        let link = match crate::datapath::link_info::pinned(&path) {
            Ok(l) => l,
            Err(e) => return Some(format!("the pinned link {} is gone: {e}", path.display())),
        };
        let id = link.link_id;
        if link.ifindex == 0 {
            return Some(format!("detached from {iface} by someone else (link {id} is defunct)"));
        }
        if let Ok(want) = crate::host::netif::ifindex(iface) {
            if link.ifindex != want {
                return Some(format!(
                    "link {id} is attached to interface index {}, not {iface} ({want})",
                    link.ifindex
                ));
            }
        }
        let ours = self.program_id(how);
        if ours.is_some_and(|p| p != link.prog_id) {
            return Some(format!(
                "link {id} on {iface} runs program {}, not this daemon's ({})",
                link.prog_id,
                ours.unwrap_or(0)
            ));
        }
        None
    }

    /// Attaches to `iface` again after [`Self::attachment_problem`] found it gone: a link
    /// still on the interface gets this program swapped back in; a detached one is let go,
    /// its pin removed, and a new link attached and pinned in its place.
    pub fn reattach(&mut self, iface: &str, how: Attached) -> Result<(), DatapathError> {
        let Some(pins) = self.pins.clone() else {
            return Ok(());
        };
        let path = pins.link(iface, how);
        let still_on = crate::datapath::link_info::pinned(&path).is_ok_and(|l| l.ifindex != 0);
        self.release(iface);
        if still_on {
            let held = self.swap_into(iface, how, &path)?;
            self.held.push((iface.to_string(), held));
        } else {
            let _ = std::fs::remove_file(&path);
            self.attach_as(iface, how)?;
            self.pin_link(iface, how, &pins)?;
        }
        Ok(())
    }

    /// Closes this process's handles on `iface`'s link (a detached link then goes).
    fn release(&mut self, iface: &str) {
        let mine: Vec<HeldLink> = {
            let (mine, rest) = std::mem::take(&mut self.held)
                .into_iter()
                .partition::<Vec<_>, _>(|(i, _)| i == iface);
            self.held = rest;
            mine.into_iter().map(|(_, h)| h).collect()
        };
        for h in mine {
            match h {
                HeldLink::Pinned(p) => drop(p),
                HeldLink::Xdp(id) => {
                    if let Ok(p) = self.xdp_program(program_names::XDP) {
                        drop(p.take_link(id));
                    }
                }
                HeldLink::Tc(id) => {
                    if let Ok(p) = self.tc_program() {
                        drop(p.take_link(id));
                    }
                }
            }
        }
    }

    /// The id of the loaded program that attachments of kind `how` run.
    fn program_id(&self, how: Attached) -> Option<u32> {
        let name = if how == Attached::Tc { program_names::TC } else { program_names::XDP };
        self.ebpf.program(name)?.info().ok().map(|i| i.id())
    }

    /// Swaps this program into the link pinned at `path`.
    fn take_over(&mut self, iface: &str, how: Attached, path: &Path) -> Result<(), DatapathError> {
        let held = self.swap_into(iface, how, path)?;
        self.held.push((iface.to_string(), held));
        Ok(())
    }

    fn swap_into(
        &mut self,
        iface: &str,
        how: Attached,
        path: &Path,
    ) -> Result<HeldLink, DatapathError> {
        let attach_err =
            |source| DatapathError::Attach { iface: iface.to_string(), mode: how.name(), source };
        let link = FdLink::from(
            PinnedLink::from_pin(path)
                .map_err(|e| DatapathError::Link(path.display().to_string(), e))?,
        );
        match how {
            Attached::XdpDriver | Attached::XdpGeneric => {
                let link = XdpLink::try_from(link)
                    .map_err(|e| DatapathError::Link(path.display().to_string(), e))?;
                let prog = self.xdp_program(program_names::XDP)?;
                Ok(HeldLink::Xdp(prog.attach_to_link(link).map_err(attach_err)?))
            }
            Attached::Tc => {
                let link = SchedClassifierLink::try_from(link)
                    .map_err(|e| DatapathError::Link(path.display().to_string(), e))?;
                Ok(HeldLink::Tc(self.tc_program()?.attach_to_link(link).map_err(attach_err)?))
            }
        }
    }

    /// Pins the link just made for `iface`, so it outlives this process.
    fn pin_link(&mut self, iface: &str, how: Attached, pins: &Pins) -> Result<(), DatapathError> {
        let path = pins.link(iface, how);
        let link_err = |e| DatapathError::Link(path.display().to_string(), e);
        let fd_link: FdLink = match how {
            Attached::XdpDriver | Attached::XdpGeneric => {
                let id = self.last_xdp_link.take().expect("attach_new recorded the link");
                let prog = self.xdp_program(program_names::XDP)?;
                let link = prog
                    .take_link(id)
                    .map_err(|e| DatapathError::Program(program_names::XDP, e))?;
                FdLink::try_from(link).map_err(link_err)?
            }
            Attached::Tc => {
                let Some(id) = self.last_tc_link.take() else {
                    // Attached through netlink (no TCX before 6.6): that attachment stays
                    // in the kernel by itself, but cannot be pinned or taken over.
                    return Ok(());
                };
                let prog = self.tc_program()?;
                let link =
                    prog.take_link(id).map_err(|e| DatapathError::Program(program_names::TC, e))?;
                FdLink::try_from(link).map_err(link_err)?
            }
        };
        let pinned =
            fd_link.pin(&path).map_err(|e| DatapathError::Pin(path.display().to_string(), e))?;
        self.held.push((iface.to_string(), HeldLink::Pinned(pinned)));
        Ok(())
    }

    fn attach_new(&mut self, iface: &str, mode: Mode) -> Result<Attached, DatapathError> {
        let order: &[Attached] = match mode {
            Mode::Xdp => &[Attached::XdpDriver],
            Mode::XdpGeneric => &[Attached::XdpGeneric],
            Mode::Tc => &[Attached::Tc],
            Mode::Auto => &[Attached::XdpDriver, Attached::XdpGeneric, Attached::Tc],
        };
        let mut last = None;
        for &how in order {
            match self.attach_as(iface, how) {
                Ok(()) => {
                    self.attached.push((iface.to_string(), how));
                    return Ok(how);
                }
                Err(e) => {
                    if order.len() > 1 {
                        tracing::info!(
                            iface,
                            mode = how.name(),
                            "attach failed, trying the next mode: {e}"
                        );
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one mode was tried"))
    }

    fn attach_as(&mut self, iface: &str, how: Attached) -> Result<(), DatapathError> {
        let attach_err =
            |source| DatapathError::Attach { iface: iface.to_string(), mode: how.name(), source };
        match how {
            Attached::XdpDriver | Attached::XdpGeneric => {
                let prog = self.xdp_program(program_names::XDP)?;
                let mode = if how == Attached::XdpDriver { XdpMode::Driver } else { XdpMode::Skb };
                let id = prog.attach(iface, mode).map_err(attach_err)?;
                self.last_xdp_link = Some(id);
            }
            Attached::Tc => {
                let tcx = tcx_available();
                // Before 6.6 (no TCX) a classifier hangs off a clsact qdisc, which must exist.
                // An error here is most often "already there"; any other one makes the
                // attach below fail with its own message.
                if !tcx {
                    let _ = tc::qdisc_add_clsact(iface);
                }
                let id =
                    self.tc_program()?.attach(iface, TcAttachType::Ingress).map_err(attach_err)?;
                // Only a TCX attachment is a link that can be pinned.
                self.last_tc_link = tcx.then_some(id);
            }
        }
        Ok(())
    }

    fn tc_program(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program_names::TC)
            .ok_or(DatapathError::MissingProgram(program_names::TC))?
            .try_into()
            .map_err(|e| DatapathError::Program(program_names::TC, e))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| DatapathError::Program(program_names::TC, e))?;
        }
        Ok(prog)
    }

    /// The loaded XDP program `name`.
    pub fn xdp_program(&mut self, name: &'static str) -> Result<&mut Xdp, DatapathError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(|e| DatapathError::Program(name, e))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| DatapathError::Program(name, e))?;
        }
        Ok(prog)
    }

    /// Makes the maps hold `plan`: rules, listen addresses and allowed sources first, the
    /// global config last, so the program never sees a config without its rules.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), DatapathError> {
        let rules: Vec<(u16, Rule)> =
            plan.rules.iter().filter_map(|r| r.map_value().map(|v| (r.listen, v))).collect();
        self.sync_hash(map_names::RULES, &rules)?;

        let listen: Vec<(u32, u8)> =
            plan.listen_addrs.iter().flatten().map(|a| (ne_addr(*a), 1)).collect();
        self.sync_hash(map_names::LISTEN_ADDRS, &listen)?;

        self.sync_allowed(plan.allowed_sources.as_deref().unwrap_or(&[]))?;

        let name = map_names::CONFIG;
        let value = Config { max_flows: self.max_flows, ..plan.config() };
        let mut cfg: Array<_, Config> =
            Array::try_from(self.map(name)?).map_err(|e| DatapathError::Map(name, e))?;
        cfg.set(0, value, 0).map_err(|e| DatapathError::Map(name, e))?;
        Ok(())
    }

    fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf.map_mut(name).ok_or(DatapathError::MissingMap(name))
    }

    /// Removes every key not in `want`, then inserts `want`. Stale keys go first: the maps
    /// are full size (the config is checked against their capacity), so a change that
    /// replaces most keys at once, near capacity, only fits once the old ones are gone.
    /// A kept key is updated in place, so its packets never see it missing.
    fn sync_hash<K, V>(&mut self, name: &'static str, want: &[(K, V)]) -> Result<(), DatapathError>
    where
        K: aya::Pod + Eq + std::hash::Hash,
        V: aya::Pod,
    {
        let mut map: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map(name)?).map_err(|e| DatapathError::Map(name, e))?;
        let keep: HashSet<&K> = want.iter().map(|(k, _)| k).collect();
        let stale: Vec<K> =
            map.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
        for k in stale {
            map.remove(&k).map_err(|e| DatapathError::Map(name, e))?;
        }
        for (k, v) in want {
            map.insert(k, v, 0).map_err(|e| DatapathError::Map(name, e))?;
        }
        Ok(())
    }

    /// As [`Self::sync_hash`] for the allowed-sources trie: stale prefixes first.
    fn sync_allowed(&mut self, nets: &[ipnet::Ipv4Net]) -> Result<(), DatapathError> {
        let name = map_names::ALLOWED_SOURCES;
        let mut trie: LpmTrie<&mut MapData, u32, u8> =
            LpmTrie::try_from(self.map(name)?).map_err(|e| DatapathError::Map(name, e))?;
        let want: Vec<(u32, u32)> =
            nets.iter().map(|n| (n.prefix_len() as u32, ne_addr(n.network()))).collect();
        let stale: Vec<Key<u32>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            trie.remove(&k).map_err(|e| DatapathError::Map(name, e))?;
        }
        for (len, addr) in &want {
            trie.insert(&Key::new(*len, *addr), 1, 0).map_err(|e| DatapathError::Map(name, e))?;
        }
        Ok(())
    }
}

/// TCX (6.6): TC attachments are links, which can be pinned, taken over and checked.
fn tcx_available() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
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

/// Adds one to the NEXTHOP_GEN value (wrapping) and returns the new one. The daemon is its
/// only writer, the program only compares it.
pub fn bump_nexthop_gen<T: std::borrow::BorrowMut<MapData>>(
    arr: &mut Array<T, u32>,
) -> Result<u32, aya::maps::MapError> {
    let gen = arr.get(&0, 0)?.wrapping_add(1);
    arr.set(0, gen, 0)?;
    Ok(gen)
}

/// Convenience for logs and tests.
pub fn addr_from_ne(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}
