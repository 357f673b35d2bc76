//! The size of the build cache and its trimming: `berth builder prune` and the "Build cache"
//! line of `berth system df`.
//!
//! The cache's disk is the layer blobs its records name that no image reaches (the plain tars
//! of steps; base image layers belong to their images), plus the committed snapshots of those
//! layer chains. Trimming drops records least recently used first (`used/<key>`, written at
//! every hit) and then the blobs and snapshots no remaining record, image or live process
//! needs. It never runs beside a build: a build holds the cache's database for its whole run,
//! so a prune that finds it held removes nothing (see [`RocksCache::try_open`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use oci::content::ContentStore;
use oci::{Digest, ImageStore};

use crate::cache::{now_secs, CacheRecord, CacheStore, RocksCache};
use crate::error::{Error, Result};

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Every record, not only those whose result no image uses (docker's `--all`).
    pub all: bool,
    /// Only records last used longer ago than this (`--filter until=24h`).
    pub until: Option<Duration>,
    /// Stop once the cache takes no more than this many bytes (`--keep-storage`).
    pub keep_storage: Option<u64>,
}

/// One cache record, for listing and pruning.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record's key in the database (`result/<cache key>`).
    pub key: String,
    /// The record.
    pub record: CacheRecord,
    /// When a build last used it (Unix seconds; 0 for records older than this bookkeeping).
    pub last_used: u64,
}

/// The cache's records and the blobs they alone hold.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Every record.
    pub records: usize,
    /// Bytes of the blobs records name that no image reaches.
    pub bytes: u64,
    /// Records whose result no image uses (what a prune without `--all` may take).
    pub dangling: usize,
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    /// Records dropped.
    pub records: usize,
    /// Bytes of blobs and snapshots freed.
    pub bytes: u64,
    /// False when a running build held the cache, so nothing was touched.
    pub ran: bool,
}

/// Every record, least recently used first.
pub fn entries(cache: &RocksCache) -> Result<Vec<Entry>> {
    let used: HashMap<String, u64> = cache
        .entries("used/")?
        .into_iter()
        .filter_map(|(k, v)| Some((k["used/".len()..].to_owned(), std::str::from_utf8(&v).ok()?.parse().ok()?)))
        .collect();
    let mut out: Vec<Entry> = cache
        .entries("result/")?
        .into_iter()
        .filter_map(|(key, v)| {
            let record: CacheRecord = serde_json::from_slice(&v).ok()?;
            let last_used = used.get(&key["result/".len()..]).copied().unwrap_or(0);
            Some(Entry { key, record, last_used })
        })
        .collect();
    out.sort_by(|a, b| (a.last_used, &a.key).cmp(&(b.last_used, &b.key)));
    Ok(out)
}

/// What the records take: see the module docs.
pub fn usage(cache: &RocksCache, store: &ImageStore) -> Result<Usage> {
    let entries = entries(cache)?;
    let images = image_blobs(store)?;
    let layers = image_layers(store)?;
    let sizes = blob_sizes(cache, store, &entries, (&images, &layers))?;
    let dangling = entries.iter().filter(|e| is_dangling(e, &layers)).count();
    Ok(Usage { records: entries.len(), bytes: sizes.values().sum(), dangling })
}

/// Trims the cache under `root` as `opts` say; see the module docs.
pub fn prune(root: &Path, store: &ImageStore, opts: &PruneOptions) -> Result<Pruned> {
    let Some(cache) = RocksCache::try_open(root)? else { return Ok(Pruned::default()) };
    let entries = entries(&cache)?;
    let images = image_blobs(store)?;
    let layers = image_layers(store)?;
    let sizes = blob_sizes(&cache, store, &entries, (&images, &layers))?;
    // How many remaining records name each blob; the cache's size is what they hold.
    let mut refs: HashMap<&Digest, usize> = HashMap::new();
    for e in &entries {
        for l in &e.record.layers {
            *refs.entry(&l.digest).or_default() += 1;
        }
    }
    let mut size: u64 = sizes.values().sum();
    let cutoff = opts.until.map(|d| now_secs().saturating_sub(d.as_secs()));
    let mut removed: Vec<&Entry> = Vec::new();
    let mut freed: BTreeSet<Digest> = BTreeSet::new();
    for e in &entries {
        if opts.keep_storage.is_some_and(|keep| size <= keep) {
            break;
        }
        let old_enough = cutoff.is_none_or(|c| e.last_used < c);
        if !old_enough || !(opts.all || is_dangling(e, &layers)) {
            continue;
        }
        cache.delete(&e.key)?;
        cache.delete(&format!("used/{}", &e.key["result/".len()..]))?;
        removed.push(e);
        for l in &e.record.layers {
            let n = refs.entry(&l.digest).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 {
                // The note of a layer kept only as its snapshot goes with its last record.
                cache.delete(&crate::cache::deferred::key(&l.digest))?;
                size = size.saturating_sub(sizes.get(&l.digest).copied().unwrap_or(0));
                if !images.contains(&l.digest) {
                    freed.insert(l.digest.clone());
                }
            }
        }
    }
    let dropped = dropped_chains(&entries, &removed);
    // A COPY's manifest of files to link from goes with its snapshot.
    for (key, raw) in cache.entries("copyreuse/")? {
        let chain =
            serde_json::from_slice::<serde_json::Value>(&raw).ok().and_then(|v| v["chain"].as_str().map(String::from));
        if chain.is_none_or(|c| dropped.contains(&c)) {
            cache.delete(&key)?;
        }
    }
    drop(cache);
    let mut bytes = 0;
    for d in store.delete_unreferenced(&freed).map_err(Error::image("delete cache blobs"))? {
        bytes += sizes.get(&d).copied().unwrap_or(0);
    }
    let count = runner::snapshot::usage::prune_only(root, store, Some(&dropped))
        .map_err(Error::io("remove the build cache's snapshots"))?;
    bytes += count.bytes;
    Ok(Pruned { records: removed.len(), bytes, ran: true })
}

/// The chains of the dropped records that no kept record uses: the committed snapshots to
/// remove, unless an image or a live process uses them.
fn dropped_chains(all: &[Entry], removed: &[&Entry]) -> HashSet<String> {
    let chains = |e: &Entry| {
        let diff_ids: Vec<String> = e.record.layers.iter().map(|l| l.diff_id.to_string()).collect();
        runner::rootfs::chain_ids(&diff_ids)
    };
    let gone: HashSet<&str> = removed.iter().map(|e| e.key.as_str()).collect();
    let kept: HashSet<String> = all.iter().filter(|e| !gone.contains(e.key.as_str())).flat_map(chains).collect();
    removed.iter().flat_map(|e| chains(e)).filter(|c| !kept.contains(c)).collect()
}

/// True when the record's own result (its top layer, by diffID: images hold it compressed)
/// is in no image: an intermediate step.
fn is_dangling(e: &Entry, image_layers: &HashSet<String>) -> bool {
    e.record.layers.last().is_none_or(|l| !image_layers.contains(&l.diff_id.to_string()))
}

/// The diffIDs of every image's layers.
fn image_layers(store: &ImageStore) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for rec in store.list().map_err(Error::image("list images"))? {
        if let Ok(image) = store.image(&rec.target) {
            out.extend(image.config.rootfs().diff_ids().iter().cloned());
        }
    }
    Ok(out)
}

/// Every blob the store's images reach.
fn image_blobs(store: &ImageStore) -> Result<BTreeSet<Digest>> {
    let mut live = BTreeSet::new();
    for rec in store.list().map_err(Error::image("list images"))? {
        // An image with missing blobs reaches what it has.
        let _partial = store.reachable(&rec.target, &mut live);
    }
    Ok(live)
}

/// The size of each layer the records name and no image reaches (`images`: blobs,
/// `image_layers`: diffIDs): its blob's, or for a layer kept as its snapshot alone
/// (`deferred/`), the layer's own size (an image's layer is its image's, not the cache's).
fn blob_sizes(
    cache: &RocksCache,
    store: &ImageStore,
    entries: &[Entry],
    (images, image_layers): (&BTreeSet<Digest>, &HashSet<String>),
) -> Result<HashMap<Digest, u64>> {
    let mut sizes = HashMap::new();
    for l in entries.iter().flat_map(|e| &e.record.layers) {
        if images.contains(&l.digest) || sizes.contains_key(&l.digest) {
            continue;
        }
        if let Some(info) = store.content().info(&l.digest).map_err(Error::image("look at a cache blob"))? {
            sizes.insert(l.digest.clone(), info.size);
        } else if !image_layers.contains(&l.diff_id.to_string())
            && cache.get(crate::cache::deferred::key(&l.digest).as_bytes())?.is_some()
        {
            sizes.insert(l.digest.clone(), l.size);
        }
    }
    Ok(sizes)
}
