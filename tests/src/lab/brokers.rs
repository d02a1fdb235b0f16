//! The on-prem brokers: one tansu process per broker address (tansu's node id is fixed, so
//! each is a one-node cluster), each advertising its own FQDN, as the brokers behind the
//! Azure path do. Storage is a SQLite file per broker in the lab's directory.

use super::net::{Broker, KAFKA_PORT};
use crate::netns::Netns;
use anyhow::{bail, Context, Result};
use std::{
    net::{SocketAddrV4, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

/// The tansu binary: $TANSU_BIN, else where .ci/setup.sh installs it.
pub fn tansu_bin() -> Result<PathBuf> {
    let path = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/tansu/bin/tansu"));
    if !path.exists() {
        bail!(
            "the Kafka broker (tansu) is not installed at {}: run `bash .ci/setup.sh` \
             (cargo install tansu --features libsql --root /opt/tansu), or set TANSU_BIN",
            path.display()
        );
    }
    Ok(path)
}

pub struct Tansu {
    pub broker: Broker,
    child: Child,
    log: PathBuf,
}

impl Tansu {
    /// Starts broker `b` in `ns` on its on-prem address and waits until it accepts.
    pub fn start(ns: &Netns, b: &Broker, dir: &Path) -> Result<Tansu> {
        let bin = tansu_bin()?;
        let log = dir.join(format!("broker{}.log", b.id));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = ns.command(bin.to_str().context("utf-8 path")?);
        super::die_with_lab(&mut cmd, libc::SIGKILL);
        let child = cmd
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{}:{KAFKA_PORT}", b.onprem))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}:{KAFKA_PORT}", b.fqdn))
            .arg("--storage-engine")
            // tansu takes the URL's path as relative (sqlite:///tmp/x opens tmp/x), so the
            // file is named relative to the lab directory, the broker's working directory.
            .arg(format!("sqlite://broker{}.db", b.id))
            .arg("--cluster-id")
            .arg(format!("onprem-{}", b.id))
            .current_dir(dir)
            .stdin(Stdio::null())
            // One open file for both streams, so they append instead of overwriting.
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .context("spawning tansu")?;
        let mut t = Tansu { broker: b.clone(), child, log };
        // Accepting connections is the readiness signal (checked from inside on-prem).
        let addr = SocketAddrV4::new(b.onprem, KAFKA_PORT);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = ns.enter(move || {
                TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok()
            })?;
            if up {
                return Ok(t);
            }
            if let Some(status) = t.child.try_wait()? {
                bail!("broker{} (tansu) exited with {status}: {}", b.id, t.log_text());
            }
            if Instant::now() > deadline {
                bail!("broker{} (tansu) not accepting after 20 s: {}", b.id, t.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
