//! Mirroring one directory tree onto another, for `--isolation none`: a step's copy snapshot
//! is mirrored onto the build container's own `/` before the step runs, and `/` back onto
//! the snapshot after it, so that the copy snapshotter's diff gives the step's layer.
//!
//! Paths in a [`Keep`] are never touched on either side: what the container needs to go on
//! (its mounts, /proc, /sys, /dev, berth's state and the build's inputs and outputs) stays
//! as it is in `/`, and none of it enters a snapshot.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::copy::{changed, copy_entry, identity, set_meta};
use super::{io_err, Result};

/// Paths (relative to the trees' roots) that a [`mirror`] leaves alone.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// The kept paths themselves: never read, written or removed.
    paths: HashSet<PathBuf>,
    /// Every directory on the way to a kept path: descended into, never removed or replaced.
    ancestors: HashSet<PathBuf>,
}

impl Keep {
    /// Keeps the absolute paths `paths` of a tree rooted at `/`.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Keep {
        let mut keep = Keep::default();
        for path in paths {
            let rel = path.strip_prefix("/").unwrap_or(path);
            if rel.as_os_str().is_empty() {
                continue;
            }
            keep.ancestors.extend(rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).map(Path::to_owned));
            keep.paths.insert(rel.to_owned());
        }
        keep
    }

    /// True when `rel` is kept.
    pub fn contains(&self, rel: &Path) -> bool {
        self.paths.contains(rel)
    }
}

/// The identity of each directory of a tree (see `copy::identity`), by relative path.
pub type Identities = HashMap<PathBuf, String>;

/// Which way a [`mirror`] goes.
#[derive(Debug, Clone, Copy)]
pub enum Toward<'a> {
    /// Onto the tree the kept paths are in (`/`): a directory on the way to a kept path that
    /// it lacks is made as the source has it. Unless `trusted` (`/` was last mirrored from an
    /// ancestor of the source), files whose size and times match are compared byte for byte:
    /// an unrelated tree may hold another file of the same size and time.
    Root {
        /// `/` holds an ancestor of the source: matching size and times mean the same file.
        trusted: bool,
    },
    /// Back onto a snapshot, given the identities of the source's directories when it last
    /// matched the snapshot: a directory with another identity now was removed and made
    /// again, and is made anew in the snapshot too, so that the copy snapshotter's diff marks
    /// it opaque as overlayfs would. A directory on the way to a kept path that the snapshot
    /// lacks is not made.
    Snapshot(&'a Identities),
}

/// Makes the tree `to` hold what `from` holds (types, contents, modes, owners, times, link
/// targets, hardlinks), leaving `keep` alone; entries that already match are not touched.
/// `toward` says which way it goes. Toward `/`, returns the identities of its directories
/// afterwards, for the mirror back; toward a snapshot, none.
pub fn mirror(from: &Path, to: &Path, keep: &Keep, toward: Toward) -> Result<Identities> {
    let mut m = Mirror { keep, toward, links: HashMap::new(), seen: Identities::new() };
    m.dir(from, to, Path::new(""), true)?;
    Ok(m.seen)
}

/// One [`mirror`] under way.
struct Mirror<'a> {
    keep: &'a Keep,
    toward: Toward<'a>,
    /// Where each multiply linked inode of `from` is in `to`, to link its other names to.
    links: HashMap<(u64, u64), PathBuf>,
    /// The identities of `to`'s directories, as they end up (toward `/` only).
    seen: Identities,
}

impl Mirror<'_> {
    /// Mirrors the directory `from` (absent where `present` is false: its contents go) onto
    /// the existing directory `to`, at `rel`.
    fn dir(&mut self, from: &Path, to: &Path, rel: &Path, present: bool) -> Result<()> {
        let list = |d: &Path| -> Result<Vec<std::ffi::OsString>> {
            fs::read_dir(d)
                .map_err(io_err("read", d))?
                .map(|e| e.map(|e| e.file_name()).map_err(io_err("read", d)))
                .collect()
        };
        let mut names = list(to)?;
        if present {
            names.extend(list(from)?);
        }
        names.sort();
        names.dedup();
        for name in names {
            let r = rel.join(&name);
            if self.keep.contains(&r) {
                continue;
            }
            let (src, dst) = (from.join(&name), to.join(&name));
            let ms = if present { fs::symlink_metadata(&src).ok() } else { None };
            let md = fs::symlink_metadata(&dst).ok();
            if self.keep.ancestors.contains(&r) {
                self.ancestor(&src, &dst, &r, ms.as_ref(), md.as_ref())?;
            } else {
                self.entry(&src, &dst, &r, ms.as_ref(), md.as_ref())?;
            }
        }
        Ok(())
    }

    /// A directory on the way to a kept path: descended into where `to` has it, made where
    /// `to` is `/` and lacks it, never removed or replaced. Where the source has something
    /// else than a directory there (an image's `/var/run -> /run` over a kept
    /// `/var/run/secrets`), `to`'s directory stays, holding only what is kept.
    fn ancestor(
        &mut self,
        src: &Path,
        dst: &Path,
        rel: &Path,
        ms: Option<&fs::Metadata>,
        md: Option<&fs::Metadata>,
    ) -> Result<()> {
        let ms = ms.filter(|m| m.is_dir());
        if let Some(md) = md.filter(|m| m.is_dir()) {
            return self.descend(src, dst, rel, ms, md);
        }
        match ms {
            Some(ms) if matches!(self.toward, Toward::Root { .. }) => {
                if md.is_some() {
                    remove(dst)?;
                }
                fs::create_dir(dst).map_err(io_err("create", dst))?;
                let made = fs::symlink_metadata(dst).map_err(io_err("stat", dst))?;
                self.descend(src, dst, rel, Some(ms), &made)
            }
            _ => Ok(()),
        }
    }

    /// Mirrors the directory `src` (its metadata `ms`; `None`: absent, its contents go) onto
    /// the directory `dst` (`md`), its own mode, owner and times last.
    fn descend(
        &mut self,
        src: &Path,
        dst: &Path,
        rel: &Path,
        ms: Option<&fs::Metadata>,
        md: &fs::Metadata,
    ) -> Result<()> {
        self.dir(src, dst, rel, ms.is_some())?;
        // What the entries' changes did to its times is set back too.
        let changed_below = || fs::symlink_metadata(dst).map_or(true, |now| meta_differs(md, &now));
        if let Some(ms) = ms.filter(|ms| meta_differs(ms, md) || changed_below()) {
            set_meta(dst, ms)?;
        }
        self.note(dst, rel);
        Ok(())
    }

    /// Records the identity of `to`'s directory `dst` (at `rel`), where it is wanted.
    fn note(&mut self, dst: &Path, rel: &Path) {
        if matches!(self.toward, Toward::Root { .. }) {
            self.seen.insert(rel.to_owned(), identity(dst));
        }
    }

    /// Any other entry: removed, made, replaced or descended into.
    fn entry(
        &mut self,
        src: &Path,
        dst: &Path,
        rel: &Path,
        ms: Option<&fs::Metadata>,
        md: Option<&fs::Metadata>,
    ) -> Result<()> {
        let Some(ms) = ms else { return remove(dst) };
        let remade = ms.is_dir() && self.was_remade(src, rel);
        if let Some(md) = md.filter(|md| md.is_dir() && ms.is_dir() && !remade) {
            return self.descend(src, dst, rel, Some(ms), md);
        }
        let linked = ms.nlink() > 1 && !ms.is_dir();
        let replace = match md {
            None => true,
            Some(_) if remade => true,
            Some(md) => {
                changed(ms, md, src, dst)
                    || self.links.get(&(ms.dev(), ms.ino())).is_some_and(|first| !same_inode(first, md))
                    || (matches!(self.toward, Toward::Root { trusted: false }) && ms.is_file() && !same_bytes(src, dst))
            }
        };
        if replace {
            if md.is_some() {
                remove(dst)?;
            }
            copy_entry(src, dst, ms, &mut self.links)?;
            if ms.is_dir() && matches!(self.toward, Toward::Root { .. }) {
                // Walked again for identities only toward `/`, where they are wanted.
                self.record(dst, rel);
            }
        }
        if linked {
            self.links.entry((ms.dev(), ms.ino())).or_insert_with(|| dst.to_owned());
        }
        Ok(())
    }

    /// True when the directory `src` is not the one that was at `rel` when `to` last matched.
    fn was_remade(&self, src: &Path, rel: &Path) -> bool {
        match self.toward {
            Toward::Root { .. } => false,
            Toward::Snapshot(ids) => ids.get(rel).is_some_and(|id| !id.is_empty() && *id != identity(src)),
        }
    }

    /// Records the identity of every directory of the new copy `dst` (at `rel`).
    fn record(&mut self, dst: &Path, rel: &Path) {
        self.note(dst, rel);
        let Ok(entries) = fs::read_dir(dst) else { return };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.record(&e.path(), &rel.join(e.file_name()));
            }
        }
    }
}

/// True when the files `a` and `b` hold the same bytes (false where either cannot be read).
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (Ok(mut a), Ok(mut b)) = (fs::File::open(a), fs::File::open(b)) else { return false };
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = match a.read(&mut x) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y[..1]).is_ok_and(|m| m == 0);
        }
    }
}

/// True when `b` is the inode at `first`.
fn same_inode(first: &Path, b: &fs::Metadata) -> bool {
    fs::symlink_metadata(first).is_ok_and(|a| a.dev() == b.dev() && a.ino() == b.ino())
}

/// True when a directory's mode, owner or mtime differ.
fn meta_differs(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.mode() != b.mode()
        || a.uid() != b.uid()
        || a.gid() != b.gid()
        || a.mtime() != b.mtime()
        || a.mtime_nsec() != b.mtime_nsec()
}

/// Removes `path`, whatever it is.
fn remove(path: &Path) -> Result<()> {
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if is_dir { fs::remove_dir_all(path) } else { fs::remove_file(path) }.map_err(io_err("remove", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (path, body) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
    }

    fn listing(root: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        fn walk(d: &Path, rel: &str, out: &mut Vec<(String, String)>) {
            let mut names: Vec<_> = fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            for n in names {
                let (p, r) = (d.join(&n), format!("{rel}/{}", n.to_string_lossy()));
                if p.is_dir() {
                    out.push((r.clone(), "dir".into()));
                    walk(&p, &r, out);
                } else {
                    out.push((r, fs::read_to_string(&p).unwrap()));
                }
            }
        }
        walk(root, "", &mut out);
        out
    }

    #[test]
    fn the_target_ends_as_the_source_but_for_what_is_kept() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(from.path(), &[("bin/sh", "image sh"), ("etc/passwd", "root"), ("srv/a", "new")]);
        tree(
            to.path(),
            &[
                ("bin/sh", "old sh!"),
                ("etc/passwd", "root"),
                ("gone/x", "x"),
                ("state/db", "berth"),
                ("var/lib/keep/y", "kept"),
            ],
        );
        fs::create_dir(to.path().join("proc")).unwrap();
        let keep = Keep::new([Path::new("/state"), Path::new("/proc"), Path::new("/var/lib/keep")]);
        mirror(from.path(), to.path(), &keep, Toward::Root { trusted: true }).unwrap();
        let want = [
            ("/bin", "dir"),
            ("/bin/sh", "image sh"),
            ("/etc", "dir"),
            ("/etc/passwd", "root"),
            ("/proc", "dir"),
            ("/srv", "dir"),
            ("/srv/a", "new"),
            ("/state", "dir"),
            ("/state/db", "berth"),
            ("/var", "dir"),
            ("/var/lib", "dir"),
            ("/var/lib/keep", "dir"),
            ("/var/lib/keep/y", "kept"),
        ];
        let want: Vec<_> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(listing(to.path()), want);
        // Back the other way, the kept paths do not enter the source.
        tree(to.path(), &[("srv/b", "made in the step")]);
        mirror(to.path(), from.path(), &keep, Toward::Snapshot(&Identities::new())).unwrap();
        assert!(from.path().join("srv/b").exists() && !from.path().join("state").exists());
        assert!(!from.path().join("var").exists(), "an ancestor of a kept path is never made");
    }

    #[test]
    fn an_ancestor_of_a_kept_path_missing_in_root_is_made_with_the_images_files() {
        let (snap, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(snap.path(), &[("root/.profile", "image's")]);
        let keep = Keep::new([Path::new("/root/.docker")]);
        let ids = mirror(snap.path(), root.path(), &keep, Toward::Root { trusted: true }).unwrap();
        assert_eq!(fs::read_to_string(root.path().join("root/.profile")).unwrap(), "image's");
        mirror(root.path(), snap.path(), &keep, Toward::Snapshot(&ids)).unwrap();
        assert!(snap.path().join("root/.profile").exists(), "nothing of the image is lost on the way back");
    }

    #[test]
    fn a_directorys_times_are_the_sources_after_its_entries_change() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(from.path(), &[("d/a", "1")]);
        tree(to.path(), &[("d/b", "2")]);
        let old = filetime(&from.path().join("d"));
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: 1000, tv_nsec: 0 },
            last_modification: rustix::fs::Timespec { tv_sec: 1000, tv_nsec: 0 },
        };
        for d in [from.path().join("d"), to.path().join("d")] {
            rustix::fs::utimensat(rustix::fs::CWD, &d, &times, rustix::fs::AtFlags::empty()).unwrap();
        }
        assert_ne!(old, 1000);
        mirror(from.path(), to.path(), &Keep::default(), Toward::Root { trusted: true }).unwrap();
        assert_eq!(filetime(&to.path().join("d")), 1000, "the entries' changes did not leave their time on it");
    }

    fn filetime(p: &Path) -> i64 {
        fs::metadata(p).unwrap().mtime()
    }

    #[test]
    fn a_directory_made_again_is_made_again_in_the_target() {
        let (root, snap) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(snap.path(), &[("srv/data/old", "1")]);
        let keep = Keep::default();
        let ids = mirror(snap.path(), root.path(), &keep, Toward::Root { trusted: true }).unwrap();
        let before = identity(&snap.path().join("srv/data"));
        fs::remove_dir_all(root.path().join("srv/data")).unwrap();
        tree(root.path(), &[("srv/data/new", "2")]);
        mirror(root.path(), snap.path(), &keep, Toward::Snapshot(&ids)).unwrap();
        assert_ne!(identity(&snap.path().join("srv/data")), before, "the snapshot's directory is a new one");
        assert_eq!(listing(snap.path()), listing(root.path()));
    }

    #[test]
    fn an_unrelated_root_is_compared_by_content() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(from.path(), &[("bin/tool", "image's")]);
        tree(to.path(), &[("bin/tool", "box's!!")]);
        let same = fs::metadata(from.path().join("bin/tool")).unwrap();
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: same.atime(), tv_nsec: same.atime_nsec() as _ },
            last_modification: rustix::fs::Timespec { tv_sec: same.mtime(), tv_nsec: same.mtime_nsec() as _ },
        };
        rustix::fs::utimensat(rustix::fs::CWD, to.path().join("bin/tool"), &times, rustix::fs::AtFlags::empty())
            .unwrap();
        mirror(from.path(), to.path(), &Keep::default(), Toward::Root { trusted: true }).unwrap();
        assert_eq!(
            fs::read_to_string(to.path().join("bin/tool")).unwrap(),
            "box's!!",
            "trusted: size and times decide"
        );
        mirror(from.path(), to.path(), &Keep::default(), Toward::Root { trusted: false }).unwrap();
        assert_eq!(fs::read_to_string(to.path().join("bin/tool")).unwrap(), "image's");
    }

    #[test]
    fn hardlinks_stay_links() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(from.path(), &[("a", "same")]);
        fs::hard_link(from.path().join("a"), from.path().join("b")).unwrap();
        mirror(from.path(), to.path(), &Keep::default(), Toward::Root { trusted: true }).unwrap();
        let (a, b) = (fs::metadata(to.path().join("a")).unwrap(), fs::metadata(to.path().join("b")).unwrap());
        assert_eq!(a.ino(), b.ino());
    }
}
