//! `--mount=type=bind`: a path of the build context, or of a stage's or image's
//! filesystem (`from=`), bound into the step; `rw` gets a throw-away copy.
//!
//! From the context, the step sees only what `.dockerignore` (or `X.dockerignore`) admits,
//! as BuildKit sends it only that: when the ignore rules hide something below the source,
//! the mount is a read-only overlay whose top layer holds a whiteout for each hidden entry
//! (a walk of the source and one `mknod` per hidden entry, no copy), or, where overlayfs
//! cannot be mounted, a copy of what the rules admit. The cache key (`sources_digest`)
//! covers the same admitted files.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use runner::sandbox::Volume;
use runner::snapshot::Mount;

use super::Step;
use crate::context::{Context, Ignore, Selected};
use crate::error::{Error, Result};
use crate::graph::ExecMount;
use crate::ops::{RemoveOnDrop, View};

/// A bind mount; the view it reads from and its copies go when it is dropped.
pub(super) struct BindMount<'s> {
    /// The bind the sandbox makes.
    pub volume: Volume,
    /// The mounted stage or image, for `from=`.
    _view: Option<View<'s>>,
    /// The context filtered by its ignore rules, when they hide something.
    _admitted: Option<Admitted>,
    /// The throw-away copy of a `rw` mount.
    _copy: Option<RemoveOnDrop>,
}

impl<'s> BindMount<'s> {
    /// Resolves the mount's source (context or `from=` input) and, for `rw`, copies it.
    pub(super) fn prepare(step: &Step<'s, '_>, m: &ExecMount, i: usize) -> Result<BindMount<'s>> {
        let spec = &m.spec;
        let (v, worker) = (step.vertex, step.worker);
        let (mut view, mut admitted) = (None, None);
        let host = match m.input {
            None => {
                let ctx =
                    worker.context.ok_or_else(|| worker.err_at(v, "RUN --mount=type=bind needs a build context"))?;
                let src = spec.source.clone().unwrap_or_else(|| ".".into());
                let sel = ctx.select(&src).map_err(|err| worker.at(v, err))?;
                let Some(sel) = sel.into_iter().next() else {
                    return Err(worker.err_at(v, format!("RUN --mount=type=bind: {src} selects nothing")));
                };
                let filtered = Admitted::prepare(ctx, &sel, &step.work.join(format!("bind-{i}")))?;
                let host = filtered.as_ref().map_or_else(|| sel.path.clone(), |a| a.dir.clone());
                admitted = filtered;
                host
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
        let volume =
            Volume { host, container: spec.target.clone(), read_only: spec.read_only, recursive: Default::default() };
        Ok(BindMount { volume, _view: view, _admitted: admitted, _copy: copy })
    }
}

/// rw: the step may write, but the writes are thrown away with a copy.
fn writable_copy(step: &Step<'_, '_>, host: PathBuf, i: usize) -> Result<(PathBuf, Option<RemoveOnDrop>)> {
    let copy = step.work.join(format!("bind-rw-{i}"));
    std::fs::create_dir_all(&copy).map_err(Error::io(format!("create {}", copy.display())))?;
    let guard = RemoveOnDrop(copy.clone());
    let kind = std::fs::symlink_metadata(&host).map_err(Error::io(format!("stat {}", host.display())))?.file_type();
    if kind.is_dir() {
        runner::snapshot::copy_dir(&host, &copy).map_err(Error::runner("copy a writable bind mount"))?;
        Ok((copy, Some(guard)))
    } else if !kind.is_file() {
        // A device node or a fifo a stage made: opening it to copy would reach the host's
        // device (as root) or block.
        Err(Error::Context {
            path: host.display().to_string(),
            reason: "a writable bind mount's source must be a file or a directory".into(),
        })
    } else {
        let file = copy.join("file");
        std::fs::copy(&host, &file).map_err(Error::io(format!("copy {}", host.display())))?;
        Ok((file, Some(guard)))
    }
}

/// A context directory as its ignore rules admit it: a read-only overlay (whiteouts over
/// the context) or a copy, under a work directory removed (after unmounting) on drop.
pub(super) struct Admitted {
    /// What the step sees.
    dir: PathBuf,
    /// True when `dir` is a mounted overlay.
    mounted: bool,
    /// Holds the overlay's whiteout layer, its mountpoint or the copy.
    _work: RemoveOnDrop,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = runner::snapshot::unmount(&self.dir);
        }
    }
}

impl Admitted {
    /// None when the rules hide nothing below `sel` (the step binds it as it is).
    pub(super) fn prepare(ctx: &Context, sel: &Selected, work: &Path) -> Result<Option<Admitted>> {
        let meta = std::fs::metadata(&sel.path).map_err(Error::io(format!("stat {}", sel.path.display())))?;
        if !meta.is_dir() {
            return Ok(None);
        }
        let mut hidden = Vec::new();
        hidden_below(ctx.ignore(), &sel.path, &sel.rel, "", &mut hidden)?;
        if hidden.is_empty() {
            return Ok(None);
        }
        std::fs::create_dir_all(work).map_err(Error::io(format!("create {}", work.display())))?;
        let guard = RemoveOnDrop(work.to_owned());
        let (whiteouts, dir) = (work.join("whiteouts"), work.join("view"));
        std::fs::create_dir(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        if whiteout_layer(&sel.path, &whiteouts, &hidden).is_ok() {
            let overlay = Mount::Overlay { lower: vec![whiteouts, sel.path.clone()], upper: None, volatile: false };
            if overlay.mount(&dir).is_ok() {
                return Ok(Some(Admitted { dir, mounted: true, _work: guard }));
            }
        }
        // No overlayfs (or no right to make whiteouts) here: copy what the rules admit.
        copy_admitted(ctx, sel, &dir)?;
        Ok(Some(Admitted { dir, mounted: false, _work: guard }))
    }
}

/// Collects into `out` the topmost entries below `dir` (context path `ctx_rel`, path `local`
/// below the mount's source) that the ignore rules hide. Returns true when the directory
/// admits anything. An ignored directory that an exception (`!pattern`) may re-include is
/// looked into, and hidden whole when nothing inside it is admitted, as the context holds it.
fn hidden_below(ignore: &Ignore, dir: &Path, ctx_rel: &str, local: &str, out: &mut Vec<String>) -> Result<bool> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(Error::io(format!("read {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let join = |base: &str, name: &str| if base.is_empty() { name.to_owned() } else { format!("{base}/{name}") };
    let mut admits = false;
    for name in names {
        let (child_ctx, child_local, path) = (join(ctx_rel, &name), join(local, &name), dir.join(&name));
        let is_dir = std::fs::symlink_metadata(&path).map_err(Error::io(format!("stat {}", path.display())))?.is_dir();
        let excluded = ignore.is_excluded(&child_ctx);
        if is_dir && (!excluded || !ignore.can_skip_dir(&child_ctx)) {
            let mark = out.len();
            let inside = hidden_below(ignore, &path, &child_ctx, &child_local, out)?;
            if excluded && !inside {
                out.truncate(mark);
                out.push(child_local);
            } else {
                admits = true;
            }
        } else if excluded {
            out.push(child_local);
        } else {
            admits = true;
        }
    }
    Ok(admits)
}

/// Makes the overlay layer that hides `hidden` (paths below `source`): a whiteout (char
/// device 0:0) for each, in directories that carry their source directory's mode, owner and
/// times (the top layer's directory attributes are the ones the overlay shows).
fn whiteout_layer(source: &Path, layer: &Path, hidden: &[String]) -> Result<()> {
    let io = |what: &Path| Error::io(format!("make whiteouts in {}", what.display()));
    std::fs::create_dir(layer).map_err(io(layer))?;
    for rel in hidden {
        let mut dir_rel = PathBuf::new();
        let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
        for part in parent.components() {
            dir_rel.push(part);
            let here = layer.join(&dir_rel);
            if !here.exists() {
                std::fs::create_dir(&here).map_err(io(&here))?;
                copy_dir_meta(&source.join(&dir_rel), &here)?;
            }
        }
        let node = layer.join(rel);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| io(&node)(e.into()))?;
    }
    // The root last: its times must not move after its entries are made.
    copy_dir_meta(source, layer)
}

/// Gives `to` the mode, owner (as root) and times of the directory `from`.
fn copy_dir_meta(from: &Path, to: &Path) -> Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let m = std::fs::metadata(from).map_err(Error::io(format!("stat {}", from.display())))?;
    let err = |e: std::io::Error| Error::io(format!("set the attributes of {}", to.display()))(e);
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777)).map_err(err)?;
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid())).map_err(err)?;
    }
    let t = |s: i64, ns: i64| Timespec { tv_sec: s, tv_nsec: ns as _ };
    let times =
        Timestamps { last_access: t(m.atime(), m.atime_nsec()), last_modification: t(m.mtime(), m.mtime_nsec()) };
    rustix::fs::utimensat(CWD, to, &times, AtFlags::empty()).map_err(|e| err(e.into()))
}

/// Copies what the context's rules admit below `sel` into the existing directory `to`:
/// directories, files (mode kept), symlinks as written; owners and times as root.
fn copy_admitted(ctx: &Context, sel: &Selected, to: &Path) -> Result<()> {
    let mut dirs = Vec::new();
    ctx.walk(sel, &Ignore::default(), &mut |path, rel, meta| {
        let dest = if rel.is_empty() { to.to_owned() } else { to.join(rel) };
        let kind = meta.file_type();
        let io = Error::io(format!("copy {} for a bind mount", path.display()));
        if kind.is_dir() {
            if !rel.is_empty() {
                std::fs::create_dir(&dest).map_err(io)?;
            }
            dirs.push((path.to_owned(), dest));
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(Error::io(format!("readlink {}", path.display())))?;
            std::os::unix::fs::symlink(target, &dest).map_err(io)?;
        } else if kind.is_file() {
            std::fs::copy(path, &dest).map_err(io)?;
            if rustix::process::geteuid().is_root() {
                std::os::unix::fs::chown(&dest, Some(meta.uid()), Some(meta.gid()))
                    .map_err(Error::io(format!("chown {}", dest.display())))?;
            }
        }
        Ok(())
    })?;
    // Directories last, deepest first, so their times stay as the context has them.
    for (from, to) in dirs.iter().rev() {
        copy_dir_meta(from, to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(files: &[&str], ignore: &str) -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f.as_bytes()).unwrap();
        }
        let ctx = Context::new(dir.path(), Ignore::parse(ignore).unwrap()).unwrap();
        (dir, ctx)
    }

    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in walkdir(dir) {
            out.push(e.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
        out.sort();
        out
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            }
            out.push(p);
        }
        out
    }

    #[test]
    fn hidden_entries_are_the_topmost_ignored_ones_and_exceptions_are_looked_into() {
        let files = ["app.py", ".env", "secrets/a", "secrets/b", "logs/keep.log", "logs/x.log", "src/.env"];
        let (_d, ctx) = context(&files, ".env\n**/.env\nsecrets\nlogs/*\n!logs/keep.log\n");
        let sel = ctx.select(".").unwrap().remove(0);
        let mut hidden = Vec::new();
        assert!(hidden_below(ctx.ignore(), &sel.path, &sel.rel, "", &mut hidden).unwrap());
        assert_eq!(hidden, [".env", "logs/x.log", "secrets", "src/.env"]);
    }

    #[test]
    fn the_copy_holds_exactly_what_the_rules_admit() {
        let files = ["app.py", ".env", "secrets/a", "src/main.py", "src/.env"];
        let (_d, ctx) = context(&files, "**/.env\nsecrets\n");
        let to = tempfile::tempdir().unwrap();
        let sel = ctx.select(".").unwrap().remove(0);
        copy_admitted(&ctx, &sel, to.path()).unwrap();
        assert_eq!(tree(to.path()), ["app.py", "src", "src/main.py"]);
        let sub = ctx.select("src").unwrap().remove(0);
        let to = tempfile::tempdir().unwrap();
        copy_admitted(&ctx, &sub, to.path()).unwrap();
        assert_eq!(tree(to.path()), ["main.py"], "the rules apply by context path below a subdirectory too");
    }

    #[test]
    fn nothing_ignored_binds_the_context_itself() {
        let (_d, ctx) = context(&["a", "b/c"], "*.log\n");
        let work = tempfile::tempdir().unwrap();
        let sel = ctx.select(".").unwrap().remove(0);
        assert!(Admitted::prepare(&ctx, &sel, &work.path().join("bind-0")).unwrap().is_none());
    }
}
