//! Attaching the program to an interface in the configured mode (native XDP, generic XDP,
//! TC), taking over a previous daemon's pinned attachment by swapping the program into its
//! link, and repairing an attachment someone else removed.

use super::{Attached, Attachment, Datapath, DatapathError, HeldLink, NewLink};
use crate::{config::Mode, datapath::pins::Pins};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachType},
        xdp::XdpLink,
        SchedClassifier, Xdp, XdpMode,
    },
    util::KernelVersion,
};
use forwarder_common::program_names;
use std::path::Path;

impl Datapath {
    /// Attaches to `iface` in `mode`; `auto` tries native XDP, then generic XDP, then TC.
    /// With pins, an attachment a previous daemon pinned is taken over by swapping this
    /// program into its link (no packet sees a gap); a new one is pinned.
    pub fn attach(&mut self, iface: &str, mode: Mode) -> Result<Attached, DatapathError> {
        let Some(pins) = self.pins.clone() else {
            // Unpinned (tests, tools): the program object keeps the link.
            let (how, _) = self.attach_new(iface, mode)?;
            self.record(iface, how, None);
            return Ok(how);
        };
        if let Some((how, path)) = pins.find_link(iface) {
            // A generic attachment pinned before a VF under the interface began merging
            // segments is not taken over: it would send wrong checksums.
            let merged_below =
                if how == Attached::XdpGeneric { refuse_merged_below(iface).err() } else { None };
            if let Some(e) = &merged_below {
                tracing::warn!(iface, "re-attaching the pinned attachment: {e}");
            } else if mode_allows(mode, how) {
                if self.migration.is_some() {
                    // Verified before the upgrade's window opens, not inside it (the
                    // verifier takes hundreds of milliseconds).
                    match how {
                        Attached::Tc => drop(self.tc_program()?),
                        _ => drop(self.xdp_program(program_names::XDP)?),
                    }
                    self.migration.as_mut().expect("migrating").swapping();
                }
                self.take_over(iface, how, &path)?;
                tracing::info!(iface, mode = how.name(), "took over the pinned attachment");
                return Ok(how);
            } else {
                tracing::warn!(
                    iface,
                    pinned = how.name(),
                    configured = mode.name(),
                    "the configured mode differs from the pinned attachment; re-attaching"
                );
            }
            let _ = std::fs::remove_file(&path);
        }
        let (how, link) = self.attach_new(iface, mode)?;
        self.pin_link(iface, how, link, &pins)?;
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
            self.record(iface, how, Some(held));
        } else {
            let _ = std::fs::remove_file(&path);
            let link = self.attach_as(iface, how)?;
            self.pin_link(iface, how, link, &pins)?;
        }
        Ok(())
    }

    /// The program is on `iface` in mode `how`, through `link`.
    fn record(&mut self, iface: &str, how: Attached, link: Option<HeldLink>) {
        self.attachments.insert(iface.to_string(), Attachment { how, link });
    }

    /// Closes this process's handle on `iface`'s link (a detached link then goes).
    fn release(&mut self, iface: &str) {
        let held = self.attachments.get_mut(iface).and_then(|a| a.link.take());
        if let Some(h) = held {
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
        self.record(iface, how, Some(held));
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

    /// Pins the link just made for `iface`, so it outlives this process, and records the
    /// attachment.
    fn pin_link(
        &mut self,
        iface: &str,
        how: Attached,
        link: Option<NewLink>,
        pins: &Pins,
    ) -> Result<(), DatapathError> {
        let path = pins.link(iface, how);
        let link_err = |e| DatapathError::Link(path.display().to_string(), e);
        let fd_link: FdLink = match link {
            Some(NewLink::Xdp(id)) => {
                let prog = self.xdp_program(program_names::XDP)?;
                let link = prog
                    .take_link(id)
                    .map_err(|e| DatapathError::Program(program_names::XDP, e))?;
                FdLink::try_from(link).map_err(link_err)?
            }
            Some(NewLink::Tc(id)) => {
                let prog = self.tc_program()?;
                let link =
                    prog.take_link(id).map_err(|e| DatapathError::Program(program_names::TC, e))?;
                FdLink::try_from(link).map_err(link_err)?
            }
            None => {
                // Attached through netlink (no TCX before 6.6): that attachment stays in
                // the kernel by itself, but cannot be pinned or taken over.
                self.record(iface, how, None);
                return Ok(());
            }
        };
        let pinned =
            fd_link.pin(&path).map_err(|e| DatapathError::Pin(path.display().to_string(), e))?;
        self.record(iface, how, Some(HeldLink::Pinned(pinned)));
        Ok(())
    }

    /// The first of `mode`'s ways that attaches, and the link it made (none for TC through
    /// netlink).
    fn attach_new(
        &mut self,
        iface: &str,
        mode: Mode,
    ) -> Result<(Attached, Option<NewLink>), DatapathError> {
        let order: &[Attached] = match mode {
            Mode::Xdp => &[Attached::XdpDriver],
            Mode::XdpGeneric => &[Attached::XdpGeneric],
            Mode::Tc => &[Attached::Tc],
            Mode::Auto => &[Attached::XdpDriver, Attached::XdpGeneric, Attached::Tc],
        };
        let mut last = None;
        for &how in order {
            match self.attach_as(iface, how) {
                Ok(link) => return Ok((how, link)),
                Err(e) => {
                    if order.len() > 1 {
                        tracing::info!(
                            iface,
                            mode = how.name(),
                            "attach failed, trying the next mode: {}",
                            crate::error::chain(&e)
                        );
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one mode was tried"))
    }

    fn attach_as(&mut self, iface: &str, how: Attached) -> Result<Option<NewLink>, DatapathError> {
        let attach_err =
            |source| DatapathError::Attach { iface: iface.to_string(), mode: how.name(), source };
        match how {
            Attached::XdpDriver | Attached::XdpGeneric => {
                if how == Attached::XdpGeneric {
                    refuse_merged_below(iface)?;
                }
                let prog = self.xdp_program(program_names::XDP)?;
                let mode = if how == Attached::XdpDriver { XdpMode::Driver } else { XdpMode::Skb };
                let id = prog.attach(iface, mode).map_err(attach_err)?;
                Ok(Some(NewLink::Xdp(id)))
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
                Ok(tcx.then_some(NewLink::Tc(id)))
            }
        }
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
}

/// Generic XDP runs where the skb reaches the device: after GRO. On the device itself the
/// kernel skips GRO while a generic program is attached (netif_elide_gro), but a device
/// under it (Azure's accelerated-networking VF under hv_netvsc's eth0) merges segments
/// before handing them up, and a merged skb's TCP checksum field holds only the
/// pseudo-header's sum. Nothing an XDP program can read says so, and folding the port
/// change into such a field as into a complete checksum makes every segment cut from it
/// wrong. TC knows the skb's checksum state; `auto` moves on to it.
fn refuse_merged_below(iface: &str) -> Result<(), DatapathError> {
    match crate::host::nic::merging_lower(iface) {
        Some((lower, offload)) => Err(DatapathError::MergedBelow {
            iface: iface.to_string(),
            lower,
            offload,
            flag: if offload == "GRO" { "gro" } else { "lro" },
        }),
        None => Ok(()),
    }
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

/// TCX (6.6): TC attachments are links, which can be pinned, taken over and checked.
fn tcx_available() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}
