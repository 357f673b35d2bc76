//! The build context: the directory COPY and ADD read from.
//!
//! Only what a COPY selects is read; `.dockerignore` (or `<Dockerfile>.dockerignore`)
//! hides files from every selection; a source can never leave the context (`..` and
//! symlinks are resolved inside it). Selected files are hashed once and remembered by
//! (dev, inode, size, mtime, ctime) in the cache's stat cache, so an unchanged context
//! costs a stat walk, never a re-read.

pub mod ignore;
pub mod stdin;

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::cache::remote::skeleton::ContextFiles;
use crate::cache::{CacheStore, FileStat};
use crate::error::{Error, Result};

pub use ignore::Ignore;

/// What `--build-context NAME=VALUE` gives a Dockerfile under NAME, in place of a stage or
/// an image of that name (`FROM NAME`, `COPY --from=NAME`, `RUN --mount=from=NAME`).
#[derive(Debug, Clone)]
pub enum NamedContext {
    /// `docker-image://REF`: that image.
    Image(String),
    /// A local directory: its files, as the main context's are read (without an ignore file).
    Dir(Context),
}

/// A build context directory and its ignore rules.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    ignore: Ignore,
    /// The files hashed so far, by content (shared by clones): a skeleton layer's
    /// references are resolved against them.
    files: std::sync::Arc<ContextFiles>,
    /// How errors name it: the build context, or a stage's filesystem (`COPY --from`).
    origin: &'static str,
}

/// One file or directory a COPY source selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Where it is on the host.
    pub path: PathBuf,
    /// Its path relative to the context root, '/'-separated.
    pub rel: String,
}

impl Context {
    /// A context rooted at `root` with `ignore`'s rules.
    pub fn new(root: &Path, ignore: Ignore) -> Result<Context> {
        let root = root.canonicalize().map_err(Error::io(format!("build context {}", root.display())))?;
        if !root.is_dir() {
            return Err(Error::Context {
                path: root.display().to_string(),
                reason: "the build context is not a directory".into(),
            });
        }
        Ok(Context { root, ignore, files: Default::default(), origin: "the build context" })
    }

    /// A stage's or image's filesystem mounted at `root` (COPY --from), without ignore
    /// rules; symlinks resolve inside it as they would in a container (as in any context).
    pub fn rootfs(root: &Path) -> Result<Context> {
        Ok(Context { origin: "the source stage or image", ..Context::new(root, Ignore::default())? })
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ignore rules.
    pub fn ignore(&self) -> &Ignore {
        &self.ignore
    }

    /// The context's files this build has hashed, by content.
    pub fn files(&self) -> &std::sync::Arc<ContextFiles> {
        &self.files
    }

    /// Expands one COPY source (a path or a glob) into what it selects. A source that
    /// would leave the context is an error; so is a plain path that selects nothing, while a
    /// wildcard may match nothing (`COPY package.json yarn.lock* ./`), as BuildKit allows.
    pub fn select(&self, source: &str) -> Result<Vec<Selected>> {
        let clean = clean_rel(source).ok_or_else(|| Error::Context {
            path: source.to_owned(),
            reason: "forbidden path outside the build context".into(),
        })?;
        let mut found = vec![(self.root.clone(), String::new())];
        for part in clean.split('/').filter(|p| !p.is_empty()) {
            let mut next = Vec::new();
            for (dir, rel) in found {
                let join = |name: &str| if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
                if has_meta(part) {
                    let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                    let mut names: Vec<String> =
                        entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
                    names.sort();
                    for name in names.into_iter().filter(|n| glob_match(part, n)) {
                        next.push((dir.join(&name), join(&name)));
                    }
                } else {
                    next.push((dir.join(part), join(part)));
                }
            }
            found = next;
        }
        let mut out = Vec::new();
        for (path, rel) in found {
            if rel.is_empty() {
                out.push(Selected { path: self.root.clone(), rel });
                continue;
            }
            // Symlinks on the way are resolved with the context as `/`, as BuildKit resolves
            // them: an absolute target starts at the context's root, `..` stops there.
            let real = match resolve_in_root(&self.root, &rel) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("stat {}", path.display()))(e)),
            };
            let real_rel = real.strip_prefix(&self.root).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            // An excluded directory is still selected when an exception re-includes something
            // below it (`target` then `!target/*.jar`), as BuildKit's context keeps it for them.
            if !real_rel.is_empty() && self.ignore.is_excluded(&real_rel) && !self.reincludes(&real, &real_rel)? {
                continue;
            }
            out.push(Selected { path: real, rel });
        }
        if out.is_empty() && !clean.split('/').any(has_meta) {
            return Err(Error::Context {
                path: source.to_owned(),
                reason: match self.ignore.is_empty() {
                    true => format!("no such file or directory in {}", self.origin),
                    false => format!("no such file or directory in {} (or excluded by .dockerignore)", self.origin),
                },
            });
        }
        Ok(out)
    }

    /// True when the excluded `rel` (at `path`) is a directory that holds something an
    /// exception of the ignore rules re-includes: the walk then sends only that.
    fn reincludes(&self, path: &Path, rel: &str) -> Result<bool> {
        if !path.is_dir() || self.ignore.can_skip_dir(rel) {
            return Ok(false);
        }
        let mut any = false;
        self.walk_dir(path, rel, "", &Ignore::default(), &mut |_, _, _| {
            any = true;
            Ok(())
        })?;
        Ok(any)
    }

    /// Walks a selection: calls `visit(host path, path relative to the selected item, metadata)`
    /// for the item and, for a directory, everything under it that the ignore rules and
    /// `exclude` let through, in sorted order, not following symlinks.
    pub fn walk(
        &self,
        sel: &Selected,
        exclude: &Ignore,
        visit: &mut dyn FnMut(&Path, &str, &std::fs::Metadata) -> Result<()>,
    ) -> Result<()> {
        let meta = std::fs::symlink_metadata(&sel.path).map_err(Error::io(format!("stat {}", sel.path.display())))?;
        visit(&sel.path, "", &meta)?;
        if meta.is_dir() {
            self.walk_dir(&sel.path, &sel.rel, "", exclude, visit)?;
        }
        Ok(())
    }

    fn walk_dir(
        &self,
        dir: &Path,
        ctx_rel: &str,
        rel: &str,
        exclude: &Ignore,
        visit: &mut dyn FnMut(&Path, &str, &std::fs::Metadata) -> Result<()>,
    ) -> Result<()> {
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
            .map_err(Error::io(format!("read {}", dir.display())))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(Error::io(format!("read {}", dir.display())))?;
        names.sort();
        for raw in names {
            let path = dir.join(&raw);
            let name = raw.to_string_lossy().into_owned();
            let child_ctx = if ctx_rel.is_empty() { name.clone() } else { format!("{ctx_rel}/{name}") };
            let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let meta = std::fs::symlink_metadata(&path).map_err(Error::io(format!("stat {}", path.display())))?;
            let ignored = self.ignore.is_excluded(&child_ctx) || exclude.is_excluded(&child_rel);
            // Its name would be copied as another: refused, unless nothing reads it.
            if raw.to_str().is_none() && !ignored {
                return Err(Error::Context {
                    path: path.display().to_string(),
                    reason: "its name is not valid UTF-8, and berth copies names as UTF-8: rename it, or leave \
                             it out with .dockerignore"
                        .into(),
                });
            }
            if ignored {
                if meta.is_dir() && !(self.ignore.can_skip_dir(&child_ctx) && exclude.can_skip_dir(&child_rel)) {
                    // An exception may re-include something below: look inside, without the dir itself.
                    self.walk_dir(&path, &child_ctx, &child_rel, exclude, visit)?;
                }
                continue;
            }
            visit(&path, &child_rel, &meta)?;
            if meta.is_dir() {
                self.walk_dir(&path, &child_ctx, &child_rel, exclude, visit)?;
            }
        }
        Ok(())
    }

    /// The digest of exactly what `sources` select: names, content, mode, link targets and
    /// extended attributes (a capability removed is a change); never times or owners (COPY writes root, or `--chown`'s owner, whoever owns the
    /// checkout), so two CI runners with different users and paths get the same keys.
    /// Contents come from the stat cache when the file is unchanged.
    pub fn digest(&self, sources: &[String], exclude: &Ignore, cache: &dyn CacheStore) -> Result<oci::Digest> {
        self.digest_noting(sources, exclude, cache, false)
    }

    /// [`Context::digest`] of what a COPY selects, noting each file in [`Context::files`]:
    /// the files a skeleton layer may be written from (a RUN's bind mount is not among them).
    pub fn copy_digest(&self, sources: &[String], exclude: &Ignore, cache: &dyn CacheStore) -> Result<oci::Digest> {
        self.digest_noting(sources, exclude, cache, true)
    }

    fn digest_noting(
        &self,
        sources: &[String],
        exclude: &Ignore,
        cache: &dyn CacheStore,
        note: bool,
    ) -> Result<oci::Digest> {
        let mut h = oci::Algorithm::Sha256.hasher();
        for source in sources {
            for sel in self.select(source)? {
                h.update(format!("source {source} {}\n", sel.rel).as_bytes());
                self.walk(&sel, exclude, &mut |path, rel, meta| {
                    let kind = meta.file_type();
                    let what = if kind.is_symlink() {
                        let target =
                            std::fs::read_link(path).map_err(Error::io(format!("readlink {}", path.display())))?;
                        format!("link {}", target.display())
                    } else if kind.is_file() {
                        let known = known_file(path, meta, cache, true)?;
                        if note {
                            self.files.note(&known.digest, path);
                        }
                        match known.xattrs.as_deref().filter(|x| !x.is_empty()) {
                            Some(x) => format!("file {} xattrs {x}", known.digest),
                            None => format!("file {}", known.digest),
                        }
                    } else if kind.is_dir() {
                        "dir".to_owned()
                    } else {
                        "special".to_owned()
                    };
                    h.update(format!("{rel:?} {:o} {what}\n", meta.mode()).as_bytes());
                    if let Some(x) = kind.is_dir().then(|| xattr_digest(path)).transpose()?.flatten() {
                        h.update(format!("xattrs {x}\n").as_bytes());
                    }
                    Ok(())
                })?;
            }
        }
        Ok(h.finish())
    }
}

/// `rel` resolved inside `root` as the kernel would with `root` as `/`: absolute symlink
/// targets start again at `root`, `..` stops at it. The result never leaves `root`.
pub fn resolve_in_root(root: &Path, rel: &str) -> std::io::Result<PathBuf> {
    Ok(resolve_parts(root, rel, false)?.iter().fold(root.to_path_buf(), |p, d| p.join(d)))
}

/// `rel` resolved inside `root` as BuildKit resolves a COPY or WORKDIR destination: as
/// [`resolve_in_root`], but a missing component is kept as a plain name, so a dangling link
/// leads to where its target would be. Relative to `root`, without a leading `/`.
pub fn resolve_dest_in_root(root: &Path, rel: &str) -> std::io::Result<String> {
    Ok(resolve_parts(root, rel, true)?.join("/"))
}

/// The components of `rel` resolved inside `root`; a missing one is an error unless
/// `keep_missing`. More than 40 links, or a link whose target is not UTF-8, is an error.
fn resolve_parts(root: &Path, rel: &str, keep_missing: bool) -> std::io::Result<Vec<String>> {
    let mut todo: Vec<String> = rel.split('/').filter(|c| !c.is_empty()).rev().map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        // Every component in `done` is a directory or missing, never a link.
        let here = done.iter().fold(root.to_path_buf(), |p, d| p.join(d)).join(&c);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(std::io::Error::other(format!("too many symlinks resolving {rel}")));
                }
                let target = std::fs::read_link(&here)?;
                let t = target.to_str().ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{c}: a link to a name that is not UTF-8"),
                    )
                })?;
                if t.starts_with('/') {
                    done.clear();
                }
                todo.extend(t.split('/').filter(|c| !c.is_empty()).rev().map(str::to_owned));
            }
            Ok(_) => done.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && keep_missing => done.push(c),
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A file's sha256, from the stat cache when its (dev, inode, size, mtime, ctime) match.
pub fn file_digest(path: &Path, meta: &std::fs::Metadata, cache: &dyn CacheStore) -> Result<oci::Digest> {
    Ok(known_file(path, meta, cache, false)?.digest)
}

/// What the stat cache knows of a file (its content's digest, and with `xattrs` the digest
/// of its extended attributes), read from the file where the cache has no current entry:
/// an unchanged context costs a `stat` per file, not also an `llistxattr`.
fn known_file(path: &Path, meta: &std::fs::Metadata, cache: &dyn CacheStore, xattrs: bool) -> Result<FileStat> {
    let stat = (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    );
    let known = cache.file(path)?.filter(|k| k.stat == stat);
    if let Some(k) = known.as_ref().filter(|k| !xattrs || k.xattrs.is_some()) {
        return Ok(k.clone());
    }
    let digest = match known {
        Some(k) => k.digest,
        None => digest_file(path, oci::Algorithm::Sha256)?,
    };
    let xattrs = match xattrs {
        true => Some(xattr_digest(path)?.map(|d| d.to_string()).unwrap_or_default()),
        false => None,
    };
    let entry = FileStat { stat, digest, xattrs };
    cache.set_file(path, &entry)?;
    Ok(entry)
}

/// The digest of the PAX records of `path`'s extended attributes (not following a
/// symlink); None when it has none.
fn xattr_digest(path: &Path) -> Result<Option<oci::Digest>> {
    let records =
        oci::layer::xattr::records(path, false).map_err(Error::io(format!("read the xattrs of {}", path.display())))?;
    Ok(records.map(|r| oci::Digest::of(&r)))
}

/// The digest of a file's content, read once in a stream.
pub fn digest_file(path: &Path, algorithm: oci::Algorithm) -> Result<oci::Digest> {
    let f = std::fs::File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
    let mut r = oci::digest::HashingReader::new(std::io::BufReader::with_capacity(256 * 1024, f), algorithm);
    std::io::copy(&mut r, &mut std::io::sink()).map_err(Error::io(format!("read {}", path.display())))?;
    Ok(r.finish().1)
}

/// Cleans a context-relative path: `.` and leading `/` dropped, `..` resolved; None when
/// it would climb out of the root.
pub fn clean_rel(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[a-z]`, `[^a]`, `\x`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n)
}

fn matches(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| matches(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && matches(&p[1..], &n[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|i| i + 1) else { return false };
            let Some(c) = n.first() else { return false };
            let class = &p[1..end];
            let (negate, class) = match class.first() {
                Some('^') | Some('!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= *c && *c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit != negate && matches(&p[end + 1..], &n[1..])
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && matches(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && matches(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MemoryCache;
    use std::os::unix::ffi::OsStrExt as _;

    /// The destination `rel` resolves to, or the error's text.
    fn dest(root: &Path, rel: &str) -> String {
        resolve_dest_in_root(root, rel).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn a_file_destination_follows_symlinks_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/conf")).unwrap();
        std::fs::write(root.join("real"), "old").unwrap();
        let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
        link("/real", "flink");
        link("/nowhere", "dangling");
        link("conf/app.ini", "etc/app.ini");
        link("../../../../outside", "etc/escape");
        link("/hop", "chain");
        link("etc/app.ini", "hop");
        assert_eq!(dest(root, "flink"), "real");
        assert_eq!(dest(root, "/dangling"), "nowhere");
        assert_eq!(dest(root, "etc/app.ini"), "etc/conf/app.ini");
        assert_eq!(dest(root, "etc/escape"), "outside", "`..` stops at the root");
        assert_eq!(dest(root, "chain"), "etc/conf/app.ini");
        assert_eq!(dest(root, "etc/plain"), "etc/plain");
        // Links on the way are followed too, dangling ones to where their target would be.
        assert_eq!(dest(root, "dangling/sub/f"), "nowhere/sub/f");
        assert_eq!(dest(root, "/etc/escape/y"), "outside/y");
        assert_eq!(dest(root, "hop/../x"), "etc/conf/x", "`..` after a link is the target's parent");
        link("loop", "loop");
        assert_eq!(dest(root, "loop/a"), "error: too many symlinks resolving loop/a", "as BuildKit refuses it");
        let latin1 = std::ffi::OsStr::from_bytes(b"/srv/caf\xe9");
        std::os::unix::fs::symlink(latin1, root.join("cafe")).unwrap();
        assert!(dest(root, "cafe/x").contains("not UTF-8"), "left for the unpacker by the caller");
    }

    fn ctx(files: &[(&str, &str)], ignore: &str) -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        let c = Context::new(dir.path(), Ignore::parse(ignore).unwrap()).unwrap();
        (dir, c)
    }

    #[test]
    fn globs_select_and_ignore_hides() {
        let (_d, c) = ctx(&[("a.txt", "a"), ("b.txt", "b"), ("c.md", "c"), ("secret.txt", "s")], "secret.txt\n");
        let rels: Vec<String> = c.select("*.txt").unwrap().into_iter().map(|s| s.rel).collect();
        assert_eq!(rels, ["a.txt", "b.txt"]);
        assert!(c.select("secret.txt").is_err(), "an ignored plain path is missing");
        assert!(c.select("secret*").unwrap().is_empty(), "a wildcard that matches only ignored files selects nothing");
        assert!(c.select("nothing*").unwrap().is_empty(), "a wildcard may match nothing, as in BuildKit");
    }

    #[test]
    fn an_excluded_directory_is_selected_for_what_an_exception_re_includes() {
        let files = [("target/app.jar", "j"), ("target/other.txt", "o"), ("target/lib/x.jar", "x"), ("tmp/a", "a")];
        let (_d, c) = ctx(&files, "target\n!target/*.jar\ntmp\n");
        for source in ["target", "targe?"] {
            let sel = c.select(source).unwrap();
            assert_eq!(sel.iter().map(|s| s.rel.as_str()).collect::<Vec<_>>(), ["target"], "{source}");
            let mut seen = Vec::new();
            c.walk(&sel[0], &Ignore::default(), &mut |_, rel, _| {
                seen.push(rel.to_owned());
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, ["", "app.jar"], "{source}");
        }
        // Nothing re-included below: still excluded.
        assert!(c.select("tmp").is_err());
        assert!(c.select("tm?").unwrap().is_empty());
    }

    #[test]
    fn sources_cannot_leave_the_context() {
        let (d, c) = ctx(&[("a", "a")], "");
        let e = c.select("../etc/passwd").unwrap_err().to_string();
        assert!(e.contains("outside the build context"), "{e}");
        // A symlink leads inside the context only: `/` is the context's root, as in BuildKit.
        std::os::unix::fs::symlink("/etc", d.path().join("out")).unwrap();
        std::os::unix::fs::symlink("../../../a", d.path().join("up")).unwrap();
        let e = c.select("out/passwd").unwrap_err().to_string();
        assert!(e.contains("no such file or directory in the build context"), "not the host's /etc/passwd: {e}");
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "ctx").unwrap();
        let sel = c.select("out/passwd").unwrap();
        assert_eq!(std::fs::read_to_string(&sel[0].path).unwrap(), "ctx");
        assert_eq!(c.select("up").unwrap()[0].path, d.path().join("a").canonicalize().unwrap());
        // `..` that stays inside is fine.
        assert_eq!(c.select("x/../a").unwrap()[0].rel, "a");
    }

    #[test]
    fn digest_follows_content_and_mode_not_times() {
        use std::os::unix::fs::PermissionsExt;
        let (d, c) = ctx(&[("src/a", "one"), ("src/b", "two")], "");
        let cache = MemoryCache::default();
        let none = Ignore::default();
        let first = c.digest(&["src".into()], &none, &cache).unwrap();
        // Touch: same content, new mtime -> same digest (re-hashed once).
        let f = std::fs::File::options().write(true).open(d.path().join("src/a")).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(c.digest(&["src".into()], &none, &cache).unwrap(), first);
        std::fs::set_permissions(d.path().join("src/a"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let chmodded = c.digest(&["src".into()], &none, &cache).unwrap();
        assert_ne!(chmodded, first);
        std::fs::write(d.path().join("src/b"), "TWO").unwrap();
        assert_ne!(c.digest(&["src".into()], &none, &cache).unwrap(), chmodded);
        // --exclude changes what is selected.
        let ex = Ignore::parse("b").unwrap();
        assert_ne!(c.digest(&["src".into()], &ex, &cache).unwrap(), c.digest(&["src".into()], &none, &cache).unwrap());
    }

    #[test]
    fn a_missing_source_is_named_where_it_was_looked_for() {
        let (d, c) = ctx(&[("a", "a")], "");
        let e = c.select("nope").unwrap_err().to_string();
        assert!(e.ends_with("no such file or directory in the build context"), "{e}");
        let ignoring = Context::new(d.path(), Ignore::parse("b").unwrap()).unwrap();
        assert!(ignoring.select("nope").unwrap_err().to_string().ends_with("(or excluded by .dockerignore)"));
        // COPY --from: a stage has no .dockerignore. Before: "... in the build context".
        let e = Context::rootfs(d.path()).unwrap().select("etc/hostname").unwrap_err().to_string();
        assert!(e.ends_with("no such file or directory in the source stage or image"), "{e}");
    }

    #[test]
    fn a_name_that_is_not_utf8_is_refused_by_name_unless_ignored() {
        use std::os::unix::ffi::OsStrExt;
        let (d, c) = ctx(&[("src/ok", "1")], "");
        let bad = d.path().join("src").join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
        std::fs::write(&bad, "latin-1").unwrap();
        let cache = MemoryCache::default();
        // Before: "stat .../caf\u{fffd}.txt: No such file or directory", a file never there.
        let err = c.digest(&["src".into()], &Ignore::default(), &cache).unwrap_err().to_string();
        assert!(err.contains("caf") && err.contains("not valid UTF-8") && err.contains(".dockerignore"), "{err}");
        let ignored = Context::new(d.path(), Ignore::parse("src/caf*").unwrap()).unwrap();
        ignored.digest(&["src".into()], &Ignore::default(), &cache).unwrap();
    }

    #[test]
    fn only_what_a_copy_selects_is_noted_for_skeletons() {
        let (d, c) = ctx(&[("src/a", "one"), ("secret.txt", "hunter2"), ("hidden/x", "x")], "hidden\n");
        let cache = MemoryCache::default();
        let none = Ignore::default();
        let of = |s: &str| oci::Digest::of(s.as_bytes());
        c.digest(&["secret.txt".into()], &none, &cache).unwrap(); // as a RUN's bind mount hashes it
        c.copy_digest(&["src".into(), "hidden".into()], &none, &cache).unwrap_err(); // ignored: no such source
        c.copy_digest(&["src".into()], &none, &cache).unwrap();
        let root = d.path().canonicalize().unwrap();
        assert_eq!(c.files().find(&of("one")), Some(root.join("src/a")));
        assert_eq!(c.files().find(&of("hunter2")), None, "a file no COPY selects is never named");
        assert_eq!(c.files().find(&of("x")), None, "nor one .dockerignore hides");
        // Clones share what was noted: the build's context and the importer's are one.
        assert!(c.clone().files().find(&of("one")).is_some());
    }

    #[test]
    fn rootfs_symlinks_resolve_inside_the_root() {
        let (d, _) = ctx(&[("usr/bin/tool", "t"), ("etc/real", "r")], "");
        std::os::unix::fs::symlink("/usr/bin", d.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", d.path().join("usr/up")).unwrap();
        let root = d.path().canonicalize().unwrap();
        assert_eq!(resolve_in_root(&root, "bin/tool").unwrap(), root.join("usr/bin/tool"));
        // `..` past the top stays at the top: /etc of the image, never the host's.
        assert_eq!(resolve_in_root(&root, "usr/up/real").unwrap(), root.join("etc/real"));
        let c = Context::rootfs(&root).unwrap();
        assert_eq!(c.select("/bin/tool").unwrap()[0].path, root.join("usr/bin/tool"));
    }

    #[test]
    fn glob_matching_is_go_filepath_match() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.md"));
        assert!(glob_match("file?", "file1"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
    }
}
