//! The image as an archive other tools load: an OCI image layout or a docker-archive, as a tarball.

use std::path::Path;

use oci::layout::TarSink;
use oci::{ImageRecord, ImageStore};

use super::{temp_beside, Scratch};
use crate::{Error, Result};

/// Which archive layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `oci-layout`, `index.json` and `blobs/` (the OCI image layout spec).
    Oci,
    /// `manifest.json` and one directory per layer, as `docker save` writes it.
    Docker,
}

/// Writes `image` as a `format` tarball to `dest`, replacing it only once complete.
pub fn write(store: &ImageStore, image: &ImageRecord, format: Format, dest: &Path) -> Result<()> {
    let tmp = Scratch::new(temp_beside(dest));
    let f = std::fs::File::create(&tmp.path).map_err(Error::io(format!("create {}", tmp.path.display())))?;
    let mut sink = TarSink::new(std::io::BufWriter::new(f));
    let what = || format!("write {}", dest.display());
    let images = std::slice::from_ref(image);
    match format {
        Format::Oci => oci::layout::write_oci(store, images, &mut sink),
        Format::Docker => oci::layout::write_docker(store, images, &mut sink),
    }
    .map_err(Error::image(what()))?;
    let w = sink.finish().map_err(Error::image(what()))?;
    let f = w.into_inner().map_err(|e| Error::Io { what: what(), source: e.into_error() })?;
    f.sync_all().map_err(Error::io(what()))?;
    std::fs::rename(&tmp.path, dest).map_err(Error::io(what()))?;
    Ok(())
}
