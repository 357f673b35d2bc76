//! `--mount=type=cache`: a directory under `$BERTH_ROOT/cache-mounts` kept between
//! builds, shared, locked or private as `sharing=` asks, seeded from `from=` when new; an
//! empty one is first filled from an imported cache that carries the id (`--cache-from`).

use std::fs::File;
use std::path::Path;

use runner::sandbox::Volume;

use super::Step;
use crate::cache::remote;
use crate::dockerfile::mount::{MountSpec, Sharing};
use crate::error::{Error, Result};
use crate::graph::ExecMount;
use crate::ops::RemoveOnDrop;
use crate::progress::Event;

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
        let id = spec.id.clone().unwrap_or_default();
        let base = step.worker.root.join("cache-mounts");
        let mut dir = remote::mounts::dir(&step.worker.root, &id);
        std::fs::create_dir_all(&base).map_err(Error::io(format!("create {}", base.display())))?;
        // Root's alone, as the store's snapshots are: a step may leave set-uid programs or
        // device nodes in a cache, which other users of the host must not reach.
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(Error::io(format!("chmod {}", base.display())))?;
        let mut lock = None;
        let mut private = None;
        if spec.sharing != Sharing::Shared {
            let lock_path = remote::mounts::lock_path(&step.worker.root, &id);
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
        let fresh = !dir.exists();
        if fresh {
            make_dir(spec, &dir)?;
        }
        // An imported cache's copy fills an empty directory before the first step that
        // mounts it (not a private stand-in); a runner's own files are kept.
        if !(private.is_none() && restore(step, &id, &dir)) && fresh {
            seed(step, m, &dir)?;
        }
        let volume = Volume {
            host: dir,
            container: spec.target.clone(),
            read_only: spec.read_only,
            recursive: Default::default(),
        };
        Ok(CacheMount { volume, _lock: lock, _private: private })
    }
}

/// Restores the mount `id` from an imported cache into `dir`; true when it did. A restore
/// that fails is a warning: the step runs on an empty cache.
fn restore(step: &Step<'_, '_>, id: &str, dir: &Path) -> bool {
    let w = step.worker;
    match w.lazy.restore_mount(w.store, id, dir) {
        Ok(done) => {
            if done {
                w.progress.event(Event::Note { text: format!("cache mount {id}: restored from the imported cache") });
            }
            done
        }
        Err(e) => {
            let text = format!("cache mount {id}: not restored: {}", oci::error::chain(&e));
            w.progress.event(Event::Warning { text });
            false
        }
    }
}

/// Makes a new cache directory with the mount's mode and owner.
fn make_dir(spec: &MountSpec, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let mode = spec.mode.unwrap_or(0o755);
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(Error::io(format!("chmod {}", dir.display())))?;
    if spec.uid.is_some() || spec.gid.is_some() {
        std::os::unix::fs::chown(dir, spec.uid, spec.gid).map_err(Error::io(format!("chown {}", dir.display())))?;
    }
    Ok(())
}

/// from=: a new cache starts as a copy of a stage's or image's directory.
fn seed(step: &Step<'_, '_>, m: &ExecMount, dir: &Path) -> Result<()> {
    let spec = &m.spec;
    if let Some(input) = m.input {
        let view = step.worker.view_of(&step.inputs[input].layers)?;
        let src = spec.source.as_deref().unwrap_or("/");
        let from = crate::context::resolve_in_root(&view.dir, src)
            .map_err(Error::io(format!("RUN --mount=type=cache,from: source {src}")))?;
        runner::snapshot::copy_dir(&from, dir).map_err(Error::runner("seed a cache mount"))?;
    }
    Ok(())
}
