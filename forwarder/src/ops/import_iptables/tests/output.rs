//! The printed result: TOML to paste (comments included) and JSON.

use super::*;
use std::collections::HashSet;

#[test]
fn to_toml_layout() {
    let c = convert(&nat(&format!(
        "[5:300] {DNAT_9093}\n-A PREROUTING -p udp --dport 53 -j DNAT --to 10.0.0.53\n"
    )));
    let toml = c.to_toml();
    let want = format!(
        "# from line 6: {DNAT_9093}\n\
         # iptables matched interface eth0 only (the forwarder's `interface` setting)\n\
         [[rule]]\n\
         name = \"broker-9093\"\n\
         listen = 9093\n\
         target = \"10.20.0.12:9092\"\n\
         \n\
         # note: no MASQUERADE or SNAT rule was found."
    );
    assert!(toml.contains(&want), "{toml}");
    assert!(toml.ends_with(
        "\n\n# not translated (line 7): -A PREROUTING -p udp --dport 53 -j DNAT --to 10.0.0.53 \
         -- UDP: the forwarder forwards TCP only\n"
    ));
}

#[test]
fn to_toml_without_rules_is_still_toml() {
    let toml = convert("").to_toml();
    assert!(toml.contains("# No DNAT rule could be translated."));
    let v: toml::Table = toml::from_str(&toml).unwrap();
    assert!(v.is_empty());
}

#[test]
fn control_characters_do_not_break_the_toml() {
    let c = convert(
        "-A PREROUTING -p udp --dport 53 -m comment --comment \"a\u{7}b\u{7f}\" -j DNAT\r\n",
    );
    let toml = c.to_toml();
    assert!(toml.contains("--comment \"a?b?\""), "{toml}");
    toml::from_str::<toml::Table>(&toml).unwrap();
}

#[test]
fn names_are_unique() {
    let c = convert(FIXTURE);
    let names: HashSet<_> = c.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), c.rules.len());
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct TomlRule {
    name: String,
    listen: u16,
    target: String,
}

#[derive(serde::Deserialize)]
struct TomlRules {
    rule: Vec<TomlRule>,
}

#[test]
fn round_trip_through_toml() {
    let text = format!(
        "{FIXTURE}*nat\n-A PREROUTING -d 10.0.0.4/32 -p tcp --dport 9095 -j DNAT --to \
         10.20.0.14\n\
         -A PREROUTING -p udp --dport 53 -j DNAT --to 10.0.0.53\nCOMMIT\n"
    );
    let c = convert(&text);
    let parsed: TomlRules = toml::from_str(&c.to_toml()).unwrap();
    let want: Vec<_> = c
        .rules
        .iter()
        .map(|r| TomlRule { name: r.name.clone(), listen: r.listen, target: r.target.clone() })
        .collect();
    assert_eq!(parsed.rule, want);
    assert_eq!(parsed.rule.len(), 4);
    assert_eq!(parsed.rule[3].target, "10.20.0.14:9095");
}

#[test]
fn the_forwarder_config_accepts_the_output() {
    let c = convert(FIXTURE);
    let config = format!("interface = \"eth0\"\n{}", c.to_toml());
    let settings = crate::config::parse(std::path::Path::new("imported.toml"), &config)
        .unwrap_or_else(|e| panic!("{e}\n{config}"));
    let got: Vec<_> =
        settings.rules.iter().map(|r| (r.name.as_str(), r.listen, r.target.to_string())).collect();
    assert_eq!(
        got,
        [
            ("broker-9092", 9092, "10.20.0.11:9092".to_string()),
            ("broker-9093", 9093, "10.20.0.12:9092".to_string()),
            ("broker-9094", 9094, "10.20.0.13:9092".to_string()),
        ]
    );
}

#[test]
fn serializes_to_json() {
    let json = serde_json::to_value(convert(FIXTURE)).unwrap();
    assert_eq!(json["masquerade_seen"], true);
    assert_eq!(json["rules"][1]["name"], "broker-9093");
    assert_eq!(json["rules"][1]["listen"], 9093);
    assert_eq!(json["rules"][1]["interface"], "eth0");
    assert_eq!(json["rules"][1]["listen_addr"], serde_json::Value::Null);
    assert_eq!(json["untranslated"], serde_json::json!([]));
}
