//! The one error type of the `oci` crate.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// What went wrong, in one word: lets callers (the CLI, the registry) choose an exit code
/// or an HTTP status without matching on every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller gave something malformed: a digest, a reference, an archive.
    InvalidInput,
    /// The thing asked for is not there.
    NotFound,
    /// Stored or received data does not match what describes it (digest, size).
    Corrupt,
    /// The operating system failed us.
    Io,
    /// A registry could not be reached or failed.
    Network,
    /// Credentials were missing or wrong.
    Auth,
}

/// Every failure the `oci` crate reports; messages are lowercase and carry their context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A string that should have been a digest was not.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// The text as given.
        input: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A string that should have been an image reference was not.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference {
        /// The text as given.
        input: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// Content hashed to something other than the digest that names it.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the content was supposed to have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// Content had another length than its descriptor says.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob in question.
        digest: Digest,
        /// The size the descriptor gives.
        expected: u64,
        /// The size received.
        actual: u64,
    },
    /// A decompressed layer grew past the configured cap.
    #[error("layer too large: more than {limit} bytes after decompression")]
    LayerTooLarge {
        /// The cap in bytes.
        limit: u64,
    },
    /// A blob is not in the content store.
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    /// No image is known under that name or ID.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// An ID prefix that several images share.
    #[error("{0} is ambiguous: it matches several images; give more of the ID or a name")]
    AmbiguousImage(String),
    /// A JSON document (manifest, index, config, archive metadata) did not parse.
    #[error("invalid {what}")]
    InvalidJson {
        /// Which document.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest, index or config parsed but breaks the spec.
    #[error("invalid {what}: {reason}")]
    InvalidDocument {
        /// Which document.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An archive (OCI layout tar, docker-archive, rootfs tarball) is malformed.
    #[error("invalid archive {path}: {reason}")]
    InvalidArchive {
        /// Where the archive came from.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O operation failed; `context` says which and on what.
    #[error("{context}")]
    Io {
        /// What we were doing, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A registry answered with an error (the spec's JSON error, or just a status).
    #[error("{method} {url}: {status}{}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), if message.is_empty() { String::new() } else { format!(": {message}") })]
    Registry {
        /// The request method.
        method: String,
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The spec error code, when the body had one.
        code: Option<String>,
        /// The registry's message.
        message: String,
        /// Seconds to wait before asking again, from a 429's or 503's `Retry-After`.
        retry_after: Option<u64>,
    },
    /// The registry refused our credentials (or wants some we do not have).
    #[error("authentication to {registry} failed: {reason}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What the registry said, or what is missing.
        reason: String,
    },
    /// The connection to a registry failed.
    #[error("{method} {url}")]
    Http {
        /// The request method.
        method: String,
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A plain download (`ADD <url>`) failed: unreachable, silent, refused or cut off.
    #[error("download {url}: {reason}")]
    Download {
        /// The URL asked.
        url: String,
        /// What went wrong, and how many attempts were made.
        reason: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
    },
    /// A setting from the environment (`BERTH_ADD_IDLE_TIMEOUT=...`) that makes no sense.
    #[error("invalid {name}={value:?}: {reason}")]
    InvalidSetting {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What is expected.
        reason: String,
    },
    /// The rocksdb image index failed.
    #[error("image index at {path}")]
    Index {
        /// Where the index lives.
        path: PathBuf,
        /// The database error.
        #[source]
        source: rocksdb::Error,
    },
}

impl Error {
    /// Classifies the error for exit codes and HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidDigest { .. }
            | Error::InvalidReference { .. }
            | Error::InvalidJson { .. }
            | Error::InvalidDocument { .. }
            | Error::InvalidArchive { .. }
            | Error::LayerTooLarge { .. }
            | Error::InvalidSetting { .. }
            | Error::AmbiguousImage(_) => ErrorKind::InvalidInput,
            Error::BlobNotFound(_) | Error::ImageNotFound(_) => ErrorKind::NotFound,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => ErrorKind::Corrupt,
            Error::Io { .. } | Error::Index { .. } => ErrorKind::Io,
            Error::Registry { status: 404, .. } | Error::Download { status: Some(404 | 410), .. } => {
                ErrorKind::NotFound
            }
            Error::Registry { status: 401 | 403, .. } | Error::Unauthorized { .. } => ErrorKind::Auth,
            Error::Registry { .. } | Error::Http { .. } | Error::Download { .. } => ErrorKind::Network,
        }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// The error and its causes on one line, `a: b: c`, for messages and tests.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A parser's complaint cut to one short printable line: tar errors quote the bytes
/// they choke on, which for a text file is the file itself.
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or("");
    let mut out: String = first.chars().map(|c| if c.is_control() { '?' } else { c }).take(80).collect();
    if first.chars().count() > 80 || s.lines().count() > 1 {
        out.push('…');
    }
    out
}

/// `Result` with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to `io::Result`s in one call: `fs::read(p).ctx(|| format!("read {p}"))`.
pub trait IoContext<T> {
    /// Turns an `io::Error` into [`Error::Io`] with the context the closure returns.
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Io { context: context().into(), source })
    }
}
