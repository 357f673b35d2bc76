//! What a build reports as it goes: one event per step start, cache hit, output chunk and
//! end. The CLI turns them into BuildKit's displays (tty, plain, rawjson, quiet).

use std::time::Duration;

/// One thing that happened to a step (a vertex of the graph).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The step started.
    Started {
        /// The vertex.
        id: usize,
        /// Its name (`[build 2/5] RUN make`).
        name: String,
    },
    /// The step's result came from the cache.
    Cached {
        /// The vertex.
        id: usize,
        /// Its name.
        name: String,
    },
    /// Why the step could not use the cache (`--progress plain` shows it).
    Miss {
        /// The vertex.
        id: usize,
        /// The reason.
        reason: String,
    },
    /// Output of a RUN step.
    Output {
        /// The vertex.
        id: usize,
        /// The bytes, as the process wrote them.
        data: Vec<u8>,
    },
    /// The step finished.
    Done {
        /// The vertex.
        id: usize,
        /// How long it took.
        took: Duration,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// A build-level message: exporting, naming, pushing.
    Note {
        /// What happened.
        text: String,
    },
    /// Something the build went on without (a cache source it could not use), one line.
    Warning {
        /// What, and why.
        text: String,
    },
}

/// Receives a build's events, from several threads at once.
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, e: Event);
}

/// Discards events.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event) {}
}

/// Collects events, for tests.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Everything seen, in order.
    pub events: std::sync::Mutex<Vec<Event>>,
}

impl Progress for Recorder {
    fn event(&self, e: Event) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }
}
