//! One method per instruction, as BuildKit's frontend dispatches them: each expands its
//! words in the stage's [`Scope`], adds its vertex or changes the scope, and records its
//! history step through [`history::created_by`].

use serde_json::json;

use super::history::{created_by, Record};
use super::scope::Scope;
use super::{join_path, Converter, Ins, StageOut};
use crate::dockerfile::expand::{expand_word, expand_words, key_values};
use crate::dockerfile::mount::{MountSpec, MountType};
use crate::dockerfile::{ArgDecl, CommandForm, Copy, CopySource, Healthcheck, Run, Word};
use crate::error::Result;
use crate::graph::{CopyFrom, CopyOp, CopySrc, ExecMount, ExecOp, Op, Vertex, VertexId};

/// What a vertex-making step needs to know about its stage.
pub(super) struct Step {
    /// The step is never taken from the cache (`--no-cache`, or the stage is in
    /// `--no-cache-filter`).
    pub no_cache: bool,
}

/// Adds a history step.
fn record(out: &mut StageOut, r: &Record<'_>, vertex: Option<VertexId>) {
    out.steps.push((created_by(r), vertex));
}

/// The instruction's text with its variables expanded (quotes kept), for progress names
/// as BuildKit shows them; as written when it cannot be expanded.
fn shown(ins: &Ins<'_>, look: &dyn Fn(&str) -> Option<String>) -> String {
    expand_keeping_quotes(ins.text, ins.df.escape, look).unwrap_or_else(|_| ins.text.to_owned())
}

/// Expands `$VAR` in text whose quotes are content (heredoc bodies, instruction lines).
pub(super) fn expand_keeping_quotes(
    content: &str,
    escape: char,
    look: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    // Protect the quotes, expand, restore.
    let protected = content.replace('\'', "\u{1}").replace('"', "\u{2}");
    let out = expand_word(&protected, escape, look).map_err(|e| e.message)?;
    Ok(out.replace('\u{1}', "'").replace('\u{2}', "\""))
}

impl Converter<'_> {
    /// Adds the vertex of one step of a stage, named as the progress shows it.
    fn add_step(
        &mut self,
        scope: &mut Scope,
        text: &str,
        op: Op,
        inputs: Vec<VertexId>,
        at: usize,
        step: &Step,
    ) -> VertexId {
        let name = scope.next_name(text);
        self.graph.add(Vertex { op, inputs, name, at, no_cache: step.no_cache })
    }

    /// RUN: a process on the stage's filesystem, with its mounts and environment.
    pub(super) fn dispatch_run(
        &mut self,
        ins: &Ins<'_>,
        run: &Run,
        scope: &mut Scope,
        out: &mut StageOut,
        step: &Step,
    ) -> Result<()> {
        let look = scope.lookup();
        let shell = scope.shell();
        let args = match &run.command {
            CommandForm::Exec(a) => a.clone(),
            CommandForm::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
        };
        let host_network = match &run.network {
            None => self.inputs.host_network,
            Some(w) => match ins.expand(w, &look)?.as_str() {
                "default" | "host" => true,
                "none" => false,
                other => {
                    return Err(ins.df.error(w.at, format!("unknown --network={other} (default, none, host)")));
                }
            },
        };
        let insecure = match &run.security {
            None => false,
            Some(w) => match ins.expand(w, &look)?.as_str() {
                "sandbox" => false,
                // An entitlement, as BuildKit asks for it: the Dockerfile alone cannot lift the sandbox.
                "insecure" if self.inputs.allow_insecure => true,
                "insecure" => {
                    return Err(ins.df.error(
                        w.at,
                        "--security=insecure is not allowed: it needs the entitlement `--allow security.insecure`",
                    ))
                }
                other => return Err(ins.df.error(w.at, format!("unknown --security={other} (sandbox, insecure)"))),
            },
        };
        let mut inputs = vec![out.vertex];
        let workdir = scope.workdir();
        let mut mounts = Vec::new();
        for w in &run.mounts {
            let mut spec = MountSpec::parse(&ins.expand(w, &look)?).map_err(|m| ins.df.error(w.at, m))?;
            if !spec.target.is_empty() {
                spec.target = join_path(&workdir, &spec.target);
            }
            let input = match (&spec.from, spec.kind) {
                (Some(from), MountType::Bind | MountType::Cache) => {
                    inputs.push(self.source(from, w.at)?);
                    Some(inputs.len() - 1)
                }
                _ => None,
            };
            mounts.push(ExecMount { spec, input });
        }
        // The environment: the image's ENV and the build args in scope, the later winning.
        let env = scope.run_env();
        // Proxies given as --build-arg reach the process, outside the key and the history.
        let proxy_env = super::proxy_env(self.inputs.build_args, |k| scope.has_arg(k));
        let op = Op::Exec(ExecOp {
            args,
            env,
            cwd: workdir,
            user: scope.user(),
            platform: self.current.to_string(),
            host_network,
            extra_hosts: self.inputs.extra_hosts.to_vec(),
            insecure,
            mounts,
            script: run.script.clone(),
            proxy_env,
        });
        self.run_platforms.insert(self.current.clone());
        let v = self.add_step(scope, ins.text, op, inputs, ins.at, step);
        out.vertex = v;
        record(
            out,
            &Record::Run { args: scope.args_with_values().collect(), shell: &shell, command: &run.command },
            Some(v),
        );
        Ok(())
    }

    /// COPY and ADD: files from the context, a stage, an image, a URL or a heredoc.
    pub(super) fn dispatch_copy(
        &mut self,
        ins: &Ins<'_>,
        copy: &Copy,
        add: bool,
        scope: &mut Scope,
        out: &mut StageOut,
        step: &Step,
    ) -> Result<()> {
        let look = scope.lookup();
        let exp = |w: &Word| ins.expand(w, &look);
        let mut sources = Vec::new();
        let mut shown_sources = Vec::new();
        for s in &copy.sources {
            match s {
                CopySource::Path(w) => {
                    let p = exp(w)?;
                    shown_sources.push(p.clone());
                    sources.push(self.copy_path(ins, copy, add, w, p, &exp)?);
                }
                CopySource::Heredoc { name, content, expand } => {
                    let content = if *expand {
                        expand_keeping_quotes(content, ins.df.escape, &look).map_err(|m| ins.error(m))?
                    } else {
                        content.clone()
                    };
                    shown_sources.push(format!("<<{name}"));
                    sources.push(CopySrc::Inline { name: name.clone(), content });
                }
            }
        }
        if copy.checksum.is_some() && !sources.iter().any(|s| matches!(s, CopySrc::Url { .. })) {
            let at = copy.checksum.as_ref().map_or(ins.at, |c| c.at);
            return Err(ins.df.error(at, "--checksum is only for URL sources"));
        }
        let dest_raw = exp(&copy.dest)?;
        let dest_is_dir =
            dest_raw.ends_with('/') || dest_raw == "." || copy.sources.len() > 1 || dest_raw.ends_with("/.");
        let chmod = match &copy.chmod {
            Some(w) => {
                let v = exp(w)?;
                Some(
                    v.parse::<crate::chmod::Chmod>()
                        .map_err(|e| ins.df.error(w.at, format!("invalid --chmod={v}: {e}")))?,
                )
            }
            None => None,
        };
        // An empty `--chown` (`--chown=$OWNER` with OWNER unset) is none, as in BuildKit.
        let chown = copy.chown.as_ref().map(exp).transpose()?.filter(|c| !c.is_empty());
        let exclude = copy.exclude.iter().map(exp).collect::<Result<Vec<_>>>()?;
        let mut inputs = vec![out.vertex];
        let from_context = copy.from.is_none() && sources.iter().any(|s| matches!(s, CopySrc::Path(_)));
        let from = match &copy.from {
            Some(w) => {
                let name = exp(w)?;
                // A local directory's files are read where they are, as the context's.
                if matches!(self.inputs.named.get(&name), Some(crate::context::NamedContext::Dir(_))) {
                    CopyFrom::Named(name)
                } else {
                    inputs.push(self.source(&name, w.at)?);
                    CopyFrom::Input
                }
            }
            None if from_context => CopyFrom::Context,
            None => CopyFrom::Nothing,
        };
        let op = Op::Copy(CopyOp {
            from,
            sources,
            dest: join_path(&scope.workdir(), &dest_raw),
            dest_is_dir,
            chown,
            chmod,
            link: copy.link,
            parents: copy.parents,
            exclude,
            unpack_archives: add,
        });
        let name = shown(ins, &look);
        let v = self.add_step(scope, &name, op, inputs, ins.at, step);
        out.vertex = v;
        record(out, &Record::Copy { add, sources: shown_sources, dest: dest_raw }, Some(v));
        Ok(())
    }

    /// One expanded path source of COPY/ADD: a URL (ADD) or a path in the source.
    fn copy_path(
        &mut self,
        ins: &Ins<'_>,
        copy: &Copy,
        add: bool,
        w: &Word,
        p: String,
        exp: &dyn Fn(&Word) -> Result<String>,
    ) -> Result<CopySrc> {
        if !(add && (p.starts_with("http://") || p.starts_with("https://"))) {
            return Ok(CopySrc::Path(p));
        }
        if p.ends_with(".git") {
            return Err(ins.df.error(w.at, "ADD of a git repository is not supported by berth yet"));
        }
        let checksum = match &copy.checksum {
            Some(c) => {
                let v = exp(c)?;
                Some(v.parse::<oci::Digest>().map_err(|e| ins.df.error(c.at, format!("--checksum: {e}")))?)
            }
            None => None,
        };
        Ok(CopySrc::Url { url: p, checksum })
    }

    /// WORKDIR: the directory becomes the working directory and is created when missing,
    /// owned by the current USER (the op's `chown`).
    pub(super) fn dispatch_workdir(
        &mut self,
        ins: &Ins<'_>,
        w: &Word,
        scope: &mut Scope,
        out: &mut StageOut,
        step: &Step,
    ) -> Result<()> {
        let look = scope.lookup();
        let raw = ins.expand(w, &look)?;
        let dir = join_path(&scope.workdir(), &raw);
        scope.workdir = Some(dir.clone());
        let op = Op::Copy(CopyOp {
            from: CopyFrom::Nothing,
            sources: vec![],
            dest: dir.clone(),
            dest_is_dir: true,
            chown: scope.user(),
            chmod: None,
            link: false,
            parents: false,
            exclude: vec![],
            unpack_archives: false,
        });
        let v = self.add_step(scope, &format!("WORKDIR {raw}"), op, vec![out.vertex], ins.at, step);
        out.vertex = v;
        record(out, &Record::Workdir(dir), Some(v));
        Ok(())
    }

    /// ARG: declares build args in the stage; `ARG NAME` imports the global value, or the
    /// platform's; a `--build-arg` overrides either.
    pub(super) fn dispatch_arg(
        &mut self,
        ins: &Ins<'_>,
        decls: &[ArgDecl],
        scope: &mut Scope,
        out: &mut StageOut,
    ) -> Result<()> {
        // One name after another, as BuildKit dispatches them: a default sees the names
        // before it on the same line (`ARG A=1 B=${A}2`).
        let mut recorded = Vec::new();
        for d in decls {
            let default = d.default.as_ref().map(|w| ins.expand(w, &scope.lookup())).transpose()?;
            let value = match (self.inputs.build_args.get(&d.name), &default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(v)) => Some(v.clone()),
                (None, None) => {
                    self.global.get(&d.name).cloned().flatten().or_else(|| self.platform.get(&d.name).cloned())
                }
            };
            match value {
                Some(v) => scope.set_arg(&d.name, Some(v)),
                // Declared again without a value: the value it has stays (BuildKit adds no
                // variable then, and the earlier one is still set).
                None if scope.has_arg(&d.name) => {}
                None => scope.set_arg(&d.name, None),
            }
            recorded.push((d.name.clone(), default));
        }
        record(out, &Record::Arg(recorded), None);
        Ok(())
    }
}

/// ENV: sets variables (in place when already set), expanded with the scope before it.
pub(super) fn dispatch_env(ins: &Ins<'_>, w: &Word, scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let pairs =
        key_values(&w.raw, ins.df.escape, &scope.lookup()).map_err(|e| ins.df.error(w.at + e.offset, e.message))?;
    for (k, v) in &pairs {
        scope.set_env(k, v);
    }
    record(out, &Record::Pairs("ENV", pairs), None);
    Ok(())
}

/// LABEL: adds labels to the image config.
pub(super) fn dispatch_label(ins: &Ins<'_>, w: &Word, scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let pairs =
        key_values(&w.raw, ins.df.escape, &scope.lookup()).map_err(|e| ins.df.error(w.at + e.offset, e.message))?;
    let labels = scope.config.entry("Labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    for (k, v) in &pairs {
        labels[k] = json!(v);
    }
    record(out, &Record::Pairs("LABEL", pairs), None);
    Ok(())
}

/// MAINTAINER: the image's author.
pub(super) fn dispatch_maintainer(ins: &Ins<'_>, w: &Word, scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let author = ins.expand(w, &scope.lookup())?;
    scope.author = Some(author.clone());
    record(out, &Record::Word("MAINTAINER", author), None);
    Ok(())
}

/// EXPOSE: `80`, `80/udp`, `8000-8002/tcp` into the config's ports.
pub(super) fn dispatch_expose(ins: &Ins<'_>, words: &[Word], scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let look = scope.lookup();
    let mut added = Vec::new();
    for w in words {
        for port in expand_words(&w.raw, ins.df.escape, &look).map_err(|e| ins.df.error(w.at + e.offset, e.message))? {
            added.extend(expose_ports(&port).map_err(|m| ins.df.error(w.at, m))?);
        }
    }
    let ports = scope.config.entry("ExposedPorts").or_insert_with(|| json!({}));
    for p in &added {
        ports[p] = json!({});
    }
    record(out, &Record::Expose(added), None);
    Ok(())
}

/// VOLUME: paths in the config's volumes.
pub(super) fn dispatch_volume(ins: &Ins<'_>, words: &[Word], scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    if words.is_empty() {
        return Err(ins.error("VOLUME requires at least one argument"));
    }
    let look = scope.lookup();
    let mut paths = Vec::new();
    for w in words {
        let v = ins.expand(w, &look)?;
        if v.is_empty() {
            return Err(ins.df.error(w.at, "VOLUME needs a path"));
        }
        paths.push(v);
    }
    let vols = scope.config.entry("Volumes").or_insert_with(|| json!({}));
    for p in &paths {
        vols[p] = json!({});
    }
    record(out, &Record::Volume(paths), None);
    Ok(())
}

/// USER: who RUN runs as and who owns the directories WORKDIR creates from here on.
pub(super) fn dispatch_user(ins: &Ins<'_>, w: &Word, scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let user = ins.expand(w, &scope.lookup())?;
    scope.user = Some(user.clone());
    record(out, &Record::Word("USER", user), None);
    Ok(())
}

/// STOPSIGNAL: a signal as `docker stop` takes it (`SIGTERM`, `TERM`, `15`); another word is
/// refused at its place, as BuildKit refuses it.
pub(super) fn dispatch_stopsignal(ins: &Ins<'_>, w: &Word, scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let signal = ins.expand(w, &scope.lookup())?;
    runner::container::control::parse_signal(&signal).map_err(|e| ins.df.error(w.at, format!("STOPSIGNAL: {e}")))?;
    scope.config.insert("StopSignal".into(), json!(signal));
    record(out, &Record::Word("STOPSIGNAL", signal), None);
    Ok(())
}

/// The argv of CMD or ENTRYPOINT: exec form as is, shell form through the SHELL.
fn argv(c: &CommandForm, scope: &Scope) -> Vec<String> {
    match c {
        CommandForm::Exec(a) => a.clone(),
        CommandForm::Shell(s) => scope.shell().into_iter().chain([s.clone()]).collect(),
    }
}

/// CMD: the default command; an ENTRYPOINT later in the stage keeps it.
pub(super) fn dispatch_cmd(c: &CommandForm, scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let argv = argv(c, scope);
    scope.config.insert("Cmd".into(), json!(argv));
    scope.cmd_set = true;
    record(out, &Record::Argv("CMD", argv), None);
    Ok(())
}

/// ENTRYPOINT: a CMD inherited from the base is dropped (it makes no sense with a new
/// entrypoint); one set in this stage stays, as docker does.
pub(super) fn dispatch_entrypoint(c: &CommandForm, scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let argv = argv(c, scope);
    // `ENTRYPOINT []` resets it: no entrypoint at all, as BuildKit records it.
    let value = if argv.is_empty() { serde_json::Value::Null } else { json!(argv) };
    scope.config.insert("Entrypoint".into(), value);
    if !scope.cmd_set {
        scope.config.remove("Cmd");
    }
    record(out, &Record::Argv("ENTRYPOINT", argv), None);
    Ok(())
}

/// SHELL: the shell of later shell-form RUN, CMD and ENTRYPOINT.
pub(super) fn dispatch_shell(ins: &Ins<'_>, s: &[String], scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    if s.is_empty() {
        return Err(ins.error("SHELL needs at least one argument"));
    }
    scope.shell = Some(s.to_vec());
    record(out, &Record::Argv("SHELL", s.to_vec()), None);
    Ok(())
}

/// HEALTHCHECK: the config's health check (`NONE` turns the base's off).
pub(super) fn dispatch_healthcheck(
    ins: &Ins<'_>,
    h: Option<&Healthcheck>,
    scope: &mut Scope,
    out: &mut StageOut,
) -> Result<()> {
    let v = match h {
        None => json!({ "Test": ["NONE"] }),
        Some(h) => {
            let test = match &h.test {
                CommandForm::Exec(a) => std::iter::once("CMD".to_owned()).chain(a.iter().cloned()).collect::<Vec<_>>(),
                CommandForm::Shell(s) => vec!["CMD-SHELL".to_owned(), s.clone()],
            };
            let mut v = json!({ "Test": test });
            for (d, key) in h.durations.iter().zip(["Interval", "Timeout", "StartPeriod", "StartInterval"]) {
                if let Some(d) = d {
                    v[key] = json!(d);
                }
            }
            if let Some(r) = h.retries {
                v["Retries"] = json!(r);
            }
            v
        }
    };
    scope.config.insert("Healthcheck".into(), v);
    record(out, &Record::AsWritten(ins.text.to_owned()), None);
    Ok(())
}

/// ONBUILD: a trigger stored in the config, run by builds that use this image as a base.
pub(super) fn dispatch_onbuild(ins: &Ins<'_>, text: &str, scope: &mut Scope, out: &mut StageOut) -> Result<()> {
    let list = scope.config.entry("OnBuild").or_insert_with(|| json!([]));
    if let Some(a) = list.as_array_mut() {
        a.push(json!(text));
    }
    record(out, &Record::AsWritten(ins.text.to_owned()), None);
    Ok(())
}

/// `EXPOSE 80`, `80/udp`, `8000-8002/tcp` into `port/proto` keys.
pub(super) fn expose_ports(s: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(format!("invalid protocol in EXPOSE {s:?}"));
    }
    let bad = || format!("invalid port in EXPOSE {s:?}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>().map_err(|_| bad())?, b.parse::<u16>().map_err(|_| bad())?),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}
