//! Real TCP traffic for the end-to-end tests: echo servers on the broker addresses that
//! report who they saw, and clients that push data both ways and verify it by hash.

use crate::netns::Netns;
use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

/// Bytes the server sends first: the client address it saw (4 + 2) and its own address (4).
pub const HEADER_LEN: usize = 10;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Echo servers, stopped when dropped.
pub struct EchoServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Listens on each address inside `ns`. Every connection gets the header, then an echo of
/// everything it sends, until it shuts down its side.
pub fn echo_servers(ns: &Netns, addrs: &[SocketAddrV4]) -> Result<EchoServers> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for &addr in addrs {
        let listener =
            ns.enter(move || TcpListener::bind(addr))?.with_context(|| format!("bind {addr}"))?;
        listener.set_nonblocking(true)?;
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || accept_loop(listener, stop)));
    }
    Ok(EchoServers { stop, threads })
}

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, peer)) => {
                std::thread::spawn(move || {
                    let _ = serve(conn, peer);
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => return,
        }
    }
}

fn serve(mut conn: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (peer, conn.local_addr()?) else {
        return Ok(());
    };
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&peer.ip().octets());
    header[4..6].copy_from_slice(&peer.port().to_be_bytes());
    header[6..].copy_from_slice(&local.ip().octets());
    conn.write_all(&header)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        conn.write_all(&buf[..n])?;
    }
    conn.shutdown(Shutdown::Write)
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What one verified exchange proved.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The client address the server saw (the NAT VM's SNAT address and port).
    pub seen_peer: SocketAddrV4,
    /// The server address the connection reached (which broker).
    pub reached: Ipv4Addr,
    pub bytes_each_way: usize,
}

/// Connects from inside `ns` to `to`.
pub fn connect(ns: &Netns, to: SocketAddrV4) -> Result<TcpStream> {
    ns.enter(move || TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)))?
        .with_context(|| format!("connect to {to}"))
}

/// Sends `size` pseudo-random bytes (from `seed`) while reading the echo, then checks the
/// echo is the same stream, byte for byte (by length and SHA-256).
pub fn exchange(stream: TcpStream, size: usize, seed: u64) -> Result<Exchange> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<[u8; 32]> {
        let mut hash = Sha256::new();
        let mut rng = seed | 1;
        let mut chunk = vec![0u8; 32 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            for b in chunk[..n].iter_mut() {
                // xorshift64: cheap, deterministic, not compressible.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *b = rng as u8;
            }
            hash.update(&chunk[..n]);
            writer.write_all(&chunk[..n])?;
            left -= n;
        }
        writer.shutdown(Shutdown::Write)?;
        Ok(hash.finalize().into())
    });
    let mut reader = stream;
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header).context("reading the server's header")?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    loop {
        let n = reader.read(&mut buf).context("reading the echo")?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        got += n;
    }
    let sent = sender.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    ensure!(got == size, "echo carried {got} bytes, sent {size}");
    ensure!(<[u8; 32]>::from(hash.finalize()) == sent, "echo differs from what was sent");
    Ok(Exchange {
        seen_peer: SocketAddrV4::new(
            Ipv4Addr::new(header[0], header[1], header[2], header[3]),
            u16::from_be_bytes([header[4], header[5]]),
        ),
        reached: Ipv4Addr::new(header[6], header[7], header[8], header[9]),
        bytes_each_way: got,
    })
}
