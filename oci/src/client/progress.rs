//! What long transfers report, so that the CLI can draw a live display or print lines.

use crate::digest::Digest;

/// One thing that happened during a pull or push.
#[derive(Debug, Clone)]
pub enum Event {
    /// A blob transfer started (`size` bytes in all; `offset` already there when resuming).
    Start {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Bytes already transferred (a resumed transfer).
        offset: u64,
    },
    /// More bytes of a blob moved.
    Bytes {
        /// The blob.
        digest: Digest,
        /// How many more.
        n: u64,
    },
    /// A blob is complete and verified.
    Done {
        /// The blob.
        digest: Digest,
    },
    /// A blob needed no transfer.
    Skipped {
        /// The blob.
        digest: Digest,
        /// Why: "already exists", "mounted from <repo>".
        reason: String,
    },
    /// A request failed and will be retried.
    Retry {
        /// What failed.
        what: String,
        /// Which attempt comes next.
        attempt: u32,
    },
    /// A plain layer is being compressed before a push (see [`crate::twin`]).
    Compressing {
        /// The plain layer.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// A plain layer's compressed twin is made.
    Compressed {
        /// The plain layer.
        digest: Digest,
        /// Its twin.
        twin: Digest,
    },
    /// A manifest was pushed or pulled.
    Manifest {
        /// The tag or digest.
        reference: String,
        /// Its digest.
        digest: Digest,
    },
}

/// Receives [`Event`]s; must be cheap, it is called for every chunk.
pub trait Progress: Send + Sync {
    /// Called from any task of the transfer.
    fn event(&self, e: Event);
}

/// Reports nothing (`--quiet`, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _e: Event) {}
}
