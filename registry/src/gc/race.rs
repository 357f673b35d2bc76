//! Collections racing pushes that reuse old unreferenced blobs, round after round, on the
//! filesystem and on S3 (s3s-fs), gc and server each with a driver of its own as two
//! processes would have; afterwards every tagged image pulls complete.
//!
//! `BERTH_GC_RACE_ROUNDS` sets the number of rounds: 300 on the filesystem and 10 on S3 by
//! default (an S3 round is some 250 signed requests to s3s-fs, which walks the whole bucket
//! for every listing and stat: seconds a round on a loaded machine, against milliseconds;
//! `BERTH_GC_RACE_ROUNDS=200` runs hundreds there too, in minutes). Without claims both
//! fail in their first round. The
//! filesystem's directory is on /dev/shm when there is one: the race is about ordering,
//! and a loaded disk's fsyncs would make the rounds minutes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::tests::{body, pull_complete, repo, Image};
use super::*;
use crate::driver::{FsDriver, S3Driver, TestS3};

/// Writes what a long-deleted image leaves, straight to storage as an old server did: its
/// blobs linked in `src`, its manifest an untagged revision there.
async fn leftovers(driver: &dyn StorageDriver, image: &Image) {
    for (d, bytes) in [(image.config_digest(), &image.config), (image.layer_digest(), &image.layer)] {
        driver.put(&paths::blob_data(&d), bytes.clone()).await.unwrap();
        driver.put(&paths::layer_link("src", &d), Bytes::from(d.to_string())).await.unwrap();
    }
    let d = image.digest();
    driver.put(&paths::blob_data(&d), image.manifest.clone()).await.unwrap();
    driver.put(&paths::revision_link("src", &d), Bytes::from(d.to_string())).await.unwrap();
}

/// The three ways a client reuses blobs it finds stored.
#[derive(Clone, Copy, Debug)]
enum Reuse {
    /// HEAD finds each blob in the repository; the client uploads what it does not find.
    Head,
    /// Cross-repository mount from `src`; a refused mount is an upload.
    Mount,
    /// The same bytes uploaded again.
    Upload,
}

/// Pushes `image` as `repo:tag` the `how` way. Ok(false): the push failed as a client is
/// told when gc took a blob it had seen (MANIFEST_BLOB_UNKNOWN).
async fn push(registry: Registry, how: Reuse, tag: String, image: Image, delay: usize) -> bool {
    for _ in 0..delay {
        tokio::task::yield_now().await;
    }
    let (src, name) = (
        repo("src"),
        repo(match how {
            Reuse::Head => "src",
            Reuse::Mount => "mounted",
            Reuse::Upload => "uploaded",
        }),
    );
    for (d, bytes) in [(image.config_digest(), &image.config), (image.layer_digest(), &image.layer)] {
        let found = match how {
            Reuse::Head => registry.blob_size(&name, &d).await.is_ok(),
            Reuse::Mount => registry.mount_blob(&name, &d, Some(&src), None).await.unwrap(),
            Reuse::Upload => false,
        };
        if !found {
            registry.put_blob(&name, &d, body(bytes)).await.unwrap();
        }
    }
    match registry.put_manifest(&name, &tag, Some(oci::media::OCI_MANIFEST), image.manifest.clone()).await {
        Ok(_) => true,
        Err(e) if e.code == ErrorCode::ManifestBlobUnknown => false,
        Err(e) => panic!("{how:?} push of {tag}: {e}"),
    }
}

/// What the rounds did, to show the race was run, not avoided.
#[derive(Debug, Default)]
struct Tally {
    pushed: usize,
    refused: usize,
    swept: usize,
}

async fn round(server: &Registry, gc: &Registry, n: usize, tally: &mut Tally) -> Vec<(RepoName, String)> {
    let image = Image::new(&format!("round {n}"));
    leftovers(server.driver().as_ref(), &image).await;
    let collector = gc.clone();
    let opts =
        GcOptions { dry_run: false, grace: Duration::ZERO, upload_age: DEFAULT_UPLOAD_AGE, mirrored: Vec::new() };
    let collection = tokio::spawn(async move { collect_with(&collector, opts).await });
    let pushes: Vec<_> = [Reuse::Head, Reuse::Mount, Reuse::Upload]
        .into_iter()
        .enumerate()
        .map(|(i, how)| {
            let tag = format!("{how:?}-{n}").to_lowercase();
            // Each round starts the pushes a little later or sooner against gc.
            let delay = (n * 7 + i * 5) % 23;
            (how, tag.clone(), tokio::spawn(push(server.clone(), how, tag, image.clone(), delay)))
        })
        .collect();
    let mut tagged = Vec::new();
    for (how, tag, task) in pushes {
        if task.await.unwrap() {
            tally.pushed += 1;
            let name = repo(match how {
                Reuse::Head => "src",
                Reuse::Mount => "mounted",
                Reuse::Upload => "uploaded",
            });
            tagged.push((name, tag));
        } else {
            tally.refused += 1;
        }
    }
    tally.swept += collection.await.unwrap().unwrap().blobs.len();
    tagged
}

/// Runs `rounds` rounds; tags older than a few rounds are deleted, so later rounds also
/// collect earlier images; every tag is pulled right after its round and at the end.
async fn race(server: Registry, gc: Registry, rounds: usize) {
    let mut tally = Tally::default();
    let mut window: VecDeque<(RepoName, String)> = VecDeque::new();
    for n in 0..rounds {
        for (name, tag) in round(&server, &gc, n, &mut tally).await {
            pull_complete(&server, &name, &tag).await;
            window.push_back((name, tag));
        }
        while window.len() > 6 {
            let (name, tag) = window.pop_front().unwrap();
            server.delete_manifest(&name, &tag).await.unwrap();
        }
    }
    for name in server.catalog().await.unwrap() {
        let name = repo(&name);
        for tag in server.tags(&name).await.unwrap() {
            pull_complete(&server, &name, &tag).await;
        }
    }
    assert!(tally.pushed > 0 && tally.swept > 0, "the race ran: {tally:?}");
}

fn rounds(default: usize) -> usize {
    std::env::var("BERTH_GC_RACE_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_racing_pushes_that_reuse_old_blobs_on_the_filesystem_keeps_every_tag_whole() {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let server = Registry::new(Arc::new(FsDriver::new(dir.path()).unwrap()));
    let gc = Registry::new(Arc::new(FsDriver::new(dir.path()).unwrap()));
    race(server, gc, rounds(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_racing_pushes_that_reuse_old_blobs_on_s3_keeps_every_tag_whole() {
    let s3 = TestS3::start();
    let server = Registry::new(Arc::new(S3Driver::new(s3.config()).await.unwrap()));
    let gc = Registry::new(Arc::new(S3Driver::new(s3.config()).await.unwrap()));
    race(server, gc, rounds(10)).await;
}
