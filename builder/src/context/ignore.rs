//! `.dockerignore` parsing and matching that decides exactly what `docker build` (BuildKit) would send as context.
//! Patterns get moby/patternmatcher's cleaning, checks and glob-to-regexp translation, run on a std-only regexp engine.

use std::borrow::Cow;

/// Why a .dockerignore file could not be read; names the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IgnoreError {
    /// The 1-based line of the .dockerignore file that holds the bad pattern, so the user can find it.
    pub line: usize,
    /// What is wrong with the pattern, in words for the user.
    pub message: String,
}

/// The compiled patterns of one .dockerignore file.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
    has_exceptions: bool,
    /// Some exception holds glob characters beyond a trailing `/*` or `/**`; BuildKit then walks into every
    /// excluded directory instead of skipping it.
    wildcard_exceptions: bool,
}

/// One cleaned pattern line.
#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern, without its leading `!`.
    text: String,
    /// A `!` line: a match re-includes instead of excluding.
    exception: bool,
    matcher: Matcher,
}

/// The four ways patternmatcher matches a pattern; which one is used changes the result for some patterns.
#[derive(Debug, Clone)]
enum Matcher {
    /// No glob characters at all: plain string equality.
    Exact(String),
    /// `literal**`: the path starts with the literal.
    Prefix(String),
    /// `**literal`: the path ends with the literal (or is it, minus a leading `/`).
    Suffix(String),
    /// Everything else: the translated regular expression.
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            Matcher::Exact(text) => path == text,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Matcher::Regex(regex) => regex.is_match(path),
        }
    }
}

impl Ignore {
    /// Compiles the text of a .dockerignore file.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let mut ignore = Ignore::default();
        for (index, line) in scan_lines(text).enumerate() {
            let line = if index == 0 { line.strip_prefix('\u{feff}').unwrap_or(line) } else { line };
            let Some(entry) = read_entry(line) else { continue };
            let pattern = compile_pattern(&entry).map_err(|message| IgnoreError { line: index + 1, message })?;
            let Some(pattern) = pattern else { continue };
            if pattern.exception {
                ignore.has_exceptions = true;
                if trim_trailing_glob(&pattern.text).contains(['*', '[', ']', '?', '^', '\\']) {
                    ignore.wildcard_exceptions = true;
                }
            }
            ignore.patterns.push(pattern);
        }
        Ok(ignore)
    }

    /// True when there are no patterns at all (every file is included).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when `path` (relative to the context root, '/'-separated, no leading "./" or "/") is excluded.
    pub fn is_excluded(&self, path: &str) -> bool {
        // BuildKit's answer for the path itself, also true below an excluded directory it would skip whole.
        // A walker that keeps a re-included file must still send that file's (excluded) parent directories.
        let path = normalize_path(path);
        if self.patterns.is_empty() || is_root(&path) {
            return false;
        }
        self.walk_to(&path).unwrap_or(true)
    }

    /// True when a directory that is excluded can be skipped whole during a walk: no exception pattern could
    /// re-include anything below it (docker walks into excluded dirs only when an exception might match inside).
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        let dir = normalize_path(dir);
        if self.patterns.is_empty() || is_root(&dir) {
            return false;
        }
        match self.walk_to(&dir) {
            None => true,
            Some(excluded) => excluded && self.skips_excluded_dir(&dir),
        }
    }

    /// The patterns as written after cleaning, for cache keys (an ignore file change must change the key).
    pub fn patterns(&self) -> Vec<String> {
        self.patterns.iter().map(|p| if p.exception { format!("!{}", p.text) } else { p.text.clone() }).collect()
    }

    /// Replays BuildKit's walk from the root down to `path`, carrying each directory's per-pattern results to
    /// its children the way `MatchesUsingParentResults` does. `None` when an ancestor is excluded and skipped.
    fn walk_to(&self, path: &str) -> Option<bool> {
        let mut parent: Vec<bool> = Vec::new();
        let mut hits: Vec<bool> = Vec::new();
        let mut has_parent = false;
        for (end, _) in path.match_indices('/') {
            let dir = &path[..end];
            let excluded = self.evaluate(dir, has_parent.then_some(parent.as_slice()), &mut hits);
            if excluded && self.skips_excluded_dir(dir) {
                return None;
            }
            std::mem::swap(&mut parent, &mut hits);
            has_parent = true;
        }
        Some(self.evaluate(path, has_parent.then_some(parent.as_slice()), &mut hits))
    }

    /// One `MatchesUsingParentResults` call: whether `path` is excluded; `hits` receives which patterns hit it.
    fn evaluate(&self, path: &str, parent: Option<&[bool]>, hits: &mut Vec<bool>) -> bool {
        let mut excluded = false;
        hits.clear();
        hits.resize(self.patterns.len(), false);
        for (index, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent.and_then(|p| p.get(index)).copied().unwrap_or(false);
            if !hit {
                // A pattern that cannot change the verdict is not evaluated (and so not remembered for children).
                if pattern.exception != excluded {
                    continue;
                }
                hit = pattern.matcher.matches(path)
                    || (parent.is_none()
                        && path.match_indices('/').any(|(end, _)| pattern.matcher.matches(&path[..end])));
            }
            hits[index] = hit;
            if hit {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// BuildKit's test for returning SkipDir on an excluded directory.
    fn skips_excluded_dir(&self, dir: &str) -> bool {
        if self.wildcard_exceptions {
            return false;
        }
        if !self.has_exceptions {
            return true;
        }
        let dir_slash = format!("{dir}/");
        !self.patterns.iter().filter(|p| p.exception).any(|p| {
            let mut text = trim_trailing_glob(&p.text).to_owned();
            text.push('/');
            text.starts_with(&dir_slash)
        })
    }
}

/// Lines as Go's `bufio.ScanLines` yields them: split at `\n`, one trailing `\r` dropped, no empty last line.
fn scan_lines(text: &str) -> impl Iterator<Item = &str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines = if text.is_empty() { None } else { Some(body.split('\n')) };
    lines.into_iter().flatten().map(|line| line.strip_suffix('\r').unwrap_or(line))
}

/// One line as the ignorefile reader keeps it: `None` for comments and blank lines, else the cleaned entry.
fn read_entry(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let mut pattern = line.trim();
    if pattern.is_empty() {
        return None;
    }
    let exception = pattern.starts_with('!');
    if exception {
        pattern = pattern[1..].trim();
    }
    let mut entry = String::new();
    if !pattern.is_empty() {
        entry = go_clean(pattern);
        if entry.len() > 1 && entry.starts_with('/') {
            entry.remove(0);
        }
    }
    Some(if exception { format!("!{entry}") } else { entry })
}

/// Compiles one entry as the pattern matcher does; `None` for an entry that is empty after trimming.
fn compile_pattern(entry: &str) -> Result<Option<Pattern>, String> {
    let trimmed = entry.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let cleaned = go_clean(trimmed);
    let (exception, text) = match cleaned.strip_prefix('!') {
        Some("") => return Err("illegal exclusion pattern: \"!\"".to_owned()),
        Some(rest) => (true, rest.to_owned()),
        None => (false, cleaned),
    };
    validate_glob(&text).map_err(|why| format!("invalid pattern {text:?}: {why}"))?;
    let matcher = translate(&text).map_err(|why| format!("invalid pattern {text:?}: {why}"))?;
    Ok(Some(Pattern { text, exception, matcher }))
}

/// Go's `filepath.Clean` for '/'-separated paths.
fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// A queried path made relative and clean; the root comes out as "." or "".
fn normalize_path(path: &str) -> Cow<'_, str> {
    let clean =
        !path.starts_with('/') && !path.ends_with('/') && path.split('/').all(|p| !matches!(p, "" | "." | ".."));
    if clean {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(go_clean(path).trim_start_matches('/').to_owned())
    }
}

fn is_root(path: &str) -> bool {
    path.is_empty() || path == "."
}

/// The pattern without one trailing `/**` or `/*`, as BuildKit looks at exceptions.
fn trim_trailing_glob(text: &str) -> &str {
    let text = text.strip_suffix("/**").unwrap_or(text);
    text.strip_suffix("/*").unwrap_or(text)
}

/// Rejects exactly the patterns Go's `filepath.Match` calls malformed.
fn validate_glob(pattern: &str) -> Result<(), &'static str> {
    let mut rest = pattern.as_bytes();
    while !rest.is_empty() {
        while let Some((&b'*', tail)) = rest.split_first() {
            rest = tail;
        }
        // A chunk runs to the next '*' outside brackets.
        let mut in_range = false;
        let mut end = 0;
        while end < rest.len() {
            match rest[end] {
                b'\\' if end + 1 < rest.len() => end += 1,
                b'[' => in_range = true,
                b']' => in_range = false,
                b'*' if !in_range => break,
                _ => {}
            }
            end += 1;
        }
        validate_chunk(&rest[..end])?;
        rest = &rest[end..];
    }
    Ok(())
}

fn validate_chunk(mut chunk: &[u8]) -> Result<(), &'static str> {
    while let Some((&first, tail)) = chunk.split_first() {
        chunk = tail;
        match first {
            b'[' => {
                if let Some((&b'^', tail)) = chunk.split_first() {
                    chunk = tail;
                }
                let mut items = 0;
                loop {
                    if let Some((&b']', tail)) = chunk.split_first() {
                        if items > 0 {
                            chunk = tail;
                            break;
                        }
                    }
                    chunk = class_item(chunk)?;
                    if let Some((&b'-', tail)) = chunk.split_first() {
                        chunk = class_item(tail)?;
                    }
                    items += 1;
                }
            }
            b'\\' => match chunk.split_first() {
                Some((_, tail)) => chunk = tail,
                None => return Err("trailing backslash"),
            },
            _ => {}
        }
    }
    Ok(())
}

/// One character of a bracket expression (Go's `getEsc`); returns what follows it, which must not be empty.
fn class_item(chunk: &[u8]) -> Result<&[u8], &'static str> {
    let chunk = match chunk.split_first() {
        None => return Err("unterminated character class"),
        Some((&(b'-' | b']'), _)) => return Err("'-' or ']' where a character class item was expected"),
        Some((&b'\\', [])) => return Err("trailing backslash"),
        Some((&b'\\', tail)) => tail,
        Some(_) => chunk,
    };
    let width = match chunk[0] {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return Err("invalid UTF-8"),
    };
    match chunk.get(width..) {
        Some(rest) if !rest.is_empty() => Ok(rest),
        _ => Err("unterminated character class"),
    }
}

/// Which matcher the translation settles on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Turns a validated pattern into its matcher, using the same translation to a regexp as patternmatcher.
fn translate(pattern: &str) -> Result<Matcher, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    let mut pos = 0;
    let mut step = 0;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if step == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                regex.push('\\');
                regex.push(ch);
            }
            '\\' => match chars.get(pos) {
                Some(&next) => {
                    pos += 1;
                    regex.push('\\');
                    regex.push(next);
                    kind = Kind::Regex;
                }
                None => regex.push('\\'),
            },
            '[' | ']' => {
                regex.push(ch);
                kind = Kind::Regex;
            }
            _ => regex.push(ch),
        }
        step += 1;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact(pattern.to_owned()),
        Kind::Prefix => Matcher::Prefix(pattern.strip_suffix("**").unwrap_or(pattern).to_owned()),
        Kind::Suffix => Matcher::Suffix(pattern.strip_prefix("**").unwrap_or(pattern).to_owned()),
        Kind::Regex => {
            regex.push('$');
            Matcher::Regex(Regex::new(&regex)?)
        }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// A small regexp engine for the RE2 syntax the translation can produce: literals, escapes, `.`, `^`, `$`,
// bracket classes (ranges, negation, POSIX and Perl classes), groups, and `*`/`+`/`?`. Go's flags for
// regexp.Compile apply: `^`/`$` anchor the whole text, `.` skips '\n', negated classes match '\n'.
// Matching runs a Thompson NFA (no backtracking), so time stays linear in the path length.
// ---------------------------------------------------------------------------------------------------------------

/// Zero-width assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    TextStart,
    TextEnd,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Debug, Clone, Copy)]
enum Repeat {
    ZeroOrMore,
    OneOrMore,
    ZeroOrOne,
}

#[derive(Debug, Clone)]
enum Node {
    Literal(char),
    /// Sorted, merged inclusive ranges.
    Class(Vec<(char, char)>),
    AnyButNewline,
    Look(Look),
    Concat(Vec<Node>),
    Repeat(Box<Node>, Repeat),
}

#[derive(Debug, Clone)]
enum Inst {
    Literal(char),
    Class(Vec<(char, char)>),
    AnyButNewline,
    Look(Look),
    Split(usize, usize),
    Jump(usize),
    Match,
}

/// A compiled regular expression; it always starts with `^`, so matching begins at the start of the text.
#[derive(Debug, Clone)]
struct Regex {
    program: Vec<Inst>,
    /// Literal text every match starts with: a cheap early rejection.
    prefix: String,
    /// Literal text every match ends with, when the expression ends in `$`: a cheap early rejection.
    suffix: String,
}

impl Regex {
    fn new(source: &str) -> Result<Regex, String> {
        let mut parser = RegexParser { chars: source.chars().collect(), pos: 0 };
        let node = parser.sequence(false)?;
        let mut program = Vec::new();
        emit(&node, &mut program);
        program.push(Inst::Match);
        let prefix = program
            .iter()
            .skip_while(|inst| matches!(inst, Inst::Look(Look::TextStart)))
            .map_while(|inst| match inst {
                Inst::Literal(ch) => Some(*ch),
                _ => None,
            })
            .collect();
        let suffix = required_suffix(&program);
        Ok(Regex { program, prefix, suffix })
    }

    /// Go's `MatchString` for a regexp anchored at the start: some prefix of `text` matches.
    fn is_match(&self, text: &str) -> bool {
        if !text.starts_with(self.prefix.as_str()) || !text.ends_with(self.suffix.as_str()) {
            return false;
        }
        let mut threads = Threads { seen: vec![usize::MAX; self.program.len()], generation: 0, stack: Vec::new() };
        let mut current = Vec::new();
        let mut next = Vec::new();
        let mut chars = text.chars();
        let mut upcoming = chars.next();
        if self.add_thread(&mut threads, &mut current, 0, (None, upcoming)) {
            return true;
        }
        while let Some(ch) = upcoming {
            if current.is_empty() {
                return false;
            }
            upcoming = chars.next();
            threads.generation += 1;
            next.clear();
            for &pc in &current {
                let advances = match &self.program[pc] {
                    Inst::Literal(want) => *want == ch,
                    Inst::Class(ranges) => class_contains(ranges, ch),
                    Inst::AnyButNewline => ch != '\n',
                    _ => false,
                };
                if advances && self.add_thread(&mut threads, &mut next, pc + 1, (Some(ch), upcoming)) {
                    return true;
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }

    /// Adds `start` and everything reachable from it without consuming input, given the characters around the
    /// position; true once `Match` is reachable.
    fn add_thread(
        &self,
        threads: &mut Threads,
        list: &mut Vec<usize>,
        start: usize,
        around: (Option<char>, Option<char>),
    ) -> bool {
        threads.stack.clear();
        threads.stack.push(start);
        while let Some(pc) = threads.stack.pop() {
            if threads.seen[pc] == threads.generation {
                continue;
            }
            threads.seen[pc] = threads.generation;
            match &self.program[pc] {
                Inst::Jump(target) => threads.stack.push(*target),
                Inst::Split(first, second) => {
                    threads.stack.push(*second);
                    threads.stack.push(*first);
                }
                Inst::Look(look) => {
                    if look_holds(*look, around) {
                        threads.stack.push(pc + 1);
                    }
                }
                Inst::Match => return true,
                Inst::Literal(_) | Inst::Class(_) | Inst::AnyButNewline => list.push(pc),
            }
        }
        false
    }
}

/// Scratch state of one NFA run: which instructions this step already holds, and the epsilon-closure stack.
struct Threads {
    seen: Vec<usize>,
    generation: usize,
    stack: Vec<usize>,
}

/// The literal characters right before a final `$` that every path to `Match` must pass through.
fn required_suffix(program: &[Inst]) -> String {
    let Some(look) = program.len().checked_sub(2) else { return String::new() };
    if !matches!(program[look], Inst::Look(Look::TextEnd)) {
        return String::new();
    }
    let is_target = |pos: usize| {
        program.iter().any(|inst| match inst {
            Inst::Split(a, b) => *a == pos || *b == pos,
            Inst::Jump(t) => *t == pos,
            _ => false,
        })
    };
    if is_target(look + 1) {
        return String::new();
    }
    let mut reversed = Vec::new();
    let mut pos = look;
    while pos > 0 && !is_target(pos) {
        match program[pos - 1] {
            Inst::Literal(ch) => reversed.push(ch),
            _ => break,
        }
        pos -= 1;
    }
    reversed.iter().rev().collect()
}

fn look_holds(look: Look, (before, after): (Option<char>, Option<char>)) -> bool {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    match look {
        Look::TextStart => before.is_none(),
        Look::TextEnd => after.is_none(),
        Look::WordBoundary => is_word(before) != is_word(after),
        Look::NotWordBoundary => is_word(before) == is_word(after),
    }
}

fn class_contains(ranges: &[(char, char)], ch: char) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= ch && ch <= hi)
}

fn emit(node: &Node, program: &mut Vec<Inst>) {
    match node {
        Node::Literal(ch) => program.push(Inst::Literal(*ch)),
        Node::Class(ranges) => program.push(Inst::Class(ranges.clone())),
        Node::AnyButNewline => program.push(Inst::AnyButNewline),
        Node::Look(look) => program.push(Inst::Look(*look)),
        Node::Concat(items) => items.iter().for_each(|item| emit(item, program)),
        Node::Repeat(inner, Repeat::ZeroOrMore) => {
            let split = program.len();
            program.push(Inst::Split(0, 0));
            emit(inner, program);
            program.push(Inst::Jump(split));
            program[split] = Inst::Split(split + 1, program.len());
        }
        Node::Repeat(inner, Repeat::OneOrMore) => {
            let start = program.len();
            emit(inner, program);
            program.push(Inst::Split(start, program.len() + 1));
        }
        Node::Repeat(inner, Repeat::ZeroOrOne) => {
            let split = program.len();
            program.push(Inst::Split(0, 0));
            emit(inner, program);
            program[split] = Inst::Split(split + 1, program.len());
        }
    }
}

struct RegexParser {
    chars: Vec<char>,
    pos: usize,
}

impl RegexParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// A concatenation, up to the end of input (or, inside a group, up to the closing `)`, left unread).
    fn sequence(&mut self, in_group: bool) -> Result<Node, String> {
        let mut items: Vec<Node> = Vec::new();
        let mut after_repeat = false;
        while let Some(ch) = self.peek() {
            if ch == ')' {
                if in_group {
                    return Ok(Node::Concat(items));
                }
                return Err("unexpected ) in translated pattern".to_owned());
            }
            self.pos += 1;
            let item = match ch {
                '*' | '+' | '?' => {
                    if after_repeat {
                        return Err(format!("invalid nested repetition operator {ch}"));
                    }
                    let repeat = match ch {
                        '*' => Repeat::ZeroOrMore,
                        '+' => Repeat::OneOrMore,
                        _ => Repeat::ZeroOrOne,
                    };
                    let atom = items.pop().ok_or_else(|| format!("missing argument to repetition operator {ch}"))?;
                    if self.peek() == Some('?') {
                        // Non-greedy: the same texts match.
                        self.pos += 1;
                    }
                    items.push(Node::Repeat(Box::new(atom), repeat));
                    after_repeat = true;
                    continue;
                }
                '(' => {
                    if self.peek() == Some('?') {
                        return Err("group flags are not supported".to_owned());
                    }
                    let inner = self.sequence(true)?;
                    if self.bump() != Some(')') {
                        return Err("missing closing ) in translated pattern".to_owned());
                    }
                    inner
                }
                '|' => return Err("alternation is not supported".to_owned()),
                '^' => Node::Look(Look::TextStart),
                '$' => Node::Look(Look::TextEnd),
                '.' => Node::AnyButNewline,
                '[' => self.class()?,
                '\\' => {
                    let escaped = self.bump().ok_or("trailing backslash")?;
                    match escaped {
                        'A' => Node::Look(Look::TextStart),
                        'z' => Node::Look(Look::TextEnd),
                        'b' => Node::Look(Look::WordBoundary),
                        'B' => Node::Look(Look::NotWordBoundary),
                        'Q' => {
                            // Literal text up to `\E` or the end.
                            while let Some(literal) = self.bump() {
                                if literal == '\\' && self.peek() == Some('E') {
                                    self.pos += 1;
                                    break;
                                }
                                items.push(Node::Literal(literal));
                            }
                            after_repeat = false;
                            continue;
                        }
                        'p' | 'P' => return Err(format!("Unicode class \\{escaped} is not supported")),
                        'd' | 'D' | 's' | 'S' | 'w' | 'W' => Node::Class(perl_class(escaped)),
                        _ => Node::Literal(self.escape(escaped)?),
                    }
                }
                _ => Node::Literal(ch),
            };
            items.push(item);
            after_repeat = false;
        }
        if in_group {
            return Err("missing closing ) in translated pattern".to_owned());
        }
        Ok(Node::Concat(items))
    }

    /// The character of a `\x` escape (the backslash and `escaped` already read), as RE2 reads it.
    fn escape(&mut self, escaped: char) -> Result<char, String> {
        let is_octal = |c: Option<char>| c.is_some_and(|c| ('0'..='7').contains(&c));
        match escaped {
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
            '1'..='7' if !is_octal(self.peek()) => Err(format!("invalid escape sequence \\{escaped} (backreference)")),
            '0'..='7' => {
                let mut value = escaped as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek().and_then(|c| c.to_digit(8)) {
                        Some(digit) => {
                            value = value * 8 + digit;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                char::from_u32(value).ok_or_else(|| "invalid octal escape".to_owned())
            }
            'x' => {
                let high = self.bump().and_then(|c| c.to_digit(16));
                let low = self.bump().and_then(|c| c.to_digit(16));
                match (high, low) {
                    (Some(high), Some(low)) => {
                        char::from_u32(high * 16 + low).ok_or_else(|| "invalid \\x escape".into())
                    }
                    _ => Err("invalid escape sequence \\x".to_owned()),
                }
            }
            'a' => Ok('\u{7}'),
            'f' => Ok('\u{c}'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\u{b}'),
            _ => Err(format!("invalid escape sequence \\{escaped}")),
        }
    }

    /// A bracket class; the `[` is already read.
    fn class(&mut self) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let ch = self.peek().ok_or("missing closing ]")?;
            if ch == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            if ch == '[' && self.peek_at(1) == Some(':') && self.peek_at(2).is_some() {
                if let Some(len) = self.named_class_len() {
                    let name: String = self.chars[self.pos..self.pos + len].iter().collect();
                    ranges.extend(posix_class(&name).ok_or_else(|| format!("invalid character class {name}"))?);
                    self.pos += len;
                    continue;
                }
            }
            if ch == '\\' {
                match self.peek_at(1) {
                    Some(name @ ('p' | 'P')) => return Err(format!("Unicode class \\{name} is not supported")),
                    Some(name @ ('d' | 'D' | 's' | 'S' | 'w' | 'W')) => {
                        ranges.extend(perl_class(name));
                        self.pos += 2;
                        continue;
                    }
                    _ => {}
                }
            }
            let low = self.class_char()?;
            let mut high = low;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                high = self.class_char()?;
                if high < low {
                    return Err(format!("invalid character class range {low}-{high}"));
                }
            }
            ranges.push((low, high));
        }
        let ranges = normalize(ranges);
        Ok(Node::Class(if negated { complement(&ranges) } else { ranges }))
    }

    /// Length of a `[:name:]` starting here, up to the first `:]` anywhere after it (as RE2 searches).
    fn named_class_len(&self) -> Option<usize> {
        let start = self.pos + 2;
        (start..self.chars.len().saturating_sub(1))
            .find(|&i| self.chars[i] == ':' && self.chars[i + 1] == ']')
            .map(|i| i + 2 - self.pos)
    }

    fn class_char(&mut self) -> Result<char, String> {
        match self.bump().ok_or("missing closing ]")? {
            '\\' => {
                let escaped = self.bump().ok_or("trailing backslash")?;
                self.escape(escaped)
            }
            ch => Ok(ch),
        }
    }
}

fn perl_class(name: char) -> Vec<(char, char)> {
    let ranges = match name.to_ascii_lowercase() {
        'd' => vec![('0', '9')],
        's' => vec![('\t', '\n'), ('\u{c}', '\r'), (' ', ' ')],
        _ => vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
    };
    if name.is_ascii_uppercase() {
        complement(&ranges)
    } else {
        ranges
    }
}

fn posix_class(name: &str) -> Option<Vec<(char, char)>> {
    let (negated, bare) = match name.strip_prefix("[:^") {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix("[:")?),
    };
    let ranges = match bare.strip_suffix(":]")? {
        "alnum" => vec![('0', '9'), ('A', 'Z'), ('a', 'z')],
        "alpha" => vec![('A', 'Z'), ('a', 'z')],
        "ascii" => vec![('\0', '\u{7f}')],
        "blank" => vec![('\t', '\t'), (' ', ' ')],
        "cntrl" => vec![('\0', '\u{1f}'), ('\u{7f}', '\u{7f}')],
        "digit" => vec![('0', '9')],
        "graph" => vec![('!', '~')],
        "lower" => vec![('a', 'z')],
        "print" => vec![(' ', '~')],
        "punct" => vec![('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
        "space" => vec![('\t', '\r'), (' ', ' ')],
        "upper" => vec![('A', 'Z')],
        "word" => vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
        "xdigit" => vec![('0', '9'), ('A', 'F'), ('a', 'f')],
        _ => return None,
    };
    Some(if negated { complement(&ranges) } else { ranges })
}

fn next_char(ch: char) -> Option<char> {
    match ch {
        '\u{d7ff}' => Some('\u{e000}'),
        _ => char::from_u32(ch as u32 + 1),
    }
}

fn prev_char(ch: char) -> Option<char> {
    match ch {
        '\0' => None,
        '\u{e000}' => Some('\u{d7ff}'),
        _ => char::from_u32(ch as u32 - 1),
    }
}

/// Sorts ranges and merges the ones that overlap or touch.
fn normalize(mut ranges: Vec<(char, char)>) -> Vec<(char, char)> {
    ranges.sort_unstable();
    let mut merged: Vec<(char, char)> = Vec::with_capacity(ranges.len());
    for (low, high) in ranges {
        match merged.last_mut() {
            Some(last) if next_char(last.1).is_none_or(|after| low <= after) => last.1 = last.1.max(high),
            _ => merged.push((low, high)),
        }
    }
    merged
}

/// Every character not in the (normalized) ranges.
fn complement(ranges: &[(char, char)]) -> Vec<(char, char)> {
    let mut out = Vec::new();
    let mut start = Some('\0');
    for &(low, high) in ranges {
        if let (Some(from), Some(to)) = (start, prev_char(low)) {
            if from <= to {
                out.push((from, to));
            }
        }
        start = next_char(high);
    }
    if let Some(from) = start {
        out.push((from, char::MAX));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Ignore {
        Ignore::parse(text).unwrap()
    }

    #[track_caller]
    fn check(text: &str, excluded: &[&str], included: &[&str]) {
        let ignore = ignore(text);
        for path in excluded {
            assert!(ignore.is_excluded(path), "{text:?} should exclude {path:?}");
        }
        for path in included {
            assert!(!ignore.is_excluded(path), "{text:?} should include {path:?}");
        }
    }

    #[test]
    fn comments_and_blank_lines() {
        let ignore = ignore("# a comment\n\n   \n\t\nfoo\n  # only column 1 starts a comment\n#bar\n");
        assert_eq!(ignore.patterns(), vec!["foo", "# only column 1 starts a comment"]);
        assert!(ignore.is_excluded("foo"));
        assert!(!ignore.is_excluded("bar"));
        assert!(!ignore.is_excluded("# a comment"));
    }

    #[test]
    fn empty_file_includes_everything() {
        for text in ["", "\n\n", "# nothing here\n", "\u{feff}"] {
            let ignore = ignore(text);
            assert!(ignore.is_empty());
            assert!(!ignore.is_excluded("anything/at/all"));
            assert!(!ignore.can_skip_dir("anything"));
        }
        assert!(!ignore("x").is_empty());
    }

    #[test]
    fn markdown_with_readme_exception() {
        check("*.md\n!README.md\n", &["CHANGES.md", "a.md"], &["README.md", "docs/guide.md", "main.rs"]);
    }

    #[test]
    fn last_match_wins() {
        check("!x\nx\n", &["x", "x/y"], &[]);
        check("x\n!x\n", &[], &["x", "x/y"]);
        check("*.md\n!README*.md\nREADME-secret.md\n", &["a.md", "README-secret.md"], &["README.md", "README-x.md"]);
        check("*.md\nREADME-secret.md\n!README*.md\n", &["a.md"], &["README-secret.md", "README.md"]);
    }

    #[test]
    fn directory_pattern_excludes_everything_below() {
        check("node_modules\n", &["node_modules", "node_modules/a", "node_modules/a/b.js"], &["src/node_modules"]);
        check("docs/\n", &["docs", "docs/README.md"], &["docsy"]);
    }

    #[test]
    fn shared_prefix_is_not_a_parent() {
        check("foo\n", &["foo", "foo/bar"], &["foobar", "foobar/x", "afoo", "x/foo"]);
        check("a/b\n", &["a/b", "a/b/c"], &["a/bc", "a/bc/d", "a"]);
    }

    #[test]
    fn double_star_patterns() {
        check("**/*.go\n", &["main.go", "a/b/c.go", "a/.go"], &["main.gox", "a/b/go", "a/b.go.txt"]);
        check("**/temp*\n", &["temp", "tempfile", "a/temporary.txt", "a/b/temp/x"], &["atemp", "a/btemp"]);
        check("a/**/b\n", &["a/b", "a/x/b", "a/x/y/b", "a/x/b/c"], &["a/xb", "ab", "a", "b", "x/a/b"]);
        check("foo/**\n", &["foo/x", "foo/x/y"], &["foo", "foobar", "foobar/x"]);
        check("**\n", &["a", "a/b", ".dockerignore"], &[]);
        check("**/foo\n", &["foo", "x/foo", "x/y/foo/z"], &["xfoo", "foox"]);
    }

    #[test]
    fn single_star_and_question_mark() {
        check("temp?\n", &["tempa", "tempb", "tempa/x"], &["temp", "tempab", "x/tempa"]);
        check("*/temp*\n", &["somedir/temporary.txt", "somedir/temp"], &["temp", "a/b/temp"]);
        check("*/*/temp*\n", &["a/b/temporary.txt"], &["a/temp", "temp"]);
        check("*\n", &["a", "a/b", ".hidden"], &[]);
    }

    #[test]
    fn character_classes() {
        check("[a-c]*.txt\n", &["a.txt", "b1.txt", "c.txt/x"], &["d1.txt", "A.txt"]);
        check("file[^0-9]\n", &["filex", "file-"], &["file1", "file", "filexx"]);
        check("[\\]x]y\n", &["]y", "xy"], &["y", "\\y"]);
        check("[[:digit:]]x\n", &["1x"], &["ax"]);
        // Docker hands brackets to Go's regexp, where `!` is not negation: `[!a]` is the set {'!', 'a'}.
        check("[!a]x\n", &["!x", "ax"], &["bx"]);
        // The regexp's negated class also matches '/', unlike `?`.
        check("a[^b]c\n", &["a/c", "axc"], &["abc"]);
        // Unicode ranges compare code points.
        check("[a-ζ]\n", &["α", "b"], &["A", "ω"]);
    }

    #[test]
    fn cleaning_of_patterns() {
        let ignore = ignore("/foo\n./bar/../baz/\n  spaced  \n!/keep//this/\n/\nfoo /\n! ./x\n");
        assert_eq!(ignore.patterns(), vec!["foo", "baz", "spaced", "!keep/this", "/", "foo", "!x"]);
        assert!(ignore.is_excluded("foo"));
        assert!(ignore.is_excluded("baz/x"));
        assert!(ignore.is_excluded("spaced"));
        assert!(!ignore.is_excluded("bar"));
        // A queried path is cleaned too.
        assert!(ignore.is_excluded("./baz/x"));
        assert!(!ignore.is_excluded("."));
        assert!(!ignore.is_excluded(""));
    }

    #[test]
    fn crlf_and_byte_order_mark() {
        let ignore = ignore("\u{feff}foo\r\nbar\r\n\u{feff}baz");
        assert_eq!(ignore.patterns(), vec!["foo", "bar", "\u{feff}baz"]);
        check("\u{feff}#comment\r\nx\r", &["x"], &["#comment"]);
    }

    #[test]
    fn escaped_glob_characters() {
        check("a\\*b\n", &["a*b"], &["axb", "ab"]);
        check("a\\?\n", &["a?"], &["ab"]);
        check("a\\\\\n", &["a\\"], &["a"]);
        check("\\[x\\]\n", &["[x]"], &["x"]);
    }

    #[test]
    fn regexp_special_characters_are_literal() {
        check(
            "a.|)$(}+{bc\ndist/*.whl\n.*\n",
            &["a.|)$(}+{bc", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", ".git"],
            &["aX|)$(}+{bc", "foo"],
        );
        check("abc.def\n", &["abc.def"], &["abcZdef", "abcdef"]);
    }

    #[test]
    fn invalid_patterns_name_their_line() {
        let cases = [
            ("ok\n# comment\nfoo[\n", 3),
            ("[", 1),
            ("a\n!\n", 2),
            ("a\n! \n", 2),
            ("x\n\n[]a]\n", 3),
            ("[x-]\n", 1),
            ("[-x]\n", 1),
            ("[^bc\n", 1),
            ("trailing\\\n", 1),
            ("a\nb\n[Local-Only]/\n", 3),
            ("[b-a]\n", 1),
            ("x\\d\\p\n", 1),
        ];
        for (text, line) in cases {
            let error = Ignore::parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.to_string().starts_with(&format!("line {line}: ")), "{error}");
        }
        // Go's filepath.Match accepts reversed ranges; only the later regexp step rejects them.
        assert!(Ignore::parse("[a-c]\n").is_ok());
    }

    #[test]
    fn can_skip_dir_only_without_reachable_exceptions() {
        let plain = ignore("node_modules\n");
        assert!(plain.can_skip_dir("node_modules"));
        assert!(!plain.can_skip_dir("src"));

        let keep = ignore("node_modules\n!node_modules/keep.txt\n");
        assert!(!keep.can_skip_dir("node_modules"));
        assert!(keep.is_excluded("node_modules"));
        assert!(keep.is_excluded("node_modules/other.js"));
        assert!(!keep.is_excluded("node_modules/keep.txt"));

        let other = ignore("node_modules\n!src/keep.txt\n");
        assert!(other.can_skip_dir("node_modules"));

        // A wildcard exception might match anywhere, so BuildKit walks every excluded directory.
        let wildcard = ignore("node_modules\n!**/*.md\n");
        assert!(!wildcard.can_skip_dir("node_modules"));
        assert!(!wildcard.is_excluded("node_modules/pkg/README.md"));

        // A trailing `/**` or `/*` does not count as a wildcard.
        let trailing = ignore("vendor\n!vendor/keep/**\n");
        assert!(!trailing.can_skip_dir("vendor"));
        assert!(trailing.can_skip_dir("vendor/other"));
        assert!(!trailing.can_skip_dir("vendor/keep"));
        assert!(!trailing.is_excluded("vendor/keep/a/b"));
        assert!(trailing.is_excluded("vendor/other/x"));

        // Below a skipped directory, nothing is reached.
        assert!(plain.can_skip_dir("node_modules/a/b"));
    }

    #[test]
    fn excluded_directories_are_walked_only_where_an_exception_points() {
        // `!a/b/c` does not start with "a/x/", so BuildKit never looks inside the excluded `a/x`.
        let ignore = ignore("a\n!a/b/c\n");
        assert!(!ignore.is_excluded("a/b/c"));
        assert!(!ignore.is_excluded("a/b/c/d"));
        assert!(ignore.is_excluded("a/b/d"));
        assert!(ignore.is_excluded("a/x/y"));
    }

    #[test]
    fn parent_results_are_reused_like_buildkit() {
        // BuildKit's MatchesUsingParentResults never evaluated `!d` for `d` (it could not change the verdict
        // there), and does not look at parents again for `d/f`: so `d/f` stays excluded.
        check("d/f\n!d\n", &["d/f", "d/f/g"], &["d", "d/g"]);
        // Likewise the final `a` is not re-checked against the parent of `a/b`.
        check("a\n!a/b\na\n", &["a", "a/c"], &["a/b"]);
    }

    #[test]
    fn go_glob_quirks() {
        // `**` not followed by `/` in the middle still means "any directories", not "any characters".
        check("a**b\n", &["ab", "a/b", "ax/b"], &["axb"]);
        // A leading `**` with only literals after it compares suffixes.
        check("**file\n", &["file", "dir/file", "myfile"], &["file2"]);
        check("**/.foo\n", &[".foo", "a/.foo"], &["bar.foo"]);
        // `^` is literal when there are no other glob characters, and an anchor otherwise.
        check("a^b\n", &["a^b"], &["b"]);
        check("a^b*\n", &[], &["a^b", "a^bc"]);
        // A `[...]` that the translation cannot close turns the rest into a literal `]`.
        check("[*]\n", &["]", "[]", "^/]"], &["*", "a", "a]"]);
    }

    #[test]
    fn docker_matcher_vectors() {
        // (pattern, path, matches) from patternmatcher's and Go's filepath.Match test tables.
        let cases = [
            ("**", "file", true),
            ("**/", "file", true),
            ("**", "dir/file", true),
            ("**/**", "dir/file", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/dir2/file", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def/ghi", true),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("*c", "abc", true),
            ("a*", "ab/c", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[^c]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\-]", "-", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("*x", "xxx", true),
        ];
        for (pattern, path, expected) in cases {
            let ignore = ignore(pattern);
            assert_eq!(ignore.is_excluded(path), expected, "pattern {pattern:?}, path {path:?}");
        }
        let multi = [
            ("**\n!util/docker/web\n", "util/docker/web/foo", false),
            ("**\n!util/docker/web\nutil/docker/web/foo\n", "util/docker/web/foo", true),
            ("**\n!dist/*.whl\n", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false),
            ("docs\n!docs/README.md\n", "docs/README.md", false),
            ("docs/*\n!docs/README.md\n", "docs/README.md", false),
            ("!fileutils.go\n*.go\n", "fileutils.go", true),
        ];
        for (text, path, expected) in multi {
            assert_eq!(ignore(text).is_excluded(path), expected, "patterns {text:?}, path {path:?}");
        }
    }

    #[test]
    fn patterns_track_the_file_for_cache_keys() {
        let a = ignore("target\n*.log\n!keep.log\n");
        assert_eq!(a.patterns(), vec!["target", "*.log", "!keep.log"]);
        assert_ne!(a.patterns(), ignore("target\n*.log\n").patterns());
        assert_eq!(a.patterns(), ignore("# c\n/target/\n\n*.log\n! keep.log\n").patterns());
    }

    #[test]
    fn go_clean_matches_go() {
        let cases = [
            ("", "."),
            ("a/../b/", "b"),
            ("./a/../b/", "b"),
            ("..", ".."),
            ("a/../..", ".."),
            ("../../x", "../../x"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("//a//b/./c/", "/a/b/c"),
            ("a/b/..", "a"),
        ];
        for (input, output) in cases {
            assert_eq!(go_clean(input), output, "{input:?}");
        }
    }

    #[test]
    fn regex_engine_handles_its_syntax() {
        let matches = |re: &str, text: &str| Regex::new(re).unwrap().is_match(text);
        assert!(matches("^(.*/)?b$", "a/x/b"));
        assert!(!matches("^(.*/)?b$", "a\n/b"));
        assert!(matches("^[^/]*$", "a\nb"));
        assert!(matches("^\\Qa*b$", "a*b$"));
        assert!(matches("^a\\bb?", "a"));
        assert!(!matches("^a\\Bb", "a b"));
        assert!(matches("^\\x41\\101\\t$", "AA\t"));
        assert!(matches("^[[:^alpha:]\\d]+$", "1-2"));
        assert!(!matches("^[[:^alpha:]]+$", "a"));
        assert!(matches("^[\\W]$", "/"));
        assert!(matches("^a(bc)?d$", "ad") && matches("^a(bc)?d$", "abcd") && !matches("^a(bc)?d$", "abd"));
        assert!(matches("^a(bc)?$", "a") && matches("^a(bc)?$", "abc") && !matches("^a(bc)?$", "ab"));
        assert!(matches("^ab*$", "a") && matches("^ab+c$", "abbc") && !matches("^ab+c$", "ac"));
        assert!(Regex::new("^a**$").is_err());
        assert!(Regex::new("^[[:nope:]]$").is_err());
        assert!(Regex::new("^\\1$").is_err());
        assert!(Regex::new("^\\é$").is_err());
        // Linear time even for many stacked `**`.
        let long = "a/".repeat(200);
        assert!(ignore("**/**/**/**/**/**/x*\n").is_excluded(&format!("{long}xx")));
    }
}
