//! A cache in a directory (`type=local,dest=DIR` / `src=DIR`): an OCI image layout whose
//! `index.json` names each cache manifest by tag (`org.opencontainers.image.ref.name`).
//!
//! An export holds the directory's lock while it writes: blobs first (each to a temporary
//! name, then renamed), then `index.json` replaced in one rename, then every blob no entry
//! uses removed. Two exports at once take turns; a reader never sees an entry whose blobs
//! are missing. BuildKit's local cache grows until `reset`; this one keeps only what its
//! entries use.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci::content::{ContentStore, Expected};
use oci::ImageStore;

use super::{CacheBackend, Published, Upload};
use crate::error::{Error, Result};

/// The annotation that names an entry of `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A cache in an OCI layout directory.
#[derive(Debug, Clone)]
pub struct LocalCache {
    dir: PathBuf,
    tag: String,
    digest: Option<oci::Digest>,
}

impl LocalCache {
    /// The cache named `tag` (or the manifest `digest`) in the layout at `dir`.
    pub fn new(dir: &Path, tag: &str, digest: Option<oci::Digest>) -> Self {
        LocalCache { dir: dir.to_owned(), tag: tag.to_owned(), digest }
    }

    fn blob_path(&self, d: &oci::Digest) -> PathBuf {
        self.dir.join("blobs").join(d.algorithm().as_str()).join(d.hex())
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> Error {
        Error::remote(format!("{what} {}", self.describe()))
    }

    fn index(&self) -> Result<serde_json::Value> {
        let p = self.dir.join("index.json");
        match std::fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| Error::Json { what: format!("{}", p.display()), source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(serde_json::json!({"schemaVersion": 2, "mediaType": oci::media::OCI_INDEX, "manifests": []}))
            }
            Err(e) => Err(self.io("read")(e)),
        }
    }

    /// The manifest digest the import reads: `digest=` or the entry named `tag`.
    fn wanted(&self) -> Result<Option<oci::Digest>> {
        if let Some(d) = &self.digest {
            return Ok(Some(d.clone()));
        }
        let index = self.index()?;
        let entry = index["manifests"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|e| e["annotations"][REF_NAME].as_str() == Some(self.tag.as_str())));
        Ok(entry.and_then(|e| e["digest"].as_str()).and_then(|d| d.parse().ok()))
    }

    /// Copies a blob from the content store into the layout unless it is there.
    fn put_blob(&self, store: &ImageStore, d: &oci::Digest, size: u64) -> Result<bool> {
        let dest = self.blob_path(d);
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == size) {
            return Ok(false);
        }
        let parent = dest.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(self.io("create"))?;
        let tmp = parent.join(format!(".tmp-{}-{}", std::process::id(), d.hex()));
        std::fs::copy(store.content().blob_path(d), &tmp).map_err(self.io(&format!("write {d} to")))?;
        std::fs::rename(&tmp, &dest).map_err(self.io(&format!("write {d} to")))?;
        Ok(true)
    }

    /// Writes `index.json` with this cache's entry replaced, in one rename.
    fn write_index(&self, manifest: &oci::Digest, size: u64) -> Result<serde_json::Value> {
        let mut index = self.index()?;
        let entry = serde_json::json!({
            "mediaType": oci::media::OCI_MANIFEST,
            "artifactType": super::format::ARTIFACT_TYPE,
            "digest": manifest.to_string(),
            "size": size,
            "annotations": {REF_NAME: self.tag},
        });
        let mut entries: Vec<serde_json::Value> = index["manifests"].as_array().cloned().unwrap_or_default();
        entries.retain(|e| e["annotations"][REF_NAME].as_str() != Some(self.tag.as_str()));
        entries.push(entry);
        index["manifests"] = serde_json::Value::Array(entries);
        let layout = self.dir.join("oci-layout");
        if !layout.exists() {
            std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(self.io("write"))?;
        }
        let tmp = self.dir.join(format!(".index.json.{}", std::process::id()));
        let bytes =
            serde_json::to_vec_pretty(&index).map_err(|source| Error::Json { what: "index.json".into(), source })?;
        let mut f = std::fs::File::create(&tmp).map_err(self.io("write"))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(self.io("write"))?;
        std::fs::rename(&tmp, self.dir.join("index.json")).map_err(self.io("write"))?;
        Ok(index)
    }

    /// Removes every blob no entry of `index` uses (the manifests, their configs, layers).
    fn remove_unused(&self, index: &serde_json::Value) -> Result<()> {
        let mut keep = BTreeSet::new();
        for e in index["manifests"].as_array().into_iter().flatten() {
            let Some(d) = e["digest"].as_str() else { continue };
            keep.insert(d.to_owned());
            let Ok(bytes) = std::fs::read(self.dir.join("blobs").join(d.replacen(':', "/", 1))) else { continue };
            let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let children =
                m["layers"].as_array().into_iter().flatten().chain(m["manifests"].as_array().into_iter().flatten());
            keep.extend(
                std::iter::once(&m["config"]).chain(children).filter_map(|c| c["digest"].as_str().map(str::to_owned)),
            );
            if m["manifests"].is_array() {
                // An index another tool wrote: its children are not followed, so keep the directory as it is.
                return Ok(());
            }
        }
        // Only what a layout's blobs are: regular files named by a digest, in the directory of
        // their algorithm. Anything else (a README, a symlink to elsewhere) is not ours to remove.
        for alg in ["sha256", "sha512"] {
            let dir = self.dir.join("blobs").join(alg);
            if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            for f in std::fs::read_dir(&dir).map_err(self.io("list"))?.flatten() {
                let name = format!("{alg}:{}", f.file_name().to_string_lossy());
                let is_blob = name.parse::<oci::Digest>().is_ok() && f.file_type().is_ok_and(|t| t.is_file());
                if is_blob && !keep.contains(&name) {
                    std::fs::remove_file(f.path()).map_err(self.io("remove an unused blob of"))?;
                }
            }
        }
        Ok(())
    }

    /// Refuses a directory that holds an `index.json` but is not an OCI image layout (a web
    /// app's, say): exporting would rewrite that file and remove what is not a blob of it.
    fn check_is_layout(&self) -> Result<()> {
        let index = self.dir.join("index.json");
        if !index.exists() {
            return Ok(());
        }
        let layout = self.dir.join("oci-layout").exists();
        let parsed: Option<serde_json::Value> =
            std::fs::read(&index).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let is_index = parsed.is_some_and(|v| v["schemaVersion"] == 2 && v["manifests"].is_array());
        if layout && is_index {
            return Ok(());
        }
        Err(Error::remote(format!("export to {}", self.describe()))(oci::Error::InvalidDocument {
            what: "cache directory",
            reason: "it holds an index.json but is not an OCI image layout (no oci-layout file, or not an \
                     image index): give a directory of its own"
                .into(),
        }))
    }
}

impl CacheBackend for LocalCache {
    fn describe(&self) -> String {
        format!("local {}", self.dir.display())
    }

    fn manifest(&self, _store: &ImageStore) -> Result<Option<Vec<u8>>> {
        if !self.dir.join("index.json").exists() && self.digest.is_none() {
            return Ok(None);
        }
        let Some(d) = self.wanted()? else { return Ok(None) };
        let bytes = match std::fs::read(self.blob_path(&d)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("read")(e)),
        };
        if oci::Digest::of(&bytes) != d {
            return Err(Error::remote(format!("read {}", self.describe()))(oci::Error::DigestMismatch {
                expected: d,
                actual: oci::Digest::of(&bytes),
            }));
        }
        Ok(Some(bytes))
    }

    fn fetch(&self, store: &ImageStore, digest: &oci::Digest, size: u64) -> Result<()> {
        let mut from = std::fs::File::open(self.blob_path(digest)).map_err(self.io(&format!("read {digest} from")))?;
        let mut w = store.content().writer(digest.algorithm()).map_err(Error::image("store a cache blob"))?;
        // One byte past the size at most: a file larger than its descriptor says is refused
        // below without being copied whole first.
        std::io::copy(&mut std::io::Read::take(&mut from, size.saturating_add(1)), &mut w)
            .map_err(self.io(&format!("read {digest} from")))?;
        // Verified here: a blob whose bytes are not its name is refused.
        w.commit(Expected::exactly(digest, size))
            .map(drop)
            .map_err(Error::remote(format!("read {digest} from {}", self.describe())))
    }

    fn publish(&self, store: &ImageStore, upload: &Upload<'_>) -> Result<Published> {
        std::fs::create_dir_all(&self.dir).map_err(self.io("create"))?;
        self.check_is_layout()?;
        let lock = std::fs::File::create(self.dir.join(".berth-cache.lock")).map_err(self.io("lock"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| self.io("lock")(std::io::Error::from(e)))?;
        let mut out = Published::default();
        for b in upload.blobs {
            if std::fs::metadata(self.blob_path(&b.digest)).is_ok_and(|m| m.len() == b.size) {
                out.present += 1;
                continue;
            }
            upload.lazy.ensure(store, &b.digest)?;
            self.put_blob(store, &b.digest, b.size)?;
            out.uploaded += 1;
            out.bytes += b.size;
        }
        let (config, config_bytes) = upload.config;
        self.put_blob(store, config, config_bytes.len() as u64)?;
        let manifest = store.content().put(upload.manifest).map_err(Error::image("store the cache manifest"))?;
        self.put_blob(store, &manifest, upload.manifest.len() as u64)?;
        let index = self.write_index(&manifest, upload.manifest.len() as u64)?;
        self.remove_unused(&index).and(Ok(out))
    }
}
