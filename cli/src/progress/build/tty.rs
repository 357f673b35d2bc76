//! `--progress tty`: BuildKit's live view, a header and one line per step redrawn in place.

use std::io::Write;
use std::time::{Duration, Instant};

use builder::progress::Event;

/// One step as the live view shows it.
struct Step {
    id: usize,
    name: String,
    started: Instant,
    status: Status,
    last_line: String,
}

enum Status {
    Running,
    Cached,
    Done(Duration),
    Failed,
}

/// The live view on stderr.
pub struct Tty {
    started: Instant,
    /// Steps in the order they appeared.
    steps: Vec<Step>,
    /// How many lines are on screen (moved over and cleared by the next draw).
    drawn: usize,
}

impl Tty {
    /// An empty view; its clock starts now.
    pub fn new() -> Tty {
        Tty { started: Instant::now(), steps: Vec::new(), drawn: 0 }
    }

    /// Redraws the view if it has anything (the ticker calls it so that timers move).
    pub fn tick(&mut self) {
        if !self.steps.is_empty() {
            self.redraw(false);
        }
    }

    /// The last draw, marked FINISHED.
    pub fn finish(&mut self) {
        self.redraw(true);
    }

    /// Prints `text` above the view and draws the view again under it.
    pub fn above(&mut self, text: &str) {
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A\x1b[J", self.drawn));
        }
        out.push_str(text);
        out.push('\n');
        self.drawn = 0;
        write_err(&out);
        self.tick();
    }

    /// Takes one event and redraws.
    pub fn event(&mut self, e: Event) {
        match e {
            Event::Started { id, name } => self.push(id, name, Status::Running),
            Event::Cached { id, name } => self.push(id, name, Status::Cached),
            Event::Output { id, data } => {
                if let Some(step) = self.steps.iter_mut().find(|s| s.id == id) {
                    let text = String::from_utf8_lossy(&data);
                    if let Some(l) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                        step.last_line = l.trim_end().to_owned();
                    }
                }
            }
            Event::Done { id, took, error } => {
                if let Some(step) = self.steps.iter_mut().find(|s| s.id == id) {
                    step.status = if error.is_some() { Status::Failed } else { Status::Done(took) };
                }
            }
            Event::Miss { .. } | Event::Note { .. } | Event::Warning { .. } => {}
        }
        self.redraw(false);
    }

    fn push(&mut self, id: usize, name: String, status: Status) {
        self.steps.push(Step { id, name, started: Instant::now(), status, last_line: String::new() });
    }

    fn redraw(&mut self, last: bool) {
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A\x1b[J", self.drawn));
        }
        let done = self.steps.iter().filter(|s| !matches!(s.status, Status::Running)).count();
        let width = terminal_width();
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({done}/{}){}",
            self.started.elapsed().as_secs_f64(),
            self.steps.len(),
            if last { " FINISHED" } else { "" }
        )];
        for step in &self.steps {
            lines.extend(step_lines(step, width));
        }
        for l in &lines {
            out.push_str(l);
            out.push('\n');
        }
        self.drawn = lines.len();
        write_err(&out);
    }
}

/// A step's line (name and time) and, while it runs, its last output line.
fn step_lines(step: &Step, width: usize) -> Vec<String> {
    let (prefix, time) = match step.status {
        Status::Running => ("", format!("{:.1}s", step.started.elapsed().as_secs_f64())),
        Status::Cached => ("CACHED ", "0.0s".to_owned()),
        Status::Done(t) => ("", format!("{:.1}s", t.as_secs_f64())),
        Status::Failed => ("ERROR ", String::new()),
    };
    let room = width.saturating_sub(time.len() + 2);
    let mut line = format!(" => {prefix}{}", step.name);
    truncate(&mut line, room);
    let mut lines = vec![format!("{line:<room$} {time}")];
    if matches!(step.status, Status::Running) && !step.last_line.is_empty() {
        let mut l = format!(" => => {}", step.last_line);
        truncate(&mut l, width);
        lines.push(l);
    }
    lines
}

fn write_err(s: &str) {
    let mut err = std::io::stderr().lock();
    // A closed stderr must not fail the build.
    drop(err.write_all(s.as_bytes()).and_then(|()| err.flush()));
}

fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .map(|w| usize::from(w.ws_col))
        .ok()
        .filter(|w| *w >= 40)
        .unwrap_or(100)
}

fn truncate(s: &mut String, max: usize) {
    if s.chars().count() > max {
        *s = s.chars().take(max.saturating_sub(1)).collect::<String>() + "…";
    }
}
