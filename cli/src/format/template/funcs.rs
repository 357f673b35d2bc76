//! The functions a `--format` template can call: Go's built-ins (`index`, `len`, `eq`,
//! `printf`, ...) and the ones docker adds (`json`, `join`, `split`, `lower`, `upper`,
//! `title`, `pad`, `truncate`).

use super::exec::{fmt as print, V};
use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use std::cmp::Ordering;

/// Calls the function `name` with its arguments (a piped value last).
pub fn call(name: &str, args: Vec<V>) -> Result<V> {
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(anyhow!("{name} takes {n} arguments, got {}", args.len()))
        }
    };
    let s = |v: &V| print(v);
    let j = |v: String| Ok(V::J(Value::String(v)));
    match name {
        "json" => {
            arity(1)?;
            j(serde_json::to_string(args[0].json())?)
        }
        "lower" | "upper" | "title" => {
            arity(1)?;
            let text = s(&args[0]);
            j(match name {
                "lower" => text.to_lowercase(),
                "upper" => text.to_uppercase(),
                _ => title(&text),
            })
        }
        "split" => {
            arity(2)?;
            let parts = s(&args[0]).split(&s(&args[1])).map(|p| Value::String(p.into())).collect();
            Ok(V::J(Value::Array(parts)))
        }
        "join" => {
            arity(2)?;
            let Value::Array(items) = args[0].json() else { bail!("join takes a list, got {}", s(&args[0])) };
            j(items.iter().map(|i| print(&V::J(i.clone()))).collect::<Vec<_>>().join(&s(&args[1])))
        }
        "pad" => {
            arity(3)?;
            j(format!("{}{}{}", " ".repeat(int(&args[1])?), s(&args[0]), " ".repeat(int(&args[2])?)))
        }
        "truncate" => {
            arity(2)?;
            j(s(&args[0]).chars().take(int(&args[1])?).collect())
        }
        "len" => {
            arity(1)?;
            match args[0].json() {
                Value::String(t) => Ok(V::J(t.len().into())),
                Value::Array(a) => Ok(V::J(a.len().into())),
                Value::Object(m) => Ok(V::J(m.len().into())),
                other => bail!("len of {}", print(&V::J(other.clone()))),
            }
        }
        "index" => index(args),
        "not" => {
            arity(1)?;
            Ok(V::J(Value::Bool(!args[0].truth())))
        }
        "and" | "or" => {
            let first = args.first().ok_or_else(|| anyhow!("{name} takes 1 argument or more"))?;
            let stop = args.iter().find(|a| a.truth() != (name == "and"));
            Ok(stop.unwrap_or(args.last().unwrap_or(first)).clone())
        }
        "eq" => {
            let (first, rest) = args.split_first().ok_or_else(|| anyhow!("eq takes 2 arguments or more"))?;
            if rest.is_empty() {
                bail!("eq takes 2 arguments or more");
            }
            let mut equal = false;
            for other in rest {
                equal |= compare(first, other)? == Ordering::Equal;
            }
            Ok(V::J(Value::Bool(equal)))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(2)?;
            let order = compare(&args[0], &args[1])?;
            Ok(V::J(Value::Bool(match name {
                "ne" => order != Ordering::Equal,
                "lt" => order == Ordering::Less,
                "le" => order != Ordering::Greater,
                "gt" => order == Ordering::Greater,
                _ => order != Ordering::Less,
            })))
        }
        "print" => j(sprint(&args)),
        "println" => j(args.iter().map(print).collect::<Vec<_>>().join(" ") + "\n"),
        "printf" => {
            let (format, rest) = args.split_first().ok_or_else(|| anyhow!("printf takes a format"))?;
            j(printf(&s(format), rest))
        }
        other => bail!("function {other:?} not defined"),
    }
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
fn sprint(args: &[V]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = |v: &V| matches!(v, V::J(Value::String(_)));
        if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&print(a));
    }
    out
}

/// `strings.Title`: each word's first letter upper-cased.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    out
}

/// A non-negative integer argument.
fn int(v: &V) -> Result<usize> {
    v.json().as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| anyhow!("{} is not a count", print(v)))
}

/// `index X K...`: a list's element by position, a map's by key. A key a map of strings
/// lacks is the empty string, as docker's typed maps (labels, options) give; of other
/// maps, the missing value.
fn index(args: Vec<V>) -> Result<V> {
    let mut args = args.into_iter();
    let mut v = args.next().ok_or_else(|| anyhow!("index takes a list or map"))?;
    for key in args {
        v = match (v.json(), key.json()) {
            (Value::Array(a), Value::Number(n)) => {
                let i = n.as_u64().and_then(|i| usize::try_from(i).ok());
                let i = i.filter(|i| *i < a.len()).ok_or_else(|| anyhow!("index out of range: {n}"))?;
                V::J(a[i].clone())
            }
            (Value::Object(m), Value::String(k)) => match m.get(k) {
                Some(found) => V::J(found.clone()),
                None if m.values().all(Value::is_string) => V::J(Value::String(String::new())),
                None => V::Missing,
            },
            (Value::Null, _) => bail!("index of untyped nil"),
            (_, k) => bail!("can't index {} with {k}", print(&v)),
        };
    }
    Ok(v)
}

/// Orders two basic values of one kind (numbers, strings, bools), as `eq`/`lt` compare them.
fn compare(a: &V, b: &V) -> Result<Ordering> {
    match (a.json(), b.json()) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return Ok(x.cmp(&y));
            }
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x.partial_cmp(&y).ok_or_else(|| anyhow!("can't compare {x} and {y}"))
        }
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => bail!("incompatible types for comparison: {} and {}", print(a), print(b)),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %d %q %t %f %x %%`, with flags
/// `-` and `0`, a width and a precision.
fn printf(format: &str, args: &[V]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&f) = chars.peek() {
            if !(f.is_ascii_digit() || matches!(f, '-' | '.' | '+' | ' ' | '#')) {
                break;
            }
            spec.push(f);
            chars.next();
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.next() {
            Some(arg) => out.push_str(&verb_of(verb, &spec, arg)),
            None => out.push_str(&format!("%!{verb}(MISSING)")),
        }
    }
    out
}

/// One `%` verb of printf applied to an argument.
fn verb_of(verb: char, spec: &str, arg: &V) -> String {
    const FLAGS: [char; 5] = ['-', '+', ' ', '#', '0'];
    let flags: String = spec.chars().take_while(|c| FLAGS.contains(c)).collect();
    let (left, zero) = (flags.contains('-'), flags.contains('0'));
    let size = spec.trim_start_matches(FLAGS);
    let (width, precision): (usize, Option<usize>) = match size.split_once('.') {
        Some((w, p)) => (w.parse().unwrap_or(0), p.parse::<usize>().ok()),
        None => (size.parse().unwrap_or(0), None),
    };
    let text = match (verb, arg.json()) {
        ('d', Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        ('f', Value::Number(n)) => format!("{:.*}", precision.unwrap_or(6), n.as_f64().unwrap_or(0.0)),
        ('x', Value::Number(n)) if n.is_u64() => format!("{:x}", n.as_u64().unwrap_or(0)),
        ('x', Value::String(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('q', Value::String(s)) => serde_json::to_string(s).unwrap_or_default(),
        ('t', Value::Bool(b)) => b.to_string(),
        ('v' | 's', _) => {
            let s = print(arg);
            match precision {
                Some(p) if verb == 's' => s.chars().take(p).collect(),
                _ => s,
            }
        }
        (verb, _) => format!("%!{verb}({})", print(arg)),
    };
    let pad = width.saturating_sub(text.chars().count());
    match (left, zero && matches!(arg.json(), Value::Number(_))) {
        (true, _) => format!("{text}{}", " ".repeat(pad)),
        (false, true) => format!("{}{text}", "0".repeat(pad)),
        (false, false) => format!("{}{text}", " ".repeat(pad)),
    }
}
