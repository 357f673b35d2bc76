//! Volumes: directories berth keeps apart from every container, as docker's `local` driver
//! keeps them, so that data outlives the containers that write it (`-v NAME:/path`), and the
//! anonymous volumes an image's `VOLUME` (or `-v /path`) asks for.
//!
//! ```text
//! $BERTH_ROOT/volumes/
//!   .lock                 flock: held exclusively to create or remove a volume
//!   NAME/volume.json      Volume: when it was made, its labels
//!   NAME/_data/           what containers mount; locked shared by a container without a record
//!   .new-NAME-N/          a volume being made (renamed to NAME once complete)
//!   .gone-NAME-N/         a volume being removed (renamed away first, so it is gone at once)
//! ```
//!
//! A volume is in use while a container's record names it, or while a process holds its
//! `_data` locked ([`Volumes::hold`]: a foreground container without a name, which has no
//! record). [`Volumes::remove`] refuses a volume in use, as docker does.

pub mod spec;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

pub use spec::{BindRecursive, MountArg, Source, VolumeArg};

/// The label that marks an anonymous volume, docker's (23 and later): `volume prune`
/// removes these unless `--all`, and `rm -v` removes a container's.
pub const ANONYMOUS: &str = "com.docker.volume.anonymous";

/// Why a volume command failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No volume has that name.
    #[error("no such volume: {0}")]
    NotFound(String),
    /// A name docker would refuse.
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least two characters")]
    InvalidName(String),
    /// A container uses it.
    #[error("remove {name}: volume is in use - [{}]", users.join(", "))]
    InUse {
        /// The volume.
        name: String,
        /// The containers that use it.
        users: Vec<String>,
    },
    /// The store failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { op, path: path.to_owned(), source }
}

/// A volume, as `volume inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its unique name (64 hex digits for an anonymous one).
    pub name: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// `--label` pairs, and [`ANONYMOUS`] on an anonymous one.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Volume {
    /// Whether it was made for one container (`VOLUME`, `-v /path`), not by name.
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS)
    }
}

/// docker's rule for a volume's name: a letter or digit, then at least one more of letters,
/// digits and `_.-`; at most 255 bytes (a directory name).
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest: Vec<char> = chars.collect();
    if !first_ok
        || rest.is_empty()
        || name.len() > 255
        || !rest.iter().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
    {
        return Err(Error::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// The volumes of one store.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

impl Volumes {
    /// The volumes of the store at `root`.
    pub fn new(root: &Path) -> Volumes {
        Volumes { dir: root.join("volumes") }
    }

    /// Where volume `name`'s contents live: the source of its mounts.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Makes volume `name` with `labels`, or returns the one of that name (`false`: it was
    /// there), as docker's `volume create` and `-v NAME:...` do.
    pub fn create(&self, name: &str, labels: BTreeMap<String, String>) -> Result<(Volume, bool)> {
        let lock = self.lock()?;
        self.create_locked(name, labels, &lock)
    }

    /// [`Volumes::create`], and the volume [held](Volumes::hold) before the volumes' lock is
    /// let go, so that no `volume rm` or `prune` can take it from the caller in between.
    pub fn create_held(&self, name: &str, labels: BTreeMap<String, String>) -> Result<(Volume, File)> {
        let lock = self.lock()?;
        let (volume, _) = self.create_locked(name, labels, &lock)?;
        Ok((volume, self.hold(name)?))
    }

    fn create_locked(&self, name: &str, labels: BTreeMap<String, String>, _lock: &File) -> Result<(Volume, bool)> {
        check_name(name)?;
        match self.get(name) {
            Err(Error::NotFound(_)) => {}
            found => return found.map(|v| (v, false)),
        }
        let volume = Volume {
            name: name.to_owned(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            labels,
        };
        let tmp = self.dir.join(format!(".new-{name}-{}", nanos()));
        let data = tmp.join("_data");
        let meta = tmp.join("volume.json");
        let made = (|| {
            std::fs::create_dir_all(&data).map_err(io_err("create", &data))?;
            // docker's 0755 root, whatever the caller's umask.
            std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err("chmod", &data))?;
            let json = serde_json::to_vec_pretty(&volume).map_err(|e| io_err("encode", &meta)(e.into()))?;
            std::fs::write(&meta, json).map_err(io_err("write", &meta))?;
            std::fs::rename(&tmp, self.dir.join(name)).map_err(io_err("create", &tmp))
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        made.map(|()| (volume, true))
    }

    /// Locks volume `name` for filling: one container at a time checks that it is empty and
    /// fills it, so a second sees it full, never half made. Held while the file is open.
    pub fn fill_lock(&self, name: &str) -> Result<File> {
        let dir = self.dir.join(name);
        let f = open_dir(&dir).map_err(io_err("open", &dir))?;
        flock(&f, FlockOperation::LockExclusive).map_err(|e| io_err("lock", &dir)(e.into()))?;
        Ok(f)
    }

    /// Volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume> {
        if check_name(name).is_err() {
            return Err(Error::NotFound(name.to_owned()));
        }
        let meta = self.dir.join(name).join("volume.json");
        let text = match std::fs::read(&meta) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(name.to_owned())),
            read => read.map_err(io_err("read", &meta))?,
        };
        serde_json::from_slice(&text).map_err(|e| io_err("read", &meta)(e.into()))
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            read => read.map_err(io_err("read", &self.dir))?,
        };
        let mut volumes = Vec::new();
        for entry in entries {
            let name = entry.map_err(io_err("read", &self.dir))?.file_name();
            let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else { continue };
            match self.get(name) {
                Ok(v) => volumes.push(v),
                // Removed meanwhile.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Removes volume `name` and all it holds, unless `users` (given the name, under the
    /// volumes' lock) names a container that uses it or a running container holds it.
    pub fn remove<E: From<Error>>(
        &self,
        name: &str,
        users: impl FnOnce(&str) -> Result<Vec<String>, E>,
    ) -> Result<(), E> {
        let lock = self.lock()?;
        self.get(name)?;
        let users = users(name)?;
        if !users.is_empty() {
            return Err(Error::InUse { name: name.to_owned(), users }.into());
        }
        let data = self.data_dir(name);
        let held = match open_dir(&data) {
            Ok(dir) => flock(&dir, FlockOperation::NonBlockingLockExclusive).is_err(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("open", &data)(e).into()),
        };
        if held {
            return Err(Error::InUse { name: name.to_owned(), users: vec!["a running container".into()] }.into());
        }
        let gone = self.dir.join(format!(".gone-{name}-{}", nanos()));
        let here = self.dir.join(name);
        std::fs::rename(&here, &gone).map_err(io_err("remove", &here))?;
        drop(lock);
        Ok(std::fs::remove_dir_all(&gone).map_err(io_err("remove", &gone))?)
    }

    /// Locks volume `name` as in use for as long as the returned file is open (a container
    /// without a record holds it while it runs).
    pub fn hold(&self, name: &str) -> Result<File> {
        let data = self.data_dir(name);
        let dir = open_dir(&data).map_err(io_err("open", &data))?;
        flock(&dir, FlockOperation::LockShared).map_err(|e| io_err("lock", &data)(e.into()))?;
        Ok(dir)
    }

    /// The bytes volume `name` holds (blocks in use, as `du` counts them).
    pub fn size(&self, name: &str) -> u64 {
        crate::snapshot::usage::disk_usage(&self.data_dir(name))
    }

    fn lock(&self) -> Result<File> {
        crate::container::private_dir(&self.dir).map_err(io_err("create", &self.dir))?;
        let path = self.dir.join(".lock");
        let lock = crate::container::open_private(&path, false).map_err(io_err("open", &path))?;
        flock(&lock, FlockOperation::LockExclusive).map_err(|e| io_err("lock", &path)(e.into()))?;
        Ok(lock)
    }
}

fn open_dir(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("berth-vol-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["db", "a.b-c_d", "9x", &"a".repeat(255)] {
            check_name(ok).unwrap();
        }
        for bad in ["", "x", "-x", ".x", "a b", "a/b", "../etc", "é1", &"a".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_volume_is_made_once_listed_and_removed_unless_in_use() {
        let root = scratch("store");
        let vols = Volumes::new(&root);
        let labels = BTreeMap::from([("team".to_owned(), "ci".to_owned())]);
        let (v, made) = vols.create("data", labels.clone()).unwrap();
        assert!(made && v.labels == labels && !v.anonymous());
        std::fs::write(vols.data_dir("data").join("f"), "kept").unwrap();
        let (again, made) = vols.create("data", BTreeMap::new()).unwrap();
        assert!(!made && again == v, "the second create returns the first volume");
        let mode = std::fs::metadata(vols.data_dir("data")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777, 0o755);
        assert_eq!(std::fs::read_to_string(vols.data_dir("data").join("f")).unwrap(), "kept");
        assert_eq!(vols.list().unwrap(), vec![v]);

        let e = vols.remove("data", |_| Ok::<_, Error>(vec!["web".into()])).unwrap_err();
        assert_eq!(e.to_string(), "remove data: volume is in use - [web]");
        let held = vols.hold("data").unwrap();
        assert!(
            matches!(vols.remove("data", |_| Ok::<_, Error>(vec![])), Err(Error::InUse { .. })),
            "held by a running container"
        );
        drop(held);
        let (_, held) = vols.create_held("data", BTreeMap::new()).unwrap();
        assert!(matches!(vols.remove("data", |_| Ok::<_, Error>(vec![])), Err(Error::InUse { .. })), "held as made");
        drop(held);
        vols.remove("data", |_| Ok::<_, Error>(vec![])).unwrap();
        assert!(matches!(vols.get("data"), Err(Error::NotFound(_))));
        assert!(vols.list().unwrap().is_empty());
        assert!(matches!(vols.remove("data", |_| Ok::<_, Error>(vec![])), Err(Error::NotFound(_))));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_name_that_leaves_the_store_is_never_looked_up() {
        let root = scratch("escape");
        let vols = Volumes::new(&root);
        assert!(matches!(vols.create("../x", BTreeMap::new()), Err(Error::InvalidName(_))));
        assert!(matches!(vols.get("../../etc"), Err(Error::NotFound(_))));
        let _ = std::fs::remove_dir_all(&root);
    }
}
