//! `forwarder doctor` against staged failures: each test builds the failure in a network
//! namespace (the iptables leftovers of ip_fwd.sh, a firewall drop on the probe port, a
//! listener on a rule port, unreserved SNAT ports, a dead target, a low MTU, a slow attach
//! mode), runs `doctor::run` on a thread inside that namespace, and checks that the finding
//! names the problem and the fix, and that the healthy variant passes.

use forwarder::{
    config::Settings,
    daemon::control::{Attachment, Probe, Status},
    ops::doctor::{self, Finding, Input},
};
use forwarder_tests::{netns::Netns, require_root};
use std::{net::TcpListener, path::Path, process::Command, time::Duration};

/// Connect timeout for targets; the namespaces are local, so 1 s is plenty.
const TIMEOUT: Duration = Duration::from_secs(1);
/// d0's address. Rule targets default to a closed port on it, which refuses at once.
const D0_ADDR: &str = "10.99.0.1";

/// Fails loudly when a tool a test stages its failure with is missing: installing it is the
/// operator's call, and a silently skipped check would prove nothing.
/// The tests of this file run one at a time. Some hold a listening socket and check which
/// process the doctor says holds it; a test running alongside that forks a child (every
/// `ip`, `iptables` or daemon it starts) makes that child hold an inherited copy of the
/// socket until it execs. Seen here: the port still taken when rebound, and the doctor
/// naming the other test's child as the listener's owner.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn require_tool(name: &str) {
    match Command::new(name).arg("--version").output() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{name}` is not installed on this host: the doctor tests stage their failures \
             with it (install the iptables / nftables package and run them again)"
        ),
        Err(e) => panic!("running `{name} --version`: {e}"),
    }
}

/// A config on d0 with `extra` settings and rules `(name, listen, target)`.
fn settings(extra: &str, rules: &[(&str, u16, &str)]) -> Settings {
    let mut text = format!(
        "interface = \"d0\"\nhealth = \"0.0.0.0:8080\"\nsnat_ports = \"40000-40099\"\n{extra}\n"
    );
    for (name, listen, target) in rules {
        text.push_str(&format!(
            "[[rule]]\nname = \"{name}\"\nlisten = {listen}\ntarget = \"{target}\"\n"
        ));
    }
    forwarder::config::parse(Path::new("test.toml"), &text).expect("test config")
}

/// Two broker rules whose targets refuse at once (their checks are not the point).
fn basic_settings(extra: &str) -> Settings {
    let target = format!("{D0_ADDR}:7000");
    settings(extra, &[("broker-1", 9092, &target), ("broker-2", 9093, &target)])
}

/// A namespace with d0 (one end of a veth pair; this kernel has no dummy driver) up and
/// addressed.
fn namespace(tag: &str) -> Netns {
    let ns = Netns::new(tag).expect("namespace");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]).expect("veth");
    ns.ip(&["link", "set", "d0", "up"]).unwrap();
    ns.ip(&["link", "set", "d1", "up"]).unwrap();
    ns.ip(&["addr", "add", &format!("{D0_ADDR}/24"), "dev", "d0"]).unwrap();
    ns
}

/// What a running daemon would report: attached to d0 in `mode`, healthy, the last probe
/// `probe_ago` seconds ago (None: never).
fn status(pid: u32, mode: &str, probe_ago: Option<u64>) -> Status {
    Status {
        pid,
        version: "0.1.0".into(),
        config_sha256: String::new(),
        config: "test.toml".into(),
        pin_path: "/sys/fs/bpf/forwarder".into(),
        interfaces: vec![Attachment { interface: "d0".into(), mode: mode.into() }],
        program_ids: vec![1],
        snat: D0_ADDR.into(),
        snat_ports: "40000-40099".into(),
        healthy: true,
        unhealthy_reason: None,
        drained: false,
        drained_since: None,
        drained_for_event: None,
        health: Some("0.0.0.0:8080".into()),
        last_probe: probe_ago.map(|ago| Probe {
            from: "168.63.129.16".into(),
            at: 1_700_000_000,
            seconds_ago: ago,
        }),
        active_flows: 0,
        rules: Vec::new(),
    }
}

/// Runs the doctor on a thread inside `ns`, with `before` run there first (its result, such
/// as a listening socket, stays alive during the run).
fn doctor_with<T: Send + 'static>(
    ns: &Netns,
    settings: Settings,
    status: Option<Status>,
    before: impl FnOnce() -> T + Send + 'static,
) -> Vec<Finding> {
    ns.enter(move || {
        let _keep = before();
        doctor::run(&Input {
            settings: &settings,
            status: status.as_ref(),
            netns_probe_timeout: TIMEOUT,
        })
    })
    .expect("doctor inside the namespace")
}

fn doctor(ns: &Netns, settings: Settings, status: Option<Status>) -> Vec<Finding> {
    doctor_with(ns, settings, status, || ())
}

/// The one finding of `check`; the whole report in the panic message otherwise.
fn one<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    let mut it = findings.iter().filter(|f| f.check == check);
    match (it.next(), it.next()) {
        (Some(f), None) => f,
        _ => panic!("expected one {check} finding:\n{}", doctor::render(findings)),
    }
}

/// The finding of `check` whose message starts with `prefix` (per-rule and per-interface
/// checks report one finding each).
fn starting<'a>(findings: &'a [Finding], check: &str, prefix: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == check && f.message.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {check} finding for {prefix}:\n{}", doctor::render(findings)))
}

fn assert_fails(f: &Finding, message_has: &[&str], fix_has: &[&str]) {
    assert!(!f.ok, "{} should fail: {}", f.check, f.message);
    for m in message_has {
        assert!(f.message.contains(m), "{} message lacks {m:?}: {}", f.check, f.message);
    }
    let fix = f.fix.as_deref().unwrap_or_else(|| panic!("{} failed without a fix", f.check));
    for m in fix_has {
        assert!(fix.contains(m), "{} fix lacks {m:?}: {fix}", f.check);
    }
}

fn assert_ok(f: &Finding) {
    assert!(f.ok, "{} should pass: {} (fix: {:?})", f.check, f.message, f.fix);
    assert_eq!(f.fix, None);
}

/// Runs each fix line that starts with `tool` inside `ns`, as an operator would paste it.
fn apply_fix(ns: &Netns, f: &Finding, tool: &str) {
    for line in f.fix.as_deref().unwrap_or_default().lines().filter(|l| l.starts_with(tool)) {
        let words: Vec<&str> = line.split_whitespace().collect();
        ns.exec(&words).unwrap_or_else(|e| panic!("fix {line:?} failed: {e}"));
    }
}

#[test]
fn daemon_not_running_is_a_failure_and_skips_its_checks() {
    require_root();
    let _serial = serial();
    let ns = namespace("dr1");
    let down = doctor(&ns, basic_settings(""), None);
    assert_fails(one(&down, "daemon"), &["not running"], &["systemctl start forwarder"]);
    assert!(
        !down.iter().any(|f| f.check == "probe" || f.check == "xdp-mode"),
        "checks that need the daemon must be skipped:\n{}",
        doctor::render(&down)
    );
    assert!(!doctor::all_ok(&down));

    let up = doctor(&ns, basic_settings(""), Some(status(4242, "xdp", Some(2))));
    let f = one(&up, "daemon");
    assert_ok(f);
    assert!(f.message.contains("pid 4242"), "{}", f.message);
    assert_ok(one(&up, "probe"));

    let mut drained = status(4242, "xdp", Some(2));
    drained.drained = true;
    let f = doctor(&ns, basic_settings(""), Some(drained));
    assert_fails(one(&f, "daemon"), &["drained"], &["forwarder undrain"]);
}

#[test]
fn iptables_drop_on_the_health_port_explains_the_missing_probe() {
    require_root();
    let _serial = serial();
    require_tool("iptables");
    require_tool("iptables-save");
    let ns = namespace("dr2");
    let no_probe = || Some(status(4242, "xdp", None));

    let clean = doctor(&ns, basic_settings(""), no_probe());
    assert_ok(one(&clean, "firewall"));
    let probe = one(&clean, "probe");
    assert_fails(probe, &["no load balancer probe seen on 0.0.0.0:8080", "never"], &[]);
    assert!(!probe.message.contains("firewall drops"), "{}", probe.message);

    ns.exec(&["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP"]).unwrap();
    let blocked = doctor(&ns, basic_settings(""), no_probe());
    let fw = one(&blocked, "firewall");
    assert_fails(
        fw,
        &["tcp 8080 (health)", "-A INPUT -p tcp -m tcp --dport 8080 -j DROP"],
        &["iptables -D INPUT -p tcp -m tcp --dport 8080 -j DROP"],
    );
    assert!(!fw.message.contains("9092"), "rule ports are not blocked: {}", fw.message);
    assert_fails(
        one(&blocked, "probe"),
        &["no load balancer probe seen on 0.0.0.0:8080", "the local firewall drops it"],
        &["AzureLoadBalancer", "168.63.129.16", "iptables -D INPUT -p tcp -m tcp --dport 8080"],
    );
    // A recent probe is fine whatever the firewall says about other sources.
    assert_ok(one(&doctor(&ns, basic_settings(""), Some(status(4242, "xdp", Some(3)))), "probe"));

    apply_fix(&ns, fw, "iptables");
    assert_ok(one(&doctor(&ns, basic_settings(""), no_probe()), "firewall"));
}

#[test]
fn nft_input_chain_with_policy_drop_blocks_unlisted_ports() {
    require_root();
    let _serial = serial();
    require_tool("nft");
    let ns = namespace("dr3");
    let chain = "{ type filter hook input priority 0 ; policy drop ; }";
    let mut add_chain = vec!["nft", "add", "chain", "inet", "fw", "input"];
    add_chain.extend(chain.split(' '));
    ns.exec(&["nft", "add", "table", "inet", "fw"]).unwrap();
    ns.exec(&add_chain).unwrap();
    ns.exec(&[
        "nft", "add", "rule", "inet", "fw", "input", "tcp", "dport", "{", "8080,", "9092,", "9093",
        "}", "accept",
    ])
    .unwrap();
    assert_ok(one(&doctor(&ns, basic_settings(""), None), "firewall"));

    // An explicit drop before the accept, then the policy once the accept is gone.
    ns.exec(&["nft", "insert", "rule", "inet", "fw", "input", "tcp", "dport", "9092", "drop"])
        .unwrap();
    let f = doctor(&ns, basic_settings(""), None);
    let fw = one(&f, "firewall");
    assert_fails(
        fw,
        &["tcp 9092 (rule broker-1)", "nft inet fw chain input `tcp dport 9092 drop`"],
        &["nft delete rule inet fw input handle"],
    );
    assert!(!fw.message.contains("8080"), "{}", fw.message);
    apply_fix(&ns, fw, "nft");
    assert_ok(one(&doctor(&ns, basic_settings(""), None), "firewall"));

    ns.exec(&["nft", "flush", "chain", "inet", "fw", "input"]).unwrap();
    let f = doctor(&ns, basic_settings(""), None);
    assert_fails(
        one(&f, "firewall"),
        &["tcp 8080 (health), 9092 (rule broker-1), 9093 (rule broker-2) by nft inet fw chain input policy drop"],
        &["nft insert rule inet fw input tcp dport 8080 accept"],
    );
}

#[test]
fn a_listener_on_a_rule_port_clashes_but_the_daemons_health_listener_does_not() {
    require_root();
    let _serial = serial();
    let ns = namespace("dr4");
    let me = std::process::id();
    assert_ok(one(&doctor(&ns, basic_settings(""), None), "port-clash"));

    let f =
        doctor_with(&ns, basic_settings(""), None, || TcpListener::bind("0.0.0.0:9092").unwrap());
    assert_fails(
        one(&f, "port-clash"),
        &["port 9092 (rule broker-1)", &format!("pid {me}"), "0.0.0.0:9092"],
        &[&format!("`kill {me}`"), "another listen port"],
    );

    // The daemon's own health listener is expected; someone else's is not.
    let health = || TcpListener::bind("0.0.0.0:8080").unwrap();
    let f = doctor_with(&ns, basic_settings(""), Some(status(me, "xdp", Some(1))), health);
    assert_ok(one(&f, "port-clash"));
    let f = doctor_with(&ns, basic_settings(""), Some(status(1, "xdp", Some(1))), health);
    assert_fails(
        one(&f, "port-clash"),
        &["port 8080 (health)", &format!("pid {me}")],
        &["move health to a free port"],
    );
}

#[test]
fn snat_ports_must_be_reserved_and_unused() {
    require_root();
    let _serial = serial();
    let ns = namespace("dr5");
    let f = doctor(&ns, basic_settings(""), None);
    assert_fails(
        one(&f, "snat-ports"),
        &["40000-40099", "net.ipv4.ip_local_reserved_ports"],
        &["sysctl -w net.ipv4.ip_local_reserved_ports=40000-40099", "/etc/sysctl.d/"],
    );

    ns.sysctl("net.ipv4.ip_local_reserved_ports", "40000-40099").unwrap();
    assert_ok(one(&doctor(&ns, basic_settings(""), None), "snat-ports"));

    let f =
        doctor_with(&ns, basic_settings(""), None, || TcpListener::bind("0.0.0.0:40050").unwrap());
    let snat = one(&f, "snat-ports");
    assert_fails(
        snat,
        &["1 local TCP socket(s)", "0.0.0.0:40050 (LISTEN", &format!("pid {}", std::process::id())],
        &["restart or close"],
    );
    assert!(!snat.message.contains("not all in"), "the range is reserved: {}", snat.message);
}

#[test]
fn targets_that_refuse_time_out_or_do_not_resolve_are_told_apart() {
    require_root();
    let _serial = serial();
    let ns = namespace("dr6");
    let rules = [
        ("up", 9092, "10.99.0.1:7001"),
        ("refused", 9093, "10.99.0.1:7002"),
        ("unrouted", 9094, "10.123.0.1:9092"),
        ("unnamed", 9095, "no-such-broker.invalid:9092"),
    ];
    let f = doctor_with(&ns, settings("", &rules), None, || {
        TcpListener::bind("10.99.0.1:7001").unwrap()
    });
    let up = starting(&f, "target", "up:");
    assert_ok(up);
    assert!(up.message.contains("10.99.0.1:7001 answers"), "{}", up.message);
    assert_fails(
        starting(&f, "target", "refused:"),
        &["10.99.0.1:7002 refused the connection"],
        &["listens on 10.99.0.1:7002"],
    );
    assert_fails(
        starting(&f, "target", "unrouted:"),
        &["10.123.0.1:9092 is unreachable"],
        &["add a route to 10.123.0.1"],
    );
    let dns = starting(&f, "target", "unnamed:");
    assert_fails(dns, &["cannot resolve no-such-broker.invalid"], &["resolvable"]);
    assert!(!dns.message.contains("refused"), "{}", dns.message);
}

#[test]
fn mtu_below_1500_needs_mss_clamp() {
    require_root();
    let _serial = serial();
    let ns = namespace("dr7");
    assert_ok(one(&doctor(&ns, basic_settings(""), None), "mtu"));

    ns.ip(&["link", "set", "d0", "mtu", "1400"]).unwrap();
    assert_fails(
        one(&doctor(&ns, basic_settings(""), None), "mtu"),
        &["path MTU 1400", "d0 mtu", "mss_clamp is not set"],
        &["set mss_clamp = 1360 in test.toml"],
    );
    assert_fails(
        one(&doctor(&ns, basic_settings("mss_clamp = 1400"), None), "mtu"),
        &["mss_clamp 1400 is above 1360"],
        &["set mss_clamp = 1360"],
    );
    assert_ok(one(&doctor(&ns, basic_settings("mss_clamp = 1360"), None), "mtu"));

    // A route MTU below the interface's (a VPN towards on-prem) counts too.
    ns.ip(&["link", "set", "d0", "mtu", "1500"]).unwrap();
    ns.ip(&["route", "add", "10.30.0.0/16", "dev", "d0", "mtu", "1300"]).unwrap();
    let onprem = settings("", &[("broker-1", 9092, "10.30.0.5:9092")]);
    assert_fails(
        one(&doctor(&ns, onprem, None), "mtu"),
        &["path MTU 1300", "route to 10.30.0.5 (broker-1)"],
        &["set mss_clamp = 1260"],
    );
}

#[test]
fn a_slow_attach_mode_names_the_interface_and_the_reason() {
    require_root();
    let _serial = serial();
    let ns = namespace("dr8");
    let running = |mode| Some(status(4242, mode, Some(1)));
    let native = doctor(&ns, basic_settings(""), running("xdp"));
    let f = one(&native, "xdp-mode");
    assert_ok(f);
    assert!(f.message.contains("d0: native XDP (veth)"), "{}", f.message);

    let forced = doctor(&ns, basic_settings("mode = \"xdp-generic\""), running("xdp-generic"));
    assert_fails(
        one(&forced, "xdp-mode"),
        &["d0: attached in xdp-generic mode", "mode = \"xdp-generic\" is forced in test.toml"],
        &["mode = \"auto\""],
    );

    ns.ip(&["link", "set", "d0", "mtu", "9000"]).unwrap();
    let jumbo = doctor(&ns, basic_settings(""), running("tc"));
    assert_fails(
        one(&jumbo, "xdp-mode"),
        &["d0: attached in tc mode", "MTU 9000 is too big for native XDP on veth"],
        &["ip link set d0 mtu 1500"],
    );
}

#[test]
fn ip_fwd_leftovers_are_found_with_exact_delete_commands() {
    require_root();
    let _serial = serial();
    require_tool("iptables");
    require_tool("iptables-save");
    require_tool("nft");
    let ns = namespace("dr9");
    assert_ok(one(&doctor(&ns, basic_settings(""), None), "stray-nat"));

    let nat = |args: &str| {
        let mut cmd = vec!["iptables", "-t", "nat", "-A"];
        cmd.extend(args.split(' '));
        ns.exec(&cmd).unwrap();
    };
    nat("PREROUTING -i d0 -p tcp --dport 9092 -j DNAT --to-destination 10.20.0.11:9092");
    nat("POSTROUTING -o d0 -j MASQUERADE");
    // Not ip_fwd.sh's: a DNAT of a port no rule listens on.
    nat("PREROUTING -i d0 -p tcp --dport 2222 -j DNAT --to-destination 10.20.0.99:22");
    let f = doctor(&ns, basic_settings(""), None);
    let stray = one(&f, "stray-nat");
    assert_fails(
        stray,
        &["2 leftover ip_fwd.sh NAT rule(s)", "--dport 9092 -j DNAT", "-o d0 -j MASQUERADE"],
        &[
            "iptables -t nat -D PREROUTING -i d0 -p tcp -m tcp --dport 9092 -j DNAT --to-destination 10.20.0.11:9092",
            "iptables -t nat -D POSTROUTING -o d0 -j MASQUERADE",
        ],
    );
    assert!(!stray.message.contains("2222"), "{}", stray.message);
    assert!(!stray.fix.as_deref().unwrap().contains("nft"), "iptables-nft tables are listed once");

    apply_fix(&ns, stray, "iptables");
    assert_ok(one(&doctor(&ns, basic_settings(""), None), "stray-nat"));

    // The same leftover written in native nft.
    ns.exec(&["nft", "add", "table", "ip", "leftover"]).unwrap();
    let mut chain = vec!["nft", "add", "chain", "ip", "leftover", "pre"];
    chain.extend("{ type nat hook prerouting priority -100 ; }".split(' '));
    ns.exec(&chain).unwrap();
    let rule = "iifname d0 tcp dport 9093 dnat to 10.20.0.12:9092";
    let mut add = vec!["nft", "add", "rule", "ip", "leftover", "pre"];
    add.extend(rule.split(' '));
    ns.exec(&add).unwrap();
    let f = doctor(&ns, basic_settings(""), None);
    let stray = one(&f, "stray-nat");
    assert_fails(
        stray,
        &["1 leftover", "nft ip leftover chain pre", "dnat to 10.20.0.12:9092"],
        &["nft delete rule ip leftover pre handle"],
    );
    apply_fix(&ns, stray, "nft");
    assert_ok(one(&doctor(&ns, basic_settings(""), None), "stray-nat"));
}

/// The whole thing for real: a daemon forwarding in the test topology, targets answering.
/// Before any probe the doctor fails exactly the probe check (exit 1); once the "load
/// balancer" (the client namespace) has probed the health port, it gives a clean bill
/// (exit 0, every finding ok) through the CLI, as an operator runs it.
#[test]
fn a_healthy_nat_vm_gets_a_clean_bill_from_the_cli() -> anyhow::Result<()> {
    use forwarder_tests::{
        daemon_tests::http_get,
        topology::{cli, Daemon, Topology, BROKERS, BROKER_PORT, NATVM},
        traffic::echo_servers,
    };
    use std::net::SocketAddrV4;
    require_root();
    let _serial = serial();
    let topo = Topology::new("dh", false, true)?;
    let targets: Vec<SocketAddrV4> =
        BROKERS.iter().map(|b| SocketAddrV4::new(*b, BROKER_PORT)).collect();
    let _brokers = echo_servers(&topo.broker, &targets)?;
    let text = format!("health = \"{NATVM}:8080\"\n{}", topo.config("xdp", &NATVM.to_string()));
    let daemon = Daemon::start(&topo.natvm, &text)?;

    let findings = |expect_code: i32| -> anyhow::Result<serde_json::Value> {
        let out = cli(&topo.natvm, &daemon.config, &["doctor", "--json", "--timeout", "2s"])?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(expect_code), "doctor: {stdout}{out:?}");
        Ok(serde_json::from_str(&stdout)?)
    };
    let failing = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("doctor --json prints an array")
            .iter()
            .filter(|f| f["ok"] != true)
            .map(|f| f["check"].as_str().unwrap_or("?").to_string())
            .collect()
    };

    let before = findings(1)?;
    assert_eq!(failing(&before), ["probe"], "before any probe: {before:#}");

    // The probe, as the load balancer sends it: an HTTP GET on the health port.
    let answer =
        http_get(&topo.client, SocketAddrV4::new(NATVM, 8080), "/", Duration::from_secs(10))?;
    assert!(answer.starts_with("HTTP/1.1 200"), "health answered {answer:?}");

    let after = findings(0)?;
    assert!(failing(&after).is_empty(), "a healthy NAT VM: {after:#}");
    let checks: Vec<&str> =
        after.as_array().unwrap().iter().filter_map(|f| f["check"].as_str()).collect();
    for want in ["daemon", "probe", "firewall", "snat-ports", "xdp-mode", "mtu"] {
        assert!(checks.contains(&want), "no {want} finding in {after:#}");
    }
    let probe = after.as_array().unwrap().iter().find(|f| f["check"] == "probe").unwrap();
    assert!(
        probe["message"].as_str().is_some_and(|m| m.contains("10.1.0.2")),
        "the probe's source is the client namespace: {probe}"
    );

    let config = daemon.config.clone();
    drop(daemon);
    topo.unload(&config)
}
