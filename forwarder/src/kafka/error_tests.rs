//! Tests of error.rs: how failures are classified and worded.

use super::*;

#[test]
fn tls_alerts_and_handshakes_are_tls() {
    assert_eq!(Garbage::classify(&[0x15, 0x03, 0x03, 0x00, 0x02]), Garbage::Tls { alert: true });
    assert_eq!(Garbage::classify(&[0x16, 0x03, 0x01]), Garbage::Tls { alert: false });
    let e = Garbage::classify(&[0x15, 0x03, 0x01, 0x00]).into_error("b:9093", Api::ApiVersions);
    assert!(matches!(e, KafkaError::NeedsSecurity { .. }), "{e}");
    assert!(e.to_string().contains("TLS or SASL"), "{e}");
    assert_eq!(e.hop(), Hop::Handshake);
}

#[test]
fn http_shows_the_status_line() {
    let g = Garbage::classify(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(g, Garbage::Http("HTTP/1.1 400 Bad Request".into()));
    let e = g.into_error("web:80", Api::ApiVersions).to_string();
    assert!(e.starts_with("web:80 answered but not as a Kafka broker:"), "{e}");
    assert!(e.contains("HTTP/1.1 400 Bad Request"), "{e}");
}

#[test]
fn other_bytes_are_text_or_hex() {
    assert_eq!(
        Garbage::classify(b"SSH-2.0-OpenSSH_9.6\r\n"),
        Garbage::Other("\"SSH-2.0-OpenSSH_9.6\\r\\n\"".into())
    );
    assert_eq!(Garbage::classify(&[0xff, 0x00, 0x7f]), Garbage::Other("bytes ff 00 7f".into()));
}

#[test]
fn error_codes_read_like_kafka_docs() {
    assert_eq!(ErrorCode(3).to_string(), "UNKNOWN_TOPIC_OR_PARTITION (3)");
    assert_eq!(ErrorCode(36).name(), "TOPIC_ALREADY_EXISTS");
    assert_eq!(ErrorCode(-1).name(), "UNKNOWN_SERVER_ERROR");
    assert_eq!(ErrorCode(9999).name(), "UNKNOWN");
    assert_eq!(ErrorCode::from_code(0), None);
    assert!(ErrorCode(58).is_authentication());
}

#[test]
fn tls_and_sasl_failures_name_their_hop_and_what_was_checked() {
    let e = KafkaError::Tls {
        addr: "b1.corp:9093".into(),
        name: "b1.corp".into(),
        failure: TlsFailure::NameMismatch { presented: vec!["10.0.0.5".into(), "b2.corp".into()] },
    };
    assert_eq!(e.hop(), Hop::Tls);
    let shown = e.to_string();
    assert!(
        shown.starts_with(
            "b1.corp:9093: TLS handshake failed (server name \"b1.corp\"): the certificate \
             is for 10.0.0.5, b2.corp, not that name"
        ),
        "{shown}"
    );
    let e = KafkaError::Sasl {
        addr: "b1.corp:9093".into(),
        mechanism: "SCRAM-SHA-256",
        user: "spark".into(),
        failure: SaslFailure::Scram(ScramError::ServerSignature),
    };
    assert_eq!(e.hop(), Hop::Sasl);
    assert!(e.to_string().contains("SCRAM-SHA-256 as \"spark\" failed"), "{e}");
    let e = KafkaError::Timeout {
        addr: "b1.corp:9093".into(),
        api: Api::SaslAuthenticate,
        timeout: Duration::from_secs(5),
    };
    assert_eq!(e.hop(), Hop::Sasl);
}

#[test]
fn hops_follow_the_failing_step() {
    let addr = "b:9092".to_string();
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let e = KafkaError::Connect {
        addr: addr.clone(),
        peer,
        timeout: Duration::from_secs(5),
        io: refused,
    };
    assert_eq!(e.hop(), Hop::Tcp);
    assert!(e.to_string().contains("connection refused"), "{e}");
    let timed_out = io::Error::from(io::ErrorKind::TimedOut);
    let e = KafkaError::Connect {
        addr: addr.clone(),
        peer,
        timeout: Duration::from_secs(5),
        io: timed_out,
    };
    assert!(e.to_string().contains("no answer within 5s"), "{e}");
    assert_eq!(
        KafkaError::Resolve { addr: addr.clone(), cause: ResolveError::NoAddresses }.hop(),
        Hop::Dns
    );
    let e = KafkaError::Timeout {
        addr: addr.clone(),
        api: Api::ApiVersions,
        timeout: Duration::from_secs(5),
    };
    assert_eq!(e.hop(), Hop::Handshake);
    assert!(e.to_string().contains("not a Kafka listener"), "{e}");
    let e = KafkaError::Timeout { addr, api: Api::Fetch, timeout: Duration::from_secs(5) };
    assert_eq!(e.hop(), Hop::Request);
}
