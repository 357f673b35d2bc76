//! The berth runner: layers into root filesystems, and (next) one process run in them.
//!
//! - [`unpack`]: applying an image layer's tar stream to a directory by the rules learned
//!   from runc, umoci and their CVEs: every path resolved inside the root, no symlink
//!   followed at the last component, hardlinks confined, whiteouts written in the form
//!   the snapshot needs.
//! - [`snapshot`]: snapshots keyed by chainID, stacked by overlayfs (or copied, where
//!   overlayfs is missing), and diffed back into OCI layers.
//!
//! The namespace sandbox behind `berth run` and the builder's RUN builds on these next;
//! see the runner issue.
//!
//! ```no_run
//! let layer = std::fs::File::open("layer.tar")?;
//! runner::unpack::unpack(layer, std::path::Path::new("/tmp/rootfs"), &Default::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod snapshot;
pub mod unpack;
