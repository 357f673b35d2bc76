//! `berth builder prune`: trims the build cache, least recently used first, as docker's.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use super::images::parse_duration;
use super::open_store;
use crate::format;

/// Manage the build cache
#[derive(Debug, Args)]
pub struct BuilderCmd {
    #[command(subcommand)]
    command: BuilderSub,
}

#[derive(Debug, Subcommand)]
enum BuilderSub {
    Prune(Prune),
}

impl BuilderCmd {
    /// Runs the subcommand.
    pub fn run(self, root: &Path) -> Result<()> {
        match self.command {
            BuilderSub::Prune(p) => p.run(root),
        }
    }
}

/// Remove build cache
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth builder prune -f\n  berth builder prune -af --filter until=24h\n  berth builder prune -af --keep-storage 10GB"
)]
pub struct Prune {
    /// Remove all unused build cache, not just records of intermediate steps
    #[arg(short, long)]
    all: bool,
    /// Filter what to remove: until=DURATION (records last used longer ago than that)
    #[arg(long = "filter", value_name = "FILTER")]
    filters: Vec<String>,
    /// Keep at most this much cache (e.g. 10GB, 512MB), removing the least recently used first
    #[arg(long, value_name = "SIZE", value_parser = runner::cgroup::parse_size)]
    keep_storage: Option<u64>,
    /// Do not prompt for confirmation (without a terminal berth never prompts)
    #[arg(short, long)]
    force: bool,
}

impl Prune {
    /// Asks (on a terminal, without -f), prunes, reports.
    pub fn run(self, root: &Path) -> Result<()> {
        let mut until = None;
        for f in &self.filters {
            match f.split_once('=') {
                Some(("until", d)) => until = Some(parse_duration(d).map_err(anyhow::Error::msg)?),
                _ => bail!("invalid filter {f:?}: berth builder prune knows until=DURATION"),
            }
        }
        if !self.force && std::io::stdin().is_terminal() {
            let what = if self.all { "all build cache" } else { "all dangling build cache" };
            if !super::confirm(&format!("WARNING! This will remove {what}."))? {
                return Ok(());
            }
        }
        let store = open_store(root)?;
        let opts = builder::cache_prune::PruneOptions { all: self.all, until, keep_storage: self.keep_storage };
        let pruned = builder::cache_prune::prune(root, &store, &opts)?;
        let mut out = std::io::stdout().lock();
        if !pruned.ran {
            eprintln!("berth: the build cache is in use by a running build: nothing removed");
        } else if pruned.records > 0 {
            writeln!(out, "Deleted build cache records: {}", pruned.records)?;
        }
        writeln!(out, "Total reclaimed space: {}", format::size(pruned.bytes))?;
        Ok(())
    }
}
