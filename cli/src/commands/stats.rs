//! `berth stats`: what containers use, as docker's `stats` shows it: a table redrawn every
//! second on a terminal, printed again every second elsewhere, or once with `--no-stream`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use runner::container::{self, stats::Sample, Container};
use serde_json::{json, Value};

use crate::format;

/// How often a reading is taken, docker's interval.
const INTERVAL: Duration = Duration::from_secs(1);

/// docker's column titles, by template field.
const TITLES: [(&str, &str); 9] = [
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// The default table's columns.
const COLUMNS: [&str; 8] = ["ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"];

/// Display a live stream of containers' resource usage
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth stats\n  berth stats --no-stream web db\n  berth stats --no-stream \
                        --format '{{.Name}}: {{.MemUsage}}'")]
pub struct Stats {
    /// Containers (default: every running one, and new ones as they start)
    containers: Vec<String>,
    /// Show every container, stopped ones too (default: running ones)
    #[arg(short, long)]
    all: bool,
    /// Print one reading and exit, instead of a new one every second
    #[arg(long)]
    no_stream: bool,
    /// Show whole IDs
    #[arg(long)]
    no_trunc: bool,
    /// Format the output: table, table TEMPLATE, json, or a Go template ({{.Name}}, {{.CPUPerc}},
    /// {{.MemUsage}}, {{.MemPerc}}, {{.NetIO}}, {{.BlockIO}}, {{.PIDs}}, {{.ID}}, {{.Container}})
    #[arg(long)]
    format: Option<String>,
}

impl Stats {
    /// Prints readings until interrupted (once with `--no-stream`): the first after one
    /// interval, since CPU use is the CPU time used between two readings.
    pub fn run(self, root: &Path) -> Result<()> {
        let list_format = format::ListFormat::parse(self.format.as_deref().unwrap_or("table"))?;
        let live = !self.no_stream && std::io::stdout().is_terminal();
        // Named ones are found once (a name that finds none fails now); each reading opens
        // them again by ID, so a rename or a new container of that name changes nothing.
        let named: Vec<(String, String)> = self
            .containers
            .iter()
            .map(|w| Ok((w.clone(), container::find(root, w)?.config.id)))
            .collect::<Result<_>>()?;
        let mut last: HashMap<String, Sample> = HashMap::new();
        loop {
            let shown = match named.is_empty() {
                true => self.listed(root)?,
                false => {
                    named.iter().map(|(w, id)| Ok((w.clone(), container::open(root, id)?))).collect::<Result<_>>()?
                }
            };
            // One removed while it was read shows as gone.
            let now: Vec<Option<Sample>> = shown
                .iter()
                .map(|(_, c)| c.as_ref().and_then(|c| container::stats::sample(c).ok().flatten()))
                .collect();
            if !last.is_empty() || shown.is_empty() || now.iter().all(Option::is_none) {
                let rows: Vec<Value> = shown
                    .iter()
                    .zip(&now)
                    .map(|((given, c), s)| match c {
                        Some(c) => self.row(given, c, s.as_ref(), last.get(&c.config.id)),
                        None => gone(given),
                    })
                    .collect();
                let mut out = std::io::stdout().lock();
                if live {
                    // docker's redraw: clear the screen, cursor to the top.
                    write!(out, "\x1b[2J\x1b[H")?;
                }
                write!(out, "{}", render(&list_format, &rows)?)?;
                out.flush()?;
                if self.no_stream {
                    return Ok(());
                }
            }
            last = shown.iter().zip(now).filter_map(|((_, c), s)| Some((c.as_ref()?.config.id.clone(), s?))).collect();
            std::thread::sleep(INTERVAL);
        }
    }

    /// Every running container (every one with `-a`), each with its short ID as its name.
    fn listed(&self, root: &Path) -> Result<Vec<(String, Option<Container>)>> {
        let mut shown = Vec::new();
        for c in container::list(root)? {
            let running = match c.state() {
                Ok(s) => s.status == container::Status::Running,
                // Removed between the listing and this read: not shown.
                Err(container::Error::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if self.all || running {
                shown.push((c.config.id[..12].to_owned(), Some(c)));
            }
        }
        Ok(shown)
    }

    /// One container's row: its fields as docker's template sees them (zeros for one that
    /// is not running; CPU from the reading before, zero without one).
    fn row(&self, given: &str, c: &Container, now: Option<&Sample>, before: Option<&Sample>) -> Value {
        let id = if self.no_trunc { c.config.id.clone() } else { c.config.id[..12].to_owned() };
        let pair = |(a, b): (u64, u64)| format!("{} / {}", format::size(a), format::size(b));
        let (cpu, memory, mem_percent, net, block, pids) = match now {
            Some(s) => (
                before.map_or(0.0, |b| s.cpu_percent(b)),
                format!("{} / {}", format::binary_size(s.memory), format::binary_size(s.limit)),
                s.memory_percent(),
                pair(s.net),
                pair(s.block),
                s.pids,
            ),
            None => (0.0, "0B / 0B".to_owned(), 0.0, "0B / 0B".to_owned(), "0B / 0B".to_owned(), 0),
        };
        json!({
            "Container": given,
            "ID": id,
            "Name": c.config.name,
            "CPUPerc": format!("{cpu:.2}%"),
            "MemUsage": memory,
            "MemPerc": format!("{mem_percent:.2}%"),
            "NetIO": net,
            "BlockIO": block,
            "PIDs": pids.to_string(),
        })
    }
}

/// The row of a named container that is gone: docker's `--` in every figure.
fn gone(given: &str) -> Value {
    json!({
        "Container": given, "ID": given, "Name": "--", "CPUPerc": "--", "MemUsage": "-- / --",
        "MemPerc": "--", "NetIO": "--", "BlockIO": "--", "PIDs": "--",
    })
}

/// The rows as `--format` asks, or docker's default table.
fn render(list_format: &format::ListFormat, rows: &[Value]) -> Result<String> {
    if !matches!(list_format, format::ListFormat::Default) {
        return list_format.render(&TITLES, rows);
    }
    let title = |key: &str| TITLES.iter().find(|(k, _)| *k == key).map_or(key, |(_, t)| t).to_owned();
    let mut table = vec![COLUMNS.map(title).to_vec()];
    for r in rows {
        table.push(COLUMNS.iter().map(|k| r[*k].as_str().unwrap_or_default().to_owned()).collect());
    }
    Ok(format::table(&table))
}
