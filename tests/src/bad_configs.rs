//! Invalid configuration files: each case is a complete file that is valid except for one
//! mistake, with where and how the forwarder must report it (`FILE:LINE:COL: FIELD: MESSAGE`).
//!
//! The table holds file contents only (no paths), so the same cases can go through
//! `forwarder check-config` and through a live daemon's reload (which must then change
//! nothing). The base it varies is [`BaseConfig`]: by default on interface "lo", so the host
//! check passes anywhere; a test with its own daemon can put in its interface, control
//! socket and pin path (those only change the values on their lines, never a line number),
//! and the address that is its host's own (a target there is refused).

/// One invalid configuration file and the error it must produce.
#[derive(Debug, Clone)]
pub struct BadConfig {
    /// Unique, usable in a file name.
    pub name: &'static str,
    /// The whole file.
    pub text: String,
    /// The line (1-based) the error must name.
    pub line: usize,
    /// The field the error must name ("max_flows", "timeouts.syn", "rule.listen", ...).
    pub field: &'static str,
    /// A piece of the message: what was expected, or what was wrong.
    pub message_contains: &'static str,
}

/// The valid configuration every case is a variation of.
#[derive(Debug, Clone)]
pub struct BaseConfig {
    pub interface: String,
    pub control_socket: String,
    pub pin_path: String,
    /// An IPv4 address of the host the file is checked on, other than loopback (which
    /// targets refuse as such); `None` leaves out the case that needs one.
    pub own_address: Option<std::net::Ipv4Addr>,
}

impl Default for BaseConfig {
    fn default() -> Self {
        Self {
            interface: "lo".into(),
            control_socket: "/run/forwarder/control.sock".into(),
            pin_path: "/sys/fs/bpf/forwarder".into(),
            own_address: own_address(),
        }
    }
}

/// The first IPv4 address of this namespace that is not loopback.
pub fn own_address() -> Option<std::net::Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|i| i.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip())))
        .find(|a| !a.is_loopback())
}

impl BaseConfig {
    /// The valid file: three rules, 9092/9093/9094 -> 10.20.0.11..13:9092, every top-level key
    /// and every timeout written out.
    pub fn text(&self) -> String {
        format!(
            r#"# A valid forwarder configuration; each bad case changes one thing in it.
interface = "{interface}"
mode = "auto"
listen_ip = "auto"
snat_ip = "auto"
snat_ports = "40000-59999"
allowed_sources = ["10.1.0.0/16", "192.168.7.0/24"]
max_flows = 262144
mss_clamp = 1360
health = "0.0.0.0:8080"
metrics = "127.0.0.1:9464"
control_socket = "{control_socket}"
pin_path = "{pin_path}"
dns_refresh = "30s"

[timeouts]
syn = "60s"
established = "2h11m15s"
closing = "2m"

[[rule]]
name = "broker-1"
listen = 9092
target = "10.20.0.11:9092"

[[rule]]
name = "broker-2"
listen = 9093
target = "10.20.0.12:9092"

[[rule]]
name = "broker-3"
listen = 9094
target = "10.20.0.13:9092"
"#,
            interface = self.interface,
            control_socket = self.control_socket,
            pin_path = self.pin_path,
        )
    }
}

/// The default base configuration's text (interface "lo").
pub fn base_config() -> String {
    BaseConfig::default().text()
}

/// The cases on the default base (interface "lo").
pub fn cases() -> Vec<BadConfig> {
    cases_for(&BaseConfig::default())
}

/// Line edits of the base text; lines are 1-based.
struct Lines(Vec<String>);

impl Lines {
    /// The line of the `nth` (1-based) line that starts with `prefix`.
    fn find_nth(&self, prefix: &str, nth: usize) -> usize {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with(prefix))
            .nth(nth - 1)
            .map(|(i, _)| i + 1)
            .unwrap_or_else(|| {
                panic!("the base config has no line #{nth} starting with {prefix:?}")
            })
    }

    fn find(&self, prefix: &str) -> usize {
        self.find_nth(prefix, 1)
    }

    /// The line of `key` inside the `rule`-th (1-based) [[rule]].
    fn rule(&self, rule: usize, key: &str) -> usize {
        let header = self.find_nth("[[rule]]", rule);
        header
            + self.0[header..]
                .iter()
                .position(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("rule {rule} has no {key:?}"))
            + 1
    }

    fn join(lines: &[String]) -> String {
        let mut s = lines.join("\n");
        s.push('\n');
        s
    }

    fn replace(&self, line: usize, with: &str) -> String {
        let mut v = self.0.clone();
        v[line - 1] = with.to_string();
        Self::join(&v)
    }

    fn insert_after(&self, line: usize, text: &str) -> String {
        let mut v = self.0.clone();
        v.insert(line, text.to_string());
        Self::join(&v)
    }

    fn remove(&self, line: usize) -> String {
        let mut v = self.0.clone();
        v.remove(line - 1);
        Self::join(&v)
    }
}

/// The cases on `base`.
pub fn cases_for(base: &BaseConfig) -> Vec<BadConfig> {
    let b = Lines(base.text().lines().map(str::to_string).collect());
    let mut cases = Vec::new();
    let mut case = |name, text: String, line, field, message_contains| {
        cases.push(BadConfig { name, text, line, field, message_contains })
    };
    // Replaces the line of the top-level `key`; the error is on that line.
    let set = |key: &str, value: &str| {
        let l = b.find(&format!("{key} ="));
        (b.replace(l, &format!("{key} = {value}")), l)
    };
    // Replaces `key` in the `rule`-th rule.
    let set_rule = |rule: usize, key: &str, value: &str| {
        let l = b.rule(rule, &format!("{key} ="));
        (b.replace(l, &format!("{key} = {value}")), l)
    };
    // Replaces `key` in [timeouts].
    let set_timeout = |key: &str, value: &str| {
        let header = b.find("[timeouts]");
        let l = header + b.0[header..].iter().position(|x| x.starts_with(key)).unwrap() + 1;
        (b.replace(l, &format!("{key} = {value}")), l)
    };

    // ---- unknown keys and TOML mistakes
    let l = b.find("max_flows =");
    case(
        "unknown_top_level_key",
        b.insert_after(l, "max_flow = 4096"),
        l + 1,
        "max_flow",
        "unknown key",
    );
    let l = b.find("closing =");
    case(
        "unknown_key_in_timeouts",
        b.insert_after(l, "idle = \"5m\""),
        l + 1,
        "timeouts.idle",
        "unknown key",
    );
    let l = b.rule(2, "target =");
    case(
        "unknown_key_in_rule",
        b.insert_after(l, "weight = 2"),
        l + 1,
        "rule.weight",
        "unknown key",
    );
    let l = b.find("[timeouts]") - 1;
    case("unknown_table", b.replace(l, "[limits]"), l, "limits", "unknown key");
    let l = b.find("mss_clamp =");
    case(
        "duplicate_key",
        b.insert_after(l, "mss_clamp = 1400"),
        l + 1,
        "mss_clamp",
        "duplicate key",
    );
    let (t, l) = set("mode", "\"auto");
    case("unterminated_string", t, l, "mode", "invalid TOML");

    // ---- interface
    let (t, l) = set("interface", "7");
    case("interface_integer", t, l, "interface", "expected an interface name");
    let (t, l) = set("interface", "\"averyveryverylongifname\"");
    case("interface_name_too_long", t, l, "interface", "1 to 15 characters");
    let (t, l) = set("interface", "[]");
    case("interface_empty_list", t, l, "interface", "at least one interface");
    let dup = format!("[{0:?}, {0:?}]", base.interface);
    let (t, l) = set("interface", &dup);
    case("interface_listed_twice", t, l, "interface", "listed twice");
    let l = b.find("interface =");
    case("interface_key_missing", b.remove(l), 1, "interface", "missing key");
    let (t, l) = set("interface", "\"fwt-nosuch0\"");
    case("interface_not_on_this_host", t, l, "interface", "expected an existing network interface");

    // ---- mode, addresses
    let (t, l) = set("mode", "\"native\"");
    case(
        "mode_unknown",
        t,
        l,
        "mode",
        "expected one of \"auto\", \"xdp\", \"xdp-generic\", \"tc\"",
    );
    let (t, l) = set("listen_ip", "\"10.0.0.256\"");
    case(
        "listen_ip_invalid",
        t,
        l,
        "listen_ip",
        "expected \"auto\", \"any\" or a unicast IPv4 address",
    );
    let (t, l) = set("snat_ip", "\"eth0\"");
    case("snat_ip_invalid", t, l, "snat_ip", "expected \"auto\" or a unicast IPv4 address");
    let (t, l) = set("snat_ip", "\"255.255.255.255\"");
    case("snat_ip_broadcast", t, l, "snat_ip", "expected \"auto\" or a unicast IPv4 address");

    // ---- snat_ports (LOW-HIGH, 1024 <= LOW <= HIGH <= 65535)
    let (t, l) = set("snat_ports", "\"59999-40000\"");
    case("snat_ports_reversed", t, l, "snat_ports", "LOW is above HIGH");
    let (t, l) = set("snat_ports", "\"40000-70000\"");
    case("snat_ports_above_65535", t, l, "snat_ports", "ports end at 65535");
    let (t, l) = set("snat_ports", "\"40000\"");
    case("snat_ports_no_dash", t, l, "snat_ports", "expected a port range LOW-HIGH");
    let (t, l) = set("snat_ports", "\"80-1023\"");
    case("snat_ports_below_1024", t, l, "snat_ports", "below 1024");
    let (t, l) = set("snat_ports", "40000");
    case("snat_ports_integer", t, l, "snat_ports", "expected a port range LOW-HIGH");

    // ---- allowed_sources
    let (t, l) = set("allowed_sources", "\"10.1.0.0/16\"");
    case("allowed_sources_not_a_list", t, l, "allowed_sources", "expected a list of IPv4 CIDRs");
    let (t, l) = set("allowed_sources", "[\"10.1.0.0/33\", \"192.168.7.0/24\"]");
    case("allowed_sources_prefix_33", t, l, "allowed_sources", "expected an IPv4 CIDR");
    let (t, l) = set("allowed_sources", "[\"10.1.0.0/16\", \"192.168.7/24\"]");
    case("allowed_sources_short_address", t, l, "allowed_sources", "expected an IPv4 CIDR");
    let (t, l) = set("allowed_sources", "[\"10.1.0.0/16\", 10]");
    case("allowed_sources_integer_item", t, l, "allowed_sources", "expected an IPv4 CIDR");
    let (t, l) = set("allowed_sources", "[]");
    case("allowed_sources_empty", t, l, "allowed_sources", "at least one");

    // ---- numbers
    let (t, l) = set("max_flows", "\"262144\"");
    case("max_flows_string", t, l, "max_flows", "expected an integer from 1024 to 16777216");
    let (t, l) = set("max_flows", "100");
    case("max_flows_too_small", t, l, "max_flows", "expected an integer from 1024 to 16777216");
    let (t, l) = set("max_flows", "100000000");
    case("max_flows_too_large", t, l, "max_flows", "expected an integer from 1024 to 16777216");
    let (t, l) = set("mss_clamp", "100");
    case("mss_clamp_too_small", t, l, "mss_clamp", "expected an integer from 536 to 9000");
    let (t, l) = set("mss_clamp", "1360.5");
    case("mss_clamp_float", t, l, "mss_clamp", "expected an integer from 536 to 9000");

    // ---- health and metrics sockets
    let (t, l) = set("health", "\"0.0.0.0\"");
    case("health_no_port", t, l, "health", "expected IP:PORT");
    let (t, l) = set("health", "\"localhost:8080\"");
    case("health_hostname", t, l, "health", "expected IP:PORT");
    let (t, l) = set("health", "\"0.0.0.0:0\"");
    case("health_port_zero", t, l, "health", "expected IP:PORT");
    let (t, l) = set("metrics", "\"127.0.0.1:99999\"");
    case("metrics_port_above_65535", t, l, "metrics", "expected IP:PORT");
    let (t, l) = set("metrics", "\"0.0.0.0:8080\"");
    case("metrics_on_the_health_port", t, l, "metrics", "other than the health port");
    let (t, l) = set("health", "\"0.0.0.0:45000\"");
    case("health_port_in_snat_ports", t, l, "health", "outside snat_ports");

    // ---- paths
    let (t, l) = set("control_socket", "\"run/forwarder/control.sock\"");
    case("control_socket_relative", t, l, "control_socket", "expected an absolute path");
    let long = format!("\"/run/forwarder/{}.sock\"", "x".repeat(100));
    let (t, l) = set("control_socket", &long);
    case("control_socket_too_long", t, l, "control_socket", "at most 107 bytes");
    let (t, l) = set("pin_path", "\"forwarder\"");
    case("pin_path_relative", t, l, "pin_path", "inside a bpffs mount");
    let (t, l) = set("pin_path", "\"/sys/fs/bpf/../../tmp/forwarder\"");
    case("pin_path_escapes_bpffs", t, l, "pin_path", "inside a bpffs mount");
    let (t, l) = set("pin_path", "\"/sys/\"");
    case("pin_path_mount_point_itself", t, l, "pin_path", "inside a bpffs mount");

    // ---- durations (1s to 30d)
    let (t, l) = set("dns_refresh", "\"soon\"");
    case("dns_refresh_not_a_duration", t, l, "dns_refresh", "expected a duration");
    let (t, l) = set("dns_refresh", "\"30\"");
    case("dns_refresh_no_unit", t, l, "dns_refresh", "expected a duration");
    let (t, l) = set_timeout("syn", "\"0s\"");
    case("timeout_syn_zero", t, l, "timeouts.syn", "from 1s to 30d");
    let (t, l) = set_timeout("established", "7200");
    case("timeout_established_integer", t, l, "timeouts.established", "expected a duration");
    let (t, l) = set_timeout("closing", "\"-2m\"");
    case("timeout_closing_negative", t, l, "timeouts.closing", "expected a duration");
    let (t, l) = set_timeout("established", "\"400d\"");
    case("timeout_established_too_long", t, l, "timeouts.established", "from 1s to 30d");

    // ---- rules: names and listen ports
    let (t, l) = set_rule(2, "name", "\"broker-1\"");
    case("rule_name_duplicate", t, l, "rule.name", "duplicate rule name");
    let (t, l) = set_rule(2, "name", "\"broker 2\"");
    case("rule_name_with_space", t, l, "rule.name", "expected a name of letters");
    let (t, l) = set_rule(2, "name", "2");
    case("rule_name_integer", t, l, "rule.name", "expected a name of letters");
    // A pasted blob as a name would go into every table, label and the state file.
    let (t, l) = set_rule(2, "name", &format!("{:?}", "n".repeat(10_000)));
    case("rule_name_10000_characters", t, l, "rule.name", "at most 64 characters");
    let (t, l) = set_rule(2, "name", &format!("{:?}", "n".repeat(65)));
    case("rule_name_65_characters", t, l, "rule.name", "at most 64 characters");
    let (t, l) = set_rule(3, "listen", "9092");
    case("rule_listen_taken", t, l, "rule.listen", "already the listen port of another rule");
    let (t, l) = set_rule(2, "listen", "45000");
    case("rule_listen_in_snat_ports", t, l, "rule.listen", "inside snat_ports");
    let (t, l) = set_rule(1, "listen", "0");
    case("rule_listen_zero", t, l, "rule.listen", "expected a port from 1 to 65535");
    let (t, l) = set_rule(1, "listen", "65536");
    case("rule_listen_above_65535", t, l, "rule.listen", "expected a port from 1 to 65535");
    let (t, l) = set_rule(1, "listen", "\"9092\"");
    case("rule_listen_string", t, l, "rule.listen", "expected a port from 1 to 65535");
    let (t, l) = set_rule(3, "listen", "8080");
    case("rule_listen_on_the_health_port", t, l, "rule.listen", "health port");
    // metrics on every address and the port of rule 3: reported at that rule's listen.
    let (t, _) = set("metrics", "\"0.0.0.0:9094\"");
    case("metrics_on_a_rule_port", t, b.rule(3, "listen ="), "rule.listen", "metrics port");

    // ---- rules: missing keys (reported at the rule's [[rule]] header)
    let l = b.rule(2, "name =");
    case("rule_name_missing", b.remove(l), b.find_nth("[[rule]]", 2), "rule.name", "missing key");
    let l = b.rule(3, "listen =");
    case(
        "rule_listen_missing",
        b.remove(l),
        b.find_nth("[[rule]]", 3),
        "rule.listen",
        "missing key",
    );
    let l = b.rule(1, "target =");
    case(
        "rule_target_missing",
        b.remove(l),
        b.find_nth("[[rule]]", 1),
        "rule.target",
        "missing key",
    );

    // ---- rules: targets
    let (t, l) = set_rule(2, "target", "\"10.20.0.12\"");
    case("target_no_port", t, l, "rule.target", "no port");
    let (t, l) = set_rule(2, "target", "\"10.20.0.12:0\"");
    case("target_port_zero", t, l, "rule.target", "port 0");
    let (t, l) = set_rule(2, "target", "\"10.20.0.12:65536\"");
    case("target_port_above_65535", t, l, "rule.target", "not a port");
    let (t, l) = set_rule(2, "target", "\"[fd00::12]:9092\"");
    case("target_ipv6", t, l, "rule.target", "IPv6 is not supported");
    let (t, l) = set_rule(2, "target", "\":9092\"");
    case("target_empty_host", t, l, "rule.target", "empty host");
    let (t, l) = set_rule(2, "target", "\"broker_2.corp.example:9092\"");
    case("target_bad_hostname", t, l, "rule.target", "not a hostname or IPv4 address");
    let (t, l) = set_rule(2, "target", "\"127.0.0.1:9092\"");
    case("target_loopback", t, l, "rule.target", "not a unicast address of another host");
    let (t, l) = set_rule(2, "target", "10");
    case("target_integer", t, l, "rule.target", "expected HOST:PORT");
    // The VM's own SSH, offered to every client of the load balancer.
    if let Some(own) = base.own_address {
        let (t, l) = set_rule(2, "target", &format!("\"{own}:22\""));
        case("target_own_address", t, l, "rule.target", "this host's own");
    }
    let (t, l) = set_rule(2, "target", "\"0.0.0.0:22\"");
    case("target_unspecified", t, l, "rule.target", "not a unicast address of another host");
    let (t, l) = set_rule(2, "target", "\"127.3.4.5:22\"");
    case("target_loopback_net", t, l, "rule.target", "not a unicast address of another host");

    // ---- what the data path's tables hold (1024 allowed prefixes, 256 rules)
    let sources: Vec<String> =
        (0..1025u32).map(|i| format!("\"10.9.{}.{}/32\"", i / 256, i % 256)).collect();
    let (t, l) = set("allowed_sources", &format!("[{}]", sources.join(", ")));
    case("allowed_sources_over_capacity", t, l, "allowed_sources", "at most 1024");
    let last = b.rule(3, "target =");
    let extra: Vec<String> = (0..254)
        .map(|i| {
            format!(
                "\n[[rule]]\nname = \"extra-{i}\"\nlisten = {}\ntarget = \"10.20.0.11:9092\"",
                10000 + i
            )
        })
        .collect();
    let t = b.insert_after(last, &extra.join("\n"));
    // The 257th [[rule]] header: three in the base, then 254 of five lines each.
    let l = last + 2 + 5 * 253;
    case("rules_over_capacity", t, l, "rule", "at most 256 rules");

    // ---- [kafka] (the watch), after the last rule; the mistake on the section's last line
    let kafka = |body: &str| {
        let t = b.insert_after(last, &format!("\n[kafka]\n{body}"));
        (t, last + 2 + body.lines().count())
    };
    let (t, l) = kafka("bootstrap = \"broker1.corp.example\"");
    case("kafka_bootstrap_without_port", t, l, "kafka.bootstrap", "no port");
    let (t, l) = kafka("bootstrap = \"broker1.corp.example:9092\"\nsasl_mechanism = \"gssapi\"");
    case("kafka_unknown_mechanism", t, l, "kafka.sasl_mechanism", "\"oauthbearer\"");
    let (t, l) = kafka("bootstrap = \"broker1.corp.example:9092\"\nclient_cert = \"/etc/c.pem\"");
    case("kafka_client_cert_without_key", t, l, "kafka.client_cert", "client_key");
    let (t, l) =
        kafka("bootstrap = \"broker1.corp.example:9092\"\nca_file = \"/nonexistent/ca.pem\"");
    case("kafka_ca_file_missing", t, l, "kafka.ca_file", "cannot use what it names");

    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_case_differs_from_the_base() {
        let base = base_config();
        let mut names = std::collections::HashSet::new();
        for c in cases() {
            assert!(names.insert(c.name), "duplicate case name {}", c.name);
            assert_ne!(c.text, base, "{} changes nothing", c.name);
            assert!(c.line >= 1 && c.line <= c.text.lines().count(), "{}: line {}", c.name, c.line);
        }
        assert!(names.len() >= 35);
    }
}
