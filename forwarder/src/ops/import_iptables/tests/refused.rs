//! What the forwarder cannot express: each is listed as not translated, with its line and
//! the reason.

use super::*;

#[test]
fn udp_is_named() {
    let (line, reason) = refused(
        "-A PREROUTING -i eth0 -p udp -m udp --dport 53 -j DNAT --to-destination 10.20.0.2\n",
    );
    assert_eq!((line, reason.as_str()), (6, "UDP: the forwarder forwards TCP only"));
}

#[test]
fn ranges_are_named() {
    let cases = [
        ("--dport 9093 -j DNAT --to-destination 10.20.0.12:9092-9095", "port range 9092-9095"),
        ("--dport 9093 -j DNAT --to-destination 10.20.0.12-10.20.0.14", "address range"),
        ("--dport 9093 -j DNAT --to-destination 10.20.0.12-10.20.0.14:9092", "address range"),
        ("--dport 9000:9010 -j DNAT --to-destination 10.20.0.12", "port range 9000:9010"),
    ];
    for (rest, want) in cases {
        let (line, reason) = refused(&format!("-A PREROUTING -p tcp {rest}\n"));
        assert_eq!(line, 6);
        assert!(reason.starts_with(want), "{rest}: {reason}");
    }
}

/// Targets iptables takes but a rule cannot have: the imported rule would fail
/// check-config. The first is the input the import_iptables fuzz target reported.
#[test]
fn targets_that_are_not_another_host_are_named() {
    for ip in ["127.0.0.1", "0.0.0.0", "224.0.0.5", "255.255.255.255"] {
        let (line, reason) = refused(&format!(
            "-A PREROUTING -i eth0 -p tcp --dport 9093 -j DNAT --to-destination {ip}:9092\n"
        ));
        assert_eq!(line, 6);
        assert_eq!(reason, format!("{ip} is not a unicast address of another host"));
    }
}

#[test]
fn matches_the_forwarder_cannot_express() {
    let cases = [
        ("-s 192.168.0.0/16 -p tcp --dport 9093", "matches only sources 192.168.0.0/16"),
        ("! -i docker0 -p tcp --dport 9093", "cannot express ! -i docker0"),
        ("-i ! docker0 -p tcp --dport 9093", "cannot express ! -i docker0"),
        ("-p tcp -m multiport --dports 9093,9094", "cannot express --dports 9093,9094"),
        ("-p tcp --dport 9093 --sport 1024", "cannot express --sport 1024"),
        ("-p tcp --dport 9093 --syn", "cannot express --syn"),
        (
            "-p tcp --dport 9093 -m tcp --tcp-flags SYN,RST SYN",
            "cannot express --tcp-flags SYN,RST SYN",
        ),
        (
            "-p tcp --dport 9093 -m addrtype --dst-type BROADCAST",
            "cannot express --dst-type BROADCAST",
        ),
        ("-p tcp --dport 9093 -m tos --tos 0x10", "cannot express --tos 0x10"),
        ("-p tcp", "no --dport"),
        ("-p all --dport 9093", "protocol all"),
        ("", "no -p tcp"),
        ("-p tcp --dport 0", "\"0\" is not a port"),
        ("-p tcp --dport kafka", "\"kafka\" is not a port"),
    ];
    for (matches, want) in cases {
        let (line, reason) =
            refused(&format!("-A PREROUTING {matches} -j DNAT --to-destination 10.20.0.12:9092\n"));
        assert_eq!(line, 6);
        assert!(reason.starts_with(want), "{matches}: {reason}");
    }
}

#[test]
fn bad_dnat_targets() {
    let cases = [
        ("-j DNAT", "DNAT without --to-destination"),
        ("-j DNAT --to-destination broker2.corp:9092", "\"broker2.corp\" is not an IPv4"),
        ("-j DNAT --to-destination 10.20.0.12:0", "\"0\" is not a port"),
        ("-j DNAT --to-destination 10.1.1.1:1 --to-destination 10.1.1.2:1", "several"),
    ];
    for (jump, want) in cases {
        let (line, reason) = refused(&format!("-A PREROUTING -p tcp --dport 9093 {jump}\n"));
        assert_eq!(line, 6);
        assert!(reason.starts_with(want), "{jump}: {reason}");
    }
}

#[test]
fn chains_not_reached_from_prerouting() {
    let c =
        convert(&nat("-A OUTPUT -p tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n\
         -A ORPHAN -p tcp --dport 9094 -j DNAT --to-destination 10.20.0.13:9092\n\
         -A INPUT -j SNAT --to-source 10.0.0.4\n"));
    assert!(c.rules.is_empty());
    let got: Vec<_> = c.untranslated.iter().map(|u| (u.line, u.reason.as_str())).collect();
    assert_eq!(
        got,
        [
            (6, "OUTPUT rewrites connections this host opens itself, not forwarded ones"),
            (7, "chain ORPHAN is not reached from PREROUTING"),
            (8, "chain INPUT is not reached from POSTROUTING"),
        ]
    );
}

#[test]
fn unsupported_jump_condition_is_named_with_its_line() {
    let (line, reason) = refused(
        "-A PREROUTING -m mark --mark 0x1 -j KAFKA\n\
         -A KAFKA -p tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n",
    );
    assert_eq!((line, reason.as_str()), (7, "cannot express --mark 0x1 (line 6)"));
}

#[test]
fn jump_and_rule_that_contradict() {
    let (line, reason) = refused(
        "-A PREROUTING -i eth0 -j KAFKA\n\
         -A KAFKA -i eth1 -p tcp --dport 9093 -j DNAT --to-destination 10.20.0.12:9092\n",
    );
    assert_eq!(line, 7);
    assert!(reason.starts_with("never matches: -i eth1 contradicts -i eth0"), "{reason}");
}

#[test]
fn redirect_and_netmap() {
    let c = convert(&nat("-A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080\n\
         -A PREROUTING -d 10.1.0.0/24 -j NETMAP --to 10.2.0.0/24\n"));
    assert_eq!(c.untranslated.iter().map(|u| u.line).collect::<Vec<_>>(), [6, 7]);
    assert!(c.untranslated[0].reason.starts_with("REDIRECT"));
    assert!(c.untranslated[1].reason.starts_with("NETMAP"));
}

#[test]
fn duplicate_listen_port_keeps_the_first() {
    let c = convert(&nat(&format!(
        "{DNAT_9093}\n-A PREROUTING -i eth1 -p tcp --dport 9093 -j DNAT --to-destination \
         10.20.0.99:9092\n"
    )));
    assert_eq!(c.rules, vec![rule("broker-9093", 9093, "10.20.0.12:9092", 6, DNAT_9093)]);
    assert_eq!(
        c.untranslated,
        vec![Untranslated {
            line: 7,
            text: "-A PREROUTING -i eth1 -p tcp --dport 9093 -j DNAT --to-destination \
                   10.20.0.99:9092"
                .into(),
            reason: "listen port 9093 is already forwarded by line 6".into(),
        }]
    );
}

#[test]
fn unreadable_lines_are_listed() {
    let c = convert(&nat(&format!(
        "iptables -t nat -A PREROUTING -p tcp --dport 1 -j DNAT --to 10.0.0.1\n\
         -A PREROUTING -p tcp --dport 9094 -m comment --comment \"open -j DNAT --to \
         10.1.1.1:1\n\
         -A PREROUTING -p tcp --dport\n\
         -A -p tcp --dport 1 -j DNAT\n\
         -A '' -p tcp --dport 1 -j DNAT\n\
         {DNAT_9093}\n"
    )));
    let got: Vec<_> = c.untranslated.iter().map(|u| (u.line, u.reason.as_str())).collect();
    assert_eq!(
        got,
        [
            (6, "not an iptables-save line"),
            (7, "unterminated \" quote"),
            (8, "--dport without a value"),
            (9, "-A without a value"),
            (10, "a rule without a chain"),
        ]
    );
    assert_eq!(c.rules.len(), 1);
}

#[test]
fn untranslated_come_out_in_line_order() {
    let c = convert(&nat(
        "garbage\n-A PREROUTING -p udp --dport 53 -j DNAT --to 10.0.0.53\nmore garbage\n",
    ));
    assert_eq!(c.untranslated.iter().map(|u| u.line).collect::<Vec<_>>(), [6, 7, 8]);
}
