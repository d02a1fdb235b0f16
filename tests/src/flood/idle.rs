//! Idle established flows beside the flood: connections opened before it that say nothing
//! more. The daemon's sweep must remove their flows on time (the established timeout plus
//! one sweep interval after their last packet) while the flood churns the embryonic table;
//! a sweep that walked the churning table first, key by key, might never have reached them.

use super::bed::Bed;
use crate::testrun::flow_key;
use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData};
use forwarder_common::{map_names, CtEntry, FlowKey};
use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

pub const CONNS: usize = 12;
/// The bed's `timeouts.established`.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The daemon's sweep interval (GC_INTERVAL in forwarder/src/daemon/mod.rs).
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// On time: the timeout, one sweep interval, and a second for the coarse clock and the
/// sweep's own length.
pub const ON_TIME: Duration = Duration::from_secs(16);
const POLL: Duration = Duration::from_millis(100);

pub struct Idle {
    _conns: Vec<TcpStream>,
    keys: Vec<FlowKey>,
    /// Just after their last packet.
    pub since: Instant,
}

/// Opens CONNS connections over the listen ports, reads each one's greeting, then leaves
/// them idle.
pub fn open(bed: &Bed) -> Result<Idle> {
    let listen = bed.listen_addrs();
    let (mut conns, mut keys) = (Vec::new(), Vec::new());
    for i in 0..CONNS {
        let mut c = crate::traffic::connect(&bed.topo.client, listen[i % listen.len()])?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut header = [0u8; 10];
        c.read_exact(&mut header).context("an idle connection's greeting")?;
        let SocketAddr::V4(local) = c.local_addr()? else { anyhow::bail!("not IPv4") };
        keys.push(flow_key(local, listen[i % listen.len()]));
        conns.push(c);
    }
    Ok(Idle { _conns: conns, keys, since: Instant::now() })
}

impl Idle {
    /// When each idle flow left the established table, measured from `since`; polls until
    /// all have gone, or `stop` is set and ON_TIME has passed.
    pub fn watch(&self, bed: &Bed, stop: &AtomicBool) -> Result<Vec<Option<Duration>>> {
        let map = bed.topo.pinned_map(map_names::CT_ESTABLISHED)?;
        let table: HashMap<MapData, FlowKey, CtEntry> =
            HashMap::try_from(Map::from_map_data(map)?).context("CT_ESTABLISHED")?;
        let mut gone: Vec<Option<Duration>> = vec![None; self.keys.len()];
        let hard_stop = self.since + ON_TIME * 3;
        loop {
            for (key, when) in self.keys.iter().zip(gone.iter_mut()) {
                if when.is_none() && table.get(key, 0).is_err() {
                    *when = Some(self.since.elapsed());
                }
            }
            let all = gone.iter().all(Option::is_some);
            let late = self.since.elapsed() > ON_TIME;
            if all || (stop.load(Ordering::Relaxed) && late) || Instant::now() > hard_stop {
                return Ok(gone);
            }
            std::thread::sleep(POLL);
        }
    }
}
