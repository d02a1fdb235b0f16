//! What the soak saw: the samples as a table, the load's totals, the daemon's memory
//! against "flat", and the tables after the sweep. `markdown` is what target/soak/soak.md
//! holds and the test prints.

use super::{
    sample::{Capacity, Flatness, Sample},
    Options, KEPT_ERRORS,
};
use crate::{churn::Attempt, streams::StreamReport};
use std::{path::PathBuf, time::Duration};

/// Successes and failures of one kind of work, and the first errors.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub errors: Vec<String>,
}

impl Counts {
    pub fn of(attempts: &[Attempt]) -> Counts {
        let mut c = Counts::default();
        for a in attempts {
            if a.ok {
                c.ok += 1;
            } else {
                c.failed += 1;
                if c.errors.len() < KEPT_ERRORS {
                    c.errors.push(format!(
                        "at {:.1} s: {}",
                        a.at.as_secs_f64(),
                        a.error.clone().unwrap_or_default()
                    ));
                }
            }
        }
        c
    }
}

#[derive(Debug)]
pub struct Report {
    pub opts: Options,
    /// At the start of the load and every `sample_every` until its end.
    pub samples: Vec<Sample>,
    /// After the load stopped and the tables were swept (or SWEEP_LIMIT passed).
    pub end: Sample,
    /// How long after the load the tables held the live flows alone; None: not in time.
    pub swept_in: Option<Duration>,
    pub capacity: Capacity,
    /// Flows open through the whole run: the streams and the live Kafka connection.
    pub live_flows: u64,
    pub streams: Vec<StreamReport>,
    pub stall: Duration,
    /// The short connections.
    pub conns: Counts,
    /// Batches of the live Kafka connection.
    pub kafka_live: Counts,
    pub kafka_live_error: Option<String>,
    /// Messages read back in order on the live connection at the end.
    pub kafka_live_verified: Result<u64, String>,
    /// kafka-python round trips.
    pub kafka_python: Counts,
    /// Rule commands, reloads and checks through added rules.
    pub rules: Counts,
    pub seconds: f64,
}

impl Report {
    pub fn rss(&self) -> Flatness {
        Flatness::of(&self.samples, self.opts.run)
    }

    pub fn streams_broken(&self) -> usize {
        crate::streams::broken(&self.streams)
    }

    pub fn markdown(&self) -> String {
        let run = self.opts.run.as_secs();
        let rss = self.rss();
        let capacity: Vec<String> = self.capacity.iter().map(|(t, c)| format!("{t} {c}")).collect();
        let mut out = format!(
            "## Soak: {run} s of mixed load with rule changes\n\n\
             `tests/tests/soak.rs` with FWT_SOAK_SECS={run}, a sample every {} s. Through the \
             forwarder (`xdp`, seed rules, closing timeout 2 s): {} live streams, short \
             connections two at a time, a live Kafka connection and kafka-python round trips \
             against tansu, and `rule add/remove` of another rule every second with a `reload` \
             every tenth. Flows and table entries (two per flow) as the metrics report them \
             at each sample; peak flows: the most seen by a read every second since the row \
             before (closed connections stay until the sweep, every 10 s). Table capacity \
             (entries): {}.\n\n",
            self.opts.sample_every.as_secs(),
            self.streams.len(),
            capacity.join(", "),
        );
        out += "| t (s) | daemon RSS (KiB) | of it anon (KiB) | flows | peak flows | ct_established | ct_embryonic | new conns ok | failed | Kafka msgs | rule ops |\n";
        out += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for s in &self.samples {
            out += &row(&format!("{:.0}", s.at.as_secs_f64()), s);
        }
        let swept = match self.swept_in {
            Some(d) => format!("swept, +{:.1} s", d.as_secs_f64()),
            None => "not swept in time".into(),
        };
        out += &row(&format!("{:.0} ({swept})", self.end.at.as_secs_f64()), &self.end);
        out += &format!(
            "\n- live streams: {} of {} broken, longest stall {:.0} ms, {} rounds\n",
            self.streams_broken(),
            self.streams.len(),
            self.stall.as_secs_f64() * 1e3,
            self.streams.iter().map(|s| s.rounds).sum::<u64>(),
        );
        out += &format!(
            "- new connections: {} ok, {} failed ({:.0}/s)\n",
            self.conns.ok,
            self.conns.failed,
            self.conns.ok as f64 / run as f64
        );
        out += &format!(
            "- Kafka: live connection {} batches, {} ({}); kafka-python {} round trips ok, {} failed; {} messages in all\n",
            self.kafka_live.ok,
            match &self.kafka_live_verified {
                Ok(n) => format!("{n} messages read back in order at the end"),
                Err(e) => format!("read back failed: {e}"),
            },
            self.kafka_live_error.as_deref().unwrap_or("never broke"),
            self.kafka_python.ok,
            self.kafka_python.failed,
            self.end.progress.kafka_msgs,
        );
        out += &format!("- rule changes: {} ok, {} failed\n", self.rules.ok, self.rules.failed);
        out += &format!(
            "- daemon RSS: {} KiB after warm-up (median of 20-45 % of the run), {} KiB in the last quarter: {:+} KiB (allowed +{} KiB)\n",
            rss.baseline_kib,
            rss.end_kib,
            rss.growth_kib(),
            rss.allowed_kib,
        );
        out += &format!(
            "- tables after the load: {} flows, {} established and {} embryonic entries ({} live flows)\n",
            self.end.fill.flows, self.end.fill.established, self.end.fill.embryonic, self.live_flows,
        );
        for (what, c) in [
            ("new connections", &self.conns),
            ("kafka-python", &self.kafka_python),
            ("rule changes", &self.rules),
        ] {
            for e in &c.errors {
                out += &format!("- {what} error: {e}\n");
            }
        }
        out += &format!("\nWhole test {:.0} s.\n", self.seconds);
        out
    }

    /// Writes the markdown to target/soak/soak.md; its path.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/soak"));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("soak.md");
        std::fs::write(&path, self.markdown())?;
        Ok(path)
    }
}

fn row(t: &str, s: &Sample) -> String {
    let p = &s.progress;
    format!(
        "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        s.rss_kib,
        s.anon_kib,
        s.fill.flows,
        s.peak_flows,
        s.fill.established,
        s.fill.embryonic,
        p.conns_ok,
        p.conns_failed,
        p.kafka_msgs,
        p.rule_ops
    )
}
