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
//!
//! mTLS: stunnel with `verify = 2` and the test CA as CAfile requires a client certificate
//! signed by that CA (a listener with ssl.client.auth=required). OAUTHBEARER: no tansu
//! release offers it, so the server side is `forwarder_tests::metadata_server`, a real
//! Kafka-protocol server on a real socket that checks the RFC 7628 message itself.

use forwarder_tests::{
    kafka_fixtures::{
        free_port, kafka, kafka_env, Pki, ScramUser, ServerCert, Stunnel, StunnelOptions, Tansu,
        TansuOptions,
    },
    metadata_server::{Advertised, Auth, MetadataServer},
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

// ---- mTLS -----------------------------------------------------------------------------------

/// A tansu behind a stunnel that requires a client certificate from `pki`'s CA.
struct MtlsBroker {
    _tansu: Tansu,
    stunnel: Stunnel,
    boot: String,
}

fn mtls_broker(tag: &str, pki: &Pki) -> MtlsBroker {
    let cert = pki.server(tag, &["localhost"]);
    let port = free_port();
    let boot = format!("localhost:{port}");
    let tansu = Tansu::start_with(tag, &TansuOptions { advertised: Some(&boot), sasl_users: None });
    let ca = pki.ca_file();
    let opts = StunnelOptions { client_ca: Some(&ca), netns: None };
    let stunnel = Stunnel::start_with(port, &cert, &tansu.addr, &opts);
    MtlsBroker { _tansu: tansu, stunnel, boot }
}

#[test]
fn mtls_the_client_certificate_is_presented_where_one_is_required() {
    let pki = Pki::new("forwarder test CA");
    let b = mtls_broker("mtls", &pki);
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    let client = pki.client("mtls-client", "forwarder-nat-vm");
    let (cert, key) = (client.cert.to_str().unwrap(), client.key.to_str().unwrap());

    let mtls = ["--ca-file", ca, "--client-cert", cert, "--client-key", key];
    let with_mtls = |args: &[&str]| kafka(&[args, &mtls[..]].concat());

    let run = with_mtls(&["discover", "--bootstrap", &b.boot, "--json"]);
    let j = run.assert_code(0).json();
    assert_eq!(j["rules"][0]["target"], b.boot.as_str(), "{j}\n{}", b.stunnel.log());
    let run = with_mtls(&[
        "check",
        "--via",
        &b.boot,
        "--produce",
        "mtls-check",
        "--messages",
        "5",
        "--json",
    ]);
    let j = run.assert_code(0).json();
    assert_eq!(j["vias"][0]["brokers"][0]["produce"]["consumed"], 5, "{j}");

    // Without a certificate, or with one of another CA, the listener refuses.
    let other_ca = Pki::new("some other CA");
    let stranger = other_ca.client("stranger", "forwarder-nat-vm");
    let (s_cert, s_key) = (stranger.cert.to_str().unwrap(), stranger.key.to_str().unwrap());
    for (extra, why) in [
        (&[][..], "requires a client certificate: --client-cert and --client-key"),
        (&["--client-cert", s_cert, "--client-key", s_key], "refused the client certificate"),
    ] {
        let mut args = vec!["discover", "--bootstrap", &b.boot, "--ca-file", ca, "--timeout", "3s"];
        args.extend(extra);
        let run = kafka(&args);
        run.assert_code(1);
        assert!(
            run.stderr.contains(&b.boot) && run.stderr.contains(why),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn mtls_flag_misuse_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("forwarder test CA");
    let client = pki.client("c", "forwarder");
    let missing = dir.path().join("missing.key");
    let (cert, missing) = (client.cert.to_str().unwrap(), missing.to_str().unwrap());
    let ca = client.cert.to_str().unwrap();
    let boot = ["discover", "--bootstrap", "127.0.0.1:9", "--ca-file", ca];
    for (extra, why) in [
        (&["--client-cert", cert][..], "--client-key"),
        (&["--client-key", cert], "--client-cert"),
        (&["--client-cert", cert, "--client-key", missing], missing),
        // A certificate is not a key.
        (&["--client-cert", cert, "--client-key", cert], "--client-key"),
    ] {
        let args: Vec<&str> = boot.iter().chain(extra).copied().collect();
        let run = kafka(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{args:?}: {why:?} not in {}", run.stderr);
    }
}

// ---- OAUTHBEARER ----------------------------------------------------------------------------

/// A JWT-shaped bearer token (RFC 6750 b64token characters).
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmb3J3YXJkZXIifQ.c2lnbmF0dXJl";

/// The OAUTHBEARER server, advertising itself as broker 1 at `host`.
fn oauth_server(host: &str) -> MetadataServer {
    let server = MetadataServer::start(vec![], Auth::OAuthBearer(TOKEN.into()));
    server.set_brokers(vec![Advertised::new(1, host, server.port())]);
    server
}

#[test]
fn oauthbearer_the_token_file_is_sent_and_checked_by_the_server() {
    let server = oauth_server("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let t = token.to_str().unwrap();
    let oauth = ["--sasl-mechanism", "oauthbearer", "--sasl-token-file", t];

    let args: Vec<&str> =
        ["discover", "--bootstrap", &server.addr, "--json"].iter().chain(&oauth).copied().collect();
    let j = kafka(&args).assert_code(0).json();
    assert_eq!(j["brokers"][0]["port"], server.port(), "{j}");
    let args: Vec<&str> =
        ["check", "--via", &server.addr, "--json"].iter().chain(&oauth).copied().collect();
    let j = kafka(&args).assert_code(0).json();
    assert!(j["vias"][0]["brokers"][0]["sasl_ms"].as_f64().is_some(), "{j}");
    assert!(server.refusals().is_empty(), "{:?}", server.refusals());

    // Another token: the server's error document, acknowledged, then the failure.
    std::fs::write(&token, "bm90LXRoZS10b2tlbg==\n").unwrap();
    let args: Vec<&str> =
        ["discover", "--bootstrap", &server.addr].iter().chain(&oauth).copied().collect();
    let run = kafka(&args);
    run.assert_code(1);
    for needle in
        [&format!("{}: SASL OAUTHBEARER", server.addr), "authentication failed", "invalid_token"]
    {
        assert!(run.stderr.contains(needle), "missing {needle:?}: {}", run.stderr);
    }
    let refusals = server.refusals();
    assert!(refusals.iter().any(|r| r.contains("is not the one issued")), "{refusals:?}");

    // Without SASL the server hangs up on Metadata, as a SASL listener does.
    let run = kafka(&["discover", "--bootstrap", &server.addr, "--timeout", "3s"]);
    run.assert_code(1);
}

/// SASL_SSL with mTLS: stunnel (client certificate required) in front of the OAUTHBEARER
/// server, which advertises the stunnel's address.
#[test]
fn oauthbearer_over_mtls() {
    let pki = Pki::new("forwarder test CA");
    let cert = pki.server("oauth-tls", &["localhost"]);
    let client = pki.client("oauth-client", "forwarder");
    let port = free_port();
    let server = MetadataServer::start(
        vec![Advertised::new(7, "localhost", port)],
        Auth::OAuthBearer(TOKEN.into()),
    );
    let ca = pki.ca_file();
    let stunnel = Stunnel::start_with(
        port,
        &cert,
        &server.addr,
        &StunnelOptions { client_ca: Some(&ca), netns: None },
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let via = format!("localhost:{port}");
    let run = kafka(&[
        "check",
        "--via",
        &via,
        "--ca-file",
        ca.to_str().unwrap(),
        "--client-cert",
        client.cert.to_str().unwrap(),
        "--client-key",
        client.key.to_str().unwrap(),
        "--sasl-mechanism",
        "oauthbearer",
        "--sasl-token-file",
        token.to_str().unwrap(),
        "--json",
    ]);
    let j = run.assert_code(0).json();
    let br = &j["vias"][0]["brokers"][0];
    assert_eq!(br["id"], 7, "{j}\n{}", stunnel.log());
    assert!(br["tls_ms"].as_f64().is_some() && br["sasl_ms"].as_f64().is_some(), "{j}");
}

#[test]
fn oauthbearer_flag_misuse_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-token");
    let missing = missing.to_str().unwrap();
    let boot = ["discover", "--bootstrap", "127.0.0.1:9", "--sasl-mechanism"];
    for (extra, why) in [
        (&["oauthbearer"][..], "--sasl-token-file"),
        (&["oauthbearer", "--sasl-token-file", missing, "--sasl-username", "u"], "--sasl-username"),
        (&["oauthbearer", "--sasl-token-file", missing], missing),
        (&["plain", "--sasl-username", "u", "--sasl-token-file", missing], "oauthbearer"),
    ] {
        let args: Vec<&str> = boot.iter().chain(extra).copied().collect();
        let run = kafka(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{args:?}: {why:?} not in {}", run.stderr);
    }
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
