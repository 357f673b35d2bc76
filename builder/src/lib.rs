//! The berth builder: Dockerfile text in, OCI image out.
//!
//! Data flows one way, each step its own module:
//! [`dockerfile`] (syntax via `parse-dockerfile`, typed instructions, variable expansion)
//! -> [`convert`] (the only module that knows both Dockerfiles and the graph)
//! -> [`graph`] (neutral vertices of ops) -> [`solver`] (cache keys from [`cache`],
//! stages in parallel) -> [`ops`] (RUN through the runner's executor on overlay snapshots,
//! COPY/ADD from the [`context`]) -> [`build`] (the image into the local store).
//!
//! ```no_run
//! let df = builder::dockerfile::parse("Dockerfile", "FROM busybox\nRUN echo hi\n")?;
//! assert_eq!(df.stages.len(), 1);
//! # Ok::<(), builder::Error>(())
//! ```

pub mod build;
pub mod cache;
pub mod cache_prune;
pub mod changes;
pub mod chmod;
pub mod context;
pub mod convert;
pub mod dockerfile;
pub mod error;
pub mod export;
pub mod graph;
pub mod ops;
pub mod progress;
pub mod solver;

pub use build::{build, BuildOptions, Built, Machine};
pub use error::{Error, ErrorKind, Result};
