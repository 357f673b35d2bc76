//! The berth runner: runs one process in an image, in Linux namespaces.
//!
//! An image's layers are unpacked once per diffID into snapshots (overlay, or a copy
//! fallback), mounted as a rootfs, and a process is started in fresh namespaces with the
//! image's config applied; the builder's RUN and `berth run` share this engine.
//!
//! Nothing runs yet: the runner lands with its own issue.
