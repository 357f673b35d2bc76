//! `berth volume create|ls|inspect|rm|prune`: named and anonymous volumes, as docker's verbs
//! and output; the volumes themselves are `runner::volume`'s.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use runner::container::volumes as used;
use runner::volume::{Volume, Volumes};
use serde_json::{json, Value};

use crate::format;

/// Manage volumes
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth volume create pgdata\n  berth run -d --name db -v pgdata:/var/lib/postgresql/data postgres:16\n  berth volume ls --filter dangling=true\n  berth volume rm pgdata"
)]
pub struct VolumeCmd {
    #[command(subcommand)]
    command: VolumeSub,
}

#[derive(Debug, Subcommand)]
enum VolumeSub {
    Create(Create),
    #[command(visible_alias = "list")]
    Ls(Ls),
    Inspect(InspectVol),
    #[command(visible_alias = "remove")]
    Rm(Rm),
    Prune(PruneVol),
}

impl VolumeCmd {
    /// Runs the subcommand.
    pub fn run(self, root: &Path) -> Result<()> {
        match self.command {
            VolumeSub::Create(c) => c.run(root),
            VolumeSub::Ls(c) => c.run(root),
            VolumeSub::Inspect(c) => c.run(root),
            VolumeSub::Rm(c) => c.run(root),
            VolumeSub::Prune(c) => c.run(root),
        }
    }
}

/// Create a volume
#[derive(Debug, Args)]
pub struct Create {
    /// The volume's name (default: 64 random hex digits)
    name: Option<String>,
    /// Also the volume's name, as docker's --name
    #[arg(long = "name", value_name = "NAME", conflicts_with = "name")]
    name_flag: Option<String>,
    /// Driver (local only)
    #[arg(short, long, default_value = "local")]
    driver: String,
    /// Driver options (none yet: a volume is a directory in berth's store)
    #[arg(short, long = "opt", value_name = "KEY=VALUE")]
    opt: Vec<String>,
    /// Metadata, KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
}

impl Create {
    /// Makes the volume (or finds the one of that name) and prints its name.
    fn run(self, root: &Path) -> Result<()> {
        if self.driver != "local" {
            bail!("volume driver {:?} is not supported: berth has local volumes only", self.driver);
        }
        if let Some(o) = self.opt.first() {
            bail!("volume option {o:?} is not supported: berth's volumes are directories in its store, with no driver options");
        }
        let labels = parse_labels(&self.label)?;
        let name = self.name.or(self.name_flag).unwrap_or_else(runner::container::new_id);
        let (volume, _) = Volumes::new(root).create(&name, labels)?;
        println!("{}", volume.name);
        Ok(())
    }
}

/// `KEY=VALUE` (or `KEY`, an empty value) pairs; a pair without a key is refused.
fn parse_labels(given: &[String]) -> Result<BTreeMap<String, String>> {
    given
        .iter()
        .map(|l| match l.split_once('=') {
            Some(("", _)) => bail!("invalid label {l:?}: the name is empty"),
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Ok((l.clone(), String::new())),
        })
        .collect()
}

/// `volume ls --format 'table ...'`'s column titles, docker's.
const LS_TITLES: [(&str, &str); 7] = [
    ("Driver", "DRIVER"),
    ("Name", "VOLUME NAME"),
    ("Scope", "SCOPE"),
    ("Mountpoint", "MOUNTPOINT"),
    ("Labels", "LABELS"),
    ("Links", "LINKS"),
    ("Size", "SIZE"),
];

/// List volumes
#[derive(Debug, Args)]
pub struct Ls {
    /// Only the names
    #[arg(short, long)]
    quiet: bool,
    /// dangling=true|false, name=NAME, label=KEY[=VALUE], driver=local (repeatable)
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// table, json, or a Go template per row ({{.Name}} {{.Driver}} {{.Mountpoint}} {{.Labels}})
    #[arg(long, default_value = "table")]
    format: String,
}

/// A volume with how many containers use it, for filters and rows.
struct Entry {
    volume: Volume,
    users: usize,
    mountpoint: String,
}

fn entries(root: &Path) -> Result<Vec<Entry>> {
    let vols = Volumes::new(root);
    let links = used::links(root)?;
    Ok(vols
        .list()?
        .into_iter()
        .map(|volume| {
            let users = links.get(&volume.name).copied().unwrap_or(0);
            let mountpoint = vols.data_dir(&volume.name).display().to_string();
            Entry { volume, users, mountpoint }
        })
        .collect())
}

impl Entry {
    /// Whether the entry passes `filter` (`KEY=VALUE`, docker's `volume ls` and `prune`
    /// filters, `label!=` for prune), checked by [`filtered`] first.
    fn matches(&self, filter: &str) -> bool {
        let (key, value) = filter.split_once('=').unwrap_or((filter, ""));
        let has_label = |value: &str| super::has_label(&self.volume.labels, value);
        match key {
            "name" => self.volume.name.contains(value),
            "driver" => value == "local",
            "dangling" => (self.users == 0) == matches!(value, "true" | "1"),
            "label" => has_label(value),
            "label!" => !has_label(value),
            _ => false,
        }
    }

    /// The row's fields, docker's names (strings, as docker's list formatting gives them).
    fn row(&self) -> Value {
        let labels = self.volume.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        json!({"Driver": "local", "Name": self.volume.name, "Scope": "local", "Mountpoint": self.mountpoint,
            "Labels": labels, "Links": self.users.to_string(), "Size": "N/A"})
    }
}

/// The entries that pass every filter; a filter docker would refuse is refused first, with
/// or without volumes to apply it to.
fn filtered(root: &Path, filters: &[String]) -> Result<Vec<Entry>> {
    for f in filters {
        match f.split_once('=') {
            Some(("dangling", "true" | "false" | "1" | "0")) => {}
            Some(("dangling", v)) => bail!("invalid filter 'dangling={v}': true or false"),
            Some(("name" | "driver" | "label" | "label!", _)) => {}
            Some((k, _)) => bail!("invalid filter {k:?}: dangling, name, label or driver"),
            None => bail!("bad filter {f:?}: KEY=VALUE"),
        }
    }
    Ok(entries(root)?.into_iter().filter(|e| filters.iter().all(|f| e.matches(f))).collect())
}

impl Ls {
    fn run(self, root: &Path) -> Result<()> {
        let list_format = format::ListFormat::parse(&self.format)?;
        let rows: Vec<Value> = filtered(root, &self.filter)?.iter().map(Entry::row).collect();
        let mut out = std::io::stdout().lock();
        if self.quiet {
            for r in &rows {
                writeln!(out, "{}", r["Name"].as_str().unwrap_or_default())?;
            }
            return Ok(());
        }
        if !matches!(list_format, format::ListFormat::Default) {
            write!(out, "{}", list_format.render(&LS_TITLES, &rows)?)?;
            return Ok(());
        }
        let mut table = vec![vec!["DRIVER".to_owned(), "VOLUME NAME".to_owned()]];
        for r in &rows {
            table.push(["Driver", "Name"].iter().map(|k| r[*k].as_str().unwrap_or_default().to_owned()).collect());
        }
        write!(out, "{}", format::table(&table))?;
        Ok(())
    }
}

/// Display detailed information on one or more volumes
#[derive(Debug, Args)]
pub struct InspectVol {
    /// Volumes, by name
    #[arg(required = true, value_name = "VOLUME")]
    volumes: Vec<String>,
    /// A Go template per volume instead of the JSON ({{.Mountpoint}}, {{.Labels}}...)
    #[arg(short, long)]
    format: Option<String>,
}

impl InspectVol {
    fn run(self, root: &Path) -> Result<()> {
        let tpl = self.format.as_deref().map(format::Template::parse).transpose()?;
        let found = self.volumes.iter().map(|name| inspect_json(root, name)).collect();
        super::print_inspected(found, tpl.as_ref())
    }
}

/// `volume inspect` of `name`, docker's shape.
pub fn inspect_json(root: &Path, name: &str) -> Result<Value> {
    let vols = Volumes::new(root);
    let v = vols.get(name)?;
    Ok(json!({
        "CreatedAt": v.created, "Driver": "local", "Labels": v.labels,
        "Mountpoint": vols.data_dir(&v.name), "Name": v.name, "Options": {}, "Scope": "local",
    }))
}

/// Remove one or more volumes
#[derive(Debug, Args)]
pub struct Rm {
    /// Volumes, by name
    #[arg(required = true, value_name = "VOLUME")]
    volumes: Vec<String>,
    /// Do not fail when a volume does not exist
    #[arg(short, long)]
    force: bool,
}

impl Rm {
    /// Removes each volume, printing its name; one in use is refused and the others still
    /// removed, as docker does.
    fn run(self, root: &Path) -> Result<()> {
        let mut last = None;
        for name in &self.volumes {
            match used::remove(root, name) {
                Ok(()) => println!("{name}"),
                // As docker's: a missing volume is named all the same.
                Err(runner::container::Error::Volume(runner::volume::Error::NotFound(_))) if self.force => {
                    println!("{name}")
                }
                Err(e) => {
                    if let Some(e) = last.replace(anyhow::Error::new(e)) {
                        eprintln!("berth: {e:#}");
                    }
                }
            }
        }
        last.map_or(Ok(()), Err)
    }
}

/// Removes the volumes no container uses (anonymous ones, or all with `all`) that pass
/// `filters`: their names and the bytes freed. One that cannot be removed is reported and kept.
pub fn prune_unused(root: &Path, all: bool, filters: &[String]) -> Result<(Vec<String>, u64)> {
    let vols = Volumes::new(root);
    let (mut deleted, mut bytes) = (Vec::new(), 0);
    for e in filtered(root, filters)? {
        if e.users > 0 || !(all || e.volume.anonymous()) {
            continue;
        }
        let size = vols.size(&e.volume.name);
        match used::remove(root, &e.volume.name) {
            Ok(()) => {
                deleted.push(e.volume.name);
                bytes += size;
            }
            // Taken meanwhile: kept, as docker keeps it.
            Err(runner::container::Error::Volume(
                runner::volume::Error::InUse { .. } | runner::volume::Error::NotFound(_),
            )) => {}
            Err(e) => eprintln!("berth: {e}"),
        }
    }
    Ok((deleted, bytes))
}

/// Remove unused volumes (anonymous ones; all unused with --all)
#[derive(Debug, Args)]
pub struct PruneVol {
    /// Remove every unused volume, named ones too
    #[arg(short, long)]
    all: bool,
    /// label=KEY[=VALUE] or label!=KEY[=VALUE] (repeatable)
    #[arg(long, value_name = "FILTER")]
    filter: Vec<String>,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
}

impl PruneVol {
    /// Removes every volume no container uses: the anonymous ones, or all with `--all`, as
    /// docker 23 and later do; asks first unless `-f`, reading the answer from stdin.
    fn run(self, root: &Path) -> Result<()> {
        if let Some(f) = self.filter.iter().find(|f| !f.starts_with("label=") && !f.starts_with("label!=")) {
            bail!("invalid filter {f:?}: volume prune takes label=KEY[=VALUE] and label!=KEY[=VALUE]");
        }
        if !self.force {
            let what = if self.all { "all local volumes" } else { "anonymous local volumes" };
            if !super::confirm(&format!("WARNING! This will remove {what} not used by at least one container."))? {
                return Ok(());
            }
        }
        let (deleted, bytes) = prune_unused(root, self.all, &self.filter)?;
        let mut out = std::io::stdout().lock();
        if !deleted.is_empty() {
            writeln!(out, "Deleted Volumes:\n{}\n", deleted.join("\n"))?;
        }
        writeln!(out, "Total reclaimed space: {}", format::size(bytes))?;
        Ok(())
    }
}
