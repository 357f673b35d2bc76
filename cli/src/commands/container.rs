//! Named containers: `run --name` keeps a container's changes; `ps`, `rm` and `commit`.
//!
//! A named container is its writable snapshot (key `container-<name>`) plus a small record
//! in `$BERTH_ROOT/containers/<name>.json`. `commit` turns the snapshot's diff into a layer
//! on top of the container's image, as `docker commit` does.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::open_store;
use crate::format;
use runner::snapshot::Snapshotter;

/// What berth remembers about a named container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The container's name.
    pub name: String,
    /// The image it was started from, as given.
    pub image: String,
    /// That image's manifest digest.
    pub manifest: String,
    /// The command line.
    pub command: Vec<String>,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Its exit code, once it has exited.
    pub exit_code: Option<i32>,
}

/// The snapshotter `run` uses on this machine: overlay where the kernel has it, else copy.
pub fn snapshotter(root: &Path) -> Result<Box<dyn Snapshotter>> {
    Ok(runner::snapshot::for_root(root)?)
}

/// The snapshot key of a named container.
pub fn key(name: &str) -> String {
    format!("container-{name}")
}

fn record_path(root: &Path, name: &str) -> PathBuf {
    root.join("containers").join(format!("{name}.json"))
}

/// Checks a container name as docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!("invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    Ok(())
}

/// Saves a record (atomically).
pub fn save(root: &Path, r: &Record) -> Result<()> {
    let path = record_path(root, &r.name);
    let dir = path.parent().context("containers dir")?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&serde_json::to_vec_pretty(r)?)?;
    tmp.persist(&path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Loads a record; a clear error when there is no such container.
pub fn load(root: &Path, name: &str) -> Result<Record> {
    let path = record_path(root, name);
    let bytes = std::fs::read(&path).map_err(|_| anyhow::anyhow!("no such container: {name}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
}

/// List containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth ps -a\n  berth ps -aq")]
pub struct Ps {
    /// Show all containers (berth keeps only named ones, all of them exited)
    #[arg(short, long)]
    all: bool,
    /// Only display container names
    #[arg(short, long)]
    quiet: bool,
}

impl Ps {
    /// Lists named containers, newest first.
    pub fn run(self, root: &Path) -> Result<()> {
        let mut records = Vec::new();
        if let Ok(dir) = std::fs::read_dir(root.join("containers")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(n) = name.strip_suffix(".json") {
                    records.push(load(root, n)?);
                }
            }
        }
        records.sort_by(|a, b| b.created.cmp(&a.created));
        // Containers run in the foreground; what is listed has exited, so only -a shows it.
        if !self.all {
            records.retain(|r| r.exit_code.is_none());
        }
        if self.quiet {
            for r in &records {
                println!("{}", r.name);
            }
            return Ok(());
        }
        let mut rows = vec![["NAMES", "IMAGE", "COMMAND", "CREATED", "STATUS"].map(String::from).to_vec()];
        for r in records {
            let created = chrono::DateTime::parse_from_rfc3339(&r.created).ok().map(|t| t.to_utc());
            let status = r.exit_code.map_or("Running".to_owned(), |c| format!("Exited ({c})"));
            rows.push(vec![r.name, r.image, format!("\"{}\"", r.command.join(" ")), format::since(created), status]);
        }
        print!("{}", format::table(&rows));
        Ok(())
    }
}

/// Remove one or more containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth rm smoke\n  berth rm $(berth ps -aq)")]
pub struct Rm {
    /// Container names
    #[arg(required = true)]
    names: Vec<String>,
}

impl Rm {
    /// Removes each container's snapshot and record.
    pub fn run(self, root: &Path) -> Result<()> {
        let snaps = snapshotter(root)?;
        for name in &self.names {
            load(root, name)?;
            match snaps.remove(&key(name)) {
                Ok(()) | Err(runner::snapshot::SnapshotError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            std::fs::remove_file(record_path(root, name))?;
            println!("{name}");
        }
        Ok(())
    }
}

/// Create a new image from a container's changes
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth run --name setup busybox sh -c 'echo ready > /etc/motd'\n  berth commit -m 'add motd' setup app:base"
)]
pub struct Commit {
    /// The container
    container: String,
    /// The new image's name
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Commit message
    #[arg(short, long)]
    message: Option<String>,
}

impl Commit {
    /// Diffs the container's snapshot into a layer and stacks it on the container's image.
    pub fn run(self, root: &Path) -> Result<()> {
        let record = load(root, &self.container)?;
        let name = self.reference.as_deref().map(str::parse::<oci::Reference>).transpose()?;
        let store = open_store(root)?;
        let snaps = snapshotter(root)?;
        let base_target = store.resolve(&record.manifest).or_else(|_| store.resolve(&record.image))?;
        let base = store.image(&base_target.target)?;
        let ingest = oci::content::ContentStore::writer(store.content(), oci::Algorithm::Sha256)?;
        let mut layer = oci::layer::LayerWriter::new(ingest, oci::layer::Compression::Gzip)?;
        snaps.diff(&key(&record.name), &mut layer).with_context(|| format!("diff container {}", record.name))?;
        let (ingest, info) = layer.finish()?;
        ingest.commit(oci::content::Expected::exactly(&info.digest, info.size))?;
        let created_by = format!("berth commit {} ({})", record.name, record.command.join(" "));
        let rec = store.add_layer(&base, &info, &created_by, self.message.as_deref().unwrap_or(""), name.as_ref())?;
        println!("{}", store.image(&rec.target)?.id);
        Ok(())
    }
}
