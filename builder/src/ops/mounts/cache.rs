//! `--mount=type=cache`: a directory under `$BERTH_ROOT/cache-mounts` kept between
//! builds, shared, locked or private as `sharing=` asks, seeded from `from=` when new.

use std::fs::File;
use std::path::PathBuf;

use runner::sandbox::Volume;

use super::Step;
use crate::dockerfile::mount::Sharing;
use crate::error::{Error, Result};
use crate::graph::ExecMount;
use crate::ops::RemoveOnDrop;

/// A cache mount; its lock is released, and a private fallback directory removed, on drop.
pub(super) struct CacheMount {
    /// The cache directory's bind.
    pub volume: Volume,
    /// The held lock of a `locked` or `private` cache.
    _lock: Option<File>,
    /// The fresh directory a `private` cache in use elsewhere gets for this step.
    _private: Option<RemoveOnDrop>,
}

impl CacheMount {
    /// Locks (as `sharing=` asks), creates and seeds the cache directory of the mount's id.
    pub(super) fn prepare(step: &Step<'_, '_>, m: &ExecMount, i: usize) -> Result<CacheMount> {
        let spec = &m.spec;
        let id_key = oci::Digest::of(spec.id.clone().unwrap_or_default().as_bytes());
        let base = step.worker.root.join("cache-mounts");
        let mut dir = base.join(id_key.hex());
        std::fs::create_dir_all(&base).map_err(Error::io(format!("create {}", base.display())))?;
        let mut lock = None;
        let mut private = None;
        if spec.sharing != Sharing::Shared {
            let lock_path = base.join(format!("{}.lock", id_key.hex()));
            let f = File::create(&lock_path).map_err(Error::io(format!("create {}", lock_path.display())))?;
            let flags = if spec.sharing == Sharing::Locked {
                rustix::fs::FlockOperation::LockExclusive
            } else {
                rustix::fs::FlockOperation::NonBlockingLockExclusive
            };
            if rustix::fs::flock(&f, flags).is_err() {
                // sharing=private and in use: this step gets a fresh directory of its own.
                dir = step.work.join(format!("cache-{i}"));
                private = Some(RemoveOnDrop(dir.clone()));
            }
            lock = Some(f);
        }
        if !dir.exists() {
            create(step, m, &dir)?;
        }
        let volume = Volume { host: dir, container: spec.target.clone(), read_only: spec.read_only };
        Ok(CacheMount { volume, _lock: lock, _private: private })
    }
}

/// Makes a new cache directory with the mount's mode and owner; from=: a new cache starts
/// as a copy of a stage's or image's directory.
fn create(step: &Step<'_, '_>, m: &ExecMount, dir: &PathBuf) -> Result<()> {
    let spec = &m.spec;
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let mode = spec.mode.unwrap_or(0o755);
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(Error::io(format!("chmod {}", dir.display())))?;
    if spec.uid.is_some() || spec.gid.is_some() {
        std::os::unix::fs::chown(dir, spec.uid, spec.gid).map_err(Error::io(format!("chown {}", dir.display())))?;
    }
    if let Some(input) = m.input {
        let view = step.worker.view_of(&step.inputs[input].layers)?;
        let src = spec.source.as_deref().unwrap_or("/");
        let from = crate::context::resolve_in_root(&view.dir, src)
            .map_err(Error::io(format!("RUN --mount=type=cache,from: source {src}")))?;
        runner::snapshot::copy_dir(&from, dir).map_err(Error::runner("seed a cache mount"))?;
    }
    Ok(())
}
