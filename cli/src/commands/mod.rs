//! One module per group of commands; each command is a clap struct with a `run`.

pub mod archive;
pub mod build;
pub mod buildcache;
pub mod console;
pub mod container;
pub mod exec;
pub mod groups;
pub mod images;
pub mod info;
pub mod lifecycle;
pub mod manifest;
pub mod network;
pub mod prune_filter;
pub mod registry;
pub mod resources;
pub mod run;
pub mod stats;
pub mod system;
pub mod system_prune;
pub mod top;
pub mod transfer;
pub mod volume;
pub mod when;

use std::path::Path;

use std::io::Write;

use anyhow::{Context, Result};

/// Opens the local image store, saying where when it fails.
pub fn open_store(root: &Path) -> Result<oci::ImageStore> {
    oci::ImageStore::open(root).with_context(|| format!("open image store {}", root.display()))
}

/// Prints what `inspect` found as docker does: each object through the template, or all of
/// them as one JSON array (`[]` when none), then each failure on stderr, the last one
/// returned (exit 1). Written, not printed: a reader that went away (`| head`) ends berth
/// quietly.
pub fn print_inspected(found: Vec<Result<serde_json::Value>>, tpl: Option<&crate::format::Template>) -> Result<()> {
    let (mut out, mut missing) = (Vec::new(), Vec::new());
    for f in found {
        match f {
            Ok(v) => out.push(v),
            Err(e) => missing.push(e),
        }
    }
    let mut stdout = std::io::stdout().lock();
    match tpl {
        Some(tpl) => {
            for obj in &out {
                writeln!(stdout, "{}", tpl.render(obj)?)?;
            }
        }
        None => writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?,
    }
    let last = missing.pop();
    for e in missing {
        eprintln!("berth: {e:#}");
    }
    last.map_or(Ok(()), Err)
}

/// docker's prune question: `warning`, then `Are you sure you want to continue? [y/N]` on
/// stderr, and whether the line read from stdin says yes (`echo y | berth volume prune`).
pub fn confirm(warning: &str) -> Result<bool> {
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Whether `labels` has the label a filter value names: `KEY` (set, any value) or
/// `KEY=VALUE`, as docker's `label=` filters read it.
pub fn has_label(labels: &std::collections::BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(filter),
    }
}
