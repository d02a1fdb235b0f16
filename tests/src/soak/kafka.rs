//! The soak's Kafka load, against tansu through rule broker-1:
//! - [`Live`]: one connection of the project's client, opened at the start and kept; every
//!   LIVE_EVERY it produces a batch and reads it back. An error breaks it (none allowed).
//! - [`python_loop`]: kafka-python round trips one after another, as the lab runs them: each
//!   resolves the broker, opens connections of its own (admin, producer, consumer),
//!   produces PY_MESSAGES to a new topic and consumes them back in order.

use super::{bed::Bed, Tally};
use crate::{
    lab::clients::{self, produce_when_ready},
    topology::NATVM,
};
use anyhow::{ensure, Context, Result};
use forwarder::kafka::Connection;
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

const LIVE_EVERY: Duration = Duration::from_millis(250);
/// Messages in each batch of the live connection.
pub const LIVE_BATCH: usize = 10;
const LIVE_TOPIC: &str = "soak-live";
/// Messages of each kafka-python round trip, and their size.
pub const PY_MESSAGES: usize = 100;
const PY_SIZE: usize = 200;
const PY_PAUSE: Duration = Duration::from_secs(1);

/// The long-lived connection; message `n` carries "n", so a read back shows any loss or
/// reordering.
pub struct Live {
    conn: Connection,
    produced: u64,
}

impl Live {
    /// Connects from the client through the forwarder and creates the topic.
    pub fn open(bed: &Bed) -> Result<Live> {
        let addr = format!("{NATVM}:{}", bed.broker.backend_port);
        let mut conn = bed
            .topo
            .client
            .enter(move || {
                Connection::connect(
                    &addr,
                    &forwarder::kafka::Security::default(),
                    Duration::from_secs(10),
                )
            })?
            .context("the live Kafka connection")?;
        conn.create_topic(LIVE_TOPIC, 1)?;
        let mut live = Live { conn, produced: 0 };
        live.round(true)?;
        Ok(live)
    }

    /// Produces and reads back a batch every LIVE_EVERY until `stop` or `until`; each batch
    /// counts in `tally`. The first error ends it.
    pub fn run(&mut self, stop: &AtomicBool, until: Instant, tally: &Tally) -> Result<()> {
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            self.round(false).with_context(|| {
                format!("the live Kafka connection, after {} messages", self.produced)
            })?;
            tally.ok(1);
            std::thread::sleep(LIVE_EVERY);
        }
        Ok(())
    }

    fn round(&mut self, first: bool) -> Result<()> {
        let batch: Vec<Vec<u8>> =
            (self.produced..).take(LIVE_BATCH).map(|n| n.to_string().into_bytes()).collect();
        let offset = if first {
            produce_when_ready(&mut self.conn, LIVE_TOPIC, &batch)?
        } else {
            self.conn.produce(LIVE_TOPIC, 0, &batch)?
        };
        ensure!(offset == self.produced as i64, "produced at {offset}, not {}", self.produced);
        self.produced += LIVE_BATCH as u64;
        let back = self.conn.fetch_wait(LIVE_TOPIC, 0, offset, 1 << 20, Duration::ZERO)?;
        let values: Vec<&[u8]> = back.iter().take(LIVE_BATCH).map(|r| r.value.as_slice()).collect();
        let sent: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        ensure!(values == sent, "read back {} of the batch at {offset}, or others", values.len());
        Ok(())
    }

    /// Reads the whole topic back on the same connection: every message, in order; the count.
    pub fn verify(&mut self) -> Result<u64> {
        let mut next = 0u64;
        while next < self.produced {
            let records =
                self.conn.fetch_wait(LIVE_TOPIC, 0, next as i64, 1 << 20, Duration::ZERO)?;
            ensure!(!records.is_empty(), "nothing read back from offset {next}");
            for r in records {
                ensure!(
                    r.value == next.to_string().into_bytes(),
                    "offset {next} holds {:?}",
                    r.value
                );
                next += 1;
            }
        }
        ensure!(next == self.produced, "read back {next} of {} messages", self.produced);
        Ok(next)
    }
}

/// kafka-python round trips until `stop` or `until` (at most one a second), each on a new
/// topic; a run whose messages do not all come back in order counts as failed.
pub fn python_loop(bed: &Bed, stop: &AtomicBool, until: Instant, tally: &Tally) {
    let runs = until.saturating_duration_since(Instant::now()).as_secs().max(1);
    for i in 0..runs {
        if stop.load(Ordering::Relaxed) || Instant::now() >= until {
            return;
        }
        let topic = format!("soak-py-{i}");
        match clients::python(
            &bed.topo.client,
            "roundtrip",
            &bed.broker,
            &topic,
            PY_MESSAGES,
            PY_SIZE,
            1,
        ) {
            Ok(r)
                if r.produced == PY_MESSAGES as u64
                    && r.consumed == Some(PY_MESSAGES as u64)
                    && r.in_order == Some(true) =>
            {
                tally.ok(1)
            }
            Ok(r) => tally.fail(format!("{topic}: {r:?}")),
            Err(e) => tally.fail(format!("{topic}: {e:#}")),
        }
        std::thread::sleep(PY_PAUSE);
    }
}
