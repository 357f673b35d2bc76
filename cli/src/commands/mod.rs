//! One module per group of commands; each command is a clap struct with a `run`.

pub mod archive;
pub mod build;
pub mod buildcache;
pub mod console;
pub mod container;
pub mod exec;
pub mod images;
pub mod lifecycle;
pub mod manifest;
pub mod network;
pub mod registry;
pub mod run;
pub mod system;
pub mod transfer;

use std::path::Path;

use anyhow::{Context, Result};

/// Opens the local image store, saying where when it fails.
pub fn open_store(root: &Path) -> Result<oci::ImageStore> {
    oci::ImageStore::open(root).with_context(|| format!("open image store {}", root.display()))
}
