//! `--device HOST[:CONTAINER[:PERMS]]`: a host device given to a container, as docker gives
//! one. berth sets no device cgroup: its sandbox binds the host's node onto the container
//! path, a mount of its own that the container's nodev mounts do not cover; a runc or crun
//! bundle lists it under `linux.devices`, with a device cgroup rule that allows it.

use std::path::{Path, PathBuf};

/// A device node to give the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The host's node, symlinks resolved.
    pub host: PathBuf,
    /// Where the container sees it (absolute).
    pub container: String,
    /// `c` or `b`.
    pub kind: char,
    /// The major device number.
    pub major: u32,
    /// The minor device number.
    pub minor: u32,
    /// The host node's permission bits, as docker copies them.
    pub mode: u32,
    /// The host node's owner.
    pub uid: u32,
    /// The host node's group.
    pub gid: u32,
    /// docker's PERMS (`rwm` by default): a runtime's device cgroup rule.
    pub access: String,
    /// One of the host's nodes that `--privileged` gives: one gone by the start (a device
    /// unplugged) is left out, where a `--device` fails the start.
    pub optional: bool,
}

/// A `--device` that cannot be given.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(String);

/// Whether `s` is docker's device permissions: some of `r`, `w` and `m`, each once.
fn is_mode(s: &str) -> bool {
    !s.is_empty() && s.len() <= 3 && s.chars().all(|c| "rwm".contains(c)) && {
        let mut seen = s.chars().collect::<Vec<_>>();
        seen.sort_unstable();
        seen.dedup();
        seen.len() == s.len()
    }
}

/// The host path, container path and permissions of a `--device` argument, by docker's
/// rules: the container path defaults to the host's, and a second field made only of
/// `r`, `w` and `m` is the permissions. berth has no device cgroup to hold a device to less
/// than read and write, so permissions without both are refused rather than ignored.
pub fn parse(arg: &str) -> Result<(String, String, String), DeviceError> {
    let parts: Vec<&str> = arg.splitn(4, ':').collect();
    let (host, second, third) = match parts[..] {
        [h] => (h, None, None),
        [h, s] => (h, Some(s), None),
        [h, s, t] => (h, Some(s), Some(t)),
        _ => return Err(DeviceError(format!("invalid device specification: {arg}"))),
    };
    let (container, perms) = match (second, third) {
        (Some(s), None) if is_mode(s) => (host, s),
        (Some(s), Some(t)) => (s, t),
        (Some(s), None) => (s, "rwm"),
        (None, _) => (host, "rwm"),
    };
    let container = if container.is_empty() { host } else { container };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(DeviceError(format!("invalid device specification: {arg}: paths must be absolute")));
    }
    if !is_mode(perms) {
        return Err(DeviceError(format!("invalid device mode: {perms}")));
    }
    if !(perms.contains('r') && perms.contains('w')) {
        return Err(DeviceError(format!(
            "--device {arg}: berth sets no device cgroup to hold a device to {perms:?}; give rw or rwm, or leave the \
             permissions out"
        )));
    }
    Ok((host.to_owned(), container.to_owned(), perms.to_owned()))
}

/// The devices a `--device` argument gives: the node it names, or every node under the
/// directory it names (at the same place under the container path), as docker's daemon
/// gathers them.
pub fn resolve(arg: &str) -> Result<Vec<Device>, DeviceError> {
    let (host, container, access) = parse(arg)?;
    let gather = |e: std::io::Error| {
        DeviceError(format!("error gathering device information while adding custom device {host:?}: {e}"))
    };
    let real = std::fs::canonicalize(&host).map_err(gather)?;
    let mut out = Vec::new();
    if let Some(d) = node(&real, &container, &access).map_err(gather)? {
        out.push(d);
    } else if real.is_dir() {
        walk(&real, &real, (&container, &access), &mut out).map_err(gather)?;
    } else {
        return Err(gather(std::io::Error::other("not a device node")));
    }
    Ok(out)
}

/// The device at `path`, seen at `container`; `None` when `path` is no device node.
fn node(path: &Path, container: &str, access: &str) -> std::io::Result<Option<Device>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(path)?;
    let kind = match m.file_type() {
        t if t.is_char_device() => 'c',
        t if t.is_block_device() => 'b',
        _ => return Ok(None),
    };
    let (major, minor) = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
    Ok(Some(Device {
        host: path.to_owned(),
        container: container.to_owned(),
        kind,
        major,
        minor,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        access: access.to_owned(),
        optional: false,
    }))
}

/// Directories of the host's /dev that hold no device a container is given: its own pty
/// instance, shared memory and message queues, fd links, and container managers' state.
const NOT_GIVEN_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Nodes the sandbox makes itself (its /dev's six, and the pty multiplexer of its own
/// devpts) or that name the host's console.
const NOT_GIVEN_NODES: [&str; 8] = ["null", "zero", "full", "random", "urandom", "tty", "ptmx", "console"];

/// Every device node of the host's /dev, at the same path, as docker's `--privileged`
/// gives them (runc's host devices: the sandbox's own and the console left out). A node
/// that goes away while it is read is skipped, as is a directory that cannot be read.
pub fn host_all() -> Vec<Device> {
    let mut out = Vec::new();
    host_walk(Path::new("/dev"), &mut out);
    out
}

fn host_walk(dir: &Path, out: &mut Vec<Device>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let top = dir == Path::new("/dev");
    for e in entries {
        let (path, name) = (e.path(), e.file_name());
        let Some(name) = name.to_str() else { continue };
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            if !(top && NOT_GIVEN_DIRS.contains(&name)) {
                host_walk(&path, out);
            }
        } else if !(top && NOT_GIVEN_NODES.contains(&name)) {
            let Some(at) = path.to_str() else { continue };
            if let Ok(Some(d)) = node(&path, at, "rwm") {
                out.push(Device { optional: true, ..d });
            }
        }
    }
}

/// The nodes BuildKit gives a `RUN --security=insecure` step, those of them the host has:
/// kmsg, cuse, fuse, kvm, net/tun, loop-control and the loop devices.
pub fn buildkit_insecure() -> Vec<Device> {
    const NAMED: [&str; 6] = ["kmsg", "cuse", "fuse", "kvm", "net/tun", "loop-control"];
    let named = NAMED.iter().map(|n| format!("/dev/{n}"));
    let mut loops: Vec<(u32, String)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((name.strip_prefix("loop")?.parse().ok()?, format!("/dev/{name}")))
        })
        .collect();
    loops.sort();
    named
        .chain(loops.into_iter().map(|(_, path)| path))
        .filter_map(|path| node(Path::new(&path), &path, "rwm").ok().flatten())
        .collect()
}

/// Every device node under `dir` (not through symlinks), at its place under `container`.
fn walk(top: &Path, dir: &Path, (container, access): (&str, &str), out: &mut Vec<Device>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(top).map_err(std::io::Error::other)?;
        let at = format!("{}/{}", container.trim_end_matches('/'), rel.display());
        if e.file_type()?.is_dir() {
            walk(top, &path, (container, access), out)?;
        } else if let Some(d) = node(&path, &at, access)? {
            out.push(d);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(arg: &str) -> (String, String, String) {
        parse(arg).unwrap_or_else(|e| panic!("{arg}: {e}"))
    }

    #[test]
    fn arguments_are_read_by_dockers_rules() {
        let t = |h: &str, c: &str, p: &str| (h.to_owned(), c.to_owned(), p.to_owned());
        assert_eq!(parsed("/dev/fuse"), t("/dev/fuse", "/dev/fuse", "rwm"));
        assert_eq!(parsed("/dev/sda:/dev/xvdc"), t("/dev/sda", "/dev/xvdc", "rwm"));
        assert_eq!(parsed("/dev/sda:rw"), t("/dev/sda", "/dev/sda", "rw"));
        assert_eq!(parsed("/dev/sda:/dev/xvdc:wrm"), t("/dev/sda", "/dev/xvdc", "wrm"));
        for bad in ["/a:/b:rw:x", "dev/fuse", "/dev/fuse:xvdc", "/a:/b:rx", "/a:/b:rrw", ""] {
            assert!(parse(bad).is_err(), "{bad} is refused");
        }
        // No device cgroup to hold a device to reading only: refused, not ignored.
        let err = parse("/dev/sda:/dev/xvdc:r").unwrap_err().to_string();
        assert!(err.contains("no device cgroup") && err.contains("\"r\""), "{err}");
    }

    #[test]
    fn a_directory_gives_every_node_under_it_and_anything_else_is_refused() {
        // /dev/null is 1:3 on every Linux host; nodes for a directory can be made only as
        // root.
        let null = resolve("/dev/null:/dev/n").unwrap();
        assert_eq!(null.len(), 1);
        let d = &null[0];
        assert_eq!((d.host.as_path(), d.container.as_str()), (Path::new("/dev/null"), "/dev/n"));
        assert_eq!((d.kind, d.major, d.minor, d.mode, d.uid, d.access.as_str()), ('c', 1, 3, 0o666, 0, "rwm"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let arg = format!("{}/file", dir.path().display());
        assert!(resolve(&arg).unwrap_err().to_string().contains("not a device node"));
        if rustix::process::geteuid().is_root() {
            std::fs::create_dir(dir.path().join("sub")).unwrap();
            let mk = |p: &Path, min| {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    p,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(1, min),
                )
                .unwrap()
            };
            mk(&dir.path().join("zero"), 5);
            mk(&dir.path().join("sub/full"), 7);
            let got = resolve(&format!("{}:/dev/d", dir.path().display())).unwrap();
            let at: Vec<(&str, u32)> = got.iter().map(|d| (d.container.as_str(), d.minor)).collect();
            assert_eq!(at, [("/dev/d/sub/full", 7), ("/dev/d/zero", 5)]);
        }
        assert!(resolve("/no/such/device").unwrap_err().to_string().contains("error gathering device information"));
    }
}
