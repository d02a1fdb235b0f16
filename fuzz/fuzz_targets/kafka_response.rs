//! The Kafka client against a broker that sends the fuzzer's bytes: the ApiVersions
//! handshake, then Metadata, CreateTopics, Produce and Fetch, each reading its response
//! frame off a real loopback socket (framing, header, correlation id, body at the
//! negotiated version, records). Whatever arrives, each step returns a result, and its
//! error prints.
#![no_main]

use forwarder::kafka::Connection;
use libfuzzer_sys::fuzz_target;
use std::{
    io::Write,
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::OnceLock,
    time::Duration,
};

/// The broker's bytes are all written before the client reads: they must fit the socket's
/// buffers.
const MAX_INPUT: usize = 16 << 10;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    static LISTENER: OnceLock<TcpListener> = OnceLock::new();
    let listener = LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").expect("bind"));
    let addr = listener.local_addr().expect("local addr");
    let client = TcpStream::connect(addr).expect("connect");
    let (mut broker, _) = listener.accept().expect("accept");
    broker.set_nonblocking(true).expect("nonblocking");
    if broker.write_all(data).is_err() {
        return;
    }
    broker.shutdown(Shutdown::Write).expect("shutdown");
    // Closing with a reset leaves no TIME_WAIT: thousands of runs a second would otherwise
    // run out of ephemeral ports.
    no_linger(&broker);
    let shown = |r: Result<String, forwarder::kafka::KafkaError>| match r {
        Ok(s) => s,
        Err(e) => e.to_string(),
    };
    let timeout = Duration::from_secs(5);
    let Ok(mut conn) = Connection::handshake("broker.example:9092", client, addr, timeout)
        .map_err(|e| e.to_string())
    else {
        return;
    };
    let _ = shown(conn.metadata(None).map(|m| format!("{m:?}")));
    let _ = shown(conn.create_topic("fuzz", 1).map(|()| String::new()));
    let _ = shown(conn.produce("fuzz", 0, &[b"x".to_vec()]).map(|o| o.to_string()));
    let _ = shown(conn.fetch_wait("fuzz", 0, 0, 1 << 20, Duration::ZERO).map(|r| format!("{r:?}")));
});

fn no_linger(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a linger struct of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
