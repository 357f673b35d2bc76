//! `berth system df`: the disk berth uses, by kind, as docker's (`system prune` is in
//! [`super::system_prune`], `system info` in [`super::info`]).

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::Result;
use clap::{Args, Subcommand};
use oci::content::ContentStore;

use super::open_store;
use crate::format;

/// Manage berth
#[derive(Debug, Args)]
pub struct SystemCmd {
    #[command(subcommand)]
    command: SystemSub,
}

#[derive(Debug, Subcommand)]
enum SystemSub {
    Df(Df),
    Info(super::info::Info),
    Prune(super::system_prune::Prune),
}

impl SystemCmd {
    /// Runs the subcommand.
    pub fn run(self, root: &Path) -> Result<()> {
        match self.command {
            SystemSub::Df(d) => d.run(root),
            SystemSub::Info(i) => i.run(root),
            SystemSub::Prune(p) => p.run(root),
        }
    }
}

/// Show berth disk usage
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth system df\n  berth system df --format json")]
pub struct Df {
    /// Output format: table, json (one object per line, docker's fields), or a Go template
    /// over them (`{{.Type}} {{.Size}}`)
    #[arg(long, default_value = "table")]
    format: String,
}

/// One line of the report.
struct Row {
    kind: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

impl Row {
    /// What could be freed, with its share of the size: `1.2MB (50%)`, as docker writes it.
    fn reclaimable_text(&self) -> String {
        let percent = (self.reclaimable * 100).checked_div(self.size).unwrap_or(0);
        format!("{} ({percent}%)", format::size(self.reclaimable))
    }
}

/// The column titles of `system df --format 'table ...'`, docker's.
const DF_TITLES: [(&str, &str); 7] = [
    ("Type", "TYPE"),
    ("TotalCount", "TOTAL"),
    ("Active", "ACTIVE"),
    ("Size", "SIZE"),
    ("Reclaimable", "RECLAIMABLE"),
    ("SizeBytes", "SIZE BYTES"),
    ("ReclaimableBytes", "RECLAIMABLE BYTES"),
];

impl Df {
    /// Counts images, layer snapshots, build cache, containers and volumes, and prints them.
    pub fn run(self, root: &Path) -> Result<()> {
        let list_format = format::ListFormat::parse(&self.format)?;
        let store = open_store(root)?;
        let rows = vec![
            images(root, &store)?,
            snapshots(root, &store)?,
            build_cache(root, &store)?,
            containers(root)?,
            volumes(root)?,
        ];
        let mut out = std::io::stdout().lock();
        if !matches!(list_format, format::ListFormat::Default) {
            // docker's fields are strings; the byte counts are berth's own, for scripts.
            let objs: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({"Type": r.kind, "TotalCount": r.total.to_string(),
                        "Active": r.active.to_string(), "Size": format::size(r.size),
                        "Reclaimable": r.reclaimable_text(), "SizeBytes": r.size, "ReclaimableBytes": r.reclaimable})
                })
                .collect();
            write!(out, "{}", list_format.render(&DF_TITLES, &objs)?)?;
            return Ok(());
        }
        let mut table = vec![["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(String::from).to_vec()];
        for r in rows {
            let reclaimable = r.reclaimable_text();
            table.push(vec![
                r.kind.to_owned(),
                r.total.to_string(),
                r.active.to_string(),
                format::size(r.size),
                reclaimable,
            ]);
        }
        write!(out, "{}", format::table(&table))?;
        Ok(())
    }
}

/// Images: every blob they reach; active = used by a named container.
fn images(root: &Path, store: &oci::ImageStore) -> Result<Row> {
    let used: HashSet<String> = runner::container::list(root)?.into_iter().map(|c| c.config.manifest).collect();
    let (mut all, mut active_blobs) = (BTreeSet::new(), BTreeSet::new());
    let mut targets = BTreeSet::new();
    let mut active = 0;
    for rec in store.list()? {
        if !targets.insert(rec.target.digest.clone()) {
            continue;
        }
        let mut reach = BTreeSet::new();
        // An image with missing blobs counts what it has.
        let _partial = store.reachable(&rec.target, &mut reach);
        if used.contains(&rec.target.digest.to_string()) {
            active += 1;
            active_blobs.extend(reach.iter().cloned());
        }
        all.extend(reach);
    }
    let size_of = |set: &BTreeSet<oci::Digest>| -> Result<u64> {
        let mut n = 0;
        for d in set {
            n += store.content().info(d)?.map_or(0, |i| i.size);
        }
        Ok(n)
    };
    let size = size_of(&all)?;
    Ok(Row { kind: "Images", total: targets.len(), active, size, reclaimable: size - size_of(&active_blobs)? })
}

/// Layer snapshots: committed ones; active = used by an image or a live process.
fn snapshots(root: &Path, store: &oci::ImageStore) -> Result<Row> {
    let u = runner::snapshot::usage::usage(root, store)?;
    Ok(Row {
        kind: "Layer snapshots",
        total: u.committed.count,
        active: u.committed.count - u.unused.count,
        size: u.committed.bytes + u.orphaned.bytes,
        reclaimable: u.unused.bytes + u.orphaned.bytes,
    })
}

/// Build cache: records; while a build runs, all of them are in use.
fn build_cache(root: &Path, store: &oci::ImageStore) -> Result<Row> {
    let Some(cache) = builder::cache::RocksCache::open_read_only(root)? else {
        return Ok(Row { kind: "Build cache", total: 0, active: 0, size: 0, reclaimable: 0 });
    };
    let u = builder::cache_prune::usage(&cache, store)?;
    drop(cache);
    let busy = builder::cache::RocksCache::try_open(root)?.is_none();
    let (active, reclaimable) = if busy { (u.records, 0) } else { (0, u.bytes) };
    Ok(Row { kind: "Build cache", total: u.records, active, size: u.bytes, reclaimable })
}

/// Containers: every recorded one (its snapshot) and unnamed ones running now; active = running.
fn containers(root: &Path) -> Result<Row> {
    runner::lease::sweep(root)?;
    let live = runner::lease::live(root)?;
    let mut row = Row { kind: "Containers", total: 0, active: 0, size: 0, reclaimable: 0 };
    let recorded = runner::container::list(root)?;
    let keys: HashSet<String> = recorded.iter().map(|c| runner::container::snapshot_key(&c.config.id)).collect();
    for c in &recorded {
        let bytes = runner::snapshot::usage::snapshot_bytes(root, &runner::container::snapshot_key(&c.config.id));
        row.total += 1;
        row.size += bytes;
        if c.state()?.status == runner::container::Status::Running {
            row.active += 1;
        } else {
            row.reclaimable += bytes;
        }
    }
    // Unnamed foreground containers running now.
    for key in live.active.iter().filter(|k| k.starts_with("container-") && !keys.contains(*k)) {
        row.total += 1;
        row.active += 1;
        row.size += runner::snapshot::usage::snapshot_bytes(root, key);
    }
    Ok(row)
}

/// Local volumes: every volume; active = named by a container's record.
fn volumes(root: &Path) -> Result<Row> {
    let vols = runner::volume::Volumes::new(root);
    let used = runner::container::volumes::links(root)?;
    let mut row = Row { kind: "Local Volumes", total: 0, active: 0, size: 0, reclaimable: 0 };
    for v in vols.list()? {
        let bytes = vols.size(&v.name);
        row.total += 1;
        row.size += bytes;
        if used.contains_key(&v.name) {
            row.active += 1;
        } else {
            row.reclaimable += bytes;
        }
    }
    Ok(row)
}
