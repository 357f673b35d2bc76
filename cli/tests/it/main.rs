//! berth's integration tests: the real binary against real tools, one module per topic.
//!
//! Tests that need root or a system tool (skopeo, umoci, oci-image-tool, busybox-static)
//! skip with a message when it is missing, unless `BERTH_TEST_STRICT=1` (as CI sets),
//! under which a missing tool fails the test.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod archives;
mod build;
mod build_copy;
mod build_mounts;
mod build_outputs;
mod build_progress;
mod build_real;
mod cache_mounts;
mod cache_remote;
mod cache_s3;
mod client;
mod containers;
mod copy;
mod images;
mod layers;
mod lifecycle;
mod networks;
mod platforms;
mod registry;
mod resources;
mod rootless;
mod run;
mod security;
mod util;
mod volumes;
