//! Claims and the sweeping marker: how a request that links blobs and a collection that
//! deletes them agree, through storage alone, on which blobs stay (see [`crate::gc`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use oci::Digest;

use crate::driver::StorageDriver;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::paths;

/// How often a request looks again at a sweeping marker that names one of its digests.
const POLL: Duration = Duration::from_millis(20);

/// How long a request waits for a collection to finish deciding about its digests.
const WAIT: Duration = Duration::from_secs(30);

/// An unfinished claim older than this belongs to a process that died: it spares nothing more.
pub(super) const ABANDONED: Duration = Duration::from_secs(24 * 3600);

/// A request's promise, stored before it checks that blobs exist and links them: until
/// its `.done` record is old, no collection deletes them. Finish it once the links are
/// written; dropped unfinished (an error path), it finishes in the background.
pub(crate) struct Claim {
    driver: Arc<dyn StorageDriver>,
    id: String,
    finished: bool,
}

fn digest_lines(digests: &[Digest]) -> Bytes {
    let mut text = String::new();
    for d in digests {
        text.push_str(&d.to_string());
        text.push('\n');
    }
    Bytes::from(text)
}

fn parse_lines(bytes: &[u8]) -> impl Iterator<Item = Digest> + '_ {
    std::str::from_utf8(bytes).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok())
}

/// Claims `digests` (writes the claim, then waits while a collection is deciding about
/// one of them). The caller checks that what it links exists only after this returns.
pub(crate) async fn claim(driver: &Arc<dyn StorageDriver>, digests: &[Digest]) -> Result<Claim> {
    let id = uuid::Uuid::new_v4().to_string();
    // A claim matters only while its request runs: no fsync (two waits for the disk each).
    driver.put_unsynced(&paths::gc_claim(&id, false), digest_lines(digests)).await?;
    let claim = Claim { driver: driver.clone(), id, finished: false };
    let wanted: HashSet<&Digest> = digests.iter().collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let deciding = match driver.get(&paths::gc_sweeping()).await {
            Ok(b) => parse_lines(&b).find(|d| wanted.contains(d)),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let Some(d) = deciding else { return Ok(claim) };
        if Instant::now() >= deadline {
            return Err(RegistryError::new(
                ErrorCode::TooManyRequests,
                format!("garbage collection is deciding about {d}; try again"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn write_done(driver: &dyn StorageDriver, id: &str) {
    if let Err(e) = driver.put_unsynced(&paths::gc_claim(id, true), Bytes::new()).await {
        // The links are written; an unfinished claim only spares its blobs until it is abandoned.
        tracing::warn!(claim = id, error = %e, "could not record a finished claim");
    }
}

impl Claim {
    /// Records that the request finished: from now on the grace period counts.
    pub(crate) async fn finish(mut self) {
        self.finished = true;
        write_done(self.driver.as_ref(), &self.id).await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (driver, id) = (self.driver.clone(), std::mem::take(&mut self.id));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(async move { write_done(driver.as_ref(), &id).await })),
            Err(_) => tracing::warn!(claim = id, "claim dropped outside a runtime: left unfinished"),
        }
    }
}

/// The claims a collection honours: those unfinished when it started, those finished
/// within the grace period, and every claim written since it started.
pub(super) struct ClaimLog {
    driver: Arc<dyn StorageDriver>,
    /// Every claim name seen, with or without `.done`.
    seen: HashSet<String>,
    /// The digests that honoured claims name.
    claimed: HashSet<Digest>,
}

impl ClaimLog {
    /// Reads the claims at the start of a collection; removes those that spare nothing any
    /// more (finished before `cutoff`, or abandoned), unless `dry_run`.
    pub(super) async fn open(driver: Arc<dyn StorageDriver>, cutoff: SystemTime, dry_run: bool) -> Result<Self> {
        let names = list(driver.as_ref(), &paths::gc_claims_dir()).await?;
        let done: HashSet<&str> = names.iter().filter_map(|n| n.strip_suffix(".done")).collect();
        let abandoned = SystemTime::now().checked_sub(ABANDONED).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut log =
            ClaimLog { driver: driver.clone(), seen: names.iter().cloned().collect(), claimed: HashSet::new() };
        let mut stale: Vec<String> = Vec::new();
        for name in &names {
            if let Some(id) = name.strip_suffix(".done") {
                if !names.iter().any(|n| n == id) {
                    stale.push(name.clone());
                }
                continue;
            }
            let honoured = if done.contains(name.as_str()) {
                modified(driver.as_ref(), &paths::gc_claim(name, true)).await?.is_some_and(|t| t > cutoff)
            } else {
                let young =
                    modified(driver.as_ref(), &paths::gc_claim(name, false)).await?.is_some_and(|t| t > abandoned);
                if !young {
                    tracing::warn!(claim = name, "unfinished claim abandoned a day ago: no longer honoured");
                }
                young
            };
            if honoured {
                log.read(name).await?;
            } else {
                stale.push(name.clone());
                stale.push(format!("{name}.done"));
            }
        }
        if !dry_run {
            for name in stale.iter().filter(|n| names.contains(n)) {
                match driver.delete(&format!("{}/{name}", paths::gc_claims_dir())).await {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => {}
                }
            }
        }
        Ok(log)
    }

    async fn read(&mut self, name: &str) -> Result<()> {
        match self.driver.get(&paths::gc_claim(name, false)).await {
            Ok(b) => self.claimed.extend(parse_lines(&b)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Adds the claims written since the last look, and returns every honoured digest.
    pub(super) async fn refresh(&mut self) -> Result<&HashSet<Digest>> {
        for name in list(self.driver.as_ref(), &paths::gc_claims_dir()).await? {
            if self.seen.insert(name.clone()) && !name.ends_with(".done") {
                self.read(&name).await?;
            }
        }
        Ok(&self.claimed)
    }
}

/// The digests in `batch` that honoured claims reach, directly or through the references
/// of claimed manifests (`refs`: what each manifest gc has parsed names).
pub(super) fn reached<'a>(
    claimed: &HashSet<Digest>,
    batch: impl IntoIterator<Item = &'a Digest>,
    refs: &HashMap<Digest, Vec<Digest>>,
) -> HashSet<Digest> {
    let mut reach: HashSet<Digest> = HashSet::new();
    let mut work: Vec<&Digest> = claimed.iter().collect();
    while let Some(d) = work.pop() {
        if reach.insert(d.clone()) {
            work.extend(refs.get(d).into_iter().flatten());
        }
    }
    batch.into_iter().filter(|d| reach.contains(*d)).cloned().collect()
}

/// Publishes the digests a collection is about to decide about (before it reads the claims).
pub(super) async fn start_batch(driver: &dyn StorageDriver, digests: &[Digest]) -> Result<()> {
    Ok(driver.put(&paths::gc_sweeping(), digest_lines(digests)).await?)
}

/// Removes the sweeping marker: the batch is decided and deleted.
pub(super) async fn end_batch(driver: &dyn StorageDriver) -> Result<()> {
    match driver.delete(&paths::gc_sweeping()).await {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

async fn modified(driver: &dyn StorageDriver, path: &str) -> Result<Option<SystemTime>> {
    match driver.stat(path).await {
        Ok(i) => Ok(Some(i.modified)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn list(driver: &dyn StorageDriver, path: &str) -> Result<Vec<String>> {
    match driver.list(path).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}
