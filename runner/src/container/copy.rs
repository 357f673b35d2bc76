//! `berth cp`: files between a container and the host, with docker's rules for what lands
//! where ([`plan`]).
//!
//! A running container's files are reached through `/proc/<pid>/root`, its volumes
//! included; a stopped or created one's rootfs snapshot is mounted for the copy in a mount
//! namespace of a short-lived thread of its own, which takes the mount with it. Every path
//! inside a container is resolved with `RESOLVE_IN_ROOT` ([`crate::sys::open_in_root`]), so
//! a symlink in the container (`/out -> /etc`) leads only to its own files, never the
//! host's. The copy itself is a tar stream ([`crate::treetar`]) applied by the layer
//! unpacker ([`crate::unpack`]) below the destination directory, which it cannot leave.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags};

use super::{Container, Error, Result, Status};

/// How `cp` treats owners and a symlink given as the source.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// `-a`: keep the source's owners (else the destination's user owns the copy: root in a
    /// container, the caller on the host).
    pub archive: bool,
    /// `-L`: copy what a symlink given as the source points to, not the link.
    pub follow_link: bool,
}

/// What a destination path is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing; its parent is a directory.
    Missing,
    /// A directory (or a symlink to one).
    Dir,
    /// Anything else.
    Other,
}

/// Where a copy lands: `dir` (an existing directory) gets an entry `name`, or with `name`
/// None the contents of the source directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The directory the archive is unpacked in.
    pub dir: String,
    /// The name of the copy's root entry there.
    pub name: Option<String>,
}

/// docker's rules. A file: to `dest` when it is missing or a file, into it when it is a
/// directory; a `dest` ending in `/` must be a directory. A directory: as `dest` when it is
/// missing; into it when it is a directory (its contents when `src` ends in `/.`); never
/// onto a file.
pub fn plan(src: &str, src_is_dir: bool, dest: &str, found: Found) -> Result<Plan> {
    let fail = |why: String| Err(Error::Config(why));
    let src_trimmed = src.trim_end_matches('/');
    let contents = src_is_dir && (src.ends_with("/.") || src_trimmed.is_empty());
    if !src_is_dir && (src.ends_with('/') || src.ends_with("/.")) {
        return fail(format!("{src}: not a directory"));
    }
    let base = |p: &str| Path::new(p.trim_end_matches("/.")).file_name().map(|n| n.to_string_lossy().into_owned());
    let (parent, leaf) = split(dest);
    match (found, src_is_dir) {
        (Found::Dir, _) if contents => Ok(Plan { dir: dest.to_owned(), name: None }),
        (Found::Dir, _) => Ok(Plan { dir: dest.to_owned(), name: base(src).or_else(|| Some(".".into())) }),
        (Found::Other, true) => fail(format!("cannot copy a directory to a file: {dest}")),
        (Found::Other, false) if dest.ends_with('/') => fail(format!("{dest}: not a directory")),
        (Found::Missing, false) if dest.ends_with('/') => {
            fail(format!("destination directory {dest} must exist (a file is copied into an existing directory)"))
        }
        (Found::Other | Found::Missing, _) => Ok(Plan { dir: parent, name: Some(leaf) }),
    }
}

/// `dest` as its parent directory and last component (`"out/x/"` -> `("out", "x")`).
fn split(dest: &str) -> (String, String) {
    let trimmed = dest.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", leaf)) => ("/".into(), leaf.into()),
        Some((parent, leaf)) => (parent.into(), leaf.into()),
        None => (".".into(), trimmed.into()),
    }
}

/// One side of a copy: a root directory and the paths resolved in it.
struct Side<'a> {
    /// `/` of the host, or a container's root.
    root: &'a OwnedFd,
    /// For messages: `the host` or `container NAME`.
    who: String,
}

impl Side<'_> {
    /// Opens `path` (`O_PATH`), following a final symlink only if `follow`; None if missing.
    fn open(&self, path: &str, follow: bool) -> Result<Option<(OwnedFd, bool)>> {
        let mut flags = OFlags::PATH | OFlags::CLOEXEC;
        if !follow {
            flags |= OFlags::NOFOLLOW;
        }
        let path_in = match path.trim_end_matches("/.") {
            "" => "/",
            p => p,
        };
        match crate::sys::open_in_root(self.root, path_in, flags) {
            Ok(fd) => {
                let dir = FileType::from_raw_mode(rustix::fs::fstat(&fd).map_err(self.err(path))?.st_mode)
                    == FileType::Directory;
                Ok(Some((fd, dir)))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(self.err(path)(e)),
        }
    }

    /// What `dest` is; a missing one needs a directory as its parent.
    fn found(&self, dest: &str) -> Result<Found> {
        match self.open(dest, true)? {
            Some((_, true)) => Ok(Found::Dir),
            Some((_, false)) => Ok(Found::Other),
            None => match self.open(&split(dest).0, true)? {
                Some((_, true)) => Ok(Found::Missing),
                _ => Err(Error::Config(format!("no such directory: {} in {}", split(dest).0, self.who))),
            },
        }
    }

    fn err<'p>(&self, path: &'p str) -> impl FnOnce(rustix::io::Errno) -> Error + 'p {
        let who = self.who.clone();
        move |e| Error::Config(format!("{path} in {who}: {}", std::io::Error::from(e)))
    }
}

/// Copies `src` of container `c` to `dest` on the host (`cp CONTAINER:SRC DEST`).
/// The copy belongs to the user running berth (as docker's, `-a` or not), without set-id
/// bits: a container's files must not become set-id programs on the host.
pub fn copy_out(c: &Container, src: &str, dest: &Path, opts: CopyOptions) -> Result<()> {
    let host_root = host_root()?;
    let dest = absolute(dest)?;
    let tree = crate::treetar::TreeOptions { strip_setid: true, ..Default::default() };
    with_root(c, |root| {
        let from = Side { root, who: format!("container {}", c.config.name) };
        let to = Side { root: &host_root, who: "the host".into() };
        transfer((&from, src), (&to, &dest), CopyOptions { archive: false, ..opts }, tree)
    })
}

/// Copies `src` on the host into container `c` at `dest` (`cp SRC CONTAINER:DEST`).
/// Without `-a` the copy belongs to the container's root and has no set-id bits, as
/// docker's; with it, the host's owners and modes are kept.
pub fn copy_in(src: &Path, c: &Container, dest: &str, opts: CopyOptions) -> Result<()> {
    let host_root = host_root()?;
    let src = absolute(src)?;
    let tree = crate::treetar::TreeOptions { strip_setid: !opts.archive, ..Default::default() };
    with_root(c, |root| {
        let from = Side { root: &host_root, who: "the host".into() };
        let to = Side { root, who: format!("container {}", c.config.name) };
        transfer((&from, &src), (&to, dest), opts, tree)
    })
}

/// Writes `src` of container `c` as a tar stream to `out` (`cp CONTAINER:SRC -`).
pub fn archive_out(c: &Container, src: &str, out: impl std::io::Write + Send, opts: CopyOptions) -> Result<()> {
    with_root(c, |root| {
        let from = Side { root, who: format!("container {}", c.config.name) };
        let (fd, is_dir) = source(&from, src, opts)?;
        let name = plan(src, is_dir, "/", Found::Dir)?.name;
        let tree = crate::treetar::TreeOptions::default();
        crate::treetar::write_tree(&fd, name.as_deref(), out, tree).map_err(super::io_err("archive", Path::new(src)))
    })
}

/// Writes the whole tree of container `c` as a tar stream to `out` (`berth export`): its
/// rootfs with its changes, the entries named from its root (`etc/`, `bin/sh`, ...). What a
/// running container has mounted on it (/proc, /sys, /dev, volumes) is not gone into.
pub fn export(c: &Container, out: impl std::io::Write + Send) -> Result<()> {
    let tree = crate::treetar::TreeOptions { one_filesystem: true, ..Default::default() };
    with_root(c, |root| crate::treetar::write_tree(root, None, out, tree).map_err(super::io_err("export", &c.dir)))
}

/// Unpacks the tar stream `input` into the directory `dest` of container `c` (`cp - CONTAINER:DEST`).
pub fn archive_in(input: impl std::io::Read + Send, c: &Container, dest: &str, opts: CopyOptions) -> Result<()> {
    with_root(c, |root| {
        let to = Side { root, who: format!("container {}", c.config.name) };
        match to.open(dest, true)? {
            Some((dir, true)) => unpack_into(input, &dir, dest, opts),
            _ => Err(Error::Config(format!("{dest} in {}: the destination of an archive must be a directory", to.who))),
        }
    })
}

/// The source, opened: its descriptor and whether it is a directory.
fn source(from: &Side, src: &str, opts: CopyOptions) -> Result<(OwnedFd, bool)> {
    // A path through a directory (`dir/.`, `dir/`) follows a final symlink, as docker's.
    let follow = opts.follow_link || src.ends_with('/') || src.ends_with("/.");
    from.open(src, follow)?.ok_or_else(|| Error::Config(format!("could not find {src} in {}", from.who)))
}

/// The copy: `src` of `from` archived (as `tree` says) and unpacked where [`plan`] puts it
/// in `to`.
fn transfer(
    (from, src): (&Side, &str),
    (to, dest): (&Side, &str),
    opts: CopyOptions,
    tree: crate::treetar::TreeOptions,
) -> Result<()> {
    let (fd, is_dir) = source(from, src, opts)?;
    let plan = plan(src, is_dir, dest, to.found(dest)?)?;
    let (dir, _) =
        to.open(&plan.dir, true)?.ok_or_else(|| Error::Config(format!("no such directory: {}", plan.dir)))?;
    piped(&fd, plan.name.as_deref(), tree, (&dir, &plan.dir), opts).map_err(|e| match e {
        Piped::Archive(a) => super::io_err("archive", Path::new(src))(a),
        Piped::Unpack(e) => e,
    })
}

/// Copies the contents of the directory `src` into the directory `dest` as they are: owners,
/// modes, set-id bits and extended attributes kept (a volume filled from its image; `shown` names it in errors).
pub(crate) fn copy_contents(src: &OwnedFd, dest: &OwnedFd, shown: &str) -> Result<()> {
    let opts = CopyOptions { archive: true, follow_link: false };
    let tree = crate::treetar::TreeOptions { xattrs: true, ..Default::default() };
    piped(src, None, tree, (dest, shown), opts).map_err(|e| match e {
        Piped::Archive(a) => super::io_err("copy", Path::new(shown))(a),
        Piped::Unpack(e) => e,
    })
}

/// Which side of [`piped`] failed.
enum Piped {
    Archive(std::io::Error),
    Unpack(Error),
}

/// The tree at `fd` (its root entry named `name`, or its contents) archived as `tree` says
/// in one thread and unpacked below `dir` in this one.
fn piped(
    fd: &OwnedFd,
    name: Option<&str>,
    tree: crate::treetar::TreeOptions,
    (dir, shown): (&OwnedFd, &str),
    opts: CopyOptions,
) -> std::result::Result<(), Piped> {
    let (reader, writer) = std::io::pipe().map_err(Piped::Archive)?;
    std::thread::scope(|s| {
        let archiving = s.spawn(move || crate::treetar::write_tree(fd, name, writer, tree));
        let unpacked = unpack_into(reader, dir, shown, opts);
        let archived = archiving.join().unwrap_or_else(|_| Err(std::io::Error::other("the archiving thread panicked")));
        match (unpacked, archived) {
            // The archive was cut short by the unpacker's failure: that one says why.
            (Err(e), Err(a)) if a.kind() == std::io::ErrorKind::BrokenPipe => Err(Piped::Unpack(e)),
            (_, Err(a)) => Err(Piped::Archive(a)),
            (unpacked, Ok(())) => unpacked.map_err(Piped::Unpack),
        }
    })
}

/// Applies the tar stream `input` below the directory `dir` (named `shown` in messages),
/// which it cannot leave; `.wh.` names are plain files here.
fn unpack_into(input: impl std::io::Read, dir: &OwnedFd, shown: &str, opts: CopyOptions) -> Result<()> {
    let unpack = crate::unpack::UnpackOptions {
        whiteouts: crate::unpack::Whiteouts::Keep,
        preserve_owners: opts.archive,
        ..Default::default()
    };
    let at = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    // The whole chain: `create file "x": Read-only file system`.
    let unpacked = crate::unpack::unpack(input, &at, &unpack);
    unpacked.map(drop).map_err(|e| Error::Config(format!("copy into {shown}: {}", super::error_chain(&e))))
}

/// The host's `/`, for paths resolved as usual.
fn host_root() -> Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open("/", flags, rustix::fs::Mode::empty()).map_err(|e| super::io_err("open", Path::new("/"))(e.into()))
}

/// `p` made absolute against the working directory, as text, with the `/.` or `/` it ended
/// with (docker's "the contents of"; `std::path::absolute` drops them).
fn absolute(p: &Path) -> Result<String> {
    let given = p.to_string_lossy();
    let suffix = if given == "." || given.ends_with("/.") {
        "/."
    } else if given.ends_with('/') {
        "/"
    } else {
        ""
    };
    let abs = std::path::absolute(p).map_err(super::io_err("resolve", p))?;
    let abs = abs.to_string_lossy();
    Ok(match (abs.trim_end_matches('/'), suffix) {
        ("", "/.") => "/.".to_owned(),
        ("", _) => "/".to_owned(),
        (base, suffix) => format!("{base}{suffix}"),
    })
}

/// Runs `f` with the root of `c`'s files: `/proc/<pid>/root` while it runs, else its
/// rootfs snapshot (and its volumes on it) mounted in a private mount namespace of a thread
/// that ends with `f`.
fn with_root<T: Send>(c: &Container, f: impl FnOnce(&OwnedFd) -> Result<T> + Send) -> Result<T> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let state = c.state()?;
    if let (Status::Running, Some(pid)) = (state.status, state.pid) {
        let path = PathBuf::from(format!("/proc/{pid}/root"));
        let root = rustix::fs::open(&path, flags, rustix::fs::Mode::empty())
            .map_err(|e| super::io_err("open", &path)(e.into()))?;
        return f(&root);
    }
    let snapshotter = crate::snapshot::for_root(c.root())?;
    let mounts = snapshotter.mounts(&super::snapshot_key(&c.config.id))?;
    let rootfs = mounts.first().ok_or_else(|| Error::State(format!("container {} has no rootfs", c.config.name)))?;
    let target = super::containers_dir(c.root()).join(".rootfs");
    std::fs::create_dir_all(&target).map_err(super::io_err("create", &target))?;
    let copied = crate::sandbox::in_private_mounts(|| {
        rootfs.mount(&target)?;
        // Its volumes where it has them, so that a copy to or from one reaches the volume.
        // A bind whose host directory is gone is left out, as docker's cp leaves it.
        let mut volumes: Vec<_> = c.config.volumes.iter().filter(|v| v.host.exists()).collect();
        volumes.sort_by_key(|v| crate::sandbox::depth(&v.container));
        for v in volumes {
            let options = crate::sandbox::BindOptions { read_only: v.read_only, recursive: v.recursive, nodev: true };
            crate::sandbox::bind_into(&crate::sys::Linux, &target, &v.host, &v.container, options)
                .map_err(super::io_err("mount the volume at", Path::new(&v.container)))?;
        }
        let root = rustix::fs::open(&target, flags, rustix::fs::Mode::empty())
            .map_err(|e| super::io_err("open", &target)(e.into()))?;
        f(&root)
    });
    copied.map_err(super::io_err("mount the rootfs of", &c.dir))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(dir: &str, name: Option<&str>) -> Plan {
        Plan { dir: dir.into(), name: name.map(Into::into) }
    }

    #[test]
    fn files_follow_dockers_rules() {
        assert_eq!(plan("/etc/hosts", false, "out", Found::Missing).unwrap(), p(".", Some("out")));
        assert_eq!(plan("/etc/hosts", false, "/tmp/x", Found::Other).unwrap(), p("/tmp", Some("x")), "overwritten");
        assert_eq!(plan("/etc/hosts", false, "/tmp", Found::Dir).unwrap(), p("/tmp", Some("hosts")), "into");
        assert!(plan("/etc/hosts", false, "new/", Found::Missing).unwrap_err().to_string().contains("must exist"));
        assert!(plan("/etc/hosts/", false, "/tmp", Found::Dir).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn directories_follow_dockers_rules() {
        assert_eq!(plan("/app/out", true, "/tmp/res", Found::Missing).unwrap(), p("/tmp", Some("res")), "as dest");
        assert_eq!(plan("/app/out", true, "/tmp", Found::Dir).unwrap(), p("/tmp", Some("out")), "into");
        assert_eq!(plan("/app/out/", true, "/tmp", Found::Dir).unwrap(), p("/tmp", Some("out")));
        assert_eq!(plan("/app/out/.", true, "/tmp", Found::Dir).unwrap(), p("/tmp", None), "its contents");
        assert_eq!(plan("/app/out/.", true, "/tmp/new", Found::Missing).unwrap(), p("/tmp", Some("new")));
        let e = plan("/app/out", true, "/tmp/file", Found::Other).unwrap_err().to_string();
        assert!(e.contains("cannot copy a directory to a file"), "{e}");
        assert_eq!(plan("/", true, "/tmp", Found::Dir).unwrap(), p("/tmp", None), "a root's contents");
    }

    #[test]
    fn host_paths_keep_the_contents_marker() {
        let cwd = std::env::current_dir().unwrap().display().to_string();
        assert_eq!(absolute(Path::new("d/.")).unwrap(), format!("{cwd}/d/."));
        assert_eq!(absolute(Path::new(".")).unwrap(), format!("{cwd}/."));
        assert_eq!(absolute(Path::new("d/")).unwrap(), format!("{cwd}/d/"));
        assert_eq!(absolute(Path::new("/")).unwrap(), "/");
        assert_eq!(absolute(Path::new("/tmp/x")).unwrap(), "/tmp/x");
    }

    #[test]
    fn destinations_split_into_parent_and_name() {
        assert_eq!(split("out"), (".".into(), "out".into()));
        assert_eq!(split("/out/"), ("/".into(), "out".into()));
        assert_eq!(split("a/b/c"), ("a/b".into(), "c".into()));
    }
}
