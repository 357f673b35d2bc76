//! Dockerfile word expansion: `$var` and `${var...}` substitution, quote removal and escapes for the instructions
//! that expand variables (FROM, ARG, ENV, LABEL, COPY, ADD, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, flags).
//! It follows the Dockerfile reference's "Environment replacement" rules as BuildKit's shell lexer applies them.

/// Why a word could not be expanded; `offset` is the byte offset in the input word where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    /// Human-readable description, worded like BuildKit's so users recognise it.
    pub message: String,
    /// Byte offset in the input where the offending construct starts, so callers can point at it.
    pub offset: usize,
}

impl ExpandError {
    fn new(message: impl Into<String>, offset: usize) -> Self {
        ExpandError { message: message.into(), offset }
    }

    fn shifted(mut self, by: usize) -> Self {
        self.offset += by;
        self
    }
}

/// Expands one word: variables replaced, quotes removed, escapes applied. `escape` is the Dockerfile escape
/// character (backslash or backtick). `lookup` returns a variable's value, None when unset.
pub fn expand_word(input: &str, escape: char, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    Lexer::new(input, escape, lookup, None).run().map(|(word, _)| word)
}

/// Same, but also reports the names of variables that were referenced (set or not), for build-arg usage tracking.
///
/// Names are appended in the order they are looked up, skipping names already in `used`.
pub fn expand_word_tracking(
    input: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
    used: &mut Vec<String>,
) -> Result<String, ExpandError> {
    Lexer::new(input, escape, lookup, Some(used)).run().map(|(word, _)| word)
}

/// Expands and splits into words on unquoted whitespace (after expansion, like BuildKit's ProcessWords:
/// whitespace produced by an unquoted variable splits words; quoted text stays one word).
pub fn expand_words(
    input: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ExpandError> {
    Lexer::new(input, escape, lookup, None).run().map(|(_, words)| words)
}

/// Splits raw instruction text into words on unquoted, unescaped whitespace WITHOUT expanding or removing quotes,
/// returning each word with its byte offset in `input`. Used to split `ENV a=1 b="x y"` and `LABEL` lists before
/// expansion.
///
/// Escapes stay in the word together with the character they escape; an escape character at the very end of the
/// input is dropped. An unterminated quote is an error at the opening quote.
pub fn split_raw(input: &str, escape: char) -> Result<Vec<(String, usize)>, ExpandError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut start = 0;
    let mut quote: Option<(char, usize)> = None;
    let mut chars = input.char_indices();
    while let Some((at, ch)) = chars.next() {
        if let Some((open, _)) = quote {
            if ch == escape && open != '\'' {
                if let Some((_, next)) = chars.next() {
                    word.push(ch);
                    word.push(next);
                }
                continue;
            }
            word.push(ch);
            if ch == open {
                quote = None;
            }
            continue;
        }
        if ch.is_whitespace() {
            if !word.is_empty() {
                words.push((std::mem::take(&mut word), start));
            }
            continue;
        }
        if word.is_empty() {
            start = at;
        }
        if ch == escape {
            // An escape keeps the escaped character (even a quote or a blank) in the word, untouched.
            if let Some((_, next)) = chars.next() {
                word.push(ch);
                word.push(next);
            }
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = Some((ch, at));
        }
        word.push(ch);
    }
    if let Some((open, at)) = quote {
        return Err(ExpandError::new(unterminated_quote_message(open), at));
    }
    if !word.is_empty() {
        words.push((word, start));
    }
    Ok(words)
}

/// Parses the argument text of ENV or LABEL into (key, value) pairs, expanded. Supports the `KEY=value ...` form
/// (several pairs; values may be quoted) and the legacy `KEY value with spaces` form (exactly one pair; only when the
/// first word has no '='). Errors: a word without '=' in the pairs form, an empty key, missing value in legacy form.
///
/// Every pair is expanded with the same `lookup`, so a pair does not see variables set earlier in the same
/// instruction (as in BuildKit). Empty input yields no pairs; the caller reports that with the instruction's name.
pub fn key_values(
    input: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ExpandError> {
    let words = split_raw(input, escape)?;
    let Some((first, _)) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        return legacy_key_value(input, escape, lookup).map(|pair| vec![pair]);
    }
    let mut pairs = Vec::with_capacity(words.len());
    for (word, at) in &words {
        let Some(eq) = word.find('=') else {
            return Err(no_equals(word, *at));
        };
        let key = expand_key(&word[..eq], *at, escape, lookup)?;
        let value = expand_word(&word[eq + 1..], escape, lookup).map_err(|e| e.shifted(at + eq + 1))?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Checks the shape of ENV or LABEL arguments without expanding anything, as BuildKit's parser does before any
/// build: a name without a value, a word without '=' in the pairs form and a blank name are errors. Quoting and
/// substitution mistakes are left to [`key_values`], which meets them when the build expands the text.
pub fn check_key_values(input: &str, escape: char) -> Result<(), ExpandError> {
    let Ok(words) = split_raw(input, escape) else {
        return Ok(());
    };
    let Some((first, _)) = words.first() else {
        return Err(ExpandError::new("needs at least one NAME=value", 0));
    };
    if !first.contains('=') {
        let body = input.trim();
        return match body.contains(is_separator) {
            true => Ok(()),
            false => Err(missing_value(body, input.len() - input.trim_start().len())),
        };
    }
    for (word, at) in &words {
        match word.find('=') {
            None => return Err(no_equals(word, *at)),
            Some(0) => return Err(ExpandError::new("names can not be blank", *at)),
            Some(_) => {}
        }
    }
    Ok(())
}

/// BuildKit separates key and value of the legacy form with the regexp `[\t\v\f\r ]+`.
fn is_separator(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn missing_value(body: &str, at: usize) -> ExpandError {
    ExpandError::new(format!("missing value for {body:?}: expected KEY VALUE or KEY=VALUE"), at)
}

fn no_equals(word: &str, at: usize) -> ExpandError {
    ExpandError::new(format!("Syntax error - can't find = in {word:?}. Must be of the form: name=value"), at)
}

/// The legacy `KEY value with spaces` form: the key ends at the first blank, the value is the rest of the text.
fn legacy_key_value(
    input: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, String), ExpandError> {
    let body_start = input.len() - input.trim_start().len();
    let body = input.trim();
    let Some(key_end) = body.find(is_separator) else {
        return Err(missing_value(body, body_start));
    };
    let rest = &body[key_end..];
    let value_start = key_end + (rest.len() - rest.trim_start_matches(is_separator).len());
    let key = expand_key(&body[..key_end], body_start, escape, lookup)?;
    let value = expand_word(&body[value_start..], escape, lookup).map_err(|e| e.shifted(body_start + value_start))?;
    Ok((key, value))
}

/// Expands a raw key found at `at`, rejecting keys that are blank before or after expansion.
fn expand_key(
    raw: &str,
    at: usize,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let blank = || ExpandError::new("names can not be blank", at);
    if raw.is_empty() {
        return Err(blank());
    }
    let key = expand_word(raw, escape, lookup).map_err(|e| e.shifted(at))?;
    if key.is_empty() {
        return Err(blank());
    }
    Ok(key)
}

fn unterminated_quote_message(quote: char) -> &'static str {
    if quote == '\'' {
        "unexpected end of statement while looking for matching single-quote"
    } else {
        "unexpected end of statement while looking for matching double-quote"
    }
}

const MISSING_BRACE: &str = "syntax error: missing '}'";

/// Words being collected while a word is expanded, split the way BuildKit's ProcessWords splits them.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
}

impl Words {
    /// Adds text that splits on whitespace (unquoted literal text and unquoted expansions).
    fn push_splitting(&mut self, text: &str) {
        text.chars().for_each(|ch| self.push_splitting_char(ch));
    }

    fn push_splitting_char(&mut self, ch: char) {
        if !ch.is_whitespace() {
            self.current.push(ch);
        } else if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    /// Adds text that never splits (quoted text, escaped characters).
    fn push_raw(&mut self, text: &str) {
        self.current.push_str(text);
    }

    fn push_raw_char(&mut self, ch: char) {
        self.current.push(ch);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// One pass over a word, in the shape of BuildKit's shell lexer: a cursor with one character of lookahead.
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    used: Option<&'a mut Vec<String>>,
}

impl<'a> Lexer<'a> {
    fn new(
        src: &'a str,
        escape: char,
        lookup: &'a dyn Fn(&str) -> Option<String>,
        used: Option<&'a mut Vec<String>>,
    ) -> Self {
        Lexer { src, pos: 0, escape, lookup, used }
    }

    fn run(mut self) -> Result<(String, Vec<String>), ExpandError> {
        self.process_until(None, false)
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Looks a variable up, recording its name for build-arg usage tracking.
    fn get_env(&mut self, name: &str) -> Option<String> {
        if let Some(used) = self.used.as_deref_mut() {
            if !name.is_empty() && !used.iter().any(|n| n == name) {
                used.push(name.to_string());
            }
        }
        (self.lookup)(name)
    }

    /// Processes text up to `stop` (consumed) or the end of input when `stop` is None. With `raw_escapes` the
    /// escape character is kept in the output (pattern text of `${v#...}` and `${v/.../...}` needs it).
    fn process_until(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.bump();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    words.push_splitting(&value);
                    result.push_str(&value);
                }
                '\'' => {
                    let text = self.process_single_quote()?;
                    words.push_raw(&text);
                    result.push_str(&text);
                }
                '"' => {
                    let text = self.process_double_quote(raw_escapes)?;
                    words.push_raw(&text);
                    result.push_str(&text);
                }
                _ => {
                    self.bump();
                    if ch != self.escape {
                        words.push_splitting_char(ch);
                        result.push(ch);
                        continue;
                    }
                    if raw_escapes {
                        words.push_raw_char(ch);
                        result.push(ch);
                    }
                    // An escape at the very end of the input is dropped.
                    let Some(escaped) = self.bump() else { break };
                    words.push_raw_char(escaped);
                    result.push(escaped);
                }
            }
        }
        match stop {
            // Callers replace this with a message about the construct they were reading.
            Some(stop) => Err(ExpandError::new(
                format!("unexpected end of statement while looking for matching {stop}"),
                self.pos,
            )),
            None => Ok((result, words.finish())),
        }
    }

    /// Single quotes: everything up to the next single quote is literal; nothing can be escaped.
    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        let open = self.pos;
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err(ExpandError::new(unterminated_quote_message('\''), open)),
                Some('\'') => return Ok(text),
                Some(ch) => text.push(ch),
            }
        }
    }

    /// Double quotes: variables expand; the escape character escapes `"`, `$` and itself and is literal otherwise.
    fn process_double_quote(&mut self, raw_escapes: bool) -> Result<String, ExpandError> {
        let open = self.pos;
        self.bump();
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return Err(ExpandError::new(unterminated_quote_message('"'), open)),
                Some('"') => {
                    self.bump();
                    return Ok(text);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    text.push_str(&value);
                }
                Some(ch) => {
                    self.bump();
                    if ch != self.escape {
                        text.push(ch);
                        continue;
                    }
                    if raw_escapes {
                        text.push(ch);
                    }
                    match self.peek() {
                        // A trailing escape is dropped; the missing closing quote is reported next.
                        None => {}
                        Some(next) if next == '"' || next == '$' || next == self.escape => {
                            self.bump();
                            text.push(next);
                        }
                        Some(_) => text.push(ch),
                    }
                }
            }
        }
    }

    /// Reads a variable name after `$` or `${`: a run of digits, one special parameter character, or letters,
    /// digits and underscores. Returns an empty name when none follows.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_name_digit(ch) {
                while let Some(digit) = self.peek().filter(|&c| is_name_digit(c)) {
                    self.bump();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_parameter(ch) {
                self.bump();
                return ch.to_string();
            }
            if !is_name_letter(ch) && !is_name_digit(ch) && ch != '_' {
                break;
            }
            self.bump();
            name.push(ch);
        }
        name
    }

    /// Expands `$name` or `${...}` at the cursor (which is on the `$`).
    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        let dollar = self.pos;
        self.bump();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.get_env(&name).unwrap_or_default());
        }
        self.bump();
        match self.peek() {
            None => return Err(ExpandError::new(MISSING_BRACE, dollar)),
            Some('{' | '}' | ':') => return Err(ExpandError::new("syntax error: bad substitution", dollar)),
            Some(_) => {}
        }
        let name = self.process_name();
        let modifier_at = self.pos;
        let unsupported = |modifier: &str| {
            ExpandError::new(format!("unsupported modifier ({modifier}) in substitution"), modifier_at)
        };
        let (null_is_unset, op) = match self.bump() {
            None => return Err(ExpandError::new(MISSING_BRACE, dollar)),
            Some('}') => return Ok(self.get_env(&name).unwrap_or_default()),
            Some('/') => return self.process_replace(&name, dollar),
            Some(':') => match self.bump() {
                None => return Err(ExpandError::new(MISSING_BRACE, dollar)),
                Some(op) => (true, op),
            },
            Some(op @ ('+' | '-' | '?' | '#' | '%')) => (false, op),
            Some(op) => return Err(unsupported(&op.to_string())),
        };
        let word = self.read_until('}', op == '#' || op == '%', MISSING_BRACE, dollar)?;
        let value = self.get_env(&name);
        let is_null = |v: &Option<String>| v.as_deref().is_none_or(|s| null_is_unset && s.is_empty());
        match op {
            '-' if is_null(&value) => Ok(word),
            '-' => Ok(value.unwrap_or_default()),
            '+' if is_null(&value) => Ok(String::new()),
            '+' => Ok(word),
            '?' => match value {
                Some(v) if !(null_is_unset && v.is_empty()) => Ok(v),
                _ => {
                    let message = match (&value, word.is_empty()) {
                        (_, false) => word,
                        (None, true) => "is not allowed to be unset".to_string(),
                        (Some(_), true) => "is not allowed to be empty".to_string(),
                    };
                    Err(ExpandError::new(format!("{name}: {message}"), dollar))
                }
            },
            '#' | '%' => {
                // A doubled operator (`##`, `%%`) asks for the longest match instead of the shortest.
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let value = value.unwrap_or_default();
                let trimmed =
                    if op == '#' { trim_prefix(pattern, &value, greedy) } else { trim_suffix(pattern, &value, greedy) };
                trimmed.map_err(|e| invalid_pattern(pattern, &e, dollar))
            }
            _ => {
                let modifier = if null_is_unset { format!(":{op}") } else { op.to_string() };
                Err(unsupported(&modifier))
            }
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`; the cursor is after the first `/`.
    fn process_replace(&mut self, name: &str, dollar: usize) -> Result<String, ExpandError> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.bump();
        }
        let pattern = self.read_until('/', true, "syntax error: missing '/' in ${}", dollar)?;
        let replacement = self.read_until('}', true, MISSING_BRACE, dollar)?;
        let value = self.get_env(name).unwrap_or_default();
        let tokens = parse_pattern(&pattern).map_err(|e| invalid_pattern(&pattern, &e, dollar))?;
        let text: Vec<char> = value.chars().collect();
        let ends = match_ends(&tokens, &text, true);
        if replace_all {
            return Ok(replace_every(&text, &ends, &replacement));
        }
        match ends.iter().enumerate().find_map(|(start, end)| end.map(|end| (start, end))) {
            Some((start, end)) => {
                let mut out: String = text[..start].iter().collect();
                out.push_str(&replacement);
                out.extend(&text[end..]);
                Ok(out)
            }
            None => Ok(value),
        }
    }

    /// Reads a nested word up to `stop`; running out of input is reported as `missing` at the `${`.
    fn read_until(&mut self, stop: char, raw: bool, missing: &str, dollar: usize) -> Result<String, ExpandError> {
        match self.process_until(Some(stop), raw) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.at_end() => Err(ExpandError::new(missing, dollar)),
            Err(e) => Err(e),
        }
    }
}

fn invalid_pattern(pattern: &str, reason: &str, dollar: usize) -> ExpandError {
    ExpandError::new(format!("invalid pattern ({pattern}) in substitution: {reason}"), dollar)
}

/// Name letters: Unicode letters, as Go's `unicode.IsLetter` (approximated with Rust's Alphabetic property).
fn is_name_letter(ch: char) -> bool {
    ch.is_alphabetic()
}

/// Name digits: Go's `unicode.IsDigit` is decimal digits only, so Latin-1 superscripts and fractions are not digits.
fn is_name_digit(ch: char) -> bool {
    if ch < '\u{100}' {
        ch.is_ascii_digit()
    } else {
        ch.is_numeric()
    }
}

/// POSIX special parameters (`$@`, `$*`, `$#`, ...), read as one-character names.
fn is_special_parameter(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// One element of a substitution pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: any one character except a newline.
    AnyOne,
    /// `*`: any run of characters without a newline.
    AnyRun,
}

/// Parses a substitution pattern: `*` and `?` are wildcards, `\*`, `\?` and `\\` are literal, `\}` and `\/` drop the
/// backslash; any other backslash sequence is an error. Brackets are literal, as in BuildKit.
fn parse_pattern(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        let token = match ch {
            '*' => Token::AnyRun,
            '?' => Token::AnyOne,
            '\\' => {
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(lit @ ('*' | '?' | '\\')) => Token::Literal(lit),
                    other => return Err(format!("invalid escape '\\{}'", other.unwrap_or('\u{fffd}'))),
                }
            }
            lit => Token::Literal(lit),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

/// For every start position in `text`, where the match anchored there ends, or None when there is none.
///
/// Among the possible matches it picks the one a backtracking matcher finds first with greedy (`greedy`) or lazy
/// stars, which is what BuildKit's translation of the pattern into a Go regexp yields: the longest or the shortest.
fn match_ends(tokens: &[Token], text: &[char], greedy: bool) -> Vec<Option<usize>> {
    // next[pos] holds the answer for tokens[i + 1..] while row i is computed, right to left.
    let mut next: Vec<Option<usize>> = (0..=text.len()).map(Some).collect();
    let mut row = vec![None; text.len() + 1];
    for token in tokens.iter().rev() {
        for pos in (0..=text.len()).rev() {
            let ch = text.get(pos).copied();
            row[pos] = match *token {
                Token::Literal(lit) if ch == Some(lit) => next[pos + 1],
                Token::AnyOne if ch.is_some_and(|c| c != '\n') => next[pos + 1],
                Token::Literal(_) | Token::AnyOne => None,
                Token::AnyRun => {
                    let longer = if ch.is_some_and(|c| c != '\n') { row[pos + 1] } else { None };
                    if greedy {
                        longer.or(next[pos])
                    } else {
                        next[pos].or(longer)
                    }
                }
            };
        }
        std::mem::swap(&mut next, &mut row);
    }
    next
}

/// `${v#pattern}` / `${v##pattern}`: removes the shortest (longest when `greedy`) prefix matching `pattern`.
fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let tokens = parse_pattern(pattern)?;
    let text: Vec<char> = value.chars().collect();
    match match_ends(&tokens, &text, greedy).first().copied().flatten() {
        Some(end) => Ok(text[end..].iter().collect()),
        None => Ok(value.to_string()),
    }
}

/// `${v%pattern}` / `${v%%pattern}`: removes the shortest (longest when `greedy`) suffix matching `pattern`, by
/// trimming the reversed pattern off the reversed value as BuildKit does.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern while keeping each backslash in front of the character it escapes.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1)) {
            ('\\', Some(&escaped)) => {
                out.push(escaped);
                out.push('\\');
                i += 2;
            }
            (ch, _) => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out.iter().rev().collect()
}

/// `${v//pattern/replacement}`: replaces every non-overlapping match, leftmost first, with the iteration rules of
/// Go's `Regexp.ReplaceAllString` (an empty match right after a match is skipped) and its `$` template syntax.
fn replace_every(text: &[char], ends: &[Option<usize>], replacement: &str) -> String {
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((start, end)) = (search..=text.len()).find_map(|s| ends[s].map(|e| (s, e))) else { break };
        out.extend(&text[last_end..start]);
        if end > last_end || start == 0 {
            expand_template(&mut out, replacement, &text[start..end]);
        }
        last_end = end;
        search = if search + 1 > end { search + 1 } else { end };
    }
    out.extend(&text[last_end..]);
    out
}

/// Applies Go's regexp replacement template: `$$` is a dollar, `$0`/`${0}` the whole match, any other well-formed
/// `$name`/`${name}` reference is empty (the pattern has no groups), and a malformed one stays literal.
fn expand_template(out: &mut String, template: &str, matched: &[char]) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let name_len = body.find(|c: char| !is_name_letter(c) && !is_name_digit(c) && c != '_').unwrap_or(body.len());
        let closed = !braced || body[name_len..].starts_with('}');
        if name_len == 0 || !closed {
            out.push('$');
            continue;
        }
        if &body[..name_len] == "0" {
            out.extend(matched);
        }
        rest = &body[name_len + usize::from(braced)..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The variables every table test sees: one set, one set but empty, others unset.
    fn env() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("v", "value"),
            ("empty", ""),
            ("path", "/usr/local/bin/tool.tar.gz"),
            ("spaced", "a b  c"),
            ("x", "x"),
            ("star", "a*b"),
            ("multi", "one\ntwo"),
            ("uni", "héllo wörld"),
            ("héllo", "accented"),
            ("1", "first"),
            ("10", "tenth"),
            ("@", "at"),
            ("dollar", "$0"),
        ])
    }

    fn expand_with(input: &str, escape: char) -> Result<String, ExpandError> {
        let env = env();
        expand_word(input, escape, &|name| env.get(name).map(ToString::to_string))
    }

    fn expand(input: &str) -> Result<String, ExpandError> {
        expand_with(input, '\\')
    }

    fn check(cases: &[(&str, &str)]) {
        for (input, want) in cases {
            assert_eq!(expand(input).as_deref(), Ok(*want), "input {input:?}");
        }
    }

    fn check_error(input: &str, escape: char, message: &str, offset: usize) {
        let err = expand_with(input, escape).expect_err(input);
        assert_eq!(err, ExpandError { message: message.to_string(), offset }, "input {input:?}");
    }

    #[test]
    fn plain_variables() {
        check(&[
            ("$v", "value"),
            ("${v}", "value"),
            ("a$v.b", "avalue.b"),
            ("${v}_x", "value_x"),
            ("$v_x", ""),
            ("$unset", ""),
            ("${unset}", ""),
            ("pre${unset}post", "prepost"),
            ("$v$v", "valuevalue"),
            ("", ""),
            ("plain text", "plain text"),
        ]);
    }

    #[test]
    fn dollar_without_name_is_literal() {
        check(&[("$", "$"), ("a$", "a$"), ("$.", "$."), ("$ x", "$ x"), ("$/", "$/"), ("100$%", "100$%")]);
    }

    #[test]
    fn positional_and_special_parameters() {
        // A leading digit reads all following digits; special parameters are one character; both are looked up.
        check(&[
            ("$1", "first"),
            ("$10", "tenth"),
            ("$1x", "firstx"),
            ("$2", ""),
            ("$@", "at"),
            ("$@v", "atv"),
            ("${@}", "at"),
            ("$#", ""),
            ("${10}", "tenth"),
            ("$0", ""),
        ]);
    }

    #[test]
    fn unicode_names_and_values() {
        check(&[
            ("$héllo", "accented"),
            ("${uni}", "héllo wörld"),
            ("${uni#?}", "éllo wörld"),
            ("${uni%??}", "héllo wör"),
        ]);
    }

    #[test]
    fn default_with_colon() {
        check(&[("${v:-word}", "value"), ("${empty:-word}", "word"), ("${unset:-word}", "word"), ("${unset:-}", "")]);
    }

    #[test]
    fn default_without_colon() {
        check(&[("${v-word}", "value"), ("${empty-word}", ""), ("${unset-word}", "word"), ("${unset-}", "")]);
    }

    #[test]
    fn alternative_with_colon() {
        check(&[("${v:+word}", "word"), ("${empty:+word}", ""), ("${unset:+word}", "")]);
    }

    #[test]
    fn alternative_without_colon() {
        check(&[("${v+word}", "word"), ("${empty+word}", "word"), ("${unset+word}", "")]);
    }

    #[test]
    fn required_with_colon() {
        check(&[("${v:?msg}", "value")]);
        check_error("x${empty:?must be set}", '\\', "empty: must be set", 1);
        check_error("${unset:?must be set}", '\\', "unset: must be set", 0);
        check_error("${empty:?}", '\\', "empty: is not allowed to be empty", 0);
        check_error("${unset:?}", '\\', "unset: is not allowed to be unset", 0);
        check_error("${unset:?need $v}", '\\', "unset: need value", 0);
    }

    #[test]
    fn required_without_colon() {
        check(&[("${v?msg}", "value"), ("${empty?msg}", "")]);
        check_error("ab${unset?gone}", '\\', "unset: gone", 2);
        check_error("${unset?}", '\\', "unset: is not allowed to be unset", 0);
    }

    #[test]
    fn remove_prefix() {
        check(&[
            ("${path#*/}", "usr/local/bin/tool.tar.gz"),
            ("${path##*/}", "tool.tar.gz"),
            ("${path#/usr}", "/local/bin/tool.tar.gz"),
            ("${path#nomatch}", "/usr/local/bin/tool.tar.gz"),
            ("${path#}", "/usr/local/bin/tool.tar.gz"),
            ("${path##}", "/usr/local/bin/tool.tar.gz"),
            ("${path#*}", "/usr/local/bin/tool.tar.gz"),
            ("${path##*}", ""),
            ("${path#?}", "usr/local/bin/tool.tar.gz"),
            ("${path#/???/}", "local/bin/tool.tar.gz"),
            ("${path#$x}", "/usr/local/bin/tool.tar.gz"),
            ("${star#a\\*}", "b"),
            ("${star#a?}", "b"),
            ("${unset#*}", ""),
            ("${empty##*}", ""),
            ("${v:#va}", "lue"),
        ]);
    }

    #[test]
    fn remove_suffix() {
        check(&[
            ("${path%.*}", "/usr/local/bin/tool.tar"),
            ("${path%%.*}", "/usr/local/bin/tool"),
            ("${path%/*}", "/usr/local/bin"),
            ("${path%%/*}", ""),
            ("${path%gz}", "/usr/local/bin/tool.tar."),
            ("${path%nomatch}", "/usr/local/bin/tool.tar.gz"),
            ("${path%}", "/usr/local/bin/tool.tar.gz"),
            ("${path%?}", "/usr/local/bin/tool.tar.g"),
            ("${star%\\*b}", "a"),
            ("${v%%$unset}", "value"),
        ]);
    }

    #[test]
    fn pattern_brackets_are_literal() {
        // BuildKit's patterns have no bracket expressions: `[` and `]` match themselves.
        let env = HashMap::from([("b", "[ab]c"), ("c", "ac")]);
        let lookup = |name: &str| env.get(name).map(ToString::to_string);
        assert_eq!(expand_word("${b#[ab]}", '\\', &lookup).as_deref(), Ok("c"));
        assert_eq!(expand_word("${c#[ab]}", '\\', &lookup).as_deref(), Ok("ac"));
    }

    #[test]
    fn pattern_escapes() {
        // `\}` and `\/` lose their backslash; `\*`, `\?` and `\\` are literal; regex metacharacters are literal.
        let env = HashMap::from([("s", "}x"), ("r", "()[]{}^$.*?|\\x"), ("q", "???y"), ("stars", "xx**")]);
        let lookup = |name: &str| env.get(name).map(ToString::to_string);
        assert_eq!(expand_word("${s#\\}}", '\\', &lookup).as_deref(), Ok("x"));
        assert_eq!(expand_word("${r#()[]{\\}^$.\\*\\?|\\\\}", '\\', &lookup).as_deref(), Ok("x"));
        assert_eq!(expand_word("${q#?\\?}", '\\', &lookup).as_deref(), Ok("?y"));
        assert_eq!(expand_word("${stars%%\\**}", '\\', &lookup).as_deref(), Ok("xx"));
        let err = expand_word("${s#\\x}", '\\', &lookup).expect_err("invalid escape");
        assert_eq!(err.message, "invalid pattern (\\x) in substitution: invalid escape '\\x'");
        assert_eq!(err.offset, 0);
    }

    #[test]
    fn wildcards_do_not_cross_newlines() {
        // The pattern becomes a Go regexp in BuildKit, where `.` never matches a newline.
        check(&[
            ("${multi%%*}", "one\n"),
            ("${multi##*}", "\ntwo"),
            ("${multi#*\n}", "two"),
            ("${multi/e?t/-}", "one\ntwo"),
        ]);
    }

    #[test]
    fn replace_first() {
        check(&[
            ("${path/\\//:}", ":usr/local/bin/tool.tar.gz"),
            ("${path/local/opt}", "/usr/opt/bin/tool.tar.gz"),
            ("${path/l*l/L}", "/usr/L.tar.gz"),
            ("${path/nomatch/x}", "/usr/local/bin/tool.tar.gz"),
            ("${path/.tar.gz/}", "/usr/local/bin/tool"),
            ("${path/o?/0}", "/usr/l0al/bin/tool.tar.gz"),
            ("${v/$x/y}", "value"),
            ("${v/a/$v}", "vvaluelue"),
            ("${unset/a/b}", ""),
            ("${v/$empty/ww}", "wwvalue"),
            ("${v/a/$}", "v$lue"),
        ]);
        // Unlike bash, BuildKit requires the second `/` even when the replacement is empty.
        check_error("${path/.tar.gz}", '\\', "syntax error: missing '/' in ${}", 0);
    }

    #[test]
    fn replace_all() {
        check(&[
            ("${path//\\//:}", ":usr:local:bin:tool.tar.gz"),
            ("${path//./_}", "/usr/local/bin/tool_tar_gz"),
            ("${path//o*l/X}", "/usr/lX.tar.gz"),
            ("${path//o?/0}", "/usr/l0al/bin/t0l.tar.gz"),
            ("${path//o/0}", "/usr/l0cal/bin/t00l.tar.gz"),
            ("${v//z/y}", "value"),
            ("${v///}", "value"),
            ("${unset///}", ""),
            ("${v//$empty/-}", "-v-a-l-u-e-"),
        ]);
    }

    #[test]
    fn replacement_keeps_escapes_and_go_template() {
        // Quirks kept for compatibility: the replacement keeps its escape characters, and `//` runs it through
        // Go's template syntax where `$0` is the match, `$$` a dollar and other references are empty.
        check(&[("${path//\\//\\/}", "\\/usr\\/local\\/bin\\/tool.tar.gz"), ("${v//a/<$dollar>}", "v<a>lue")]);
        check(&[("${v//a/\\$$}", "v\\$lue"), ("${v//l/${dollar}0}", "vaue"), ("${v/a/$dollar}", "v$0lue")]);
    }

    #[test]
    fn nested_words() {
        check(&[
            ("${unset:-${v}}", "value"),
            ("${unset:-${unset2:-deep}}", "deep"),
            ("${unset:-$v-x}", "value-x"),
            ("${v:+${x}${x}}", "xx"),
            ("${unset:-a b}", "a b"),
            ("${unset:-\"quoted }\"}", "quoted }"),
            ("${unset:-'${v}'}", "${v}"),
            ("${unset:-\\}}", "}"),
            ("${unset:-${path##*/}}", "tool.tar.gz"),
            ("${v:+}", ""),
        ]);
    }

    #[test]
    fn single_quotes() {
        check(&[
            ("'$v'", "$v"),
            ("'${v}'", "${v}"),
            ("'a\\b'", "a\\b"),
            ("'a\"b'", "a\"b"),
            ("x'y z'", "xy z"),
            ("''", ""),
            ("'\\'", "\\"),
        ]);
    }

    #[test]
    fn double_quotes() {
        check(&[
            ("\"$v\"", "value"),
            ("\"${v} x\"", "value x"),
            ("\"a'b\"", "a'b"),
            ("\"\\$v\"", "$v"),
            ("\"\\\"\"", "\""),
            ("\"\\\\\"", "\\"),
            ("\"\\x\"", "\\x"),
            ("\"C:\\dir\"", "C:\\dir"),
            ("\"\"", ""),
            ("\"$\"", "$"),
            ("\"${unset:-\"in\"}\"", "in"),
        ]);
    }

    #[test]
    fn mixed_quotes() {
        check(&[
            ("a\"b c\"'d $v'$v", "ab cd $vvalue"),
            ("\"'$v'\"", "'value'"),
            ("'\"$v\"'", "\"$v\""),
            ("--opt=\"$spaced\"", "--opt=a b  c"),
        ]);
    }

    #[test]
    fn backslash_escapes() {
        check(&[
            ("\\$v", "$v"),
            ("\\${v}", "${v}"),
            ("\\\\$v", "\\value"),
            ("\\a\\b", "ab"),
            ("a\\ b", "a b"),
            ("\\'$v\\'", "'value'"),
            ("\\\"", "\""),
            ("trailing\\", "trailing"),
            ("`$v`", "`value`"),
        ]);
    }

    #[test]
    fn backtick_escapes() {
        let cases = [
            ("`$v", "$v"),
            ("C:\\path\\$v", "C:\\path\\value"),
            ("C:\\path\\${v}\\bin", "C:\\path\\value\\bin"),
            ("\"C:\\dir\\\"", "C:\\dir\\"),
            ("\"a`\"b\"", "a\"b"),
            ("\"`$v\"", "$v"),
            ("\"``\"", "`"),
            ("\"`x\"", "`x"),
            ("``", "`"),
            ("`a`b", "ab"),
            ("x`", "x"),
            ("${unset:-C:\\a}", "C:\\a"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_with(input, '`').as_deref(), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn backtick_escape_in_patterns() {
        // Pattern escapes are always backslashes (BuildKit hardcodes them), whatever the escape directive says;
        // the backtick is kept in the pattern as a literal character.
        let env = HashMap::from([("w", "C:\\dir\\*x"), ("t", "`ab")]);
        let lookup = |name: &str| env.get(name).map(ToString::to_string);
        assert_eq!(expand_word("${w%\\*x}", '`', &lookup).as_deref(), Ok("C:\\dir\\"));
        assert_eq!(expand_word("${w%%\\\\*}", '`', &lookup).as_deref(), Ok("C:"));
        assert_eq!(expand_word("${t#`a}", '`', &lookup).as_deref(), Ok("b"));
        let err = expand_word("${w#C:\\dir}", '`', &lookup).expect_err("backslash-d is not a pattern escape");
        assert_eq!(err.message, "invalid pattern (C:\\dir) in substitution: invalid escape '\\d'");
    }

    #[test]
    fn unterminated_quotes() {
        check_error("ab'cd", '\\', "unexpected end of statement while looking for matching single-quote", 2);
        check_error("x\"cd", '\\', "unexpected end of statement while looking for matching double-quote", 1);
        check_error("\"cd\\\"", '\\', "unexpected end of statement while looking for matching double-quote", 0);
        check_error("\"cd\\", '\\', "unexpected end of statement while looking for matching double-quote", 0);
        check_error("ok \"a\" '", '`', "unexpected end of statement while looking for matching single-quote", 7);
    }

    #[test]
    fn unterminated_braces() {
        let missing = "syntax error: missing '}'";
        check_error("${", '\\', missing, 0);
        check_error("ab${v", '\\', missing, 2);
        check_error("${v:", '\\', missing, 0);
        check_error("${v:-word", '\\', missing, 0);
        check_error("${v:}", '\\', missing, 0);
        check_error("x${v:-${unset:-a}", '\\', missing, 1);
        check_error("${v:-\"a}", '\\', missing, 0);
        check_error("${v#\\}", '\\', missing, 0);
        check_error("${v/a", '\\', "syntax error: missing '/' in ${}", 0);
        check_error("${v//}", '\\', "syntax error: missing '/' in ${}", 0);
        check_error("${v/a/b", '\\', missing, 0);
    }

    #[test]
    fn bad_substitutions() {
        let bad = "syntax error: bad substitution";
        check_error("${}", '\\', bad, 0);
        check_error("a ${:-x}", '\\', bad, 2);
        check_error("${{v}}", '\\', bad, 0);
        check_error("${v:x}", '\\', "unsupported modifier (:x) in substitution", 3);
        check_error("${v=x}", '\\', "unsupported modifier (=) in substitution", 3);
        check_error("${v:=x}", '\\', "unsupported modifier (:=) in substitution", 3);
        check_error("${v x}", '\\', "unsupported modifier ( ) in substitution", 3);
        check_error("${v.x}", '\\', "unsupported modifier (.) in substitution", 3);
        check_error("${unset:-${v!}}", '\\', "unsupported modifier (!) in substitution", 12);
    }

    #[test]
    fn nested_errors_keep_their_offset() {
        check_error("${unset:-${u2:?inner}}", '\\', "u2: inner", 9);
        check_error("${unset:-'x}", '\\', "syntax error: missing '}'", 0);
    }

    #[test]
    fn tracking_reports_each_name_once_in_lookup_order() {
        let env = env();
        let lookup = |name: &str| env.get(name).map(ToString::to_string);
        let mut used = vec!["v".to_string()];
        let out = expand_word_tracking("${a:-$b} $c $a $v '$quoted' \\$esc $1", '\\', &lookup, &mut used);
        assert_eq!(out.as_deref(), Ok("   value $quoted $esc first"));
        assert_eq!(used, ["v", "b", "a", "c", "1"]);

        let mut used = Vec::new();
        let out = expand_word_tracking("${v//${x}/y}${unset:+${never}}", '\\', &lookup, &mut used);
        assert_eq!(out.as_deref(), Ok("value"));
        assert_eq!(used, ["x", "v", "never", "unset"]);
    }

    fn words(input: &str) -> Vec<String> {
        let env = env();
        expand_words(input, '\\', &|name| env.get(name).map(ToString::to_string)).expect(input)
    }

    #[test]
    fn expand_words_splits_after_expansion() {
        assert_eq!(words("a b"), ["a", "b"]);
        assert_eq!(words("  a \t b  "), ["a", "b"]);
        assert_eq!(words("$spaced"), ["a", "b", "c"]);
        assert_eq!(words("x$spaced"), ["xa", "b", "c"]);
        assert_eq!(words("\"$spaced\""), ["a b  c"]);
        assert_eq!(words("'a b' c"), ["a b", "c"]);
        assert_eq!(words("a\\ b c"), ["a b", "c"]);
        assert_eq!(words("\"\" a"), ["a"]);
        assert_eq!(words("${unset:-x y}"), ["x", "y"]);
        assert_eq!(words("${unset:-\"x y\"}"), ["x", "y"]);
        assert_eq!(words("$unset"), Vec::<String>::new());
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("p\"q r\"s t"), ["pq rs", "t"]);
    }

    #[test]
    fn expand_words_reports_errors() {
        let err = expand_words("a \"b", '\\', &|_| None).expect_err("unterminated");
        assert_eq!(err.offset, 2);
    }

    fn raw(input: &str, escape: char) -> Vec<(String, usize)> {
        split_raw(input, escape).expect(input)
    }

    fn owned(words: &[(&str, usize)]) -> Vec<(String, usize)> {
        words.iter().map(|(w, at)| (w.to_string(), *at)).collect()
    }

    #[test]
    fn split_raw_keeps_quotes_escapes_and_offsets() {
        assert_eq!(raw("a=1 b=\"x y\"", '\\'), owned(&[("a=1", 0), ("b=\"x y\"", 4)]));
        assert_eq!(raw("  one\ttwo  ", '\\'), owned(&[("one", 2), ("two", 6)]));
        assert_eq!(raw("b=c\\ d e", '\\'), owned(&[("b=c\\ d", 0), ("e", 7)]));
        assert_eq!(raw("'a \" b' \"c ' d\"", '\\'), owned(&[("'a \" b'", 0), ("\"c ' d\"", 8)]));
        assert_eq!(raw("\"a \\\" b\" c", '\\'), owned(&[("\"a \\\" b\"", 0), ("c", 9)]));
        assert_eq!(raw("'a \\' b", '\\'), owned(&[("'a \\'", 0), ("b", 6)]));
        assert_eq!(raw("\\\"a b", '\\'), owned(&[("\\\"a", 0), ("b", 4)]));
        assert_eq!(raw("x=$v y=${a:-b c}", '\\'), owned(&[("x=$v", 0), ("y=${a:-b", 5), ("c}", 14)]));
        assert_eq!(raw("é=ü ö", '\\'), owned(&[("é=ü", 0), ("ö", 6)]));
        assert_eq!(raw("a\\", '\\'), owned(&[("a", 0)]));
        assert_eq!(raw("a \\", '\\'), owned(&[("a", 0)]));
        assert_eq!(raw("", '\\'), owned(&[]));
        assert_eq!(raw("   ", '\\'), owned(&[]));
    }

    #[test]
    fn split_raw_with_backtick_escape() {
        assert_eq!(raw("p=C:\\dir q=a` b", '`'), owned(&[("p=C:\\dir", 0), ("q=a` b", 9)]));
        assert_eq!(raw("\"C:\\\" x", '`'), owned(&[("\"C:\\\"", 0), ("x", 6)]));
    }

    #[test]
    fn split_raw_unterminated_quote() {
        let err = split_raw("a=1 b=\"x y", '\\').expect_err("unterminated");
        assert_eq!(err.offset, 6);
        assert_eq!(err.message, "unexpected end of statement while looking for matching double-quote");
        let err = split_raw("a 'b", '\\').expect_err("unterminated");
        assert_eq!(err.offset, 2);
    }

    fn kv(input: &str) -> Result<Vec<(String, String)>, ExpandError> {
        let env = env();
        key_values(input, '\\', &|name| env.get(name).map(ToString::to_string))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn key_values_pairs_form() {
        assert_eq!(kv("a=\"hello world\" b=c\\ d"), Ok(pairs(&[("a", "hello world"), ("b", "c d")])));
        assert_eq!(kv("\"com.example.vendor\"=\"ACME Inc\""), Ok(pairs(&[("com.example.vendor", "ACME Inc")])));
        assert_eq!(kv("a=1"), Ok(pairs(&[("a", "1")])));
        assert_eq!(kv("a= b=\"\" c=''"), Ok(pairs(&[("a", ""), ("b", ""), ("c", "")])));
        assert_eq!(kv("a=b=c"), Ok(pairs(&[("a", "b=c")])));
        assert_eq!(kv("k=$v k2=${unset:-d} k3='$v'"), Ok(pairs(&[("k", "value"), ("k2", "d"), ("k3", "$v")])));
        assert_eq!(kv("${x}y=1"), Ok(pairs(&[("xy", "1")])));
        assert_eq!(kv("  a=1  \t b=2 "), Ok(pairs(&[("a", "1"), ("b", "2")])));
        assert_eq!(kv("multi=\"line one\\\" two\""), Ok(pairs(&[("multi", "line one\" two")])));
        assert_eq!(kv("v=new w=$v"), Ok(pairs(&[("v", "new"), ("w", "value")])));
        assert_eq!(kv(""), Ok(Vec::new()));
    }

    #[test]
    fn key_values_legacy_form() {
        assert_eq!(kv("MY_NAME John Doe"), Ok(pairs(&[("MY_NAME", "John Doe")])));
        assert_eq!(kv("  MY_NAME   John   Doe  "), Ok(pairs(&[("MY_NAME", "John   Doe")])));
        assert_eq!(kv("K \"quoted value\" $v"), Ok(pairs(&[("K", "quoted value value")])));
        assert_eq!(kv("K a=b c=d"), Ok(pairs(&[("K", "a=b c=d")])));
        assert_eq!(kv("K\t''"), Ok(pairs(&[("K", "")])));
        assert_eq!(kv("$x v"), Ok(pairs(&[("x", "v")])));
    }

    #[test]
    fn check_key_values_judges_the_shape_only() {
        let check = |s: &str| check_key_values(s, '\\');
        assert_eq!(check("a=1 b c=2").expect_err("missing =").offset, 4);
        assert_eq!(check("a=1 =2"), Err(ExpandError::new("names can not be blank", 4)));
        assert_eq!(check("  ALONE ").expect_err("legacy without value").offset, 2);
        assert_eq!(check(""), Err(ExpandError::new("needs at least one NAME=value", 0)));
        // Expansion and quoting are for the build: `$unset=2` and an open quote pass here.
        for fine in ["a=1 b=\"two words\"", "KEY value with spaces", "$unset=2", "a=1 b=\"x", "a=${v:?}"] {
            assert_eq!(check(fine), Ok(()), "{fine}");
        }
    }

    #[test]
    fn key_values_errors() {
        let err = kv("a=1 b c=2").expect_err("missing =");
        assert_eq!(err.message, "Syntax error - can't find = in \"b\". Must be of the form: name=value");
        assert_eq!(err.offset, 4);
        assert_eq!(kv("a=1 =2").expect_err("empty key"), ExpandError::new("names can not be blank", 4));
        assert_eq!(kv("$unset=2").expect_err("blank key"), ExpandError::new("names can not be blank", 0));
        let err = kv("  ALONE ").expect_err("legacy without value");
        assert_eq!(err.offset, 2);
        assert!(err.message.contains("ALONE"), "{}", err.message);
        assert_eq!(kv("a=1 b=\"x").expect_err("unterminated").offset, 6);
        assert_eq!(kv("a=1 b=${v").expect_err("missing brace").offset, 6);
        assert_eq!(
            kv("a=1 b${v=x").expect_err("key ends at the first ="),
            ExpandError::new("syntax error: missing '}'", 5)
        );
        assert_eq!(kv("K  ${unset?no}").expect_err("required"), ExpandError::new("unset: no", 3));
        assert_eq!(kv("K${ v").expect_err("legacy key").offset, 1);
    }

    #[test]
    fn error_displays_its_message() {
        let err = expand("${}").expect_err("bad");
        assert_eq!(err.to_string(), "syntax error: bad substitution");
    }

    #[test]
    fn glob_matching_picks_shortest_or_longest() {
        let text: Vec<char> = "aXbXc".chars().collect();
        let tokens = parse_pattern("*X").expect("pattern");
        assert_eq!(match_ends(&tokens, &text, false)[0], Some(2));
        assert_eq!(match_ends(&tokens, &text, true)[0], Some(4));
        assert_eq!(match_ends(&tokens, &text, true)[4], None);
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("\\\\\\ab"), "b\\a\\\\");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
        assert!(parse_pattern("\\").is_err());
        assert!(parse_pattern("\\\\\\").is_err());
    }
}
