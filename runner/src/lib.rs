//! The berth runner: layers into root filesystems, and one process run in them.
//!
//! - [`unpack`]: applying an image layer's tar stream to a directory by the rules learned
//!   from runc, umoci and their CVEs: every path resolved inside the root, no symlink
//!   followed at the last component, hardlinks confined, whiteouts written in the form
//!   the snapshot needs.
//! - [`snapshot`]: snapshots keyed by chainID, stacked by overlayfs (or copied, where
//!   overlayfs is missing), and diffed back into OCI layers.
//!
//! - [`rootfs`]: an image's layers into snapshots by chainID (each unpacked once, diffIDs
//!   verified), plus a fresh active snapshot for a container.
//! - [`bundle`]: the same process as an OCI runtime bundle, for runc or crun.
//! - [`cgroup`]: memory, pids and cpu limits, v2 where available, else v1.
//! - [`sandbox`]: one process in new namespaces on that rootfs, as `berth run` uses it.
//! - [`network`]: the bridge network (`berth0`, veth pairs, NAT) for `berth run`.
//! - [`security`]: capabilities and the seccomp filter (docker's defaults, `--cap-add`, profiles).
//! - [`container`]: containers that outlive `berth run -d`: state, supervisor, logs, exec,
//!   health checks and published ports.
//! - [`emulation`]: whether a foreign platform's programs run here (binfmt_misc handlers).
//! - [`exec`]: the [`exec::Executor`] trait over the sandbox, as `berth build` runs RUN steps.
//! - [`host`]: facts about the machine (kernel, cgroups, snapshotter, runtimes) for `berth info`.
//!
//! ```no_run
//! let layer = std::fs::File::open("layer.tar")?;
//! runner::unpack::unpack(layer, std::path::Path::new("/tmp/rootfs"), &Default::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bundle;
pub mod cgroup;
pub mod chroot;
pub mod container;
pub mod device;
pub mod emulation;
pub mod exec;
pub mod host;
pub mod inplace;
pub mod lease;
mod merged;
pub mod netlink;
pub mod network;
pub mod resources;
pub mod rlimit;
pub mod rootfs;
pub mod sandbox;
pub mod security;
pub mod snapshot;
pub mod sys;
pub mod sysctl;
pub mod treetar;
pub mod unpack;
pub mod usernet;
pub mod userns;
pub mod volume;
