//! The `[kafka]` table: `bootstrap` (one HOST:PORT or a list), `interval`, `timeout`, and
//! the client's security as `forwarder kafka check` takes it: `tls`, `ca_file`,
//! `tls_server_name`, `client_cert` + `client_key`, `sasl_mechanism` with `sasl_username` +
//! `sasl_password_file` (PLAIN, SCRAM) or `sasl_token_file` (OAUTHBEARER).

use super::timeouts::duration_at;
use crate::{
    config::{
        kafka::{KafkaSasl, KafkaTls, KafkaWatch},
        spans::{Section, Span},
        ConfigError,
    },
    kafka::Mechanism,
};
use std::{path::PathBuf, time::Duration};
use toml_edit::{Item, Value};

const KAFKA_KEYS: &[&str] = &[
    "bootstrap",
    "interval",
    "timeout",
    "tls",
    "ca_file",
    "tls_server_name",
    "client_cert",
    "client_key",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password_file",
    "sasl_token_file",
];

const EXPECT_TABLE: &str = "expected a [kafka] table with bootstrap = [\"HOST:PORT\", ...]";
const EXPECT_BOOTSTRAP: &str =
    "expected HOST:PORT like \"broker1.corp.example:9092\" or a list of them";
const EXPECT_BOOL: &str = "expected true or false";
const EXPECT_PATH: &str = "expected an absolute path like \"/etc/forwarder/kafka-ca.pem\"";
const EXPECT_NAME: &str = "expected a DNS name or IP address the certificate holds";
const EXPECT_MECHANISM: &str =
    "expected one of \"plain\", \"scram-sha-256\", \"scram-sha-512\", \"oauthbearer\"";
const EXPECT_USER: &str = "expected the SASL user name";
const EXPECT_TIMEOUT: &str = "expected a duration from 1s to 60s, like \"5s\"";

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// `[kafka]`, absent: no watch.
pub(super) fn kafka(root: &Section) -> Result<Option<KafkaWatch>, ConfigError> {
    let Some(k) = root.table("kafka", "kafka.", KAFKA_KEYS, EXPECT_TABLE)? else { return Ok(None) };
    let bootstrap = bootstrap(&k)?;
    let interval = duration_at(&k, "interval")?.map_or(DEFAULT_INTERVAL, |(d, _)| d);
    let timeout = match duration_at(&k, "timeout")? {
        None => DEFAULT_TIMEOUT,
        Some((d, _)) if d <= MAX_TIMEOUT => d,
        Some((_, span)) => return Err(k.bad("timeout", span, EXPECT_TIMEOUT)),
    };
    let tls = tls(&k)?;
    let sasl = sasl(&k)?;
    Ok(Some(KafkaWatch { bootstrap, interval, timeout, tls, sasl }))
}

/// `bootstrap`: one HOST:PORT or a non-empty list of them.
fn bootstrap(k: &Section) -> Result<Vec<String>, ConfigError> {
    let Some((span, item)) = k.get("bootstrap") else {
        return Err(k.missing("bootstrap", "expected bootstrap = [\"HOST:PORT\", ...]"));
    };
    let entries: Vec<(&str, Span)> = match item.as_value() {
        Some(Value::String(s)) => vec![(s.value().as_str(), span.clone())],
        Some(Value::Array(list)) if !list.is_empty() => {
            let mut out = Vec::with_capacity(list.len());
            for v in list.iter() {
                let vspan = v.span().unwrap_or_else(|| span.clone());
                match v.as_str() {
                    Some(s) => out.push((s, vspan)),
                    None => {
                        let found = k.src.found(&Item::Value(v.clone()), &vspan);
                        let message = format!("{EXPECT_BOOTSTRAP}; found {found}");
                        return Err(k.error(vspan, "bootstrap", message));
                    }
                }
            }
            out
        }
        _ => return Err(k.wrong_type("bootstrap", span, item, EXPECT_BOOTSTRAP)),
    };
    entries
        .into_iter()
        .map(|(s, span)| match crate::kafka::host_port_arg(s) {
            Ok(s) => Ok(s),
            Err(e) => Err(k.error(span, "bootstrap", format!("{EXPECT_BOOTSTRAP}; {e}"))),
        })
        .collect()
}

/// `tls`, `ca_file`, `tls_server_name`, `client_cert` and `client_key`: TLS is on with
/// `tls = true` or any of the files, as `--ca-file` implies `--tls`.
fn tls(k: &Section) -> Result<Option<KafkaTls>, ConfigError> {
    let on = match k.get("tls") {
        None => None,
        Some((span, item)) => match item.as_bool() {
            Some(b) => Some((b, span)),
            None => return Err(k.wrong_type("tls", span, item, EXPECT_BOOL)),
        },
    };
    let ca_file = path(k, "ca_file")?;
    let cert = path(k, "client_cert")?;
    let key = path(k, "client_key")?;
    let server_name = match k.string("tls_server_name", EXPECT_NAME)? {
        None => None,
        Some((s, span)) if s.is_empty() || s.contains(char::is_whitespace) => {
            return Err(k.bad("tls_server_name", span, EXPECT_NAME))
        }
        Some((s, span)) => Some((s.to_string(), span)),
    };
    let client_cert = match (cert, key) {
        (None, None) => None,
        (Some((c, _)), Some((k, _))) => Some((c, k)),
        (Some((_, span)), None) => {
            return Err(k.error(span, "client_cert", "expected client_key beside it"))
        }
        (None, Some((_, span))) => {
            return Err(k.error(span, "client_key", "expected client_cert beside it"))
        }
    };
    let implied = ca_file.is_some() || client_cert.is_some();
    match on {
        Some((false, span)) if implied => Err(k.error(
            span,
            "tls",
            "expected true (or no tls key): ca_file and client_cert are TLS settings",
        )),
        Some((false, _)) | None if !implied => match server_name {
            Some((_, span)) => Err(k.error(
                span,
                "tls_server_name",
                "expected TLS to be on for it (tls = true, or a ca_file)",
            )),
            None => Ok(None),
        },
        _ => Ok(Some(KafkaTls {
            ca_file: ca_file.map(|(p, _)| p),
            server_name: server_name.map(|(s, _)| s),
            client_cert,
        })),
    }
}

/// `sasl_mechanism` and what it needs.
fn sasl(k: &Section) -> Result<Option<KafkaSasl>, ConfigError> {
    let user = k.string("sasl_username", EXPECT_USER)?;
    let password = path(k, "sasl_password_file")?;
    let token = path(k, "sasl_token_file")?;
    let Some((name, span)) = k.string("sasl_mechanism", EXPECT_MECHANISM)? else {
        // A credential without a mechanism is a setting that would be ignored.
        let stray = [("sasl_username", user.map(|(_, s)| s))]
            .into_iter()
            .chain([("sasl_password_file", password.map(|(_, s)| s))])
            .chain([("sasl_token_file", token.map(|(_, s)| s))])
            .find_map(|(key, span)| span.map(|s| (key, s)));
        return match stray {
            None => Ok(None),
            Some((key, span)) => Err(k.error(span, key, "expected sasl_mechanism beside it")),
        };
    };
    let mechanism = Mechanism::from_flag_value(name)
        .ok_or_else(|| k.bad("sasl_mechanism", span.clone(), EXPECT_MECHANISM))?;
    if !mechanism.uses_password() {
        let needs = "OAUTHBEARER takes the token from sasl_token_file";
        if let Some((_, span)) = user {
            return Err(k.error(span, "sasl_username", format!("not used: {needs}")));
        }
        if let Some((_, span)) = password {
            return Err(k.error(span, "sasl_password_file", format!("not used: {needs}")));
        }
        let Some((token_file, _)) = token else {
            return Err(k.error(span, "sasl_token_file", format!("missing key; {needs}")));
        };
        return Ok(Some(KafkaSasl::Token { token_file }));
    }
    let needs = format!("{} needs sasl_username and sasl_password_file", mechanism.name());
    if let Some((_, span)) = token {
        return Err(k.error(span, "sasl_token_file", format!("not used: {needs}")));
    }
    let Some((username, _)) = user else {
        return Err(k.error(span, "sasl_username", format!("missing key; {needs}")));
    };
    let Some((password_file, _)) = password else {
        return Err(k.error(span, "sasl_password_file", format!("missing key; {needs}")));
    };
    Ok(Some(KafkaSasl::Password { mechanism, username: username.to_string(), password_file }))
}

/// Where `[kafka]`'s `key` is written (else the table's header), for the host check's
/// errors about the files it names.
pub(in crate::config) fn kafka_key_span(root: &Section, key: &str) -> Option<Span> {
    let (span, item) = root.get("kafka")?;
    let table = item.as_table_like()?;
    let k = Section { src: root.src, table, prefix: "kafka.", at: span.start };
    Some(k.get(key).map_or(span, |(s, _)| s))
}

/// An absolute path.
fn path(k: &Section, key: &str) -> Result<Option<(PathBuf, Span)>, ConfigError> {
    match k.string(key, EXPECT_PATH)? {
        None => Ok(None),
        Some((s, span)) if s.starts_with('/') && !s.contains('\0') => {
            Ok(Some((PathBuf::from(s), span)))
        }
        Some((_, span)) => Err(k.bad(key, span, EXPECT_PATH)),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{
        kafka::KafkaSasl,
        parse,
        test_text::{at, err, BASE},
    };
    use std::{path::Path, time::Duration};

    fn kafka(body: &str) -> String {
        format!("{BASE}[kafka]\n{body}\n")
    }

    #[test]
    fn a_full_section_parses() {
        let s = parse(
            Path::new("f.toml"),
            &kafka(
                "bootstrap = [\"b1.corp:9093\", \"10.0.0.5:9093\"]\ninterval = \"30s\"\n\
                 ca_file = \"/etc/ca.pem\"\nclient_cert = \"/etc/c.pem\"\nclient_key = \"/etc/c.key\"\n\
                 sasl_mechanism = \"oauthbearer\"\nsasl_token_file = \"/run/token\"",
            ),
        )
        .unwrap();
        let k = s.kafka.unwrap();
        assert_eq!(k.bootstrap, ["b1.corp:9093", "10.0.0.5:9093"]);
        assert_eq!((k.interval, k.timeout), (Duration::from_secs(30), Duration::from_secs(5)));
        let tls = k.tls.unwrap();
        assert_eq!(tls.client_cert.unwrap().1, Path::new("/etc/c.key"));
        assert_eq!(k.sasl, Some(KafkaSasl::Token { token_file: "/run/token".into() }));
        let none = parse(Path::new("f.toml"), BASE).unwrap();
        assert_eq!(none.kafka, None);
    }

    #[test]
    fn errors_point_at_the_key() {
        for (body, place, needle) in [
            ("", (2, 1, "kafka.bootstrap"), "missing key"),
            ("bootstrap = \"b1\"", (3, 13, "kafka.bootstrap"), "no port"),
            ("bootstrap = [\"b:1\", 5]", (3, 21, "kafka.bootstrap"), "found an integer 5"),
            ("bootstrap = \"b:1\"\nbroker = 1", (4, 1, "kafka.broker"), "unknown key"),
            ("bootstrap = \"b:1\"\ninterval = \"0s\"", (4, 12, "kafka.interval"), "from 1s"),
            ("bootstrap = \"b:1\"\ntimeout = \"2m\"", (4, 11, "kafka.timeout"), "to 60s"),
            ("bootstrap = \"b:1\"\nca_file = \"ca.pem\"", (4, 11, "kafka.ca_file"), "absolute"),
            (
                "bootstrap = \"b:1\"\nclient_cert = \"/c.pem\"",
                (4, 15, "kafka.client_cert"),
                "client_key",
            ),
            (
                "bootstrap = \"b:1\"\ntls = false\nca_file = \"/ca.pem\"",
                (4, 7, "kafka.tls"),
                "expected true",
            ),
            (
                "bootstrap = \"b:1\"\ntls_server_name = \"b1\"",
                (4, 19, "kafka.tls_server_name"),
                "TLS to be on",
            ),
            (
                "bootstrap = \"b:1\"\nsasl_mechanism = \"gssapi\"",
                (4, 18, "kafka.sasl_mechanism"),
                "oauthbearer",
            ),
            (
                "bootstrap = \"b:1\"\nsasl_mechanism = \"scram-sha-512\"\nsasl_username = \"u\"",
                (4, 18, "kafka.sasl_password_file"),
                "missing key",
            ),
            (
                "bootstrap = \"b:1\"\nsasl_mechanism = \"oauthbearer\"",
                (4, 18, "kafka.sasl_token_file"),
                "missing key",
            ),
            (
                "bootstrap = \"b:1\"\nsasl_username = \"u\"",
                (4, 17, "kafka.sasl_username"),
                "sasl_mechanism",
            ),
        ] {
            let e = err(&kafka(body));
            assert_eq!(at(&e), place, "{body}: {e}");
            assert!(e.message.contains(needle), "{body}: {e}");
        }
        let e = err(&format!("{BASE}kafka = 5\n"));
        assert_eq!(at(&e), (2, 9, "kafka"), "{e}");
    }
}
