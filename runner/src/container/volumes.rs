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
use crate::volume::{self, Source, VolumeArg, Volumes};

/// The mounts of `args` (volume names resolved to their directories, an anonymous volume
/// named afresh), then an anonymous volume for each of the image's `VOLUME` paths that no
/// mount covers, as docker adds them.
pub fn configs(root: &Path, args: &[VolumeArg], image_volumes: &[String]) -> Vec<VolumeConfig> {
    let vols = Volumes::new(root);
    let volume = |name: String, arg: &VolumeArg, anonymous: bool| VolumeConfig {
        host: vols.data_dir(&name),
        container: arg.container.clone(),
        read_only: arg.read_only,
        volume: Some(name),
        anonymous,
        nocopy: arg.nocopy,
    };
    let mut out: Vec<VolumeConfig> = args
        .iter()
        .map(|arg| match &arg.source {
            Source::Host(host) => VolumeConfig {
                host: host.clone(),
                container: arg.container.clone(),
                read_only: arg.read_only,
                volume: None,
                anonymous: false,
                nocopy: false,
            },
            Source::Named(name) => volume(name.clone(), arg, false),
            Source::Anonymous => volume(super::new_id(), arg, true),
        })
        .collect();
    // The image's are a set; in order, so that inspect shows them the same each time.
    let mut image_volumes: Vec<&String> = image_volumes.iter().collect();
    image_volumes.sort();
    for path in image_volumes {
        if !out.iter().any(|v| clean(&v.container) == clean(path)) && !clean(path).is_empty() {
            let arg = VolumeArg { source: Source::Anonymous, container: path.clone(), read_only: false, nocopy: false };
            out.push(volume(super::new_id(), &arg, true));
        }
    }
    out
}

/// A container path without empty or `.` components, to compare mount points.
fn clean(path: &str) -> String {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

/// Makes each volume of `config` that is missing, then fills each empty one (unless
/// `nocopy`) with what the image has at its path: its files, owners and modes, and the
/// directory's own owner and mode, as docker does when it creates a container. `rootfs` is
/// the container's root, mounted for the copy in a private mount namespace.
pub fn prepare(root: &Path, config: &Config, rootfs: &[Mount]) -> Result<()> {
    let vols = Volumes::new(root);
    let mut empty = Vec::new();
    for v in &config.volumes {
        let Some(name) = &v.volume else { continue };
        let labels =
            if v.anonymous { BTreeMap::from([(volume::ANONYMOUS.to_owned(), String::new())]) } else { BTreeMap::new() };
        vols.create(name, labels)?;
        let data = vols.data_dir(name);
        let is_empty = std::fs::read_dir(&data).map_err(super::io_err("read", &data))?.next().is_none();
        if is_empty && !v.nocopy {
            empty.push((v.container.as_str(), data));
        }
    }
    let Some(rootfs) = rootfs.first().filter(|_| !empty.is_empty()) else { return Ok(()) };
    let target = super::containers_dir(root).join(".rootfs");
    std::fs::create_dir_all(&target).map_err(super::io_err("create", &target))?;
    let filled = crate::sandbox::in_private_mounts(|| {
        rootfs.mount(&target)?;
        let image = open(&target, OFlags::PATH | OFlags::DIRECTORY).map_err(super::io_err("open", &target))?;
        for (path, data) in &empty {
            fill(&image, path, data)?;
        }
        Ok(())
    });
    filled.map_err(super::io_err("mount the rootfs of", &target))?
}

/// Copies what the image (`image`, its root) has at `path` into the empty volume directory
/// `data`; nothing when the image has no directory there.
fn fill(image: &OwnedFd, path: &str, data: &Path) -> Result<()> {
    let src = match crate::sys::open_in_root(image, path, OFlags::PATH | OFlags::CLOEXEC) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(super::io_err("open", Path::new(path))(e.into())),
    };
    let st = rustix::fs::fstat(&src).map_err(|e| super::io_err("stat", Path::new(path))(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Ok(());
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
    Ok(super::list(root)?
        .into_iter()
        .filter(|c| c.config.volumes.iter().any(|v| v.volume.as_deref() == Some(name)))
        .map(|c| c.config.name)
        .collect())
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

/// Marks the volumes of `config` in use while the returned files are open: for a container
/// without a record, which no [`users`] would find.
pub fn hold(root: &Path, config: &Config) -> Result<Vec<File>> {
    let vols = Volumes::new(root);
    let held = config.volumes.iter().filter_map(|v| v.volume.as_deref()).map(|name| vols.hold(name));
    Ok(held.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_volume_is_anonymous_unless_a_mount_covers_its_path() {
        let root = Path::new("/r");
        let args: Vec<VolumeArg> =
            ["data:/var/lib/db/", "/srv:/srv:ro", "/cache"].iter().map(|s| s.parse().unwrap()).collect();
        let image = ["/var/lib/db".to_owned(), "/logs".to_owned(), "/srv/.".to_owned()];
        let got = configs(root, &args, &image);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].volume.as_deref(), Some("data"));
        assert_eq!(got[0].host, Path::new("/r/volumes/data/_data"));
        assert!(!got[0].anonymous);
        assert_eq!((got[1].volume.as_ref(), got[1].read_only), (None, true));
        assert!(got[2].anonymous && got[2].container == "/cache");
        assert!(got[3].anonymous && got[3].container == "/logs", "only /logs is left to the image");
        assert_ne!(got[2].volume, got[3].volume, "each anonymous volume is new");
    }
}
