//! The build display: a build's events shown as BuildKit shows them, one module per look:
//! [`tty`] (the live view), [`plain`] (the text log CI keeps), [`json`] (rawjson); quiet
//! shows nothing. [`BuildDisplay`] picks one and takes events from any thread.

mod json;
mod plain;
mod tty;

use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use builder::progress::{Event, Progress};

/// How a build shows its progress (`--progress`, `-q`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    /// The live view, redrawn in place.
    Tty,
    /// BuildKit's plain log.
    Plain,
    /// Nothing but errors and warnings (the image ID goes to stdout).
    Quiet,
    /// One JSON object per event.
    RawJson,
}

impl BuildMode {
    /// `--progress VALUE` and `-q` as docker takes them: `auto` is tty on a terminal, plain otherwise.
    pub fn parse(progress: &str, quiet: bool, terminal: bool) -> Result<BuildMode, String> {
        Ok(match (quiet, progress) {
            (true, _) | (_, "quiet") => BuildMode::Quiet,
            (_, "plain") => BuildMode::Plain,
            (_, "rawjson") => BuildMode::RawJson,
            (_, "tty") => BuildMode::Tty,
            (_, "auto") if terminal => BuildMode::Tty,
            (_, "auto") => BuildMode::Plain,
            (_, other) => return Err(format!("unknown --progress {other:?} (auto, tty, plain, quiet, rawjson)")),
        })
    }
}

enum View {
    Quiet,
    Plain(plain::Plain<Box<dyn Write + Send>>),
    Tty(tty::Tty),
    Json,
}

/// Renders a build's events to stderr in one [`BuildMode`]; shared by the build's threads.
pub struct BuildDisplay {
    mode: BuildMode,
    view: Mutex<View>,
}

impl BuildDisplay {
    /// A display on stderr.
    pub fn new(mode: BuildMode) -> BuildDisplay {
        let view = match mode {
            BuildMode::Quiet => View::Quiet,
            BuildMode::Plain => View::Plain(plain::Plain::new(Box::new(std::io::stderr()))),
            BuildMode::Tty => View::Tty(tty::Tty::new()),
            BuildMode::RawJson => View::Json,
        };
        BuildDisplay { mode, view: Mutex::new(view) }
    }

    /// The mode it shows.
    pub fn mode(&self) -> BuildMode {
        self.mode
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Redraws the live view so that running steps' timers move (a no-op in other modes).
    pub fn tick(&self) {
        if let View::Tty(t) = &mut *self.view() {
            t.tick();
        }
    }

    /// A build-level message (naming, exporting, pushing).
    pub fn note(&self, text: impl Into<String>) {
        self.event(Event::Note { text: text.into() });
    }

    /// A warning line, shown in every mode: something the user asked for was not done in full.
    pub fn warn(&self, text: &str) {
        let line = format!("WARNING: {text}");
        match &mut *self.view() {
            View::Plain(p) => p.raw(&line),
            View::Tty(t) => t.above(&line),
            View::Quiet => eprintln!("{line}"),
            View::Json => eprintln!("{}", serde_json::json!({ "warning": text })),
        }
    }

    /// After a failed build: the failing step's last output and where it is in the Dockerfile.
    pub fn failed(&self, e: &builder::Error) {
        let builder::Error::StepFailed { step, tail, at, .. } = e else { return };
        let mut lines = vec![format!("------\n > {step}:")];
        lines.extend(tail.iter().cloned());
        lines.push("------".into());
        lines.push(format!("{at}\n{:>5} | {}\n", at.line, at.excerpt));
        match &mut *self.view() {
            View::Quiet | View::Json => {}
            View::Plain(p) => lines.iter().for_each(|l| p.raw(l)),
            View::Tty(t) => {
                // The last state of the view stays on screen; the summary goes under it.
                t.tick();
                lines.iter().for_each(|l| eprintln!("{l}"));
            }
        }
    }

    /// After a successful build: the image it made.
    pub fn finish(&self, built: &builder::Built, took: Duration) {
        let image = format!("writing image {} done", built.config);
        let manifest = format!("manifest {} ({:.1}s)", built.manifest.digest, took.as_secs_f64());
        match &mut *self.view() {
            View::Quiet => {}
            View::Json => eprintln!("{}", json::done(built, took)),
            View::Tty(t) => {
                t.finish();
                eprintln!(" => {image}\n => {manifest}");
            }
            // The builder's own note said `writing image ... done` already.
            View::Plain(p) => p.note(&manifest),
        }
    }
}

impl Progress for BuildDisplay {
    fn event(&self, e: Event) {
        if let Event::Warning { text } = &e {
            return self.warn(text);
        }
        match &mut *self.view() {
            View::Quiet => {}
            View::Plain(p) => p.event(e),
            View::Tty(t) => t.event(e),
            View::Json => eprintln!("{}", json::event(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_modes_are_dockers() {
        assert_eq!(BuildMode::parse("auto", false, true), Ok(BuildMode::Tty));
        assert_eq!(BuildMode::parse("auto", false, false), Ok(BuildMode::Plain));
        assert_eq!(BuildMode::parse("plain", true, true), Ok(BuildMode::Quiet));
        assert_eq!(BuildMode::parse("rawjson", false, true), Ok(BuildMode::RawJson));
        assert!(BuildMode::parse("fancy", false, true).unwrap_err().contains("auto, tty, plain, quiet, rawjson"));
    }
}
