//! The local image store under `$BERTH_ROOT`: the content store plus an index of names.
//!
//! ```text
//! $BERTH_ROOT/
//!   content/blobs/sha256/<hex>   every manifest, config and layer, by digest (LocalStore)
//!   content/ingest/              blobs being written; renamed into blobs/ once verified
//!   index/                       rocksdb: "name/<reference>" and "dangling/<digest>" -> Target
//!   index.lock                   flock held while the index is open
//!   index.gen                    a token every index write replaces first (see below)
//!   index-cache/<sha256 of key>  name lookups answered without opening rocksdb
//!   layer-sizes/<diffID hex>     a layer's unpacked (uncompressed tar) size, in decimal
//!   layer-twins/<diffID hex>.<c> the compressed twin push made of a plain layer (crate::twin)
//!   tmp/                         scratch space (decompressed layers for docker archives)
//! ```
//!
//! The index is opened for each operation under an exclusive `flock`, so any number of
//! berth processes can share one root: they take turns for the few milliseconds an index
//! operation lasts, and blobs are written without any lock at all (they are atomic).
//!
//! Opening rocksdb costs about a millisecond, which is most of what `berth run` spends before
//! its container starts. So a name lookup leaves its answer in `index-cache/`, stamped with the
//! index's generation; every write to the index replaces the generation (under the lock, before
//! it changes anything), so a stamped answer is current exactly while its stamp is. The cache is
//! only ever a copy: deleting `index-cache/` loses nothing.
//!
//! `berth images` shows an image's unpacked size, as docker does: the sum of its layers'
//! uncompressed sizes. Import and commit record a layer's size in `layer-sizes/` as they
//! write it; for any other layer the size is found once (the builder keeps the uncompressed
//! blob, whose size is a stat away; otherwise the layer is decompressed and counted) and
//! recorded. A diffID's size never changes, so entries are never stale, and deleting the
//! directory only costs finding the sizes again.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_spec::image::{HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, ImageManifest, RootFsBuilder};
use serde::{Deserialize, Serialize};

use crate::content::{ContentStore, Expected, LocalStore};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, IoContext, Result};
use crate::layer::{Compression, LayerInfo, LayerWriter};
use crate::manifest::{descriptor_digest, parse_config, Manifest, MAX_MANIFEST_SIZE};
use crate::media;
use crate::platform::Platform;
use crate::reference::Reference;

/// The largest image config berth reads (configs are small JSON documents).
pub const MAX_CONFIG_SIZE: u64 = 8 * 1024 * 1024;

/// What a name points at: a manifest or index, as a descriptor would give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Digest of the manifest or index.
    pub digest: Digest,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One entry of the index: a name (or none, for an untagged image) and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The reference the image is stored under; `None` for a dangling image.
    pub name: Option<Reference>,
    /// The manifest it points at.
    pub target: Target,
}

/// A single-platform image, resolved and read: what `inspect`, `history` and `run` need.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest (for an index, the host platform's child).
    pub manifest: ImageManifest,
    /// Digest of that manifest.
    pub manifest_digest: Digest,
    /// The config document.
    pub config: ImageConfiguration,
    /// The config as stored (what its digest covers).
    pub config_bytes: Vec<u8>,
    /// The config's digest: the image ID, as docker shows it.
    pub id: Digest,
}

impl Image {
    /// Bytes of content the image occupies: config plus its (stored) layers.
    pub fn size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }

    /// When the image was created, from its config.
    pub fn created(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.config.created().as_deref().and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()).map(|t| t.to_utc())
    }
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Image IDs (config digests) of the untagged images dropped from the index.
    pub images: Vec<Digest>,
    /// Blobs deleted.
    pub blobs: usize,
    /// Bytes reclaimed.
    pub bytes: u64,
}

/// The local image store; see the module docs for the layout and the locking.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    content: LocalStore,
}

const NAME_PREFIX: &str = "name/";
const DANGLING_PREFIX: &str = "dangling/";
const SOURCE_PREFIX: &str = "source/";
const GENERATION: &str = "index.gen";
const NAME_CACHE: &str = "index-cache";
const LAYER_SIZES: &str = "layer-sizes";

/// A remembered answer of [`ImageStore::get`]: valid while `generation` is the index's.
#[derive(Serialize, Deserialize)]
struct CachedName {
    generation: String,
    key: String,
    target: Target,
}

impl ImageStore {
    /// Where the store lives unless told otherwise: `$BERTH_ROOT`, else `/var/lib/berth`
    /// for root, else `$XDG_DATA_HOME/berth` or `~/.local/share/berth`.
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("BERTH_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/berth");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("berth");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/share/berth")
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in ["index", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
        }
        // Build steps mount their root filesystems below tmp/: no other user may reach them
        // (a setuid program of an image would run as root for anyone).
        let tmp = root.join("tmp");
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .ctx(|| format!("make {} private", tmp.display()))?;
        let content = LocalStore::open(root.join("content"))?;
        let store = ImageStore { root, content };
        if !store.root.join("index/CURRENT").exists() {
            store.with_index(|_| Ok(()))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blobs.
    pub fn content(&self) -> &LocalStore {
        &self.content
    }

    /// A scratch directory on the same filesystem as the store.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Runs `f` on the index opened read-write, under the exclusive lock.
    fn with_index<T>(&self, f: impl FnOnce(&rocksdb::DB) -> Result<T>) -> Result<T> {
        self.open_index(false, f)
    }

    /// Runs `f` on the index opened read-only (no write-ahead log is created), under the lock.
    fn read_index<T>(&self, f: impl FnOnce(&rocksdb::DB) -> Result<T>) -> Result<T> {
        self.open_index(true, f)
    }

    fn open_index<T>(&self, read_only: bool, f: impl FnOnce(&rocksdb::DB) -> Result<T>) -> Result<T> {
        let lock_path = self.root.join("index.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx(|| format!("open {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e.into()))?;
        if !read_only {
            // Before anything changes: from here on no cached answer is taken as current.
            self.new_generation()?;
        }
        let path = self.root.join("index");
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(2);
        opts.set_max_open_files(64);
        // An index this small opens in well under a millisecond if rocksdb does not start its
        // helpers: sixteen table-opening threads and the stats timer are most of an open's cost.
        opts.set_max_file_opening_threads(1);
        opts.set_stats_dump_period_sec(0);
        opts.set_stats_persist_period_sec(0);
        opts.set_skip_stats_update_on_db_open(true);
        let db = if read_only {
            rocksdb::DB::open_for_read_only(&opts, &path, false)
        } else {
            rocksdb::DB::open(&opts, &path)
        }
        .map_err(|source| Error::Index { path: path.clone(), source })?;
        let out = f(&db);
        drop(db);
        drop(lock);
        out
    }

    fn index_err(&self) -> impl Fn(rocksdb::Error) -> Error + '_ {
        move |source| Error::Index { path: self.root.join("index"), source }
    }

    /// Points `name` at `target`, replacing what it pointed at before. A name with a digest
    /// names that manifest, or one platform's image of that index (a multi-platform image
    /// pulled by its digest).
    pub fn set_name(&self, name: &Reference, target: &Target) -> Result<()> {
        if name.digest().is_some_and(|d| d != &target.digest && !self.index_holds(d, &target.digest)) {
            return Err(Error::InvalidReference {
                input: name.to_string(),
                reason: "its digest is not the digest of the image it would name",
            });
        }
        let value = serde_json::to_vec(target).map_err(|source| Error::InvalidJson { what: "index entry", source })?;
        self.with_index(|db| {
            let key = format!("{NAME_PREFIX}{name}");
            let mut batch = rocksdb::WriteBatch::default();
            // The image this name leaves stays, untagged, unless another name keeps it, or
            // the name moves to another manifest of the same image (a load of what is there,
            // a push's compressed twin): docker's images are their IDs, and one is no orphan.
            if let Some(old) = db.get(&key).map_err(self.index_err())?.map(|v| parse_target(&v)).transpose()? {
                let same_image = || !media::is_index(&old.media_type) && self.own_id(&old) == self.own_id(target);
                if old.digest != target.digest && !same_image() && !named_elsewhere(db, &key, &old.digest)? {
                    batch.put(format!("{DANGLING_PREFIX}{}", old.digest), serde_json::to_vec(&old).unwrap_or_default());
                }
            }
            batch.put(&key, &value);
            // A name makes the image no longer dangling.
            batch.delete(format!("{DANGLING_PREFIX}{}", target.digest));
            db.write(batch).map_err(self.index_err())
        })
    }

    /// Whether `index` is an index in the store that lists the manifest `child`.
    fn index_holds(&self, index: &Digest, child: &Digest) -> bool {
        let Ok(Manifest::Index(ix)) = self.manifest(index, None) else { return false };
        ix.manifests().iter().any(|d| descriptor_digest(d).is_ok_and(|c| &c == child))
    }

    /// Records an image that has no name (docker's `<none>:<none>`).
    pub fn add_dangling(&self, target: &Target) -> Result<()> {
        let value = serde_json::to_vec(target).map_err(|source| Error::InvalidJson { what: "index entry", source })?;
        self.with_index(|db| {
            // An image that has a name is not dangling.
            if named_elsewhere(db, "", &target.digest)? {
                return Ok(());
            }
            db.put(format!("{DANGLING_PREFIX}{}", target.digest), &value).map_err(self.index_err())
        })
    }

    /// Removes a name; returns what it pointed at.
    pub fn remove_name(&self, name: &Reference) -> Result<Option<Target>> {
        self.with_index(|db| {
            let key = format!("{NAME_PREFIX}{name}");
            // Stale already (the generation moved); removed so that gone names leave nothing.
            match fs::remove_file(self.cache_path(&key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).ctx(|| format!("remove the cached lookup of {name}"));
                }
                _ => {}
            }
            let old = db.get(&key).map_err(self.index_err())?;
            db.delete(&key).map_err(self.index_err())?;
            old.map(|v| parse_target(&v)).transpose()
        })
    }

    /// Removes an untagged image record.
    pub fn remove_dangling(&self, digest: &Digest) -> Result<bool> {
        self.with_index(|db| {
            let key = format!("{DANGLING_PREFIX}{digest}");
            let existed = db.get(&key).map_err(self.index_err())?.is_some();
            db.delete(&key).map_err(self.index_err())?;
            Ok(existed)
        })
    }

    /// What `name` points at, if anything. Answered from `index-cache/` when the index has
    /// not been written since the answer was cached (see the module docs).
    pub fn get(&self, name: &Reference) -> Result<Option<Target>> {
        let key = format!("{NAME_PREFIX}{name}");
        if let Some(target) = self.cached(&key) {
            return Ok(Some(target));
        }
        self.read_index(|db| {
            let target = db.get(&key).map_err(self.index_err())?.map(|v| parse_target(&v)).transpose()?;
            if let Some(t) = &target {
                self.remember(&key, t);
            }
            Ok(target)
        })
    }

    /// The index's current generation; None before the first write that made one.
    fn generation(&self) -> Option<String> {
        fs::read_to_string(self.root.join(GENERATION)).ok()
    }

    /// Replaces the generation with a token no earlier write used. Called under the lock.
    ///
    /// The token must never repeat, or an answer cached before a write would pass for
    /// current after it: a coarse or stepped clock can give one process the same time twice,
    /// so 64 random bits (std's per-process random hash keys) come with the time and pid.
    /// It is synced before it replaces the old one, and the directory after: rocksdb's
    /// write may reach the disk, so after a power cut the old token must not come back.
    fn new_generation(&self) -> Result<()> {
        use std::hash::BuildHasher;
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let random = std::collections::hash_map::RandomState::new().hash_one(nanos);
        let token = format!("{nanos:x}-{:x}-{random:016x}", std::process::id());
        let path = self.root.join(GENERATION);
        let tmp = self.root.join(format!("{GENERATION}.{token}"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(token.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.root)?.sync_all()
        };
        write()
            .inspect_err(|_| {
                let _gone = fs::remove_file(&tmp);
            })
            .ctx(|| format!("write {}", path.display()))
    }

    /// Forgets every cached name lookup (they are only copies; the next lookups cache again).
    fn clear_name_cache(&self) -> Result<()> {
        let dir = self.root.join(NAME_CACHE);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx(|| format!("remove {}", dir.display())),
            _ => Ok(()),
        }
    }

    fn cache_path(&self, key: &str) -> PathBuf {
        self.root.join(NAME_CACHE).join(Digest::of(key.as_bytes()).hex())
    }

    /// The cached target of `key`, if it was cached at the current generation.
    fn cached(&self, key: &str) -> Option<Target> {
        let generation = self.generation()?;
        let bytes = fs::read(self.cache_path(key)).ok()?;
        let entry: CachedName = serde_json::from_slice(&bytes).ok()?;
        (entry.generation == generation && entry.key == key).then_some(entry.target)
    }

    /// Caches `target` as the answer for `key` at the current generation. Called under the
    /// lock, after reading the index. A cache that cannot be written (a read-only root) only
    /// means the next lookup opens the index again, so failures here are not errors.
    fn remember(&self, key: &str, target: &Target) {
        // The first lookup in a store no write has stamped yet makes the first generation.
        let Some(generation) =
            self.generation().or_else(|| self.new_generation().ok().and_then(|()| self.generation()))
        else {
            return;
        };
        let entry = CachedName { generation, key: key.to_owned(), target: target.clone() };
        let Ok(bytes) = serde_json::to_vec(&entry) else { return };
        let path = self.cache_path(key);
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = fs::create_dir_all(self.root.join(NAME_CACHE))
            .and_then(|()| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            let _gone = fs::remove_file(&tmp);
        }
    }

    /// Every record, named ones first in name order, then the dangling ones.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.read_index(|db| {
            let mut out = Vec::new();
            for item in db.iterator(rocksdb::IteratorMode::Start) {
                let (k, v) = item.map_err(self.index_err())?;
                let key = String::from_utf8_lossy(&k);
                let name = if let Some(n) = key.strip_prefix(NAME_PREFIX) {
                    Some(n.parse()?)
                } else if key.starts_with(DANGLING_PREFIX) {
                    None
                } else {
                    // Other records (blob sources) share the index.
                    continue;
                };
                out.push(ImageRecord { name, target: parse_target(&v)? });
            }
            Ok(out)
        })
    }

    /// Finds an image by name, by image ID (config digest, full or a prefix of at least
    /// four hex characters, with or without `sha256:`), or by manifest digest.
    ///
    /// An ID finds the records that are that image (their own ID or manifest digest
    /// matches, see [`ImageStore::own_id`]) before any index that merely contains it, so an
    /// image ID never lands on a manifest list made of the image. Only when no record is the
    /// image does an index whose host image has that ID answer (a pulled multi-platform image
    /// by its image's config digest).
    pub fn resolve(&self, what: &str) -> Result<ImageRecord> {
        // A name wins over an ID prefix, as in docker: `ff4c` may be a repository.
        if let Ok(name) = what.parse::<Reference>() {
            if name.digest().is_none() {
                if let Some(target) = self.get(&name)? {
                    return Ok(ImageRecord { name: Some(name), target });
                }
            }
        }
        let hexish = what.strip_prefix("sha256:").unwrap_or(what);
        let looks_like_id = hexish.len() >= 4 && hexish.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if looks_like_id {
            if let Some(rec) = self.resolve_id(what, hexish)? {
                return Ok(rec);
            }
        }
        let name: Reference = what.parse()?;
        if let Some(target) = self.get(&name)? {
            // Stored under exactly this reference (a pull by digest).
            return Ok(ImageRecord { name: Some(name), target });
        }
        if let Some(digest) = name.digest() {
            // name@digest: any record of that repository with that manifest will do.
            let repo = name.repository();
            if let Some(rec) = self
                .list()?
                .into_iter()
                .find(|r| &r.target.digest == digest && r.name.as_ref().is_none_or(|n| n.repository() == repo))
            {
                return Ok(ImageRecord { name: Some(name.clone()), target: rec.target });
            }
            return Err(Error::ImageNotFound(what.to_owned()));
        }
        Err(Error::ImageNotFound(what.to_owned()))
    }

    /// The ID an image goes by, as `images` and `inspect` show it and as resolving and
    /// `rmi` by ID match it: an image's config digest (its manifest's digest when the image
    /// cannot be read); an index's own digest, never the ID of an image inside it.
    pub fn own_id(&self, target: &Target) -> Digest {
        if media::is_index(&target.media_type) {
            return target.digest.clone();
        }
        self.image(target).map(|img| img.id).unwrap_or_else(|_| target.digest.clone())
    }

    /// `resolve` of a hex prefix: the records that are the image first, then (only if there
    /// are none) the indexes whose host image has that ID. `None` when nothing matches.
    fn resolve_id(&self, what: &str, hexish: &str) -> Result<Option<ImageRecord>> {
        let records = self.list()?;
        // Each match with what it is. Records of one image under several manifests (loaded
        // from an OCI archive and from a docker archive) are one image, as docker has them.
        let mut found: Vec<(ImageRecord, Digest)> = Vec::new();
        for rec in &records {
            let id = self.own_id(&rec.target);
            if id.hex().starts_with(hexish) || rec.target.digest.hex().starts_with(hexish) {
                found.push((rec.clone(), id));
            }
        }
        if found.is_empty() {
            for rec in records.into_iter().filter(|r| media::is_index(&r.target.media_type)) {
                if self.image(&rec.target).is_ok_and(|img| img.id.hex().starts_with(hexish)) {
                    let id = rec.target.digest.clone();
                    found.push((rec, id));
                }
            }
        }
        let mut identities: Vec<&Digest> = found.iter().map(|(_, i)| i).collect();
        identities.sort();
        identities.dedup();
        match identities.len() {
            0 => Ok(None),
            1 => Ok(Some(found.remove(0).0)),
            _ => Err(Error::AmbiguousImage(what.to_owned())),
        }
    }

    /// Reads a manifest or index blob.
    pub fn manifest(&self, digest: &Digest, media_type: Option<&str>) -> Result<Manifest> {
        let bytes = self.content.read_small(digest, MAX_MANIFEST_SIZE as u64)?;
        Manifest::parse(&bytes, media_type)
    }

    /// Resolves `target` to the host platform's image and reads its manifest and config.
    pub fn image(&self, target: &Target) -> Result<Image> {
        self.image_for(target, &Platform::host())
    }

    /// Resolves `target` to `platform`'s image (an index's entry for it; an image manifest
    /// is taken as it is) and reads its manifest and config.
    pub fn image_for(&self, target: &Target, platform: &Platform) -> Result<Image> {
        let mut digest = target.digest.clone();
        let mut media_type = target.media_type.clone();
        for _ in 0..4 {
            match self.manifest(&digest, Some(&media_type))? {
                Manifest::Image(manifest) => {
                    let id = descriptor_digest(manifest.config())?;
                    let config_bytes = self.content.read_small(&id, MAX_CONFIG_SIZE)?;
                    let config = parse_config(&config_bytes)?;
                    return Ok(Image { manifest, manifest_digest: digest, config, config_bytes, id });
                }
                Manifest::Index(index) => {
                    let only = (index.manifests().len() == 1 && platform.is_host()).then(|| &index.manifests()[0]);
                    let pick = platform.pick(&index).or(only).ok_or_else(|| {
                        Error::ImageNotFound(format!("{} has no image for {platform}", target.digest))
                    })?;
                    digest = descriptor_digest(pick)?;
                    media_type = pick.media_type().to_string();
                }
            }
        }
        Err(Error::InvalidDocument { what: "index", reason: "indexes nested more than 4 deep".into() })
    }

    /// True when every layer of the image `target` (the host's platform, for an index) is
    /// in the content store: an image pulled lazily (manifest and config) is not.
    pub fn is_whole(&self, target: &Target) -> Result<bool> {
        for l in self.image(target)?.manifest.layers() {
            if !self.content.contains(&descriptor_digest(l)?)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every blob reachable from `target`: the manifest or index, children, configs, layers.
    /// Children that are absent (a partial multi-platform pull) are skipped.
    pub fn reachable(&self, target: &Target, out: &mut std::collections::BTreeSet<Digest>) -> Result<()> {
        if !out.insert(target.digest.clone()) {
            return Ok(());
        }
        match self.manifest(&target.digest, Some(&target.media_type))? {
            Manifest::Image(m) => {
                out.insert(descriptor_digest(m.config())?);
                for l in m.layers() {
                    out.insert(descriptor_digest(l)?);
                }
            }
            Manifest::Index(i) => {
                for d in i.manifests() {
                    let child = Target {
                        digest: descriptor_digest(d)?,
                        media_type: d.media_type().to_string(),
                        size: d.size(),
                    };
                    if self.content.contains(&child.digest)? {
                        self.reachable(&child, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops untagged images (but those whose manifest digest is in `spare`: the images of
    /// containers) and deletes blobs no image reaches, sparing blobs (and ingests) younger
    /// than `grace` so that a concurrent build or pull is never robbed.
    pub fn prune(&self, grace: Duration, spare: &std::collections::HashSet<Digest>) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for rec in self.list()? {
            if rec.name.is_none() && !spare.contains(&rec.target.digest) {
                let id = self.image(&rec.target).map(|i| i.id).unwrap_or_else(|_| rec.target.digest.clone());
                if self.remove_dangling(&rec.target.digest)? {
                    report.images.push(id);
                }
            }
        }
        let mut live = std::collections::BTreeSet::new();
        for rec in self.list()? {
            self.reachable(&rec.target, &mut live)?;
        }
        let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut doomed = Vec::new();
        self.content.walk(&mut |info| {
            if !live.contains(&info.digest) && info.committed < cutoff {
                doomed.push(info);
            }
            Ok(())
        })?;
        for info in doomed {
            if self.content.delete(&info.digest)? {
                report.blobs += 1;
                report.bytes += info.size;
            }
        }
        report.bytes += self.content.remove_stale_ingests(cutoff)?;
        // Cached lookups of names that are gone would otherwise stay forever.
        self.clear_name_cache()?;
        Ok(report)
    }

    /// Deletes those of `candidates` that no remaining image reaches (what `rmi` frees).
    pub fn delete_unreferenced(&self, candidates: &std::collections::BTreeSet<Digest>) -> Result<Vec<Digest>> {
        let mut live = std::collections::BTreeSet::new();
        for rec in self.list()? {
            self.reachable(&rec.target, &mut live)?;
        }
        let mut deleted = Vec::new();
        for d in candidates.difference(&live) {
            if self.content.delete(d)? {
                deleted.push(d.clone());
            }
        }
        Ok(deleted)
    }

    /// Records that `repository` (`domain/path`) of a registry has the blob `digest`, so a
    /// later push to another repository there can mount it instead of uploading.
    pub fn add_source(&self, digest: &Digest, repository: &str) -> Result<()> {
        self.add_sources(std::iter::once(digest), repository)
    }

    /// [`ImageStore::add_source`] for many blobs in one write: each opening of the index
    /// costs milliseconds, and a push or pull records every blob it moved.
    pub fn add_sources<'d>(&self, digests: impl IntoIterator<Item = &'d Digest>, repository: &str) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for d in digests {
            batch.put(format!("{SOURCE_PREFIX}{d}/{repository}"), b"");
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.with_index(|db| db.write(batch).map_err(self.index_err()))
    }

    /// [`ImageStore::sources`] of each of `digests`, in one reading of the index.
    pub fn sources_of(&self, digests: &[Digest]) -> Result<Vec<Vec<String>>> {
        self.read_index(|db| digests.iter().map(|d| self.sources_in(db, d)).collect())
    }

    /// The repositories known to have `digest`.
    pub fn sources(&self, digest: &Digest) -> Result<Vec<String>> {
        self.read_index(|db| self.sources_in(db, digest))
    }

    fn sources_in(&self, db: &rocksdb::DB, digest: &Digest) -> Result<Vec<String>> {
        let prefix = format!("{SOURCE_PREFIX}{digest}/");
        let mut out = Vec::new();
        for item in db.prefix_iterator(prefix.as_bytes()) {
            let (k, _) = item.map_err(self.index_err())?;
            match std::str::from_utf8(&k).ok().and_then(|k| k.strip_prefix(&prefix)) {
                Some(repo) => out.push(repo.to_owned()),
                None => break,
            }
        }
        Ok(out)
    }

    /// Stores a manifest document and returns its target.
    pub fn put_manifest(&self, bytes: &[u8], media_type: &str) -> Result<Target> {
        let digest = self.content.put(bytes)?;
        Ok(Target { digest, media_type: media_type.to_owned(), size: bytes.len() as u64 })
    }

    /// `docker import`: turns a rootfs tarball (plain, gzip or zstd) into a one-layer image
    /// named `name` (or untagged). The tar is checked entry by entry as it streams through.
    pub fn import_rootfs(
        &self,
        tarball: impl Read,
        name: Option<&Reference>,
        opts: &ImportOptions,
    ) -> Result<ImageRecord> {
        let mut reader = crate::layer::LayerReader::new(tarball, u64::MAX)?;
        let ingest = self.content.writer(Algorithm::Sha256)?;
        let mut layer = LayerWriter::into_ingest(ingest, opts.compression, None)?;
        copy_checking_tar(&mut reader, &mut layer)?;
        let (ingest, info) = layer.finish()?;
        ingest.commit(Expected::exactly(&info.digest, info.size))?;
        self.record_unpacked_size(&info.diff_id, info.uncompressed_size);
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);
        let config = match &opts.config {
            Some(c) => serde_json::from_value(c.clone())
                .map_err(|source| Error::InvalidJson { what: "image config", source })?,
            None => oci_spec::image::ConfigBuilder::default().build().map_err(doc_err("image config"))?,
        };
        let record = self.commit_image(&[info], &opts.history_line(), (&platform, config), name)?;
        Ok(record)
    }

    /// Writes config (with `process`, its `config` object) and manifest for `layers` with one
    /// history entry per layer, and names it.
    fn commit_image(
        &self,
        layers: &[LayerInfo],
        created_by: &HistoryEntry,
        (platform, process): (&Platform, oci_spec::image::Config),
        name: Option<&Reference>,
    ) -> Result<ImageRecord> {
        let created = created_by.created.clone();
        let history = layers
            .iter()
            .map(|_| {
                HistoryBuilder::default()
                    .created(created.clone())
                    .created_by(created_by.created_by.clone())
                    .comment(created_by.comment.clone())
                    .build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(doc_err("image config"))?;
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>())
            .build()
            .map_err(doc_err("image config"))?;
        let config = ImageConfigurationBuilder::default()
            .created(created)
            .architecture(platform.architecture.as_str())
            .os(platform.os.as_str())
            .rootfs(rootfs)
            .history(history)
            .config(process)
            .build()
            .map_err(doc_err("image config"))?;
        let config_bytes =
            serde_json::to_vec(&config).map_err(|source| Error::InvalidJson { what: "image config", source })?;
        let config_digest = self.content.put(&config_bytes)?;
        let layer_descs: Vec<(&str, &Digest, u64)> =
            layers.iter().map(|l| (l.compression.oci_media_type(), &l.digest, l.size)).collect();
        let bytes = crate::manifest::oci_manifest((&config_digest, config_bytes.len() as u64), &layer_descs)?;
        let target = self.put_manifest(&bytes, media::OCI_MANIFEST)?;
        self.name_or_dangle(name, &target)?;
        Ok(ImageRecord { name: name.cloned(), target })
    }

    /// A new image: `base` plus one layer on top, with a history entry, as the builder's
    /// steps make them. The base config's other fields are kept as they are.
    pub fn add_layer(
        &self,
        base: &Image,
        layer: &LayerInfo,
        created_by: &str,
        comment: &str,
        name: Option<&Reference>,
    ) -> Result<ImageRecord> {
        let commit = Commit { created_by, comment, author: None, config: None };
        self.commit_layer(base, layer, &commit, name)
    }

    /// A new image: `base` plus one layer on top, as `docker commit` makes it: a history
    /// entry (with the author), and `commit.config` in place of the base's `config` object.
    pub fn commit_layer(
        &self,
        base: &Image,
        layer: &LayerInfo,
        commit: &Commit<'_>,
        name: Option<&Reference>,
    ) -> Result<ImageRecord> {
        let bad = |reason: &str| Error::InvalidDocument { what: "image config", reason: reason.to_owned() };
        self.record_unpacked_size(&layer.diff_id, layer.uncompressed_size);
        let mut config: serde_json::Value = serde_json::from_slice(&base.config_bytes)
            .map_err(|source| Error::InvalidJson { what: "image config", source })?;
        let created = created_now();
        config["created"] = created.clone().into();
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .ok_or_else(|| bad("no rootfs.diff_ids"))?
            .push(layer.diff_id.to_string().into());
        let mut entry =
            serde_json::json!({ "created": created, "created_by": commit.created_by, "comment": commit.comment });
        if let Some(author) = commit.author.filter(|a| !a.is_empty()) {
            entry["author"] = author.into();
            config["author"] = author.into();
        }
        match config.get_mut("history").and_then(|h| h.as_array_mut()) {
            Some(h) => h.push(entry),
            None => config["history"] = serde_json::json!([entry]),
        }
        if let Some(c) = &commit.config {
            config["config"] = c.clone();
        }
        let config_bytes =
            serde_json::to_vec(&config).map_err(|source| Error::InvalidJson { what: "image config", source })?;
        let config_digest = self.content.put(&config_bytes)?;
        let mut layers: Vec<(String, Digest, u64)> = base
            .manifest
            .layers()
            .iter()
            .map(|d| Ok((d.media_type().to_string(), descriptor_digest(d)?, d.size())))
            .collect::<Result<_>>()?;
        layers.push((layer.compression.oci_media_type().to_owned(), layer.digest.clone(), layer.size));
        let descs: Vec<(&str, &Digest, u64)> = layers.iter().map(|(t, d, s)| (t.as_str(), d, *s)).collect();
        let bytes = crate::manifest::oci_manifest((&config_digest, config_bytes.len() as u64), &descs)?;
        let target = self.put_manifest(&bytes, media::OCI_MANIFEST)?;
        self.name_or_dangle(name, &target)?;
        Ok(ImageRecord { name: name.cloned(), target })
    }

    /// Remembers that the layer with diffID `diff_id` is `size` bytes uncompressed, so that
    /// `images` need not decompress it. Best effort: a size that cannot be recorded (a
    /// read-only root) is only found again next time.
    pub fn record_unpacked_size(&self, diff_id: &Digest, size: u64) {
        let dir = self.root.join(LAYER_SIZES);
        let path = dir.join(diff_id.hex());
        let tmp = dir.join(format!(".{}.tmp-{}", diff_id.hex(), std::process::id()));
        let written = fs::create_dir_all(&dir)
            .and_then(|()| fs::write(&tmp, size.to_string()))
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            let _gone = fs::remove_file(&tmp);
        }
    }

    /// The unpacked size of each layer of `image`, lowest first: what `docker history` shows.
    /// A layer whose blob is absent counts its stored size.
    pub fn unpacked_sizes(&self, image: &Image) -> Result<Vec<u64>> {
        let diff_ids = image.config.rootfs().diff_ids();
        let mut out = Vec::with_capacity(image.manifest.layers().len());
        for (i, desc) in image.manifest.layers().iter().enumerate() {
            let digest = descriptor_digest(desc)?;
            let diff_id = diff_ids.get(i).and_then(|d| d.parse::<Digest>().ok());
            out.push(match diff_id {
                Some(diff_id) => self.layer_unpacked_size(&digest, &diff_id, desc.size())?,
                None => desc.size(),
            });
        }
        Ok(out)
    }

    /// The unpacked size of `image`, as docker's `images` SIZE shows it: the sum of its
    /// layers' uncompressed sizes.
    pub fn unpacked_size(&self, image: &Image) -> Result<u64> {
        Ok(self.unpacked_sizes(image)?.iter().sum())
    }

    /// One layer's uncompressed size: recorded, or the uncompressed blob's size, or counted
    /// by decompressing it once (then recorded).
    fn layer_unpacked_size(&self, digest: &Digest, diff_id: &Digest, stored: u64) -> Result<u64> {
        if digest == diff_id {
            return Ok(stored);
        }
        let path = self.root.join(LAYER_SIZES).join(diff_id.hex());
        if let Some(size) = fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()) {
            return Ok(size);
        }
        let size = if let Some(info) = self.content.info(diff_id)? {
            info.size
        } else if self.content.contains(digest)? {
            let mut reader = crate::layer::LayerReader::new(self.content.reader(digest)?, u64::MAX)?;
            std::io::copy(&mut reader, &mut std::io::sink()).ctx(|| format!("decompress layer {digest}"))?
        } else {
            return Ok(stored);
        };
        self.record_unpacked_size(diff_id, size);
        Ok(size)
    }

    /// Names `target`, or records it as dangling when there is no name.
    pub fn name_or_dangle(&self, name: Option<&Reference>, target: &Target) -> Result<()> {
        match name {
            Some(n) => self.set_name(n, target),
            None => self.add_dangling(target),
        }
    }
}

/// True when a name other than `except_key` points at `digest`.
fn named_elsewhere(db: &rocksdb::DB, except_key: &str, digest: &Digest) -> Result<bool> {
    for item in db.prefix_iterator(NAME_PREFIX) {
        let (k, v) = item.map_err(|source| Error::Index { path: PathBuf::from("index"), source })?;
        if !k.starts_with(NAME_PREFIX.as_bytes()) {
            break;
        }
        if k.as_ref() != except_key.as_bytes() && parse_target(&v)?.digest == *digest {
            return Ok(true);
        }
    }
    Ok(false)
}

fn doc_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::InvalidDocument { what, reason: e.to_string() }
}

fn parse_target(v: &[u8]) -> Result<Target> {
    serde_json::from_slice(v).map_err(|source| Error::InvalidJson { what: "index entry", source })
}

/// Copies a tar stream into `out`, parsing it as it goes so that a file that is not a
/// tar (or is truncated) is refused rather than stored.
fn copy_checking_tar(input: &mut impl Read, out: &mut impl Write) -> Result<()> {
    struct Tee<'a, R, W> {
        r: &'a mut R,
        w: &'a mut W,
    }
    impl<R: Read, W: Write> Read for Tee<'_, R, W> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.r.read(buf)?;
            self.w.write_all(&buf[..n])?;
            Ok(n)
        }
    }
    let bad = |reason: String| Error::InvalidArchive { path: "rootfs tarball".into(), reason };
    let mut tee = Tee { r: input, w: out };
    let mut entries = 0usize;
    {
        let mut archive = tar::Archive::new(&mut tee);
        let not_tar = |e: std::io::Error| bad(format!("not a tar stream ({})", crate::error::one_line(&e)));
        for entry in archive.entries().map_err(not_tar)? {
            let mut entry = entry.map_err(not_tar)?;
            std::io::copy(&mut entry, &mut std::io::sink())
                .map_err(|e| bad(format!("truncated entry ({})", crate::error::one_line(&e))))?;
            entries += 1;
        }
    }
    if entries == 0 {
        return Err(bad("no tar entries (is it a tar file?)".into()));
    }
    // Keep the end-of-archive blocks and any padding, so the diffID covers the whole input.
    std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| Error::io("read rootfs tarball", e))?;
    Ok(())
}

/// What [`ImageStore::commit_layer`] records besides the layer: `docker commit`'s
/// history entry, `-a`, and the container's settings.
#[derive(Debug, Clone, Default)]
pub struct Commit<'a> {
    /// The history entry's `created_by`.
    pub created_by: &'a str,
    /// The history entry's comment (`-m`).
    pub comment: &'a str,
    /// The image's and the history entry's author (`-a`).
    pub author: Option<&'a str>,
    /// The image config's new `config` object; `None` keeps the base's.
    pub config: Option<serde_json::Value>,
}

/// What `import_rootfs` writes into the new image.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Layer compression.
    pub compression: Compression,
    /// The commit message (`docker import -m`).
    pub message: Option<String>,
    /// Where the tarball came from, for the history entry.
    pub source: String,
    /// The platform the config records (`docker import --platform`); the host's if none.
    pub platform: Option<Platform>,
    /// The config's `config` object (`docker import --change`); empty if none.
    pub config: Option<serde_json::Value>,
}

struct HistoryEntry {
    created: String,
    created_by: String,
    comment: String,
}

impl ImportOptions {
    fn history_line(&self) -> HistoryEntry {
        HistoryEntry {
            created: created_now(),
            created_by: format!("berth import {}", self.source),
            comment: self.message.clone().unwrap_or_else(|| format!("Imported from {}", self.source)),
        }
    }
}

/// Now as RFC 3339, or `SOURCE_DATE_EPOCH` when it is set, so that images are reproducible.
pub fn created_now() -> String {
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<i64>().ok());
    let t = epoch.and_then(|s| chrono::DateTime::from_timestamp(s, 0)).unwrap_or_else(chrono::Utc::now);
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "bin/hello", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn store() -> (ImageStore, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        (ImageStore::open(d.path()).unwrap(), d)
    }

    fn opts() -> ImportOptions {
        ImportOptions {
            compression: Compression::Gzip,
            message: None,
            source: "-".into(),
            platform: None,
            config: None,
        }
    }

    /// A rootfs of one file of 1 MiB of zeros: a few KiB gzipped.
    fn zeros_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "zeros", std::io::repeat(0).take(1 << 20)).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacked_size_is_the_uncompressed_layers_recorded_or_counted_once() {
        let (s, d) = store();
        let tar = zeros_tar();
        let rec = s.import_rootfs(&tar[..], None, &opts()).unwrap();
        let img = s.image(&rec.target).unwrap();
        assert!(img.size() < 64 * 1024, "the layer is stored compressed: {}", img.size());
        assert_eq!(s.unpacked_size(&img).unwrap(), tar.len() as u64);
        // Recorded at import: found without the blob.
        let layer = descriptor_digest(&img.manifest.layers()[0]).unwrap();
        let blob = d.path().join("content/blobs/sha256").join(layer.hex());
        let saved = fs::read(&blob).unwrap();
        fs::remove_file(&blob).unwrap();
        assert_eq!(s.unpacked_sizes(&img).unwrap(), [tar.len() as u64]);
        // Without the record, it is counted from the blob once and recorded again.
        fs::write(&blob, saved).unwrap();
        fs::remove_dir_all(d.path().join(LAYER_SIZES)).unwrap();
        assert_eq!(s.unpacked_size(&img).unwrap(), tar.len() as u64);
        let diff_id: Digest = img.config.rootfs().diff_ids()[0].parse().unwrap();
        let recorded = fs::read_to_string(d.path().join(LAYER_SIZES).join(diff_id.hex())).unwrap();
        assert_eq!(recorded, tar.len().to_string());
    }

    #[test]
    fn import_makes_a_one_layer_image_with_the_right_diff_id() {
        let (s, _d) = store();
        let name: Reference = "app:v1".parse().unwrap();
        let tar = rootfs_tar();
        let rec = s.import_rootfs(&tar[..], Some(&name), &opts()).unwrap();
        let img = s.image(&rec.target).unwrap();
        assert_eq!(img.manifest.layers().len(), 1);
        assert_eq!(img.config.rootfs().diff_ids(), &vec![Digest::of(&tar).to_string()]);
        assert_eq!(s.resolve("app:v1").unwrap().target, rec.target);
        assert_eq!(s.resolve(img.id.short()).unwrap().target, rec.target);
        assert_eq!(s.resolve(&img.id.to_string()).unwrap().target, rec.target);
    }

    #[test]
    fn import_refuses_what_is_not_a_tar() {
        let (s, _d) = store();
        let err = s.import_rootfs(&b"definitely not a tarball, just some text"[..], None, &opts()).unwrap_err();
        assert!(err.to_string().contains("rootfs tarball"), "{err}");
        let mut truncated = rootfs_tar();
        truncated.truncate(600);
        assert!(s.import_rootfs(&truncated[..], None, &opts()).is_err());
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn names_move_and_prune_spares_named_and_young_blobs() {
        let (s, _d) = store();
        let a: Reference = "a".parse().unwrap();
        let b: Reference = "b:2".parse().unwrap();
        let rec = s.import_rootfs(&rootfs_tar()[..], Some(&a), &opts()).unwrap();
        s.set_name(&b, &rec.target).unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
        assert_eq!(s.remove_name(&a).unwrap(), Some(rec.target.clone()));
        assert!(s.get(&a).unwrap().is_none());
        let stray = s.content().put(b"unreferenced").unwrap();
        // Young blobs are spared.
        assert_eq!(s.prune(Duration::from_secs(3600), &Default::default()).unwrap().blobs, 0);
        let report = s.prune(Duration::ZERO, &Default::default()).unwrap();
        assert_eq!(report.blobs, 1);
        assert!(!s.content().contains(&stray).unwrap());
        assert!(s.image(&rec.target).is_ok(), "named image must survive prune");
        s.remove_name(&b).unwrap();
        assert_eq!(s.prune(Duration::ZERO, &Default::default()).unwrap().blobs, 3);
    }

    #[test]
    fn blob_sources_do_not_show_up_as_images() {
        let (s, _d) = store();
        let rec = s.import_rootfs(&rootfs_tar()[..], Some(&"app".parse().unwrap()), &opts()).unwrap();
        s.add_source(&rec.target.digest, "localhost:5000/app").unwrap();
        s.add_source(&rec.target.digest, "localhost:5000/other").unwrap();
        assert_eq!(s.list().unwrap().len(), 1);
        assert_eq!(s.sources(&rec.target.digest).unwrap(), ["localhost:5000/app", "localhost:5000/other"]);
        // Many at once, in one write and one read.
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        s.add_sources([&a, &b], "localhost:5000/team/app").unwrap();
        s.add_sources(std::iter::empty(), "localhost:5000/none").unwrap();
        let got = s.sources_of(&[a, rec.target.digest.clone(), Digest::of(b"c"), b]).unwrap();
        let want: [&[&str]; 4] = [
            &["localhost:5000/team/app"],
            &["localhost:5000/app", "localhost:5000/other"],
            &[],
            &["localhost:5000/team/app"],
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_name_lookup_is_answered_from_the_cache_until_the_index_changes() {
        let (s, _d) = store();
        let a = s.import_rootfs(&rootfs_tar()[..], None, &opts()).unwrap();
        let other = ImportOptions { message: Some("other".into()), ..opts() };
        let b = s.import_rootfs(&rootfs_tar()[..], None, &other).unwrap();
        assert_ne!(a.target, b.target);
        let name: Reference = "app:ci".parse().unwrap();
        s.set_name(&name, &a.target).unwrap();
        assert_eq!(s.get(&name).unwrap(), Some(a.target.clone()));

        // With rocksdb out of reach, the cached answer still comes back: no index was opened.
        let index = s.root().join("index");
        let aside = s.root().join("index.aside");
        fs::rename(&index, &aside).unwrap();
        assert_eq!(s.get(&name).unwrap(), Some(a.target.clone()));
        fs::rename(&aside, &index).unwrap();

        // A write makes every cached answer stale at once: the name's new target shows.
        s.set_name(&name, &b.target).unwrap();
        assert_eq!(s.get(&name).unwrap(), Some(b.target.clone()));
        s.remove_name(&name).unwrap();
        assert_eq!(s.get(&name).unwrap(), None);
        assert!(!s.cache_path(&format!("{NAME_PREFIX}{name}")).exists(), "a removed name leaves no cached lookup");

        // The cache is only a copy: without it every answer is the same.
        s.set_name(&name, &a.target).unwrap();
        assert_eq!(s.get(&name).unwrap(), Some(a.target.clone()));
        fs::remove_dir_all(s.root().join(NAME_CACHE)).unwrap();
        assert_eq!(s.get(&name).unwrap(), Some(a.target.clone()));
        // prune forgets every cached lookup; the names stay.
        assert!(s.root().join(NAME_CACHE).exists());
        s.prune(Duration::ZERO, &Default::default()).unwrap();
        assert!(!s.root().join(NAME_CACHE).exists());
        assert_eq!(s.get(&name).unwrap(), Some(a.target));
    }

    #[test]
    fn every_write_makes_a_new_generation_even_in_the_same_instant() {
        let (s, _d) = store();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            s.new_generation().unwrap();
            assert!(seen.insert(s.generation().unwrap()), "a generation token came round again");
        }
        let leftovers: Vec<_> = fs::read_dir(s.root())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{GENERATION}.")))
            .collect();
        assert!(leftovers.is_empty(), "temporary token files left behind");
    }

    #[test]
    fn a_cached_answer_from_another_generation_or_for_another_key_is_not_used() {
        let (s, _d) = store();
        let a = s.import_rootfs(&rootfs_tar()[..], None, &opts()).unwrap();
        let name: Reference = "app:ci".parse().unwrap();
        s.set_name(&name, &a.target).unwrap();
        let wrong = Target { digest: Digest::of(b"not the image"), ..a.target.clone() };
        let key = format!("{NAME_PREFIX}{name}");
        let forge = |generation: String, key: String| {
            let entry = CachedName { generation, key, target: wrong.clone() };
            fs::create_dir_all(s.root().join(NAME_CACHE)).unwrap();
            fs::write(s.cache_path(&format!("{NAME_PREFIX}{name}")), serde_json::to_vec(&entry).unwrap()).unwrap();
        };
        forge("an old generation".into(), key.clone());
        assert_eq!(s.get(&name).unwrap(), Some(a.target.clone()));
        forge(s.generation().unwrap(), format!("{NAME_PREFIX}other:name"));
        assert_eq!(s.get(&name).unwrap(), Some(a.target.clone()));
        fs::write(s.cache_path(&key), b"{ torn").unwrap();
        assert_eq!(s.get(&name).unwrap(), Some(a.target));
    }

    #[test]
    fn two_processes_worth_of_writers_share_one_index() {
        let (s, _d) = store();
        let rec = s.import_rootfs(&rootfs_tar()[..], None, &opts()).unwrap();
        std::thread::scope(|sc| {
            for t in 0..4 {
                let s = s.clone();
                let target = rec.target.clone();
                sc.spawn(move || {
                    for i in 0..25 {
                        let name: Reference = format!("img{t}:{i}").parse().unwrap();
                        s.set_name(&name, &target).unwrap();
                    }
                });
            }
        });
        assert_eq!(s.list().unwrap().iter().filter(|r| r.name.is_some()).count(), 100);
    }
}
