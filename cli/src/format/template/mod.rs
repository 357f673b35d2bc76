//! docker's `--format`: Go's text/template over the JSON that berth's list and inspect
//! commands show. Scripts written for docker keep working: fields (`{{.State.Status}}`),
//! `{{range .Mounts}}...{{end}}`, `{{if}}`/`{{with}}`/`{{else}}`, variables, pipelines,
//! `{{index .Config.Labels "k"}}`, Go's built-in functions and docker's (`json`, `join`,
//! `split`, `lower`, `upper`, `title`, `pad`, `truncate`), and `table` for list commands.

mod exec;
mod funcs;
mod parse;

use anyhow::{Context, Result};
use serde_json::Value;

/// A parsed `--format` template, run once per object.
#[derive(Debug)]
pub struct Template {
    nodes: Vec<parse::Node>,
    source: String,
}

impl Template {
    /// Parses a template. `\t` and `\n` written in it become a tab and a newline, as docker
    /// reads its list commands' formats.
    pub fn parse(src: &str) -> Result<Template> {
        let source = src.replace("\\t", "\t").replace("\\n", "\n");
        let nodes = parse::parse(&source).with_context(|| format!("--format {src:?}"))?;
        Ok(Template { nodes, source })
    }

    /// The template's output for one object; a field it lacks prints `<no value>`, as in
    /// docker's inspect.
    pub fn render(&self, data: &Value) -> Result<String> {
        self.run(data, false)
    }

    /// The output for a list command's row: a field the row lacks is an error, as docker's
    /// rows are Go structs (`{{.Nope}}`: can't evaluate field Nope).
    pub fn render_row(&self, data: &Value) -> Result<String> {
        self.run(data, true)
    }

    fn run(&self, data: &Value, strict: bool) -> Result<String> {
        let mut run = exec::Exec::new(data, strict);
        run.nodes(&self.nodes, &exec::V::J(data.clone())).with_context(|| format!("--format {:?}", self.source))?;
        Ok(run.out)
    }
}

/// A list command's `--format`: docker's own table, `table TEMPLATE` (a header row and
/// aligned columns), `json` (an object per line), or a template per row.
#[derive(Debug)]
pub enum ListFormat {
    Default,
    Table(Template),
    Json,
    Rows(Template),
}

impl ListFormat {
    /// Reads a `--format` value as docker does: `table` at its start means a table.
    pub fn parse(s: &str) -> Result<ListFormat> {
        Ok(match s.trim() {
            "" | "table" => ListFormat::Default,
            "json" => ListFormat::Json,
            t => match t.strip_prefix("table") {
                Some(rest) => ListFormat::Table(Template::parse(rest.trim())?),
                None => ListFormat::Rows(Template::parse(t)?),
            },
        })
    }

    /// Writes rows in this format, a line per row (not for [`ListFormat::Default`], which
    /// each command draws itself). `headers` gives each field's column title, as docker's
    /// header context: a table's header row is the template run over them.
    pub fn render(&self, headers: &[(&str, &str)], rows: &[Value]) -> Result<String> {
        let mut out = String::new();
        match self {
            ListFormat::Default => anyhow::bail!("the default table is drawn by its command"),
            ListFormat::Json => rows.iter().for_each(|r| out.push_str(&format!("{r}\n"))),
            ListFormat::Rows(t) => {
                for r in rows {
                    out.push_str(&t.render_row(r)?);
                    out.push('\n');
                }
            }
            ListFormat::Table(t) => {
                let titles: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(field, title)| (field.to_string(), Value::String(title.to_string())))
                    .collect();
                let mut text = t.render_row(&Value::Object(titles))? + "\n";
                for r in rows {
                    text.push_str(&t.render_row(r)?);
                    text.push('\n');
                }
                let cells: Vec<Vec<String>> = text.lines().map(|l| l.split('\t').map(String::from).collect()).collect();
                out = super::table(&cells);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
