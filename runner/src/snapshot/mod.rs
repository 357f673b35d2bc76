//! Snapshots: the directories an image's layers are unpacked into, stacked into a rootfs.
//!
//! Vocabulary (containerd's): a **committed** snapshot has a *name* (berth uses a layer
//! chain's chainID) and is read-only; an **active** snapshot has a *key*, is writable and
//! has an optional *parent* (a committed name). [`Snapshotter::prepare`] makes an active
//! snapshot on a parent; a layer is unpacked into its [`Snapshotter::upper`] directory (or
//! a RUN step writes through its mounts); [`Snapshotter::commit`] freezes it under a name.
//! [`Snapshotter::view`] is a read-only active snapshot, [`Snapshotter::diff`] turns an
//! active snapshot's changes back into an OCI layer.
//!
//! ```text
//! prepare("tmp-1", None)         -> unpack layer 1 into upper("tmp-1") -> commit("chain1", "tmp-1")
//! prepare("tmp-2", Some(chain1)) -> unpack layer 2                     -> commit("chain2", "tmp-2")
//! prepare("ctr", Some(chain2))   -> mount -> run -> diff("ctr") = the new layer
//! ```
//!
//! Two implementations pass one test suite: [`OverlaySnapshotter`] (each snapshot holds
//! only its own changes; overlayfs stacks them) and [`CopySnapshotter`] (each snapshot is
//! a full copy of its parent plus its changes, for where overlayfs is missing).

mod copy;
pub(crate) mod fuse;
pub mod mirror;
mod overlay;
mod overlay_mount;
pub(crate) mod owner;
mod scaffold;
#[cfg(test)]
mod testsuite;
pub mod usage;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use copy::{ancestors as copy_ancestors, copy_dir, identity, CopySnapshotter};
pub use overlay::OverlaySnapshotter;
pub use scaffold::Scaffold;

use crate::unpack::Whiteouts;

/// What went wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No snapshot under that key or name.
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    /// The key or name is taken.
    #[error("snapshot {0:?} already exists")]
    Exists(String),
    /// The operation needs an active snapshot, or a committed one.
    #[error("snapshot {key:?} is {is}, not {want}")]
    WrongKind {
        /// The snapshot.
        key: String,
        /// What it is.
        is: &'static str,
        /// What the operation needs.
        want: &'static str,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Where.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the diff failed.
    #[error("write diff of {0:?}")]
    Diff(String, #[source] Box<oci::Error>),
    /// This snapshotter cannot do that.
    #[error("this snapshotter cannot {0}")]
    Unsupported(&'static str),
}

/// `Result` for snapshot operations.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { op, path: path.display().to_string(), source }
}

/// How to mount a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// overlayfs: `lower` top first; no `upper` for a read-only view.
    Overlay {
        /// Lower directories, top first.
        lower: Vec<PathBuf>,
        /// The writable upper directory and its work directory.
        upper: Option<(PathBuf, PathBuf)>,
        /// Mounted with overlayfs's `volatile`: fsync and syncfs inside are no-ops. For build
        /// steps, whose writes count only once committed ([`Snapshotter::commit`] then syncs
        /// the upper directory's filesystem once, instead of every fsync a package manager makes).
        volatile: bool,
    },
    /// overlayfs of `lower` (top first) with a fresh upper directory in memory: a tmpfs
    /// mounted on the target first, then covered by the overlay. Made for a mount namespace
    /// that dies with its container, where nothing needs unmounting or removing afterwards;
    /// writes count against the writer's memory cgroup.
    Scratch {
        /// Lower directories, top first.
        lower: Vec<PathBuf>,
    },
    /// A bind mount of one directory.
    Bind {
        /// The directory.
        source: PathBuf,
        /// Mounted read-only.
        read_only: bool,
    },
}

impl Mount {
    /// Mounts at `target` (needs root).
    pub fn mount(&self, target: &Path) -> Result<()> {
        use rustix::mount::{mount, mount_bind, mount_remount, MountFlags};
        let err = |e: rustix::io::Errno| SnapshotError::Io {
            op: "mount",
            path: target.display().to_string(),
            source: e.into(),
        };
        match self {
            Mount::Overlay { lower, upper, volatile } => {
                let upper = upper.as_ref().map(|(u, w)| (u.as_path(), w.as_path()));
                overlay_mount::Overlay { lower, upper, volatile: *volatile }.mount(target)
            }
            Mount::Scratch { lower } => {
                mount("tmpfs", target, "tmpfs", MountFlags::empty(), Some(c"mode=755")).map_err(err)?;
                let (upper, work) = (target.join("upper"), target.join("work"));
                for dir in [&upper, &work] {
                    std::fs::create_dir(dir).map_err(io_err("create", dir))?;
                }
                // In memory: syncs have nothing to reach.
                Mount::Overlay { lower: lower.clone(), upper: Some((upper, work)), volatile: true }.mount(target)
            }
            Mount::Bind { source, read_only } => {
                mount_bind(source, target).map_err(err)?;
                if *read_only {
                    mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "").map_err(err)?;
                }
                Ok(())
            }
        }
    }
}

/// Unmounts what [`Mount::mount`] mounted.
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).map_err(|e| SnapshotError::Io {
        op: "unmount",
        path: target.display().to_string(),
        source: e.into(),
    })
}

/// The snapshotter for berth's root on this machine: overlay where the kernel has it and
/// we are root, else copy. Both keep their snapshots under `<root>/snapshots/`.
pub fn for_root(root: &Path) -> Result<Box<dyn Snapshotter>> {
    open(root, false)
}

/// The snapshotter for build steps: as [`for_root`], with overlay's active snapshots mounted
/// `volatile` (a step's fsyncs cost nothing; its commit syncs once). A step that dies before
/// its commit is thrown away anyway, so no promise is weakened.
pub fn for_build(root: &Path) -> Result<Box<dyn Snapshotter>> {
    open(root, true)
}

/// The copy snapshotter of berth's root, for builds where nothing can be mounted
/// (`--isolation chroot` in an unprivileged container).
pub fn for_build_without_mounts(root: &Path) -> Result<Box<dyn Snapshotter>> {
    let inner = Box::new(CopySnapshotter::new(&private_snapshots(root)?.join("copy"))?);
    Ok(Box::new(owner::Owned::new(root, inner)?))
}

/// The environment variable that chooses the snapshotter, by BuildKit's names: `auto` (the
/// default), `overlayfs`, `fuse-overlayfs` or `native` (the copy snapshotter).
pub const SNAPSHOTTER_ENV: &str = "BERTH_SNAPSHOTTER";

/// Which snapshotter [`open`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Overlay,
    FuseOverlay,
    Copy,
}

/// The snapshotter [`SNAPSHOTTER_ENV`] asks for, else the best this machine has: the kernel's
/// overlayfs (in a user namespace from Linux 5.11, with `userxattr`), else fuse-overlayfs
/// where it is installed (in a user namespace from Linux 5.8), else copies.
fn kind() -> Result<Kind> {
    let asked = std::env::var(SNAPSHOTTER_ENV).unwrap_or_default();
    match asked.as_str() {
        "overlayfs" => return Ok(Kind::Overlay),
        "fuse-overlayfs" => return Ok(Kind::FuseOverlay),
        "native" => return Ok(Kind::Copy),
        "" | "auto" => {}
        other => {
            return Err(SnapshotError::Io {
                op: "choose the snapshotter",
                path: SNAPSHOTTER_ENV.into(),
                source: io::Error::other(format!("{other:?} is not one of auto, overlayfs, fuse-overlayfs, native")),
            })
        }
    }
    let overlay_ok = std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay"))
        && rustix::process::geteuid().is_root()
        && (!crate::userns::rootless() || crate::sys::kernel_version() >= (5, 11));
    // Unpacking for either overlay writes whiteouts (0/0 devices), which a user namespace may
    // make from Linux 5.8.
    let whiteouts_ok = !crate::userns::rootless() || crate::sys::kernel_version() >= (5, 8);
    Ok(if overlay_ok {
        Kind::Overlay
    } else if whiteouts_ok && fuse::available() {
        Kind::FuseOverlay
    } else {
        Kind::Copy
    })
}

/// The snapshotter berth's root uses on this machine, by BuildKit's names (`overlayfs`,
/// `fuse-overlayfs`, `native`), for `berth info`; `unknown` when [`SNAPSHOTTER_ENV`] names none.
pub fn kind_name() -> &'static str {
    match kind() {
        Ok(Kind::Overlay) => "overlayfs",
        Ok(Kind::FuseOverlay) => "fuse-overlayfs",
        Ok(Kind::Copy) => "native",
        Err(_) => "unknown",
    }
}

/// `<root>/snapshots`, made (or made again) 0700: the files of images and containers are
/// below it, setuid programs among them, which no other user of the machine may reach.
fn private_snapshots(root: &Path) -> Result<PathBuf> {
    let dir = root.join("snapshots");
    crate::container::private_dir(&dir).map_err(io_err("create", &dir))?;
    Ok(dir)
}

fn open(root: &Path, volatile: bool) -> Result<Box<dyn Snapshotter>> {
    let dir = private_snapshots(root)?;
    let inner: Box<dyn Snapshotter> = match kind()? {
        Kind::Overlay => {
            let overlay = OverlaySnapshotter::new(&dir.join("overlay"))?;
            Box::new(if volatile { overlay.volatile() } else { overlay })
        }
        Kind::FuseOverlay => Box::new(OverlaySnapshotter::new(&dir.join("overlay"))?.fuse()),
        Kind::Copy => Box::new(CopySnapshotter::new(&dir.join("copy"))?),
    };
    // Every snapshot this process makes is claimed by its lease (see `crate::lease`).
    Ok(Box::new(owner::Owned::new(root, inner)?))
}

/// Snapshots by key and name; see the module docs for the lifecycle.
pub trait Snapshotter: Send + Sync {
    /// Makes an active (writable) snapshot `key` on `parent` and says how to mount it.
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;

    /// How to mount the existing active snapshot `key` again (a container started anew).
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Makes a read-only active snapshot `key` on `parent`.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;

    /// Freezes the active snapshot `key` as the committed snapshot `name`.
    fn commit(&self, name: &str, key: &str) -> Result<()>;

    /// Removes a snapshot (active or committed).
    fn remove(&self, key: &str) -> Result<()>;

    /// Writes the changes of the active snapshot `key` against its parent as an OCI layer
    /// tar (whiteouts for deletions).
    fn diff(&self, key: &str, out: &mut dyn Write) -> Result<()>;

    /// The directory a layer is unpacked into for the active snapshot `key`.
    fn upper(&self, key: &str) -> Result<PathBuf>;

    /// How layers must be unpacked into [`Snapshotter::upper`].
    fn whiteouts(&self) -> Whiteouts;

    /// The directories of the layers below `key`'s upper directory, topmost first, when
    /// they are not already in it (an overlay's): what a layer unpacked there sits on.
    fn lowers(&self, _key: &str) -> Vec<PathBuf> {
        Vec::new()
    }

    /// True when a committed snapshot `name` exists.
    fn exists(&self, name: &str) -> bool;

    /// Before a sandbox runs on the active snapshot `key`: which of `targets` (its mount
    /// targets, absolute) the snapshot lacks, so the sandbox will create them as scaffolding.
    fn scaffold(&self, key: &str, targets: &[String]) -> Result<Scaffold>;

    /// After the sandbox ran: removes the scaffolding it made for `scaffold` (empty files and
    /// directories, and parents copied up for them without change), so the diff has none of
    /// it. What the process wrote there stays. See [`Scaffold`].
    fn remove_scaffold(&self, key: &str, scaffold: &Scaffold) -> Result<()>;

    /// True when [`Snapshotter::rediff`] writes a committed snapshot's layer again, the same
    /// bytes [`Snapshotter::diff`] wrote before the commit (its files are its layer's): a
    /// build then keeps no copy of a step's layer until something needs it.
    fn rediffs(&self) -> bool {
        false
    }

    /// Writes the layer of the committed snapshot `name` again, with the `SOURCE_DATE_EPOCH`
    /// its diff had (see [`Snapshotter::rediffs`]).
    fn rediff(&self, name: &str, source_date_epoch: Option<u64>, out: &mut dyn Write) -> Result<()> {
        let _ = (name, source_date_epoch, out);
        Err(SnapshotError::Unsupported("write a committed snapshot's layer again"))
    }

    /// The directory of the committed snapshot `name`'s own files when an active snapshot's
    /// upper directory may take hard links to them: where a COPY finds the unchanged files
    /// of its last result. Only where no snapshot's files are ever written in place (kernel
    /// overlayfs copies a file up before a change); None elsewhere.
    fn linkable(&self, name: &str) -> Option<PathBuf> {
        let _ = name;
        None
    }

    /// How to mount a throwaway writable rootfs on the committed snapshot `parent` with
    /// nothing on disk to create or remove ([`Mount::Scratch`]), where the snapshotter can;
    /// `None` where a caller must [`prepare`](Snapshotter::prepare) an active snapshot.
    fn scratch(&self, parent: &str) -> Result<Option<Vec<Mount>>> {
        let _ = parent;
        Ok(None)
    }
}

/// Where snapshots live on disk, shared by both implementations:
/// `<root>/<id>/{fs,work,parent,kind}`, `id` = sha256 of the key or name.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    root: PathBuf,
}

impl Dirs {
    pub(crate) fn new(root: &Path) -> Result<Dirs> {
        std::fs::create_dir_all(root).map_err(io_err("create", root))?;
        Ok(Dirs { root: root.to_owned() })
    }

    pub(crate) fn dir(&self, key: &str) -> PathBuf {
        self.root.join(oci::Digest::of(key.as_bytes()).hex())
    }

    pub(crate) fn kind(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(key).join("kind")).ok()
    }

    pub(crate) fn parent(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(key).join("parent")).ok().filter(|p| !p.is_empty())
    }

    /// Creates the directory of a new snapshot with its `fs` (and `work`, for overlay).
    pub(crate) fn create(&self, key: &str, parent: Option<&str>, kind: &str, work: bool) -> Result<PathBuf> {
        if let Some(p) = parent {
            if self.kind(p).as_deref() != Some("committed") {
                return Err(SnapshotError::NotFound(p.to_owned()));
            }
        }
        let dir = self.dir(key);
        if dir.exists() {
            return Err(SnapshotError::Exists(key.to_owned()));
        }
        let tmp = self.root.join(format!(".new-{}", oci::Digest::of(key.as_bytes()).short()));
        let _stale = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("fs")).map_err(io_err("create", &tmp))?;
        if work {
            std::fs::create_dir(tmp.join("work")).map_err(io_err("create", &tmp))?;
        }
        std::fs::write(tmp.join("parent"), parent.unwrap_or("")).map_err(io_err("write", &tmp))?;
        std::fs::write(tmp.join("kind"), kind).map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    /// The committed `fs` directories from `name` down to the base, top first.
    pub(crate) fn chain(&self, name: Option<&str>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut cur = name.map(str::to_owned);
        while let Some(n) = cur {
            out.push(self.dir(&n).join("fs"));
            cur = self.parent(&n);
        }
        out
    }

    pub(crate) fn require(&self, key: &str, want: &'static str) -> Result<PathBuf> {
        match self.kind(key) {
            None => Err(SnapshotError::NotFound(key.to_owned())),
            Some(k) if k == want || (want == "active" && k == "view") => Ok(self.dir(key)),
            Some(k) => Err(SnapshotError::WrongKind {
                key: key.to_owned(),
                is: if k == "committed" { "committed" } else { "active" },
                want,
            }),
        }
    }

    /// Commits `key` as `name`. A snapshot that was mounted `volatile` (the kernel leaves
    /// `work/work/incompat/volatile` behind) had its fsyncs dropped: its files are made durable
    /// first, with one syncfs of the filesystem holding it.
    pub(crate) fn commit(&self, name: &str, key: &str) -> Result<()> {
        let from = self.require(key, "active")?;
        fuse::stop(&from);
        let to = self.dir(name);
        if to.exists() {
            return Err(SnapshotError::Exists(name.to_owned()));
        }
        if from.join("work/work/incompat/volatile").exists() {
            let dir = rustix::fs::open(
                &from,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| io_err("open", &from)(e.into()))?;
            rustix::fs::syncfs(&dir).map_err(|e| io_err("sync", &from)(e.into()))?;
        }
        std::fs::write(from.join("kind"), "committed").map_err(io_err("write", &from))?;
        let _ = std::fs::remove_dir_all(from.join("work"));
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            // Another thread or process committed the same name between our check and the
            // rename: the caller keeps theirs. Ours goes back to active so it can be removed.
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error())
                    || e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) =>
            {
                std::fs::write(from.join("kind"), "active").map_err(io_err("write", &from))?;
                Err(SnapshotError::Exists(name.to_owned()))
            }
            Err(e) => Err(io_err("commit", &to)(e)),
        }
    }

    pub(crate) fn remove(&self, key: &str) -> Result<()> {
        let dir = self.dir(key);
        if !dir.exists() {
            return Err(SnapshotError::NotFound(key.to_owned()));
        }
        fuse::stop(&dir);
        std::fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))
    }
}
