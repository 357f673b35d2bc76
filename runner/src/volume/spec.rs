//! docker's two spellings of a mount, `-v SRC:DEST[:MODES]` and `--mount type=...,KEY=VALUE`,
//! parsed into what the container gets: a host directory, a named volume, an anonymous
//! volume, or a tmpfs.

use std::path::PathBuf;

pub use crate::sandbox::BindRecursive;

/// Where a `-v` or `--mount` mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host path (`/srv/data:/data`, `./out:/out`; absolute once parsed).
    Host(PathBuf),
    /// A named volume, made on first use (`data:/data`).
    Named(String),
    /// A new volume for this container alone (`-v /data`, an image's `VOLUME`).
    Anonymous,
}

/// A volume or bind mount as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeArg {
    /// What is mounted.
    pub source: Source,
    /// The absolute path inside the container.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// What becomes of the mounts below a bind's source (`--mount`'s `bind-recursive`).
    pub recursive: BindRecursive,
    /// `nocopy`: an empty volume is not filled with what the image has at the path.
    pub nocopy: bool,
    /// Given with `--mount`: a bind's source must exist at every start, and an anonymous
    /// volume is not one of the container's `Config.Volumes` (docker's distinction).
    pub from_mount: bool,
}

/// One `--mount`: a volume or bind, or a tmpfs in `--tmpfs`'s `PATH:OPTIONS` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountArg {
    /// `type=bind` or `type=volume`.
    Volume(VolumeArg),
    /// `type=tmpfs`.
    Tmpfs(String),
}

/// The modes `-v` takes that change nothing here: SELinux relabelling (`z`, `Z`; this host
/// has no SELinux policy for berth to label for) and Docker Desktop's file-sharing hints.
const NO_OP_MODES: [&str; 5] = ["z", "Z", "consistent", "cached", "delegated"];

/// Mount propagation modes: only the default (private) is offered.
const PROPAGATION: [&str; 6] = ["shared", "rshared", "slave", "rslave", "private", "rprivate"];

impl std::str::FromStr for VolumeArg {
    type Err = String;

    /// `-v`: `DEST` (anonymous), `SRC:DEST` or `SRC:DEST:MODES`, where SRC is an absolute or
    /// `.`-relative host path or a volume name, and MODES a comma list of `ro`, `rw`,
    /// `nocopy` (volumes only), the no-op modes and `private`/`rprivate`.
    fn from_str(s: &str) -> Result<VolumeArg, String> {
        let bad = |why: &str| format!("invalid volume specification {s:?}: {why}");
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dest, modes) = match parts.as_slice() {
            [dest] => (None, *dest, ""),
            [src, dest] => (Some(*src), *dest, ""),
            [src, dest, modes] => (Some(*src), *dest, *modes),
            _ => return Err(bad("expected [SOURCE:]DESTINATION[:MODES]")),
        };
        let source = match src {
            None => Source::Anonymous,
            Some(src) => source(src).map_err(|e| bad(&e))?,
        };
        let container = destination(dest).map_err(|e| bad(&e))?;
        let (mut read_only, mut nocopy, mut rw) = (false, false, false);
        for mode in modes.split(',').filter(|m| !m.is_empty()) {
            match mode {
                "ro" => read_only = true,
                "rw" => rw = true,
                "nocopy" if matches!(source, Source::Host(_)) => {
                    return Err(bad("nocopy is for volumes, not host paths"))
                }
                "nocopy" => nocopy = true,
                m if NO_OP_MODES.contains(&m) || m == "private" || m == "rprivate" => {}
                m if PROPAGATION.contains(&m) => {
                    return Err(bad(&format!("mount propagation {m:?} is not supported (only rprivate)")))
                }
                m => return Err(bad(&format!("invalid mode {m:?}"))),
            }
        }
        if read_only && rw {
            return Err(bad("both ro and rw"));
        }
        Ok(VolumeArg { source, container, read_only, recursive: BindRecursive::Enabled, nocopy, from_mount: false })
    }
}

/// A `-v` or `--mount` source: a host path (made absolute) or a volume name.
fn source(src: &str) -> Result<Source, String> {
    if src.starts_with('/') {
        return Ok(Source::Host(PathBuf::from(src)));
    }
    if src.starts_with('.') {
        // docker's CLI (23 and later) takes `./dir` and `../dir` as host paths.
        let abs = std::path::absolute(src).map_err(|e| format!("resolve {src}: {e}"))?;
        return Ok(Source::Host(abs));
    }
    super::check_name(src).map_err(|e| e.to_string())?;
    Ok(Source::Named(src.to_owned()))
}

/// A mount's destination: absolute, made clean (as Go's `filepath.Clean`, docker's), not `/`
/// and not under `/proc`, whose files are the kernel's.
fn destination(dest: &str) -> Result<String, String> {
    if !dest.starts_with('/') {
        return Err(format!("the destination {dest:?} is not an absolute path"));
    }
    let dest = clean(dest);
    if dest == "/" {
        return Err("destination can't be '/'".into());
    }
    if dest == "/proc" || dest.starts_with("/proc/") {
        return Err(format!("{dest} is the kernel's (procfs): nothing may be mounted there"));
    }
    Ok(dest)
}

/// An absolute container path made clean: no empty or `.` components, `..` taken lexically
/// (never above `/`), no trailing `/`.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

impl std::str::FromStr for MountArg {
    type Err = String;

    /// `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly][,volume-nocopy]
    /// [,bind-recursive=enabled|disabled|writable|readonly][,tmpfs-size=N][,tmpfs-mode=OCTAL]`,
    /// with docker's aliases (`src`, `dst`, `destination`, `ro`, `bind-nonrecursive`). A
    /// bind's source must exist, as docker's `--mount` insists.
    fn from_str(s: &str) -> Result<MountArg, String> {
        let bad = |why: String| format!("invalid --mount {s:?}: {why}");
        let mut kind = "volume";
        let (mut src, mut dest, mut read_only, mut nocopy) = (None, None, false, false);
        let (mut recursive, mut nonrecursive) = (None, None);
        let mut tmpfs = Vec::new();
        for field in s.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = field.split_once('=').map_or((field, None), |(k, v)| (k, Some(v)));
            let flag = || value.map_or(Ok(true), parse_bool).map_err(|e| bad(format!("{key}: {e}")));
            let text = || value.ok_or_else(|| bad(format!("{key} needs a value")));
            match key {
                "type" => kind = text()?,
                "source" | "src" => src = Some(text()?),
                "target" | "destination" | "dst" => dest = Some(text()?),
                "readonly" | "ro" => read_only = flag()?,
                "volume-nocopy" => nocopy = flag()?,
                "bind-recursive" => recursive = Some(text()?.parse().map_err(bad)?),
                // docker's older (deprecated) spelling of bind-recursive=disabled.
                "bind-nonrecursive" => nonrecursive = Some(flag()?),
                "tmpfs-size" => tmpfs.push(format!("size={}", text()?)),
                "tmpfs-mode" => tmpfs.push(format!("mode={}", text()?)),
                "bind-propagation" if matches!(value, Some("rprivate" | "private")) => {}
                "bind-propagation" => {
                    return Err(bad(format!("mount propagation {:?} is not supported (only rprivate)", text()?)))
                }
                "consistency" => {}
                _ => return Err(bad(format!("unexpected key {key:?}"))),
            }
        }
        let dest = destination(dest.ok_or_else(|| bad("a target is required".into()))?).map_err(bad)?;
        if kind != "tmpfs" && !tmpfs.is_empty() {
            return Err(bad("tmpfs-size and tmpfs-mode are for type=tmpfs".into()));
        }
        if kind != "bind" && (recursive.is_some() || nonrecursive.is_some()) {
            return Err(bad("bind-recursive is for type=bind".into()));
        }
        let recursive = match (recursive, nonrecursive) {
            (Some(_), Some(_)) => {
                return Err(bad("bind-recursive and bind-nonrecursive: give bind-recursive alone".into()))
            }
            (None, Some(true)) => Some(BindRecursive::Disabled),
            (given, _) => given,
        };
        let recursive = recursive.unwrap_or_default();
        if matches!(recursive, BindRecursive::Writable | BindRecursive::Readonly) && !read_only {
            return Err(bad(format!("bind-recursive={recursive:?} is for a readonly bind").to_lowercase()));
        }
        let source = match (kind, src) {
            ("tmpfs", None) => {
                let opts = if read_only { tmpfs.into_iter().chain(["ro".into()]).collect() } else { tmpfs };
                return Ok(MountArg::Tmpfs(if opts.is_empty() { dest } else { format!("{dest}:{}", opts.join(",")) }));
            }
            ("tmpfs", Some(_)) => return Err(bad("a tmpfs has no source".into())),
            ("bind", None) => return Err(bad("a bind needs a source".into())),
            ("bind", Some(src)) => match source(src).map_err(bad)? {
                Source::Host(p) if nocopy => {
                    return Err(bad(format!("volume-nocopy is for volumes, not {}", p.display())))
                }
                Source::Host(p) if !p.exists() => {
                    return Err(bad(format!("bind source path does not exist: {}", p.display())))
                }
                Source::Host(p) => Source::Host(p),
                _ => return Err(bad(format!("a bind's source must be a path: {src}"))),
            },
            ("volume", None) => Source::Anonymous,
            ("volume", Some(src)) => match source(src).map_err(bad)? {
                Source::Named(n) => Source::Named(n),
                _ => return Err(bad(format!("a volume's source must be a name: {src}"))),
            },
            (other, _) => return Err(bad(format!("type {other:?} is not supported (bind, volume or tmpfs)"))),
        };
        Ok(MountArg::Volume(VolumeArg { source, container: dest, read_only, recursive, nocopy, from_mount: true }))
    }
}

/// A boolean as Go's strconv reads it, as docker's `--mount` takes it.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Result<VolumeArg, String> {
        s.parse()
    }

    #[test]
    fn dash_v_tells_paths_names_and_anonymous_volumes_apart() {
        let host = v("/srv/data:/data:ro").unwrap();
        assert_eq!(host.source, Source::Host("/srv/data".into()));
        assert!(host.read_only && !host.nocopy);
        let named = v("pgdata:/var/lib/postgresql/data:rw,nocopy,z").unwrap();
        assert_eq!(named.source, Source::Named("pgdata".into()));
        assert!(!named.read_only && named.nocopy);
        assert_eq!(named.container, "/var/lib/postgresql/data");
        assert_eq!(v("/cache").unwrap().source, Source::Anonymous);
        assert_eq!(v("v1:/x/../y/./z/").unwrap().container, "/y/z", "made clean, as docker's");
        let rel = v("./out:/out").unwrap();
        assert_eq!(rel.source, Source::Host(std::env::current_dir().unwrap().join("out")));
    }

    #[test]
    fn dash_v_refuses_what_docker_refuses() {
        for (bad, why) in [
            ("data", "not an absolute path"),
            ("a:b:c:d", "expected"),
            ("vx:/", "destination can't be '/'"),
            ("-x:/data", "invalid volume name"),
            ("a/b:/data", "invalid volume name"),
            ("/h:/c:nocopy", "not host paths"),
            ("v1:/c:rshared", "propagation"),
            ("v1:/c:ro,rw", "both ro and rw"),
            ("v1:/c:bogus", "invalid mode"),
            ("v1:data", "not an absolute path"),
            ("v1:/proc/sys", "kernel's"),
            ("v1:/x/..", "destination can't be '/'"),
        ] {
            let e = v(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn dash_dash_mount_takes_dockers_keys() {
        let m = |s: &str| s.parse::<MountArg>();
        assert_eq!(
            m("type=volume,src=cache,dst=/cache,readonly,volume-nocopy=true").unwrap(),
            MountArg::Volume(VolumeArg {
                source: Source::Named("cache".into()),
                container: "/cache".into(),
                read_only: true,
                recursive: BindRecursive::Enabled,
                nocopy: true,
                from_mount: true
            })
        );
        let recursion = |s: &str| match m(s).unwrap() {
            MountArg::Volume(v) => (v.read_only, v.recursive),
            other => panic!("{other:?}"),
        };
        assert_eq!(recursion("type=bind,src=/tmp,dst=/x,ro"), (true, BindRecursive::Enabled));
        assert_eq!(recursion("type=bind,src=/tmp,dst=/x,ro,bind-recursive=writable"), (true, BindRecursive::Writable));
        assert_eq!(recursion("type=bind,src=/tmp,dst=/x,ro,bind-recursive=readonly"), (true, BindRecursive::Readonly));
        assert_eq!(recursion("type=bind,src=/tmp,dst=/x,bind-recursive=disabled"), (false, BindRecursive::Disabled));
        assert_eq!(recursion("type=bind,src=/tmp,dst=/x,bind-nonrecursive"), (false, BindRecursive::Disabled));
        assert_eq!(recursion("type=bind,src=/tmp,dst=/x,bind-nonrecursive=false"), (false, BindRecursive::Enabled));
        let anon = m("target=/scratch").unwrap();
        assert!(matches!(anon, MountArg::Volume(VolumeArg { source: Source::Anonymous, .. })));
        let bind = m("type=bind,source=/tmp,target=/host-tmp,ro=false").unwrap();
        assert!(matches!(bind, MountArg::Volume(VolumeArg { source: Source::Host(_), read_only: false, .. })));
        assert_eq!(
            m("type=tmpfs,dst=/run,tmpfs-size=64m,tmpfs-mode=1770").unwrap(),
            MountArg::Tmpfs("/run:size=64m,mode=1770".into())
        );
        assert_eq!(m("type=tmpfs,target=/t").unwrap(), MountArg::Tmpfs("/t".into()));
        for (bad, why) in [
            ("type=bind,src=/no/such/dir/here,dst=/x", "bind source path does not exist"),
            ("type=bind,dst=/x", "needs a source"),
            ("type=volume,src=/tmp,dst=/x", "must be a name"),
            ("type=npipe,dst=/x", "not supported"),
            ("type=volume,src=v1", "target is required"),
            ("type=volume,src=v1,dst=/x,colour=red", "unexpected key"),
            ("type=volume,src=v1,dst=/x,readonly=maybe", "not a boolean"),
            ("type=volume,src=v1,dst=/x,tmpfs-size=1m", "for type=tmpfs"),
            ("type=bind,src=/tmp,dst=/x,bind-propagation=shared", "propagation"),
            ("type=bind,src=/tmp,dst=/x,ro,bind-recursive=sometimes", "enabled, disabled, writable or readonly"),
            ("type=bind,src=/tmp,dst=/x,bind-recursive=writable", "is for a readonly bind"),
            ("type=bind,src=/tmp,dst=/x,bind-recursive=readonly", "is for a readonly bind"),
            ("type=volume,src=v1,dst=/x,bind-recursive=disabled", "for type=bind"),
            ("type=bind,src=/tmp,dst=/x,ro,bind-nonrecursive,bind-recursive=writable", "give bind-recursive alone"),
        ] {
            let e = m(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
