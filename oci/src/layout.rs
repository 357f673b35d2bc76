//! OCI image layouts (directory or tar) and docker archives (`docker save`), written from
//! and read into the local image store.
//!
//! Writing streams every blob from the content store into a [`Sink`] (a directory or a
//! tar stream). Reading goes the other way in two steps: every file of the archive is
//! streamed into the content store (verified against its name where the name is a
//! digest), then the small metadata files (`index.json`, `manifest.json`) are interpreted
//! and the images named. No blob is ever held in memory.
//!
//! ```text
//! OCI layout                       docker archive (as berth writes it)
//!   oci-layout                       blobs/sha256/<config hex>
//!   index.json                       blobs/sha256/<diffID hex>   (uncompressed layers)
//!   blobs/sha256/<hex>               manifest.json, repositories
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::content::{ContentStore, Expected};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, IoContext, Result};
use crate::layer::{Compression, Exactly, LayerReader};
use crate::manifest::{descriptor_digest, parse_config, Manifest};
use crate::media;
use crate::reference::Reference;
use crate::store::{ImageRecord, ImageStore, Target, MAX_CONFIG_SIZE};

/// The annotation OCI layouts use for an image's name (skopeo writes a bare tag or a name).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and docker use for an image's full name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const METADATA_LIMIT: u64 = 16 * 1024 * 1024;

/// Where archive files go: a directory or a tar stream.
pub trait Sink {
    /// Writes one file of `size` bytes read from `data`.
    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()>;
}

/// A [`Sink`] that writes files under a directory.
pub struct DirSink(pub PathBuf);

impl Sink for DirSink {
    fn file(&mut self, path: &str, _size: u64, data: &mut dyn Read) -> Result<()> {
        let dest = self.0.join(path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
        }
        let mut f = File::create(&dest).ctx(|| format!("create {}", dest.display()))?;
        io::copy(data, &mut f).ctx(|| format!("write {}", dest.display()))?;
        Ok(())
    }
}

/// A [`Sink`] that appends files to a tar stream with fixed metadata (mode 0644, owner 0,
/// mtime 0), so the same images give the same archive bytes.
pub struct TarSink<W: Write> {
    builder: tar::Builder<W>,
    dirs: BTreeSet<String>,
}

impl<W: Write> TarSink<W> {
    /// Starts a tar stream on `out`.
    pub fn new(out: W) -> Self {
        TarSink { builder: tar::Builder::new(out), dirs: BTreeSet::new() }
    }

    /// Writes the end-of-archive blocks and returns the writer.
    pub fn finish(self) -> Result<W> {
        self.builder.into_inner().ctx(|| "finish archive")
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        // Parent directories first, once each, as tools like umoci expect.
        let mut prefix = String::new();
        for part in path.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            prefix.push_str(part);
            prefix.push('/');
            if self.dirs.insert(prefix.clone()) {
                let mut h = Self::header(tar::EntryType::Directory, 0, 0o755);
                self.builder.append_data(&mut h, &prefix, io::empty()).ctx(|| format!("archive {prefix}"))?;
            }
        }
        let mut h = Self::header(tar::EntryType::Regular, size, 0o644);
        self.builder.append_data(&mut h, path, Exactly::new(data, size)).ctx(|| format!("archive {path}"))
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

fn copy_blob(store: &ImageStore, d: &Digest, sink: &mut dyn Sink, path: &str) -> Result<()> {
    let info = store.content().info(d)?.ok_or_else(|| Error::BlobNotFound(d.clone()))?;
    let mut r = store.content().reader(d)?;
    sink.file(path, info.size, &mut r)
}

/// Writes `images` as an OCI image layout: every reachable blob once, then `index.json`
/// naming each image with both the OCI and the containerd annotation.
pub fn write_oci(store: &ImageStore, images: &[ImageRecord], sink: &mut dyn Sink) -> Result<()> {
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    sink.file("oci-layout", layout.len() as u64, &mut &layout[..])?;
    let mut blobs = BTreeSet::new();
    for rec in images {
        store.reachable(&rec.target, &mut blobs)?;
    }
    for d in &blobs {
        copy_blob(store, d, sink, &blob_path(d))?;
    }
    // Built as JSON values (sorted maps), not oci-spec's HashMaps, so that the same
    // images always give the same index.json bytes.
    // A name given twice is one entry.
    let mut seen = BTreeSet::new();
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .filter(|rec| seen.insert((rec.name.as_ref().map(|n| n.to_string()), rec.target.digest.clone())))
        .map(|rec| {
            let mut d = serde_json::json!({
                "mediaType": rec.target.media_type,
                "digest": rec.target.digest.to_string(),
                "size": rec.target.size,
            });
            if let Some(name) = &rec.name {
                let mut ann = serde_json::Map::new();
                ann.insert(ANNOTATION_IMAGE_NAME.to_owned(), name.to_string().into());
                if let Some(tag) = name.tag() {
                    ann.insert(ANNOTATION_REF_NAME.to_owned(), tag.into());
                }
                d["annotations"] = serde_json::Value::Object(ann);
            }
            d
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
    let bytes = serde_json::to_vec(&index).map_err(|source| Error::InvalidJson { what: "index", source })?;
    sink.file("index.json", bytes.len() as u64, &mut &bytes[..])
}

/// One entry of a docker archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Writes `images` as a docker archive (`docker save`): configs and uncompressed layers
/// under `blobs/sha256/`, with `manifest.json` and `repositories`. Compressed layers are
/// decompressed through a temporary file (tar needs each size up front) and their diffIDs
/// checked against the config.
pub fn write_docker(store: &ImageStore, images: &[ImageRecord], sink: &mut dyn Sink) -> Result<()> {
    let mut written = BTreeSet::new();
    let mut entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for rec in images {
        let img = store.image(&rec.target)?;
        let tag = rec.name.as_ref().filter(|n| n.tag().is_some());
        if let Some(n) = tag {
            repositories
                .entry(n.familiar_name())
                .or_default()
                .insert(n.tag().unwrap_or_default().to_owned(), img.id.hex().to_owned());
        }
        let config_path = blob_path(&img.id);
        // The same image named twice is one entry with both tags, as docker writes it.
        if let Some(entry) = entries.iter_mut().find(|e: &&mut DockerEntry| e.config == config_path) {
            if let Some(n) = tag {
                let tags = entry.repo_tags.get_or_insert_with(Vec::new);
                if !tags.contains(&n.familiar()) {
                    tags.push(n.familiar());
                }
            }
            continue;
        }
        if written.insert(config_path.clone()) {
            sink.file(&config_path, img.config_bytes.len() as u64, &mut &img.config_bytes[..])?;
        }
        let diff_ids = img.config.rootfs().diff_ids();
        if diff_ids.len() != img.manifest.layers().len() {
            return Err(Error::InvalidDocument {
                what: "image config",
                reason: format!("{} diff_ids for {} layers", diff_ids.len(), img.manifest.layers().len()),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in img.manifest.layers().iter().zip(diff_ids) {
            let diff_id: Digest = diff_id.parse()?;
            let path = blob_path(&diff_id);
            if written.insert(path.clone()) {
                let digest = descriptor_digest(desc)?;
                if digest == diff_id {
                    copy_blob(store, &digest, sink, &path)?;
                } else {
                    let mut tmp = tempfile::tempfile_in(store.tmp_dir()).ctx(|| "create temporary layer file")?;
                    let mut reader = LayerReader::new(store.content().reader(&digest)?, u64::MAX)?;
                    let size = io::copy(&mut reader, &mut tmp).ctx(|| format!("decompress layer {digest}"))?;
                    let (actual, _) = reader.finish()?;
                    if actual != diff_id {
                        return Err(Error::DigestMismatch { expected: diff_id, actual });
                    }
                    tmp.rewind().ctx(|| "rewind temporary layer file")?;
                    sink.file(&path, size, &mut tmp)?;
                }
            }
            layers.push(path);
        }
        let repo_tags = tag.map(|n| vec![n.familiar()]);
        entries.push(DockerEntry { config: config_path, repo_tags, layers });
    }
    let manifest =
        serde_json::to_vec(&entries).map_err(|source| Error::InvalidJson { what: "manifest.json", source })?;
    sink.file("manifest.json", manifest.len() as u64, &mut &manifest[..])?;
    let repos =
        serde_json::to_vec(&repositories).map_err(|source| Error::InvalidJson { what: "repositories", source })?;
    sink.file("repositories", repos.len() as u64, &mut &repos[..])
}

/// The files of an archive once staged: blobs in the content store, metadata in memory.
#[derive(Default)]
struct Staged {
    /// Archive path -> digest of its content (now in the content store).
    blobs: HashMap<String, Digest>,
    /// Archive path -> content, for the few metadata files.
    metadata: HashMap<String, Vec<u8>>,
    /// Link path -> target path, resolved after staging.
    links: HashMap<String, String>,
    /// Blobs this load added to the store (not there before): removed again if it fails.
    added: Vec<Digest>,
}

impl Staged {
    /// Removes what this load added, so that a failed load changes nothing.
    fn undo(&self, store: &ImageStore) {
        for d in &self.added {
            if let Err(e) = store.content().delete(d) {
                // Best effort: prune collects it later anyway.
                let _ignored = e;
            }
        }
    }
}

impl Staged {
    fn digest_of(&self, path: &str, archive: &str) -> Result<Digest> {
        let mut p = clean(path).ok_or_else(|| bad(archive, format!("path {path:?} leaves the archive")))?;
        for _ in 0..16 {
            if let Some(d) = self.blobs.get(&p) {
                return Ok(d.clone());
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(bad(archive, format!("{path} is listed but not in the archive")))
    }
}

fn bad(archive: &str, reason: String) -> Error {
    Error::InvalidArchive { path: archive.to_owned(), reason }
}

/// Normalises an archive path (`./a/b` -> `a/b`); `None` if it climbs out with `..`.
fn clean(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn is_metadata(path: &str) -> bool {
    matches!(path, "oci-layout" | "index.json" | "manifest.json" | "repositories")
}

fn stage_file(store: &ImageStore, staged: &mut Staged, path: String, data: &mut dyn Read, archive: &str) -> Result<()> {
    if is_metadata(&path) {
        let mut buf = Vec::new();
        data.take(METADATA_LIMIT + 1).read_to_end(&mut buf).ctx(|| format!("read {path} in {archive}"))?;
        if buf.len() as u64 > METADATA_LIMIT {
            return Err(bad(archive, format!("{path} is larger than 16 MiB")));
        }
        staged.metadata.insert(path, buf);
        return Ok(());
    }
    // A file named like a blob must hash to its name.
    let named: Option<Digest> = path.strip_prefix("blobs/").and_then(|p| p.replacen('/', ":", 1).parse().ok());
    let alg = named.as_ref().map_or(Algorithm::Sha256, Digest::algorithm);
    let mut w = store.content().writer(alg)?;
    io::copy(data, &mut w).ctx(|| format!("read {path} in {archive}"))?;
    let existed = store.content().contains(&w.digest())?;
    let digest = w.commit(Expected { digest: named.as_ref(), size: None }).map_err(|e| match e {
        Error::DigestMismatch { .. } => bad(archive, format!("{path}: {e}")),
        other => other,
    })?;
    if !existed {
        staged.added.push(digest.clone());
    }
    staged.blobs.insert(path, digest);
    Ok(())
}

/// Loads a tar archive (OCI layout or docker archive, detected from its files) into the
/// store and names its images. `archive` names the source in errors.
pub fn load_tar(store: &ImageStore, input: impl Read, archive: &str) -> Result<Vec<ImageRecord>> {
    let mut staged = Staged::default();
    let result = stage_tar(store, &mut staged, input, archive).and_then(|()| interpret(store, &staged, archive));
    if result.is_err() {
        staged.undo(store);
    }
    result
}

fn stage_tar(store: &ImageStore, staged: &mut Staged, input: impl Read, archive: &str) -> Result<()> {
    let mut tar = tar::Archive::new(input);
    for entry in tar.entries().map_err(|e| bad(archive, e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(archive, e.to_string()))?;
        let raw = entry.path().map_err(|e| bad(archive, e.to_string()))?.to_string_lossy().into_owned();
        let path = clean(&raw).ok_or_else(|| bad(archive, format!("entry {raw:?} leaves the archive")))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                stage_file(store, staged, path, &mut entry, archive)?
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name().map_err(|e| bad(archive, e.to_string()))?.unwrap_or_default();
                let target = target.to_string_lossy();
                // Hardlinks name a path from the archive root; symlinks are relative to their directory.
                let joined = if entry.header().entry_type() == tar::EntryType::Link {
                    target.into_owned()
                } else {
                    let dir = Path::new(&path).parent().unwrap_or(Path::new(""));
                    dir.join(&*target).to_string_lossy().into_owned()
                };
                let resolved =
                    clean(&joined).ok_or_else(|| bad(archive, format!("link {raw:?} leaves the archive")))?;
                staged.links.insert(path, resolved);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Loads an OCI image layout directory into the store.
pub fn load_oci_dir(store: &ImageStore, dir: &Path) -> Result<Vec<ImageRecord>> {
    let archive = dir.display().to_string();
    let mut staged = Staged::default();
    let result = stage_dir(store, &mut staged, dir, &archive).and_then(|()| interpret(store, &staged, &archive));
    if result.is_err() {
        staged.undo(store);
    }
    result
}

fn stage_dir(store: &ImageStore, staged: &mut Staged, dir: &Path, archive: &str) -> Result<()> {
    for name in ["oci-layout", "index.json"] {
        let p = dir.join(name);
        let mut f = File::open(&p).ctx(|| format!("open {}", p.display()))?;
        stage_file(store, staged, name.to_owned(), &mut f, archive)?;
    }
    let blobs = dir.join("blobs");
    for alg in fs::read_dir(&blobs).ctx(|| format!("read {}", blobs.display()))? {
        let alg = alg.ctx(|| format!("read {}", blobs.display()))?;
        for blob in fs::read_dir(alg.path()).ctx(|| format!("read {}", alg.path().display()))? {
            let blob = blob.ctx(|| format!("read {}", alg.path().display()))?;
            let rel = format!("blobs/{}/{}", alg.file_name().to_string_lossy(), blob.file_name().to_string_lossy());
            let mut f = open_regular(&blob.path())?;
            stage_file(store, staged, rel, &mut f, archive)?;
        }
    }
    Ok(())
}

/// Opens a blob of a layout directory, refusing anything but a regular file (after
/// symbolic links): a FIFO would hang the load, and a device such as /dev/zero never ends.
fn open_regular(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || format!("open {}", path.display());
    // Non-blocking, so that opening a FIFO returns instead of waiting for a writer.
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .ctx(open)?;
    let meta = f.metadata().ctx(open)?;
    if !meta.is_file() {
        return Err(bad(&path.display().to_string(), "a layout's blobs must be regular files".into()));
    }
    Ok(f)
}

/// The archive's images, every one checked whole, then named: a load that fails names
/// nothing and leaves every existing name as it was.
fn interpret(store: &ImageStore, staged: &Staged, archive: &str) -> Result<Vec<ImageRecord>> {
    let records = if let Some(index) = staged.metadata.get("index.json") {
        interpret_oci(store, staged, index, archive)?
    } else if let Some(manifest) = staged.metadata.get("manifest.json") {
        interpret_docker(store, staged, manifest, archive)?
    } else {
        return Err(bad(archive, "neither index.json (OCI layout) nor manifest.json (docker archive) found".into()));
    };
    for r in &records {
        store.name_or_dangle(r.name.as_ref(), &r.target)?;
    }
    Ok(records)
}

/// `name` for the image `target`, refused when it pins another digest: a digest reference
/// must always name its own manifest.
fn entry_name(name: Reference, target: &Target, archive: &str) -> Result<Reference> {
    match name.digest() {
        Some(d) if d != &target.digest => {
            Err(bad(archive, format!("the name {name} pins a digest, but its manifest is {}", target.digest)))
        }
        _ => Ok(name),
    }
}

/// The name an index.json entry carries: the full containerd name, else the OCI ref name
/// when it is a whole reference (a bare tag names no repository, so the image is untagged).
fn oci_entry_name(d: &oci_spec::image::Descriptor) -> Option<Reference> {
    let ann = d.annotations().as_ref()?;
    if let Some(n) = ann.get(ANNOTATION_IMAGE_NAME) {
        return n.parse().ok();
    }
    let r = ann.get(ANNOTATION_REF_NAME)?;
    if r.contains(['/', ':']) {
        r.parse().ok()
    } else {
        None
    }
}

fn interpret_oci(store: &ImageStore, staged: &Staged, index: &[u8], archive: &str) -> Result<Vec<ImageRecord>> {
    if let Some(layout) = staged.metadata.get("oci-layout") {
        #[derive(Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let l: Layout =
            serde_json::from_slice(layout).map_err(|source| Error::InvalidJson { what: "oci-layout", source })?;
        if l.version != media::OCI_LAYOUT_VERSION {
            return Err(bad(archive, format!("unsupported imageLayoutVersion {}", l.version)));
        }
    }
    let Manifest::Index(index) = Manifest::parse(index, Some(media::OCI_INDEX))? else {
        return Err(bad(archive, "index.json is not an image index".into()));
    };
    let mut out = Vec::new();
    for d in index.manifests() {
        let target = Target { digest: descriptor_digest(d)?, media_type: d.media_type().to_string(), size: d.size() };
        check_complete(store, &target, archive)?;
        let name = oci_entry_name(d).map(|n| entry_name(n, &target, archive)).transpose()?;
        out.push(ImageRecord { name, target });
    }
    Ok(out)
}

/// Refuses an image the store cannot use: a manifest missing or of another size than its
/// descriptor says; an image whose config or layers are missing, whose config does not
/// parse, or whose config lists another number of layers than its manifest; an index none
/// of whose images is in the archive whole.
fn check_complete(store: &ImageStore, target: &Target, archive: &str) -> Result<()> {
    let present = |d: &Digest| store.content().contains(d);
    let Some(info) = store.content().info(&target.digest)? else {
        return Err(bad(archive, format!("manifest {} is listed but not in the archive", target.digest)));
    };
    if info.size != target.size {
        return Err(bad(
            archive,
            format!("manifest {} is {} bytes, its descriptor says {}", target.digest, info.size, target.size),
        ));
    }
    match store.manifest(&target.digest, Some(&target.media_type))? {
        Manifest::Image(m) => {
            for desc in std::iter::once(m.config()).chain(m.layers()) {
                let d = descriptor_digest(desc)?;
                if !present(&d)? {
                    return Err(bad(archive, format!("blob {d} is referenced but not in the archive")));
                }
            }
            let config_digest = descriptor_digest(m.config())?;
            let config = crate::manifest::parse_config(&store.content().read_small(&config_digest, MAX_CONFIG_SIZE)?)
                .map_err(|e| bad(archive, format!("config {config_digest}: {e}")))?;
            let (layers, diff_ids) = (m.layers().len(), config.rootfs().diff_ids().len());
            if layers != diff_ids {
                return Err(bad(
                    archive,
                    format!("manifest {} has {layers} layers, its config {diff_ids} diff_ids", target.digest),
                ));
            }
        }
        Manifest::Index(i) => {
            let mut whole = 0;
            for d in i.manifests() {
                let child =
                    Target { digest: descriptor_digest(d)?, media_type: d.media_type().to_string(), size: d.size() };
                if present(&child.digest)? {
                    check_complete(store, &child, archive)?;
                    whole += 1;
                }
            }
            if whole == 0 {
                return Err(bad(archive, format!("index {}: none of its images is in the archive", target.digest)));
            }
        }
    }
    Ok(())
}

fn interpret_docker(store: &ImageStore, staged: &Staged, manifest: &[u8], archive: &str) -> Result<Vec<ImageRecord>> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(manifest).map_err(|source| Error::InvalidJson { what: "manifest.json", source })?;
    let mut out = Vec::new();
    for e in entries {
        let config_digest = staged.digest_of(&e.config, archive)?;
        let config_bytes = store.content().read_small(&config_digest, MAX_CONFIG_SIZE)?;
        let config = parse_config(&config_bytes)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != e.layers.len() {
            return Err(bad(
                archive,
                format!("{} lists {} layers, its config {}", e.config, e.layers.len(), diff_ids.len()),
            ));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(diff_ids) {
            let digest = staged.digest_of(path, archive)?;
            let mut reader = LayerReader::new(store.content().reader(&digest)?, u64::MAX)?;
            let compression = reader.compression();
            let actual = if compression == Compression::None {
                digest.clone()
            } else {
                io::copy(&mut reader, &mut io::sink()).ctx(|| format!("read layer {path}"))?;
                reader.finish()?.0
            };
            if actual.to_string() != *diff_id {
                return Err(bad(archive, format!("layer {path} has diffID {actual}, its config says {diff_id}")));
            }
            let size = store.content().info(&digest)?.map_or(0, |i| i.size);
            layers.push((compression.oci_media_type(), digest, size));
        }
        let descs: Vec<(&str, &Digest, u64)> = layers.iter().map(|(t, d, s)| (*t, d, *s)).collect();
        let bytes = crate::manifest::oci_manifest((&config_digest, config_bytes.len() as u64), &descs)?;
        let target = store.put_manifest(&bytes, media::OCI_MANIFEST)?;
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            out.push(ImageRecord { name: None, target: target.clone() });
        }
        for t in tags {
            // RepoTags are tags: a digest there is refused, as docker refuses it.
            let name: Reference = t.parse().map_err(|e| bad(archive, format!("RepoTags {t:?}: {e}")))?;
            if name.digest().is_some() {
                return Err(bad(archive, format!("RepoTags {t:?} is not a tag")));
            }
            out.push(ImageRecord { name: Some(name), target: target.clone() });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ImportOptions;

    fn rootfs() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/motd", &b"hi\n"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn store_with_image(name: &str) -> (ImageStore, tempfile::TempDir, ImageRecord) {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let opts = ImportOptions {
            compression: Compression::Gzip,
            message: None,
            source: "-".into(),
            platform: None,
            config: None,
        };
        let rec = s.import_rootfs(&rootfs()[..], Some(&name.parse().unwrap()), &opts).unwrap();
        (s, d, rec)
    }

    type RoundTrip = (ImageRecord, Vec<ImageRecord>, ImageStore, ImageStore, [tempfile::TempDir; 2]);

    fn round_trip(write: fn(&ImageStore, &[ImageRecord], &mut dyn Sink) -> Result<()>) -> RoundTrip {
        let (a, da, rec) = store_with_image("example.com/app:v1");
        let mut sink = TarSink::new(Vec::new());
        write(&a, std::slice::from_ref(&rec), &mut sink).unwrap();
        let tar = sink.finish().unwrap();
        let db = tempfile::tempdir().unwrap();
        let b = ImageStore::open(db.path()).unwrap();
        let loaded = load_tar(&b, &tar[..], "test.tar").unwrap();
        (rec, loaded, a, b, [da, db])
    }

    #[test]
    fn oci_archive_round_trips_the_same_manifest() {
        let (rec, loaded, _, b, _dirs) = round_trip(write_oci);
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].target, rec.target);
        assert_eq!(loaded[0].name.as_ref().unwrap().to_string(), "example.com/app:v1");
        assert!(b.image(&loaded[0].target).is_ok());
    }

    #[test]
    fn docker_archive_round_trips_the_same_image_id() {
        let (rec, loaded, a, b, _dirs) = round_trip(write_docker);
        assert_eq!(loaded[0].name.as_ref().unwrap().to_string(), "example.com/app:v1");
        let before = a.image(&rec.target).unwrap();
        let after = b.image(&loaded[0].target).unwrap();
        assert_eq!(before.id, after.id, "the config, and so the image ID, must survive");
        // Layers come back uncompressed, so their digest is their diffID.
        assert_eq!(after.manifest.layers()[0].digest().to_string(), after.config.rootfs().diff_ids()[0]);
    }

    #[test]
    fn one_image_under_several_names_is_one_docker_entry_with_each_tag_once() {
        let (a, _da, rec) = store_with_image("example.com/app:v1");
        let other = ImageRecord { name: Some("other:2".parse().unwrap()), target: rec.target.clone() };
        let mut sink = TarSink::new(Vec::new());
        write_docker(&a, &[rec.clone(), other, rec], &mut sink).unwrap();
        let tar = sink.finish().unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let manifest = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
            .map(|mut e| {
                let mut text = String::new();
                io::Read::read_to_string(&mut e, &mut text).unwrap();
                text
            })
            .unwrap();
        let entries: Vec<DockerEntry> = serde_json::from_str(&manifest).unwrap();
        assert_eq!(entries.len(), 1, "{manifest}");
        assert_eq!(entries[0].repo_tags.as_deref(), Some(&["example.com/app:v1".to_owned(), "other:2".to_owned()][..]));
    }

    #[test]
    fn oci_index_json_is_byte_for_byte_reproducible() {
        let (a, _da, rec) = store_with_image("example.com/app:v1");
        let outs: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                let mut sink = TarSink::new(Vec::new());
                write_oci(&a, std::slice::from_ref(&rec), &mut sink).unwrap();
                sink.finish().unwrap()
            })
            .collect();
        assert!(outs.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn oci_dir_round_trips() {
        let (a, _da, rec) = store_with_image("app");
        let out = tempfile::tempdir().unwrap();
        write_oci(&a, std::slice::from_ref(&rec), &mut DirSink(out.path().to_owned())).unwrap();
        let db = tempfile::tempdir().unwrap();
        let b = ImageStore::open(db.path()).unwrap();
        let loaded = load_oci_dir(&b, out.path()).unwrap();
        assert_eq!(loaded[0].target, rec.target);
    }

    #[test]
    fn a_blob_that_does_not_match_its_name_is_refused() {
        let mut sink = TarSink::new(Vec::new());
        let fake = Digest::of(b"claimed");
        sink.file(&blob_path(&fake), 6, &mut &b"actual"[..]).unwrap();
        let tar = sink.finish().unwrap();
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let err = load_tar(&s, &tar[..], "evil.tar").unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(!s.content().contains(&fake).unwrap());
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        assert_eq!(clean("./a/./b"), Some("a/b".into()));
        assert_eq!(clean("a/../b"), Some("b".into()));
        assert_eq!(clean("../x"), None);
        assert_eq!(clean("a/../../x"), None);
    }

    #[test]
    fn archive_missing_a_layer_is_refused() {
        let (a, _da, rec) = store_with_image("app");
        let img = a.image(&rec.target).unwrap();
        let mut sink = TarSink::new(Vec::new());
        write_oci(&a, std::slice::from_ref(&rec), &mut sink).unwrap();
        let tar = sink.finish().unwrap();
        // Rebuild the archive without the layer blob.
        let layer = blob_path(&descriptor_digest(&img.manifest.layers()[0]).unwrap());
        let mut out = tar::Builder::new(Vec::new());
        let mut src = tar::Archive::new(&tar[..]);
        for e in src.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() != layer {
                let mut h = e.header().clone();
                let p = e.path().unwrap().into_owned();
                out.append_data(&mut h, p, &mut e).unwrap();
            }
        }
        let tar = out.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let err = load_tar(&s, &tar[..], "partial.tar").unwrap_err();
        assert!(err.to_string().contains("not in the archive"), "{err}");
        assert!(s.list().unwrap().is_empty());
        let mut blobs = 0;
        s.content()
            .walk(&mut |_| {
                blobs += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(blobs, 0, "a failed load leaves no blobs behind");
    }

    /// An OCI archive of one image made of `config` and `layers` (plain tars), named `name`
    /// in index.json; `index` may change the index's manifest descriptor first.
    fn oci_archive(
        config: &[u8],
        layers: &[Vec<u8>],
        name: &str,
        index: impl FnOnce(&mut serde_json::Value),
    ) -> Vec<u8> {
        let mut sink = TarSink::new(Vec::new());
        let mut put = |bytes: &[u8]| {
            let d = Digest::of(bytes);
            sink.file(&blob_path(&d), bytes.len() as u64, &mut &bytes[..]).unwrap();
            d
        };
        let cd = put(config);
        let ls: Vec<(Digest, u64)> = layers.iter().map(|l| (put(l), l.len() as u64)).collect();
        let descs: Vec<(&str, &Digest, u64)> = ls.iter().map(|(d, n)| (media::OCI_LAYER, d, *n)).collect();
        let manifest = crate::manifest::oci_manifest((&cd, config.len() as u64), &descs).unwrap();
        let md = put(&manifest);
        let mut desc = serde_json::json!({
            "mediaType": media::OCI_MANIFEST, "digest": md.to_string(), "size": manifest.len(),
            "annotations": {ANNOTATION_IMAGE_NAME: name},
        });
        index(&mut desc);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [desc],
        }))
        .unwrap();
        sink.file("index.json", index.len() as u64, &mut &index[..]).unwrap();
        sink.finish().unwrap()
    }

    fn config_json(diff_ids: &[&Vec<u8>]) -> Vec<u8> {
        let ids: Vec<String> = diff_ids.iter().map(|l| Digest::of(l).to_string()).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ids},
        }))
        .unwrap()
    }

    fn refused(store: &ImageStore, tar: &[u8]) -> String {
        load_tar(store, tar, "t.tar").unwrap_err().to_string()
    }

    /// `tar` with the JSON file `name` changed by `edit`, and `extra` files added at the end.
    fn edited(
        tar: &[u8],
        name: &str,
        edit: impl FnOnce(&mut serde_json::Value),
        extra: &[(String, Vec<u8>)],
    ) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        let mut edit = Some(edit);
        let add = |out: &mut tar::Builder<Vec<u8>>, path: &Path, bytes: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.append_data(&mut h, path, bytes).unwrap();
        };
        for e in tar::Archive::new(tar).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            if path.to_string_lossy() == name {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                (edit.take().unwrap())(&mut v);
                bytes = serde_json::to_vec(&v).unwrap();
            }
            add(&mut out, &path, &bytes);
        }
        for (path, bytes) in extra {
            add(&mut out, Path::new(path), bytes);
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn a_load_that_fails_names_nothing_and_leaves_existing_names_alone() {
        let (b, _db, before) = store_with_image("busybox:latest");
        let (a, _da, rec) = store_with_image("app:v1");
        let mut sink = TarSink::new(Vec::new());
        write_docker(&a, std::slice::from_ref(&rec), &mut sink).unwrap();
        // The same archive with RepoTags of a good name then a bad one.
        let tar = edited(
            &sink.finish().unwrap(),
            "manifest.json",
            |m| m[0]["RepoTags"] = serde_json::json!(["busybox:latest", "Bad Name!"]),
            &[],
        );
        let err = refused(&b, &tar);
        assert!(err.contains("Bad Name!"), "{err}");
        let still = b.resolve("busybox:latest").unwrap();
        assert_eq!(still.target, before.target, "the existing tag was taken over by a load that failed");
        assert!(b.image(&still.target).is_ok());
    }

    #[test]
    fn a_name_that_pins_another_digest_is_refused_in_archives_and_in_the_store() {
        let layer = rootfs();
        let other = "sha256:abababababababababababababababababababababababababababababababab";
        let tar =
            oci_archive(&config_json(&[&layer]), std::slice::from_ref(&layer), &format!("alpine@{other}"), |_| ());
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        assert!(refused(&s, &tar).contains("pins a digest"));
        assert!(s.list().unwrap().is_empty());
        let (a, _da, rec) = store_with_image("app:v1");
        let spoof: Reference = format!("alpine@{other}").parse().unwrap();
        assert!(a.set_name(&spoof, &rec.target).is_err(), "a digest reference names only its own manifest");
        let own: Reference = format!("alpine@{}", rec.target.digest).parse().unwrap();
        a.set_name(&own, &rec.target).unwrap();
    }

    #[test]
    fn images_the_store_could_not_use_are_refused_at_load() {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let (one, two) = (rootfs(), b"second layer".to_vec());
        let not_json = oci_archive(b"this is not json", std::slice::from_ref(&one), "a:1", |_| ());
        assert!(refused(&s, &not_json).contains("image config"), "{}", refused(&s, &not_json));
        let short = oci_archive(&config_json(&[&one]), &[one.clone(), two], "a:1", |_| ());
        assert!(refused(&s, &short).contains("2 layers, its config 1 diff_ids"));
        let lying = oci_archive(&config_json(&[&one]), std::slice::from_ref(&one), "a:1", |d| d["size"] = 1.into());
        assert!(refused(&s, &lying).contains("its descriptor says 1"));
        // An index whose one child is not in the archive.
        let child =
            serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": Digest::of(b"gone").to_string(), "size": 4});
        let index = serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [child]}),
        )
        .unwrap();
        let good = oci_archive(&config_json(&[&one]), std::slice::from_ref(&one), "a:1", |_| ());
        let point = |v: &mut serde_json::Value| {
            let d = &mut v["manifests"][0];
            d["mediaType"] = media::OCI_INDEX.into();
            d["digest"] = Digest::of(&index).to_string().into();
            d["size"] = index.len().into();
        };
        let tar = edited(&good, "index.json", point, &[(blob_path(&Digest::of(&index)), index.clone())]);
        let err = refused(&s, &tar);
        assert!(err.contains("none of its images is in the archive"), "{err}");
        assert!(s.list().unwrap().is_empty(), "nothing was named");
    }

    #[test]
    fn a_layout_blob_that_is_not_a_regular_file_is_refused_without_hanging() {
        let (a, _da, rec) = store_with_image("app");
        for special in ["fifo", "device"] {
            let out = tempfile::tempdir().unwrap();
            write_oci(&a, std::slice::from_ref(&rec), &mut DirSink(out.path().to_owned())).unwrap();
            let extra = out.path().join("blobs/sha256").join("ab".repeat(32));
            match special {
                "fifo" => rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &extra,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o644),
                    0,
                )
                .unwrap(),
                _ => std::os::unix::fs::symlink("/dev/zero", &extra).unwrap(),
            }
            let db = tempfile::tempdir().unwrap();
            let b = ImageStore::open(db.path()).unwrap();
            let err = load_oci_dir(&b, out.path()).unwrap_err().to_string();
            assert!(err.contains("must be regular files"), "{special}: {err}");
        }
    }
}
