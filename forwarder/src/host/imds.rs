//! Azure's instance metadata service (IMDS): this VM's name, and the Scheduled Events that
//! announce its deletion, reboot or redeployment ahead of time. IMDS answers plain HTTP at
//! the link-local 169.254.169.254 on every Azure VM, only to requests with the header
//! `Metadata: true`, and never through a proxy; every call here is bounded by a timeout.
//!
//! <https://learn.microsoft.com/azure/virtual-machines/linux/scheduled-events>

use serde::Deserialize;
use std::time::Duration;

pub const ADDRESS: &str = "169.254.169.254";
const EVENTS: &str = "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01";
const NAME: &str =
    "http://169.254.169.254/metadata/instance/compute/name?api-version=2021-02-01&format=text";

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("asking the instance metadata service ({url})")]
    Request {
        url: &'static str,
        #[source]
        cause: Box<ureq::Error>,
    },
    #[error("reading the instance metadata service's answer ({url})")]
    Read {
        url: &'static str,
        #[source]
        cause: std::io::Error,
    },
    #[error("the instance metadata service's answer is not the scheduled events ({url})")]
    Json {
        url: &'static str,
        #[source]
        cause: serde_json::Error,
    },
}

/// `GET /metadata/scheduledevents`: the events of this VM and those it shares them with
/// (an availability set's, a scale set's placement group).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvents {
    pub document_incarnation: u64,
    pub events: Vec<ScheduledEvent>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvent {
    pub event_id: String,
    /// Freeze, Reboot, Redeploy, Preempt or Terminate.
    pub event_type: String,
    /// The VMs (by name) it will act on.
    pub resources: Vec<String>,
    /// Scheduled, or Started once approved or due.
    pub event_status: String,
    /// When it will start unless approved sooner (RFC 1123); empty once started.
    #[serde(default)]
    pub not_before: String,
}

/// A client of IMDS; each call waits at most `timeout`.
pub struct Imds {
    agent: ureq::Agent,
}

impl Imds {
    pub fn new(timeout: Duration) -> Imds {
        // No proxy: IMDS refuses requests that come through one.
        Imds { agent: ureq::AgentBuilder::new().timeout(timeout).try_proxy_from_env(false).build() }
    }

    /// This VM's name, as the events' `Resources` list it.
    pub fn vm_name(&self) -> Result<String, ImdsError> {
        let body = self.call(self.agent.get(NAME), NAME, None)?;
        Ok(body.trim().to_string())
    }

    pub fn scheduled_events(&self) -> Result<ScheduledEvents, ImdsError> {
        let body = self.call(self.agent.get(EVENTS), EVENTS, None)?;
        serde_json::from_str(&body).map_err(|cause| ImdsError::Json { url: EVENTS, cause })
    }

    /// Approves event `id`: Azure starts it now instead of at its `NotBefore`.
    pub fn start(&self, id: &str) -> Result<(), ImdsError> {
        let body = serde_json::json!({ "StartRequests": [{ "EventId": id }] }).to_string();
        self.call(self.agent.post(EVENTS), EVENTS, Some(&body)).map(drop)
    }

    fn call(
        &self,
        req: ureq::Request,
        url: &'static str,
        body: Option<&str>,
    ) -> Result<String, ImdsError> {
        let req = req.set("Metadata", "true");
        let sent = match body {
            None => req.call(),
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
        };
        let answer = sent.map_err(|e| ImdsError::Request { url, cause: Box::new(e) })?;
        answer.into_string().map_err(|cause| ImdsError::Read { url, cause })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Azure's documentation (api-version 2020-07-01), as IMDS sends it.
    #[test]
    fn the_documented_answer_is_read() {
        let doc = r#"{
            "DocumentIncarnation": 2,
            "Events": [{
                "EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123",
                "EventStatus": "Scheduled",
                "EventType": "Freeze",
                "ResourceType": "VirtualMachine",
                "Resources": ["WestNO_0", "WestNO_1"],
                "NotBefore": "Mon, 11 Apr 2022 22:26:58 GMT",
                "Description": "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
                "EventSource": "Platform",
                "DurationInSeconds": 5
            }]
        }"#;
        let events: ScheduledEvents = serde_json::from_str(doc).unwrap();
        assert_eq!(events.document_incarnation, 2);
        assert_eq!(events.events[0].event_type, "Freeze");
        assert_eq!(events.events[0].resources, ["WestNO_0", "WestNO_1"]);
        let none: ScheduledEvents =
            serde_json::from_str(r#"{"DocumentIncarnation":0,"Events":[]}"#).unwrap();
        assert!(none.events.is_empty());
    }
}
