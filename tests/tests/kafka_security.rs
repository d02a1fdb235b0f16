//! `forwarder kafka discover | check` against listeners that want TLS, SASL or both, all real
//! and all on 127.0.0.1: tansu with SASL required and SCRAM users created by `tansu user
//! create`, and Debian's stunnel4 terminating TLS in front of a tansu, with a CA and broker
//! certificates made by the test (rcgen).
//!
//! tansu 0.6 offers SCRAM-SHA-256 and SCRAM-SHA-512 only (its SASL library is built without
//! PLAIN): PLAIN is tested as far as a real broker allows, the refusal named at the SASL hop;
//! its message is the unit tests'.
//!
//! The certificates name "localhost" or "127.0.0.1", and tansu advertises the stunnel's port
//! under one of them, so the name checked is the advertised one, as for a Spark client.

use forwarder_tests::kafka_fixtures::{
    free_port, kafka, kafka_env, Pki, ScramUser, ServerCert, Stunnel, Tansu, TansuOptions,
};
use std::time::Duration;

const USERS: &[ScramUser] = &[
    ScramUser { mechanism: "scram256", name: "alice", password: "alice-secret-256" },
    ScramUser { mechanism: "scram512", name: "bob", password: "bob secret, 512" },
];

/// A tansu behind stunnel: TLS on 127.0.0.1:PORT with a certificate from a CA of its own,
/// tansu advertising HOST:PORT.
struct TlsBroker {
    pki: Pki,
    tansu: Tansu,
    stunnel: Stunnel,
    port: u16,
}

impl TlsBroker {
    /// The certificate names `cert_names`; tansu advertises `host`; SASL with `sasl_users`.
    fn start(tag: &str, cert_names: &[&str], host: &str, sasl_users: Option<&[ScramUser]>) -> Self {
        let pki = Pki::new("forwarder test CA");
        let cert: ServerCert = pki.server(tag, cert_names);
        let port = free_port();
        let advertised = format!("{host}:{port}");
        let tansu =
            Tansu::start_with(tag, &TansuOptions { advertised: Some(&advertised), sasl_users });
        let stunnel = Stunnel::start(port, &cert, &tansu.addr);
        TlsBroker { pki, tansu, stunnel, port }
    }

    fn addr(&self, host: &str) -> String {
        format!("{host}:{}", self.port)
    }

    /// The CA that signed the certificate, for --ca-file.
    fn ca_file(&self) -> String {
        self.pki.ca_file().to_str().expect("a UTF-8 path").into()
    }

    fn logs(&self) -> String {
        format!("stunnel:\n{}\ntansu:\n{}", self.stunnel.log(), self.tansu.log())
    }
}

// ---- TLS ------------------------------------------------------------------------------------

#[test]
fn tls_discover_and_check_with_the_right_ca_and_name() {
    let b = TlsBroker::start("tls-ok", &["localhost"], "localhost", None);
    let ca = &b.ca_file();
    let boot = b.addr("localhost");

    let run = kafka(&["discover", "--bootstrap", &boot, "--ca-file", ca, "--json"]);
    let j = run.assert_code(0).json();
    assert_eq!(j["brokers"][0]["host"], "localhost", "{j}\n{}", b.logs());
    assert_eq!(j["rules"][0]["target"], boot.as_str(), "{j}");

    // Dialed by IP, the bootstrap's certificate is checked against --tls-server-name; the
    // broker it advertises still against its own name.
    let ip = b.addr("127.0.0.1");
    let run =
        kafka(&["discover", "--bootstrap", &ip, "--ca-file", ca, "--tls-server-name", "localhost"]);
    run.assert_code(0);

    let run = kafka(&[
        "check",
        "--via",
        &ip,
        "--ca-file",
        ca,
        "--tls-server-name",
        "localhost",
        "--produce",
        "tls-check",
        "--messages",
        "20",
        "--json",
    ]);
    let j = run.assert_code(0).json();
    let br = &j["vias"][0]["brokers"][0];
    assert_eq!(br["advertised"], boot.as_str(), "{j}");
    assert!(br["tls_ms"].as_f64().is_some(), "{j}");
    assert!(br["sasl_ms"].is_null(), "{j}");
    let p = &br["produce"];
    assert_eq!((p["produced"].as_u64(), p["consumed"].as_u64()), (Some(20), Some(20)), "{j}");
}

#[test]
fn tls_with_another_ca_fails_at_tls_naming_the_host_and_the_roots() {
    let b = TlsBroker::start("tls-ca", &["localhost"], "localhost", None);
    let other = Pki::new("some other CA");
    let boot = b.addr("localhost");
    let wrong = other.ca_file();
    let wrong = wrong.to_str().unwrap();

    let run = kafka(&["discover", "--bootstrap", &boot, "--ca-file", wrong]);
    run.assert_code(1);
    for needle in [
        &format!("{boot}: TLS handshake failed (server name \"localhost\")"),
        "unknown issuer",
        &format!("the CA file {wrong}"),
    ] {
        assert!(run.stderr.contains(needle), "missing {needle:?}: {}", run.stderr);
    }

    // The system's CAs do not know the test's CA either.
    let run = kafka(&["discover", "--bootstrap", &boot, "--tls"]);
    run.assert_code(1);
    assert!(run.stderr.contains("the system's trusted CAs"), "{}", run.stderr);

    let run = kafka(&["check", "--via", &boot, "--ca-file", wrong, "--json"]);
    let j = run.assert_code(1).json();
    assert_eq!(j["vias"][0]["failure"]["hop"], "tls", "{j}");
    let run = kafka(&["check", "--via", &boot, "--ca-file", wrong]);
    assert!(run.stdout.contains("FAILED at TLS"), "{}", run.stdout);
}

/// The certificate names 127.0.0.1, the address the check dials as --via, but the broker
/// advertises "localhost": the via connects, the broker fails at TLS, as a client that
/// bootstraps by IP and then dials the advertised name would.
#[test]
fn tls_checks_each_broker_against_its_advertised_name() {
    let b = TlsBroker::start("tls-name", &["127.0.0.1"], "localhost", None);
    let ca = &b.ca_file();
    let ip = b.addr("127.0.0.1");
    let name = b.addr("localhost");

    let run = kafka(&["check", "--via", &ip, "--ca-file", ca, "--json"]);
    let j = run.assert_code(1).json();
    let v = &j["vias"][0];
    assert!(v["failure"].is_null(), "the via's certificate names its IP: {v}\n{}", b.logs());
    let br = &v["brokers"][0];
    assert_eq!(br["advertised"], name.as_str(), "{v}");
    assert_eq!(br["failure"]["hop"], "tls", "{v}");
    let err = br["failure"]["error"].as_str().unwrap();
    for needle in [
        &format!("{name}: TLS handshake failed (server name \"localhost\")"),
        "the certificate is for 127.0.0.1, not that name",
    ] {
        assert!(err.contains(needle), "missing {needle:?}: {err}");
    }

    let run = kafka(&["discover", "--bootstrap", &name, "--ca-file", ca]);
    run.assert_code(1);
    assert!(run.stderr.contains("the certificate is for 127.0.0.1"), "{}", run.stderr);
}

#[test]
fn tls_and_plaintext_mismatches_are_named() {
    let b = TlsBroker::start("tls-mismatch", &["localhost"], "localhost", None);
    let ca = b.ca_file();

    // Plaintext Kafka to a TLS listener: stunnel resets the connection.
    let run = kafka(&["discover", "--bootstrap", &b.addr("localhost"), "--timeout", "3s"]);
    run.assert_code(1);
    assert!(run.stderr.contains("a TLS listener does that too: --tls"), "{}", run.stderr);

    // TLS to a plaintext listener: no answer to the ClientHello, within the timeout.
    let run =
        kafka(&["discover", "--bootstrap", &b.tansu.addr, "--ca-file", &ca, "--timeout", "2s"]);
    run.assert_code(1);
    assert!(run.took < Duration::from_secs(2 + 5), "took {:?}", run.took);
    assert!(run.stderr.contains("no answer to the TLS ClientHello within 2s"), "{}", run.stderr);

    // TLS that works, in front of a broker that is gone: stunnel hangs up after the handshake.
    let boot = b.addr("localhost");
    drop(b.tansu);
    let run = kafka(&["discover", "--bootstrap", &boot, "--ca-file", &ca]);
    run.assert_code(1);
    // (closed or reset, as the timing falls)
    let want = "without answering ApiVersions after the TLS handshake";
    assert!(run.stderr.contains(want), "{}", run.stderr);
}

// ---- SASL -----------------------------------------------------------------------------------

fn sasl_tansu(tag: &str) -> Tansu {
    Tansu::start_with(tag, &TansuOptions { advertised: None, sasl_users: Some(USERS) })
}

#[test]
fn sasl_scram_sha_256_and_512_against_tansu() {
    let broker = sasl_tansu("scram");
    let run = kafka_env(
        &[
            "discover",
            "--bootstrap",
            &broker.addr,
            "--sasl-mechanism",
            "scram-sha-256",
            "--sasl-username",
            "alice",
            "--json",
        ],
        &[("FORWARDER_SASL_PASSWORD", "alice-secret-256")],
    );
    run.assert_code(0);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "bob secret, 512\n").unwrap();
    let run = kafka(&[
        "check",
        "--via",
        &broker.addr,
        "--sasl-mechanism",
        "scram-sha-512",
        "--sasl-username",
        "bob",
        "--sasl-password-file",
        file.to_str().unwrap(),
        "--produce",
        "sasl-check",
        "--messages",
        "20",
        "--json",
    ]);
    let j = run.assert_code(0).json();
    let br = &j["vias"][0]["brokers"][0];
    assert!(br["sasl_ms"].as_f64().is_some(), "{j}");
    let p = &br["produce"];
    assert_eq!((p["produced"].as_u64(), p["consumed"].as_u64()), (Some(20), Some(20)), "{j}");
}

#[test]
fn sasl_failures_are_named_at_the_sasl_hop() {
    let broker = sasl_tansu("sasl-bad");
    let sasl = |mechanism: &str, user: &str, password: &str, cmd: &[&str]| {
        let mut args = cmd.to_vec();
        args.extend(["--sasl-mechanism", mechanism, "--sasl-username", user]);
        kafka_env(&args, &[("FORWARDER_SASL_PASSWORD", password)])
    };
    let discover = ["discover", "--bootstrap", &broker.addr];

    let run = sasl("scram-sha-256", "alice", "not her password", &discover);
    run.assert_code(1);
    for needle in [
        &format!("{}: SASL SCRAM-SHA-256 as \"alice\" failed", broker.addr),
        "invalid-proof (a wrong password)",
    ] {
        assert!(run.stderr.contains(needle), "missing {needle:?}: {}", run.stderr);
    }

    // alice has SCRAM-SHA-256 credentials only.
    let run = sasl("scram-sha-512", "alice", "alice-secret-256", &discover);
    run.assert_code(1);
    assert!(run.stderr.contains("unknown-user"), "{}", run.stderr);

    // tansu has no PLAIN: it hangs up on the SaslHandshake.
    let run = sasl("plain", "alice", "alice-secret-256", &discover);
    run.assert_code(1);
    assert!(run.stderr.contains("SASL PLAIN as \"alice\" failed"), "{}", run.stderr);
    assert!(run.stderr.contains("mechanism is probably not enabled"), "{}", run.stderr);

    let run = sasl("scram-sha-256", "alice", "wrong", &["check", "--via", &broker.addr, "--json"]);
    let j = run.assert_code(1).json();
    assert_eq!(j["vias"][0]["failure"]["hop"], "sasl", "{j}");

    // No SASL at all: the listener says so after ApiVersions (the old message still holds).
    let run = kafka(&discover);
    run.assert_code(1);
    assert!(run.stderr.contains("probably needs TLS or SASL"), "{}", run.stderr);
}

#[test]
fn sasl_over_tls_through_stunnel() {
    let b = TlsBroker::start("sasl-ssl", &["localhost"], "localhost", Some(USERS));
    let ca = b.ca_file();
    let via = b.addr("localhost");
    let check_as_bob = |password: &str, extra: &[&str]| {
        let mut args = vec!["check", "--via", &via, "--ca-file", &ca, "--json"];
        args.extend(["--sasl-mechanism", "scram-sha-512", "--sasl-username", "bob"]);
        args.extend(extra);
        kafka_env(&args, &[("FORWARDER_SASL_PASSWORD", password)])
    };
    let run = check_as_bob("bob secret, 512", &["--produce", "sasl-ssl", "--messages", "10"]);
    let j = run.assert_code(0).json();
    let br = &j["vias"][0]["brokers"][0];
    assert!(br["tls_ms"].as_f64().is_some() && br["sasl_ms"].as_f64().is_some(), "{j}");
    assert_eq!(br["produce"]["consumed"], 10, "{j}\n{}", b.logs());

    // A wrong password over TLS: TLS passes, SASL fails.
    let run = check_as_bob("nope", &[]);
    let j = run.assert_code(1).json();
    assert_eq!(j["vias"][0]["failure"]["hop"], "sasl", "{j}");
}

// ---- usage ----------------------------------------------------------------------------------

#[test]
fn security_flag_misuse_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let boot = ["discover", "--bootstrap", "127.0.0.1:9"];
    let via = ["check", "--via", "127.0.0.1:9"];
    for (base, extra, why) in [
        (&boot, &["--sasl-mechanism", "scram-sha-256"][..], "--sasl-username"),
        (&via, &["--sasl-username", "u"], "--sasl-mechanism"),
        (
            &boot,
            &["--sasl-mechanism", "scram-sha-256", "--sasl-username", "u"],
            "FORWARDER_SASL_PASSWORD",
        ),
        (&via, &["--sasl-mechanism", "gssapi", "--sasl-username", "u"], "gssapi"),
        (&boot, &["--sasl-password-file", empty], "--sasl-mechanism"),
        (
            &boot,
            &["--sasl-mechanism", "plain", "--sasl-username", "u", "--sasl-password-file", empty],
            "empty",
        ),
        (&via, &["--tls-server-name", "b.corp"], "--tls"),
        (&boot, &["--ca-file", missing], missing),
        (&via, &["--sasl-password", "x"], "--sasl-password"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let run = kafka(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{args:?}: {why:?} not in {}", run.stderr);
    }
}
