//! `berth system prune`: docker's CI clean-up in one command. It runs the prunes of the
//! other verbs in turn (stopped containers, unused networks, with `--volumes` anonymous
//! volumes, the build cache, dangling images or with `-a` every image no container uses, then
//! the blobs and snapshots nothing needs) and prints one report.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::images::{self, parse_duration};
use super::prune_filter::PruneFilter;
use super::{container, network, open_store, volume};
use crate::format;

/// Remove stopped containers, unused networks, dangling images and build cache
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth system prune -f\n  berth system prune -af --volumes")]
pub struct Prune {
    /// Remove every image no container uses, not only dangling ones, and all build cache
    #[arg(short, long)]
    all: bool,
    /// Remove anonymous volumes no container uses too
    #[arg(long)]
    volumes: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
    /// Spare blobs younger than this, so a build or pull running now keeps its blobs
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    grace: Duration,
    /// until=WHEN (what was created before it; build cache: last used), label=KEY[=VALUE],
    /// label!=KEY[=VALUE] (repeatable)
    #[arg(long, value_name = "FILTER")]
    filter: Vec<String>,
}

impl Prune {
    /// Asks unless `-f` (reading the answer from stdin, as docker), prunes, reports.
    pub fn run(self, root: &Path) -> Result<()> {
        let filters = PruneFilter::parse(&self.filter, "system prune")?;
        if !self.force && !super::confirm(&self.warning())? {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let (containers, mut bytes) = container::prune_stopped(root, &filters)?;
        section(&mut out, "Deleted Containers", &containers)?;
        section(&mut out, "Deleted Networks", &network::prune_unused(root, &filters)?)?;
        if self.volumes {
            // Volumes have no creation time to filter on (docker refuses until= there).
            let (volumes, freed) = volume::prune_unused(root, false, &PruneFilter::label_args(&filters))?;
            section(&mut out, "Deleted Volumes", &volumes)?;
            bytes += freed;
        }
        let store = open_store(root)?;
        let until = PruneFilter::until(&filters).map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default());
        let opts = builder::cache_prune::PruneOptions { all: self.all, until, keep_storage: None };
        let cache = builder::cache_prune::prune(root, &store, &opts)?;
        if !cache.ran {
            eprintln!("berth: the build cache is in use by a running build: it was left alone");
        }
        bytes += cache.bytes;
        let chosen = |rec: &oci::ImageRecord| image_chosen(&store, rec, &filters);
        // Dangling images the filters spare stay, with the images of containers.
        let mut spare = images::container_images(root)?;
        let mut removed = if self.all { images::untag_unused(&store, &spare, &chosen)? } else { Vec::new() };
        for rec in store.list()?.into_iter().filter(|r| r.name.is_none() && !chosen(r)) {
            spare.insert(rec.target.digest);
        }
        let report = store.prune(self.grace, &spare)?;
        removed.extend(report.images.iter().map(|d| format!("deleted: {d}")));
        section(&mut out, "Deleted Images", &removed)?;
        let snapshots = runner::snapshot::usage::prune(root, &store).context("prune layer snapshots")?;
        if cache.records > 0 {
            writeln!(out, "Deleted build cache records: {}", cache.records)?;
        }
        writeln!(out, "Total reclaimed space: {}", format::size(bytes + report.bytes + snapshots.bytes))?;
        Ok(())
    }

    /// docker's question, listing what this prune removes.
    fn warning(&self) -> String {
        let mut what = vec!["all stopped containers", "all networks not used by at least one container"];
        if self.volumes {
            what.push("all anonymous volumes not used by at least one container");
        }
        what.push(if self.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        });
        what.push(if self.all { "all build cache" } else { "all dangling build cache" });
        let lines: Vec<String> = what.iter().map(|w| format!("  - {w}")).collect();
        format!("WARNING! This will remove:\n{}\n", lines.join("\n"))
    }
}

/// Whether the filters let prune take image `rec`: by its config's creation time and labels.
/// One that cannot be read is left alone when there are filters.
fn image_chosen(store: &oci::ImageStore, rec: &oci::ImageRecord, filters: &[PruneFilter]) -> bool {
    if filters.is_empty() {
        return true;
    }
    let Ok(image) = store.image(&rec.target) else { return false };
    let created = image.config.created().clone().unwrap_or_default();
    let labels: std::collections::BTreeMap<String, String> =
        image.config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default().into_iter().collect();
    PruneFilter::prunes(filters, &created, &labels)
}

/// One part of the report, as docker prints it: a title, the lines, a blank line; nothing
/// when nothing was removed.
fn section(out: &mut impl Write, title: &str, lines: &[String]) -> Result<()> {
    if !lines.is_empty() {
        writeln!(out, "{title}:\n{}\n", lines.join("\n"))?;
    }
    Ok(())
}
