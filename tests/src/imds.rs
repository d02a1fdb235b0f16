//! A stand-in for Azure's instance metadata service, at its own address 169.254.169.254:80
//! inside a namespace of the test's (the NAT VM's): the VM's name and the scheduled events
//! the test sets, answered as IMDS answers them (only with `Metadata: true`), and every
//! request kept so the test can see what the daemon asked and approved.

use crate::netns::Netns;
use anyhow::{Context, Result};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

/// One request as the service saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
}

#[derive(Default)]
struct State {
    events: String,
    seen: Vec<Seen>,
}

pub struct FakeImds {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeImds {
    /// Serves in `ns` (on its loopback, which takes the address) as the VM named `vm`.
    pub fn start(ns: &Netns, vm: &str) -> Result<FakeImds> {
        ns.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"])?;
        let state = Arc::new(Mutex::new(State { events: events_json(&[]), seen: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, st, vm) = (state.clone(), stop.clone(), vm.to_string());
        let thread = ns.spawn(move || {
            let listener = TcpListener::bind("169.254.169.254:80");
            let listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            listener.set_nonblocking(true).expect("a nonblocking listener");
            let _ = ready_tx.send(Ok(()));
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => answer(conn, &s, &vm),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the fake IMDS did not start")?
            .map_err(|e| anyhow::anyhow!("binding 169.254.169.254:80: {e}"))?;
        Ok(FakeImds { state, stop, thread: Some(thread) })
    }

    /// The scheduled events from now on: (id, type, VMs), each due in five minutes.
    pub fn set_events(&self, events: &[(&str, &str, &[&str])]) {
        let in_5_min: Vec<_> = events.iter().map(|&(id, t, vms)| (id, t, vms, 5)).collect();
        self.set_events_at(&in_5_min);
    }

    /// The scheduled events from now on: (id, type, VMs, minutes until its NotBefore).
    pub fn set_events_at(&self, events: &[(&str, &str, &[&str], u64)]) {
        self.state.lock().expect("imds state").events = events_json(events);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("imds state").seen.clone()
    }

    /// How many times the events were asked for so far.
    pub fn event_reads(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path.contains("scheduledevents"))
            .count()
    }

    /// The event ids approved so far, in order.
    pub fn approved(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter(|s| s.method == "POST")
            .filter_map(|s| serde_json::from_str::<serde_json::Value>(&s.body).ok())
            .flat_map(|v| {
                let ids = v["StartRequests"].as_array().cloned().unwrap_or_default();
                ids.into_iter().filter_map(|r| r["EventId"].as_str().map(str::to_string))
            })
            .collect()
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The document IMDS returns (api-version 2020-07-01).
fn events_json(events: &[(&str, &str, &[&str], u64)]) -> String {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|(id, kind, vms, minutes)| {
            let at = std::time::SystemTime::now() + Duration::from_secs(minutes * 60);
            serde_json::json!({
                "EventId": id,
                "EventType": kind,
                "ResourceType": "VirtualMachine",
                "Resources": vms,
                "EventStatus": "Scheduled",
                "NotBefore": httpdate::fmt_http_date(at),
                "Description": "Virtual machine is going to be deleted.",
                "EventSource": "User",
                "DurationInSeconds": -1
            })
        })
        .collect();
    serde_json::json!({ "DocumentIncarnation": 1, "Events": events }).to_string()
}

fn answer(conn: TcpStream, state: &Mutex<State>, vm: &str) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let (method, path) =
        (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    let (mut metadata, mut length) = (false, 0usize);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "metadata" => metadata = value.trim() == "true",
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut s = state.lock().expect("imds state");
    s.seen.push(Seen { method: method.clone(), path: path.clone(), body });
    let (status, text) = if !metadata {
        (
            "400 Bad Request",
            "{\"error\":\"Bad request. Required metadata header not specified\"}".to_string(),
        )
    } else if path.starts_with("/metadata/instance/compute/name") {
        ("200 OK", vm.to_string())
    } else if path.starts_with("/metadata/scheduledevents") && method == "GET" {
        ("200 OK", s.events.clone())
    } else if path.starts_with("/metadata/scheduledevents") && method == "POST" {
        ("200 OK", String::new())
    } else {
        ("404 Not Found", String::new())
    };
    drop(s);
    let _ = (&conn).write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
        .as_bytes(),
    );
}
