//! A container's volumes ([`crate::volume`]): named from its `-v`/`--mount` flags and its
//! image's `VOLUME` paths when it is configured, made and filled from the image when it is
//! created, counted as in use while it exists, and its anonymous ones removed with it when
//! asked (`rm -v`, `--rm`, a foreground container without a name).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::OFlags;

use super::config::VolumeConfig;
use super::{Config, Result};
use crate::snapshot::Mount;
use crate::volume::spec::clean;
use crate::volume::{self, Source, VolumeArg, Volumes};

/// The mounts of `args` (volume names resolved to their directories, an anonymous volume
/// named afresh), then an anonymous volume for each of the image's `VOLUME` paths that no
/// mount (nor one of the `tmpfs` paths) covers, as docker adds them. Two mounts on one path
/// are refused as docker refuses them, but for the same anonymous volume given twice.
pub fn configs(
    root: &Path,
    args: &[VolumeArg],
    tmpfs: &[String],
    image_volumes: &[String],
) -> Result<Vec<VolumeConfig>> {
    configs_with(root, (args, tmpfs), &[], image_volumes)
}

/// [`configs`] with `borrowed` (`--volumes-from`'s, from [`borrow`]) after the mounts given:
/// each at its own path, unless a mount given takes that path.
pub fn configs_with(
    root: &Path,
    (args, tmpfs): (&[VolumeArg], &[String]),
    borrowed: &[VolumeConfig],
    image_volumes: &[String],
) -> Result<Vec<VolumeConfig>> {
    let vols = Volumes::new(root);
    let volume = |name: String, arg: &VolumeArg, anonymous: bool| VolumeConfig {
        host: vols.data_dir(&name),
        container: arg.container.clone(),
        read_only: arg.read_only,
        recursive: arg.recursive,
        volume: Some(name),
        anonymous,
        nocopy: arg.nocopy,
        from_mount: arg.from_mount,
    };
    let mut args: Vec<&VolumeArg> = args.iter().collect();
    args.dedup_by(|b, a| a.source == Source::Anonymous && *a == *b);
    let tmpfs: Vec<String> = tmpfs.iter().map(|t| clean(t.split_once(':').map_or(t.as_str(), |(p, _)| p))).collect();
    let mut seen: Vec<&str> = tmpfs.iter().map(String::as_str).collect();
    for arg in &args {
        if seen.contains(&arg.container.as_str()) {
            return Err(super::Error::Config(format!("Duplicate mount point: {}", arg.container)));
        }
        seen.push(&arg.container);
    }
    let mut out: Vec<VolumeConfig> = args
        .iter()
        .map(|arg| match &arg.source {
            Source::Host(host) => VolumeConfig {
                host: host.clone(),
                container: arg.container.clone(),
                read_only: arg.read_only,
                recursive: arg.recursive,
                volume: None,
                anonymous: false,
                nocopy: false,
                from_mount: arg.from_mount,
            },
            Source::Named(name) => volume(name.clone(), arg, false),
            Source::Anonymous => volume(super::new_id(), arg, true),
        })
        .collect();
    for v in borrowed {
        if !seen.contains(&v.container.as_str()) {
            seen.push(&v.container);
            out.push(v.clone());
        }
    }
    // The image's are a set; in order, so that inspect shows them the same each time.
    let mut image_volumes: Vec<String> = image_volumes.iter().map(|p| clean(p)).collect();
    image_volumes.sort();
    image_volumes.dedup();
    for path in image_volumes {
        let covered = seen.contains(&path.as_str()) || path == "/";
        if !covered {
            let arg = VolumeArg {
                source: Source::Anonymous,
                container: path,
                read_only: false,
                recursive: Default::default(),
                nocopy: false,
                from_mount: false,
            };
            out.push(volume(super::new_id(), &arg, true));
        }
    }
    Ok(out)
}

/// Makes each volume of `config` that is missing, then fills each empty one (unless
/// `nocopy`) with what the image has at its path: its files, owners and modes, and the
/// directory's own owner and mode, as docker does when it creates a container. `rootfs` is
/// the container's root, mounted for the copy in a private mount namespace. Returns the
/// volumes [held](Volumes::hold) from the moment each was made or found: a container without
/// a record keeps them while it runs.
pub fn prepare(root: &Path, config: &Config, rootfs: &[Mount]) -> Result<Vec<File>> {
    let vols = Volumes::new(root);
    let (mut held, mut empty) = (Vec::new(), Vec::new());
    for v in &config.volumes {
        let Some(name) = &v.volume else { continue };
        let labels =
            if v.anonymous { BTreeMap::from([(volume::ANONYMOUS.to_owned(), String::new())]) } else { BTreeMap::new() };
        held.push(vols.create_held(name, labels)?.1);
        if !v.nocopy && is_unfilled(&vols, name)? {
            empty.push((v.container.as_str(), name.as_str()));
        }
    }
    let Some(rootfs) = rootfs.first().filter(|_| !empty.is_empty()) else { return Ok(held) };
    let target = super::containers_dir(root).join(".rootfs");
    std::fs::create_dir_all(&target).map_err(super::io_err("create", &target))?;
    let filled = crate::sandbox::in_private_mounts(|| {
        rootfs.mount(&target)?;
        let image = open(&target, OFlags::PATH | OFlags::DIRECTORY).map_err(super::io_err("open", &target))?;
        for (path, name) in &empty {
            // Another container may be filling it: one at a time, and only while empty.
            let _filling = vols.fill_lock(name)?;
            let data = vols.data_dir(name);
            if is_empty(&data)? {
                fill(&image, path, &data)?;
            }
        }
        Ok::<(), super::Error>(())
    });
    filled.map_err(super::io_err("mount the rootfs of", &target))??;
    Ok(held)
}

/// `--volumes-from CONTAINER[:ro|:rw]`: container `from`'s binds and volumes, at the same
/// paths, each read-only as it was there, or all as `mode` says. Never filled (they are the
/// other container's) and never anonymous here (they are not this container's to remove).
pub fn borrow(from: &super::Container, mode: Option<&str>) -> Result<Vec<VolumeConfig>> {
    let read_only = match mode {
        None => None,
        Some("ro") => Some(true),
        Some("rw") => Some(false),
        Some(m) => return Err(super::Error::Config(format!("invalid --volumes-from mode {m:?}: ro or rw"))),
    };
    Ok(from
        .config
        .volumes
        .iter()
        .map(|v| VolumeConfig {
            read_only: read_only.unwrap_or(v.read_only),
            anonymous: false,
            nocopy: true,
            ..v.clone()
        })
        .collect())
}

/// Whether volume `name` is still empty, once any container filling it has finished: seen
/// while another fills it, it is neither empty nor whole, and this container would start on
/// part of the image's files (a CI run saw 3 of 4).
fn is_unfilled(vols: &Volumes, name: &str) -> Result<bool> {
    let _filling = vols.fill_lock(name)?;
    is_empty(&vols.data_dir(name))
}

fn is_empty(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir).map_err(super::io_err("read", dir))?.next().is_none())
}

/// Copies what the image (`image`, its root) has at `path` into the empty volume directory
/// `data`; nothing when the image has nothing there, and an error when it has a file.
fn fill(image: &OwnedFd, path: &str, data: &Path) -> Result<()> {
    let src = match crate::sys::open_in_root(image, path, OFlags::PATH | OFlags::CLOEXEC) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(super::io_err("open", Path::new(path))(e.into())),
    };
    let st = rustix::fs::fstat(&src).map_err(|e| super::io_err("stat", Path::new(path))(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Err(super::Error::Config(format!("cannot mount volume over existing file, file exists {path}")));
    }
    let dest = open(data, OFlags::RDONLY | OFlags::DIRECTORY).map_err(super::io_err("open", data))?;
    super::copy::copy_contents(&src, &dest, path)?;
    let err = |e: rustix::io::Errno| super::io_err("set the owner and mode of", data)(e.into());
    let (uid, gid) = (rustix::fs::Uid::from_raw(st.st_uid), rustix::fs::Gid::from_raw(st.st_gid));
    rustix::fs::fchown(&dest, Some(uid), Some(gid)).map_err(err)?;
    rustix::fs::fchmod(&dest, rustix::fs::Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(err)
}

fn open(path: &Path, flags: OFlags) -> std::io::Result<OwnedFd> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, rustix::fs::Mode::empty()).map_err(Into::into)
}

/// The names of the containers whose records name volume `name`.
pub fn users(root: &Path, name: &str) -> Result<Vec<String>> {
    Ok(super::list(root)?.into_iter().filter(|c| uses(c, name)).map(|c| c.config.name).collect())
}

/// How many container records name each volume (docker's `Links`); a volume no record
/// names is not in the map.
pub fn links(root: &Path) -> Result<std::collections::HashMap<String, usize>> {
    let mut counts = std::collections::HashMap::new();
    for c in super::list(root)? {
        let mut names: Vec<&str> = c.config.volumes.iter().filter_map(|v| v.volume.as_deref()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            *counts.entry(name.to_owned()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn uses(c: &super::Container, name: &str) -> bool {
    c.config.volumes.iter().any(|v| v.volume.as_deref() == Some(name))
}

/// [`Volumes::remove`] with the containers of `root` as the users.
pub fn remove(root: &Path, name: &str) -> Result<()> {
    Volumes::new(root).remove(name, |n| users(root, n))
}

/// Removes the anonymous volumes among `volumes` (a removed container's) that no other
/// container uses; returns what could not be removed, for a warning. One in use is kept,
/// as docker keeps it.
pub fn remove_anonymous(root: &Path, volumes: &[VolumeConfig]) -> Vec<String> {
    let vols = Volumes::new(root);
    let mut failed = Vec::new();
    for name in volumes.iter().filter(|v| v.anonymous).filter_map(|v| v.volume.as_deref()) {
        match vols.get(name).map(|v| v.anonymous()) {
            Ok(true) => {}
            Ok(false) | Err(volume::Error::NotFound(_)) => continue,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        }
        match remove(root, name) {
            Ok(()) | Err(super::Error::Volume(volume::Error::NotFound(_) | volume::Error::InUse { .. })) => {}
            Err(e) => failed.push(e.to_string()),
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_volume_is_anonymous_unless_a_mount_covers_its_path() {
        let root = Path::new("/r");
        let args: Vec<VolumeArg> =
            ["data:/var/lib/db/", "/srv:/srv:ro", "/cache", "/cache"].iter().map(|s| s.parse().unwrap()).collect();
        let image = ["/var/lib/db".to_owned(), "/logs".to_owned(), "/srv/.".to_owned(), "/run".to_owned()];
        let got = configs(root, &args, &["/run:size=1m".to_owned()], &image).unwrap();
        assert_eq!(got.len(), 4, "one /cache, and no volume under the tmpfs: {got:?}");
        assert_eq!(got[0].volume.as_deref(), Some("data"));
        assert_eq!(got[0].host, Path::new("/r/volumes/data/_data"));
        assert!(!got[0].anonymous);
        assert_eq!((got[1].volume.as_ref(), got[1].read_only), (None, true));
        assert!(got[2].anonymous && got[2].container == "/cache");
        assert!(got[3].anonymous && got[3].container == "/logs", "only /logs is left to the image");
        assert_ne!(got[2].volume, got[3].volume, "each anonymous volume is new");
        let twice: Vec<VolumeArg> = ["a1:/x", "/h:/x/"].iter().map(|s| s.parse().unwrap()).collect();
        let e = configs(root, &twice, &[], &[]).unwrap_err().to_string();
        assert_eq!(e, "Duplicate mount point: /x");
        let e = configs(root, &twice[..1], &["/x".to_owned()], &[]).unwrap_err().to_string();
        assert_eq!(e, "Duplicate mount point: /x", "a tmpfs counts");
    }
}
