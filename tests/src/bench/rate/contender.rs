//! The ways N can forward the flow, each set up in a fresh bed and taken down after it.

use super::{
    bed::Bed,
    progs::{Ceiling, Floor},
    rules,
};
use crate::topology::{cli, unload, Daemon};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// forwarder-bench-ebpf's floor: TTL, MACs of a fixed next hop, XDP_TX / redirect. What
    /// the bed costs per frame, with the least any XDP forwarder does.
    Floor,
    /// forwarder-bench-ebpf's FIB-forwarding XDP program: no NAT, no conntrack.
    Ceiling,
    ForwarderXdp,
    ForwarderXdpGeneric,
    ForwarderTc,
    /// What `ip_fwd.sh` writes: DNAT in PREROUTING, MASQUERADE in POSTROUTING.
    Iptables,
    Nftables,
    /// nftables NAT plus a flowtable (the kernel's fast path for established flows).
    NftFlowtable,
    /// Plain forwarding of frames addressed to the broker: no NAT, no conntrack.
    Routing,
}

impl Contender {
    pub const ALL: [Contender; 9] = [
        Contender::Floor,
        Contender::Ceiling,
        Contender::ForwarderXdp,
        Contender::ForwarderXdpGeneric,
        Contender::ForwarderTc,
        Contender::Iptables,
        Contender::Nftables,
        Contender::NftFlowtable,
        Contender::Routing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Floor => "floor (XDP, fixed next hop, no NAT)",
            Contender::Ceiling => "ceiling (XDP FIB forward, no NAT)",
            Contender::ForwarderXdp => "forwarder xdp",
            Contender::ForwarderXdpGeneric => "forwarder xdp-generic",
            Contender::ForwarderTc => "forwarder tc",
            Contender::Iptables => "iptables (ip_fwd.sh)",
            Contender::Nftables => "nftables dnat + masquerade",
            Contender::NftFlowtable => "nftables + flowtable",
            Contender::Routing => "Linux routing, no NAT",
        }
    }

    /// Whether it translates: the generator then continues a real connection made through
    /// it; otherwise frames go to the broker's address directly and need no handshake.
    pub fn nat(self) -> bool {
        !matches!(self, Contender::Floor | Contender::Ceiling | Contender::Routing)
    }

    /// Whether it is the forwarder, in one of its modes.
    pub fn is_forwarder(self) -> bool {
        self.forwarder_mode().is_some()
    }

    fn forwarder_mode(self) -> Option<&'static str> {
        match self {
            Contender::ForwarderXdp => Some("xdp"),
            Contender::ForwarderXdpGeneric => Some("xdp-generic"),
            Contender::ForwarderTc => Some("tc"),
            _ => None,
        }
    }
}

/// A contender running in a bed.
pub enum Setup {
    Ceiling(#[allow(dead_code)] Vec<Ceiling>),
    Floor(#[allow(dead_code)] Floor),
    Forwarder {
        daemon: Daemon,
        config: PathBuf,
    },
    /// Netfilter rules or plain routing: they go with the namespace.
    Kernel,
}

/// Why a contender could not run on this machine (the only accepted reason to skip one).
pub struct Unavailable(pub String);

impl Setup {
    pub fn enter(bed: &Bed, c: Contender) -> Result<Result<Setup, Unavailable>> {
        let nat = &bed.nat;
        Ok(Ok(match c {
            Contender::Ceiling => {
                let progs: Result<Vec<_>> =
                    bed.nat_ifaces().iter().map(|i| Ceiling::attach(nat, i)).collect();
                Setup::Ceiling(progs?)
            }
            Contender::Floor => {
                let out = nat.ifindex(bed.out_iface())?;
                Setup::Floor(Floor::attach(nat, "n0", bed.macs().1, out)?)
            }
            Contender::Routing => Setup::Kernel,
            Contender::Iptables => {
                for rule in rules::ip_fwd(bed) {
                    let mut cmd = vec!["iptables"];
                    cmd.extend(rule.split_whitespace());
                    nat.exec(&cmd)?;
                }
                Setup::Kernel
            }
            Contender::Nftables => {
                nft(bed, &rules::nft_nat(bed))?;
                Setup::Kernel
            }
            Contender::NftFlowtable => {
                // CONFIG_NF_FLOW_TABLE may be missing (and modules cannot be loaded here).
                if let Err(e) = nft(bed, &rules::nft_flowtable(bed)) {
                    // nft quotes the ruleset around its error: keep the error line alone.
                    let text = format!("{e:#}");
                    let line = text.lines().find(|l| l.contains("Error:")).unwrap_or(&text);
                    let why = line.split("Error:").last().unwrap_or(line).trim();
                    // The kernel's answer when it has no flowtable type; anything else (a
                    // ruleset nft refuses, say) is the bench's fault and must fail loudly.
                    if !why.contains("No such file or directory") && !why.contains("not supported")
                    {
                        return Err(e.context("creating the flowtable"));
                    }
                    return Ok(Err(Unavailable(format!(
                        "not available on this kernel (creating a flowtable: {why})"
                    ))));
                }
                nft(bed, &rules::nft_nat(bed))?;
                Setup::Kernel
            }
            c => {
                let mode = c.forwarder_mode().expect("the other contenders are the forwarder's");
                let daemon = Daemon::start(nat, &rules::forwarder_config(bed, mode))?;
                let config = daemon.config.clone();
                Setup::Forwarder { daemon, config }
            }
        }))
    }

    /// After the flow was opened through it: for the forwarder, the flow must be its own.
    pub fn check_flow(&self, bed: &Bed, client: std::net::SocketAddrV4) -> Result<()> {
        if let Setup::Forwarder { .. } = self {
            let row = self.flow_row(bed, client)?;
            if row.is_none() {
                bail!("`forwarder flows` does not list the connection from {client}");
            }
        }
        Ok(())
    }

    /// For the forwarder: packets it counted on the flow from `client`.
    pub fn flow_packets(&self, bed: &Bed, client: std::net::SocketAddrV4) -> Result<Option<u64>> {
        Ok(self.flow_row(bed, client)?.and_then(|r| r["packets"].as_u64()))
    }

    fn flow_row(
        &self,
        bed: &Bed,
        client: std::net::SocketAddrV4,
    ) -> Result<Option<serde_json::Value>> {
        let Setup::Forwarder { config, .. } = self else { return Ok(None) };
        let out = cli(&bed.nat, config, &["flows", "--json"])?;
        if !out.status.success() {
            bail!("forwarder flows: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("forwarder flows --json")?;
        let client = client.to_string();
        Ok(v.as_array().and_then(|a| a.iter().find(|r| r["client"] == client.as_str())).cloned())
    }

    pub fn leave(self, bed: &Bed) -> Result<()> {
        match self {
            Setup::Forwarder { daemon, config } => {
                daemon.stop()?;
                unload(&bed.nat, &config)
            }
            Setup::Ceiling(_) | Setup::Floor(_) | Setup::Kernel => Ok(()),
        }
    }
}

/// `nft -f` of `ruleset` in N.
fn nft(bed: &Bed, ruleset: &str) -> Result<()> {
    let path = std::env::temp_dir().join(format!("{}.nft", bed.nat.name()));
    std::fs::write(&path, ruleset)?;
    let r = bed.nat.exec(&["nft", "-f", path.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&path);
    r.map(|_| ())
}
