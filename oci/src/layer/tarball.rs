//! Writing a directory tree as a reproducible tar stream.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// How [`tar_directory`] writes entries.
#[derive(Debug, Clone, Default)]
pub struct TarOptions {
    /// Clamp every mtime to this many seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<u64>,
    /// The tree is an overlayfs upper directory with its markers in these xattrs: turn its
    /// whiteouts (0/0 character devices, the opaque xattr) into OCI whiteout entries.
    pub overlay_upper: Option<OverlayXattrs>,
}

/// Where overlayfs keeps its markers in an upper directory: `trusted.overlay.*` when root
/// mounted it, `user.overlay.*` when it was mounted in a user namespace (`userxattr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayXattrs {
    /// `trusted.overlay.*`: mounted by real root.
    Trusted,
    /// `user.overlay.*`: mounted with `userxattr`, in a user namespace.
    User,
    /// fuse-overlayfs's upper directory: `user.overlay.*` as `User` (which it also reads in
    /// lower directories), and its own markers besides: an opaque directory holds a
    /// `.wh..wh..opq` file and a `.wh..opq` whiteout, which are markers, not entries.
    FuseOverlayfs,
}

/// The names fuse-overlayfs puts in an opaque directory of its upper directory.
pub const FUSE_OPAQUE_MARKERS: [&str; 2] = [".wh..wh..opq", ".wh..opq"];

impl OverlayXattrs {
    /// The xattr that marks a directory opaque.
    pub fn opaque(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => "trusted.overlay.opaque",
            OverlayXattrs::User | OverlayXattrs::FuseOverlayfs => "user.overlay.opaque",
        }
    }
}

impl TarOptions {
    /// Options taken from the environment: `SOURCE_DATE_EPOCH` when it is a number.
    pub fn from_env() -> Self {
        let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse().ok());
        TarOptions { source_date_epoch, overlay_upper: None }
    }
}

/// Writes the tree under `root` (not `root` itself) to `out` as a tar stream: entries in
/// byte order of their paths, parents before children, numeric owners, no user or group
/// names, hardlinks kept as links, symlinks stored as written and never followed.
pub fn tar_directory(root: &Path, out: impl Write, opts: &TarOptions) -> Result<()> {
    let mut w = TarWriter::new(out, opts);
    w.add_tree(root, Path::new(""))?;
    w.finish()?;
    Ok(())
}

/// Writes layer entries one by one, by the rules of [`tar_directory`]: what a snapshot
/// diff uses to emit exactly the changed paths and whiteouts.
pub struct TarWriter<'a, W: Write> {
    builder: tar::Builder<W>,
    opts: &'a TarOptions,
    /// (dev, ino) of files with several links -> the first path written for them.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<'a, W: Write> TarWriter<'a, W> {
    /// Starts a tar stream on `out`.
    pub fn new(out: W, opts: &'a TarOptions) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        TarWriter { builder, opts, links: HashMap::new() }
    }

    /// Ends the stream and returns the writer.
    pub fn finish(self) -> Result<W> {
        self.builder.into_inner().map_err(|e| Error::io("finish tar stream", e))
    }

    /// Adds everything under `dir` (not `dir` itself) as `rel/...`, sorted.
    pub fn add_tree(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        self.dir(dir, rel)
    }

    /// Adds the one path `path` (not what is under it) as `rel`.
    pub fn add_path(&mut self, path: &Path, rel: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(path).ctx(|| format!("stat {}", path.display()))?;
        self.entry(path, rel, &meta)
    }

    /// Adds a whiteout: `rel` was deleted.
    pub fn add_whiteout(&mut self, rel: &Path) -> Result<()> {
        let name = rel.file_name().map(|n| format!(".wh.{}", n.to_string_lossy())).unwrap_or_default();
        let path = rel.parent().unwrap_or(Path::new("")).join(name);
        self.marker(&path)
    }

    /// Adds an opaque whiteout: what lower layers had in the directory `rel` is gone.
    pub fn add_opaque(&mut self, rel: &Path) -> Result<()> {
        self.marker(&rel.join(".wh..wh..opq"))
    }

    fn marker(&mut self, path: &Path) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(self.opts.source_date_epoch.unwrap_or(0));
        self.builder.append_data(&mut h, path, io::empty()).ctx(|| format!("add {} to tar", path.display()))
    }

    fn dir(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .ctx(|| format!("read directory {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ctx(|| format!("read directory {}", dir.display()))?;
        names.sort();
        if self.opts.overlay_upper == Some(OverlayXattrs::FuseOverlayfs) {
            names.retain(|n| !FUSE_OPAQUE_MARKERS.iter().any(|m| n == *m));
        }
        for name in names {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let meta = fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
            if self.opts.overlay_upper.is_some() && meta.file_type().is_char_device() && meta.rdev() == 0 {
                self.add_whiteout(&rel)?;
                continue;
            }
            self.entry(&path, &rel, &meta)?;
            if meta.is_dir() {
                if self.opts.overlay_upper.is_some_and(|x| is_opaque(&path, x)) {
                    self.add_opaque(&rel)?;
                }
                self.dir(&path, &rel)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &Path, meta: &fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        let mut h = tar::Header::new_gnu();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        h.set_mtime(self.opts.source_date_epoch.map_or(mtime, |e| mtime.min(e)));
        h.set_size(0);
        let ctx = || format!("add {} to tar", path.display());
        // A file's capabilities (`RUN setcap ...`) and other attributes, as docker keeps them.
        if ft.is_dir() || ft.is_file() {
            if let Some(records) =
                super::xattr::records(path, false).ctx(|| format!("read xattrs of {}", path.display()))?
            {
                super::xattr::append(&mut self.builder, &records).ctx(ctx)?;
            }
        }
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            return self.builder.append_data(&mut h, name, io::empty()).ctx(ctx);
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).ctx(|| format!("read link {}", path.display()))?;
            h.set_entry_type(tar::EntryType::Symlink);
            return self.builder.append_link(&mut h, rel, target).ctx(ctx);
        }
        if meta.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                let first = first.clone();
                return self.builder.append_link(&mut h, rel, first).ctx(ctx);
            }
            self.links.insert((meta.dev(), meta.ino()), rel.to_owned());
        }
        if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let mut file = File::open(path).ctx(|| format!("open {}", path.display()))?;
            return self.builder.append_data(&mut h, rel, Exactly::new(&mut file, meta.len())).ctx(ctx);
        }
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else if ft.is_fifo() {
            tar::EntryType::Fifo
        } else {
            // Sockets cannot be archived; tar and docker skip them too.
            return Ok(());
        };
        h.set_entry_type(kind);
        let rdev = meta.rdev();
        h.set_device_major(rustix::fs::major(rdev)).ctx(ctx)?;
        h.set_device_minor(rustix::fs::minor(rdev)).ctx(ctx)?;
        self.builder.append_data(&mut h, rel, io::empty()).ctx(ctx)
    }
}

/// True when overlayfs (or fuse-overlayfs) marked the directory opaque.
fn is_opaque(path: &Path, xattrs: OverlayXattrs) -> bool {
    let mut buf = [0u8; 4];
    let marked = || xattrs == OverlayXattrs::FuseOverlayfs && path.join(FUSE_OPAQUE_MARKERS[0]).exists();
    matches!(rustix::fs::lgetxattr(path, xattrs.opaque(), &mut buf[..]), Ok(1) if buf[0] == b'y') || marked()
}

/// A file's bytes as its tar header announces them: at most `left` (a file that grew since
/// it was stat'ed is cut there), and an error if it ends sooner, which would otherwise leave a
/// tar whose next header is read as this file's data.
pub struct Exactly<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

impl<'a> Exactly<'a> {
    /// The first `size` bytes of `inner`, all of them.
    pub fn new(inner: &'a mut dyn Read, size: u64) -> Self {
        Exactly { inner, left: size }
    }
}

impl Read for Exactly<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            let msg = format!("the file became {} bytes shorter while it was copied", self.left);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, u64)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                (name, e.header().entry_type(), e.header().mtime().unwrap())
            })
            .collect()
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join("b/sub")).unwrap();
        fs::write(p.join("b/sub/z"), b"z").unwrap();
        fs::write(p.join("a"), b"aaa").unwrap();
        fs::write(p.join("c"), b"ccc").unwrap();
        fs::set_permissions(p.join("c"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(p.join("a"), p.join("b/hard")).unwrap();
        symlink("../../etc/passwd", p.join("b/link")).unwrap();
        d
    }

    #[test]
    fn entries_are_sorted_with_links_kept() {
        let d = tree();
        let mut out = Vec::new();
        tar_directory(d.path(), &mut out, &TarOptions::default()).unwrap();
        let names: Vec<_> = entries(&out).into_iter().map(|(n, t, _)| (n, t)).collect();
        let want = [
            ("a", tar::EntryType::Regular),
            ("b/", tar::EntryType::Directory),
            ("b/hard", tar::EntryType::Link),
            ("b/link", tar::EntryType::Symlink),
            ("b/sub/", tar::EntryType::Directory),
            ("b/sub/z", tar::EntryType::Regular),
            ("c", tar::EntryType::Regular),
        ];
        let want: Vec<_> = want.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        assert_eq!(names, want);
        let mut a = tar::Archive::new(&out[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let path = e.path().unwrap().into_owned();
            if path == Path::new("b/link") {
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("../../etc/passwd"));
            }
            if path == Path::new("c") {
                assert_eq!(e.header().mode().unwrap(), 0o4755);
            }
        }
    }

    #[test]
    fn source_date_epoch_makes_output_reproducible() {
        let d = tree();
        let opts = TarOptions { source_date_epoch: Some(1_000), ..Default::default() };
        let mut first = Vec::new();
        tar_directory(d.path(), &mut first, &opts).unwrap();
        assert!(entries(&first).iter().all(|(_, _, m)| *m == 1_000));
        // Touch a file: with the epoch clamp the bytes do not change.
        let f = File::options().write(true).open(d.path().join("a")).unwrap();
        f.set_modified(std::time::SystemTime::now()).unwrap();
        let mut second = Vec::new();
        tar_directory(d.path(), &mut second, &opts).unwrap();
        assert!(first == second);
    }
}
