//! `--progress plain`: BuildKit's plain text log of a build.
//!
//! Each step is a block that opens with a blank line and `#N NAME`; its cache-miss reason,
//! output lines (`#N 0.123 text`, seconds since *that step* started) and its end (`#N DONE
//! 0.4s`, `#N CACHED`, `#N ERROR: ...`) follow under the same number. Numbers are given in the
//! order steps are first printed, so they count 1, 2, 3 with no gaps for steps that never
//! show. When parallel steps interleave, an unfinished step that is interrupted gets `#N ...`
//! and its header is printed again when it continues, as BuildKit does. Build-level notes
//! (pulling a base, exporting, naming) are `#0` lines.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use builder::progress::Event;

/// One step as the log knows it.
struct Step {
    number: usize,
    name: String,
    started: Instant,
    /// Output after the last newline, printed when the line completes or the step ends.
    partial: Vec<u8>,
    finished: bool,
}

/// The plain log, written to `out`.
pub struct Plain<W: Write> {
    out: W,
    steps: HashMap<usize, Step>,
    /// Cache-miss reasons that came before their step's header.
    pending: HashMap<usize, Vec<String>>,
    /// The step whose block is open (the last header printed), if any.
    current: Option<usize>,
    next: usize,
}

impl<W: Write> Plain<W> {
    /// An empty log on `out`.
    pub fn new(out: W) -> Self {
        Plain { out, steps: HashMap::new(), pending: HashMap::new(), current: None, next: 1 }
    }

    /// The writer, for tests.
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }

    fn line(&mut self, s: &str) {
        // Progress that cannot be written (a closed stderr) must not fail the build.
        drop(writeln!(self.out, "{s}"));
    }

    /// Registers a step and prints its header, then any reasons that waited for it.
    fn open(&mut self, id: usize, name: String) {
        let number = self.next;
        self.next += 1;
        self.steps.insert(id, Step { number, name, started: Instant::now(), partial: Vec::new(), finished: false });
        self.switch_to(id);
        for reason in self.pending.remove(&id).unwrap_or_default() {
            self.line(&format!("#{number} cache miss: {reason}"));
        }
    }

    /// Makes `id`'s block the open one: closes an interrupted one with `#N ...` and prints
    /// `id`'s header again. Returns its number.
    fn switch_to(&mut self, id: usize) -> usize {
        let number = self.steps.get(&id).map_or(0, |s| s.number);
        if self.current == Some(id) {
            return number;
        }
        if let Some(old) = self.current.and_then(|c| self.steps.get(&c)) {
            if !old.finished {
                let n = old.number;
                self.line(&format!("#{n} ..."));
            }
        }
        let name = self.steps.get(&id).map(|s| s.name.clone()).unwrap_or_default();
        self.line(&format!("\n#{number} {name}"));
        self.current = Some(id);
        number
    }

    /// Ends a step: the rest of its output, then `tail` (DONE, CACHED, ERROR).
    fn close(&mut self, id: usize, tail: &str) {
        let n = self.switch_to(id);
        let Some(step) = self.steps.get_mut(&id) else { return };
        step.finished = true;
        let rest = std::mem::take(&mut step.partial);
        let t = step.started.elapsed();
        if !rest.is_empty() {
            self.output_line(n, t, &rest);
        }
        self.line(&format!("#{n} {tail}"));
    }

    fn output_line(&mut self, n: usize, t: Duration, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        self.line(&format!("#{n} {:.3} {}", t.as_secs_f64(), text.trim_end_matches('\r')));
    }

    fn output(&mut self, id: usize, data: &[u8]) {
        if !self.steps.contains_key(&id) {
            // Output of a step that never announced itself: give it a block all the same.
            self.open(id, format!("step {id}"));
        }
        let n = self.switch_to(id);
        let Some(step) = self.steps.get_mut(&id) else { return };
        step.partial.extend_from_slice(data);
        let t = step.started.elapsed();
        let mut lines = Vec::new();
        while let Some(pos) = step.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = step.partial.drain(..=pos).collect();
            lines.push(line[..line.len() - 1].to_vec());
        }
        for l in lines {
            self.output_line(n, t, &l);
        }
    }

    /// Prints one event.
    pub fn event(&mut self, e: Event) {
        match e {
            Event::Started { id, name } => self.open(id, name),
            Event::Cached { id, name } => {
                self.open(id, name);
                self.close(id, "CACHED");
            }
            Event::Miss { id, reason } => match self.steps.get(&id).map(|s| s.number) {
                Some(_) => {
                    let n = self.switch_to(id);
                    self.line(&format!("#{n} cache miss: {reason}"));
                }
                None => self.pending.entry(id).or_default().push(reason),
            },
            Event::Output { id, data } => self.output(id, &data),
            Event::Done { id, took, error } => {
                let tail = match error {
                    None => format!("DONE {:.1}s", took.as_secs_f64()),
                    Some(err) => format!("ERROR: {err}"),
                };
                self.close(id, &tail);
            }
            Event::Note { text } => self.note(&text),
            Event::Warning { text } => self.raw(&format!("WARNING: {text}")),
        }
    }

    /// A build-level line (`#0 text`), in its own block.
    pub fn note(&mut self, text: &str) {
        if self.current.take().is_some() {
            self.line("");
        }
        self.line(&format!("#0 {text}"));
    }

    /// Any other line, as it is (failure summaries, warnings).
    pub fn raw(&mut self, text: &str) {
        self.line(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(events: Vec<Event>) -> String {
        let mut p = Plain::new(Vec::new());
        for e in events {
            p.event(e);
        }
        String::from_utf8(p.into_inner()).unwrap_or_default()
    }

    fn started(id: usize, name: &str) -> Event {
        Event::Started { id, name: name.into() }
    }

    fn done(id: usize) -> Event {
        Event::Done { id, took: Duration::from_millis(400), error: None }
    }

    fn out(id: usize, s: &str) -> Event {
        Event::Output { id, data: s.as_bytes().to_vec() }
    }

    /// `#N 0.123 text` -> `#N text`, so that tests do not depend on timing.
    fn untimed(log: &str) -> String {
        log.lines()
            .map(|l| match l.split_once(' ') {
                Some((n, rest)) if n.starts_with('#') => match rest.split_once(' ') {
                    Some((t, text)) if t.contains('.') && t.parse::<f64>().is_ok() => format!("{n} {text}"),
                    _ => l.to_owned(),
                },
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_miss_reason_follows_its_header_and_numbers_have_no_gaps() {
        let got = log(vec![
            Event::Cached { id: 0, name: "[1/3] FROM busybox".into() },
            // A step whose reason is reported but which never shows takes no number.
            Event::Miss { id: 7, reason: "never shown".into() },
            Event::Miss { id: 2, reason: "no cached result".into() },
            started(2, "[2/3] RUN echo hi"),
            out(2, "hi\n"),
            done(2),
            Event::Cached { id: 3, name: "[3/3] COPY a /a".into() },
            Event::Note { text: "writing image sha256:abc".into() },
        ]);
        let want = "\n#1 [1/3] FROM busybox\n#1 CACHED\n\n#2 [2/3] RUN echo hi\n#2 cache miss: no cached result\n\
                    #2 hi\n#2 DONE 0.4s\n\n#3 [3/3] COPY a /a\n#3 CACHED\n\n#0 writing image sha256:abc";
        assert_eq!(untimed(&got), want, "{got}");
    }

    #[test]
    fn interleaved_steps_reopen_their_block_and_partial_lines_wait() {
        let got = log(vec![
            started(1, "[a 1/1] RUN a"),
            started(2, "[b 1/1] RUN b"),
            out(1, "par"),
            out(1, "tial\nnext"),
            out(2, "from b\n"),
            done(1),
            Event::Done { id: 2, took: Duration::from_millis(1200), error: Some("exit 1".into()) },
        ]);
        let want = "\n#1 [a 1/1] RUN a\n#1 ...\n\n#2 [b 1/1] RUN b\n#2 ...\n\n#1 [a 1/1] RUN a\n#1 partial\n#1 ...\n\n\
                    #2 [b 1/1] RUN b\n#2 from b\n#2 ...\n\n#1 [a 1/1] RUN a\n#1 next\n#1 DONE 0.4s\n\n\
                    #2 [b 1/1] RUN b\n#2 ERROR: exit 1";
        assert_eq!(untimed(&got), want, "{got}");
    }

    #[test]
    fn output_times_count_from_the_steps_own_start() {
        let mut p = Plain::new(Vec::new());
        p.event(started(1, "[1/2] RUN sleep 1"));
        // The first step ran for a while before the second started.
        if let Some(s) = p.steps.get_mut(&1) {
            s.started = s.started.checked_sub(Duration::from_secs(5)).unwrap_or(s.started);
        }
        p.event(out(1, "late\n"));
        p.event(done(1));
        p.event(started(2, "[2/2] RUN echo x"));
        p.event(out(2, "x\n"));
        let got = String::from_utf8(p.into_inner()).unwrap_or_default();
        let time_of = |n: &str, text: &str| -> f64 {
            got.lines().find_map(|l| l.strip_prefix(n)?.strip_suffix(text)?.trim().parse().ok()).unwrap_or(-1.0)
        };
        assert!(time_of("#1 ", " late") >= 5.0, "{got}");
        let second = time_of("#2 ", " x");
        assert!((0.0..1.0).contains(&second), "{got}");
    }
}
