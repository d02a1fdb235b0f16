//! The watch's results as the metrics read them, without the daemon's lock.

/// What the metrics show, updated after each round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub mapped: u64,
    pub unmapped: u64,
    pub gone: u64,
    /// Rounds that did not get the metadata.
    pub failures: u64,
    /// When a round last got it (Unix time); 0 until one does.
    pub last_success_unix: f64,
}

/// The watch's results, read by the metrics without the daemon's lock.
pub type View = crate::daemon::watch_view::WatchView<Counts>;
