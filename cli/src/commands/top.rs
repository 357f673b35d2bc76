//! `berth top` (also `container top`): docker's list of a running container's processes.
//! As docker's daemon does, it runs the host's `ps` with the given options (`-ef` by
//! default) and keeps the rows whose PID is in the container; the runner says which PIDs
//! those are.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use runner::container;

/// Display the running processes of a container
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth top web\n  berth top web -o pid,user,args")]
pub struct Top {
    /// The container: its name or ID
    container: String,
    /// Options for ps (default: -ef); the output must have a PID column
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "PS OPTIONS")]
    ps_args: Vec<String>,
}

impl Top {
    /// Prints the container's rows of `ps`, in docker's columns.
    pub fn run(self, root: &Path) -> Result<()> {
        let c = container::find(root, &self.container)?;
        let state = c.state()?;
        let pid = match (state.status, state.pid) {
            (container::Status::Running, Some(pid)) => pid,
            _ => bail!("Container {} is not running", c.config.id),
        };
        let pids = container::processes::of(&c.config, pid)
            .with_context(|| format!("list the processes of {}", self.container))?;
        let args = match self.ps_args.is_empty() {
            true => vec!["-ef".to_owned()],
            false => self.ps_args,
        };
        let out = std::process::Command::new("ps").args(&args).output().context("run ps")?;
        if !out.status.success() {
            bail!("ps {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        print!("{}", table(&rows(&String::from_utf8_lossy(&out.stdout), &pids)?));
        Ok(())
    }
}

/// `ps` output as titles and the rows of `pids`: each row split into as many fields as there
/// are titles, the last (the command) taking the rest of the line, as docker's daemon
/// parses it.
fn rows(ps: &str, pids: &[i32]) -> Result<Vec<Vec<String>>> {
    let mut lines = ps.lines();
    let titles: Vec<String> = lines.next().unwrap_or_default().split_whitespace().map(str::to_owned).collect();
    let column =
        titles.iter().position(|t| t == "PID").ok_or_else(|| anyhow!("Couldn't find PID field in ps output"))?;
    let mut out = vec![titles.clone()];
    for line in lines {
        let fields = split_fields(line, titles.len());
        let pid = fields.get(column).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push(fields);
        }
    }
    Ok(out)
}

/// `line` cut at whitespace into at most `n` fields, the last one keeping its spaces.
fn split_fields(line: &str, n: usize) -> Vec<String> {
    let mut fields = Vec::with_capacity(n);
    let mut rest = line.trim_start();
    while fields.len() + 1 < n && !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        fields.push(rest[..end].to_owned());
        rest = rest[end..].trim_start();
    }
    if !rest.is_empty() {
        fields.push(rest.trim_end().to_owned());
    }
    fields
}

/// The rows aligned as docker's CLI prints them (a tab writer: cells at least 20 wide,
/// 3 spaces of padding).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count() + 3).max().unwrap_or(0).max(20))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            match i + 1 == row.len() {
                true => out.push_str(cell),
                false => out.push_str(&format!("{cell:<width$}", width = widths[i])),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: &str = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                      root           1       0  0 09:00 ?        00:00:01 /sbin/init splash\n\
                      root        4242    4200  0 09:01 ?        00:00:00 sleep 60\n\
                      root        4250    4242  0 09:01 pts/0    00:00:00 sh -c while true; do :; done\n";

    #[test]
    fn only_the_containers_rows_are_kept_with_the_command_whole() {
        let got = rows(PS, &[4242, 4250]).unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]);
        assert_eq!(got[1], ["root", "4242", "4200", "0", "09:01", "?", "00:00:00", "sleep 60"]);
        assert_eq!(got[2][7], "sh -c while true; do :; done");
        let text = table(&got);
        assert!(text.starts_with(&format!("{:<20}{:<20}", "UID", "PID")), "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with("00:00:00            sleep 60"), "{text}");
    }

    #[test]
    fn ps_output_without_a_pid_column_is_refused_as_dockers() {
        let err = rows("USER COMMAND\nroot init\n", &[1]).unwrap_err();
        assert_eq!(err.to_string(), "Couldn't find PID field in ps output");
    }
}
