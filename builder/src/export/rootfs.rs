//! The image's filesystem: its layers applied in order into a directory (`type=local`), or
//! into a scratch directory that is then archived as one tarball (`type=tar`).
//!
//! Layers are applied by the runner's unpacker, so the export follows the same rules as
//! running the image: whiteouts delete, nothing lands outside the directory, owners are kept
//! for root. Device nodes (`/dev/null` of a base image) are created when berth runs as real
//! root; otherwise they are counted and the caller warns. Fifos need no privilege and are
//! always kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci::{ImageRecord, ImageStore};
use runner::unpack::{UnpackOptions, Whiteouts};

use super::{temp_beside, Scratch};
use crate::{Error, Result};

/// Applies every layer of `image` to the directory `dest` (made if missing); returns how
/// many device nodes were left out for want of root.
pub fn write_dir(store: &ImageStore, image: &ImageRecord, dest: &Path) -> Result<u64> {
    write_dirs(store, &[(PathBuf::new(), image.clone())], dest)
}

/// Applies each image's layers into its own directory under `dest` (`linux_arm64/`, as
/// buildx names a platform's); returns how many device nodes were left out.
pub fn write_dirs(store: &ImageStore, images: &[(PathBuf, ImageRecord)], dest: &Path) -> Result<u64> {
    let mut skipped = 0;
    for (sub, image) in images {
        let dir = dest.join(sub);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        skipped += unpack_image(store, image, &dir)?;
    }
    Ok(skipped)
}

/// Writes the filesystem of `image` to `dest` as a tarball (numeric owners, entries sorted,
/// `SOURCE_DATE_EPOCH` clamping mtimes); returns how many device nodes were left out.
pub fn write_tar(store: &ImageStore, image: &ImageRecord, dest: &Path) -> Result<u64> {
    write_tars(store, &[(PathBuf::new(), image.clone())], dest)
}

/// Writes each image's filesystem under its own directory of one tarball at `dest`, as
/// [`write_dirs`] lays them out; returns how many device nodes were left out.
pub fn write_tars(store: &ImageStore, images: &[(PathBuf, ImageRecord)], dest: &Path) -> Result<u64> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!("export-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    // Claimed first, so a prune now spares it and the next command removes it if berth is killed.
    let tmp = store.tmp_dir();
    let root = tmp.parent().unwrap_or(tmp.as_path());
    runner::lease::for_root(root)
        .and_then(|l| l.claim(runner::lease::Claim::Path(&Path::new("tmp").join(&name))))
        .map_err(Error::io("claim the export directory"))?;
    let dir = Scratch::new(tmp.join(name));
    std::fs::create_dir(&dir.path).map_err(Error::io(format!("create {}", dir.path.display())))?;
    let skipped = write_dirs(store, images, &dir.path)?;
    let tmp = Scratch::new(temp_beside(dest));
    let what = || format!("write {}", dest.display());
    let f = std::fs::File::create(&tmp.path).map_err(Error::io(format!("create {}", tmp.path.display())))?;
    let opts = oci::layer::TarOptions::from_env();
    let w = std::io::BufWriter::new(f);
    let mut tar = oci::layer::TarWriter::new(w, &opts);
    tar.add_tree(&dir.path, Path::new("")).map_err(Error::image(what()))?;
    let w = tar.finish().map_err(Error::image(what()))?;
    let f = w.into_inner().map_err(|e| Error::Io { what: what(), source: e.into_error() })?;
    f.sync_all().map_err(Error::io(what()))?;
    std::fs::rename(&tmp.path, dest).map_err(Error::io(what()))?;
    Ok(skipped)
}

/// Applies the layers of `image`, lowest first, to `dir`.
fn unpack_image(store: &ImageStore, image: &ImageRecord, dir: &Path) -> Result<u64> {
    let img = store.image(&image.target).map_err(Error::image(format!("read image {}", image.target.digest)))?;
    let root = rustix::process::geteuid().is_root();
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Apply,
        allow_devices: root,
        preserve_owners: root,
        lowers: vec![],
        restore_dir_times: true,
        report_files: false,
        placeholders: false,
    };
    let mut skipped = 0;
    for desc in img.manifest.layers() {
        let d = oci::manifest::descriptor_digest(desc).map_err(Error::image("read a layer descriptor"))?;
        let blob =
            oci::content::ContentStore::reader(store.content(), &d).map_err(Error::image(format!("read layer {d}")))?;
        let reader = oci::layer::LayerReader::new(blob, u64::MAX).map_err(Error::image(format!("read layer {d}")))?;
        let stats = runner::unpack::unpack(reader, dir, &opts)
            .map_err(Error::runner(format!("unpack layer {d} into {}", dir.display())))?;
        skipped += stats.skipped_devices;
    }
    Ok(skipped)
}
