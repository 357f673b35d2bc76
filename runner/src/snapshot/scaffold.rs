//! Mount-target scaffolding: the empty files and directories a sandbox creates in an active
//! snapshot so it has somewhere to mount (`/proc`, `/etc/hosts`, a RUN step's `--mount`
//! targets). They are no change of the step's, so they are taken out of the snapshot before
//! its diff becomes a layer, as BuildKit leaves no mount point behind.
//!
//! ```text
//! let scaffold = snapshotter.scaffold(key, &targets)?;   // before: which are missing
//! ... the sandbox runs on the snapshot, creating them ...
//! snapshotter.remove_scaffold(key, &scaffold)?;          // after: remove what it made
//! ```
//!
//! Every path is walked inside the snapshot's directories one component at a time, never
//! following a symlink (`RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`): what a step left behind
//! cannot redirect a removal onto the host. A target behind a symlink is left alone.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use super::{io_err, Result};

/// The mount targets a sandbox is about to create in one active snapshot (those missing
/// from it before the sandbox runs), to be removed by [`super::Snapshotter::remove_scaffold`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scaffold {
    /// Paths relative to the snapshot's root, without a leading `/`.
    targets: Vec<String>,
}

impl Scaffold {
    /// The missing targets, relative to the snapshot's root.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }
}

/// Opens `rel` under `base` without following any symlink, nor leaving `base`.
pub(crate) fn open_beneath(base: impl AsFd, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let rel = if rel.is_empty() { "." } else { rel };
    loop {
        match rustix::fs::openat2(base.as_fd(), rel, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
            Err(rustix::io::Errno::AGAIN) => continue,
            other => return other,
        }
    }
}

/// Opens the directory `dir` as an `O_PATH` fd.
pub(crate) fn open_dir(dir: &Path) -> Result<OwnedFd> {
    rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io_err("open", dir)(e.into()))
}

/// The metadata of `rel` under `base`, not following symlinks anywhere on the way: a
/// symlink among its parents fails with ELOOP.
pub(crate) fn stat_beneath(base: &OwnedFd, rel: &str) -> rustix::io::Result<rustix::fs::Stat> {
    let (parent, name) = split(rel);
    let dir = open_beneath(base, parent, OFlags::PATH | OFlags::DIRECTORY)?;
    rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// True when `rel` is under `base`; behind a symlink counts as present (not looked into).
fn present(base: &OwnedFd, rel: &str) -> bool {
    match stat_beneath(base, rel) {
        Ok(_) | Err(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV) => true,
        Err(_) => false,
    }
}

/// `rel` split into its parent (maybe empty) and its last component.
pub(crate) fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// The targets (absolute or relative paths in the snapshot) missing from all of `layers`
/// (the snapshot's own directory first, then the directories under it), each with its
/// missing parents: the sandbox creates those too.
pub(crate) fn missing(layers: &[PathBuf], targets: &[String]) -> Result<Scaffold> {
    let fds: Vec<OwnedFd> = layers.iter().map(|l| open_dir(l)).collect::<Result<_>>()?;
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        let mut rel = t.trim_matches('/');
        while !rel.is_empty() && !out.iter().any(|o| o == rel) && !fds.iter().any(|fd| present(fd, rel)) {
            out.push(rel.to_owned());
            rel = split(rel).0;
        }
    }
    Ok(Scaffold { targets: out })
}

/// `paths` and all their parents, deepest first: the order to remove empty directories in.
pub(crate) fn deepest_first<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut all: Vec<&str> = Vec::new();
    for p in paths {
        let mut rel = p;
        while !rel.is_empty() {
            all.push(rel);
            rel = split(rel).0;
        }
    }
    all.sort_by(|a, b| b.matches('/').count().cmp(&a.matches('/').count()).then(a.cmp(b)));
    all.dedup();
    all
}

/// Removes each target of `scaffold` from `upper` when it is what a sandbox creates: an
/// empty directory or an empty regular file. Anything else (the step wrote into it, or
/// replaced it) is the step's content and stays.
pub(crate) fn remove_targets(upper: &Path, scaffold: &Scaffold) -> Result<()> {
    let root = open_dir(upper)?;
    let mut targets: Vec<&str> = scaffold.targets.iter().map(String::as_str).collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.matches('/').count()));
    for rel in targets {
        let (parent, name) = split(rel);
        let Ok(dir) = open_beneath(&root, parent, OFlags::RDONLY | OFlags::DIRECTORY) else { continue };
        let Ok(st) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
        let flags = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => AtFlags::REMOVEDIR,
            FileType::RegularFile if st.st_size == 0 => AtFlags::empty(),
            _ => continue,
        };
        // A directory with something in it fails with ENOTEMPTY and stays, as it should; the
        // directory it is in keeps the times the step left it with (the removal is no change).
        let _kept = crate::sys::keeping_times(&dir, || rustix::fs::unlinkat(&dir, name, flags));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_on_the_way_never_leads_a_removal_out_of_the_snapshot() {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("x")).unwrap();
        std::fs::write(host.path().join("empty"), "").unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(host.path(), upper.path().join("cache")).unwrap();
        let scaffold = Scaffold { targets: vec!["cache/x".into(), "cache/empty".into()] };
        remove_targets(upper.path(), &scaffold).unwrap();
        assert!(host.path().join("x").is_dir() && host.path().join("empty").is_file());
    }

    #[test]
    fn only_empty_files_and_directories_are_scaffolding() {
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        for d in ["proc", "full", "run/secrets"] {
            std::fs::create_dir_all(u.join(d)).unwrap();
        }
        std::fs::write(u.join("full/kept"), "data").unwrap();
        std::fs::write(u.join("run/secrets/x"), "").unwrap();
        std::fs::write(u.join("written"), "the step wrote here").unwrap();
        let scaffold = missing(&[u.to_owned()], &["/nothing/deep".into(), "/full/new".into()]).unwrap();
        assert_eq!(scaffold.targets(), ["nothing/deep", "nothing", "full/new"]);
        let all = ["proc", "full", "run/secrets/x", "written"].map(String::from).to_vec();
        remove_targets(u, &Scaffold { targets: all }).unwrap();
        assert!(!u.join("proc").exists() && !u.join("run/secrets/x").exists());
        assert!(u.join("full/kept").exists() && u.join("written").exists() && u.join("run/secrets").is_dir());
    }
}
