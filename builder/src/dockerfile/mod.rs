//! The Dockerfile front end: text to typed instructions.
//!
//! Syntax comes from the `parse-dockerfile` crate (heredocs, flags, directives), fed a text
//! prepared by `lines` so that it splits lines and flags exactly as BuildKit does; this
//! module turns its tree into [`Instruction`]s whose flags are checked and typed, keeping
//! every word raw (with its place in the file) because variables can only be expanded
//! once the base image's environment is known: [`crate::convert`] expands them with
//! [`expand`] and the scope it tracks.
//!
//! ```
//! let df = builder::dockerfile::parse("Dockerfile", "FROM busybox AS base\nRUN echo hi\n").unwrap();
//! assert_eq!(df.stages[0].name.as_deref(), Some("base"));
//! ```

pub mod expand;
mod lines;
pub mod mount;

use std::ops::Range;

use parse_dockerfile as pd;

use crate::error::{Error, Result};

/// A word as written, with its byte offset in the Dockerfile, expanded later.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Word {
    /// The text, quotes and variables still in it.
    pub raw: String,
    /// Byte offset of the word in the Dockerfile.
    pub at: usize,
}

/// A parsed Dockerfile: directives, global ARGs and stages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dockerfile {
    /// The name errors use (the `-f` path as given, or `Dockerfile`).
    pub file: String,
    /// The whole text, for error excerpts.
    #[serde(skip)]
    pub text: String,
    /// The escape character (`# escape=` directive; `\` by default).
    pub escape: char,
    /// The `# syntax=` directive, recorded but not acted on: berth has one front end.
    pub syntax: Option<String>,
    /// The `# check=` directive (`skip=...;error=true`), recorded for the lint rules.
    pub check: Option<String>,
    /// ARGs before the first FROM, usable in FROM lines.
    pub global_args: Vec<ArgDecl>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// RUN heredocs by the byte offset of their RUN keyword: where the instruction ends.
    #[serde(skip)]
    run_heredocs: std::collections::HashMap<usize, RunHeredocs>,
    /// Undoes the masking `lines::prepare` did in the strings the crate returns.
    #[serde(skip)]
    restore: lines::Restore,
}

/// The heredocs of one RUN, found by [`mask_run_heredocs`].
#[derive(Debug, Clone)]
struct RunHeredocs {
    /// The body of each heredoc (tabs stripped for `<<-`).
    bodies: Vec<String>,
    /// The delimiter of each heredoc: the file name of a script run through its shebang.
    names: Vec<String>,
    /// The byte offset just past the last terminator line.
    end: usize,
    /// The byte offset where the command's last line ends (before the first body).
    line_end: usize,
}

/// Finds RUN lines with heredoc markers; returns the text with those markers and bodies
/// blanked (offsets unchanged) and the heredocs by RUN keyword offset.
fn mask_run_heredocs(
    text: &str,
) -> std::result::Result<(String, std::collections::HashMap<usize, RunHeredocs>), (usize, String)> {
    let mut masked = text.as_bytes().to_vec();
    let mut found = std::collections::HashMap::new();
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut off = 0;
    for l in text.split_inclusive('\n') {
        lines.push((off, l));
        off += l.len();
    }
    let escape = lines::escape_directive(text);
    let mut i = 0;
    while i < lines.len() {
        let (start, line) = lines[i];
        i += 1;
        let trimmed = line.trim_start();
        let kw_at = start + (line.len() - trimmed.len());
        let mut words = trimmed.split_whitespace();
        let first = words.next().unwrap_or("");
        let is_run = first.eq_ignore_ascii_case("RUN")
            || (first.eq_ignore_ascii_case("ONBUILD") && words.next().is_some_and(|w| w.eq_ignore_ascii_case("RUN")));
        if !is_run {
            continue;
        }
        // The command's lines: as BuildKit, heredocs are read from the whole logical line, and
        // their bodies follow its last line.
        let mut own = vec![(start, line)];
        while i < lines.len()
            && own.last().is_some_and(|(_, l)| lines::is_continuation(l.trim_end_matches('\n'), escape))
        {
            let (s, l) = lines[i];
            i += 1;
            if !lines::is_skipped(l) {
                own.push((s, l));
            }
        }
        let markers: Vec<(String, bool)> = own.iter().flat_map(|(_, l)| heredoc_markers(l)).collect();
        if markers.is_empty() {
            continue;
        }
        let line_end = own.last().map_or(start, |(s, l)| s + l.trim_end_matches('\n').len());
        let mut bodies = Vec::new();
        let names = markers.iter().map(|(delim, _)| delim.clone()).collect();
        for (delim, strip_tabs) in &markers {
            let mut body = String::new();
            let mut closed = false;
            while i < lines.len() {
                let (bstart, bline) = lines[i];
                i += 1;
                for b in &mut masked[bstart..bstart + bline.trim_end_matches('\n').len()] {
                    *b = b' ';
                }
                let content = bline.trim_end_matches('\n').trim_end_matches('\r');
                let content = if *strip_tabs { content.trim_start_matches('\t') } else { content };
                if content == delim {
                    closed = true;
                    break;
                }
                body.push_str(content);
                body.push('\n');
            }
            if !closed {
                return Err((kw_at, format!("unterminated heredoc: no line {delim:?} ends <<{delim}")));
            }
            bodies.push(body);
        }
        // Blank the `<<` of every marker so the parser sees a plain shell command.
        for (start, line) in own {
            let mut from = 0;
            while let Some(p) = line[from..].find("<<") {
                masked[start + from + p] = b' ';
                masked[start + from + p + 1] = b' ';
                from += p + 2;
            }
        }
        let end = lines.get(i).map_or(text.len(), |(s, _)| *s);
        found.insert(kw_at, RunHeredocs { bodies, names, end, line_end });
    }
    Ok((String::from_utf8(masked).unwrap_or_else(|_| text.to_owned()), found))
}

/// The heredoc markers of a line: (`delimiter`, strip tabs) for `<<EOF`, `<<-EOF`, `<<"EOF"`,
/// `<<'EOF'`. As BuildKit reads them, a marker is a whole shell word (quotes respected) of
/// the form `[fd]<<[-]NAME`: `$((1<<2))` and `"cat <<EOF"` hold none.
fn heredoc_markers(line: &str) -> Vec<(String, bool)> {
    shell_words(line)
        .into_iter()
        .filter_map(|word| {
            let rest = word.trim_start_matches(|c: char| c.is_ascii_digit()).strip_prefix("<<")?;
            let (strip, rest) = match rest.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let name: String = rest.chars().filter(|c| *c != '"' && *c != '\'' && *c != '\\').collect();
            (!name.is_empty() && !rest.contains('<')).then_some((name, strip))
        })
        .collect()
}

/// The words of a shell line as written (quotes kept), split at blanks outside quotes.
fn shell_words(line: &str) -> Vec<&str> {
    let (mut words, mut start, mut quote, mut escaped) = (Vec::new(), None, None, false);
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quote != Some('\'') {
            escaped = true;
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == '"' || c == '\'' {
            quote = Some(c);
        } else if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(&line[s..i]);
            }
            continue;
        }
        start.get_or_insert(i);
    }
    words.extend(start.map(|s| &line[s..]));
    words
}

impl Dockerfile {
    /// An error at byte offset `at` of this Dockerfile.
    pub fn error(&self, at: usize, message: impl Into<String>) -> Error {
        Error::at(&self.file, &self.text, at, message)
    }

    /// The index of the stage called `name` (case-insensitive, as docker matches them).
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    /// A word of the crate's tree, with the characters `lines::prepare` masked put back.
    fn word(&self, s: &pd::UnescapedString<'_>) -> Word {
        Word { raw: self.unmask(&s.value), at: s.span.start }
    }

    /// A string of the crate's tree, with the masked characters put back.
    fn unmask(&self, s: &str) -> String {
        self.restore.apply(s).into_owned()
    }
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The image or stage it starts from, raw.
    pub base: Word,
    /// `--platform`.
    pub platform: Option<Word>,
    /// Where the FROM line is.
    pub span: Range<usize>,
    /// Its instructions.
    pub instructions: Vec<Instruction>,
}

/// One instruction after FROM, with its place in the file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Instruction {
    /// What it says.
    pub kind: Kind,
    /// The instruction's span (keyword to end).
    pub span: Range<usize>,
    /// The instruction as written on one line, for history and progress.
    pub text: String,
}

/// The instructions, each with its flags typed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CommandForm),
    /// `ENTRYPOINT`.
    Entrypoint(CommandForm),
    /// `LABEL k=v ...`, raw.
    Label(Word),
    /// `MAINTAINER name`.
    Maintainer(Word),
    /// `EXPOSE 80/tcp ...`.
    Expose(Vec<Word>),
    /// `ENV k=v ...` or `ENV k v`, raw.
    Env(Word),
    /// `ADD`.
    Add(Copy),
    /// `COPY`.
    Copy(Copy),
    /// `VOLUME`.
    Volume(Vec<Word>),
    /// `USER`.
    User(Word),
    /// `WORKDIR`.
    Workdir(Word),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `ONBUILD <instruction>`: stored in the image config, run by builds that use it as a base.
    Onbuild(String),
    /// `STOPSIGNAL`.
    Stopsignal(Word),
    /// `HEALTHCHECK`; `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
    /// `SHELL ["sh", "-c"]`.
    Shell(Vec<String>),
}

/// The shell and exec forms of RUN, CMD, ENTRYPOINT and HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandForm {
    /// `["prog", "arg"]`: run as is.
    Exec(Vec<String>),
    /// `prog arg`: run through the SHELL.
    Shell(String),
}

/// A RUN instruction.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// The command; for heredocs, the script the shell runs (or, for a script with a
    /// shebang, the path it is mounted at: see [`Run::script`]).
    pub command: CommandForm,
    /// `RUN <<EOF` whose body starts with `#!`: BuildKit mounts it as an executable file
    /// at `/dev/pipes/EOF` and the shell runs that file, so its interpreter reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<RunScript>,
    /// `--mount=...`, raw (variables are expanded before [`mount::MountSpec::parse`]).
    pub mounts: Vec<Word>,
    /// `--network=default|none|host`.
    pub network: Option<Word>,
    /// `--security=sandbox|insecure`.
    pub security: Option<Word>,
}

/// A RUN heredoc that is run as a file through its own `#!` line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunScript {
    /// The file name: the heredoc's delimiter.
    pub name: String,
    /// The script, as written (not expanded: its interpreter reads it).
    pub content: String,
}

impl RunScript {
    /// The directory the script is mounted on in the step, as BuildKit mounts it.
    pub const DIR: &'static str = "/dev/pipes";

    /// The script's path in the step.
    pub fn path(&self) -> String {
        format!("{}/{}", Self::DIR, self.name)
    }
}

/// COPY and ADD, with every flag either takes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copy {
    /// The sources: context paths (globs), URLs (ADD), or heredocs.
    pub sources: Vec<CopySource>,
    /// The destination, raw.
    pub dest: Word,
    /// `--from=<stage|image|index>` (COPY).
    pub from: Option<Word>,
    /// `--chown=user[:group]`.
    pub chown: Option<Word>,
    /// `--chmod=mode`.
    pub chmod: Option<Word>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY).
    pub parents: bool,
    /// `--exclude=pattern`, repeatable.
    pub exclude: Vec<Word>,
    /// `--checksum=sha256:...` (ADD of a URL).
    pub checksum: Option<Word>,
    /// `--keep-git-dir` (ADD of a git URL).
    pub keep_git_dir: bool,
}

/// One source of COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopySource {
    /// A path or glob (or, for ADD, a URL).
    Path(Word),
    /// A heredoc: a file with this content, named by its delimiter.
    Heredoc {
        /// The file name (the heredoc's delimiter).
        name: String,
        /// The content.
        content: String,
        /// Whether variables in it are expanded (unquoted delimiter).
        expand: bool,
    },
}

/// One `NAME[=default]` of an ARG.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default, raw.
    pub default: Option<Word>,
    /// Where it is.
    pub at: usize,
}

/// `HEALTHCHECK [options] CMD ...`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Healthcheck {
    /// The test command.
    pub test: CommandForm,
    /// `--interval`, `--timeout`, `--start-period`, `--start-interval` in nanoseconds.
    pub durations: [Option<u64>; 4],
    /// `--retries`.
    pub retries: Option<u64>,
}

/// Parses a Dockerfile's text into typed instructions.
pub fn parse(file: &str, text: &str) -> Result<Dockerfile> {
    // BuildKit ignores a UTF-8 byte order mark; offsets and columns count from after it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // parse-dockerfile 0.1 reads a RUN heredoc only when it opens the command and only one
    // of them; BuildKit allows `RUN python3 <<EOF`, `RUN <<A <<B`. Mask RUN heredocs (same
    // byte offsets, bodies blanked) and rebuild those commands from the real text.
    let (masked, run_heredocs) = mask_run_heredocs(text).map_err(|(at, m)| Error::at(file, text, at, m))?;
    parse_masked(file, text, &masked, run_heredocs, lines::escape_directive(text), true)
}

/// Parses with the crate after `lines::prepare`, for the escape character `escape`; when the
/// crate reads another one from the directives (and `retry`), prepares again for that one.
fn parse_masked(
    file: &str,
    text: &str,
    masked: &str,
    run_heredocs: std::collections::HashMap<usize, RunHeredocs>,
    escape: char,
    retry: bool,
) -> Result<Dockerfile> {
    let prepared = lines::prepare(masked, escape).map_err(|m| Error::at(file, text, 0, m))?;
    let tree = pd::parse(&prepared.text).map_err(|e| {
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        let at = offset_of(text, e.line(), e.column());
        Error::at(file, text, at, lowercase_first(&message))
    })?;
    let found = tree.parser_directives.escape.as_ref().map_or('\\', |d| d.value.value);
    if found != escape && retry {
        return parse_masked(file, text, masked, run_heredocs, found, false);
    }
    let mut df = Dockerfile {
        file: file.to_owned(),
        text: text.to_owned(),
        escape,
        syntax: tree.parser_directives.syntax.as_ref().map(|d| d.value.value.to_owned()),
        check: tree.parser_directives.check.as_ref().map(|d| d.value.value.to_owned()),
        global_args: Vec::new(),
        stages: Vec::new(),
        run_heredocs,
        restore: prepared.restore.clone(),
    };
    check_starts(&df, &prepared.starts, &tree.instructions)?;
    for (ins, &at) in tree.instructions.iter().zip(&prepared.starts) {
        add_instruction(&mut df, ins, at)?;
    }
    if df.stages.is_empty() {
        return Err(df.error(text.len(), "the Dockerfile has no FROM instruction"));
    }
    Ok(df)
}

/// Refuses a file where the crate's instructions do not begin exactly where BuildKit's do, so
/// that no instruction is ever lost inside another (or made up) without a word. That would be
/// berth's failure, not the user's: an internal error, still at file:line:col with the line.
fn check_starts(df: &Dockerfile, starts: &[usize], found: &[pd::Instruction<'_>]) -> Result<()> {
    let found: Vec<usize> = found.iter().map(keyword_start).collect();
    let internal = |at: usize, what: &str| Error::Internal(format!("{} (please report it)", df.error(at, what)));
    if let Some(&at) = starts.iter().find(|s| found.binary_search(s).is_err()) {
        return Err(internal(at, "this line starts an instruction, but the parser read it as part of the one before"));
    }
    if let Some(&at) = found.iter().find(|s| starts.binary_search(s).is_err()) {
        return Err(internal(at, "the parser read an instruction here where BuildKit reads none"));
    }
    Ok(())
}

/// Adds one instruction of the crate's tree (keyword at `at`) to the stages being built.
fn add_instruction(df: &mut Dockerfile, ins: &pd::Instruction<'_>, at: usize) -> Result<()> {
    match ins {
        pd::Instruction::From(from) => {
            let stage = stage(df, from)?;
            df.stages.push(stage);
        }
        pd::Instruction::Arg(arg) if df.stages.is_empty() => {
            let decls = arg_decls(df, &arg.arguments)?;
            df.global_args.extend(decls);
        }
        other => {
            let typed = instruction(df, other, at)?;
            match df.stages.last_mut() {
                Some(stage) => stage.instructions.push(typed),
                None => {
                    return Err(df.error(typed.span.start, "no FROM before this instruction (only ARG may come first)"))
                }
            }
        }
    }
    Ok(())
}

/// A FROM line: its flags, base and stage name.
fn stage(df: &Dockerfile, from: &pd::FromInstruction<'_>) -> Result<Stage> {
    let mut platform = None;
    for flag in &from.options {
        match flag.name.value.as_ref() {
            "platform" => platform = Some(flag_value(df, flag)?),
            _ => return Err(unknown_flag(df, flag, "FROM")),
        }
    }
    let name = match &from.as_ {
        Some((_, n)) => {
            let lower = df.unmask(&n.value).to_ascii_lowercase();
            check_stage_name(df, &lower, n.span.start)?;
            if df.stage_index(&lower).is_some() {
                return Err(df.error(n.span.start, format!("duplicate stage name {lower:?}")));
            }
            Some(lower)
        }
        None => None,
    };
    let end = from.as_.as_ref().map_or(from.image.span.end, |(_, n)| n.span.end);
    Ok(Stage { name, base: df.word(&from.image), platform, span: from.from.span.start..end, instructions: Vec::new() })
}

/// Converts one syntax-tree instruction (not FROM, keyword at `at`) into ours.
fn instruction(df: &Dockerfile, ins: &pd::Instruction<'_>, at: usize) -> Result<Instruction> {
    use pd::Instruction as I;
    let (start, kind) = match ins {
        I::Run(r) => (r.run.span.start, Kind::Run(run(df, r)?)),
        I::Cmd(c) => (c.cmd.span.start, Kind::Cmd(command(df, &c.arguments)?)),
        I::Entrypoint(e) => (e.entrypoint.span.start, Kind::Entrypoint(command(df, &e.arguments)?)),
        I::Label(l) => (l.label.span.start, Kind::Label(key_values(df, &l.arguments, "LABEL")?)),
        I::Maintainer(m) => (m.maintainer.span.start, Kind::Maintainer(df.word(&m.name))),
        I::Expose(e) => (e.expose.span.start, Kind::Expose(e.arguments.iter().map(|w| df.word(w)).collect())),
        I::Env(e) => (e.env.span.start, Kind::Env(key_values(df, &e.arguments, "ENV")?)),
        I::Add(a) => {
            let copy = copy_flags(df, &a.options, "ADD", &a.src, &a.dest)?;
            (a.add.span.start, Kind::Add(copy))
        }
        I::Copy(c) => {
            let copy = copy_flags(df, &c.options, "COPY", &c.src, &c.dest)?;
            (c.copy.span.start, Kind::Copy(copy))
        }
        I::Volume(v) => {
            let words: Vec<Word> = match &v.arguments {
                pd::JsonOrStringArray::Json(a) => a.value.iter().map(|w| df.word(w)).collect(),
                pd::JsonOrStringArray::String(a) => a.iter().map(|w| df.word(w)).collect(),
            };
            if let pd::JsonOrStringArray::String(a) = &v.arguments {
                if let (Some(first), Some(last)) = (a.first(), a.last()) {
                    check_json_strings(df, first.span.start..last.span.end)?;
                }
            }
            (v.volume.span.start, Kind::Volume(words))
        }
        I::User(u) => (u.user.span.start, Kind::User(df.word(&u.arguments))),
        I::Workdir(w) => (w.workdir.span.start, Kind::Workdir(df.word(&w.arguments))),
        I::Arg(a) => (a.arg.span.start, Kind::Arg(arg_decls(df, &a.arguments)?)),
        I::Onbuild(o) => {
            let inner = instruction(df, &o.instruction, at)?;
            match inner.kind {
                Kind::Onbuild(_) => return Err(df.error(inner.span.start, "ONBUILD ONBUILD is not allowed")),
                Kind::Maintainer(_) => {
                    return Err(df.error(inner.span.start, "MAINTAINER isn't allowed as an ONBUILD trigger"))
                }
                _ => {}
            }
            (o.onbuild.span.start, Kind::Onbuild(inner.text))
        }
        I::Stopsignal(s) => (s.stopsignal.span.start, Kind::Stopsignal(df.word(&s.arguments))),
        I::Healthcheck(h) => (h.healthcheck.span.start, Kind::Healthcheck(healthcheck(df, h)?)),
        I::Shell(s) => (s.shell.span.start, Kind::Shell(s.arguments.iter().map(|a| df.unmask(&a.value)).collect())),
        I::From(f) => return Err(df.error(f.from.span.start, "FROM is not allowed here")),
        _ => return Err(df.error(at, "an instruction this version of berth does not know")),
    };
    let end = instruction_end(df, ins);
    let text = one_line(&df.text[start..end.max(start)], df.escape);
    Ok(Instruction { kind, span: start..end, text })
}

/// RUN: its flags and command.
fn run(df: &Dockerfile, r: &pd::RunInstruction<'_>) -> Result<Run> {
    let mut run =
        Run { command: CommandForm::Shell(String::new()), script: None, mounts: vec![], network: None, security: None };
    for flag in &r.options {
        match flag.name.value.as_ref() {
            "mount" => run.mounts.push(flag_value(df, flag)?),
            "network" => run.network = Some(flag_value(df, flag)?),
            "security" => run.security = Some(flag_value(df, flag)?),
            _ => return Err(unknown_flag(df, flag, "RUN")),
        }
    }
    if let pd::Command::Shell(s) = &r.arguments {
        if !df.run_heredocs.contains_key(&r.run.span.start) {
            check_json_strings(df, s.span.clone())?;
        }
    }
    (run.command, run.script) = run_command(df, r);
    Ok(run)
}

/// The raw `KEY=value ...` (or legacy `KEY value`) text of ENV and LABEL, its shape checked now
/// as BuildKit's parser checks it: a name without a value, a word without `=` in the pairs form
/// and a blank name are refused here, before any build. Values are expanded later.
fn key_values(df: &Dockerfile, args: &pd::UnescapedString<'_>, what: &str) -> Result<Word> {
    let w = df.word(args);
    match expand::check_key_values(&w.raw, df.escape) {
        Ok(()) => Ok(w),
        Err(e) => Err(df.error(w.at + e.offset, format!("{what}: {}", e.message))),
    }
}

/// Refuses a JSON array that holds something other than strings (a nested array, a number), as
/// BuildKit does; text that is not JSON at all is the shell form and is left alone.
fn check_json_strings(df: &Dockerfile, span: Range<usize>) -> Result<()> {
    let raw = join_continuations(&df.text[span.start..span.end.min(df.text.len())], df.escape);
    let trimmed = raw.trim();
    if !trimmed.starts_with('[') {
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(serde_json::Value::Array(items)) if items.iter().any(|v| !v.is_string()) => {
            let at = span.start + (df.text[span.start..].len() - df.text[span.start..].trim_start().len());
            Err(df.error(at, "when using JSON array syntax, arrays must be comprised of strings only"))
        }
        _ => Ok(()),
    }
}

/// The byte offset where an instruction's text ends (after its last heredoc, if any).
fn instruction_end(df: &Dockerfile, ins: &pd::Instruction<'_>) -> usize {
    let start = match ins {
        pd::Instruction::Onbuild(o) => o.onbuild.span.start,
        _ => 0,
    };
    let rest_end = |from: usize| df.text[from..].find('\n').map_or(df.text.len(), |i| from + i);
    let mut end = match ins {
        pd::Instruction::Run(r) => run_end(df, r),
        pd::Instruction::Copy(c) => heredoc_end(&c.src).map_or(c.dest.span.end, rest_end),
        pd::Instruction::Add(a) => heredoc_end(&a.src).map_or(a.dest.span.end, rest_end),
        pd::Instruction::Onbuild(o) => instruction_end(df, &o.instruction),
        _ => logical_line_end(&df.text, keyword_start(ins), df.escape),
    };
    end = end.max(start).min(df.text.len());
    end
}

fn run_end(df: &Dockerfile, r: &pd::RunInstruction<'_>) -> usize {
    if let Some(h) = df.run_heredocs.get(&r.run.span.start) {
        return h.end.saturating_sub(1).max(r.run.span.end);
    }
    match r.here_docs.last() {
        // The terminator line follows the body.
        Some(h) => df.text[h.span.end..].find('\n').map_or(df.text.len(), |i| h.span.end + i),
        None => match &r.arguments {
            pd::Command::Exec(e) => e.span.end,
            pd::Command::Shell(s) => s.span.end,
            _ => r.run.span.end,
        },
    }
}

/// The end of the line at `start`, following `escape + newline` continuations (and the
/// comment or blank lines inside them).
fn logical_line_end(text: &str, start: usize, escape: char) -> usize {
    let mut pos = start;
    loop {
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = text[pos..end].trim_end();
        let continued = lines::is_continuation(line, escape)
            || (pos != start && (line.trim_start().starts_with('#') || line.is_empty()));
        if !continued || end >= text.len() {
            return if line.is_empty() && pos != start { pos.saturating_sub(1) } else { end };
        }
        pos = end + 1;
    }
}

fn heredoc_end(src: &[pd::Source<'_>]) -> Option<usize> {
    src.iter()
        .filter_map(|s| match s {
            pd::Source::HereDoc(h) => Some(h.span.end),
            _ => None,
        })
        .max()
}

fn keyword_start(ins: &pd::Instruction<'_>) -> usize {
    use pd::Instruction as I;
    match ins {
        I::Add(i) => i.add.span.start,
        I::Arg(i) => i.arg.span.start,
        I::Cmd(i) => i.cmd.span.start,
        I::Copy(i) => i.copy.span.start,
        I::Entrypoint(i) => i.entrypoint.span.start,
        I::Env(i) => i.env.span.start,
        I::Expose(i) => i.expose.span.start,
        I::From(i) => i.from.span.start,
        I::Healthcheck(i) => i.healthcheck.span.start,
        I::Label(i) => i.label.span.start,
        I::Maintainer(i) => i.maintainer.span.start,
        I::Onbuild(i) => i.onbuild.span.start,
        I::Run(i) => i.run.span.start,
        I::Shell(i) => i.shell.span.start,
        I::Stopsignal(i) => i.stopsignal.span.start,
        I::User(i) => i.user.span.start,
        I::Volume(i) => i.volume.span.start,
        I::Workdir(i) => i.workdir.span.start,
        _ => 0,
    }
}

/// RUN's command: exec form as is; shell form with line continuations joined; heredocs
/// turned into the script the shell runs, as BuildKit does.
fn run_command(df: &Dockerfile, r: &pd::RunInstruction<'_>) -> (CommandForm, Option<RunScript>) {
    if let Some(h) = df.run_heredocs.get(&r.run.span.start) {
        // The command line runs from after the flags to the end of the line; the heredoc
        // bodies and terminators follow it.
        let from = skip_end_of_flags(&df.text, r.options.last().map_or(r.run.span.end, |f| f.span().end));
        let joined = join_continuations(&df.text[from..h.line_end.max(from)], df.escape);
        let line = joined.trim();
        let only_heredoc = h.bodies.len() == 1
            && line.starts_with("<<")
            && !line[2..].trim_start_matches('-').contains(|c: char| c.is_whitespace());
        if !only_heredoc {
            let script = format!("{line}{}", &df.text[h.line_end.max(from)..h.end]);
            return (CommandForm::Shell(script.trim().to_owned()), None);
        }
        if h.bodies[0].starts_with("#!") {
            let script = RunScript { name: h.names[0].clone(), content: h.bodies[0].clone() };
            return (CommandForm::Shell(script.path()), Some(script));
        }
        return (CommandForm::Shell(h.bodies[0].clone()), None);
    }
    let command = match &r.arguments {
        pd::Command::Exec(e) => CommandForm::Exec(e.value.iter().map(|s| df.unmask(&s.value)).collect()),
        pd::Command::Shell(s) => CommandForm::Shell(join_continuations(&df.unmask(s.value), df.escape)),
        _ => CommandForm::Shell(String::new()),
    };
    (command, None)
}

/// The offset after a `--` word that ends the flags at `from` (blanks before it skipped), or `from`.
fn skip_end_of_flags(text: &str, from: usize) -> usize {
    let rest = &text[from..];
    let word_at = from + rest.len() - rest.trim_start_matches([' ', '\t']).len();
    match text[word_at..].strip_prefix("--") {
        Some(after) if after.is_empty() || after.starts_with(char::is_whitespace) => word_at + 2,
        _ => from,
    }
}

fn command(df: &Dockerfile, c: &pd::Command<'_>) -> Result<CommandForm> {
    Ok(match c {
        pd::Command::Exec(e) => CommandForm::Exec(e.value.iter().map(|s| df.unmask(&s.value)).collect()),
        pd::Command::Shell(s) => {
            check_json_strings(df, s.span.clone())?;
            let text = join_continuations(&df.unmask(s.value), df.escape);
            // `CMD []` / `ENTRYPOINT []`, masked for the crate (see `lines`): the empty exec form.
            match text.split_whitespace().collect::<String>() == "[]" {
                true => CommandForm::Exec(vec![]),
                false => CommandForm::Shell(text),
            }
        }
        _ => CommandForm::Shell(String::new()),
    })
}

/// Joins `escape + newline` continuations and drops comment lines inside them, as the
/// Dockerfile reference says; the shell sees one line. A line continues by BuildKit's rule
/// (`trailing\\` does not), and a continuation on the last line is dropped, as BuildKit drops it.
pub fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut lines = raw.split('\n').peekable();
    let mut continuing = false;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if continuing && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        let body = line.trim_end_matches('\r');
        continuing = lines::is_continuation(body, escape);
        if continuing {
            let stripped = body.trim_end_matches([' ', '\t']);
            out.push_str(&stripped[..stripped.len() - escape.len_utf8()]);
            continue;
        }
        out.push_str(body);
        if lines.peek().is_some() {
            out.push('\n');
        }
    }
    out
}

/// An instruction's text on one line, for history entries and progress.
fn one_line(raw: &str, escape: char) -> String {
    let first_heredoc_line = raw.split('\n').next().unwrap_or("");
    let joined = if raw.contains("<<") { first_heredoc_line.to_owned() } else { join_continuations(raw, escape) };
    joined.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn copy_flags(
    df: &Dockerfile,
    flags: &[pd::Flag<'_>],
    what: &str,
    src: &[pd::Source<'_>],
    dest: &pd::UnescapedString<'_>,
) -> Result<Copy> {
    let is_copy = what == "COPY";
    let mut c = Copy {
        sources: Vec::new(),
        dest: df.word(dest),
        from: None,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        checksum: None,
        keep_git_dir: false,
    };
    for flag in flags {
        match (flag.name.value.as_ref(), is_copy) {
            ("from", true) => c.from = Some(flag_value(df, flag)?),
            ("chown", _) => c.chown = Some(flag_value(df, flag)?),
            ("chmod", _) => c.chmod = Some(flag_value(df, flag)?),
            ("link", _) => c.link = flag_bool(df, flag)?,
            ("parents", true) => c.parents = flag_bool(df, flag)?,
            ("exclude", _) => c.exclude.push(exclude_pattern(df, flag)?),
            ("checksum", false) => c.checksum = Some(flag_value(df, flag)?),
            ("keep-git-dir", false) => c.keep_git_dir = flag_bool(df, flag)?,
            _ => return Err(unknown_flag(df, flag, what)),
        }
    }
    let line_start = df.text[..dest.span.start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = df.text[dest.span.start..].find('\n').map_or(df.text.len(), |i| dest.span.start + i);
    let mut names = heredoc_markers(&df.text[line_start..line_end]).into_iter().map(|(n, _)| n);
    for s in src {
        c.sources.push(match s {
            pd::Source::Path(p) => CopySource::Path(df.word(p)),
            pd::Source::HereDoc(h) => CopySource::Heredoc {
                name: names.next().unwrap_or_else(|| heredoc_name(&df.text, h.span.start)),
                content: df.unmask(&h.value),
                expand: h.expand,
            },
            _ => return Err(df.error(dest.span.start, format!("{what}: a source this version of berth does not know"))),
        });
    }
    if let Some(pd::Source::Path(first)) = src.first() {
        check_json_strings(df, first.span.start..dest.span.end)?;
    }
    Ok(c)
}

/// An `--exclude` pattern; one without variables is checked now, as the build would refuse it.
fn exclude_pattern(df: &Dockerfile, flag: &pd::Flag<'_>) -> Result<Word> {
    let w = flag_value(df, flag)?;
    if w.raw.contains('$') {
        return Ok(w);
    }
    let pattern =
        expand::expand_word(&w.raw, df.escape, &|_| None).map_err(|e| df.error(w.at + e.offset, e.message))?;
    match crate::context::Ignore::parse(&pattern) {
        Ok(_) => Ok(w),
        Err(e) => Err(df.error(w.at, format!("--exclude: {}", e.message))),
    }
}

/// The delimiter of the heredoc whose body starts at `body`: the word after `<<` on the
/// instruction's line (the file name a COPY heredoc gets).
fn heredoc_name(text: &str, body: usize) -> String {
    let line_start = text[..body.saturating_sub(1)].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[line_start..body.saturating_sub(1).max(line_start)];
    line.rfind("<<")
        .map(|i| {
            line[i + 2..]
                .trim_start_matches('-')
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches(|c| c == '"' || c == '\'')
                .to_owned()
        })
        .unwrap_or_default()
}

fn healthcheck(df: &Dockerfile, h: &pd::HealthcheckInstruction<'_>) -> Result<Option<Healthcheck>> {
    let mut durations = [None; 4];
    let mut retries = None;
    for flag in &h.options {
        let slot = match flag.name.value.as_ref() {
            "interval" => 0,
            "timeout" => 1,
            "start-period" => 2,
            "start-interval" => 3,
            "retries" => {
                let v = flag_value(df, flag)?;
                retries = Some(v.raw.parse().map_err(|_| df.error(v.at, format!("invalid --retries {:?}", v.raw)))?);
                continue;
            }
            _ => return Err(unknown_flag(df, flag, "HEALTHCHECK")),
        };
        let v = flag_value(df, flag)?;
        let d = parse_duration(&v.raw).ok_or_else(|| {
            df.error(v.at, format!("invalid duration {:?} for --{} (use 30s, 1m30s, 500ms)", v.raw, flag.name.value))
        })?;
        // As BuildKit: 0 means the default, and anything else is at least a millisecond.
        if d > 0 && d < 1_000_000 {
            return Err(df.error(v.at, format!("--{} {:?} cannot be less than 1ms", flag.name.value, v.raw)));
        }
        durations[slot] = Some(d);
    }
    Ok(match &h.arguments {
        pd::HealthcheckArguments::Cmd { cmd, arguments, .. } => {
            let test = command(df, arguments)?;
            let empty = match &test {
                CommandForm::Exec(a) => a.is_empty(),
                CommandForm::Shell(s) => s.trim().is_empty(),
            };
            if empty {
                return Err(df.error(cmd.span.start, "HEALTHCHECK CMD needs a command to run"));
            }
            Some(Healthcheck { test, durations, retries })
        }
        _ => None,
    })
}

/// A Go duration (`1h2m3s`, `500ms`, `1.5s`) in nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Some(total as u64)
}

/// Splits `NAME[=default] ...` of an ARG.
fn arg_decls(df: &Dockerfile, args: &pd::UnescapedString<'_>) -> Result<Vec<ArgDecl>> {
    let words =
        expand::split_raw(&args.value, df.escape).map_err(|e| df.error(args.span.start + e.offset, e.message))?;
    let mut out = Vec::new();
    for (word, off) in words {
        let at = args.span.start + off;
        let (name, default) = match word.split_once('=') {
            Some((n, d)) => (n.to_owned(), Some(Word { raw: d.to_owned(), at: at + n.len() + 1 })),
            None => (word.clone(), None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(df.error(at, format!("invalid ARG name {name:?}")));
        }
        out.push(ArgDecl { name, default, at });
    }
    Ok(out)
}

fn check_stage_name(df: &Dockerfile, name: &str, at: usize) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(df.error(
            at,
            format!("invalid stage name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter"),
        ))
    }
}

fn flag_value(df: &Dockerfile, flag: &pd::Flag<'_>) -> Result<Word> {
    match &flag.value {
        Some(v) => Ok(df.word(v)),
        None => Err(df
            .error(flag.flag_span().start, format!("--{} needs a value (--{}=...)", flag.name.value, flag.name.value))),
    }
}

fn flag_bool(df: &Dockerfile, flag: &pd::Flag<'_>) -> Result<bool> {
    match flag.value.as_ref().map(|v| v.value.as_ref()) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => {
            Err(df.error(flag.flag_span().start, format!("--{} takes true or false, not {other:?}", flag.name.value)))
        }
    }
}

fn unknown_flag(df: &Dockerfile, flag: &pd::Flag<'_>, what: &str) -> Error {
    df.error(flag.flag_span().start, format!("unknown flag for {what}: --{}", flag.name.value))
}

/// The byte offset of a 1-based line and column.
fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let start: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
    let line_text = &text[start.min(text.len())..];
    start + line_text.char_indices().nth(col.saturating_sub(1)).map_or(line_text.len(), |(i, _)| i)
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        // Keep instruction names (all caps) as they are.
        Some(f) if !s.split_whitespace().next().is_some_and(|w| w.len() > 1 && w.chars().all(|c| c.is_uppercase())) => {
            f.to_lowercase().chain(c).collect()
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("Dockerfile", text).unwrap_err().to_string()
    }

    fn only(text: &str) -> Kind {
        parse("Dockerfile", text).unwrap().stages.remove(0).instructions.remove(0).kind
    }

    #[test]
    fn a_line_the_crate_would_swallow_is_refused_not_lost() {
        // What parse-dockerfile alone makes of an escaped escape: two instructions where BuildKit sees three.
        let text = "FROM a\nENV C x\\\\\nENV D y\n";
        let prepared = lines::prepare(text, '\\').unwrap();
        let raw_tree = pd::parse(text).unwrap();
        assert_eq!(raw_tree.instructions.len(), 2);
        let (masked, run_heredocs) = mask_run_heredocs(text).unwrap();
        let df = parse_masked("Dockerfile", text, &masked, run_heredocs, '\\', false).unwrap();
        let e = check_starts(&df, &prepared.starts, &raw_tree.instructions).unwrap_err();
        assert!(matches!(e, Error::Internal(_)), "berth's failure, not the user's: {e:?}");
        let e = e.to_string();
        assert!(e.starts_with("internal error: Dockerfile:3:1: this line starts an instruction"), "{e}");
        assert!(e.contains("ENV D y"), "the line is shown: {e}");
        // With the prepared text, both ENVs are there.
        assert_eq!(df.stages[0].instructions.len(), 2);
    }

    #[test]
    fn join_continuations_follows_buildkit() {
        assert_eq!(join_continuations("a \\\n  # note\n\n  b", '\\'), "a   b");
        assert_eq!(join_continuations("a\\\\", '\\'), "a\\\\");
        assert_eq!(join_continuations("a \\", '\\'), "a ");
        assert_eq!(join_continuations("a `\nb", '`'), "a b");
    }

    #[test]
    fn continuation_at_end_of_file_is_dropped_for_every_instruction() {
        match only("FROM a\nENV A=b \\") {
            Kind::Env(w) => assert_eq!(w.raw, "A=b"),
            other => panic!("{other:?}"),
        }
        match only("FROM a\nCMD echo hi \\\n# trailing comment\n") {
            Kind::Cmd(c) => assert_eq!(c, CommandForm::Shell("echo hi".into())),
            other => panic!("{other:?}"),
        }
        let df = parse("Dockerfile", "FROM a\nRUN make \\\n\n").unwrap();
        assert_eq!(df.stages[0].instructions[0].text, "RUN make");
    }

    #[test]
    fn nested_json_arrays_are_refused_in_every_exec_form() {
        for (line, col) in [
            ("RUN [\"sh\", [\"-c\"]]", 5),
            ("ENTRYPOINT [\"a\", 1]", 12),
            ("HEALTHCHECK CMD [\"a\", null]", 17),
            ("VOLUME [\"/a\", [\"/b\"]]", 8),
            ("COPY [\"a\", [\"b\"], \"/x\"]", 6),
            ("ONBUILD CMD [[\"a\"]]", 13),
        ] {
            let e = err(&format!("FROM a\n{line}\n"));
            assert!(e.starts_with(&format!("Dockerfile:2:{col}: when using JSON array syntax")), "{line}: {e}");
        }
        // Not JSON at all: the shell form, as BuildKit reads it.
        assert_eq!(only("FROM a\nRUN [ -f x ] && echo y\n").text_command(), "[ -f x ] && echo y");
    }

    #[test]
    fn onbuild_refuses_the_triggers_buildkit_refuses() {
        assert!(err("FROM a\nONBUILD ONBUILD RUN x\n").starts_with("Dockerfile:2:9: ONBUILD ONBUILD is not allowed"));
        let e = err("FROM a\nONBUILD MAINTAINER me\n");
        assert!(e.starts_with("Dockerfile:2:9: MAINTAINER isn't allowed as an ONBUILD trigger"), "{e}");
        let e = err("FROM a\nONBUILD FROM b\n");
        assert!(e.contains("FROM is not allowed here"), "{e}");
        assert!(parse("Dockerfile", "FROM a\nONBUILD RUN make\n").is_ok());
    }

    #[test]
    fn double_dash_before_a_run_heredoc() {
        assert_eq!(only("FROM a\nRUN --network=none -- <<EOF\necho hi\nEOF\n").text_command(), "echo hi\n");
        assert_eq!(only("FROM a\nRUN -- sh <<EOF\necho hi\nEOF\n").text_command(), "sh <<EOF\necho hi\nEOF");
    }

    #[test]
    fn a_heredoc_on_a_continuation_line_is_read_from_the_whole_command() {
        let text = "FROM a\nRUN echo start > /x && \\\n    cat <<EOF >> /x\ncontent\nEOF\nRUN true\n";
        let df = parse("Dockerfile", text).unwrap();
        let runs = &df.stages[0].instructions;
        assert_eq!(runs.len(), 2, "the body is not an instruction");
        assert_eq!(runs[0].kind.text_command(), "echo start > /x &&     cat <<EOF >> /x\ncontent\nEOF");
        assert_eq!(only("FROM a\nRUN \\\n  <<EOF\necho hi\nEOF\n").text_command(), "echo hi\n");
        // A comment line inside the continuation is skipped, as anywhere.
        let text = "FROM a\nRUN true \\\n# note\n  && cat <<EOF\nbody\nEOF\n";
        assert_eq!(only(text).text_command(), "true   && cat <<EOF\nbody\nEOF");
    }

    #[test]
    fn only_a_whole_shell_word_starts_a_heredoc() {
        for text in ["RUN echo $((1<<2))", "RUN echo \"usage: cat <<EOF\"", "RUN echo 'a <<B'", "RUN cat<<EOF"] {
            assert_eq!(heredoc_markers(text), [], "{text}");
        }
        assert_eq!(heredoc_markers("RUN cat <<EOF > /f"), [("EOF".to_owned(), false)]);
        assert_eq!(heredoc_markers("RUN 3<<-\"END\" x <<'B'"), [("END".to_owned(), true), ("B".to_owned(), false)]);
        let Kind::Run(run) = only("FROM a\nRUN echo $((1<<2)) \"<<X\"\nRUN true\n") else { panic!() };
        assert!(run.script.is_none());
    }

    #[test]
    fn a_run_heredoc_with_a_shebang_is_a_script_run_as_a_file() {
        let Kind::Run(run) = only("FROM a\nRUN <<-PY\n\t#!/usr/bin/env python3\n\tprint(1)\n\tPY\n") else { panic!() };
        assert_eq!(run.command, CommandForm::Shell("/dev/pipes/PY".into()));
        let script = run.script.expect("a script");
        assert_eq!((script.name.as_str(), script.content.as_str()), ("PY", "#!/usr/bin/env python3\nprint(1)\n"));
        // Without a shebang, or with a command before the heredoc, the shell runs it as before.
        for text in ["FROM a\nRUN <<EOF\necho hi\nEOF\n", "FROM a\nRUN python3 <<EOF\n#!/x\nEOF\n"] {
            let Kind::Run(run) = only(text) else { panic!() };
            assert!(run.script.is_none(), "{text}");
        }
    }

    #[test]
    fn healthcheck_durations_under_a_millisecond_are_refused() {
        let e = err("FROM a\nHEALTHCHECK --interval=500us CMD true\n");
        assert!(e.starts_with("Dockerfile:2:24: --interval \"500us\" cannot be less than 1ms"), "{e}");
        assert!(err("FROM a\nHEALTHCHECK --start-period=0.5ms CMD true\n").contains("cannot be less than 1ms"));
        for ok in ["--interval=0s", "--timeout=1ms", "--start-interval=2s"] {
            assert!(matches!(only(&format!("FROM a\nHEALTHCHECK {ok} CMD true\n")), Kind::Healthcheck(Some(_))));
        }
    }

    #[test]
    fn empty_healthcheck_commands_are_refused() {
        assert!(err("FROM a\nHEALTHCHECK CMD \\\n\n").starts_with("Dockerfile:2:13: HEALTHCHECK CMD needs a command"));
        assert!(err("FROM a\nHEALTHCHECK CMD []\n").starts_with("Dockerfile:2:"));
        assert!(matches!(only("FROM a\nHEALTHCHECK NONE\n"), Kind::Healthcheck(None)));
    }

    #[test]
    fn env_and_label_syntax_is_checked_at_parse_time_only() {
        assert!(err("FROM a\nENV A=1 B\n").starts_with("Dockerfile:2:9: ENV: Syntax error - can't find = in \"B\""));
        assert!(err("FROM a\nLABEL =x\n").starts_with("Dockerfile:2:7: LABEL: names can not be blank"));
        // Values depend on the build's variables, and quoting is the lexer's: both judged when expanded.
        assert!(matches!(only("FROM a\nENV A=${UNSET:?required}\n"), Kind::Env(_)));
        assert!(matches!(only("FROM a\nENV name='a\\'b'\n"), Kind::Env(_)));
        assert!(matches!(only("FROM a\nENV A value with spaces\n"), Kind::Env(_)));
    }

    #[test]
    fn exclude_patterns_with_variables_wait_for_the_build() {
        assert!(matches!(only("FROM a\nCOPY --exclude=$P[ . /x\n"), Kind::Copy(_)));
        assert!(matches!(only("FROM a\nCOPY --exclude=\"*.md\" . /x\n"), Kind::Copy(_)));
        assert!(err("FROM a\nADD --exclude=a[ . /x\n").starts_with("Dockerfile:2:15: --exclude: invalid pattern"));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let df = parse("Dockerfile", "\u{feff}FROM a\nRUN x\n").unwrap();
        assert_eq!(df.stages[0].instructions[0].span.start, 7);
        assert!(err("\u{feff}FROM a\nRUNN x\n").starts_with("Dockerfile:2:1:"));
    }

    impl Kind {
        fn text_command(&self) -> String {
            match self {
                Kind::Run(Run { command: CommandForm::Shell(s), .. }) => s.clone(),
                other => panic!("{other:?}"),
            }
        }
    }
}
