//! The kernel program's operator events (forwarder-ebpf `events.rs`: SNAT ports exhausted,
//! flow table full, an ICMP error not translated, a handshake half evicted) into the
//! daemon's log. The program writes them with aya-log into its ring buffer, at most a few
//! lines a second per event; aya-log turns each record into a `log` record, which the
//! tracing subscriber takes (journald under systemd). `budgets` reads how many were
//! written and how many the rate limit held back, for the metrics.

use aya::{
    maps::{Array, MapData},
    Ebpf,
};
use forwarder_common::{LogBudget, LOG_EVENTS, LOG_EVENT_NAMES};
use tokio::io::{unix::AsyncFd, Interest};

#[derive(Debug, thiserror::Error)]
pub enum KernelLogError {
    #[error("opening the program's log buffer")]
    Open(#[source] aya_log::Error),
    #[error("watching the program's log buffer")]
    Watch(#[source] std::io::Error),
}

impl crate::datapath::Datapath {
    /// Opens the program's log buffer; the returned future forwards its lines into the log
    /// until dropped (the daemon runs it as one of its tasks).
    pub fn kernel_log(
        &mut self,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, KernelLogError> {
        start(self.ebpf_mut())
    }

    /// Per event: (name, lines written, events held back by the rate limit).
    pub fn kernel_events(&self) -> Vec<(&'static str, u64, u64)> {
        budgets(&self.maps.log_budget)
    }
}

fn start(
    ebpf: &mut Ebpf,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, KernelLogError> {
    let logger = aya_log::EbpfLogger::init(ebpf).map_err(KernelLogError::Open)?;
    // SAFETY: the logger owns the ring buffer's map fd and is moved into the AsyncFd, so the
    // fd stays open and the same for the AsyncFd's whole life.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| KernelLogError::Watch(e.into()))?;
    Ok(async move {
        loop {
            let mut ready = match fd.readable_mut().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(
                        "the program's log buffer: {}; kernel events are not logged",
                        crate::error::chain(&e)
                    );
                    return;
                }
            };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    })
}

/// Per event: (name, lines written, events held back by the rate limit).
fn budgets(array: &Array<MapData, LogBudget>) -> Vec<(&'static str, u64, u64)> {
    (0..LOG_EVENTS)
        .filter_map(|i| {
            let b = array.get(&(i as u32), 0).ok()?;
            Some((LOG_EVENT_NAMES[i], b.logged, b.suppressed))
        })
        .collect()
}
