//! The distribution-spec conformance checks, mirrored in Rust and run in-process against
//! the router (`tower::ServiceExt::oneshot`), one module per area of the Go suite
//! (opencontainers/distribution-spec, conformance/): pull, push, content discovery,
//! content management, the optional checks (sparse manifests, tag parameters), plus auth
//! and operations.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod auth;
mod auth_matrix;
mod discovery;
mod management;
mod ops;
mod optional;
mod pull;
mod push;
mod util;
