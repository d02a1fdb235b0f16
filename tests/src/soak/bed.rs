//! The soak's bed: the e2e topology (client, router, NAT VM, brokers); echo servers on
//! brokers 2 and 3 for the streams and the short connections; tansu on broker 1's address,
//! advertised as [`KAFKA_FQDN`], which the client resolves to the NAT VM, so every Kafka
//! connection, bootstrap and broker alike, goes through rule broker-1. The daemon runs the
//! seed config with a metrics endpoint and a short closing timeout, so connections closed
//! during the run leave the tables within it. Torn down in order when dropped.

use crate::{
    daemon_tests::{listen, METRICS},
    lab::{brokers::Tansu, net::Broker},
    topology::{Daemon, Topology, BROKERS, BROKER_PORT, NATVM},
    traffic::{echo_servers, EchoServers},
};
use anyhow::{bail, Result};
use std::{net::SocketAddrV4, path::Path};

/// The name tansu advertises; the client's hosts file points it at the NAT VM.
pub const KAFKA_FQDN: &str = "broker1.soak.test";
/// Listen ports of the echo rules (seed broker-2 and broker-3); broker-1's 9092 is Kafka's.
pub const ECHO_PORTS: [u16; 2] = [9093, 9094];
/// How long a closed connection stays in the tables (then the next sweep, every 10 s,
/// removes it); the default is 120 s.
pub const CLOSING: &str = "2s";

pub struct Bed {
    daemon: Option<Daemon>,
    kafka: Option<Tansu>,
    _echo: EchoServers,
    pub topo: Topology,
    /// Broker 1 as the lab's Kafka clients see it.
    pub broker: Broker,
    /// The config the daemon started with (the rule changes return the file to it).
    pub base_config: String,
    /// Removed after the daemon and the broker are stopped (fields drop after `drop`).
    dir: tempfile::TempDir,
}

impl Bed {
    pub fn new(tag: &str) -> Result<Bed> {
        let topo = Topology::new(tag, false, true)?;
        let echo: Vec<SocketAddrV4> =
            BROKERS[1..].iter().map(|b| SocketAddrV4::new(*b, BROKER_PORT)).collect();
        let echo = echo_servers(&topo.broker, &echo)?;
        let broker = Broker {
            id: 1,
            fqdn: KAFKA_FQDN.into(),
            private_endpoint: NATVM,
            backend_port: BROKER_PORT,
            onprem: BROKERS[0],
        };
        topo.client.set_hosts(&[(NATVM, KAFKA_FQDN)])?;
        let dir = tempfile::Builder::new().prefix("fwt-soak-").tempdir()?;
        let base_config = topo.config("xdp", &NATVM.to_string()).replace(
            "mss_clamp = 1360\n",
            &format!(
                "mss_clamp = 1360\nmetrics = \"{METRICS}\"\ntimeouts.closing = \"{CLOSING}\"\n"
            ),
        );
        let mut bed =
            Bed { daemon: None, kafka: None, _echo: echo, topo, broker, base_config, dir };
        bed.kafka = Some(Tansu::start(&bed.topo.broker, &bed.broker, bed.dir.path())?);
        bed.daemon = Some(Daemon::start(&bed.topo.natvm, &bed.base_config)?);
        Ok(bed)
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon runs until finish")
    }

    pub fn config(&self) -> &Path {
        &self.daemon().config
    }

    /// Where the streams and short connections go.
    pub fn echo_listens(&self) -> Vec<SocketAddrV4> {
        ECHO_PORTS.iter().map(|p| listen(*p)).collect()
    }

    /// Stops the daemon and unloads it; fails if it exited badly.
    pub fn finish(mut self) -> Result<()> {
        let d = self.daemon.take().expect("the daemon runs until finish");
        let config = d.config.clone();
        let status = d.stop()?;
        if !status.success() {
            bail!("the daemon exited with {status}");
        }
        self.topo.unload(&config)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.daemon.take();
        self.kafka.take();
    }
}
