//! `--mount=type=bind`: a path of the build context, or of a stage's or image's
//! filesystem (`from=`), bound into the step; `rw` gets a throw-away copy.

use std::path::PathBuf;

use runner::sandbox::Volume;

use super::Step;
use crate::error::{Error, Result};
use crate::graph::ExecMount;
use crate::ops::{RemoveOnDrop, View};

/// A bind mount; the stage view it reads from and its writable copy go when it is dropped.
pub(super) struct BindMount<'s> {
    /// The bind the sandbox makes.
    pub volume: Volume,
    /// The mounted stage or image, for `from=`.
    _view: Option<View<'s>>,
    /// The throw-away copy of a `rw` mount.
    _copy: Option<RemoveOnDrop>,
}

impl<'s> BindMount<'s> {
    /// Resolves the mount's source (context or `from=` input) and, for `rw`, copies it.
    pub(super) fn prepare(step: &Step<'s, '_>, m: &ExecMount, i: usize) -> Result<BindMount<'s>> {
        let spec = &m.spec;
        let (v, worker) = (step.vertex, step.worker);
        let mut view = None;
        let host = match m.input {
            None => {
                let ctx =
                    worker.context.ok_or_else(|| worker.err_at(v, "RUN --mount=type=bind needs a build context"))?;
                let src = spec.source.clone().unwrap_or_else(|| ".".into());
                let sel = ctx.select(&src).map_err(|err| worker.at(v, err))?;
                sel.into_iter().next().map(|s| s.path).unwrap_or_else(|| ctx.root().to_owned())
            }
            Some(input) => {
                // A stage's or image's filesystem, mounted read-only for this step.
                let mounted = worker.view_of(&step.inputs[input].layers)?;
                let sub = spec.source.as_deref().unwrap_or("/");
                let host = crate::context::resolve_in_root(&mounted.dir, sub)
                    .map_err(Error::io(format!("RUN --mount from={:?}: source {sub}", spec.from)))?;
                view = Some(mounted);
                host
            }
        };
        let (host, copy) = if spec.read_only { (host, None) } else { writable_copy(step, host, i)? };
        let volume = Volume { host, container: spec.target.clone(), read_only: spec.read_only };
        Ok(BindMount { volume, _view: view, _copy: copy })
    }
}

/// rw: the step may write, but the writes are thrown away with a copy.
fn writable_copy(step: &Step<'_, '_>, host: PathBuf, i: usize) -> Result<(PathBuf, Option<RemoveOnDrop>)> {
    let copy = step.work.join(format!("bind-rw-{i}"));
    std::fs::create_dir_all(&copy).map_err(Error::io(format!("create {}", copy.display())))?;
    let guard = RemoveOnDrop(copy.clone());
    if host.is_dir() {
        runner::snapshot::copy_dir(&host, &copy).map_err(Error::runner("copy a writable bind mount"))?;
        Ok((copy, Some(guard)))
    } else {
        let file = copy.join("file");
        std::fs::copy(&host, &file).map_err(Error::io(format!("copy {}", host.display())))?;
        Ok((file, Some(guard)))
    }
}
