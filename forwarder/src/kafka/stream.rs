//! The byte stream under the Kafka framing: a TCP socket, or TLS (rustls) over one. Every
//! read and write is bounded by a deadline, TLS records included: one call may take several
//! socket reads to make a record whole, and none of them waits past the deadline.

use rustls::ClientConnection;
use std::{
    io::{self, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// A client connection after its TLS handshake (see `tls::TlsConfig::handshake`).
pub struct TlsStream {
    pub conn: ClientConnection,
    pub sock: TcpStream,
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Plain(s)
    }
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Some bytes of the peer's stream (0: it closed), or `TimedOut` at the deadline.
    pub fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => {
                s.set_read_timeout(Some(left(deadline)?))?;
                s.read(buf)
            }
            Stream::Tls(t) => t.read(buf, deadline),
        }
    }

    /// Writes some of `buf` (all of what it takes goes out on the socket before it returns).
    pub fn write(&mut self, buf: &[u8], deadline: Instant) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => {
                s.set_write_timeout(Some(left(deadline)?))?;
                s.write(buf)
            }
            Stream::Tls(t) => {
                let n = t.conn.writer().write(buf)?;
                t.flush(deadline)?;
                Ok(n)
            }
        }
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: to the framing above, a close like any other
                // (its frames carry their own length, so a cut is seen there).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            self.sock.set_read_timeout(Some(left(deadline)?))?;
            self.conn.read_tls(&mut self.sock)?;
            self.conn.process_new_packets().map_err(io::Error::other)?;
            // Alerts and key updates the records asked for.
            self.flush(deadline)?;
        }
    }

    /// Sends what rustls has queued.
    pub fn flush(&mut self, deadline: Instant) -> io::Result<()> {
        while self.conn.wants_write() {
            self.sock.set_write_timeout(Some(left(deadline)?))?;
            if self.conn.write_tls(&mut self.sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// The time left before `deadline`, if any.
pub fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

fn left(deadline: Instant) -> io::Result<Duration> {
    remaining(deadline).ok_or_else(|| io::ErrorKind::TimedOut.into())
}
