//! The optional `[azure]` section: whether the daemon follows Azure's Scheduled Events
//! (the instance metadata service's notice of a VM about to be deleted, rebooted or
//! redeployed) and drains the VM for them. Validated in `validate/azure.rs`; followed by
//! `daemon::azure_events`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureEvents {
    /// How often the scheduled events are asked for.
    pub interval: Duration,
}
