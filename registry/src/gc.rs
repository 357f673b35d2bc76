//! Garbage collection: mark what tagged manifests reach, sweep the rest.
//!
//! Live manifests are the tagged ones, the children of live indexes, and the referrers
//! of live manifests. Untagged manifests that are not live lose their revision link;
//! blobs that no live manifest reaches are deleted. Anything written within the grace
//! period (an hour by default) is spared, so a push running during collection, whose
//! blobs and manifests are not tagged yet, keeps them all. Upload sessions that have not
//! been written to for the upload age (a week by default, distribution's `uploadpurging`
//! age) are abandoned: they are purged, bytes and multipart state alike.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use oci::{Digest, Manifest};

use crate::domain::Registry;
use crate::error::Result;
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
}

/// How a collection runs.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Only report.
    pub dry_run: bool,
    /// Manifests and blobs younger than this are spared.
    pub grace: Duration,
    /// Upload sessions untouched for this long are purged.
    pub upload_age: Duration,
}

/// distribution's default `uploadpurging` age.
pub const DEFAULT_UPLOAD_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

async fn young(registry: &Registry, path: &str, cutoff: SystemTime) -> Result<bool> {
    match registry.driver().stat(path).await {
        Ok(i) => Ok(i.modified > cutoff),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs one mark-and-sweep; with `dry_run` it only reports. Uploads age as by default.
pub async fn collect(registry: &Registry, dry_run: bool, grace: Duration) -> Result<GcReport> {
    collect_with(registry, GcOptions { dry_run, grace, upload_age: DEFAULT_UPLOAD_AGE }).await
}

/// Runs one mark-and-sweep and purges abandoned uploads, as `opts` say.
pub async fn collect_with(registry: &Registry, opts: GcOptions) -> Result<GcReport> {
    let GcOptions { dry_run, grace, upload_age } = opts;
    let upload_cutoff = SystemTime::now().checked_sub(upload_age).unwrap_or(SystemTime::UNIX_EPOCH);
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let driver = registry.driver().clone();
    let mut report = GcReport::default();
    let mut marked: BTreeSet<Digest> = BTreeSet::new();

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
            if !dry_run {
                driver.delete(&paths::upload_dir(&repo, &id)).await?;
            }
        }
    }

    for repo in registry.catalog().await? {
        let name = repo.parse()?;
        let mut all: Vec<Digest> = Vec::new();
        for alg in [oci::Algorithm::Sha256, oci::Algorithm::Sha512] {
            for hex in list(registry, &paths::revisions_dir(&repo, alg)).await? {
                if let Ok(d) = oci::Digest::new(alg, &hex) {
                    all.push(d);
                }
            }
        }
        let mut parsed: HashMap<Digest, Manifest> = HashMap::new();
        let mut subjects: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for d in &all {
            let Ok(bytes) = driver.get(&paths::blob_data(d)).await else {
                continue;
            };
            if let Ok(m) = Manifest::parse(&bytes, None) {
                parsed.insert(d.clone(), m);
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
        let mut live: BTreeSet<Digest> = BTreeSet::new();
        let mut work: Vec<Digest> = Vec::new();
        for tag in list(registry, &paths::tags_dir(&repo)).await? {
            if let Ok(b) = driver.get(&paths::tag_link(&repo, &tag)).await {
                if let Ok(d) = String::from_utf8_lossy(&b).trim().parse::<Digest>() {
                    work.push(d);
                }
            }
        }
        for d in &all {
            if young(registry, &paths::revision_link(&repo, d), cutoff).await? {
                work.push(d.clone());
            }
        }
        while let Some(d) = work.pop() {
            if !live.insert(d.clone()) {
                continue;
            }
            if let Some(Manifest::Index(i)) = parsed.get(&d) {
                work.extend(i.manifests().iter().filter_map(|c| oci::manifest::descriptor_digest(c).ok()));
            }
            work.extend(subjects.get(&d).cloned().unwrap_or_default());
        }
        for d in &all {
            if live.contains(d) {
                marked.insert(d.clone());
                if let Some(m) = parsed.get(d) {
                    marked.extend(m.references().unwrap_or_default());
                }
            } else {
                report.manifests.push((repo.clone(), d.clone()));
                if !dry_run {
                    registry.delete_manifest(&name, &d.to_string()).await?;
                }
            }
        }
    }

    for alg in [oci::Algorithm::Sha256, oci::Algorithm::Sha512] {
        let base = paths::blobs_dir(alg);
        for prefix in list(registry, &base).await? {
            for hex in list(registry, &format!("{base}/{prefix}")).await? {
                let Ok(d) = oci::Digest::new(alg, &hex) else {
                    continue;
                };
                if marked.contains(&d) {
                    continue;
                }
                let data = paths::blob_data(&d);
                let info = match driver.stat(&data).await {
                    Ok(i) => i,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                if info.modified > cutoff {
                    continue;
                }
                report.bytes += info.size;
                report.blobs.push(d.clone());
                if !dry_run {
                    driver.delete(data.trim_end_matches("/data")).await?;
                }
            }
        }
    }
    Ok(report)
}

async fn list(registry: &Registry, path: &str) -> Result<Vec<String>> {
    match registry.driver().list(path).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}
