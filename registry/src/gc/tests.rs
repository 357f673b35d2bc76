//! Collections that race a push, made deterministic: the push runs at a [`Stage`] hook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::task::JoinHandle;

use super::*;
use crate::domain::BodyStream;
use crate::driver::MemoryDriver;

/// A one-layer image: its config, layer and manifest bytes.
#[derive(Clone)]
pub(super) struct Image {
    pub config: Bytes,
    pub layer: Bytes,
    pub manifest: Bytes,
}

impl Image {
    pub fn new(seed: &str) -> Image {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"comment":"{seed}"}}"#
        ));
        let layer = Bytes::from(format!("layer of {seed}").repeat(64));
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::media::OCI_MANIFEST,
            "config": {"mediaType": oci::media::OCI_CONFIG, "digest": Digest::of(&config), "size": config.len()},
            "layers": [{"mediaType": oci::media::OCI_LAYER_GZIP, "digest": Digest::of(&layer), "size": layer.len()}],
        });
        Image { config, layer, manifest: Bytes::from(serde_json::to_vec(&m).unwrap()) }
    }

    pub fn layer_digest(&self) -> Digest {
        Digest::of(&self.layer)
    }

    pub fn config_digest(&self) -> Digest {
        Digest::of(&self.config)
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }
}

pub(super) fn body(bytes: &Bytes) -> BodyStream {
    let chunk = bytes.clone();
    Box::pin(futures_util::stream::once(async move { Ok(chunk) }))
}

pub(super) fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

/// Uploads the image's blobs into `repo` and puts its manifest under `tag`.
pub(super) async fn push(registry: &Registry, repo: &RepoName, tag: &str, image: &Image) -> Result<()> {
    registry.put_blob(repo, &image.config_digest(), body(&image.config)).await?;
    registry.put_blob(repo, &image.layer_digest(), body(&image.layer)).await?;
    registry.put_manifest(repo, tag, Some(oci::media::OCI_MANIFEST), image.manifest.clone()).await.map(drop)
}

/// An image pushed and deleted: its blobs stay linked in `repo`, its manifest untagged.
async fn garbage(registry: &Registry, repo: &RepoName, image: &Image) {
    push(registry, repo, "old", image).await.unwrap();
    registry.delete_manifest(repo, "old").await.unwrap();
}

/// Pulls `repo:tag` as a client would: the manifest, then every blob it names, read whole
/// and checked against its digest.
pub(super) async fn pull_complete(registry: &Registry, repo: &RepoName, tag: &str) {
    let stored = registry.get_manifest(repo, tag).await.unwrap_or_else(|e| panic!("{repo}:{tag}: {e}"));
    let manifest = Manifest::parse(&stored.bytes, None).unwrap();
    for d in manifest.references().unwrap() {
        registry.blob_size(repo, &d).await.unwrap_or_else(|e| panic!("{repo}:{tag} names {d}: {e}"));
        let chunks: Vec<Bytes> = registry.blob_stream(&d, 0).await.unwrap().try_collect().await.unwrap();
        assert_eq!(Digest::of(&chunks.concat()), d, "{repo}:{tag}: {d} reads back whole");
    }
}

fn now() -> GcOptions {
    GcOptions { dry_run: false, grace: Duration::ZERO, upload_age: DEFAULT_UPLOAD_AGE, mirrored: Vec::new() }
}

/// Runs a collection that calls `act` once every repository is marked.
async fn collect_marked<F>(registry: &Registry, act: F) -> GcReport
where
    F: Fn(Registry) -> BoxFuture<'static, ()> + Send + Sync,
{
    let pusher = registry.clone();
    let hook = move |stage: Stage| -> BoxFuture<'static, ()> {
        match stage {
            Stage::Marked => act(pusher.clone()),
            Stage::Decided(_) => Box::pin(async {}),
        }
    };
    collect_hooked(registry, now(), &hook).await.unwrap()
}

fn memory() -> Registry {
    Registry::new(Arc::new(MemoryDriver::new()))
}

fn assert_kept(report: &GcReport, image: &Image) {
    for d in [image.config_digest(), image.layer_digest(), image.digest()] {
        assert!(!report.blobs.contains(&d), "{d} was swept: {:?}", report.blobs);
    }
}

#[tokio::test]
async fn a_head_hit_then_a_manifest_put_during_gc_keeps_the_blobs() {
    let registry = memory();
    let (app, image) = (repo("app"), Image::new("head"));
    garbage(&registry, &app, &image).await;
    let pushed = image.clone();
    let report = collect_marked(&registry, move |r| {
        let image = pushed.clone();
        Box::pin(async move {
            let app = repo("app");
            // The client finds both blobs in the repository and uploads nothing.
            r.blob_size(&app, &image.config_digest()).await.unwrap();
            r.blob_size(&app, &image.layer_digest()).await.unwrap();
            r.put_manifest(&app, "v2", Some(oci::media::OCI_MANIFEST), image.manifest.clone()).await.unwrap();
        })
    })
    .await;
    assert_kept(&report, &image);
    assert!(report.manifests.is_empty(), "the manifest pushed again keeps its revision: {:?}", report.manifests);
    pull_complete(&registry, &app, "v2").await;
}

#[tokio::test]
async fn a_cross_repository_mount_during_gc_keeps_the_blobs() {
    let registry = memory();
    let image = Image::new("mount");
    garbage(&registry, &repo("src"), &image).await;
    let pushed = image.clone();
    let report = collect_marked(&registry, move |r| {
        let image = pushed.clone();
        Box::pin(async move {
            let (src, dst) = (repo("src"), repo("dst"));
            for d in [image.config_digest(), image.layer_digest()] {
                assert!(r.mount_blob(&dst, &d, Some(&src), None).await.unwrap(), "{d} mounts");
            }
            r.put_manifest(&dst, "v1", Some(oci::media::OCI_MANIFEST), image.manifest.clone()).await.unwrap();
        })
    })
    .await;
    assert_kept(&report, &image);
    pull_complete(&registry, &repo("dst"), "v1").await;
}

#[tokio::test]
async fn a_re_upload_of_identical_content_during_gc_keeps_the_blobs() {
    let registry = memory();
    let image = Image::new("re-upload");
    garbage(&registry, &repo("src"), &image).await;
    let pushed = image.clone();
    let report = collect_marked(&registry, move |r| {
        let image = pushed.clone();
        Box::pin(async move { push(&r, &repo("other"), "v1", &image).await.unwrap() })
    })
    .await;
    assert_kept(&report, &image);
    pull_complete(&registry, &repo("other"), "v1").await;
}

#[tokio::test]
async fn a_tag_parameter_during_gc_keeps_the_manifest_it_names() {
    let registry = memory();
    let (app, image) = (repo("app"), Image::new("tag parameter"));
    garbage(&registry, &app, &image).await;
    let pushed = image.clone();
    let report = collect_marked(&registry, move |r| {
        let image = pushed.clone();
        Box::pin(async move {
            let by_digest = image.digest().to_string();
            let tags = ["v3".to_owned()];
            let media = Some(oci::media::OCI_MANIFEST);
            r.put_manifest_tagged(&repo("app"), &by_digest, media, image.manifest.clone(), &tags).await.unwrap();
        })
    })
    .await;
    assert_kept(&report, &image);
    pull_complete(&registry, &app, "v3").await;
}

/// Runs a collection that starts `act` once the batch holding the image's layer is
/// decided, before anything of it is deleted; returns the report and what `act` returned.
async fn collect_then<T, F>(registry: &Registry, image: &Image, act: F) -> (GcReport, T)
where
    T: Send + 'static,
    F: Fn(Registry) -> BoxFuture<'static, T> + Send + Sync,
{
    let started: Arc<Mutex<Option<JoinHandle<T>>>> = Arc::default();
    let (pusher, layer, slot) = (registry.clone(), image.layer_digest(), started.clone());
    let hook = move |stage: Stage| -> BoxFuture<'static, ()> {
        if let Stage::Decided(batch) = stage {
            if batch.contains(&layer) {
                *slot.lock().unwrap() = Some(tokio::spawn(act(pusher.clone())));
            }
        }
        Box::pin(async {})
    };
    let report = collect_hooked(registry, now(), &hook).await.unwrap();
    let task = started.lock().unwrap().take().expect("the layer's batch was decided");
    (report, task.await.unwrap())
}

#[tokio::test]
async fn a_manifest_put_after_gc_decided_fails_cleanly_and_tags_nothing() {
    let registry = memory();
    let (app, image) = (repo("app"), Image::new("late put"));
    garbage(&registry, &app, &image).await;
    let manifest = image.manifest.clone();
    let (report, put) = collect_then(&registry, &image, move |r| {
        let manifest = manifest.clone();
        Box::pin(async move { r.put_manifest(&repo("app"), "late", Some(oci::media::OCI_MANIFEST), manifest).await })
    })
    .await;
    assert!(report.blobs.contains(&image.layer_digest()), "{:?}", report.blobs);
    assert_eq!(put.unwrap_err().code, ErrorCode::ManifestBlobUnknown);
    assert!(registry.get_manifest(&app, "late").await.is_err(), "no tag names swept blobs");
}

#[tokio::test]
async fn an_upload_after_gc_decided_stores_its_bytes_again() {
    let registry = memory();
    let (app, image) = (repo("app"), Image::new("late upload"));
    garbage(&registry, &app, &image).await;
    let layer = image.layer.clone();
    let (report, upload) = collect_then(&registry, &image, move |r| {
        let layer = layer.clone();
        Box::pin(async move { r.put_blob(&repo("app"), &Digest::of(&layer), body(&layer)).await })
    })
    .await;
    upload.unwrap();
    assert!(report.blobs.contains(&image.layer_digest()), "the old copy went: {:?}", report.blobs);
    assert_eq!(registry.blob_size(&app, &image.layer_digest()).await.unwrap(), image.layer.len() as u64);
}

#[tokio::test]
async fn an_unfinished_claim_spares_its_blobs_until_it_finishes() {
    let registry = memory();
    let image = Image::new("in flight");
    garbage(&registry, &repo("app"), &image).await;
    // A request that claimed the layer before the collection started, and is still running.
    let claim = claim(registry.driver(), &[image.layer_digest()]).await.unwrap();
    let report = collect_with(&registry, now()).await.unwrap();
    assert!(!report.blobs.contains(&image.layer_digest()), "{:?}", report.blobs);
    assert!(report.blobs.contains(&image.config_digest()), "{:?}", report.blobs);
    claim.finish().await;
    let report = collect_with(&registry, now()).await.unwrap();
    assert_eq!(report.blobs, [image.layer_digest()]);
}

#[tokio::test]
async fn a_reuse_is_spared_for_the_grace_period_and_its_claim_then_removed() {
    let registry = memory();
    let image = Image::new("grace");
    garbage(&registry, &repo("app"), &image).await;
    let layer = image.layer.clone();
    collect_marked(&registry, move |r| {
        let layer = layer.clone();
        Box::pin(async move { r.put_blob(&repo("app"), &Digest::of(&layer), body(&layer)).await.unwrap() })
    })
    .await;
    // Reused a moment ago: an hour's grace spares it, as it spares a fresh upload.
    let hour = GcOptions { grace: Duration::from_secs(3600), ..now() };
    let report = collect_with(&registry, hour).await.unwrap();
    assert!(report.blobs.is_empty(), "{:?}", report.blobs);
    let report = collect_with(&registry, now()).await.unwrap();
    assert_eq!(report.blobs, [image.layer_digest()], "reused, never referenced, grace over");
    let claims = registry.driver().list(&paths::gc_claims_dir()).await;
    assert!(claims.is_err() || claims.as_ref().is_ok_and(Vec::is_empty), "claims left: {claims:?}");
}

#[tokio::test]
async fn a_marker_left_by_a_crashed_collection_stops_nothing_once_gc_runs_again() {
    let registry = memory();
    let (app, image) = (repo("app"), Image::new("crashed"));
    let marker = Bytes::from(format!("{}\n", image.layer_digest()));
    registry.driver().put(&paths::gc_sweeping(), marker).await.unwrap();
    let uploader = registry.clone();
    let layer = image.layer.clone();
    let upload = tokio::spawn(async move { uploader.put_blob(&repo("app"), &Digest::of(&layer), body(&layer)).await });
    collect_with(&registry, GcOptions { grace: Duration::from_secs(3600), ..now() }).await.unwrap();
    upload.await.unwrap().unwrap();
    assert!(registry.blob_size(&app, &image.layer_digest()).await.is_ok());
}
