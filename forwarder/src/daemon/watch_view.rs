//! What a watch task (`kafka_watch`, `azure_events`) last found, for the metrics to read
//! without the daemon's lock: the task updates its counts after each round, and clears
//! them while its section is not configured (then its families are not exported).

use std::sync::Mutex;

pub struct WatchView<C> {
    counts: Mutex<Option<C>>,
}

impl<C> Default for WatchView<C> {
    fn default() -> Self {
        WatchView { counts: Mutex::new(None) }
    }
}

impl<C: Clone + Default> WatchView<C> {
    /// `None` while the watch's section is not configured.
    pub fn counts(&self) -> Option<C> {
        self.counts.lock().expect("watch view lock").clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut C)) {
        f(self.counts.lock().expect("watch view lock").get_or_insert_with(C::default))
    }

    pub(crate) fn clear(&self) {
        *self.counts.lock().expect("watch view lock") = None;
    }
}
