//! Remote build caches (`--cache-from`, `--cache-to`): the cache records of a build carried
//! between machines, in one format (see [`format`] and docs/dev/cache-format.md).
//!
//! Import reads each source's manifest and config only ([`Imported`]); a layer blob moves
//! when its bytes are needed ([`LazyBlobs`]): a step that misses runs on top of it, or an
//! output needs it. Export ([`export`]) gathers the records of the steps that ran or hit
//! (`mode=min`: the final image's steps; `mode=max`: every step) and hands the blobs and
//! the manifest to one [`CacheBackend`]. The solver never sees a backend: it asks
//! [`Layered`], a cache store that falls back to the imported records.

pub mod early;
pub mod export;
pub mod format;
mod local;
pub mod mounts;
mod registry;
mod s3;
pub mod skeleton;
pub mod spec;

use std::collections::HashMap;
use std::sync::Mutex;

use oci::content::ContentStore;
use oci::ImageStore;

use crate::cache::{CacheKey, CacheRecord, CacheStore};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use format::{Blob, CacheConfig, Unusable};
pub use local::LocalCache;
pub use registry::RegistryCache;
pub use spec::{ExportSpec, ImportSpec, Location, Mode, Mounts};

/// What a backend needs to reach the network: berth's registry client and the runtime it runs on.
#[derive(Clone, Copy)]
pub struct Net<'a> {
    /// The registry client (credentials, insecure rules, retries).
    pub client: &'a oci::client::Client,
    /// The async runtime requests run on (a backend blocks on it from a build thread).
    pub rt: &'a tokio::runtime::Handle,
}

/// The backend for a location; None for `type=inline`, which lives in the image's config.
pub fn open<'a>(location: &Location, net: Option<Net<'a>>) -> Result<Option<Box<dyn CacheBackend + 'a>>> {
    let need_net =
        || net.ok_or_else(|| Error::Invalid(format!("{}: this build has no network client", location.describe())));
    Ok(match location {
        Location::Registry { reference } => {
            let n = need_net()?;
            Some(Box::new(RegistryCache::new(reference, n.client, n.rt)?))
        }
        Location::Local { dir, digest, tag } => Some(Box::new(LocalCache::new(dir, tag, digest.clone()))),
        Location::Inline => None,
        Location::S3(s) => Some(Box::new(s3::S3Cache::new(s, need_net()?.rt)?)),
    })
}

/// One place a cache is read from or written to: a registry, a directory, a bucket.
///
/// Vocabulary: `manifest` reads the cache's manifest, `fetch` copies one blob into the
/// content store (verified), `publish` writes blobs first and the manifest last.
pub trait CacheBackend: Send + Sync {
    /// How progress lines and errors name this cache (`registry localhost:5000/app:cache`).
    fn describe(&self) -> String;
    /// The cache's manifest, or None when there is none yet.
    fn manifest(&self, store: &ImageStore) -> Result<Option<Vec<u8>>>;
    /// Copies one blob into the content store, verified against its digest and size.
    fn fetch(&self, store: &ImageStore, digest: &oci::Digest, size: u64) -> Result<()>;
    /// Writes every blob the destination lacks, then the config and the manifest, last.
    fn publish(&self, store: &ImageStore, upload: &Upload<'_>) -> Result<Published>;
    /// Remembers where the imported blobs live (a registry: so that a push to another
    /// repository there mounts them instead of uploading).
    fn note_sources(&self, _store: &ImageStore, _blobs: &[Blob]) -> Result<()> {
        Ok(())
    }
    /// Sends blobs ahead of an export while the build still runs (each skipped when the
    /// destination has it); a backend that cannot do it usefully does nothing.
    fn send_early(&self, _store: &ImageStore, _blobs: &[(oci::Digest, u64)]) -> Result<()> {
        Ok(())
    }
    /// The registry (domain) holding the cache, for a registry cache: a push there can
    /// mount or skip its blobs without this machine holding them.
    fn registry(&self) -> Option<String> {
        None
    }
    /// Whether the cache still holds a blob it listed, asked before a push mounts or skips
    /// that blob without fetching it (a registry's HEAD). Backends whose blobs are always
    /// fetched before use need not ask.
    fn still_has(&self, _digest: &oci::Digest, _size: u64) -> Result<bool> {
        Ok(true)
    }
}

/// What an export hands a backend.
pub struct Upload<'a> {
    /// The cache manifest.
    pub manifest: &'a [u8],
    /// The config blob's digest and bytes (already in the content store).
    pub config: (&'a oci::Digest, &'a [u8]),
    /// The layer blobs, in the manifest's order.
    pub blobs: &'a [Blob],
    /// Fetches a blob that was imported and never needed locally.
    pub lazy: &'a dyn LazyBlobs,
}

/// What an export moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Blobs the destination had already (or mounted from another repository).
    pub present: usize,
}

/// Blobs that are not in the content store yet but can be fetched when needed.
pub trait LazyBlobs: Sync {
    /// True when `digest` can be fetched.
    fn has(&self, digest: &oci::Digest) -> bool;
    /// Makes sure the content store holds `digest` (fetching it, once, if it does not).
    fn ensure(&self, store: &ImageStore, digest: &oci::Digest) -> Result<()>;
    /// Fills the missing or empty cache-mount directory `dir` from the imported layer of
    /// mount `id`, at most once per build; true when it did (see [`mounts`]).
    fn restore_mount(&self, _store: &ImageStore, _id: &str, _dir: &std::path::Path) -> Result<bool> {
        Ok(false)
    }
    /// Writes the plain tar of a layer this machine can make without its blob (see
    /// [`crate::cache::deferred`]) to `out`; false when it cannot.
    fn write_plain(&self, _digest: &oci::Digest, _out: &mut dyn std::io::Write) -> Result<bool> {
        Ok(false)
    }
    /// A reader of the plain tar of the layer `digest`, made as it is read, for an unpack
    /// that need not store it (a skeleton's, written from the build context); None when
    /// the layer is stored or cannot be made so. The unpack checks it against its diffID.
    fn stream(&self, _store: &ImageStore, _digest: &oci::Digest) -> Result<Option<runner::rootfs::Stream>> {
        Ok(None)
    }
    /// How errors name where the layer `digest` came from, when a cache made it (a
    /// skeleton's: `cache registry R: layer D from its skeleton and the build context`).
    fn origin(&self, _digest: &oci::Digest) -> Option<String> {
        None
    }
    /// A fetched blob that proved not to be what its record says (its diffID): when a cache
    /// source gave it, the blob is deleted and the source dropped (the build then solves
    /// again without it) and the answer is true.
    fn reject(&self, _store: &ImageStore, _digest: &oci::Digest) -> bool {
        false
    }
}

/// No lazy blobs: every blob a build uses is local.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLazy;

impl LazyBlobs for NoLazy {
    fn has(&self, _: &oci::Digest) -> bool {
        false
    }
    fn ensure(&self, store: &ImageStore, digest: &oci::Digest) -> Result<()> {
        match store.content().contains(digest) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::NotFound { what: format!("blob {digest}") }),
            Err(e) => Err(Error::image(format!("look up blob {digest}"))(e)),
        }
    }
}

/// The caches a build imported: their records, and where each blob can be fetched.
#[derive(Default)]
pub struct Imported<'a> {
    sources: Vec<Box<dyn CacheBackend + 'a>>,
    records: HashMap<CacheKey, Vec<(CacheRecord, usize)>>,
    blobs: HashMap<oci::Digest, Vec<(Blob, usize)>>,
    /// Layers of base images pulled without them: their size and the sources (every
    /// repository the store saw them in) they are fetched from, in turn, when a step or an
    /// output needs them.
    bases: HashMap<oci::Digest, (u64, Vec<usize>)>,
    mounts: HashMap<String, (Blob, usize)>,
    fetching: crate::cache::KeyedLocks<oci::Digest, ()>,
    /// The cache mounts this build restored (each id once).
    restores: mounts::Restores,
    /// Sources a blob fetch failed from (refused, cut off, or bytes that are not the
    /// digest): their records are no longer used.
    failed: Mutex<Vec<usize>>,
    /// Failed sources the build has not yet reacted to.
    unseen: std::sync::atomic::AtomicBool,
    /// Layers this machine built and can make again from their snapshots.
    deferred: Option<crate::cache::deferred::Deferred<'a>>,
    /// Layers the sources carry as skeletons, by diffID (see [`skeleton`]).
    skeletons: HashMap<oci::Digest, Vec<(Blob, usize)>>,
    /// Skeletons this checkout could not make their layers from: only the records that use
    /// them miss; the rest of their source is still used.
    spoilt: Mutex<std::collections::HashSet<oci::Digest>>,
    /// The build context's files a skeleton's references name (none: no context).
    context: Option<std::sync::Arc<skeleton::ContextFiles>>,
}

impl std::fmt::Debug for Imported<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imported").field("records", &self.records.len()).field("blobs", &self.blobs.len()).finish()
    }
}

impl<'a> Imported<'a> {
    /// Reads each source's manifest and config (never its layers). A source that is
    /// missing, unauthorised, unreachable, corrupt, foreign or newer is a miss with one
    /// warning; the first source that has a key wins it.
    pub fn import(sources: Vec<Box<dyn CacheBackend + 'a>>, store: &ImageStore, progress: &dyn Progress) -> Self {
        let mut me = Imported { sources: Vec::new(), ..Default::default() };
        for (i, source) in sources.into_iter().enumerate() {
            let name = source.describe();
            match read_config(source.as_ref(), store) {
                Ok(Ok(config)) => {
                    if let Err(e) = source.note_sources(store, &config.blobs) {
                        progress.event(Event::Warning { text: format!("cache {name}: {}", oci::error::chain(&e)) });
                    }
                    progress.event(Event::Note {
                        text: format!(
                            "importing cache {name}: {} records, {} blobs",
                            config.records.len(),
                            config.blobs.len()
                        ),
                    });
                    me.add(i, &config);
                }
                Ok(Err(why)) => progress.event(Event::Warning { text: format!("cache {name}: {why}; not used") }),
                Err(e) => progress.event(Event::Warning {
                    text: format!("cache {name} could not be read, not used: {}", oci::error::chain(&e)),
                }),
            }
            me.sources.push(source);
        }
        me
    }

    fn add(&mut self, source: usize, config: &CacheConfig) {
        for b in &config.blobs {
            self.blobs.entry(b.digest.clone()).or_default().push((b.clone(), source));
            if b.media_type == skeleton::MEDIA_TYPE {
                self.skeletons.entry(b.diff_id.clone()).or_default().push((b.clone(), source));
            }
        }
        for r in &config.records {
            self.records.entry(r.key.clone()).or_default().push((config.record(r), source));
        }
        for m in &config.mounts {
            self.mounts.entry(m.id.clone()).or_insert_with(|| (config.blobs[m.blob].clone(), source));
        }
    }

    /// The imported record of a key (none from a source a fetch failed from).
    pub fn record(&self, key: &CacheKey) -> Option<&CacheRecord> {
        self.live(self.records.get(key)).map(|(r, _)| r)
    }

    /// What the imported caches say of a blob (its uncompressed size, for a re-export).
    pub fn blob(&self, digest: &oci::Digest) -> Option<&Blob> {
        self.live(self.blobs.get(digest)).map(|(b, _)| b)
    }

    /// The skeleton a source carries of the plain layer `diff_id`, for a re-export.
    pub fn skeleton(&self, diff_id: &oci::Digest) -> Option<&Blob> {
        self.skeleton_of(diff_id).map(|(b, _)| b)
    }

    /// The live skeleton of the plain layer `diff_id`, unless this checkout failed to make
    /// the layer from it.
    fn skeleton_of(&self, diff_id: &oci::Digest) -> Option<&(Blob, usize)> {
        let spoilt = self.spoilt.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(diff_id);
        self.live(self.skeletons.get(diff_id)).filter(|_| !spoilt)
    }

    /// Stops using the skeleton of `diff_id` (once) and has the build solve again: the steps
    /// whose records need that layer run.
    fn spoil(&self, diff_id: &oci::Digest) {
        let mut spoilt = self.spoilt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if spoilt.insert(diff_id.clone()) {
            self.unseen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Makes skeleton layers usable: their files are read from `files`, the build
    /// context's files by content.
    pub fn rebuild_from(&mut self, files: std::sync::Arc<skeleton::ContextFiles>) {
        self.context = Some(files);
    }

    /// The first entry whose source has not failed: several sources may hold one key or
    /// blob, and when the first fails the next one's copy is used.
    fn live<'v, T>(&self, entries: Option<&'v Vec<(T, usize)>>) -> Option<&'v (T, usize)> {
        entries?.iter().find(|(_, s)| !self.is_failed(*s))
    }

    /// Drops a cache source (once): its records and blobs are no longer used, and the build
    /// solves again ([`Imported::drop_failed`]).
    fn fail(&self, source: usize) {
        let mut failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !failed.contains(&source) {
            failed.push(source);
            self.unseen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn is_failed(&self, source: usize) -> bool {
        self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&source)
    }

    /// True (once) after a source failed a fetch, or a skeleton failed to make its layer:
    /// the build solves again without that source's records (or that skeleton's).
    pub fn drop_failed(&self) -> bool {
        self.unseen.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// The registry a blob would come from, when its source is a registry.
    pub fn registry_of(&self, digest: &oci::Digest) -> Option<String> {
        let cached = self.live(self.blobs.get(digest)).map(|(_, s)| *s);
        let source = cached.or_else(|| self.bases.get(digest).and_then(|(_, s)| s.first().copied()))?;
        self.sources[source].registry()
    }

    /// Base image layers the store lacks, to be fetched from `repository` (a registry
    /// source that reads blobs only) when something needs them.
    pub fn add_base_layers(&mut self, repository: Box<dyn CacheBackend + 'a>, layers: &[(oci::Digest, u64)]) {
        let source = self.sources.len();
        self.sources.push(repository);
        for (digest, size) in layers {
            self.bases.entry(digest.clone()).or_insert((*size, vec![])).1.push(source);
        }
    }

    /// The layer holding a cache mount's files, when a source carried it.
    pub fn mount(&self, id: &str) -> Option<&Blob> {
        self.mounts.get(id).map(|(b, _)| b)
    }

    /// Checks that the source a push will mount or skip the layer `digest` from (without
    /// fetching it) still holds it. A cache that lost it is dropped like one whose fetch
    /// failed, and the error makes the build solve again without it; before, the push
    /// failed on the missing blob.
    pub fn vouch(&self, store: &ImageStore, digest: &oci::Digest) -> Result<()> {
        if present(store, digest)? {
            return Ok(());
        }
        let Some((blob, source)) = self.live(self.blobs.get(digest)) else { return Ok(()) };
        let backend = &self.sources[*source];
        let what = format!("cache {}: blob {digest}", backend.describe());
        let cause: Box<dyn std::error::Error + Send + Sync> = match backend.still_has(digest, blob.size) {
            Ok(true) => return Ok(()),
            Ok(false) => "listed by the cache, but no longer there".into(),
            Err(e) => Box::new(e),
        };
        self.fail(*source);
        Err(Error::RemoteCache { what, source: cause })
    }

    /// True when the layer `digest` has no blob here but can be made from its snapshot.
    pub fn made_here(&self, digest: &oci::Digest) -> bool {
        self.deferred.is_some_and(|d| d.has(digest))
    }

    /// Makes the layers this machine built without storing them (see
    /// [`crate::cache::deferred`]) fetchable like the imported ones.
    pub fn defer_to(&mut self, deferred: crate::cache::deferred::Deferred<'a>) {
        self.deferred = Some(deferred);
    }

    /// True when no source gave any record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.mounts.is_empty()
    }
}

impl LazyBlobs for Imported<'_> {
    fn restore_mount(&self, store: &ImageStore, id: &str, dir: &std::path::Path) -> Result<bool> {
        self.restores.restore(self, store, id, self.mount(id), dir)
    }

    fn has(&self, digest: &oci::Digest) -> bool {
        self.live(self.blobs.get(digest)).is_some()
            || self.bases.contains_key(digest)
            || (self.context.is_some() && self.skeleton_of(digest).is_some())
            || self.deferred.is_some_and(|d| d.has(digest))
    }

    fn write_plain(&self, digest: &oci::Digest, out: &mut dyn std::io::Write) -> Result<bool> {
        self.deferred.map_or(Ok(false), |d| d.write(digest, out))
    }

    fn stream(&self, store: &ImageStore, digest: &oci::Digest) -> Result<Option<runner::rootfs::Stream>> {
        let (Some(files), Some((blob, _))) = (&self.context, self.skeleton_of(digest)) else {
            return Ok(None);
        };
        if present(store, digest)? {
            return Ok(None);
        }
        self.ensure(store, &blob.digest)?;
        let skeleton = store.content().reader(&blob.digest).map_err(Error::image(format!("read {}", blob.digest)))?;
        Ok(Some(Box::new(skeleton::Rebuilt::start(skeleton, std::sync::Arc::clone(files))?)))
    }

    fn origin(&self, digest: &oci::Digest) -> Option<String> {
        let (_, source) = self.skeleton_of(digest)?;
        Some(self.skeleton_what(*source, digest))
    }

    fn reject(&self, store: &ImageStore, digest: &oci::Digest) -> bool {
        if self.skeleton_of(digest).is_some() {
            self.spoil(digest);
            return true;
        }
        let Some((_, source)) = self.live(self.blobs.get(digest)) else { return false };
        let _gone = oci::content::ContentStore::delete(store.content(), digest);
        self.fail(*source);
        true
    }

    fn ensure(&self, store: &ImageStore, digest: &oci::Digest) -> Result<()> {
        if present(store, digest)? {
            return Ok(());
        }
        // A layer built here comes from its snapshot, unless a source has it too.
        if let Some(d) = self.deferred {
            let elsewhere = self.live(self.blobs.get(digest)).is_some() || self.bases.contains_key(digest);
            match self.fetching.with(digest.clone(), |()| d.store(store, digest)) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(_) if elsewhere => {}
                Err(e) => return Err(e),
            }
        }
        // A layer a cache carried as its skeleton, written again from the build context.
        if let (Some(files), Some((blob, source))) = (&self.context, self.skeleton_of(digest)) {
            return self.fetching.with(digest.clone(), |()| self.rebuild(store, files, blob, *source));
        }
        // A cache's blob, or else a base image's layer (a failure there is the build's).
        // A cache source that failed once is not asked again: its copy of a base layer
        // comes from the base's own repository instead (before, the retry never ended).
        // A base layer is tried in each repository the store saw it in, in turn.
        let (size, sources, cached) = match (self.live(self.blobs.get(digest)), self.bases.get(digest)) {
            (Some((blob, source)), _) => (blob.size, vec![*source], true),
            (_, Some((size, sources))) => (*size, sources.clone(), false),
            _ => return NoLazy.ensure(store, digest),
        };
        // One download per blob, however many steps want it at once.
        self.fetching.with(digest.clone(), |()| {
            let mut result = Ok(());
            for source in sources {
                result = self.fetch_from(store, digest, size, source, cached);
                if result.is_ok() {
                    break;
                }
            }
            result
        })
    }
}

impl Imported<'_> {
    /// How errors name the layer `digest` written from a skeleton of `source`.
    fn skeleton_what(&self, source: usize, digest: &oci::Digest) -> String {
        format!("cache {}: layer {digest} from its skeleton and the build context", self.sources[source].describe())
    }

    /// Stores the plain layer a skeleton stands for (its diffID as digest), its files read
    /// from the build context. A layer that comes out other than its diffID (a context file
    /// changed since it was hashed), or a file the context lacks, spoils that skeleton: the
    /// build solves again, and the steps that need the layer run.
    fn rebuild(&self, store: &ImageStore, files: &skeleton::ContextFiles, blob: &Blob, source: usize) -> Result<()> {
        let digest = &blob.diff_id;
        if present(store, digest)? {
            return Ok(());
        }
        self.ensure(store, &blob.digest)?;
        let what = self.skeleton_what(source, digest);
        let made = (|| -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let reader = store.content().reader(&blob.digest)?;
            let mut ingest = store.content().writer(digest.algorithm())?;
            let written = skeleton::rebuild(reader, files, &mut ingest);
            let (got, n) = (ingest.digest(), ingest.written());
            match written {
                Ok(_) if &got == digest && n == blob.uncompressed_size => {
                    ingest.commit(oci::content::Expected::exactly(digest, n))?;
                    Ok(())
                }
                Ok(_) => {
                    ingest.abort()?;
                    Err(format!("the files make {got} ({n} bytes), not the layer: a context file changed").into())
                }
                Err(e) => {
                    ingest.abort()?;
                    Err(e.into())
                }
            }
        })();
        made.map_err(|source_err| {
            self.spoil(digest);
            Error::RemoteCache { what, source: source_err }
        })
    }

    /// Fetches `digest` from source `source`, unless a thread before this one did; a
    /// failed cache source is dropped (a base image's failure is the build's).
    fn fetch_from(
        &self,
        store: &ImageStore,
        digest: &oci::Digest,
        size: u64,
        source: usize,
        cached: bool,
    ) -> Result<()> {
        if present(store, digest)? {
            return Ok(());
        }
        let backend = &self.sources[source];
        let fetched = backend.fetch(store, digest, size);
        if fetched.is_err() && cached {
            self.fail(source);
        }
        let what = if cached { "cache" } else { "base image" };
        fetched.map_err(|e| Error::remote(format!("{what} {}: blob {digest}", backend.describe()))(e))
    }
}

/// True when the content store holds `digest`.
fn present(store: &ImageStore, digest: &oci::Digest) -> Result<bool> {
    store.content().contains(digest).map_err(Error::image(format!("look up blob {digest}")))
}

/// Reads a source's config: Ok(Err) for a source that is there but unusable.
fn read_config(source: &dyn CacheBackend, store: &ImageStore) -> Result<std::result::Result<CacheConfig, Unusable>> {
    let Some(manifest) = source.manifest(store)? else {
        return Ok(Err(Unusable::Missing));
    };
    let (digest, size) = match format::config_of(&manifest) {
        Ok(c) => c,
        Err(Unusable::Foreign(what)) => return inline_config(source, store, &manifest, what),
        Err(other) => return Ok(Err(other)),
    };
    let bytes = config_bytes(source, store, &digest, size)?;
    let config = match CacheConfig::parse(&bytes) {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    Ok(format::check_layers(&manifest, &config).map(|()| config))
}

fn config_bytes(source: &dyn CacheBackend, store: &ImageStore, digest: &oci::Digest, size: u64) -> Result<Vec<u8>> {
    source.fetch(store, digest, size)?;
    store
        .content()
        .read_small(digest, format::MAX_CONFIG_SIZE)
        .map_err(Error::image(format!("read cache config {digest}")))
}

/// An image's inline cache (`--cache-to type=inline`): records in its config whose blobs
/// must all be the image's own layers.
fn inline_config(
    source: &dyn CacheBackend,
    store: &ImageStore,
    manifest: &[u8],
    foreign: String,
) -> Result<std::result::Result<CacheConfig, Unusable>> {
    let doc: serde_json::Value = serde_json::from_slice(manifest).unwrap_or_default();
    let config_type = doc["config"]["mediaType"].as_str().unwrap_or("");
    if config_type != oci::media::OCI_CONFIG && config_type != oci::media::DOCKER_CONFIG {
        return Ok(Err(Unusable::Foreign(foreign)));
    }
    let (Some(digest), Some(size)) =
        (doc["config"]["digest"].as_str().and_then(|d| d.parse::<oci::Digest>().ok()), doc["config"]["size"].as_u64())
    else {
        return Ok(Err(Unusable::Corrupt("image config descriptor".into())));
    };
    if size > format::MAX_CONFIG_SIZE {
        return Ok(Err(Unusable::Corrupt(format!("image config of {size} bytes"))));
    }
    let bytes = config_bytes(source, store, &digest, size)?;
    let config: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let Some(inline) = config.get(format::INLINE_FIELD) else {
        return Ok(Err(Unusable::Foreign("an image without an inline cache".into())));
    };
    let parsed = match CacheConfig::parse(inline.to_string().as_bytes()) {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    let layers: Vec<String> = doc["layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["digest"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if let Some(b) = parsed.blobs.iter().find(|b| !layers.contains(&b.digest.to_string())) {
        return Ok(Err(Unusable::Corrupt(format!("inline record blob {} is not a layer of the image", b.digest))));
    }
    Ok(Ok(parsed))
}

/// The local cache store, with the imported records behind it: a key the local cache does
/// not hold (or holds with pruned blobs) is looked up in the imported caches.
pub struct Layered<'a> {
    /// The machine's own cache; every write goes here.
    pub local: &'a dyn CacheStore,
    /// What the build imported.
    pub imported: &'a Imported<'a>,
    /// The content store, to tell a local record whose blobs were pruned.
    pub store: &'a ImageStore,
}

impl CacheStore for Layered<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let local = self.local.get(key)?;
        let Some(hex) = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix("result/")) else {
            return Ok(local);
        };
        let Ok(digest) = hex.parse::<oci::Digest>() else { return Ok(local) };
        let Some(remote) = self.imported.record(&CacheKey(digest)) else { return Ok(local) };
        let local_usable =
            local.as_deref().and_then(|raw| serde_json::from_slice::<CacheRecord>(raw).ok()).is_some_and(|r| {
                r.layers
                    .iter()
                    .all(|l| self.store.content().contains(&l.digest).unwrap_or(false) || self.imported.has(&l.digest))
            });
        if local_usable {
            return Ok(local);
        }
        serde_json::to_vec(remote)
            .map(Some)
            .map_err(|source| Error::Json { what: "an imported cache record".into(), source })
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.local.put(key, value)
    }

    fn remove(&self, key: &[u8]) -> Result<()> {
        self.local.remove(key)
    }
}
