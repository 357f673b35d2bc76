//! The builder's one error type: every failure of a build, with the context a user needs.

use std::fmt;
use std::ops::Range;

/// A place in a Dockerfile, rendered as `file:line:col` with the offending line under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// The text of that line.
    pub excerpt: String,
}

impl Located {
    /// Locates the byte offset `at` of `text`.
    pub fn at(file: &str, text: &str, at: usize) -> Located {
        let at = at.min(text.len());
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        Located {
            file: file.to_owned(),
            line: text[..at].matches('\n').count() + 1,
            col: text[line_start..at].chars().count() + 1,
            excerpt: text[line_start..line_end].trim_end_matches('\r').to_owned(),
        }
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// What kind of failure, for exit codes and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The Dockerfile, a flag or the context is wrong: the user must change something.
    InvalidInput,
    /// A base image, a stage, a file or a secret does not exist.
    NotFound,
    /// A RUN step ran and failed.
    StepFailed,
    /// The disk, a mount, the sandbox or the network failed.
    System,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error in the Dockerfile, at a place in it.
    #[error("{at}: {message}\n{:>5} | {}\n{:>5} | {}^", .at.line, .at.excerpt, "", " ".repeat(.at.col.saturating_sub(1)))]
    Dockerfile {
        /// Where.
        at: Box<Located>,
        /// What is wrong, lowercase.
        message: String,
    },
    /// Berth broke one of its own rules (a worker thread panicked, a layer changed while
    /// it was read): not the user's doing, reported as a failure of the system.
    #[error("internal error: {0}")]
    Internal(String),
    /// An image's config or manifest cannot be read or written as JSON.
    #[error("{what}: {source}")]
    Json {
        /// Which document, with its reference or digest.
        what: String,
        /// The parser's or writer's error.
        #[source]
        source: serde_json::Error,
    },
    /// Something the build refers to does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was missing.
        what: String,
    },
    /// A COPY or ADD source or a context file that may not be used.
    #[error("{path}: {reason}")]
    Context {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// A RUN step exited non-zero.
    #[error("{step}: process \"{command}\" did not complete successfully: exit code: {code}")]
    StepFailed {
        /// The step, as the progress shows it (`[stage 2/5] RUN ...`).
        step: String,
        /// The command that ran.
        command: String,
        /// Its exit code.
        code: i32,
        /// Its last output lines.
        tail: Vec<String>,
        /// Where the step is in the Dockerfile.
        at: Box<Located>,
    },
    /// A filesystem operation failed.
    #[error("{what}")]
    Io {
        /// What we were doing, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The image store, content store, client or layer writer failed.
    #[error("{what}")]
    Image {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: Box<oci::Error>,
    },
    /// A snapshot, rootfs or sandbox operation failed.
    #[error("{what}")]
    Runner {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A flag's value is wrong (`--cache-to`, `--cache-from`).
    #[error("{0}")]
    Invalid(String),
    /// RUN steps for a platform this host cannot run (no emulator registered): one line
    /// naming what fixes it.
    #[error("{0}")]
    Emulation(String),
    /// A remote build cache (registry, local directory, S3) failed.
    #[error("{what}")]
    RemoteCache {
        /// Which cache and what we were doing.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The cache index failed.
    #[error("build cache {path}")]
    Cache {
        /// The index directory.
        path: String,
        /// The cause.
        #[source]
        source: rocksdb::Error,
    },
}

impl Error {
    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Dockerfile { .. } | Error::Context { .. } | Error::Json { .. } | Error::Invalid(_) => {
                ErrorKind::InvalidInput
            }
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::StepFailed { .. } => ErrorKind::StepFailed,
            Error::Image { source, .. } => match source.kind() {
                oci::ErrorKind::NotFound => ErrorKind::NotFound,
                oci::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
                _ => ErrorKind::System,
            },
            Error::Io { .. }
            | Error::Emulation(_)
            | Error::Runner { .. }
            | Error::Cache { .. }
            | Error::RemoteCache { .. }
            | Error::Internal(_) => ErrorKind::System,
        }
    }

    /// An error at byte offset `at` of a Dockerfile.
    pub fn at(file: &str, text: &str, at: usize, message: impl Into<String>) -> Error {
        Error::Dockerfile { at: Box::new(Located::at(file, text, at)), message: message.into() }
    }

    /// An error over a span of a Dockerfile (reported at its start).
    pub fn span(file: &str, text: &str, span: &Range<usize>, message: impl Into<String>) -> Error {
        Error::at(file, text, span.start, message)
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// Wraps an image-layer error with what we were doing.
    pub fn image(what: impl Into<String>) -> impl FnOnce(oci::Error) -> Error {
        let what = what.into();
        move |source| Error::Image { what, source: Box::new(source) }
    }

    /// Wraps a runner error with what we were doing.
    pub fn runner<E: std::error::Error + Send + Sync + 'static>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
        let what = what.into();
        move |source| Error::Runner { what, source: Box::new(source) }
    }

    /// Wraps a remote cache's error with which cache and what we were doing.
    pub fn remote<E: std::error::Error + Send + Sync + 'static>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
        let what = what.into();
        move |source| Error::RemoteCache { what, source: Box::new(source) }
    }
}

/// `Result` with the builder's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_errors_name_file_line_col_and_show_the_line() {
        let text = "FROM busybox\nRUN --bogus true\n";
        let e = Error::at("Dockerfile.prod", text, 17, "unknown flag: --bogus");
        let shown = e.to_string();
        assert!(shown.starts_with("Dockerfile.prod:2:5: unknown flag: --bogus\n"), "{shown}");
        assert!(shown.contains("    2 | RUN --bogus true\n"), "{shown}");
        assert!(shown.ends_with("      |     ^"), "{shown:?}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn location_counts_characters_not_bytes() {
        let l = Located::at("D", "LABEL é=1 x", 10);
        assert_eq!((l.line, l.col), (1, 10));
    }
}
