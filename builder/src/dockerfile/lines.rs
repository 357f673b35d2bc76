//! How BuildKit splits a Dockerfile into instructions, and the text handed to `parse-dockerfile` so that
//! the crate reads the lines the same way. Where the two differ, [`prepare`] masks the difference:
//!
//! - A line whose escape is itself escaped (`ENV C trailing\\`) does not continue: BuildKit continues a
//!   line only when it ends in the escape (blanks after it allowed) and the character before that escape
//!   is not the escape too. The crate would join the next line, so that last escape becomes a sentinel.
//! - A continuation on the file's last line (`RUN something \` and no newline, or only blank and comment
//!   lines after it) is dropped, as BuildKit drops it: that escape becomes a blank.
//! - A `--` word ends an instruction's flags (`COPY -- foo /tmp/`): it becomes blanks, and a word after it
//!   that starts with `--` gets a sentinel for its first dash, so the crate reads it as an argument.
//! - `ENTRYPOINT []` and `CMD []` (an empty exec form, which resets them) are refused by the crate: their
//!   brackets become sentinels, so the crate reads a shell form whose text is `[]` once restored.
//!
//! Byte offsets never change, so every span the crate reports is a span of the original text; every string
//! it returns goes through [`Restore::apply`] to put the masked characters back. [`Prepared::starts`] lists
//! where BuildKit sees each instruction begin; the caller checks that the crate found exactly those, so no
//! instruction can ever be swallowed silently.

use std::borrow::Cow;

/// The instructions whose flags the crate reads; `--` handling only matters for them.
const FLAGGED: [&str; 5] = ["ADD", "COPY", "FROM", "HEALTHCHECK", "RUN"];

/// The masked text and what is needed to read the crate's answer back.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The text for the crate: same length and offsets as the original.
    pub text: String,
    /// The byte offset of every instruction's keyword, as BuildKit splits the file.
    pub starts: Vec<usize>,
    /// Puts masked characters back into the crate's strings.
    pub restore: Restore,
}

/// Pairs of (sentinel, original character) to undo the masking in strings taken from the masked text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Restore(Vec<(char, char)>);

impl Restore {
    /// `s` with every sentinel replaced by the character it stands for.
    pub fn apply<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if !s.chars().any(|c| self.0.iter().any(|(m, _)| *m == c)) {
            return Cow::Borrowed(s);
        }
        Cow::Owned(s.chars().map(|c| self.0.iter().find(|(m, _)| *m == c).map_or(c, |(_, o)| *o)).collect())
    }
}

/// Whether a line (without its newline) continues on the next, by BuildKit's rule: it ends in the escape,
/// optionally followed by blanks, and the character before that escape is not the escape.
pub fn is_continuation(line: &str, escape: char) -> bool {
    let trimmed = line.trim_end_matches('\r').trim_end_matches([' ', '\t']);
    trimmed.strip_suffix(escape).is_some_and(|before| !before.ends_with(escape))
}

/// Whether `parse-dockerfile` continues a line: any escape at its end, blanks after it allowed.
fn crate_continues(line: &str, escape: char) -> bool {
    line.trim_end_matches([' ', '\t', '\r']).ends_with(escape)
}

/// The escape character the `# escape=` directive at the head of the file names (`\` without one).
pub(crate) fn escape_directive(text: &str) -> char {
    let mut escape = '\\';
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else { break };
        let Some((key, value)) = rest.split_once('=') else { break };
        let key = key.trim().to_ascii_lowercase();
        match key.as_str() {
            "escape" if value.trim() == "`" => escape = '`',
            "escape" | "syntax" | "check" => {}
            _ => break,
        }
    }
    escape
}

/// The physical lines of `text`: (byte offset, content without the newline).
fn physical_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut off = 0;
    for l in text.split_inclusive('\n') {
        out.push((off, l.strip_suffix('\n').unwrap_or(l)));
        off += l.len();
    }
    out
}

/// Whether a line is skipped between and inside instructions: blank, or a comment.
pub(crate) fn is_skipped(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// The edits [`prepare`] makes, by byte offset.
#[derive(Default)]
struct Edits {
    /// An escape that does not continue its line, though the crate would take it so.
    escaped_escape: Vec<usize>,
    /// A continuation escape at the end of the file, dropped.
    dropped: Vec<usize>,
    /// A `--` that ends the flags (two bytes).
    end_of_flags: Vec<usize>,
    /// The `[` and `]` of an empty exec form of CMD or ENTRYPOINT.
    empty_open: Vec<usize>,
    empty_close: Vec<usize>,
    /// The first dash of an argument that starts with `--` after `--`.
    dash: Vec<usize>,
}

/// Splits `text` (with RUN heredocs already blanked) into instructions as BuildKit does and masks the
/// places where `parse-dockerfile` would read it otherwise. Errors only when no sentinel character is free.
pub(crate) fn prepare(text: &str, escape: char) -> Result<Prepared, String> {
    let lines = physical_lines(text);
    let mut edits = Edits::default();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if is_skipped(lines[i].1) {
            i += 1;
            continue;
        }
        let (off, line) = lines[i];
        starts.push(off + line.len() - line.trim_start().len());
        // The instruction's lines: up to the first that does not continue (blank and comment lines inside
        // a continuation are skipped).
        let mut own = Vec::new();
        let mut continued = false;
        while i < lines.len() {
            let (off, line) = lines[i];
            i += 1;
            if !own.is_empty() && is_skipped(line) {
                continue;
            }
            own.push((off, line));
            continued = is_continuation(line, escape);
            if !continued {
                if crate_continues(line, escape) {
                    edits.escaped_escape.push(off + line.trim_end_matches([' ', '\t', '\r']).len() - 1);
                }
                break;
            }
        }
        if continued {
            // The end of the file came inside a continuation.
            let (off, line) = own[own.len() - 1];
            edits.dropped.push(off + line.trim_end_matches([' ', '\t', '\r']).len() - 1);
        }
        let words = instruction_words(&own, escape);
        end_of_flags(&words, &mut edits);
        empty_exec_form(&words, &mut edits);
        i = skip_heredoc_bodies(&lines, i, &words);
    }
    apply(text, escape, edits, starts)
}

/// The words of an instruction's lines with their byte offsets, continuation escapes left out.
fn instruction_words<'t>(own: &[(usize, &'t str)], escape: char) -> Vec<(usize, &'t str)> {
    let mut words = Vec::new();
    for &(off, line) in own {
        let body = if is_continuation(line, escape) {
            &line[..line.trim_end_matches([' ', '\t', '\r']).len() - escape.len_utf8()]
        } else {
            line
        };
        let mut pos = 0;
        for w in body.split_ascii_whitespace() {
            let at = pos + body[pos..].find(w).unwrap_or(0);
            words.push((off + at, w));
            pos = at + w.len();
        }
    }
    words
}

/// The keyword of an instruction and the index of the word after it (`ONBUILD X` gives `X`).
fn keyword(words: &[(usize, &str)]) -> Option<(String, usize)> {
    let first = words.first()?.1.to_ascii_uppercase();
    if first == "ONBUILD" {
        return words.get(1).map(|w| (w.1.to_ascii_uppercase(), 2));
    }
    Some((first, 1))
}

/// Finds a `--` that ends the flags, as BuildKit's flag reader stops there.
fn end_of_flags(words: &[(usize, &str)], edits: &mut Edits) {
    let Some((kw, first)) = keyword(words) else { return };
    if !FLAGGED.contains(&kw.as_str()) {
        return;
    }
    let mut rest = words[first.min(words.len())..].iter();
    for &(at, w) in rest.by_ref() {
        if w == "--" {
            edits.end_of_flags.push(at);
            if let Some(&(at, next)) = rest.next() {
                if next.starts_with("--") {
                    edits.dash.push(at);
                }
            }
            return;
        }
        if !w.starts_with("--") {
            return;
        }
    }
}

/// Finds the brackets of `CMD []` or `ENTRYPOINT []` (blanks between them allowed).
fn empty_exec_form(words: &[(usize, &str)], edits: &mut Edits) {
    let Some((kw, first)) = keyword(words) else { return };
    if kw != "CMD" && kw != "ENTRYPOINT" {
        return;
    }
    match &words[first.min(words.len())..] {
        [(at, "[]")] => {
            edits.empty_open.push(*at);
            edits.empty_close.push(at + 1);
        }
        [(open, "["), (close, "]")] => {
            edits.empty_open.push(*open);
            edits.empty_close.push(*close);
        }
        _ => {}
    }
}

/// The index of the first line after the heredoc bodies of a COPY or ADD (RUN heredocs are blanked
/// before this runs); `i` when it has none.
fn skip_heredoc_bodies(lines: &[(usize, &str)], mut i: usize, words: &[(usize, &str)]) -> usize {
    let Some((kw, first)) = keyword(words) else { return i };
    if kw != "COPY" && kw != "ADD" {
        return i;
    }
    // Every word but the destination may be a source; the crate reads `<<WORD` sources as heredocs.
    let args = &words[first.min(words.len())..];
    let sources = &args[..args.len().saturating_sub(1)];
    for &(_, w) in sources {
        let Some(rest) = w.strip_prefix("<<") else { continue };
        let (strip_tabs, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let delim: String = rest.chars().filter(|c| !matches!(c, '"' | '\'' | '\\')).collect();
        if delim.is_empty() {
            continue;
        }
        while i < lines.len() {
            let line = lines[i].1;
            i += 1;
            let line = if strip_tabs { line.trim_start_matches('\t') } else { line };
            if line == delim {
                break;
            }
        }
    }
    i
}

/// Makes the edits, choosing sentinels that do not occur in the text.
fn apply(text: &str, escape: char, edits: Edits, starts: Vec<usize>) -> Result<Prepared, String> {
    let mut bytes = text.as_bytes().to_vec();
    let mut free = ('\u{1}'..='\u{8}').chain('\u{e}'..='\u{1f}').filter(|c| !text.contains(*c));
    let mut restore = Vec::new();
    let mut sentinel = |marks: &[usize], original: char, bytes: &mut Vec<u8>| -> Result<(), String> {
        if marks.is_empty() {
            return Ok(());
        }
        let m = free.next().ok_or("the Dockerfile holds every ASCII control character; berth cannot read it")?;
        for &at in marks {
            bytes[at] = m as u8;
        }
        restore.push((m, original));
        Ok(())
    };
    sentinel(&edits.escaped_escape, escape, &mut bytes)?;
    sentinel(&edits.dash, '-', &mut bytes)?;
    sentinel(&edits.empty_open, '[', &mut bytes)?;
    sentinel(&edits.empty_close, ']', &mut bytes)?;
    for &at in &edits.dropped {
        bytes[at] = b' ';
    }
    for &at in &edits.end_of_flags {
        bytes[at] = b' ';
        bytes[at + 1] = b' ';
    }
    // Only ASCII bytes were replaced by ASCII bytes.
    let text = String::from_utf8(bytes).map_err(|_| "the Dockerfile is not UTF-8".to_owned())?;
    Ok(Prepared { text, starts, restore: Restore(restore) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_follows_buildkit() {
        assert!(is_continuation("RUN a \\", '\\'));
        assert!(is_continuation("RUN a \\  \t", '\\'));
        assert!(is_continuation("\\", '\\'));
        assert!(is_continuation("RUN a \\\r", '\\'));
        assert!(!is_continuation("ENV C trailing\\\\", '\\'));
        assert!(!is_continuation("ENV C trailing\\\\  ", '\\'));
        // BuildKit's rule looks at one character before the escape only.
        assert!(!is_continuation("ENV C x\\\\\\", '\\'));
        assert!(!is_continuation("RUN a \\", '`'));
        assert!(is_continuation("RUN a `", '`'));
        assert!(!is_continuation("RUN a ``", '`'));
    }

    #[test]
    fn escaped_escape_is_masked_and_restored() {
        let text = "FROM a\nENV C trailing\\\\\nENV D x\n";
        let p = prepare(text, '\\').unwrap();
        assert_eq!(p.starts, vec![0, 7, 24]);
        assert_eq!(p.text.len(), text.len());
        assert!(!p.text.contains("\\\\\n"));
        let masked = &p.text[13..23];
        assert_eq!(p.restore.apply(masked), "trailing\\\\");
    }

    #[test]
    fn trailing_continuation_at_end_of_file_is_dropped() {
        let p = prepare("FROM a\nRUN something \\", '\\').unwrap();
        assert_eq!(p.text, "FROM a\nRUN something  ");
        let p = prepare("FROM a\nRUN a \\\n# note\n\n", '\\').unwrap();
        assert_eq!(p.text, "FROM a\nRUN a  \n# note\n\n");
        assert_eq!(p.starts, vec![0, 7]);
    }

    #[test]
    fn double_dash_ends_flags() {
        let p = prepare("FROM a\nCOPY --link -- --foo /tmp/\n", '\\').unwrap();
        assert_eq!(&p.text[7..21], "COPY --link   ");
        assert_eq!(p.restore.apply(&p.text[22..27]), "--foo");
        assert_ne!(&p.text[22..24], "--");
        // Not a flag position: left alone.
        let p = prepare("FROM a\nCOPY foo -- /tmp/\nENV A=--\n", '\\').unwrap();
        assert_eq!(p.text, "FROM a\nCOPY foo -- /tmp/\nENV A=--\n");
    }

    #[test]
    fn copy_heredoc_bodies_are_not_instructions() {
        let text = "FROM a\nCOPY <<EOF /x\nRUN -- no\nx\\\\\nEOF\nRUN b\n";
        let p = prepare(text, '\\').unwrap();
        assert_eq!(p.text, text);
        assert_eq!(p.starts, vec![0, 7, 39]);
    }

    #[test]
    fn escape_directive_is_read_at_the_head_only() {
        assert_eq!(escape_directive("# escape=`\nFROM a\n"), '`');
        assert_eq!(escape_directive("# syntax=x\n#ESCAPE = `\nFROM a\n"), '`');
        assert_eq!(escape_directive("FROM a\n# escape=`\n"), '\\');
        assert_eq!(escape_directive("# a comment\n# escape=`\n"), '\\');
    }
}
