//! The transfer display of pull, push and run's pull: a live table on a terminal, plain
//! lines otherwise, or nothing.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci::client::{Event, Progress};

use crate::format;

/// `--progress`: how to show long work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A live display on a terminal, plain lines otherwise.
    Auto,
    /// Always the live display.
    Tty,
    /// One line per event.
    Plain,
    /// Nothing.
    Quiet,
}

struct Row {
    key: String,
    status: String,
    done: u64,
    size: u64,
    started: Instant,
}

struct State {
    rows: Vec<Row>,
    index: HashMap<String, usize>,
    drawn: usize,
    last_draw: Instant,
}

/// Renders [`Event`]s to stderr in the chosen [`Mode`].
pub struct Display {
    live: bool,
    quiet: bool,
    verb: &'static str,
    state: Mutex<State>,
}

impl Display {
    /// A display for a transfer whose active verb is `verb` ("Downloading", "Pushing").
    pub fn new(mode: Mode, quiet: bool, verb: &'static str) -> Display {
        let mode = if quiet { Mode::Quiet } else { mode };
        let live = match mode {
            Mode::Auto => std::io::stderr().is_terminal(),
            Mode::Tty => true,
            Mode::Plain | Mode::Quiet => false,
        };
        let state = State {
            rows: Vec::new(),
            index: HashMap::new(),
            drawn: 0,
            last_draw: Instant::now() - Duration::from_secs(1),
        };
        Display { live, quiet: mode == Mode::Quiet, verb, state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Draws the final state of the live display.
    pub fn finish(&self) {
        if self.live {
            let mut s = self.lock();
            draw(&mut s);
        }
    }

    fn row<'a>(s: &'a mut State, key: &str) -> &'a mut Row {
        let i = match s.index.get(key) {
            Some(i) => *i,
            None => {
                s.rows.push(Row {
                    key: key.to_owned(),
                    status: "Waiting".into(),
                    done: 0,
                    size: 0,
                    started: Instant::now(),
                });
                s.index.insert(key.to_owned(), s.rows.len() - 1);
                s.rows.len() - 1
            }
        };
        &mut s.rows[i]
    }
}

fn line(r: &Row) -> String {
    let mut l = format!("{}: {}", r.key, r.status);
    if r.size > 0
        && !matches!(r.status.as_str(), "Already exists" | "Compressing")
        && !r.status.starts_with("Compressed")
        && !r.status.starts_with("Mounted")
    {
        let secs = r.started.elapsed().as_secs_f64().max(0.001);
        l.push_str(&format!(
            "  {}/{}  {}/s",
            format::size(r.done),
            format::size(r.size),
            format::size((r.done as f64 / secs) as u64)
        ));
    }
    l
}

fn draw(s: &mut State) {
    let mut err = std::io::stderr().lock();
    let mut out = String::new();
    if s.drawn > 0 {
        out.push_str(&format!("\x1b[{}A", s.drawn));
    }
    for r in &s.rows {
        out.push_str("\x1b[2K");
        out.push_str(&line(r));
        out.push('\n');
    }
    let _ = err.write_all(out.as_bytes());
    let _ = err.flush();
    s.drawn = s.rows.len();
    s.last_draw = Instant::now();
}

impl Progress for Display {
    fn event(&self, e: Event) {
        if self.quiet {
            return;
        }
        let mut s = self.lock();
        let plain = match e {
            Event::Start { digest, size, offset } => {
                let r = Self::row(&mut s, digest.short());
                r.status = self.verb.to_owned();
                r.size = size;
                r.done = offset;
                Some(format!("{}: {} {}", digest.short(), self.verb, format::size(size)))
            }
            Event::Bytes { digest, n } => {
                Self::row(&mut s, digest.short()).done += n;
                None
            }
            Event::Done { digest } => {
                let r = Self::row(&mut s, digest.short());
                r.status = "Complete".into();
                r.done = r.size;
                Some(format!("{}: Complete", digest.short()))
            }
            Event::Skipped { digest, reason } => {
                let status = if reason == "already exists" { "Already exists".to_owned() } else { capitalize(&reason) };
                Self::row(&mut s, digest.short()).status = status.clone();
                Some(format!("{}: {status}", digest.short()))
            }
            Event::Compressing { digest, size } => {
                let r = Self::row(&mut s, digest.short());
                r.status = "Compressing".into();
                r.size = size;
                Some(format!("{}: Compressing {}", digest.short(), format::size(size)))
            }
            Event::Compressed { digest, twin } => {
                let status = format!("Compressed to {}", twin.short());
                Self::row(&mut s, digest.short()).status = status.clone();
                Some(format!("{}: {status}", digest.short()))
            }
            Event::Retry { what, attempt } => Some(format!("retrying ({attempt}): {what}")),
            Event::Manifest { .. } => None,
        };
        if self.live {
            if s.last_draw.elapsed() >= Duration::from_millis(100) || plain.is_some() {
                draw(&mut s);
            }
        } else if let Some(l) = plain {
            eprintln!("{l}");
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}
