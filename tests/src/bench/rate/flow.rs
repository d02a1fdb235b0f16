//! The one established TCP flow the generator continues: opened for real through the
//! contender (client in G -> NAT:listen -> broker), one byte each way, then frozen with
//! TCP_REPAIR so its sequence numbers can be read and the client sends nothing more.

use super::bed::{Bed, CLIENT};
use anyhow::{bail, ensure, Context, Result};
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

pub struct Flow {
    /// The client's end: its local address, and the next sequence and ack numbers.
    pub client: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    /// The source address and port the broker saw (the contender's SNAT).
    pub snat: SocketAddrV4,
    // Kept open for as long as the flow is measured.
    _client: TcpStream,
    _broker: TcpStream,
}

impl Flow {
    pub fn open(bed: &Bed) -> Result<Flow> {
        let (listen, broker_addr) = (bed.listen(), bed.broker());
        let listener =
            bed.broker_ns().enter(move || TcpListener::bind(broker_addr))?.context("broker")?;
        listener.set_nonblocking(true)?;
        let mut client = bed
            .gen
            .enter(move || TcpStream::connect_timeout(&listen.into(), Duration::from_secs(3)))?
            .with_context(|| format!("connecting to {listen} through the contender"))?;
        let mut broker = accept(&listener, Duration::from_secs(3))?;
        for s in [&client, &broker] {
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
        }
        let (local, peer) = (sock4(broker.local_addr()?)?, sock4(broker.peer_addr()?)?);
        ensure!(local == broker_addr, "the broker accepted on {local}, not {broker_addr}");
        ensure!(
            *peer.ip() == bed.snat_ip(),
            "the broker sees the client as {peer}: the contender did not SNAT to {}",
            bed.snat_ip()
        );
        ensure!(sock4(client.peer_addr()?)? == listen, "the client is not connected to {listen}");
        let client_addr = sock4(client.local_addr()?)?;
        ensure!(*client_addr.ip() == CLIENT, "the client connected from {client_addr}");
        client.write_all(b"x").context("client -> broker")?;
        let mut b = [0u8; 1];
        broker.read_exact(&mut b).context("client -> broker through the contender")?;
        broker.write_all(b"y").context("broker -> client")?;
        client.read_exact(&mut b).context("broker -> client through the contender")?;
        // Let the client's delayed ACK of the broker's byte go out before freezing it.
        std::thread::sleep(Duration::from_millis(100));
        let (seq, ack) = freeze(&client)?;
        Ok(Flow { client: client_addr, seq, ack, snat: peer, _client: client, _broker: broker })
    }
}

fn sock4(a: std::net::SocketAddr) -> Result<SocketAddrV4> {
    match a {
        std::net::SocketAddr::V4(v) => Ok(v),
        v6 => bail!("unexpected IPv6 address {v6}"),
    }
}

fn accept(listener: &TcpListener, limit: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!("the broker got no connection within {limit:?}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Puts the socket in TCP repair mode (it sends nothing from then on, not even on close)
/// and reads its next send sequence number and next expected receive sequence number.
fn freeze(s: &TcpStream) -> Result<(u32, u32)> {
    const TCP_REPAIR: libc::c_int = 19;
    const TCP_REPAIR_QUEUE: libc::c_int = 20;
    const TCP_QUEUE_SEQ: libc::c_int = 21;
    const TCP_RECV_QUEUE: libc::c_int = 1;
    const TCP_SEND_QUEUE: libc::c_int = 2;
    let fd = s.as_raw_fd();
    let set = |opt, v: libc::c_int| -> Result<()> {
        // SAFETY: fd is an open socket; v outlives the call.
        let rc =
            unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, opt, &v as *const _ as *const _, 4) };
        ensure!(rc == 0, "setsockopt {opt}: {}", std::io::Error::last_os_error());
        Ok(())
    };
    let seq_of = |queue| -> Result<u32> {
        set(TCP_REPAIR_QUEUE, queue)?;
        let mut v: u32 = 0;
        let mut len: libc::socklen_t = 4;
        // SAFETY: fd is an open socket; v and len are valid for writing.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                TCP_QUEUE_SEQ,
                &mut v as *mut _ as *mut _,
                &mut len,
            )
        };
        ensure!(rc == 0, "TCP_QUEUE_SEQ: {}", std::io::Error::last_os_error());
        Ok(v)
    };
    set(TCP_REPAIR, 1)?;
    Ok((seq_of(TCP_SEND_QUEUE)?, seq_of(TCP_RECV_QUEUE)?))
}
