//! `berth manifest`: image indexes (docker's manifest lists) assembled from images in the
//! local store, as `buildah manifest` and `docker manifest` do: create, add, annotate,
//! inspect, push, rm.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use oci::content::ContentStore as _;
use oci::index::{self, Entry};
use oci::{ImageStore, Platform, Reference};

use super::open_store;
use super::transfer::{runtime, Remote};
use crate::progress::{Display, Mode};

/// Manage image indexes (manifest lists)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth manifest create app:1 app:1-amd64 app:1-arm64\n  berth manifest annotate app:1 app:1-armhf --arch arm --variant v7\n  berth manifest push app:1 registry.example.com/team/app:1"
)]
pub struct ManifestCmd {
    #[command(subcommand)]
    command: Manifest,
}

#[derive(Debug, Subcommand)]
enum Manifest {
    /// Create an index named LIST from local images (each with the platform its config records)
    Create(Create),
    /// Add a local image to an index (or replace the one for its platform)
    Add(Add),
    /// Change the platform an index records for one of its images
    Annotate(Add),
    /// Print an index
    Inspect(Inspect),
    /// Push an index and every image in it
    Push(Push),
    /// Remove index names (the documents go at the next prune)
    Rm(Rm),
}

/// `manifest create`.
#[derive(Debug, Args)]
struct Create {
    /// The index's name
    list: String,
    /// Local images to put in it
    images: Vec<String>,
    /// Replace an index of that name instead of refusing
    #[arg(long)]
    amend: bool,
}

/// `manifest add` and `manifest annotate`.
#[derive(Debug, Args)]
struct Add {
    /// The index
    list: String,
    /// The local image
    image: String,
    /// The operating system to record instead of the config's
    #[arg(long)]
    os: Option<String>,
    /// The architecture to record instead of the config's
    #[arg(long)]
    arch: Option<String>,
    /// The variant to record instead of the config's (v7, v8, ...)
    #[arg(long)]
    variant: Option<String>,
}

/// `manifest inspect`.
#[derive(Debug, Args)]
struct Inspect {
    /// An index made here, else a manifest or index in its registry
    list: String,
    #[command(flatten)]
    remote: Remote,
}

/// `manifest push`.
#[derive(Debug, Args)]
struct Push {
    /// The index
    list: String,
    /// Where to push it (default: the index's own name)
    destination: Option<String>,
    #[command(flatten)]
    compress: super::transfer::Compress,
    #[command(flatten)]
    remote: Remote,
}

/// `manifest rm`.
#[derive(Debug, Args)]
struct Rm {
    /// Index names
    #[arg(required = true)]
    lists: Vec<String>,
}

impl ManifestCmd {
    /// Runs the subcommand.
    pub fn run(self, root: &Path) -> Result<()> {
        let store = open_store(root)?;
        match self.command {
            Manifest::Create(c) => create(&store, c),
            Manifest::Add(a) => add(&store, &a, false),
            Manifest::Annotate(a) => add(&store, &a, true),
            Manifest::Inspect(i) => inspect(&store, &i),
            Manifest::Push(p) => push(&store, p),
            Manifest::Rm(r) => rm(&store, &r.lists),
        }
    }
}

/// A local image as an index entry, with the platform its config records.
fn entry(store: &ImageStore, image: &str) -> Result<Entry> {
    let target = store.resolve(image)?.target;
    let platform = index::platform_of(store, &target).with_context(|| format!("add {image}"))?;
    Ok(Entry { target, platform })
}

fn name(list: &str) -> Result<Reference> {
    let r: Reference = list.parse()?;
    if r.digest().is_some() {
        bail!("an index is named by a tag, not a digest: {list}");
    }
    Ok(r)
}

fn create(store: &ImageStore, c: Create) -> Result<()> {
    let list = name(&c.list)?;
    if !c.amend && store.resolve(&c.list).is_ok() {
        bail!("{} already exists: use --amend to replace it, or manifest add", list.familiar());
    }
    let mut entries = Vec::new();
    for image in &c.images {
        entries = index::with(entries, entry(store, image)?);
    }
    let target = index::write(store, &entries)?;
    store.set_name(&list, &target)?;
    println!("{}", target.digest);
    Ok(())
}

/// `add` (an image, its platform from the config unless the flags say otherwise) and
/// `annotate` (the flags change the platform of an image already in the index).
fn add(store: &ImageStore, a: &Add, annotate: bool) -> Result<()> {
    let list = name(&a.list)?;
    let target = store.resolve(&a.list)?.target;
    let entries = index::entries(store, &target)?;
    let mut new = entry(store, &a.image)?;
    if annotate {
        let Some(old) = entries.iter().find(|e| e.target.digest == new.target.digest) else {
            bail!("{} is not in {}: manifest add it first", a.image, list.familiar());
        };
        new.platform = old.platform.clone();
    }
    let p = &new.platform;
    new.platform = Platform::new(
        a.os.as_deref().unwrap_or(&p.os),
        a.arch.as_deref().unwrap_or(&p.architecture),
        a.variant.as_deref().or(if a.arch.is_some() { None } else { p.variant.as_deref() }),
    );
    let target = index::write(store, &index::with(entries, new))?;
    store.set_name(&list, &target)?;
    println!("{}", target.digest);
    Ok(())
}

/// docker's: an index made here with `manifest create`, else what the registry has under
/// that name (a manifest or an index), so `manifest inspect IMG >/dev/null` tells whether a
/// tag exists there.
fn inspect(store: &ImageStore, i: &Inspect) -> Result<()> {
    let local = store.resolve(&i.list).ok().filter(|r| oci::media::is_index(&r.target.media_type));
    let digest = match local {
        Some(rec) => rec.target.digest,
        None => {
            let reference = name(&i.list)?;
            let client = i.remote.client()?;
            let fetched =
                runtime()?.block_on(oci::client::fetch_document(&client, store, &reference, &oci::client::NoProgress));
            match fetched {
                Ok((target, _)) => target.digest,
                Err(oci::Error::Registry { status: 404, .. }) => {
                    bail!("no such manifest: {}", reference.familiar())
                }
                Err(e) => return Err(e).with_context(|| format!("inspect {}", reference.familiar())),
            }
        }
    };
    let bytes = store.content().read_small(&digest, oci::manifest::MAX_MANIFEST_SIZE as u64)?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &doc)?;
    writeln!(out)?;
    Ok(())
}

fn push(store: &ImageStore, p: Push) -> Result<()> {
    let target = store.resolve(&p.list)?.target;
    index::entries(store, &target)?;
    let dest = name(p.destination.as_deref().unwrap_or(&p.list))?;
    let client = p.remote.client()?;
    let display = Display::new(Mode::Auto, false, "Pushing");
    let opts = oci::client::PushOptions::default();
    let original = target;
    let target = p.compress.target(store, &original, &dest, &display)?;
    let pushed =
        runtime()?.block_on(oci::client::push(&client, store, &target, std::slice::from_ref(&dest), &opts, &display));
    display.finish();
    let digest = pushed.with_context(|| format!("push {}", dest.familiar()))?;
    super::transfer::Compress::pushed(store, &dest, &original, &target)?;
    println!("{digest}");
    Ok(())
}

fn rm(store: &ImageStore, lists: &[String]) -> Result<()> {
    for l in lists {
        let target = store.resolve(l)?.target;
        index::entries(store, &target).with_context(|| format!("{l} is an image: use berth rmi"))?;
        store.remove_name(&name(l)?)?;
        println!("Untagged: {l}");
    }
    Ok(())
}
