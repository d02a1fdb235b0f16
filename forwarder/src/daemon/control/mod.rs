//! The control socket: what the CLI asks the running daemon, and what it answers.
//!
//! One JSON request per connection, one JSON response back. The socket is root-only twice
//! over: the file is mode 0600 and the daemon checks the peer's credentials, so a socket
//! left world-writable by a wrong umask or a bind mount still refuses other users.

pub mod server;

use serde::{Deserialize, Serialize};
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

/// A request from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    RuleList,
    RuleAdd { name: String, listen: u16, target: String },
    RuleRemove { name: String },
    Reload,
    Drain,
    Undrain,
    Unload,
    Stats,
    Flows { rule: Option<String> },
}

impl Request {
    /// The command that sends it, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::RuleList => "rule list",
            Request::RuleAdd { .. } => "rule add",
            Request::RuleRemove { .. } => "rule remove",
            Request::Reload => "reload",
            Request::Drain => "drain",
            Request::Undrain => "undrain",
            Request::Unload => "unload",
            Request::Stats => "stats",
            Request::Flows { .. } => "flows",
        }
    }
}

/// The daemon's answer: `data` on success, or an error with the exit code the CLI should
/// end with (2 for an invalid change, 1 for a runtime failure).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub exit_code: u8,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Self {
        let data = serde_json::to_value(data).unwrap_or(serde_json::Value::Null);
        Self { ok: true, error: None, exit_code: 0, data }
    }

    pub fn err(exit_code: u8, error: impl Into<String>) -> Self {
        Self { ok: false, error: Some(error.into()), exit_code, data: serde_json::Value::Null }
    }
}

/// Decodes one request as the daemon reads it off the socket; a request that does not decode
/// gets this refusal (exit code 2). Public for the fuzz target (fuzz/), which feeds it
/// arbitrary bytes.
pub fn decode_request(buf: &[u8]) -> Result<Request, Response> {
    serde_json::from_slice(buf).map_err(|e| Response::err(2, format!("bad request: {e}")))
}

/// `forwarder status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub config: String,
    /// [`crate::config::fingerprint::sha256`] of the settings applied (not of the file,
    /// which may hold an edit not reloaded yet): equal on every VM that forwards the same
    /// way. Empty from a daemon that predates it.
    #[serde(default)]
    pub config_sha256: String,
    pub pin_path: String,
    /// Interface name and how the program is attached to it (xdp, xdp-generic, tc).
    pub interfaces: Vec<Attachment>,
    pub program_ids: Vec<u32>,
    pub snat: String,
    pub snat_ports: String,
    pub healthy: bool,
    /// Why the health endpoint fails, when it does.
    pub unhealthy_reason: Option<String>,
    pub drained: bool,
    /// Seconds since the Unix epoch.
    pub drained_since: Option<u64>,
    /// The Azure scheduled event the VM is drained for (`[azure]`); `None` for an
    /// operator's drain. Absent from a daemon of an earlier build.
    #[serde(default)]
    pub drained_for_event: Option<String>,
    pub health: Option<String>,
    pub last_probe: Option<Probe>,
    pub active_flows: u64,
    pub rules: Vec<RuleInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub interface: String,
    pub mode: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub from: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub seconds_ago: u64,
}

/// One rule as it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleInfo {
    pub name: String,
    pub id: u16,
    pub listen: u16,
    /// As written: hostname or IPv4, with port.
    pub target: String,
    /// The address new connections go to; `None` while unresolved.
    pub resolved: Option<String>,
    pub active_flows: u64,
}

/// One rule's counters (`forwarder stats`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleStatsRow {
    pub name: String,
    pub id: u16,
    pub active_flows: u64,
    /// Counter name -> value, as in `forwarder_common::Counter::name`.
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// One tracked connection (`forwarder flows`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowRow {
    pub rule: String,
    pub state: String,
    pub client: String,
    pub listen: String,
    pub snat: String,
    pub target: String,
    pub packets: u64,
    pub bytes: u64,
    pub age_s: u64,
    pub idle_s: u64,
    /// How long the handshake took through this VM (SYN to the client's ACK), in
    /// microseconds: the connect time to the target as the client saw it. None before it
    /// completed, and for flows an upgrade copied from a layout that did not record it.
    #[serde(default)]
    pub handshake_us: Option<u64>,
    pub established_table: bool,
}

/// Why the CLI got no answer from the daemon. Display says what was being done; the cause
/// is the `source()` (the CLI prints the chain). The hint comes before the cause, the one
/// place a chain leaves for it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the daemon at {path} (is `forwarder run` running?)")]
    Connect {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("talking to the daemon")]
    Io(#[from] std::io::Error),
    #[error("the daemon's answer is not valid")]
    Json(#[from] serde_json::Error),
}

/// How long the CLI waits for an answer (a reload resolves hostnames; allow for DNS).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request and reads the response.
pub fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let mut s = UnixStream::connect(socket)
        .map_err(|cause| ClientError::Connect { path: socket.display().to_string(), cause })?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.write_all(&serde_json::to_vec(req)?)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(serde_json::from_slice(&buf)?)
}
