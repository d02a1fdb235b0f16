//! Checking parsed settings against this host (the impure half of [`load`](super::load)),
//! in the caller's network namespace. Each check points its error at the place in the text
//! the settings came from.

use super::{
    spans::{Section, Source, Span},
    validate::{interface_entries, kafka_key_span, rule_sections},
    ConfigCause, ConfigError, ListenIp, Settings,
};
use crate::host::netif;
use forwarder_common::MAX_LISTEN_ADDRS;
use std::{ffi::CString, net::Ipv4Addr, path::Path, sync::Arc};
use toml_edit::ImDocument;

/// Checks settings parsed from `text` (with [`parse`](super::parse)) against this host, in
/// the caller's network namespace: every interface exists; no rule's target is one of this
/// host's own addresses (the rule would hand this VM's own services, SSH say, to every
/// client of the load balancer); with `listen_ip = "auto"`, the interfaces have no more
/// IPv4 addresses than the data path's table holds. The error points at the place in `text`.
pub fn check_host(settings: &Settings, text: &str) -> Result<(), ConfigError> {
    let file = settings.path.display().to_string();
    let src = Source { file: &file, text };
    let doc = ImDocument::parse(text).ok();
    let root = doc.as_ref().map(|d| Section { src: &src, table: d.as_table(), prefix: "", at: 0 });
    let check = Check { settings, src: &src, root: root.as_ref() };

    check.interfaces_exist()?;
    let host = netif::host_ipv4_addrs().map_err(|e| {
        src.error(0..0, "interface", "cannot list this host's addresses to check the file")
            .because(ConfigCause::HostAddresses(e.into()))
    })?;
    check.no_target_is_own(&host)?;
    if settings.listen_ip == ListenIp::Auto {
        check.listen_addresses_fit(&host)?;
    }
    check.kafka_files_usable()
}

/// The settings and the text they came from (`root`: its top-level table, when it still
/// parses), for errors that point into the text.
struct Check<'a> {
    settings: &'a Settings,
    src: &'a Source<'a>,
    root: Option<&'a Section<'a>>,
}

impl Check<'_> {
    /// Every interface of the file exists here.
    fn interfaces_exist(&self) -> Result<(), ConfigError> {
        match self.settings.interfaces.iter().find(|i| !interface_exists(i)) {
            None => Ok(()),
            Some(missing) => Err(self.src.error(
                self.interface_span(missing),
                "interface",
                format!(
                    "expected an existing network interface; there is no {missing:?} on this \
                     host (see `ip link`)"
                ),
            )),
        }
    }

    /// No rule's (IPv4 literal) target is an address of this host.
    fn no_target_is_own(&self, host: &[(String, Ipv4Addr)]) -> Result<(), ConfigError> {
        for (i, rule) in self.settings.rules.iter().enumerate() {
            let Some(addr) = rule.target.addr else { continue };
            if let Some(iface) = netif::interface_of(host, addr) {
                let span = self
                    .root
                    .and_then(|r| rule_sections(r).ok())
                    .and_then(|rules| rules.get(i).and_then(|r| r.get("target")).map(|(s, _)| s))
                    .unwrap_or(0..0);
                return Err(self.src.error(span, "rule.target", own_address_message(addr, iface)));
            }
        }
        Ok(())
    }

    /// With `listen_ip = "auto"`: the interfaces' IPv4 addresses fit the data path's table.
    fn listen_addresses_fit(&self, host: &[(String, Ipv4Addr)]) -> Result<(), ConfigError> {
        let interfaces = &self.settings.interfaces;
        let mut listen: Vec<Ipv4Addr> =
            host.iter().filter(|(iface, _)| interfaces.contains(iface)).map(|(_, a)| *a).collect();
        listen.sort_unstable();
        listen.dedup();
        if listen.len() <= MAX_LISTEN_ADDRS as usize {
            return Ok(());
        }
        let message = format!(
            "expected at most {MAX_LISTEN_ADDRS} listen addresses (the size of the data path's \
             table); listen_ip = \"auto\" takes every IPv4 address of {}, {} of them: set \
             listen_ip to the one address the load balancer sends to, or \"any\"",
            interfaces.join(", "),
            listen.len()
        );
        // At listen_ip when it is written, else at the interfaces whose addresses count.
        Err(match self.root.and_then(|r| r.get("listen_ip")) {
            Some((span, _)) => self.src.error(span, "listen_ip", message),
            None => self.src.error(self.interface_span(&interfaces[0]), "interface", message),
        })
    }

    /// The files `[kafka]` names can be read and used: the CA, the client certificate and
    /// key (they go together), the password.
    fn kafka_files_usable(&self) -> Result<(), ConfigError> {
        let Some(kafka) = &self.settings.kafka else { return Ok(()) };
        let Err(e) = kafka.security() else { return Ok(()) };
        let key = super::kafka::field_of(&e);
        let span = self.root.and_then(|r| kafka_key_span(r, key)).unwrap_or(0..0);
        let message = "cannot use what it names";
        Err(self
            .src
            .error(span, &format!("kafka.{key}"), message)
            .because(ConfigCause::Kafka(Arc::new(e))))
    }

    /// Where the interface `name` is written, for errors about it.
    fn interface_span(&self, name: &str) -> Span {
        self.root
            .and_then(|r| interface_entries(r).ok())
            .and_then(|entries| entries.into_iter().find(|(n, _)| *n == name).map(|(_, s)| s))
            .unwrap_or(0..0)
    }
}

/// Why a target of `addr` (an address of `iface` here) is refused; shared with the CLI's
/// `rule add` and the plan's check of resolved hostnames.
pub fn own_address_message(addr: Ipv4Addr, iface: &str) -> String {
    format!(
        "expected the address of another host; {addr} is this host's own (on {iface}), so \
         the rule would expose this VM's own services to every client of the load balancer"
    )
}

/// Whether a network interface of that name exists in this thread's network namespace.
/// Asked through if_nametoindex, which answers for the caller's namespace, unlike
/// /sys/class/net (that shows the namespace sysfs was mounted in); /sys/class/net is the
/// fallback when the question cannot be asked (no socket allowed, say).
fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else { return false };
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(c.as_ptr()) } != 0 {
        return true;
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENODEV) {
        return false;
    }
    Path::new("/sys/class/net").join(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, test_text::at};

    #[test]
    fn the_host_check_points_at_the_missing_interface() {
        let text = "interface = [\"lo\", \"fwt-nosuch0\"]\n";
        let s = parse(Path::new("f.toml"), text).unwrap();
        let e = check_host(&s, text).unwrap_err();
        assert_eq!(at(&e), (1, 20, "interface"), "{e}");
        assert!(e.message.contains("\"fwt-nosuch0\""), "{e}");
        let text = "interface = \"lo\"\n";
        check_host(&parse(Path::new("f.toml"), text).unwrap(), text).unwrap();
    }

    #[test]
    fn the_files_of_kafka_are_read_and_errors_point_at_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let text = format!(
            "interface = \"lo\"\n[kafka]\nbootstrap = \"b:1\"\nca_file = \"{}\"\n",
            missing.display()
        );
        let s = parse(Path::new("f.toml"), &text).unwrap();
        let e = check_host(&s, &text).unwrap_err();
        assert_eq!(at(&e), (4, 11, "kafka.ca_file"), "{e}");
        let shown = crate::error::chain(&e);
        assert!(shown.contains("No such file"), "{shown}");

        let password = dir.path().join("password");
        std::fs::write(&password, "\n").unwrap();
        let text = format!(
            "interface = \"lo\"\n[kafka]\nbootstrap = \"b:1\"\nsasl_mechanism = \"plain\"\n\
             sasl_username = \"u\"\nsasl_password_file = \"{}\"\n",
            password.display()
        );
        let s = parse(Path::new("f.toml"), &text).unwrap();
        let e = check_host(&s, &text).unwrap_err();
        assert_eq!(at(&e), (6, 22, "kafka.sasl_password_file"), "{e}");
        assert!(crate::error::chain(&e).ends_with("empty (the secret is its first line)"), "{e}");
        std::fs::write(&password, "secret\n").unwrap();
        check_host(&s, &text).unwrap();
    }
}
