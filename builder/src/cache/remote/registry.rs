//! A cache in a registry (`type=registry,ref=REGISTRY/REPO:TAG`), through berth's own
//! client: credentials from docker's config.json, insecure rules, resumed downloads,
//! HEAD-skip and cross-repository mounts on upload.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use oci::client::{Client, Event as NetEvent};
use oci::content::ContentStore;
use oci::{ImageStore, Reference};

use super::format::Blob;
use super::{CacheBackend, Published, Upload};
use crate::error::{Error, Result};

/// Blobs uploaded at once by an export.
const UPLOADS: usize = 8;

/// A cache manifest under a registry reference.
pub struct RegistryCache<'a> {
    reference: Reference,
    client: &'a Client,
    rt: &'a tokio::runtime::Handle,
}

impl<'a> RegistryCache<'a> {
    /// The cache at `reference`; requests go through `client` on `rt`.
    pub fn new(reference: &str, client: &'a Client, rt: &'a tokio::runtime::Handle) -> Result<Self> {
        let reference = reference
            .parse::<Reference>()
            .map_err(|e| Error::Invalid(format!("cache ref {reference:?}: {}", oci::error::chain(&e))))?;
        Ok(RegistryCache { reference, client, rt })
    }

    fn err(&self, what: &str) -> impl FnOnce(oci::Error) -> Error + '_ {
        let what = format!("{what} {}", self.describe());
        move |e| Error::remote(what)(e)
    }
}

/// Counts what a push moved.
#[derive(Default)]
struct Counter {
    uploaded: AtomicUsize,
    bytes: AtomicU64,
    present: AtomicUsize,
}

impl oci::client::Progress for Counter {
    fn event(&self, e: NetEvent) {
        match e {
            NetEvent::Bytes { n, .. } => {
                self.bytes.fetch_add(n, Ordering::Relaxed);
            }
            NetEvent::Done { .. } => {
                self.uploaded.fetch_add(1, Ordering::Relaxed);
            }
            NetEvent::Skipped { .. } => {
                self.present.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

impl CacheBackend for RegistryCache<'_> {
    fn describe(&self) -> String {
        format!("registry {}", self.reference)
    }

    fn manifest(&self, store: &ImageStore) -> Result<Option<Vec<u8>>> {
        let fetched = self.rt.block_on(oci::client::fetch_document(
            self.client,
            store,
            &self.reference,
            &oci::client::NoProgress,
        ));
        let (target, _) = match fetched {
            Ok(t) => t,
            Err(e) if e.kind() == oci::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err("read the cache manifest of")(e)),
        };
        let bytes = store.content().read_small(&target.digest, oci::manifest::MAX_MANIFEST_SIZE as u64);
        bytes.map(Some).map_err(self.err("read the cache manifest of"))
    }

    fn fetch(&self, store: &ImageStore, digest: &oci::Digest, size: u64) -> Result<()> {
        let blobs = [(digest.clone(), size)];
        self.rt
            .block_on(oci::client::fetch_blobs(
                self.client,
                store,
                &self.reference,
                &blobs,
                1,
                &oci::client::NoProgress,
            ))
            .map_err(self.err(&format!("fetch {digest} from")))
    }

    fn publish(&self, store: &ImageStore, upload: &Upload<'_>) -> Result<Published> {
        // A blob that was imported and never needed here is pushed from where it is: the
        // registry skips it if the repository has it, or mounts it from a repository of
        // the same registry; only a blob from elsewhere is fetched first.
        let me = format!("{}/", self.reference.domain());
        let digests: Vec<oci::Digest> = upload.blobs.iter().map(|b| b.digest.clone()).collect();
        let sources = store.sources_of(&digests).map_err(self.err("export to"))?;
        for (b, sources) in upload.blobs.iter().zip(sources) {
            let local = store.content().contains(&b.digest).map_err(self.err("export to"))?;
            let mountable = sources.iter().any(|s| s.starts_with(&me));
            if !local && !mountable {
                upload.lazy.ensure(store, &b.digest)?;
            }
        }
        let target = store.put_manifest(upload.manifest, oci::media::OCI_MANIFEST).map_err(self.err("export to"))?;
        let counter = Counter::default();
        let opts = oci::client::PushOptions { concurrency: UPLOADS, ..Default::default() };
        let to = [self.reference.clone()];
        self.rt
            .block_on(oci::client::push(self.client, store, &target, &to, &opts, &counter))
            .map_err(self.err("export to"))?;
        Ok(Published {
            uploaded: counter.uploaded.load(Ordering::Relaxed),
            bytes: counter.bytes.load(Ordering::Relaxed),
            present: counter.present.load(Ordering::Relaxed),
        })
    }

    fn send_early(&self, store: &ImageStore, blobs: &[(oci::Digest, u64)]) -> Result<()> {
        let opts = oci::client::PushOptions { concurrency: UPLOADS, ..Default::default() };
        self.rt
            .block_on(oci::client::push_blobs(
                self.client,
                store,
                &self.reference,
                blobs,
                &opts,
                &oci::client::NoProgress,
            ))
            .map_err(self.err("export to"))
    }

    fn registry(&self) -> Option<String> {
        Some(self.reference.domain().to_owned())
    }

    fn still_has(&self, digest: &oci::Digest, size: u64) -> Result<bool> {
        self.rt
            .block_on(oci::client::has_blob(self.client, &self.reference, digest, size))
            .map_err(self.err(&format!("look up {digest} in")))
    }

    fn note_sources(&self, store: &ImageStore, blobs: &[Blob]) -> Result<()> {
        let repo = self.reference.repository();
        store.add_sources(blobs.iter().map(|b| &b.digest), &repo).map_err(self.err("remember the blobs of"))
    }
}
