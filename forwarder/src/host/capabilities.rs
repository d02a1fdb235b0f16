//! Linux capabilities: the ones `forwarder run` needs, a process's sets as /proc shows them,
//! and naming the missing ones when loading or attaching fails for want of them (the
//! kernel's EPERM or EACCES, or a verifier rejection, says nothing of why).

use crate::error::StepError;
use std::{fmt, io};

/// Capability names by number, as in linux/capability.h (up to CAP_CHECKPOINT_RESTORE).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, thiserror::Error)]
#[error("unknown capability {0}")]
pub struct UnknownCapability(pub String);

/// A set of capabilities: bit N is capability N.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The set of `names` (`CAP_BPF`, ...); fails on a name this table does not know.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, UnknownCapability> {
        let mut bits = 0u64;
        for name in names {
            let n = NAMES
                .iter()
                .position(|known| known.eq_ignore_ascii_case(name))
                .ok_or_else(|| UnknownCapability(name.to_string()))?;
            bits |= 1 << n;
        }
        Ok(CapSet(bits))
    }

    pub fn contains(self, name: &str) -> bool {
        CapSet::from_names([name]).is_ok_and(|one| self.0 & one.0 != 0)
    }

    /// The names in the set, by number; a bit past the table shows as `cap_N`.
    pub fn names(self) -> Vec<String> {
        (0..64)
            .filter(|n| self.0 & (1 << n) != 0)
            .map(|n| NAMES.get(n).map_or_else(|| format!("cap_{n}"), |s| s.to_string()))
            .collect()
    }

    /// A `Cap*` line (`CapEff`, `CapPrm`, `CapBnd`, `CapInh`, `CapAmb`) of a
    /// `/proc/<pid>/status` text.
    pub fn parse_status(status: &str, field: &str) -> Option<Self> {
        let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
        u64::from_str_radix(line.trim(), 16).ok().map(CapSet)
    }

    /// `field` of process `pid` ("self" for this one).
    pub fn of_process(pid: &str, field: &str) -> io::Result<Self> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path)?;
        Self::parse_status(&text, field).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("no {field} line in {path}"))
        })
    }
}

impl fmt::Display for CapSet {
    /// The names separated by spaces, as a unit's `CapabilityBoundingSet=` lists them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(" "))
    }
}

/// A capability the daemon needs and what for.
struct Need {
    name: &'static str,
    /// Before Linux 5.8 CAP_SYS_ADMIN was the only way to these; it still grants them.
    or_sys_admin: bool,
    why: &'static str,
}

const NEEDS: [Need; 3] = [
    Need {
        name: "CAP_BPF",
        or_sys_admin: true,
        why: "to create and pin the maps and load the program",
    },
    Need {
        name: "CAP_PERFMON",
        or_sys_admin: true,
        why: "for the verifier to accept the program's pointer arithmetic",
    },
    Need {
        name: "CAP_NET_ADMIN",
        or_sys_admin: false,
        why: "to turn on forwarding on the interfaces and load and attach XDP and TC programs",
    },
];

/// The capabilities `forwarder run` needs that `effective` lacks, each with what it is for.
pub fn missing(effective: CapSet) -> Vec<String> {
    NEEDS
        .iter()
        .filter(|n| {
            !(effective.contains(n.name) || n.or_sys_admin && effective.contains("CAP_SYS_ADMIN"))
        })
        .map(|n| format!("{} ({})", n.name, n.why))
        .collect()
}

/// `err` with the capabilities this process lacks named first, if it lacks any; else `err`
/// as it is. For the errors of loading and attaching the program.
pub fn explain(err: StepError) -> StepError {
    let Ok(effective) = CapSet::of_process("self", "CapEff") else {
        return err;
    };
    let missing = missing(effective);
    if missing.is_empty() {
        return err;
    }
    let (noun, them) =
        if missing.len() == 1 { ("capability", "it") } else { ("capabilities", "them") };
    StepError::because(
        format!(
            "missing {noun} {}; the systemd unit grants {them} with CapabilityBoundingSet= and \
             AmbientCapabilities=",
            missing.join(", ")
        ),
        err,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_agree_with_the_kernel() {
        let set = CapSet::from_names(["CAP_NET_ADMIN", "cap_perfmon", "CAP_BPF"]).unwrap();
        assert_eq!(set, CapSet(1 << 12 | 1 << 38 | 1 << 39));
        assert_eq!(set.to_string(), "CAP_NET_ADMIN CAP_PERFMON CAP_BPF");
        assert!(CapSet::from_names(["CAP_NOPE"]).is_err());
        assert_eq!(CapSet(1 << 21 | 1 << 45).names(), ["CAP_SYS_ADMIN", "cap_45"]);
    }

    #[test]
    fn status_lines_parse() {
        let status = "Name:\tforwarder\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n";
        assert_eq!(CapSet::parse_status(status, "CapEff"), Some(CapSet(0xc0_0000_1000)));
        assert_eq!(CapSet::parse_status(status, "CapInh"), Some(CapSet(0)));
        assert_eq!(CapSet::parse_status(status, "CapBnd"), None);
    }

    #[test]
    fn missing_names_what_each_capability_is_for() {
        let all = CapSet::from_names(["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]).unwrap();
        assert!(missing(all).is_empty());
        let no_bpf = CapSet::from_names(["CAP_PERFMON", "CAP_NET_ADMIN"]).unwrap();
        let m = missing(no_bpf);
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("CAP_BPF (to create"), "{m:?}");
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, not for CAP_NET_ADMIN.
        let admin = CapSet::from_names(["CAP_SYS_ADMIN"]).unwrap();
        let m = missing(admin);
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("CAP_NET_ADMIN"), "{m:?}");
    }
}
