//! The berth registry: an OCI distribution-spec server.
//!
//! A request flows from [`api`] (one router; handlers named after the spec's endpoints,
//! auth checked before each), through the [`domain`] layer (blobs, uploads, manifests,
//! tags; [`paths`] owns and draws the storage layout), down to a
//! [`driver::StorageDriver`] that sees only paths and bytes (filesystem, memory, S3).
//! The web UI ([`ui`]) sits beside [`api`] and reads the same domain layer.
//! Storage is the only source of truth, upload sessions included, so several registry
//! processes over one directory or bucket serve each other's pushes.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let driver = Arc::new(registry::driver::FsDriver::new("/var/lib/berth-registry")?);
//! let state = registry::api::AppState {
//!     registry: registry::domain::Registry::new(driver),
//!     auth: Arc::new(registry::auth::Auth::none()),
//!     metrics: Arc::default(),
//!     read_only: false,
//!     delete_enabled: false,
//!     mirror: None,
//! };
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! registry::server::serve(listener, registry::api::app(state), None, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod driver;
pub mod error;
pub mod gc;
pub mod metrics;
pub mod mirror;
pub mod paths;
pub mod server;
pub mod ui;

pub use error::{ErrorCode, RegistryError};
