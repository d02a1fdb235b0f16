//! The watch's results as the metrics read them, without the daemon's lock.

use std::sync::Mutex;

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
#[derive(Default)]
pub struct View {
    counts: Mutex<Option<Counts>>,
}

impl View {
    /// `None` while no `[kafka]` section is configured.
    pub fn counts(&self) -> Option<Counts> {
        self.counts.lock().expect("kafka view lock").clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.counts.lock().expect("kafka view lock");
        f(c.get_or_insert_with(Counts::default))
    }

    pub(super) fn clear(&self) {
        *self.counts.lock().expect("kafka view lock") = None;
    }
}
