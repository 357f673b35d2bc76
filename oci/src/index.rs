//! Image indexes made locally: from a multi-platform build, or assembled from separately built
//! images by `berth manifest` (docker's manifest lists, buildah's `manifest` verbs). An index
//! is written as a new document for every change; names point at the latest one.

use crate::content::ContentStore as _;
use crate::error::{Error, Result};
use crate::manifest::{descriptor_digest, Manifest, MAX_MANIFEST_SIZE};
use crate::platform::Platform;
use crate::store::{ImageStore, Target};

/// One entry of an index: an image manifest and the platform it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The image manifest.
    pub target: Target,
    /// Its platform.
    pub platform: Platform,
}

/// The entries of the index `target` (its entries without a platform are left out).
pub fn entries(store: &ImageStore, target: &Target) -> Result<Vec<Entry>> {
    let Manifest::Index(index) = store.manifest(&target.digest, Some(&target.media_type))? else {
        return Err(Error::InvalidDocument {
            what: "index",
            reason: format!("{} is an image, not an index", target.digest),
        });
    };
    index
        .manifests()
        .iter()
        .filter_map(|d| Platform::of(d).map(|p| (d, p)))
        .map(|(d, platform)| {
            let target =
                Target { digest: descriptor_digest(d)?, media_type: d.media_type().to_string(), size: d.size() };
            Ok(Entry { target, platform })
        })
        .collect()
}

/// The platform an image manifest's config records.
pub fn platform_of(store: &ImageStore, image: &Target) -> Result<Platform> {
    let bytes = store.content().read_small(&image.digest, MAX_MANIFEST_SIZE as u64)?;
    if let Manifest::Index(_) = Manifest::parse(&bytes, Some(&image.media_type))? {
        return Err(Error::InvalidDocument {
            what: "index entry",
            reason: format!("{} is an index itself; add its images one by one", image.digest),
        });
    }
    let config = store.image(image)?.config;
    Ok(Platform::of_config(&config))
}

/// One entry of an index as the local store holds it.
#[derive(Debug, Clone)]
pub struct Child {
    /// The entry.
    pub entry: Entry,
    /// Its image, when its manifest and config are in the store (a pull for one platform
    /// leaves the others' out, a lazy pull their configs).
    pub image: Option<crate::store::Image>,
}

/// The platform images of the index `target`, with their images where the store has them:
/// what `images`, `inspect` and `rmi` show of a multi-platform image. Entries for no platform
/// (`unknown/unknown`: BuildKit's attestation manifests) are not images to run and are left out.
pub fn children(store: &ImageStore, target: &Target) -> Result<Vec<Child>> {
    let mut out = Vec::new();
    for entry in entries(store, target)?.into_iter().filter(|e| e.platform.os != "unknown") {
        let image = match store.image(&entry.target) {
            Ok(image) => Some(image),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        out.push(Child { entry, image });
    }
    Ok(out)
}

/// Writes an OCI image index of `entries`, in order, into the store.
pub fn write(store: &ImageStore, entries: &[Entry]) -> Result<Target> {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "mediaType": e.target.media_type,
                "digest": e.target.digest.to_string(),
                "size": e.target.size,
                "platform": e.platform.to_json(),
            })
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": crate::media::OCI_INDEX, "manifests": manifests });
    let bytes = serde_json::to_vec(&index).map_err(|source| Error::InvalidJson { what: "index", source })?;
    store.put_manifest(&bytes, crate::media::OCI_INDEX)
}

/// `entries` with `entry` in place of the one for the same image or the same platform (an
/// index holds one image per platform), else at the end.
pub fn with(mut entries: Vec<Entry>, entry: Entry) -> Vec<Entry> {
    match entries.iter().position(|e| e.target.digest == entry.target.digest || e.platform == entry.platform) {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest_byte: u8, platform: &str) -> Entry {
        let digest = crate::Digest::of(&[digest_byte]);
        Entry {
            target: Target { digest, media_type: crate::media::OCI_MANIFEST.into(), size: 1 },
            platform: platform.parse().unwrap(),
        }
    }

    #[test]
    fn one_image_per_platform_and_one_entry_per_image() {
        let list = with(with(vec![], entry(1, "linux/amd64")), entry(2, "linux/arm64"));
        assert_eq!(list.len(), 2);
        let replaced = with(list.clone(), entry(3, "linux/arm64"));
        assert_eq!(replaced[1], entry(3, "linux/arm64"), "a new image for a platform replaces the old");
        let moved = with(list, entry(2, "linux/arm/v7"));
        assert_eq!(moved[1].platform.to_string(), "linux/arm/v7", "an image's platform is changed in place");
        assert_eq!(moved.len(), 2);
    }
}
