//! Parsing a Go text/template: the source is cut into text and actions (`{{ }}`, with the
//! `{{-` and `-}}` trim markers and `{{/* */}}` comments), each action into tokens, and the
//! actions nest into a tree by their `if`, `range`, `with`, `else` and `end` keywords.

use anyhow::{anyhow, bail, Result};

/// Where an action starts in the template (1-based), for error messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A piece of a parsed template.
#[derive(Debug)]
pub enum Node {
    Text(String),
    /// `{{pipeline}}`: printed, unless it only declares variables.
    Action(Pipe),
    /// `{{if}}` or `{{with}}` (`with: true`): branches tried in order, then the `else` part.
    If {
        with: bool,
        branches: Vec<(Pipe, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    /// `{{range}}`: the body once per element, or the `else` part when there is none.
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// A pipeline: optional variable declarations, then commands joined by `|`.
#[derive(Debug)]
pub struct Pipe {
    pub pos: Pos,
    /// The action's text, as the user wrote it, for error messages.
    pub text: String,
    /// `$x :=`, `$i, $v :=` (names without `$`), or `$x =` when `assign`.
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Vec<Arg>>,
}

/// One operand of a command.
#[derive(Debug)]
pub enum Arg {
    /// `.`
    Dot,
    /// `.A.B`: fields of dot.
    Field(Vec<String>),
    /// `$x.A`: a variable (`$` alone is the data) and fields of it.
    Var(String, Vec<String>),
    /// A function's name.
    Func(String),
    /// A constant: string, number, `true`, `false`, `nil`.
    Const(serde_json::Value),
    /// `(pipeline).A`: a parenthesised pipeline and fields of its value.
    Sub(Box<Pipe>, Vec<String>),
}

/// Parses a whole template.
pub fn parse(src: &str) -> Result<Vec<Node>> {
    let mut tree = Tree { items: items(src)?.into_iter() };
    let (nodes, end) = tree.list()?;
    match end {
        None => Ok(nodes),
        Some(end) => bail!("{}: unexpected {{{{{}}}}}", end.pos, end.keyword),
    }
}

/// Text, or an action's inside (trim markers removed) and where it starts.
enum Item {
    Text(String),
    Action(String, Pos),
}

/// Cuts the source into text and actions, applying the trim markers.
fn items(src: &str) -> Result<Vec<Item>> {
    let mut out = vec![];
    let mut rest = 0;
    let mut trim_next = false;
    while let Some(found) = src[rest..].find("{{") {
        let open = rest + found;
        let pos = pos_of(src, open);
        let mut text = &src[rest..open];
        if trim_next {
            text = text.trim_start();
        }
        let mut body_start = open + 2;
        if marker(&src[body_start..]) {
            text = text.trim_end();
            body_start += 2;
        }
        out.push(Item::Text(text.to_owned()));
        let close = action_end(src, body_start).ok_or_else(|| anyhow!("{pos}: unclosed action"))?;
        let mut body = &src[body_start..close];
        trim_next = body.len() >= 2 && body.ends_with('-') && body[..body.len() - 1].ends_with(char::is_whitespace);
        if trim_next {
            body = &body[..body.len() - 1];
        }
        let body = body.trim();
        if let Some(comment) = body.strip_prefix("/*") {
            if !comment.ends_with("*/") {
                bail!("{pos}: unclosed comment");
            }
        } else {
            out.push(Item::Action(body.to_owned(), pos));
        }
        rest = close + 2;
    }
    let mut text = &src[rest..];
    if trim_next {
        text = text.trim_start();
    }
    out.push(Item::Text(text.to_owned()));
    Ok(out)
}

/// Whether an action's inside starts with the left trim marker: `-` and a space.
fn marker(s: &str) -> bool {
    let mut c = s.chars();
    c.next() == Some('-') && c.next().is_some_and(char::is_whitespace)
}

/// Where the `}}` closing the action that starts at `from` is, outside quotes and comments.
fn action_end(src: &str, from: usize) -> Option<usize> {
    let bytes = src.as_bytes();
    if src[from..].trim_start().starts_with("/*") {
        let end = from + src[from..].find("*/")? + 2;
        return Some(end + src[end..].find("}}")?);
    }
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            q @ (b'"' | b'`' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += if bytes[i] == b'\\' && q != b'`' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The line and column of byte `at` in `src`.
fn pos_of(src: &str, at: usize) -> Pos {
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, col }
}

/// An `{{else ...}}` or `{{end}}` that closes a list, with what follows `else`.
struct End {
    keyword: &'static str,
    rest: Vec<Tok>,
    text: String,
    pos: Pos,
}

/// Nests the items into nodes.
struct Tree {
    items: std::vec::IntoIter<Item>,
}

impl Tree {
    /// Nodes up to the `{{else}}` or `{{end}}` that closes them (None at the template's end).
    fn list(&mut self) -> Result<(Vec<Node>, Option<End>)> {
        let mut nodes = vec![];
        while let Some(item) = self.items.next() {
            let (body, pos) = match item {
                Item::Text(t) if t.is_empty() => continue,
                Item::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Item::Action(body, pos) => (body, pos),
            };
            let toks = lex(&body, pos)?;
            let keyword = match toks.first() {
                Some(Tok::Ident(k)) => k.clone(),
                _ => String::new(),
            };
            // What follows the keyword, without the space after it.
            let rest = || toks.iter().skip(1).skip_while(|t| **t == Tok::Space).cloned().collect::<Vec<_>>();
            match keyword.as_str() {
                "end" | "else" => {
                    let keyword = if keyword == "end" { "end" } else { "else" };
                    return Ok((nodes, Some(End { keyword, rest: rest(), text: body, pos })));
                }
                "if" | "with" => nodes.push(self.branches(keyword == "with", rest(), body, pos)?),
                "range" => nodes.push(self.range(rest(), body, pos)?),
                "define" | "template" | "block" | "break" | "continue" => {
                    bail!("{pos}: {{{{{keyword}}}}} is not supported in --format")
                }
                _ => nodes.push(Node::Action(pipeline(toks, body, pos)?)),
            }
        }
        Ok((nodes, None))
    }

    /// The rest of an `if` or `with`: its branches (`else if`, `else with`) and `else` part.
    fn branches(&mut self, with: bool, toks: Vec<Tok>, text: String, pos: Pos) -> Result<Node> {
        let keyword = if with { "with" } else { "if" };
        let mut branches = vec![(pipeline(toks, text, pos)?, vec![])];
        loop {
            let (body, end) = self.list()?;
            branches.last_mut().expect("one branch at least").1 = body;
            let end = end.ok_or_else(|| anyhow!("{pos}: {{{{{keyword}}}}} has no {{{{end}}}}"))?;
            if end.keyword == "end" {
                return Ok(Node::If { with, branches, otherwise: vec![] });
            }
            let mut rest = end.rest;
            match rest.first() {
                Some(Tok::Ident(k)) if k == keyword => {
                    rest.remove(0);
                    branches.push((pipeline(rest, end.text, end.pos)?, vec![]));
                }
                Some(_) => bail!("{}: expected {{{{else}}}} or {{{{else {keyword} ...}}}}", end.pos),
                None => {
                    let otherwise = self.closing(keyword, pos)?;
                    return Ok(Node::If { with, branches, otherwise });
                }
            }
        }
    }

    /// The rest of a `range`: its body and `else` part.
    fn range(&mut self, toks: Vec<Tok>, text: String, pos: Pos) -> Result<Node> {
        let pipe = pipeline(toks, text, pos)?;
        if pipe.assign || pipe.decl.len() > 2 {
            bail!("{pos}: range takes `$v :=` or `$i, $v :=`");
        }
        let (body, end) = self.list()?;
        let end = end.ok_or_else(|| anyhow!("{pos}: {{{{range}}}} has no {{{{end}}}}"))?;
        let otherwise = match end.keyword {
            "end" => vec![],
            _ if !end.rest.is_empty() => bail!("{}: {{{{range}}}} takes a plain {{{{else}}}}", end.pos),
            _ => self.closing("range", pos)?,
        };
        Ok(Node::Range { pipe, body, otherwise })
    }

    /// An `else` part, which must end with `{{end}}`.
    fn closing(&mut self, keyword: &str, pos: Pos) -> Result<Vec<Node>> {
        match self.list()? {
            (nodes, Some(End { keyword: "end", .. })) => Ok(nodes),
            (_, Some(end)) => bail!("{}: a second {{{{else}}}} in {{{{{keyword}}}}}", end.pos),
            (_, None) => bail!("{pos}: {{{{{keyword}}}}} has no {{{{end}}}}"),
        }
    }
}

/// A token of an action.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Space,
    Dot,
    /// `.Name` (without the dot).
    Field(String),
    /// `$name` (without the `$`; empty for `$`).
    Var(String),
    Ident(String),
    Const(serde_json::Value),
    Pipe,
    Open,
    Close,
    Comma,
    Declare,
    Assign,
}

/// Cuts an action into tokens.
fn lex(s: &str, pos: Pos) -> Result<Vec<Tok>> {
    let mut toks = vec![];
    let mut chars = s.char_indices().peekable();
    let ident =
        |from: usize| s[from..].find(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(s.len(), |n| from + n);
    while let Some((i, c)) = chars.next() {
        let mut skip_to = None;
        match c {
            c if c.is_whitespace() => {
                if toks.last() != Some(&Tok::Space) {
                    toks.push(Tok::Space);
                }
            }
            '.' if s[i + 1..].starts_with(|c: char| c.is_alphabetic() || c == '_') => {
                let end = ident(i + 1);
                toks.push(Tok::Field(s[i + 1..end].to_owned()));
                skip_to = Some(end);
            }
            '.' => toks.push(Tok::Dot),
            '$' => {
                let end = ident(i + 1);
                toks.push(Tok::Var(s[i + 1..end].to_owned()));
                skip_to = Some(end);
            }
            '"' | '`' => {
                let (value, end) = string(s, i).ok_or_else(|| anyhow!("{pos}: unterminated string in {s:?}"))?;
                toks.push(Tok::Const(value.into()));
                skip_to = Some(end);
            }
            '0'..='9' | '-' | '+' => {
                let end =
                    s[i + 1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).map_or(s.len(), |n| i + 1 + n);
                toks.push(Tok::Const(number(&s[i..end]).ok_or_else(|| anyhow!("{pos}: bad number {:?}", &s[i..end]))?));
                skip_to = Some(end);
            }
            c if c.is_alphabetic() || c == '_' => {
                let end = ident(i);
                toks.push(match &s[i..end] {
                    "true" => Tok::Const(true.into()),
                    "false" => Tok::Const(false.into()),
                    "nil" => Tok::Const(serde_json::Value::Null),
                    word => Tok::Ident(word.to_owned()),
                });
                skip_to = Some(end);
            }
            '|' => toks.push(Tok::Pipe),
            '(' => toks.push(Tok::Open),
            ')' => toks.push(Tok::Close),
            ',' => toks.push(Tok::Comma),
            ':' if s[i + 1..].starts_with('=') => {
                toks.push(Tok::Declare);
                chars.next();
            }
            '=' => toks.push(Tok::Assign),
            other => bail!("{pos}: unexpected {other:?} in {{{{{s}}}}}"),
        }
        if let Some(end) = skip_to {
            while chars.peek().is_some_and(|(j, _)| *j < end) {
                chars.next();
            }
        }
    }
    Ok(toks)
}

/// A quoted string at `at` (Go's `"..."` with escapes, or raw `` `...` ``), and where it ends.
fn string(s: &str, at: usize) -> Option<(String, usize)> {
    let quote = s[at..].chars().next()?;
    let mut out = String::new();
    let mut chars = s[at + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => return Some((out, at + 1 + i + 1)),
            '\\' if quote == '"' => out.push(match chars.next()?.1 {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                other => other,
            }),
            c => out.push(c),
        }
    }
    None
}

/// A number constant: an integer (decimal or 0x hex) or a float.
fn number(s: &str) -> Option<serde_json::Value> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let int = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => digits.parse::<i64>().ok(),
    };
    match int {
        Some(n) => Some(if neg { -n } else { n }.into()),
        None => serde_json::Number::from_f64(s.parse::<f64>().ok()?).map(serde_json::Value::Number),
    }
}

/// Parses an action's tokens as a pipeline.
fn pipeline(toks: Vec<Tok>, text: String, pos: Pos) -> Result<Pipe> {
    let mut p = Parser { toks, at: 0, pos, text };
    let pipe = p.pipe()?;
    p.space();
    match p.toks.get(p.at) {
        None => Ok(pipe),
        Some(t) => bail!("{pos}: unexpected {t:?} in {{{{{}}}}}", p.text),
    }
}

/// Reads tokens into a pipeline.
struct Parser {
    toks: Vec<Tok>,
    at: usize,
    pos: Pos,
    text: String,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn space(&mut self) {
        while self.peek() == Some(&Tok::Space) {
            self.at += 1;
        }
    }

    fn error(&self, what: &str) -> anyhow::Error {
        anyhow!("{}: {what} in {{{{{}}}}}", self.pos, self.text)
    }

    /// `[$a[, $b] :=|=] command | command ...`
    fn pipe(&mut self) -> Result<Pipe> {
        let (decl, assign) = self.declarations();
        let mut cmds = vec![];
        loop {
            let cmd = self.command()?;
            if cmd.is_empty() {
                return Err(self.error("missing command"));
            }
            cmds.push(cmd);
            self.space();
            if self.peek() != Some(&Tok::Pipe) {
                break;
            }
            self.at += 1;
        }
        Ok(Pipe { pos: self.pos, text: self.text.clone(), decl, assign, cmds })
    }

    /// The variables a pipeline declares or assigns, if it starts with them.
    fn declarations(&mut self) -> (Vec<String>, bool) {
        let start = self.at;
        let mut names = vec![];
        loop {
            self.space();
            let Some(Tok::Var(name)) = self.peek().cloned() else { break };
            self.at += 1;
            names.push(name);
            self.space();
            match self.peek() {
                Some(Tok::Comma) => self.at += 1,
                Some(Tok::Declare | Tok::Assign) => {
                    let assign = self.peek() == Some(&Tok::Assign);
                    self.at += 1;
                    return (names, assign);
                }
                _ => break,
            }
        }
        self.at = start;
        (vec![], false)
    }

    /// Operands up to a `|`, a `)` or the end.
    fn command(&mut self) -> Result<Vec<Arg>> {
        let mut args = vec![];
        loop {
            self.space();
            match self.peek() {
                None | Some(Tok::Pipe | Tok::Close) => return Ok(args),
                _ => args.push(self.operand()?),
            }
        }
    }

    /// A term and the `.Field`s that follow it without a space.
    fn operand(&mut self) -> Result<Arg> {
        let tok = self.peek().cloned().ok_or_else(|| self.error("missing operand"))?;
        self.at += 1;
        let mut arg = match tok {
            Tok::Dot => Arg::Dot,
            Tok::Field(name) => Arg::Field(vec![name]),
            Tok::Var(name) => Arg::Var(name, vec![]),
            Tok::Ident(name) => Arg::Func(name),
            Tok::Const(v) => Arg::Const(v),
            Tok::Open => {
                let inner = self.pipe()?;
                self.space();
                if self.peek() != Some(&Tok::Close) {
                    return Err(self.error("unclosed ("));
                }
                self.at += 1;
                Arg::Sub(Box::new(inner), vec![])
            }
            other => return Err(self.error(&format!("unexpected {other:?}"))),
        };
        while let Some(Tok::Field(name)) = self.peek().cloned() {
            self.at += 1;
            match &mut arg {
                Arg::Field(chain) | Arg::Var(_, chain) | Arg::Sub(_, chain) => chain.push(name),
                _ => return Err(self.error(&format!("unexpected .{name}"))),
            }
        }
        Ok(arg)
    }
}
