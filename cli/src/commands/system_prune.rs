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
}

impl Prune {
    /// Asks unless `-f` (reading the answer from stdin, as docker), prunes, reports.
    pub fn run(self, root: &Path) -> Result<()> {
        if !self.force && !super::confirm(&self.warning())? {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let (containers, mut bytes) = container::prune_stopped(root, &[])?;
        section(&mut out, "Deleted Containers", &containers)?;
        section(&mut out, "Deleted Networks", &network::prune_unused(root)?)?;
        if self.volumes {
            let (volumes, freed) = volume::prune_unused(root, false, &[])?;
            section(&mut out, "Deleted Volumes", &volumes)?;
            bytes += freed;
        }
        let store = open_store(root)?;
        let opts = builder::cache_prune::PruneOptions { all: self.all, until: None, keep_storage: None };
        let cache = builder::cache_prune::prune(root, &store, &opts)?;
        if !cache.ran {
            eprintln!("berth: the build cache is in use by a running build: it was left alone");
        }
        bytes += cache.bytes;
        let mut removed = if self.all { images::untag_unused(root, &store)? } else { Vec::new() };
        let report = store.prune(self.grace, &images::container_images(root)?)?;
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

/// One part of the report, as docker prints it: a title, the lines, a blank line; nothing
/// when nothing was removed.
fn section(out: &mut impl Write, title: &str, lines: &[String]) -> Result<()> {
    if !lines.is_empty() {
        writeln!(out, "{title}:\n{}\n", lines.join("\n"))?;
    }
    Ok(())
}
