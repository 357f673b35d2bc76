//! The `created_by` text of each history entry, written in one place the way BuildKit
//! records it: values expanded, RUN as written behind its `|N K=V` build-arg prefix, and
//! the config-only instructions in the forms `docker history` shows for BuildKit images
//! (`EXPOSE map[80/tcp:{}]`, `CMD ["nginx" "-g" "daemon off;"]`, `VOLUME [/data]`).

use crate::dockerfile::CommandForm;

/// What one step records in the image's history.
pub(super) enum Record<'a> {
    /// RUN: the build args it saw (proxies not declared by ARG excepted), the shell, the command.
    Run { args: Vec<(&'a str, &'a str)>, shell: &'a [String], command: &'a CommandForm },
    /// COPY or ADD: the expanded sources (`<<NAME` for a heredoc) and destination.
    Copy { add: bool, sources: Vec<String>, dest: String },
    /// WORKDIR: the absolute directory.
    Workdir(String),
    /// ENV or LABEL: the keyword and its expanded pairs.
    Pairs(&'static str, Vec<(String, String)>),
    /// ARG: each name with its expanded default (never the `--build-arg` value).
    Arg(Vec<(String, Option<String>)>),
    /// USER, MAINTAINER, STOPSIGNAL: the keyword and the expanded word.
    Word(&'static str, String),
    /// EXPOSE: the `port/proto` keys.
    Expose(Vec<String>),
    /// VOLUME: the paths.
    Volume(Vec<String>),
    /// CMD, ENTRYPOINT (the final argv, shell included) and SHELL.
    Argv(&'static str, Vec<String>),
    /// HEALTHCHECK and ONBUILD: the instruction as written.
    AsWritten(String),
}

/// The `created_by` of one history entry.
pub(super) fn created_by(r: &Record<'_>) -> String {
    match r {
        Record::Run { args, shell, command } => {
            let prefix = if args.is_empty() {
                String::new()
            } else {
                let kv: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("|{} {} ", args.len(), kv.join(" "))
            };
            match command {
                CommandForm::Shell(s) => format!("RUN {prefix}{} {s} # buildkit", shell.join(" ")),
                CommandForm::Exec(a) => {
                    format!("RUN {prefix}{} # buildkit", serde_json::to_string(a).unwrap_or_default())
                }
            }
        }
        Record::Copy { add, sources, dest } => {
            format!("{} {} {dest} # buildkit", if *add { "ADD" } else { "COPY" }, sources.join(" "))
        }
        Record::Workdir(dir) => format!("WORKDIR {dir}"),
        Record::Pairs(keyword, pairs) => {
            let kv: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{keyword} {}", kv.join(" "))
        }
        Record::Arg(decls) => {
            let d: Vec<String> = decls
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            format!("ARG {}", d.join(" "))
        }
        Record::Word(keyword, w) => format!("{keyword} {w}"),
        Record::Expose(ports) => {
            let mut ports = ports.clone();
            ports.sort();
            ports.dedup();
            let p: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
            format!("EXPOSE map[{}]", p.join(" "))
        }
        Record::Volume(paths) => format!("VOLUME [{}]", paths.join(" ")),
        Record::Argv(keyword, argv) if *keyword == "SHELL" => format!("SHELL [{}]", argv.join(" ")),
        Record::Argv(keyword, argv) => {
            let q: Vec<String> = argv.iter().map(|a| go_quote(a)).collect();
            format!("{keyword} [{}]", q.join(" "))
        }
        Record::AsWritten(text) => text.clone(),
    }
}

/// A string quoted as Go's `%q` quotes it (the form `docker history` shows for CMD).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
