//! A file tree as a tar stream, read through file descriptors: `berth cp`'s archive of a
//! container's path, or of the host's.
//!
//! The walk starts at an `O_PATH` descriptor the caller opened (inside a container's root
//! with `RESOLVE_IN_ROOT`, see [`crate::sys::open_in_root`]) and goes down with `openat`
//! and `O_NOFOLLOW`: a symlink in the tree is archived as a symlink, never followed, so
//! nothing outside the tree can be read through one. Files with several links become one
//! file and hard links to it. Sockets are skipped, as tar cannot hold them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, Mode, OFlags, Stat};

/// How [`write_tree`] archives a tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeOptions {
    /// Do not go into directories that are mounted on the tree (`tar --one-file-system`): a
    /// mount point is an empty directory in the archive (`berth export`: no /proc, /sys,
    /// /dev or volumes).
    pub one_filesystem: bool,
    /// Leave out the setuid and setgid bits, so that a copy out of a container cannot plant
    /// a set-id program on the host.
    pub strip_setid: bool,
    /// Keep files' and directories' extended attributes (`security.capability` among them),
    /// as PAX records: for a volume filled from its image.
    pub xattrs: bool,
}

/// Writes the tree at `fd` (an `O_PATH` descriptor of a directory, file or symlink) to
/// `out`: its root entry named `name`, or with `name` None the entries of a directory
/// without the directory itself (docker's `SRC/.`). Ends the archive.
///
/// What a running container does meanwhile cannot change the archive's shape: each entry's
/// header comes from the descriptor that is read (`fstat`, never a second lookup by name),
/// and a file's data is exactly the size its header says (a file that grows is cut, one
/// that shrinks padded), so no byte of a file can pass for the next entries. Files on
/// /proc, /sys and the like are never read (a container could point at the host kernel's
/// through them): such a tree is refused, such an entry inside one left out.
pub fn write_tree(fd: &OwnedFd, name: Option<&str>, out: impl Write, opts: TreeOptions) -> io::Result<()> {
    if pseudo(fd)? {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "on a kernel filesystem (/proc, /sys), which is not copied",
        ));
    }
    let st = rustix::fs::fstat(fd)?;
    let device = opts.one_filesystem.then_some(st.st_dev);
    let mut w = TreeWriter { tar: tar::Builder::new(out), links: HashMap::new(), device, opts };
    w.tar.mode(tar::HeaderMode::Complete);
    w.tar.follow_symlinks(false);
    match name {
        Some(name) => w.entry(fd, name, &st)?,
        None if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let dir = rustix::fs::openat(fd, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
            w.children(&dir, "")?;
        }
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory")),
    }
    w.tar.into_inner()?.flush()
}

/// Whether `fd` is on a kernel filesystem whose files are not data: procfs, sysfs, and their
/// kin (debugfs, securityfs, tracefs, cgroupfs, bpffs).
fn pseudo(fd: &OwnedFd) -> io::Result<bool> {
    const KERNEL_FS: [i64; 8] =
        [0x9fa0, 0x6265_6572, 0x6462_6720, 0x7363_6673, 0x7472_6163, 0x0027_e0eb, 0x6367_7270, 0xcafe_4a11];
    let f_type = rustix::fs::fstatfs(fd)?.f_type as i64;
    Ok(KERNEL_FS.contains(&f_type))
}

struct TreeWriter<W: Write> {
    tar: tar::Builder<W>,
    /// (device, inode) of files with several links already archived, by their archive path.
    links: HashMap<(u64, u64), String>,
    /// With one file system only: its device; a directory of another is not gone into.
    device: Option<u64>,
    opts: TreeOptions,
}

impl<W: Write> TreeWriter<W> {
    /// Archives the entry `fd` (an `O_PATH` descriptor) as `path`, with its metadata `st`; a
    /// directory with all it holds.
    fn entry(&mut self, fd: &OwnedFd, path: &str, st: &Stat) -> io::Result<()> {
        let mut header = header_of(st);
        if self.opts.strip_setid {
            header.set_mode(st.st_mode & 0o1777);
        }
        let kind = FileType::from_raw_mode(st.st_mode);
        if self.opts.xattrs && matches!(kind, FileType::Directory | FileType::RegularFile) {
            // Through the descriptor's /proc link: the file that is archived, not a name.
            let at = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            if let Some(records) = oci::layer::xattr::records(&at, true)? {
                oci::layer::xattr::append(&mut self.tar, &records)?;
            }
        }
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let dir =
                    rustix::fs::openat(fd, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
                header.set_entry_type(tar::EntryType::Directory);
                self.tar.append_data(&mut header, format!("{path}/"), io::empty())?;
                if self.device.is_some_and(|d| d != st.st_dev) {
                    return Ok(());
                }
                self.children(&dir, &format!("{path}/"))
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        header.set_entry_type(tar::EntryType::Link);
                        header.set_size(0);
                        return self.tar.append_link(&mut header, path, first.clone());
                    }
                    self.links.insert(key, path.to_owned());
                }
                let file = std::fs::File::from(reopen(fd)?);
                header.set_entry_type(tar::EntryType::Regular);
                self.tar.append_data(&mut header, path, Exactly::new(file, st.st_size as u64))
            }
            FileType::Symlink => {
                // readlinkat with an empty path reads the link the O_PATH descriptor is.
                let target = rustix::fs::readlinkat(fd, "", Vec::new())?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                self.tar.append_link(&mut header, path, OsStr::from_bytes(target.as_bytes()))
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let kind = match FileType::from_raw_mode(st.st_mode) {
                    FileType::CharacterDevice => tar::EntryType::Char,
                    FileType::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                header.set_entry_type(kind);
                header.set_size(0);
                header.set_device_major(rustix::fs::major(st.st_rdev))?;
                header.set_device_minor(rustix::fs::minor(st.st_rdev))?;
                self.tar.append_data(&mut header, path, io::empty())
            }
            _ => Ok(()),
        }
    }

    /// Archives what directory `dir` holds, each entry under `prefix`, in name order (the
    /// same tree gives the same archive).
    fn children(&mut self, dir: &OwnedFd, prefix: &str) -> io::Result<()> {
        let dir_device = rustix::fs::fstat(dir)?.st_dev;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir)? {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let name = OsStr::from_bytes(&name);
            let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let child = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
                Ok(c) => c,
                // Gone since the listing (a running container's file): nothing to archive.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let st = rustix::fs::fstat(&child)?;
            // Only a mount point can be on another filesystem than its directory: only there
            // can /proc or /sys begin.
            if st.st_dev != dir_device && pseudo(&child)? {
                // /proc or /sys mounted here: the directory, empty, as a mount point is.
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    let mut header = header_of(&st);
                    header.set_entry_type(tar::EntryType::Directory);
                    let path = format!("{prefix}{}/", name.to_string_lossy());
                    self.tar.append_data(&mut header, path, io::empty())?;
                }
                continue;
            }
            let path = format!("{prefix}{}", name.to_string_lossy());
            self.entry(&child, &path, &st)?;
        }
        Ok(())
    }
}

/// A file's data as exactly `size` bytes, as its header announced: cut where the file grew
/// since, padded with zeros where it shrank.
struct Exactly {
    file: std::io::Take<std::fs::File>,
    left: u64,
}

impl Exactly {
    fn new(file: std::fs::File, size: u64) -> Exactly {
        Exactly { file: std::io::Read::take(file, size), left: size }
    }
}

impl std::io::Read for Exactly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = match self.file.read(buf)? {
            0 => {
                let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                n
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// A readable descriptor of the regular file behind the `O_PATH` descriptor `fd`, opened
/// again through /proc/self/fd (no path is walked, so no symlink can intervene).
fn reopen(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    Ok(rustix::fs::open(path.as_str(), OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY, Mode::empty())?)
}

/// A tar header with the entry's mode, owner, size and modification time.
fn header_of(st: &Stat) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_size(if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile { st.st_size as u64 } else { 0 });
    h.set_mtime(st.st_mtime.max(0) as u64);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_path(p: &std::path::Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    fn listing(tar: &[u8]) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
                (e.path().unwrap().display().to_string(), format!("{:?} {link}", e.header().entry_type()))
            })
            .collect()
    }

    #[test]
    fn a_files_data_is_exactly_the_size_its_header_says() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "0123456789").unwrap();
        // Grown since its header was made: cut, so the extra bytes cannot pass for entries.
        let mut got = Vec::new();
        Exactly::new(std::fs::File::open(&path).unwrap(), 4).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"0123");
        // Shrunk: padded to the size announced.
        let mut got = Vec::new();
        Exactly::new(std::fs::File::open(&path).unwrap(), 14).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"0123456789\0\0\0\0");
    }

    #[test]
    fn kernel_filesystems_are_not_archived_and_set_id_bits_can_be_left_out() {
        let proc_self = rustix::fs::open("/proc/self", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        let e = write_tree(&proc_self, Some("p"), Vec::new(), TreeOptions::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        std::fs::write(&prog, "x").unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o6755)).unwrap();
        let mode = |strip_setid| {
            let mut out = Vec::new();
            write_tree(&open_path(&prog), Some("prog"), &mut out, TreeOptions { strip_setid, ..Default::default() })
                .unwrap();
            let mut a = tar::Archive::new(&out[..]);
            let e = a.entries().unwrap().next().unwrap().unwrap();
            e.header().mode().unwrap()
        };
        assert_eq!((mode(false), mode(true)), (0o6755, 0o755));
    }

    #[test]
    fn a_tree_is_archived_with_its_symlinks_as_links_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::hard_link(root.join("sub/a.txt"), root.join("b.txt")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
        let mut out = Vec::new();
        write_tree(&open_path(&root), Some("out"), &mut out, TreeOptions::default()).unwrap();
        let got = listing(&out);
        let want = [
            ("out/", "Directory "),
            ("out/b.txt", "Regular "),
            ("out/escape", "Symlink /etc/passwd"),
            ("out/sub/", "Directory "),
            ("out/sub/a.txt", "Link out/b.txt"),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
        // The contents of a directory without itself (docker's `SRC/.`).
        let mut out = Vec::new();
        write_tree(&open_path(&root), None, &mut out, TreeOptions::default()).unwrap();
        assert_eq!(listing(&out)[0].0, "b.txt");
        // A symlink given as the tree is archived as itself.
        let mut out = Vec::new();
        write_tree(&open_path(&root.join("escape")), Some("e"), &mut out, TreeOptions::default()).unwrap();
        assert_eq!(listing(&out), [("e".to_owned(), "Symlink /etc/passwd".to_owned())]);
    }
}
