//! Keeps the next hops cached in the flows honest: every route, neighbour, address or link
//! change the kernel announces over rtnetlink bumps NEXTHOP_GEN, and the next packet of
//! every flow then looks its route up again. A gateway whose MAC changed is followed within
//! milliseconds; the program also re-checks each flow's hop once a second by itself, which
//! bounds a stale hop while no daemon runs.

use crate::datapath::{
    self,
    handles::{self, MapAccessError},
    pins::Pins,
};
use aya::maps::{Array, MapData};
use forwarder_common::map_names;
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use std::time::Duration;

// rtnetlink multicast groups (linux/rtnetlink.h), as a bind mask.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("opening the rtnetlink socket")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Map(#[from] MapAccessError),
}

/// The subscription, made before the program loads so no change between the load (which
/// bumps the generation itself) and the watch is missed: it waits in the socket.
pub struct Subscription(TokioSocket);

pub fn subscribe() -> Result<Subscription, WatchError> {
    let mut sock = TokioSocket::new(NETLINK_ROUTE).map_err(WatchError::Socket)?;
    let groups = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE;
    sock.socket_mut().bind(&SocketAddr::new(0, groups)).map_err(WatchError::Socket)?;
    Ok(Subscription(sock))
}

impl Subscription {
    /// Bumps the pinned NEXTHOP_GEN on every announcement, until the task is dropped.
    pub async fn watch(self, pins: Pins) -> Result<(), WatchError> {
        let mut gen: Array<MapData, u32> = handles::open_pinned(&pins, map_names::NEXTHOP_GEN)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            buf.clear();
            match self.0.recv(&mut buf).await {
                Ok(()) => {}
                // The socket's buffer overflowed: changes were lost, which is one more
                // reason to invalidate.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::debug!("rtnetlink overrun; next hops invalidated");
                }
                Err(e) => {
                    tracing::warn!("rtnetlink: {e}; next hops are still re-checked every second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            if let Err(e) = datapath::maps::bump_nexthop_gen(&mut gen) {
                let e = crate::error::chain(&e);
                tracing::warn!("bumping {}: {e}", map_names::NEXTHOP_GEN);
            }
        }
    }
}
