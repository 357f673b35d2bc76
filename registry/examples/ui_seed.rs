//! Fills a filesystem registry root with the data of `bench/ui.sh`, the benchmark of the web
//! UI (issue 19 item 5: every page renders in at most 50 ms at p99 with 10,000 repositories,
//! some with 1,000 tags). Pushing that much through HTTP would take minutes and measure the
//! client; this writes it through the same domain calls the API's handlers make
//! (`Registry::put_blob`, `Registry::put_manifest` over an `FsDriver`), so the root is
//! exactly what pushes would leave, claims of `_gc/` included, in well under a minute.
//!
//! ```sh
//! cargo run --release -p registry --example ui_seed -- DIR [REPOS] [BIG_REPOS] [TAGS]
//! ```
//!
//! - REPOS (default 10,000) repositories `team-NN/app-NNNN` (`team-07/app-0700`: 100 apps per
//!   team), each with one image tagged `latest`: a config (created, architecture, os,
//!   Entrypoint, Env, ExposedPorts, Labels, history, rootfs), one small uncompressed tar layer
//!   and an OCI manifest.
//! - BIG_REPOS (default 5) repositories `big/app-1` ... `big/app-N`, each with TAGS (default
//!   1,000) tags `v1.0.0` ... `v1.0.<TAGS-1>`, each its own image (the config's version label
//!   and date differ, so every tag has its own manifest digest; the layer is shared).
//!
//! Everything is deterministic: the same arguments give the same digests on every machine.
//! At the end it writes `DIR/.ui-seed` naming the sizes; a run that finds that file with the
//! same sizes does nothing, so the benchmark seeds once and reuses the root. A run stopped
//! half-way leaves no marker, and the next run writes everything again (the writes are
//! idempotent).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci::Digest;
use registry::domain::{BodyStream, Registry, RepoName};
use registry::driver::FsDriver;
use serde_json::json;

/// Requests in flight at once: enough to keep the disk's queue full with fsyncs on 2 cores.
const CONCURRENCY: usize = 64;
/// The marker's first line; change it whenever the data this writes changes.
const MARKER_VERSION: &str = "berth ui_seed v1";
/// 2026-01-01T00:00:00Z: the first image's creation date.
const EPOCH: i64 = 1_767_225_600;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() > 4 || args[0].starts_with('-') {
        return Err("usage: ui_seed DIR [REPOS] [BIG_REPOS] [TAGS] (defaults 10000 5 1000)".into());
    }
    let number = |i: usize, default: usize| -> Result<usize, Error> {
        args.get(i).map_or(Ok(default), |s| s.parse().map_err(|_| format!("not a number: {s}").into()))
    };
    let dir = PathBuf::from(&args[0]);
    let (repos, big, tags) = (number(1, 10_000)?, number(2, 5)?, number(3, 1000)?);
    if repos > 10_000 {
        return Err("at most 10000 repositories (team-00/app-0000 ... team-99/app-9999)".into());
    }
    let marker = dir.join(".ui-seed");
    let want = format!("{MARKER_VERSION}\nrepos {repos}\nbig {big}\ntags {tags}\n");
    match std::fs::read_to_string(&marker) {
        Ok(have) if have == want => {
            println!("{} already seeded ({repos} repositories, {big} with {tags} tags)", dir.display());
            return Ok(());
        }
        Ok(have) => {
            return Err(format!(
                "{} was seeded with other sizes or by another version ({:?}); remove it first",
                dir.display(),
                have.replace('\n', " ").trim()
            )
            .into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let registry = Registry::new(Arc::new(FsDriver::new(&dir)?));
        let t0 = Instant::now();
        futures_util::stream::iter(0..repos)
            .map(|i| small_repository(&registry, i))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await?;
        println!("{repos} repositories in {:.1} s", t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        for n in 1..=big {
            let name: RepoName = format!("big/app-{n}").parse()?;
            let layer = tar_layer(&format!("big/app-{n}"));
            put_blob(&registry, &name, layer.clone()).await?;
            futures_util::stream::iter(0..tags)
                .map(|t| big_tag(&registry, &name, &layer, n, t))
                .buffer_unordered(CONCURRENCY)
                .try_collect::<()>()
                .await?;
        }
        println!("{big} repositories of {tags} tags in {:.1} s", t1.elapsed().as_secs_f64());
        Ok::<(), Error>(())
    })?;
    std::fs::write(&marker, want)?;
    println!("seeded {}", dir.display());
    Ok(())
}

/// `team-NN/app-NNNN` with one image tagged `latest`.
async fn small_repository(registry: &Registry, i: usize) -> Result<(), Error> {
    let repo = format!("team-{:02}/app-{i:04}", i / 100);
    let name: RepoName = repo.parse()?;
    let layer = tar_layer(&repo);
    let config = image_config(&repo, "1.0.0", EPOCH + i as i64 * 60, &layer);
    put_image(registry, &name, "latest", config, &layer).await
}

/// Tag `v1.0.<t>` of `big/app-<n>`: an image of its own over the repository's one layer.
async fn big_tag(registry: &Registry, name: &RepoName, layer: &Bytes, n: usize, t: usize) -> Result<(), Error> {
    let version = format!("1.0.{t}");
    let config = image_config(name.as_str(), &version, EPOCH + (n * 100_000 + t) as i64 * 60, layer);
    put_image(registry, name, &format!("v{version}"), config, layer).await
}

/// Stores the config and layer (unless `layer` is already there) and the manifest under `tag`.
async fn put_image(registry: &Registry, name: &RepoName, tag: &str, config: Bytes, layer: &Bytes) -> Result<(), Error> {
    let layer_digest = Digest::of(layer);
    if registry.blob_size(name, &layer_digest).await.is_err() {
        put_blob(registry, name, layer.clone()).await?;
    }
    let config_digest = put_blob(registry, name, config.clone()).await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::media::OCI_MANIFEST,
        "config": {"mediaType": oci::media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": oci::media::OCI_LAYER, "digest": layer_digest.to_string(), "size": layer.len()}],
    });
    let bytes = Bytes::from(serde_json::to_vec_pretty(&manifest)?);
    registry.put_manifest(name, tag, Some(oci::media::OCI_MANIFEST), bytes).await?;
    Ok(())
}

/// One whole blob, as a monolithic push stores it.
async fn put_blob(registry: &Registry, name: &RepoName, bytes: Bytes) -> Result<Digest, Error> {
    let digest = Digest::of(&bytes);
    let body: BodyStream = Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
    registry.put_blob(name, &digest, body).await?;
    Ok(digest)
}

/// An image config such as a service's build leaves: entrypoint, environment, a port,
/// labels and a few history steps.
fn image_config(repo: &str, version: &str, created: i64, layer: &Bytes) -> Bytes {
    let date = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let app = repo.rsplit('/').next().unwrap_or(repo);
    let config = json!({
        "created": date(created),
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": [format!("/app/{app}")],
            "Cmd": ["--listen", ":8080"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", format!("APP_VERSION={version}")],
            "ExposedPorts": {"8080/tcp": {}},
            "WorkingDir": "/app",
            "Labels": {
                "org.opencontainers.image.source": format!("https://git.example.com/{repo}"),
                "org.opencontainers.image.title": app,
                "org.opencontainers.image.version": version,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(layer).to_string()]},
        "history": [
            {"created": date(created - 120), "created_by": "COPY app /app/ # buildkit", "comment": "buildkit.dockerfile.v0"},
            {"created": date(created - 60), "created_by": "ENV APP_VERSION=".to_owned() + version, "empty_layer": true},
            {"created": date(created), "created_by": "ENTRYPOINT [\"/app/".to_owned() + app + "\"]", "empty_layer": true},
        ],
    });
    Bytes::from(serde_json::to_vec(&config).unwrap_or_default())
}

/// A small, valid uncompressed tar (`app/VERSION` naming the repository), so the images can
/// really be pulled and run through an unpacker.
fn tar_layer(repo: &str) -> Bytes {
    let content = format!("{repo}\n");
    let mut header = [0u8; 512];
    let field = |h: &mut [u8; 512], at: usize, value: &[u8]| h[at..at + value.len()].copy_from_slice(value);
    field(&mut header, 0, b"app/VERSION");
    field(&mut header, 100, b"0000644\0");
    field(&mut header, 108, b"0000000\0");
    field(&mut header, 116, b"0000000\0");
    field(&mut header, 124, format!("{:011o}\0", content.len()).as_bytes());
    field(&mut header, 136, format!("{:011o}\0", EPOCH).as_bytes());
    field(&mut header, 148, b"        ");
    header[156] = b'0';
    field(&mut header, 257, b"ustar\x0000");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    field(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content.as_bytes());
    tar.resize(512 + content.len().div_ceil(512) * 512 + 1024, 0);
    Bytes::from(tar)
}
