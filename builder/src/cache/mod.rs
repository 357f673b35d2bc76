//! The build cache: cache key -> result layers, and the context's stat cache.
//!
//! A [`CacheKey`] is the sha256 of one [`KeyRecipe`]. Records are small JSON values in a
//! [`CacheStore`]: the rocksdb one under `$BERTH_ROOT/buildcache` persists between builds,
//! the memory one serves tests. A hit is only used while its layer blobs are still in
//! the content store (a prune may have taken them).

pub mod deferred;
pub mod remote;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::Layer;

/// A vertex's content-addressed identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey(pub oci::Digest);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Everything a cache key is made of, in one place (BuildKit keeps its recipe in one struct too).
#[derive(Debug, Serialize)]
pub struct KeyRecipe<'a> {
    /// Bumped when the meaning of a key changes.
    pub version: u32,
    /// The op's canonical definition.
    pub op: &'a crate::graph::Op,
    /// The keys of its inputs, in order.
    pub inputs: Vec<&'a CacheKey>,
    /// The digest of exactly the selected source files (COPY/ADD from the context or from
    /// another stage, bind mounts).
    pub sources: Option<oci::Digest>,
    /// `SOURCE_DATE_EPOCH`, which clamps the mtimes of every layer a step writes. Left out of
    /// the serialisation when unset, so keys made without it stay what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// The version of `op`'s keys, bumped when what the op makes changes, so that results made
/// before never hit. COPY went to 3 when copies from stages and images kept their files'
/// owners and `--chown` gave the directories it creates to the new owner (as BuildKit does),
/// and to 4 when ADD extracted local xz and bzip2 tars (copied as files before) and `--chown`
/// and WORKDIR owners followed BuildKit's rules (`--chown=1001` is 1001:1001 whatever
/// /etc/passwd gives uid 1001; an unknown name is 0:0), and an archive's `./` entry stopped
/// changing the destination directory; to 5, and every other op to 3, when layers began to
/// keep extended attributes (`RUN setcap ...`, a context file's capabilities), as docker's do;
/// COPY to 6 when destinations began to follow symlinks on their whole path (a WORKDIR or a
/// directory copied through a dangling link had replaced the link with a directory).
pub fn key_version(op: &crate::graph::Op) -> u32 {
    match op {
        crate::graph::Op::Copy(_) => 6,
        _ => 3,
    }
}

impl KeyRecipe<'_> {
    /// The key.
    pub fn key(&self) -> CacheKey {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        CacheKey(oci::Digest::of(&bytes))
    }
}

/// What a cache hit gives back: the whole layer chain of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The result's layers, base first.
    pub layers: Vec<Layer>,
    /// When the step first ran (RFC 3339): the image history's `created` for this step, so a
    /// cached rebuild writes the same config and gets the same image ID (as BuildKit does).
    /// Absent in records written before berth kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The key the result is known by, when it was looked up under another: a `COPY --from`
    /// recorded under its definition key names its content key here, so the steps after it
    /// get the same keys whichever way it hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<CacheKey>,
}

/// `SOURCE_DATE_EPOCH` when it is set to a number: the time every build output claims.
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<u64>().ok())
}

/// What the context stat cache remembers of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Device, inode, size, mtime and ctime (ns): if all match, the content has not changed.
    pub stat: (u64, u64, u64, i64, i64),
    /// The content's sha256.
    pub digest: oci::Digest,
    /// The digest of its extended attributes' PAX records, `""` for none (a `setxattr`
    /// changes the ctime, so `stat` covers them too); None when not read yet (a COPY's
    /// record, or an entry written before berth kept them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<String>,
}

/// Cache records and file stats by key.
///
/// Vocabulary: `get`/`put` of raw bytes under a namespaced key; the typed helpers are
/// provided methods. Implementations: [`RocksCache`], [`MemoryCache`].
pub trait CacheStore: Send + Sync {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `key`.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes what is under `key` (nothing there is no error).
    fn remove(&self, key: &[u8]) -> Result<()>;

    /// The result recorded for a vertex key.
    fn record(&self, key: &CacheKey) -> Result<Option<CacheRecord>> {
        let raw = self.get(format!("result/{key}").as_bytes())?;
        // A record we cannot read is a miss, not an error: it will be rewritten.
        let rec: Option<CacheRecord> = raw.and_then(|r| serde_json::from_slice(&r).ok());
        if rec.is_some() {
            self.touch(key)?;
        }
        Ok(rec)
    }
    /// Records the result of a vertex key.
    fn set_record(&self, key: &CacheKey, rec: &CacheRecord) -> Result<()> {
        self.put(format!("result/{key}").as_bytes(), &serde_json::to_vec(rec).unwrap_or_default())?;
        self.touch(key)
    }
    /// Notes that a record was used now (`used/<key>` = Unix seconds): `berth builder prune`
    /// removes the least recently used first.
    fn touch(&self, key: &CacheKey) -> Result<()> {
        self.put(format!("used/{key}").as_bytes(), now_secs().to_string().as_bytes())
    }
    /// What the stat cache knows of a context file.
    fn file(&self, path: &Path) -> Result<Option<FileStat>> {
        let raw = self.get(format!("file/{}", path.display()).as_bytes())?;
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()))
    }
    /// The compressed twin of an uncompressed layer, made when an image was exported.
    fn compressed(&self, diff_id: &oci::Digest, compression: &str) -> Result<Option<Layer>> {
        let raw = self.get(format!("compressed/{diff_id}/{compression}").as_bytes())?;
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()))
    }
    /// Remembers the compressed twin of an uncompressed layer.
    fn set_compressed(&self, diff_id: &oci::Digest, compression: &str, layer: &Layer) -> Result<()> {
        let key = format!("compressed/{diff_id}/{compression}");
        self.put(key.as_bytes(), &serde_json::to_vec(layer).unwrap_or_default())
    }
    /// Remembers a context file's stat and digest.
    fn set_file(&self, path: &Path, stat: &FileStat) -> Result<()> {
        self.put(format!("file/{}", path.display()).as_bytes(), &serde_json::to_vec(stat).unwrap_or_default())
    }
}

/// The persistent cache: rocksdb under `$BERTH_ROOT/buildcache`, held open for one build.
pub struct RocksCache {
    db: rocksdb::DB,
    path: PathBuf,
}

impl std::fmt::Debug for RocksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksCache").field("path", &self.path).finish()
    }
}

impl RocksCache {
    /// Opens (or creates) the cache under `root`; waits while another build holds it.
    pub fn open(root: &Path) -> Result<RocksCache> {
        let path = root.join("buildcache");
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(2);
        let started = std::time::Instant::now();
        loop {
            match rocksdb::DB::open(&opts, &path) {
                Ok(db) => return Ok(RocksCache { db, path }),
                // Another build holds the LOCK: builds of one root take turns on the cache.
                Err(e) if e.to_string().contains("lock") && started.elapsed().as_secs() < 600 => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(source) => return Err(Error::Cache { path: path.display().to_string(), source }),
            }
        }
    }
}

impl RocksCache {
    /// Opens the cache under `root` unless a build holds it now (None then): for `berth
    /// builder prune`, which must never take what a running build uses.
    pub fn try_open(root: &Path) -> Result<Option<RocksCache>> {
        let path = root.join("buildcache");
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(2);
        match rocksdb::DB::open(&opts, &path) {
            Ok(db) => Ok(Some(RocksCache { db, path })),
            Err(e) if e.to_string().contains("lock") => Ok(None),
            Err(source) => Err(Error::Cache { path: path.display().to_string(), source }),
        }
    }

    /// Opens the cache under `root` to read, beside a build that may hold it (for `berth
    /// system df`); None when there is no cache yet.
    pub fn open_read_only(root: &Path) -> Result<Option<RocksCache>> {
        let path = root.join("buildcache");
        if !path.join("CURRENT").exists() {
            return Ok(None);
        }
        match rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), &path, false) {
            Ok(db) => Ok(Some(RocksCache { db, path })),
            Err(source) => Err(Error::Cache { path: path.display().to_string(), source }),
        }
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn entries(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let mode = rocksdb::IteratorMode::From(prefix.as_bytes(), rocksdb::Direction::Forward);
        for item in self.db.iterator(mode) {
            let (k, v) = item.map_err(|source| Error::Cache { path: self.path.display().to_string(), source })?;
            let Some(k) = std::str::from_utf8(&k).ok().filter(|k| k.starts_with(prefix)) else { break };
            out.push((k.to_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Deletes an entry.
    pub fn delete(&self, key: &str) -> Result<()> {
        self.db.delete(key.as_bytes()).map_err(|source| Error::Cache { path: self.path.display().to_string(), source })
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl CacheStore for RocksCache {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(|source| Error::Cache { path: self.path.display().to_string(), source })
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put(key, value).map_err(|source| Error::Cache { path: self.path.display().to_string(), source })
    }

    fn remove(&self, key: &[u8]) -> Result<()> {
        self.db.delete(key).map_err(|source| Error::Cache { path: self.path.display().to_string(), source })
    }
}

/// A cache in memory, for tests and `--no-cache` runs that must not write.
#[derive(Debug, Default)]
pub struct MemoryCache {
    map: Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>,
}

impl CacheStore for MemoryCache {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.lock().map_or(None, |m| m.get(key).cloned()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        if let Ok(mut m) = self.map.lock() {
            m.insert(key.to_vec(), value.to_vec());
        }
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<()> {
        if let Ok(mut m) = self.map.lock() {
            m.remove(key);
        }
        Ok(())
    }
}

/// One lock per key, made on first use: work on a key (a blob fetch, a compression, a
/// cache-mount restore) is done by one thread while the others that want it wait, then
/// find it done. `T` is what the holder may note for the next one (`()` for nothing).
pub struct KeyedLocks<K, T> {
    slots: Mutex<std::collections::HashMap<K, std::sync::Arc<Mutex<T>>>>,
}

impl<K, T> Default for KeyedLocks<K, T> {
    fn default() -> Self {
        KeyedLocks { slots: Mutex::new(std::collections::HashMap::new()) }
    }
}

impl<K: std::hash::Hash + Eq, T: Default> KeyedLocks<K, T> {
    /// Runs `f` holding `key`'s lock.
    pub fn with<R>(&self, key: K, f: impl FnOnce(&mut T) -> R) -> R {
        let slot = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_default().clone();
        let mut held = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut held)
    }
}

#[cfg(test)]
mod testsuite {
    use super::*;

    #[test]
    fn the_same_run_step_for_two_platforms_has_two_keys() {
        let exec = |platform: &str| {
            crate::graph::Op::Exec(crate::graph::ExecOp {
                args: vec!["/bin/sh".into(), "-c".into(), "uname -m > /arch".into()],
                env: vec![],
                cwd: "/".into(),
                user: None,
                platform: platform.into(),
                host_network: true,
                extra_hosts: vec![],
                insecure: false,
                mounts: vec![],
                script: None,
                proxy_env: vec![],
            })
        };
        let base = CacheKey(oci::Digest::of(b"one base, say a static binary on scratch"));
        let key =
            |op: &crate::graph::Op| KeyRecipe { version: 2, op, inputs: vec![&base], sources: None, epoch: None }.key();
        let (amd64, arm64) = (exec("linux/amd64"), exec("linux/arm64"));
        assert_ne!(key(&amd64), key(&arm64));
        assert_eq!(key(&arm64), key(&exec("linux/arm64")));
    }

    fn round_trips(c: &dyn CacheStore) {
        let key = CacheKey(oci::Digest::of(b"k"));
        assert_eq!(c.record(&key).unwrap(), None);
        let layer = Layer {
            digest: oci::Digest::of(b"blob"),
            diff_id: oci::Digest::of(b"tar"),
            size: 4,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        };
        let rec = CacheRecord { layers: vec![layer], created: Some("2024-01-01T00:00:00Z".into()), result_key: None };
        c.set_record(&key, &rec).unwrap();
        assert_eq!(c.record(&key).unwrap(), Some(rec));
        let p = Path::new("/ctx/a.txt");
        let st = FileStat { stat: (1, 2, 3, 4, 5), digest: oci::Digest::of(b"a"), xattrs: None };
        assert_eq!(c.file(p).unwrap(), None);
        c.set_file(p, &st).unwrap();
        assert_eq!(c.file(p).unwrap(), Some(st));
        c.put(b"result/garbage", b"not json").unwrap();
        assert_eq!(c.get(b"result/garbage").unwrap().as_deref(), Some(&b"not json"[..]));
    }

    #[test]
    fn memory_cache() {
        round_trips(&MemoryCache::default());
    }

    #[test]
    fn rocks_cache_persists_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        round_trips(&RocksCache::open(dir.path()).unwrap());
        let again = RocksCache::open(dir.path()).unwrap();
        assert!(again.file(Path::new("/ctx/a.txt")).unwrap().is_some());
    }
}
