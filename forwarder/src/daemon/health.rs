//! The load balancer's health probe endpoint. It accepts TCP connections (and answers an
//! HTTP request with 200) only while this VM forwards: otherwise the listening socket is
//! closed, so both TCP and HTTP probes fail and the load balancer sends new flows to the
//! other NAT VM. Every accepted probe is recorded: a probe that never arrives (NSG, local
//! firewall) is the most common reason this set-up carries no traffic.

use crate::{daemon::accept::Backoff, daemon::live::HealthView};
use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// How quickly a change of health reaches the socket.
const POLL: Duration = Duration::from_millis(200);
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Serves until `stop` is cancelled; the listening socket is closed when
/// this returns, so the caller can order what comes after it (detaching on unload).
pub async fn serve(addr: SocketAddr, view: Arc<HealthView>, stop: CancellationToken) {
    let mut listener: Option<TcpListener> = None;
    let mut backoff = Backoff::new("health");
    loop {
        let healthy = view.healthy.load(Ordering::SeqCst);
        if !healthy {
            if listener.take().is_some() {
                tracing::info!(%addr, "health endpoint closed: not forwarding");
            }
            if stopped_within(POLL, &stop).await {
                break;
            }
            continue;
        }
        let Some(l) = &listener else {
            match bind(addr) {
                Ok(l) => {
                    tracing::info!(%addr, "health endpoint open");
                    listener = Some(l);
                }
                Err(e) => {
                    tracing::warn!(%addr, "cannot open the health endpoint: {e}");
                    if stopped_within(Duration::from_secs(1), &stop).await {
                        break;
                    }
                }
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    *view.last_probe.lock().expect("probe lock") = Some((SystemTime::now(), peer));
                    view.probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::spawn(answer(stream));
                }
                Err(e) => backoff.failed(&e).await,
            },
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => break,
        }
    }
    if listener.take().is_some() {
        tracing::info!(%addr, "health endpoint closed: the daemon stops");
    }
}

/// Waits `d`; true if `stop` fired meanwhile.
async fn stopped_within(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Re-opening right after a close must not fail on TIME_WAIT leftovers.
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(64)
}

/// A TCP probe closes without sending; an HTTP probe gets 200.
async fn answer(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => return,
    };
    if n > 0 && (buf.starts_with(b"GET ") || buf.starts_with(b"HEAD ")) {
        let body = "forwarding\n";
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(resp.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
}
