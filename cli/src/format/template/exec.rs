//! Running a parsed template over a JSON value, with Go's rules for what a field of a missing
//! key or of `null` is, what is true, and how values print.

use super::funcs;
use super::parse::{Arg, Node, Pipe};
use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// A value in a template: JSON, or Go's invalid value (a key the data lacks), printed
/// `<no value>`.
#[derive(Clone, Debug, PartialEq)]
pub enum V {
    Missing,
    J(Value),
}

impl V {
    /// Go's truth: false, 0, nil, empty strings, lists and maps, and missing values are false.
    pub fn truth(&self) -> bool {
        match self {
            V::Missing | V::J(Value::Null) => false,
            V::J(Value::Bool(b)) => *b,
            V::J(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
            V::J(Value::String(s)) => !s.is_empty(),
            V::J(Value::Array(a)) => !a.is_empty(),
            V::J(Value::Object(m)) => !m.is_empty(),
        }
    }

    /// The JSON of the value (`null` for a missing one).
    pub fn json(&self) -> &Value {
        match self {
            V::Missing => &Value::Null,
            V::J(v) => v,
        }
    }
}

/// How an action prints a value: Go's fmt `%v` (strings bare, lists `[a b]`, maps
/// `map[k:v]` in key order), and `<no value>` for a missing key or a null.
pub fn print(v: &V) -> String {
    match v {
        V::Missing | V::J(Value::Null) => "<no value>".into(),
        V::J(j) => print_json(j),
    }
}

/// How Go's fmt prints a value with `%v`, as `print` and `printf` do: `<nil>` for a null.
pub fn fmt(v: &V) -> String {
    match v {
        V::Missing => "<no value>".into(),
        V::J(j) => print_json(j),
    }
}

fn print_json(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::Array(a) => format!("[{}]", a.iter().map(print_json).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            format!("map[{}]", keys.iter().map(|k| format!("{k}:{}", print_json(&m[*k]))).collect::<Vec<_>>().join(" "))
        }
    }
}

/// A number as Go prints it: integers whole, floats in their shortest form, with an
/// exponent only when very large or small (`%g`'s rule for `%v`).
fn number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f != 0.0 && (f.abs() >= 1e21 || f.abs() < 1e-4) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        return format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    format!("{f}")
}

/// The state of one run: the output so far and the variables in scope.
pub struct Exec {
    pub out: String,
    vars: Vec<(String, V)>,
    /// A field the data lacks is an error, as for docker's typed list rows, rather than
    /// the missing value of its raw-JSON inspect.
    strict: bool,
}

impl Exec {
    /// A run over `data`, which `$` names.
    pub fn new(data: &Value, strict: bool) -> Exec {
        Exec { out: String::new(), vars: vec![(String::new(), V::J(data.clone()))], strict }
    }

    /// Runs nodes with `dot` as `.`.
    pub fn nodes(&mut self, nodes: &[Node], dot: &V) -> Result<()> {
        for node in nodes {
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipe(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        self.out.push_str(&print(&v));
                    }
                }
                Node::If { with, branches, otherwise } => self.branches(*with, branches, otherwise, dot)?,
                Node::Range { pipe, body, otherwise } => self.range(pipe, body, otherwise, dot)?,
            }
        }
        Ok(())
    }

    /// An `if` or `with`: the first branch whose pipeline is true runs (with its value as dot
    /// for `with`), else the `else` part; variables declared inside end with it.
    fn branches(&mut self, with: bool, branches: &[(Pipe, Vec<Node>)], otherwise: &[Node], dot: &V) -> Result<()> {
        let scope = self.vars.len();
        for (pipe, body) in branches {
            let v = self.pipe(pipe, dot)?;
            if v.truth() {
                let result = self.nodes(body, if with { &v } else { dot });
                self.vars.truncate(scope);
                return result;
            }
        }
        let result = self.nodes(otherwise, dot);
        self.vars.truncate(scope);
        result
    }

    /// A `range`: the body once per element of a list, or per value of a map in key order
    /// (`$i, $v :=` binds the index or key too); the `else` part when there is none.
    fn range(&mut self, pipe: &Pipe, body: &[Node], otherwise: &[Node], dot: &V) -> Result<()> {
        let v = self.commands(pipe, dot)?;
        let elements: Vec<(Value, Value)> = match v.json() {
            Value::Array(a) => a.iter().enumerate().map(|(i, e)| (i.into(), e.clone())).collect(),
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                keys.into_iter().map(|k| (k.clone().into(), m[k].clone())).collect()
            }
            Value::Null => vec![],
            other => bail!("{}: range can't iterate over {}", pipe.pos, print_json(other)),
        };
        if elements.is_empty() {
            return self.nodes(otherwise, dot);
        }
        let scope = self.vars.len();
        for (key, element) in elements {
            match pipe.decl.as_slice() {
                [v] => self.vars.push((v.clone(), V::J(element.clone()))),
                [k, v] => {
                    self.vars.push((k.clone(), V::J(key)));
                    self.vars.push((v.clone(), V::J(element.clone())));
                }
                _ => {}
            }
            let result = self.nodes(body, &V::J(element));
            self.vars.truncate(scope);
            result?;
        }
        Ok(())
    }

    /// A pipeline's value, after declaring or assigning its variables.
    fn pipe(&mut self, pipe: &Pipe, dot: &V) -> Result<V> {
        let v = self.commands(pipe, dot)?;
        for name in &pipe.decl {
            if pipe.assign {
                let slot = self.vars.iter_mut().rev().find(|(n, _)| n == name);
                slot.ok_or_else(|| anyhow!("{}: undefined variable ${name}", pipe.pos))?.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    /// The value of the commands, each one's value passed as the next one's last argument.
    fn commands(&mut self, pipe: &Pipe, dot: &V) -> Result<V> {
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.command(pipe, cmd, dot, value)?);
        }
        value.ok_or_else(|| anyhow!("{}: empty pipeline", pipe.pos))
    }

    fn command(&mut self, pipe: &Pipe, cmd: &[Arg], dot: &V, piped: Option<V>) -> Result<V> {
        let at = |e: anyhow::Error| anyhow!("{}: executing {{{{{}}}}}: {e}", pipe.pos, pipe.text);
        if let [Arg::Func(name), args @ ..] = cmd {
            let mut values = args.iter().map(|a| self.arg(a, dot)).collect::<Result<Vec<_>>>()?;
            values.extend(piped);
            return funcs::call(name, values).map_err(at);
        }
        if let [Arg::Field(chain), args @ ..] = cmd {
            if chain.last().is_some_and(|f| f == "Label") && (!args.is_empty() || piped.is_some()) {
                let mut values = args.iter().map(|a| self.arg(a, dot)).collect::<Result<Vec<_>>>()?;
                values.extend(piped);
                let row = fields(dot.clone(), &chain[..chain.len() - 1], self.strict).map_err(at)?;
                return label(&row, &values).map_err(at);
            }
        }
        match (cmd, piped) {
            ([arg], None) => self.arg(arg, dot),
            ([Arg::Const(Value::Null)], _) => Err(at(anyhow!("nil is not a command"))),
            _ => Err(at(anyhow!("can't give an argument to a non-function"))),
        }
    }

    /// An operand's value.
    fn arg(&mut self, arg: &Arg, dot: &V) -> Result<V> {
        match arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(chain) => fields(dot.clone(), chain, self.strict),
            Arg::Var(name, chain) => {
                let v = self.vars.iter().rev().find(|(n, _)| n == name);
                let v = v.ok_or_else(|| anyhow!("undefined variable ${name}"))?.1.clone();
                fields(v, chain, self.strict)
            }
            Arg::Func(name) => funcs::call(name, vec![]),
            Arg::Const(c) => Ok(V::J(c.clone())),
            Arg::Sub(pipe, chain) => {
                let v = self.pipe(pipe, dot)?;
                fields(v, chain, self.strict)
            }
        }
    }
}

/// The `Label` method of docker's `ps`, `volume ls` and `network ls` rows: `{{.Label "k"}}`
/// is the value of label `k` (empty when there is none), read from the row's `Labels`: a
/// map, or docker's `k=v,k2=v2` text.
fn label(row: &V, args: &[V]) -> Result<V> {
    let [V::J(Value::String(key))] = args else { bail!("wrong number of args for Label: want 1 got {}", args.len()) };
    let found = match row {
        V::J(Value::Object(m)) => match m.get("Labels") {
            Some(Value::Object(labels)) => labels.get(key).and_then(Value::as_str).map(str::to_owned),
            Some(Value::String(text)) => {
                text.split(',').filter_map(|kv| kv.split_once('=')).find(|(k, _)| k == key).map(|(_, v)| v.to_owned())
            }
            _ => bail!("can't evaluate field Label"),
        },
        _ => bail!("can't evaluate field Label"),
    };
    Ok(V::J(Value::String(found.unwrap_or_default())))
}

/// `.A.B` of a value, as Go walks a map: a missing key is the invalid value (and so is any
/// field of it; `strict`: an error, as a struct's), a field of `null` or of a non-map is an
/// error.
fn fields(mut v: V, chain: &[String], strict: bool) -> Result<V> {
    for name in chain {
        v = match v {
            V::Missing => V::Missing,
            V::J(Value::Object(mut m)) => match m.remove(name) {
                Some(found) => V::J(found),
                None if strict => bail!("can't evaluate field {name}"),
                None => V::Missing,
            },
            V::J(Value::Null) => bail!("nil pointer evaluating .{name}"),
            V::J(other) => bail!("can't evaluate field {name} in {}", print_json(&other)),
        };
    }
    Ok(v)
}
