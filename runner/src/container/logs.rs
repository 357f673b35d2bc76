//! A container's output in docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-12-04T17:00:00.123456789Z"}`, so that
//! tools that read docker's logs read berth's too. Written by the supervisor, read by
//! `berth logs` (`--tail`, `--timestamps`, `-f`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which of the container's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The text, with its newline (a line cut at [`MAX_LINE`] or at the end has none).
    pub log: String,
    /// Where it came from.
    pub stream: Stream,
    /// When the supervisor read it.
    pub time: String,
}

/// Longest line written as one entry; longer output is split, as docker does at 16 KiB.
pub const MAX_LINE: usize = 16 * 1024;

/// Appends a container's output to its log, line by line.
pub struct Writer {
    file: File,
    partial: [Vec<u8>; 2],
}

impl Writer {
    /// Opens (creating) the log at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Writer> {
        let file = super::open_private(path, true)?;
        Ok(Writer { file, partial: [Vec::new(), Vec::new()] })
    }

    /// Writes every whole line of `bytes` (with what was left of the stream before).
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        let time = super::state::now();
        let buf = &mut self.partial[stream as usize];
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            line(&mut out, &buf[start..=start + nl], stream, &time)?;
            start += nl + 1;
        }
        buf.drain(..start);
        while buf.len() >= MAX_LINE {
            let rest = buf.split_off(MAX_LINE);
            line(&mut out, buf, stream, &time)?;
            *buf = rest;
        }
        self.file.write_all(&out)
    }

    /// Writes what is left of each stream without a newline (the process has exited).
    pub fn flush(&mut self) -> std::io::Result<()> {
        let mut out = Vec::new();
        let time = super::state::now();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let buf = std::mem::take(&mut self.partial[stream as usize]);
            if !buf.is_empty() {
                line(&mut out, &buf, stream, &time)?;
            }
        }
        self.file.write_all(&out)
    }
}

/// A foreground named container's output, as docker keeps it: each stream passed on to
/// berth's own stdout or stderr as it comes, and written to the container's log, so that
/// `berth logs NAME` has it after the run.
pub struct Tee {
    copiers: Vec<std::thread::JoinHandle<()>>,
    log: std::sync::Arc<std::sync::Mutex<(Writer, Option<std::io::Error>)>>,
}

impl Tee {
    /// Starts copying the child's `stdout` and `stderr` pipes, appending to the log at `path`.
    pub fn start(
        path: &Path,
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
    ) -> std::io::Result<Tee> {
        let log = std::sync::Arc::new(std::sync::Mutex::new((Writer::open(path)?, None)));
        let copier = |stream: Stream, mut from: Box<dyn Read + Send>| {
            let log = std::sync::Arc::clone(&log);
            std::thread::Builder::new().name("berth-tee".into()).spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                let mut passing = true;
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    // A reader that went away (`| head`) stops the copy to it, not to the log.
                    if passing {
                        passing = pass_on(stream, &buf[..n]).is_ok();
                    }
                    let mut guard = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if guard.1.is_none() {
                        guard.1 = guard.0.write(stream, &buf[..n]).err();
                    }
                }
            })
        };
        let copiers = vec![copier(Stream::Stdout, Box::new(stdout))?, copier(Stream::Stderr, Box::new(stderr))?];
        Ok(Tee { copiers, log })
    }

    /// Waits until both streams are closed (the container's processes are gone), then
    /// writes what is left without a newline; the first error the log had, if any.
    pub fn finish(self) -> std::io::Result<()> {
        for c in self.copiers {
            let _ = c.join();
        }
        let mut guard = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = guard.1.take() {
            return Err(e);
        }
        guard.0.flush()
    }
}

/// Writes `bytes` to berth's own stdout or stderr, at once.
fn pass_on(stream: Stream, bytes: &[u8]) -> std::io::Result<()> {
    match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()
        }
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    }
}

fn line(out: &mut Vec<u8>, text: &[u8], stream: Stream, time: &str) -> std::io::Result<()> {
    let entry = Entry { log: String::from_utf8_lossy(text).into_owned(), stream, time: time.to_owned() };
    serde_json::to_writer(&mut *out, &entry).map_err(std::io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

/// Reads the entries from byte `offset` of the log on; returns them and the offset after
/// the last whole line (a line being written now is left for the next read).
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(f);
    let (mut entries, mut pos, mut buf) = (Vec::new(), offset, Vec::new());
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        pos += n as u64;
        // A line that is not an entry (a torn write after a crash) is skipped, not fatal.
        if let Ok(e) = serde_json::from_slice::<Entry>(&buf) {
            entries.push(e);
        }
    }
    Ok((entries, pos))
}

/// The last `n` entries of `entries` (all with `None`).
pub fn tail(entries: Vec<Entry>, n: Option<usize>) -> Vec<Entry> {
    match n {
        Some(n) if n < entries.len() => entries[entries.len() - n..].to_vec(),
        _ => entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_joined_and_read_back_in_dockers_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = Writer::open(&path).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\nwor").unwrap();
        w.write(Stream::Stdout, b"ld").unwrap();
        w.flush().unwrap();
        let (entries, end) = read_from(&path, 0).unwrap();
        let got: Vec<(&str, Stream)> = entries.iter().map(|e| (e.log.as_str(), e.stream)).collect();
        assert_eq!(got, [("oops\n", Stream::Stderr), ("hello\n", Stream::Stdout), ("world", Stream::Stdout)]);
        assert_eq!(end, std::fs::metadata(&path).unwrap().len());
        let first = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        assert_eq!(v["stream"], "stderr");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(tail(entries, Some(1))[0].log, "world");
    }

    #[test]
    fn a_torn_last_line_waits_for_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(&path, "{\"log\":\"a\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n{\"log\":").unwrap();
        let (entries, end) = read_from(&path, 0).unwrap();
        assert_eq!(entries.len(), 1);
        let (more, _) = read_from(&path, end).unwrap();
        assert!(more.is_empty());
    }

    #[test]
    fn long_output_without_newlines_is_cut_into_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = Writer::open(&path).unwrap();
        w.write(Stream::Stdout, &vec![b'x'; MAX_LINE * 2 + 5]).unwrap();
        let (entries, _) = read_from(&path, 0).unwrap();
        assert_eq!(entries.len(), 2);
        w.flush().unwrap();
        assert_eq!(read_from(&path, 0).unwrap().0.len(), 3);
    }
}
