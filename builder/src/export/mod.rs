//! Exporters: where a built image goes besides the local image store (`-o type=...`).
//!
//! Each exporter reads the image from the [`ImageStore`] by its record and writes one
//! destination, never a half one: files are written under a temporary name beside the
//! destination and renamed into place once complete.
//!
//! | `-o type=` | exporter | writes |
//! |---|---|---|
//! | `oci` | [`archive`] | an OCI image layout as a tarball |
//! | `docker` | [`archive`] | a docker-archive tarball (`docker load`) |
//! | `local` | [`rootfs`] | the image's filesystem into a directory |
//! | `tar` | [`rootfs`] | the image's filesystem as one tarball |
//!
//! The filesystem exporters keep device nodes and fifos when run as real root, as BuildKit
//! does; without root, device nodes cannot be made, and [`Exported::skipped_devices`] says
//! how many were left out so that the caller can warn.
//!
//! ```no_run
//! # fn main() -> builder::Result<()> {
//! use builder::export::Exporter;
//! let store = oci::ImageStore::open("/var/lib/berth").map_err(builder::Error::image("open store"))?;
//! let image = store.resolve("app:1").map_err(builder::Error::image("find app:1"))?;
//! let done = Exporter::Local("out".into()).export(&store, &image)?;
//! if let Some(w) = done.warning() {
//!     eprintln!("warning: {w}");
//! }
//! # Ok(()) }
//! ```

pub mod archive;
pub mod rootfs;

use std::path::{Path, PathBuf};

use oci::{ImageRecord, ImageStore};

use crate::Result;

/// One destination of a build result, as `-o type=KIND,dest=PATH` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exporter {
    /// An OCI image layout as a tarball (`type=oci,dest=FILE`).
    Oci(PathBuf),
    /// A docker-archive tarball that `docker load` reads (`type=docker,dest=FILE`).
    Docker(PathBuf),
    /// The image's filesystem as one tarball (`type=tar,dest=FILE`).
    Tar(PathBuf),
    /// The image's filesystem written into a directory (`type=local,dest=DIR`).
    Local(PathBuf),
}

/// What an export left out, for the caller to tell the user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Where it went.
    pub dest: PathBuf,
    /// Device nodes of the image that were not written: only real root can create them.
    pub skipped_devices: u64,
}

impl Exported {
    /// One line saying what was left out, if anything was.
    pub fn warning(&self) -> Option<String> {
        (self.skipped_devices > 0).then(|| {
            let n = self.skipped_devices;
            format!(
                "{}: {n} device node{} of the image left out (creating device nodes needs root)",
                self.dest.display(),
                if n == 1 { "" } else { "s" }
            )
        })
    }
}

impl Exporter {
    /// The exporter of `type=kind` writing to `dest`; `None` for a type berth does not write.
    pub fn new(kind: &str, dest: PathBuf) -> Option<Exporter> {
        match kind {
            "oci" => Some(Exporter::Oci(dest)),
            "docker" => Some(Exporter::Docker(dest)),
            "tar" => Some(Exporter::Tar(dest)),
            "local" => Some(Exporter::Local(dest)),
            _ => None,
        }
    }

    /// Why `type=docker` cannot take a build for several platforms (as buildx's docker
    /// exporter refuses one).
    pub const DOCKER_NO_INDEX: &'static str =
        "type=docker holds one platform's image, not an image index: use type=oci, or build one --platform";

    /// The types [`Exporter::new`] knows, as `-o type=` spells them.
    pub const KINDS: [&'static str; 4] = ["oci", "docker", "tar", "local"];

    /// The `type=` this exporter is.
    pub fn kind(&self) -> &'static str {
        match self {
            Exporter::Oci(_) => "oci",
            Exporter::Docker(_) => "docker",
            Exporter::Tar(_) => "tar",
            Exporter::Local(_) => "local",
        }
    }

    /// The file or directory it writes.
    pub fn dest(&self) -> &Path {
        match self {
            Exporter::Oci(d) | Exporter::Docker(d) | Exporter::Tar(d) | Exporter::Local(d) => d,
        }
    }

    /// Writes `image` (its name, if it has one, goes into the archive formats) from `store`.
    pub fn export(&self, store: &ImageStore, image: &ImageRecord) -> Result<Exported> {
        let skipped_devices = match self {
            Exporter::Oci(dest) => archive::write(store, image, archive::Format::Oci, dest).map(|()| 0)?,
            Exporter::Docker(dest) => archive::write(store, image, archive::Format::Docker, dest).map(|()| 0)?,
            Exporter::Tar(dest) => rootfs::write_tar(store, image, dest)?,
            Exporter::Local(dest) => rootfs::write_dir(store, image, dest)?,
        };
        Ok(Exported { dest: self.dest().to_owned(), skipped_devices })
    }
}

impl Exporter {
    /// Writes the image index of a build for several platforms, whose images are
    /// `platforms`: an OCI layout holds the index itself; the filesystem exporters write one
    /// directory per platform (`linux_amd64/`, `linux_arm_v7/`), as buildx's do; a
    /// docker-archive cannot hold an index and is refused.
    pub fn export_platforms(
        &self,
        store: &ImageStore,
        index: &ImageRecord,
        platforms: &[(oci::Platform, oci::Target)],
    ) -> Result<Exported> {
        let each = || -> Vec<(PathBuf, ImageRecord)> {
            let dir = |p: &oci::Platform| PathBuf::from(p.to_string().replace('/', "_"));
            platforms.iter().map(|(p, t)| (dir(p), ImageRecord { name: None, target: t.clone() })).collect()
        };
        let skipped_devices = match self {
            Exporter::Oci(_) => return self.export(store, index),
            Exporter::Docker(_) => return Err(crate::Error::Invalid(Exporter::DOCKER_NO_INDEX.into())),
            Exporter::Tar(dest) => rootfs::write_tars(store, &each(), dest)?,
            Exporter::Local(dest) => rootfs::write_dirs(store, &each(), dest)?,
        };
        Ok(Exported { dest: self.dest().to_owned(), skipped_devices })
    }
}

/// `dest` with `.berth-tmp` appended to its file name: the name a file is written under
/// before it is complete, on the same filesystem so that the final rename is atomic.
fn temp_beside(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "export".into());
    name.push(".berth-tmp");
    dest.with_file_name(name)
}

/// A temporary file or directory, removed when dropped (after a rename it is already gone).
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(path: PathBuf) -> Scratch {
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let gone = match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&self.path),
            Ok(_) => std::fs::remove_file(&self.path),
            Err(_) => Ok(()),
        };
        // Nothing more to do about a scratch file that will not go: it only wastes space.
        drop(gone);
    }
}

#[cfg(test)]
mod tests;
