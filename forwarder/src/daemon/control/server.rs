//! The daemon's side of the control socket: binding it (root only), reading one request
//! per connection (bounded in size and time, the peer's credentials checked), answering it
//! from the shared state in a blocking thread, and the unload request handed to the main
//! loop.

use super::{decode_request, Request, Response};
use crate::{
    daemon::{
        accept::Backoff,
        change,
        live::{ChangeError, Shared},
    },
    error::{Step, StepError},
};
use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::Notify,
};

/// Largest control request read; a rule add is a few hundred bytes.
const MAX_REQUEST: u64 = 64 * 1024;

/// Refuses to start while another daemon answers on `socket`: two daemons on one pin
/// directory would fight over the maps.
pub fn refuse_if_running(socket: &Path) -> Result<(), StepError> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(StepError::msg(format!(
            "another forwarder is running (its control socket {} answers)",
            socket.display()
        )));
    }
    Ok(())
}

pub fn bind(path: &Path) -> Result<UnixListener, StepError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .step_with(|| format!("creating the control socket's directory {}", dir.display()))?;
    }
    // A socket file left by a daemon that was killed.
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)
        .step_with(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .step_with(|| format!("making {} root-only", path.display()))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, shared: Shared, unload: Arc<Notify>) {
    let mut backoff = Backoff::new("control");
    loop {
        let (stream, _) = backoff.accept(|| listener.accept()).await;
        let shared = shared.clone();
        let unload = unload.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_connection(stream, shared, unload).await {
                // A StepError shows its cause only through its source chain.
                tracing::debug!("control connection: {}", crate::error::chain(&e));
            }
        });
    }
}

async fn handle_connection(
    mut stream: UnixStream,
    shared: Shared,
    unload: Arc<Notify>,
) -> Result<(), StepError> {
    // The request is read whoever sent it (bounded in size and time), so that a refused
    // client gets its answer rather than a broken pipe.
    let mut buf = Vec::new();
    let mut limited = (&mut stream).take(MAX_REQUEST);
    tokio::time::timeout(Duration::from_secs(5), limited.read_to_end(&mut buf))
        .await
        .step("reading the request")?
        .step("reading the request")?;
    let resp = match peer_allowed(&stream) {
        Err(e) => Response::err(1, e),
        Ok(()) => match decode_request(&buf) {
            Err(refused) => refused,
            Ok(Request::Unload) => {
                unload.notify_one();
                Response::ok("unloading: the program is detached and the pins removed")
            }
            Ok(req) => tokio::task::spawn_blocking(move || handle(&shared, req))
                .await
                .step("handling the request")?,
        },
    };
    let bytes = serde_json::to_vec(&resp).step("encoding the answer")?;
    stream.write_all(&bytes).await.step("sending the answer")?;
    stream.shutdown().await.step("closing the connection")?;
    Ok(())
}

/// Only root (or the daemon's own user) may talk to the daemon, whatever the socket's mode.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let cred = stream.peer_cred().map_err(|e| format!("reading peer credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == me {
        Ok(())
    } else {
        tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a control connection");
        Err(format!("permission denied: uid {} is not root", cred.uid()))
    }
}

/// Answers one request, in a blocking thread. Rule changes take the lock only to commit
/// (`change`): their lookups never hold up the requests that read the state.
fn handle(shared: &Shared, req: Request) -> Response {
    let live = || shared.lock().expect("lock");
    // The readers walk the tables before they take the lock for the rest.
    let flows = || shared.tables.scan().map(|s| s.flows).map_err(ChangeError::runtime_because);
    let result: Result<serde_json::Value, ChangeError> = match req {
        Request::Status => flows().map(|f| json(live().status_of(&f))),
        Request::RuleList => flows().map(|f| json(live().rules(&f))),
        Request::Stats => flows().and_then(|f| live().stats_of(&f)).map(json),
        Request::Flows { rule } => {
            flows().and_then(|f| live().flows_of(&f, rule.as_deref())).map(json)
        }
        Request::Drain => live().drain(true).map(json),
        Request::Undrain => live().drain(false).map(json),
        Request::Reload => change::reload(shared).map(|s| log_change("reload", s)),
        Request::RuleAdd { name, listen, target } => {
            change::rule_add(shared, &name, listen, &target).map(|s| log_change("rule add", s))
        }
        Request::RuleRemove { name } => {
            change::rule_remove(shared, &name).map(|s| log_change("rule remove", s))
        }
        Request::Unload => unreachable!("handled before the request is handed here"),
    };
    match result {
        Ok(v) => Response { ok: true, error: None, exit_code: 0, data: v },
        Err(e) => {
            // The answer says what happened to the change (nothing applied, undone, or
            // applied with its state not saved).
            tracing::warn!("control request failed: {e}");
            Response::err(e.exit_code, e.message)
        }
    }
}

fn json(v: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn log_change(what: &str, summary: String) -> serde_json::Value {
    tracing::info!("{what}: {summary}");
    serde_json::Value::String(summary)
}
