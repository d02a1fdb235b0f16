//! Unit tests of `client.rs`: the handshake against scripted brokers on loopback, batches.
use super::*;

#[test]
fn host_port_forms() {
    assert_eq!(split_host_port("b1.corp:9092").unwrap(), ("b1.corp".into(), 9092));
    assert_eq!(split_host_port("[fd00::1]:9093").unwrap(), ("fd00::1".into(), 9093));
    for bad in ["b1", ":9092", "b1:0", "b1:x", "fd00::1:9092", "b1:70000"] {
        assert!(split_host_port(bad).is_err(), "{bad}");
    }
    assert_eq!(join_host_port("fd00::1", 9092), "[fd00::1]:9092");
}

/// A broker that only knows ApiVersions up to v2 answers our v3 in v0 with
/// UNSUPPORTED_VERSION and its range; we ask again at v2.
#[test]
fn api_versions_falls_back_to_the_brokers_highest() {
    use kafka_protocol::{
        messages::api_versions_response::ApiVersion, protocol::decode_request_header_from_buffer,
    };
    use std::{io::Read, io::Write, net::TcpListener};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let keys: Vec<ApiVersion> = [(18, 0, 2), (3, 0, 5)]
            .map(|(k, lo, hi)| {
                ApiVersion::default().with_api_key(k).with_min_version(lo).with_max_version(hi)
            })
            .to_vec();
        let mut asked = Vec::new();
        for _ in 0..2 {
            let mut size = [0u8; 4];
            s.read_exact(&mut size).unwrap();
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            s.read_exact(&mut body).unwrap();
            let h = decode_request_header_from_buffer(&mut Bytes::from(body)).unwrap();
            asked.push(h.request_api_version);
            let (code, v) =
                if h.request_api_version > 2 { (35, 0) } else { (0, h.request_api_version) };
            let resp =
                ApiVersionsResponse::default().with_error_code(code).with_api_keys(keys.clone());
            s.write_all(
                &wire::encode_response::<ApiVersionsRequest>(&resp, v, h.correlation_id).unwrap(),
            )
            .unwrap();
        }
        asked
    });
    let stream = TcpStream::connect(addr).unwrap();
    let conn = Connection::handshake("old:9092", stream, addr, Duration::from_secs(5)).unwrap();
    assert_eq!(broker.join().unwrap(), vec![3, 2]);
    assert_eq!(conn.versions().get(Api::Metadata), Some(5));
    assert_eq!(conn.versions().get(Api::Produce), None);
}

/// A frame that claims 2^32-2 ApiVersions entries in a few bytes. The decoder used to
/// reserve room for all of them first (over 100 GB): the allocation failed and the process
/// aborted. With the patched kafka-protocol (third_party/) it is a parse error. (On this
/// kernel's default heuristic overcommit the old reservation fails for certain: it is
/// larger than RAM and swap together.)
#[test]
fn huge_array_count_is_an_error() {
    use std::{io::Read, io::Write, net::TcpListener};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut size = [0u8; 4];
        s.read_exact(&mut size).unwrap();
        let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
        s.read_exact(&mut request).unwrap();
        let correlation_id = &request[4..8];
        // ApiVersions v3: error_code 0, then api_keys as a compact array whose
        // length varint is 2^32-1 (2^32-2 entries), then three bytes of them.
        let body = [&[0u8, 0][..], &[0xff, 0xff, 0xff, 0xff, 0x0f], &[0, 18, 0]].concat();
        let frame_len = (correlation_id.len() + body.len()) as i32;
        s.write_all(&[&frame_len.to_be_bytes()[..], correlation_id, &body].concat()).unwrap();
    });
    let stream = TcpStream::connect(addr).unwrap();
    let err = Connection::handshake("huge:9092", stream, addr, Duration::from_secs(5))
        .err()
        .expect("a frame this short cannot hold that many entries");
    broker.join().unwrap();
    let shown = err.to_string();
    assert!(shown.contains("does not parse"), "{shown}");
    // The whole line, the decoder's message included, and no source to print it twice.
    assert_eq!(
        shown,
        "huge:9092 answered but not as a Kafka broker: it answered ApiVersions with a v3 \
         response that does not parse: Not enough bytes remaining in buffer to read value \
         (requested 2 but only 1 available)"
    );
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn batches_round_trip_and_skip_earlier_offsets() {
    let values: Vec<Vec<u8>> = (0..5).map(|i| format!("m{i}").into_bytes()).collect();
    let batch = encode_batch(&values).unwrap();
    // One batch: base offset 0, five records.
    assert_eq!(RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap().len(), 1);
    let back = decode_records(batch.clone(), 2).unwrap();
    assert_eq!(back.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(back[0].value, b"m2");
    // A batch cut short at max_bytes is left for the next fetch.
    let mut two = batch.to_vec();
    two.extend_from_slice(&batch[..batch.len() - 3]);
    assert_eq!(decode_records(Bytes::from(two), 0).unwrap().len(), 5);
}

/// The texts operators see, pinned: the cause's message is part of the line, and the error
/// has no source that would print it again.
#[test]
fn failures_show_their_cause_once() {
    let e = connect_tcp("b1.corp:9092", &[], Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.to_string(), "b1.corp:9092: the name does not resolve: no addresses");
    assert!(std::error::Error::source(&e).is_none());
    let negative = Bytes::from([&0i64.to_be_bytes()[..], &(-1i32).to_be_bytes()].concat());
    assert_eq!(decode_records(negative, 0).unwrap_err().to_string(), "a batch of length -1");
    let mut bad = encode_batch(&[b"x".to_vec()]).unwrap().to_vec();
    bad[16] = 7; // magic
    assert_eq!(
        decode_records(Bytes::from(bad), 0).unwrap_err().to_string(),
        "Unknown record batch version (7)"
    );
    assert_eq!(
        crate::kafka::host_port_arg("b1").unwrap_err().to_string(),
        "\"b1\": expected HOST:PORT (no port)"
    );
}

/// A connection to a broker that has sent `frames` already (after its ApiVersions answer,
/// which offers Metadata v12 and Fetch v11): each request reads the next one. The broker's
/// end comes back too, to keep the connection open.
fn scripted(frames: &[Vec<u8>]) -> (Connection, TcpStream) {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use std::{io::Write, net::TcpListener};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (mut broker, _) = listener.accept().unwrap();
    let keys = [(18, 0, 3), (3, 12, 12), (1, 11, 11)]
        .map(|(k, lo, hi)| {
            ApiVersion::default().with_api_key(k).with_min_version(lo).with_max_version(hi)
        })
        .to_vec();
    let hello = ApiVersionsResponse::default().with_api_keys(keys);
    broker.write_all(&wire::encode_response::<ApiVersionsRequest>(&hello, 3, 1).unwrap()).unwrap();
    for f in frames {
        broker.write_all(f).unwrap();
    }
    (Connection::handshake("b:9092", client, addr, Duration::from_secs(5)).unwrap(), broker)
}

#[test]
fn broker_answers_that_do_not_decode_show_the_decoders_message_once() {
    // Metadata v12: a good response header (correlation 2, no tagged fields), one byte of
    // body.
    let frame = [&6i32.to_be_bytes()[..], &2i32.to_be_bytes(), &[0, 0xff]].concat();
    let (mut conn, _broker) = scripted(&[frame]);
    let e = conn.metadata(None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "b:9092: Metadata: the broker sent a v12 response that does not parse: Not enough \
         bytes remaining in buffer to read value (requested 4 but only 1 available)"
    );
    assert!(std::error::Error::source(&e).is_none());

    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    let mut records = encode_batch(&[b"x".to_vec()]).unwrap().to_vec();
    records[16] = 7; // magic
    let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(topic_name("t"))
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_records(Some(Bytes::from(records)))])]);
    let frame = wire::encode_response::<FetchRequest>(&resp, 11, 2).unwrap();
    let (mut conn, _broker) = scripted(&[frame]);
    let e = conn.fetch("t", 0, 0, 1 << 20).unwrap_err();
    assert_eq!(
        e.to_string(),
        "b:9092: Fetch: the records do not decode: Unknown record batch version (7)"
    );
    assert!(std::error::Error::source(&e).is_none());
}
