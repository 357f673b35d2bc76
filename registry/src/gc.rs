//! Garbage collection: mark what tagged manifests reach, sweep the rest, while pushes run.
//!
//! Live manifests are the tagged ones, the children of live indexes, and the referrers
//! of live manifests. Untagged manifests that are not live lose their revision link;
//! blobs that no live manifest reaches are deleted. Anything written within the grace
//! period (an hour by default) is spared, so a push running during collection, whose
//! blobs and manifests are not tagged yet, keeps them all. Upload sessions that have not
//! been written to for the upload age (a week by default, distribution's `uploadpurging`
//! age) are abandoned: they are purged, bytes and multipart state alike.
//!
//! # Pushes that reuse garbage
//!
//! File times alone cannot protect a blob that is old and unreferenced when gc marks, and
//! is linked again before gc sweeps: a HEAD hit followed by a manifest PUT, a
//! cross-repository mount, a re-upload of identical content (the bytes are already
//! stored, so nothing is rewritten). `berth registry gc` may run as its own process beside
//! any number of servers over the same directory or bucket, so the two sides agree
//! through storage alone ([`crate::paths`] draws `_gc/`):
//!
//! - A request that links blobs (finishing an upload, mounting, putting a manifest: its
//!   config, layers, children and itself) first writes a *claim* `_gc/claims/<uuid>`
//!   naming those digests, then reads `_gc/sweeping`; while that names one of its digests
//!   it waits (up to 30 s, then TOOMANYREQUESTS). Only then does it check that the blobs
//!   exist and write its links; at the end it writes `<uuid>.done`.
//! - gc reads the claims before it marks. For each batch of deletions (64 manifests or
//!   blobs), it writes their digests to `_gc/sweeping`, then lists the claims again, spares
//!   every digest a claim names (and what a claimed manifest references), deletes the
//!   rest, and removes `_gc/sweeping`.
//!
//! Each side writes before it reads what the other wrote, and both storages are strongly
//! consistent (the filesystem; S3 since 2020), so for every deletion either gc sees the
//! claim and spares the blob, or the request sees the marker and checks existence only
//! after the deletion, failing cleanly (MANIFEST_BLOB_UNKNOWN, or a mount that answers
//! 202) or, for an upload, storing its own bytes again. No link or tag ever names a blob
//! gc deleted. The claims gc honours: those unfinished when it started (a request in
//! flight), those finished within the grace period (so the grace period counts from the
//! last reuse, as it counts from the upload for a fresh blob), and all written since it
//! started. It removes the others, and unfinished ones a day old (their process died).
//! A HEAD reads and claims nothing: if gc deletes the blob between a HEAD and the PUT,
//! the PUT fails and the client pushes again. Run one collection at a time: a new one
//! removes a marker a crashed one left. The web UI's gc runs one at a time per process
//! (`ui::actions`); a cron `berth registry gc` or another replica's UI must not overlap it.
//! In one process the same protocol applies. The cost: each linking request makes two more writes and one
//! read, and only gc removes claims, so a registry that never collects keeps two small
//! files per such request under `_gc/claims/`. Claims are written without fsync: they
//! coordinate processes that are running. A power cut may lose the last ones; then a blob
//! reused just before it, and still referenced by no manifest, has its grace period counted
//! from its upload again (its client's push was cut off too, and pushes it again).

mod claims;
mod mirrored;
#[cfg(test)]
mod race;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use oci::{Digest, Manifest};

pub(crate) use claims::claim;
pub use mirrored::MirrorScope;

use crate::domain::{Registry, RepoName};
use crate::driver::StorageDriver;
use crate::error::{ErrorCode, Result};
use crate::paths;

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    /// Untagged manifests unlinked, as (repository, digest).
    pub manifests: Vec<(String, Digest)>,
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Bytes those blobs held.
    pub bytes: u64,
    /// Abandoned upload sessions purged, as (repository, upload id).
    pub uploads: Vec<(String, String)>,
    /// Mirrored manifests evicted to fit a mirror's size limit, as (repository, digest);
    /// they are among `manifests` too.
    pub evicted: Vec<(String, Digest)>,
}

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only report.
    pub dry_run: bool,
    /// Manifests and blobs younger than this are spared.
    pub grace: Duration,
    /// Upload sessions untouched for this long are purged.
    pub upload_age: Duration,
    /// The pull-through mirror's repositories: kept untagged, evicted over a size limit.
    pub mirrored: Vec<MirrorScope>,
}

/// distribution's default `uploadpurging` age.
pub const DEFAULT_UPLOAD_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Deletions decided together: what `_gc/sweeping` names at once.
const BATCH: usize = 64;

/// Where a collection is, for tests that act between its steps.
#[derive(Debug, Clone)]
enum Stage {
    /// Every repository is marked; nothing is deleted yet.
    Marked,
    /// The batch of these digests is decided; their deletion comes next.
    Decided(#[cfg_attr(not(test), allow(dead_code))] Vec<Digest>),
}

/// Called at each [`Stage`]; the collection goes on once the future is done.
type Hook<'a> = &'a (dyn Fn(Stage) -> BoxFuture<'static, ()> + Send + Sync);

/// Runs one mark-and-sweep; with `dry_run` it only reports. Uploads age as by default.
pub async fn collect(registry: &Registry, dry_run: bool, grace: Duration) -> Result<GcReport> {
    collect_with(registry, GcOptions { dry_run, grace, upload_age: DEFAULT_UPLOAD_AGE, mirrored: Vec::new() }).await
}

/// Runs one mark-and-sweep and purges abandoned uploads, as `opts` say.
pub async fn collect_with(registry: &Registry, opts: GcOptions) -> Result<GcReport> {
    collect_hooked(registry, opts, &|_| Box::pin(async {})).await
}

async fn collect_hooked(registry: &Registry, opts: GcOptions, hook: Hook<'_>) -> Result<GcReport> {
    let cutoff = SystemTime::now().checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = GcReport::default();
    purge_uploads(registry, &opts, &mut report).await?;
    let driver = registry.driver().clone();
    if !opts.dry_run {
        // Left by a collection that died mid-batch; requests waiting on it go on.
        claims::end_batch(driver.as_ref()).await?;
    }
    let log = claims::ClaimLog::open(driver.clone(), cutoff, opts.dry_run).await?;
    let mut sweep = Sweep { driver, dry_run: opts.dry_run, log, hook };
    let mut marks = Marks::default();
    let repos = registry.catalog().await?;
    let evicted = mirrored::evictions(registry, &opts.mirrored, &repos).await?;
    for repo in repos {
        let mirror = mirrored::scope_of(&opts.mirrored, &repo).is_some();
        mark_repository(registry, &repo, Roots { cutoff, mirrored: mirror, evicted: &evicted }, &mut marks).await?;
    }
    let evicted_now = evicted;
    hook(Stage::Marked).await;
    sweep_manifests(registry, &mut sweep, &mut marks, &mut report).await?;
    // Only what was unlinked: an evicted manifest still in its grace period stays.
    report.evicted =
        report.manifests.iter().filter(|(r, d)| evicted_now.contains(&(r.clone(), d.clone()))).cloned().collect();
    sweep_blobs(registry, &mut sweep, &marks, cutoff, &mut report).await?;
    Ok(report)
}

async fn purge_uploads(registry: &Registry, opts: &GcOptions, report: &mut GcReport) -> Result<()> {
    let upload_cutoff = SystemTime::now().checked_sub(opts.upload_age).unwrap_or(SystemTime::UNIX_EPOCH);
    let driver = registry.driver();
    for repo in registry.repositories_with("_uploads").await? {
        for id in list(registry, &paths::uploads_dir(&repo)).await? {
            // The last write tells an abandoned session from a slow one.
            let data = paths::upload_data(&repo, &id);
            let last = match driver.stat(&data).await {
                Ok(i) => i.modified,
                Err(e) if e.is_not_found() => match driver.stat(&paths::upload_started(&repo, &id)).await {
                    Ok(i) => i.modified,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            };
            if last > upload_cutoff {
                continue;
            }
            report.uploads.push((repo.clone(), id.clone()));
            if !opts.dry_run {
                driver.delete(&paths::upload_dir(&repo, &id)).await?;
            }
        }
    }
    Ok(())
}

/// What marking found.
#[derive(Default)]
struct Marks {
    /// Blobs (manifests included) that live manifests reach.
    live: BTreeSet<Digest>,
    /// Manifests nothing keeps, as (repository, digest): unlinked unless claimed.
    unlink: Vec<(RepoName, Digest)>,
    /// What each parsed manifest references (config and layers, or children).
    refs: HashMap<Digest, Vec<Digest>>,
}

impl Marks {
    /// Makes `d` live with everything it reaches through parsed manifests.
    fn keep(&mut self, d: &Digest) {
        let mut work = vec![d.clone()];
        while let Some(d) = work.pop() {
            if self.live.insert(d.clone()) {
                work.extend(self.refs.get(&d).into_iter().flatten().cloned());
            }
        }
    }
}

async fn young(registry: &Registry, path: &str, cutoff: SystemTime) -> Result<bool> {
    match registry.driver().stat(path).await {
        Ok(i) => Ok(i.modified > cutoff),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads a repository's manifests into `marks.refs`; returns the referrers of each
/// subject, and which manifests are indexes.
async fn read_manifests(
    registry: &Registry,
    all: &[Digest],
    marks: &mut Marks,
) -> Result<(HashMap<Digest, Vec<Digest>>, HashSet<Digest>)> {
    let mut subjects: HashMap<Digest, Vec<Digest>> = HashMap::new();
    let mut indexes = HashSet::new();
    for d in all {
        let Ok(bytes) = registry.driver().get(&paths::blob_data(d)).await else {
            continue;
        };
        if let Ok(m) = Manifest::parse(&bytes, None) {
            if matches!(m, Manifest::Index(_)) {
                indexes.insert(d.clone());
            }
            marks.refs.insert(d.clone(), m.references().unwrap_or_default());
        }
        #[derive(serde::Deserialize)]
        struct Subject {
            subject: Option<serde_json::Value>,
        }
        if let Ok(Subject { subject: Some(s) }) = serde_json::from_slice::<Subject>(&bytes) {
            if let Some(sd) = s.get("digest").and_then(|v| v.as_str()).and_then(|v| v.parse::<Digest>().ok()) {
                subjects.entry(sd).or_default().push(d.clone());
            }
        }
    }
    Ok((subjects, indexes))
}

/// What keeps a repository's manifests: tags and revisions younger than `cutoff`, or, in a
/// mirrored repository, every revision but the evicted ones.
#[derive(Clone, Copy)]
struct Roots<'a> {
    cutoff: SystemTime,
    mirrored: bool,
    evicted: &'a HashSet<(String, Digest)>,
}

/// Marks what one repository's tags (and young revisions) reach; the rest is to unlink.
async fn mark_repository(registry: &Registry, repo: &str, roots: Roots<'_>, marks: &mut Marks) -> Result<()> {
    let Roots { cutoff, mirrored, evicted } = roots;
    let is_evicted = |d: &Digest| evicted.contains(&(repo.to_owned(), d.clone()));
    let name: RepoName = repo.parse()?;
    let mut all: Vec<Digest> = Vec::new();
    for alg in [oci::Algorithm::Sha256, oci::Algorithm::Sha512] {
        for hex in list(registry, &paths::revisions_dir(repo, alg)).await? {
            if let Ok(d) = oci::Digest::new(alg, &hex) {
                all.push(d);
            }
        }
    }
    let (subjects, indexes) = read_manifests(registry, &all, marks).await?;
    let mut work: Vec<Digest> = Vec::new();
    for tag in list(registry, &paths::tags_dir(repo)).await? {
        if let Ok(b) = registry.driver().get(&paths::tag_link(repo, &tag)).await {
            if let Ok(d) = String::from_utf8_lossy(&b).trim().parse::<Digest>() {
                if !is_evicted(&d) {
                    work.push(d);
                }
            }
        }
    }
    for d in &all {
        let kept = (mirrored && !is_evicted(d)) || young(registry, &paths::revision_link(repo, d), cutoff).await?;
        if kept {
            work.push(d.clone());
        }
    }
    let mut live: BTreeSet<Digest> = BTreeSet::new();
    while let Some(d) = work.pop() {
        if !live.insert(d.clone()) {
            continue;
        }
        if indexes.contains(&d) {
            work.extend(marks.refs.get(&d).cloned().unwrap_or_default());
        }
        work.extend(subjects.get(&d).cloned().unwrap_or_default());
    }
    for d in all {
        if live.contains(&d) {
            marks.live.insert(d.clone());
            marks.live.extend(marks.refs.get(&d).cloned().unwrap_or_default());
        } else {
            marks.unlink.push((name.clone(), d));
        }
    }
    Ok(())
}

/// A collection's deciding side: the claims it honours, and the batch marker.
struct Sweep<'a> {
    driver: Arc<dyn StorageDriver>,
    dry_run: bool,
    log: claims::ClaimLog,
    hook: Hook<'a>,
}

impl Sweep<'_> {
    /// Publishes a batch, then reads the claims: returns the digests of `batch` to spare.
    async fn decide(&mut self, batch: &[Digest], refs: &HashMap<Digest, Vec<Digest>>) -> Result<HashSet<Digest>> {
        if !self.dry_run {
            claims::start_batch(self.driver.as_ref(), batch).await?;
        }
        let spared = match self.log.refresh().await {
            Ok(claimed) => claims::reached(claimed, batch, refs),
            Err(e) => {
                self.end().await?;
                return Err(e);
            }
        };
        (self.hook)(Stage::Decided(batch.to_vec())).await;
        Ok(spared)
    }

    /// Ends the batch: requests waiting on its digests go on.
    async fn end(&self) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        claims::end_batch(self.driver.as_ref()).await
    }
}

async fn sweep_manifests(
    registry: &Registry,
    sweep: &mut Sweep<'_>,
    marks: &mut Marks,
    report: &mut GcReport,
) -> Result<()> {
    let unlink = std::mem::take(&mut marks.unlink);
    for chunk in unlink.chunks(BATCH) {
        let digests: Vec<Digest> = chunk.iter().map(|(_, d)| d.clone()).collect();
        let spared = sweep.decide(&digests, &marks.refs).await?;
        let dry_run = sweep.dry_run;
        let done = async {
            for (repo, d) in chunk {
                if spared.contains(d) {
                    marks.keep(d);
                    continue;
                }
                report.manifests.push((repo.to_string(), d.clone()));
                if !dry_run {
                    match registry.delete_manifest(repo, &d.to_string()).await {
                        Err(e) if e.code != ErrorCode::ManifestUnknown => return Err(e),
                        _ => {}
                    }
                }
            }
            Ok(())
        }
        .await;
        sweep.end().await?;
        done?;
    }
    Ok(())
}

/// Blobs no live manifest reaches and older than the cutoff, with their sizes.
async fn blob_candidates(registry: &Registry, marks: &Marks, cutoff: SystemTime) -> Result<Vec<(Digest, u64)>> {
    let mut candidates = Vec::new();
    for alg in [oci::Algorithm::Sha256, oci::Algorithm::Sha512] {
        let base = paths::blobs_dir(alg);
        for prefix in list(registry, &base).await? {
            for hex in list(registry, &format!("{base}/{prefix}")).await? {
                let Ok(d) = oci::Digest::new(alg, &hex) else {
                    continue;
                };
                if marks.live.contains(&d) {
                    continue;
                }
                match registry.driver().stat(&paths::blob_data(&d)).await {
                    Ok(info) if info.modified <= cutoff => candidates.push((d, info.size)),
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(candidates)
}

async fn sweep_blobs(
    registry: &Registry,
    sweep: &mut Sweep<'_>,
    marks: &Marks,
    cutoff: SystemTime,
    report: &mut GcReport,
) -> Result<()> {
    let candidates = blob_candidates(registry, marks, cutoff).await?;
    for chunk in candidates.chunks(BATCH) {
        let digests: Vec<Digest> = chunk.iter().map(|(d, _)| d.clone()).collect();
        let spared = sweep.decide(&digests, &marks.refs).await?;
        let driver = sweep.driver.clone();
        let dry_run = sweep.dry_run;
        let done = async {
            for (d, size) in chunk.iter().filter(|(d, _)| !spared.contains(d)) {
                if !dry_run {
                    let data = paths::blob_data(d);
                    match driver.delete(data.trim_end_matches("/data")).await {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                report.bytes += size;
                report.blobs.push(d.clone());
            }
            Ok::<(), crate::error::RegistryError>(())
        }
        .await;
        sweep.end().await?;
        done?;
    }
    Ok(())
}

async fn list(registry: &Registry, path: &str) -> Result<Vec<String>> {
    match registry.driver().list(path).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}
