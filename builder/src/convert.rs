//! Dockerfile to graph: the only file that knows both.
//!
//! Stages are converted on demand from the target backwards, so a stage nothing needs
//! is never resolved or built. Each instruction is expanded in its stage's scope (ENV
//! over ARG, build args over ARG defaults), becomes a vertex (RUN, COPY, ADD, WORKDIR)
//! or a change to the image config (everything else), and leaves a history step.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::dockerfile::expand::{expand_word, expand_words, key_values};
use crate::dockerfile::mount::{MountSpec, MountType};
use crate::dockerfile::{self, CommandForm, CopySource, Dockerfile, Kind, Word};
use crate::error::{Error, Result};
use crate::graph::{CopyFrom, CopyOp, CopySrc, ExecMount, ExecOp, Graph, Layer, Op, Vertex, VertexId};

/// A base image as the converter needs it: identity, layers and config.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The manifest digest.
    pub manifest: oci::Digest,
    /// The layers, base first.
    pub layers: Vec<Layer>,
    /// The image config document.
    pub config: Value,
}

/// What the conversion needs from outside: options and a way to get base images.
pub struct Inputs<'a> {
    /// `--build-arg`s.
    pub build_args: &'a BTreeMap<String, String>,
    /// `os/arch[/variant]` of the target (the host's for now).
    pub target_platform: (String, String, Option<String>),
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter` stage names.
    pub no_cache_filter: &'a [String],
    /// RUN's default network is the host's (`--network host|default`) or none.
    pub host_network: bool,
    /// Resolves (and pulls when needed) a base image by reference.
    pub resolve: &'a (dyn Fn(&str) -> Result<BaseImage> + Sync),
}

/// A converted stage: its last vertex, its image config and the steps of its history.
#[derive(Debug, Clone)]
pub struct StageOut {
    /// The vertex holding the stage's filesystem.
    pub vertex: VertexId,
    /// The image config (`config`, `author`, platform; rootfs and history are filled at export).
    pub config: Value,
    /// History entries inherited from the base image.
    pub base_history: Vec<Value>,
    /// This build's steps: `created_by`, and the vertex that may add a layer.
    pub steps: Vec<(String, Option<VertexId>)>,
    /// The base layers (those of the FROM image or stage), for history bookkeeping.
    pub base_vertex: VertexId,
    /// The stage this one starts FROM, whose history comes first.
    pub from_stage: Option<usize>,
}

/// The graph of a build and the converted stages by index.
pub struct Converted {
    /// The build graph.
    pub graph: Graph,
    /// Stages converted (only those the target needs).
    pub stages: HashMap<usize, StageOut>,
    /// The target stage's index.
    pub target: usize,
}

/// Platform ARGs every build defines, usable in FROM and after `ARG NAME` in a stage.
fn platform_args(p: &(String, String, Option<String>)) -> BTreeMap<String, String> {
    let (os, arch, variant) = p;
    let full = match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    };
    let mut m = BTreeMap::new();
    for prefix in ["TARGET", "BUILD"] {
        m.insert(format!("{prefix}PLATFORM"), full.clone());
        m.insert(format!("{prefix}OS"), os.clone());
        m.insert(format!("{prefix}ARCH"), arch.clone());
        m.insert(format!("{prefix}VARIANT"), variant.clone().unwrap_or_default());
    }
    m
}

/// Build args docker passes to RUN without an ARG line, and keeps out of the history.
const PROXY_ARGS: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy"];

/// Converts the stages `target` needs into a graph.
pub fn convert(df: &Dockerfile, target: Option<&str>, inputs: &Inputs<'_>) -> Result<Converted> {
    let target = match target {
        None => df.stages.len() - 1,
        Some(t) => df.stage_index(t).ok_or_else(|| Error::Option(format!("target stage {t:?} could not be found")))?,
    };
    let mut c = Converter {
        df,
        inputs,
        graph: Graph::default(),
        stages: HashMap::new(),
        images: HashMap::new(),
        global: BTreeMap::new(),
    };
    // Global ARGs: defaults expanded in order, overridden by --build-arg.
    let platform = platform_args(&inputs.target_platform);
    for decl in &df.global_args {
        let value = match inputs.build_args.get(&decl.name) {
            Some(v) => Some(v.clone()),
            None => match &decl.default {
                Some(w) => {
                    Some(c.expand(w, &|n| c.global.get(n).cloned().flatten().or_else(|| platform.get(n).cloned()))?)
                }
                None => platform.get(&decl.name).cloned(),
            },
        };
        c.global.insert(decl.name.clone(), value);
    }
    c.stage(target, &mut Vec::new())?;
    Ok(Converted { graph: c.graph, stages: c.stages, target })
}

struct Converter<'a> {
    df: &'a Dockerfile,
    inputs: &'a Inputs<'a>,
    graph: Graph,
    stages: HashMap<usize, StageOut>,
    /// Image vertices by reference, so one image used twice is one vertex.
    images: HashMap<String, (VertexId, Value)>,
    global: BTreeMap<String, Option<String>>,
}

/// The scope of one stage while its instructions are converted.
struct Scope {
    /// ARGs declared in this stage: name -> value (None: declared without value).
    args: BTreeMap<String, Option<String>>,
    config: Map<String, Value>,
    shell: Vec<String>,
    label: String,
    count: usize,
    index: usize,
}

impl Scope {
    fn env(&self) -> Vec<String> {
        self.config
            .get("Env")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
    }

    /// What `$NAME` means at this point of the stage: ENV over ARG, as docker scopes them.
    /// The closure owns a snapshot, so the scope can change while it is used.
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + 'static {
        let args = self.args.clone();
        let env = self.env();
        move |n: &str| {
            env.iter()
                .rev()
                .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == n).map(|(_, v)| v.to_owned()))
                .or_else(|| args.get(n).cloned().flatten())
        }
    }

    fn workdir(&self) -> String {
        self.config.get("WorkingDir").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("/").to_owned()
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        env.retain(|kv| kv.split_once('=').map_or(kv != key, |(k, _)| k != key));
        env.push(format!("{key}={value}"));
        self.config.insert("Env".into(), json!(env));
    }

    fn next_name(&mut self, text: &str) -> String {
        self.index += 1;
        format!("[{} {}/{}] {}", self.label, self.index, self.count, text)
    }
}

impl<'a> Converter<'a> {
    fn expand(&self, w: &Word, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
        expand_word(&w.raw, self.df.escape, lookup).map_err(|e| self.df.error(w.at + e.offset, e.message))
    }

    fn no_cache(&self, stage: Option<&str>) -> bool {
        self.inputs.no_cache
            || stage.is_some_and(|s| self.inputs.no_cache_filter.iter().any(|f| f.eq_ignore_ascii_case(s)))
    }

    /// The vertex and config of an image used by reference (FROM, COPY --from, mount from).
    fn image(&mut self, reference: &str, at: usize) -> Result<(VertexId, Value)> {
        if let Some(hit) = self.images.get(reference) {
            return Ok(hit.clone());
        }
        let (vertex, config) = if reference == "scratch" {
            let v = self.graph.add(Vertex {
                op: Op::Scratch,
                inputs: vec![],
                name: "FROM scratch".into(),
                stage: None,
                at,
                no_cache: false,
            });
            (v, json!({}))
        } else {
            let base = (self.inputs.resolve)(reference).map_err(|e| match e {
                Error::Dockerfile { .. } => e,
                other => self.df.error(at, format!("base image {reference}: {}", oci::error::chain(&other))),
            })?;
            let v = self.graph.add(Vertex {
                op: Op::Image { manifest: base.manifest.clone(), layers: base.layers },
                inputs: vec![],
                name: format!("FROM {reference}@{}", base.manifest),
                stage: None,
                at,
                no_cache: false,
            });
            (v, base.config)
        };
        self.images.insert(reference.to_owned(), (vertex, config.clone()));
        Ok((vertex, config))
    }

    /// Adds the vertex of one instruction of a stage, named as the progress shows it.
    #[allow(clippy::too_many_arguments)]
    fn add_step(
        &mut self,
        scope: &mut Scope,
        text: &str,
        op: Op,
        inputs: Vec<VertexId>,
        stage: Option<&str>,
        at: usize,
        no_cache: bool,
    ) -> VertexId {
        let name = scope.next_name(text);
        self.graph.add(Vertex { op, inputs, name, stage: stage.map(str::to_owned), at, no_cache })
    }

    /// A `--from` / `from=` value: a stage name or index, else an image reference.
    fn source(&mut self, name: &str, at: usize, visiting: &mut Vec<usize>) -> Result<VertexId> {
        let idx = match name.parse::<usize>() {
            Ok(i) if i < self.df.stages.len() => Some(i),
            _ => self.df.stage_index(name),
        };
        match idx {
            Some(i) => Ok(self.stage(i, visiting)?.vertex),
            None => Ok(self.image(name, at)?.0),
        }
    }

    /// Converts stage `i` (once) and returns it.
    fn stage(&mut self, i: usize, visiting: &mut Vec<usize>) -> Result<StageOut> {
        if let Some(done) = self.stages.get(&i) {
            return Ok(done.clone());
        }
        let st = &self.df.stages[i];
        if visiting.contains(&i) {
            return Err(self.df.error(st.span.start, "stages refer to each other in a circle"));
        }
        visiting.push(i);
        let platform = platform_args(&self.inputs.target_platform);
        let global = self.global.clone();
        let base_name =
            self.expand(&st.base, &|n| global.get(n).cloned().flatten().or_else(|| platform.get(n).cloned()))?;
        if let Some(p) = &st.platform {
            let p = self.expand(p, &|n| global.get(n).cloned().flatten().or_else(|| platform.get(n).cloned()))?;
            let want = platform.get("TARGETPLATFORM").cloned().unwrap_or_default();
            if p != want && p != platform["BUILDPLATFORM"] {
                return Err(self.df.error(
                    st.span.start,
                    format!("--platform={p}: berth builds for the host's platform ({want}) only"),
                ));
            }
        }
        // FROM a previous stage, or an image.
        let from_stage = self.df.stage_index(&base_name).filter(|j| *j < i);
        let (base_vertex, base_config, base_history) = match from_stage {
            Some(j) => {
                let out = self.stage(j, visiting)?;
                (out.vertex, out.config.clone(), Vec::new())
            }
            None => {
                let (v, cfg) = self.image(&base_name, st.base.at)?;
                let hist = cfg.get("history").and_then(Value::as_array).cloned().unwrap_or_default();
                (v, cfg, hist)
            }
        };
        let mut config = base_config.get("config").and_then(Value::as_object).cloned().unwrap_or_default();
        let triggers: Vec<String> = config
            .remove("OnBuild")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let shell = config
            .get("Shell")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_else(|| vec!["/bin/sh".to_owned(), "-c".to_owned()]);
        let label = st.name.clone().unwrap_or_else(|| format!("stage-{i}"));
        let mut scope = Scope {
            args: BTreeMap::new(),
            config,
            shell,
            label: label.clone(),
            count: st.instructions.len() + 1 + triggers.len(),
            index: 0,
        };
        let from_name = scope.next_name(&format!("FROM {base_name}"));
        if let Some(v) = self.graph.vertices.get_mut(base_vertex) {
            if matches!(v.op, Op::Image { .. } | Op::Scratch) && !v.name.starts_with('[') {
                v.name = from_name;
            }
        }
        let mut out = StageOut {
            vertex: base_vertex,
            config: json!({}),
            base_history,
            steps: Vec::new(),
            base_vertex,
            from_stage,
        };
        // ONBUILD triggers of the base run first, in order.
        let mut trigger_dfs = Vec::new();
        for t in &triggers {
            let text = format!("FROM scratch\n{t}\n");
            let parsed = dockerfile::parse(&format!("{} (ONBUILD of {base_name})", self.df.file), &text)?;
            trigger_dfs.push(parsed);
        }
        for parsed in &trigger_dfs {
            for ins in &parsed.stages[0].instructions {
                self.instruction(parsed, ins, &mut scope, &mut out, st.name.as_deref(), visiting)?;
            }
        }
        for ins in &st.instructions {
            self.instruction(self.df, ins, &mut scope, &mut out, st.name.as_deref(), visiting)?;
        }
        let (os, arch, variant) = &self.inputs.target_platform;
        let mut image = json!({ "architecture": arch, "os": os, "config": Value::Object(scope.config) });
        if let Some(v) = variant {
            image["variant"] = json!(v);
        }
        if let Some(author) =
            base_config.get("author").filter(|_| !out.steps.iter().any(|(c, _)| c.starts_with("MAINTAINER")))
        {
            image["author"] = author.clone();
        }
        if let Some(a) = scope.args.get("\u{0}author").cloned().flatten() {
            image["author"] = json!(a);
        }
        out.config = image;
        visiting.pop();
        self.stages.insert(i, out.clone());
        Ok(out)
    }

    #[allow(clippy::too_many_lines)]
    fn instruction(
        &mut self,
        df: &Dockerfile,
        ins: &dockerfile::Instruction,
        scope: &mut Scope,
        out: &mut StageOut,
        stage: Option<&str>,
        visiting: &mut Vec<usize>,
    ) -> Result<()> {
        let esc = df.escape;
        let err = |w: &Word, e: crate::dockerfile::expand::ExpandError| df.error(w.at + e.offset, e.message);
        let no_cache = self.no_cache(stage);
        let text = ins.text.clone();
        match &ins.kind {
            Kind::Run(run) => {
                let look = scope.lookup();
                let args = match &run.command {
                    CommandForm::Exec(a) => a.clone(),
                    CommandForm::Shell(s) => scope.shell.iter().cloned().chain([s.clone()]).collect(),
                };
                let host_network = match &run.network {
                    None => self.inputs.host_network,
                    Some(w) => match expand_word(&w.raw, esc, &look).map_err(|e| err(w, e))?.as_str() {
                        "default" | "host" => true,
                        "none" => false,
                        other => return Err(df.error(w.at, format!("unknown --network={other} (default, none, host)"))),
                    },
                };
                if let Some(w) = &run.security {
                    let v = expand_word(&w.raw, esc, &look).map_err(|e| err(w, e))?;
                    if v != "sandbox" {
                        return Err(
                            df.error(w.at, format!("--security={v} is not allowed: berth runs RUN steps sandboxed"))
                        );
                    }
                }
                let mut inputs = vec![out.vertex];
                let mut mounts = Vec::new();
                let workdir = scope.workdir();
                for w in &run.mounts {
                    let raw = expand_word(&w.raw, esc, &look).map_err(|e| err(w, e))?;
                    let mut spec = MountSpec::parse(&raw).map_err(|m| df.error(w.at, m))?;
                    if !spec.target.is_empty() {
                        spec.target = join_path(&workdir, &spec.target);
                    }
                    let input = match (&spec.from, spec.kind) {
                        (Some(from), MountType::Bind | MountType::Cache) => {
                            let v = self.source(from, w.at, visiting)?;
                            inputs.push(v);
                            Some(inputs.len() - 1)
                        }
                        _ => None,
                    };
                    mounts.push(ExecMount { spec, input });
                }
                // The environment: the image's ENV, then build args in scope (ENV wins).
                let mut env = scope.env();
                for (k, v) in &scope.args {
                    if let Some(v) = v {
                        if !k.starts_with('\u{0}')
                            && !env.iter().any(|kv| kv.split_once('=').is_some_and(|(ek, _)| ek == k))
                        {
                            env.push(format!("{k}={v}"));
                        }
                    }
                }
                for p in PROXY_ARGS {
                    if let Some(v) = self.inputs.build_args.get(p) {
                        env.push(format!("{p}={v}"));
                    }
                }
                if !env.iter().any(|kv| kv.starts_with("PATH=")) {
                    env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
                }
                let user =
                    scope.config.get("User").and_then(Value::as_str).filter(|u| !u.is_empty()).map(str::to_owned);
                let op = Op::Exec(ExecOp { args: args.clone(), env, cwd: workdir, user, host_network, mounts });
                let v = self.add_step(scope, &text, op, inputs, stage, ins.span.start, no_cache);
                out.vertex = v;
                // As docker writes it: `|N K=V ...` for the build args in scope (proxies excepted).
                let args_in_scope: Vec<String> = scope
                    .args
                    .iter()
                    .filter(|(k, v)| !k.starts_with('\u{0}') && v.is_some())
                    .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("")))
                    .collect();
                let prefix = if args_in_scope.is_empty() {
                    String::new()
                } else {
                    format!("|{} {} ", args_in_scope.len(), args_in_scope.join(" "))
                };
                let created = match &run.command {
                    CommandForm::Shell(s) => format!("RUN {prefix}{} {s} # buildkit", scope.shell.join(" ")),
                    CommandForm::Exec(a) => {
                        format!("RUN {prefix}{} # buildkit", serde_json::to_string(a).unwrap_or_default())
                    }
                };
                out.steps.push((created, Some(v)));
            }
            Kind::Copy(copy) | Kind::Add(copy) => {
                let is_add = matches!(ins.kind, Kind::Add(_));
                let look = scope.lookup();
                let exp = |w: &Word| expand_word(&w.raw, esc, &look).map_err(|e| err(w, e));
                let mut sources = Vec::new();
                let mut from_context = false;
                for s in &copy.sources {
                    match s {
                        CopySource::Path(w) => {
                            let p = exp(w)?;
                            if is_add && (p.starts_with("http://") || p.starts_with("https://")) {
                                if p.ends_with(".git") || p.starts_with("git@") {
                                    return Err(df.error(w.at, "ADD of a git repository is not supported by berth yet"));
                                }
                                let checksum = match &copy.checksum {
                                    Some(c) => {
                                        let v = exp(c)?;
                                        Some(
                                            v.parse::<oci::Digest>()
                                                .map_err(|e| df.error(c.at, format!("--checksum: {e}")))?,
                                        )
                                    }
                                    None => None,
                                };
                                sources.push(CopySrc::Url { url: p, checksum });
                            } else {
                                if copy.from.is_none() {
                                    from_context = true;
                                }
                                sources.push(CopySrc::Path(p));
                            }
                        }
                        CopySource::Heredoc { name, content, expand } => {
                            let content = if *expand {
                                expand_heredoc(content, esc, &look).map_err(|m| df.error(ins.span.start, m))?
                            } else {
                                content.clone()
                            };
                            sources.push(CopySrc::Inline { name: name.clone(), content });
                        }
                    }
                }
                if copy.checksum.is_some() && !sources.iter().any(|s| matches!(s, CopySrc::Url { .. })) {
                    let at = copy.checksum.as_ref().map_or(ins.span.start, |c| c.at);
                    return Err(df.error(at, "--checksum is only for URL sources"));
                }
                let dest_raw = exp(&copy.dest)?;
                let dest_is_dir =
                    dest_raw.ends_with('/') || dest_raw == "." || copy.sources.len() > 1 || dest_raw.ends_with("/.");
                let dest = join_path(&scope.workdir(), &dest_raw);
                let chmod = match &copy.chmod {
                    Some(w) => {
                        let v = exp(w)?;
                        Some(u32::from_str_radix(&v, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| {
                            df.error(w.at, format!("invalid --chmod={v}: give an octal mode like 755"))
                        })?)
                    }
                    None => None,
                };
                let chown = copy.chown.as_ref().map(exp).transpose()?;
                let exclude = copy.exclude.iter().map(exp).collect::<Result<Vec<_>>>()?;
                let mut inputs = vec![out.vertex];
                let from = match &copy.from {
                    Some(w) => {
                        let name = exp(w)?;
                        let v = self.source(&name, w.at, visiting)?;
                        inputs.push(v);
                        CopyFrom::Input
                    }
                    None if from_context => CopyFrom::Context,
                    None => CopyFrom::Nothing,
                };
                let op = Op::Copy(CopyOp {
                    from,
                    sources,
                    dest,
                    dest_is_dir,
                    chown,
                    chmod,
                    link: copy.link,
                    parents: copy.parents,
                    exclude,
                    unpack_archives: is_add,
                });
                let v = self.add_step(scope, &text, op, inputs, stage, ins.span.start, no_cache);
                out.vertex = v;
                out.steps.push((format!("{text} # buildkit"), Some(v)));
            }
            Kind::Workdir(w) => {
                let look = scope.lookup();
                let dir = expand_word(&w.raw, esc, &look).map_err(|e| err(w, e))?;
                let dir = join_path(&scope.workdir(), &dir);
                scope.config.insert("WorkingDir".into(), json!(dir));
                let op = Op::Copy(CopyOp {
                    from: CopyFrom::Nothing,
                    sources: vec![],
                    dest: dir,
                    dest_is_dir: true,
                    chown: None,
                    chmod: None,
                    link: false,
                    parents: false,
                    exclude: vec![],
                    unpack_archives: false,
                });
                let v = self.add_step(scope, &text, op, vec![out.vertex], stage, ins.span.start, no_cache);
                out.vertex = v;
                out.steps.push((text, Some(v)));
            }
            meta => {
                self.metadata(df, meta, scope)?;
                scope.next_name(&text);
                // As written (an ARG line shows its default, never the --build-arg value).
                out.steps.push((text, None));
            }
        }
        Ok(())
    }

    /// Instructions that only change the image config.
    fn metadata(&mut self, df: &Dockerfile, kind: &Kind, scope: &mut Scope) -> Result<()> {
        let esc = df.escape;
        let look = scope.lookup();
        let exp = |w: &Word| expand_word(&w.raw, esc, &look).map_err(|e| df.error(w.at + e.offset, e.message));
        let pairs = |w: &Word| key_values(&w.raw, esc, &look).map_err(|e| df.error(w.at + e.offset, e.message));
        let command = |c: &CommandForm, shell: &[String]| match c {
            CommandForm::Exec(a) => json!(a),
            CommandForm::Shell(s) => json!(shell.iter().cloned().chain([s.clone()]).collect::<Vec<_>>()),
        };
        match kind {
            Kind::Env(w) => {
                for (k, v) in pairs(w)? {
                    scope.set_env(&k, &v);
                }
            }
            Kind::Label(w) => {
                let labels = scope.config.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                for (k, v) in pairs(w)? {
                    labels[k] = json!(v);
                }
            }
            Kind::Arg(decls) => {
                let platform = platform_args(&self.inputs.target_platform);
                for d in decls {
                    let value = match self.inputs.build_args.get(&d.name) {
                        Some(v) => Some(v.clone()),
                        None => match &d.default {
                            Some(w) => Some(exp(w)?),
                            // `ARG NAME` imports the global value, or the platform's.
                            None => {
                                self.global.get(&d.name).cloned().flatten().or_else(|| platform.get(&d.name).cloned())
                            }
                        },
                    };
                    scope.args.insert(d.name.clone(), value);
                }
            }
            Kind::Maintainer(w) => {
                scope.args.insert("\u{0}author".into(), Some(exp(w)?));
            }
            Kind::Expose(words) => {
                let ports = scope.config.entry("ExposedPorts").or_insert_with(|| json!({}));
                for w in words {
                    for port in expand_words(&w.raw, esc, &look).map_err(|e| df.error(w.at + e.offset, e.message))? {
                        for p in expose_ports(&port).map_err(|m| df.error(w.at, m))? {
                            ports[p] = json!({});
                        }
                    }
                }
            }
            Kind::Volume(words) => {
                let vols = scope.config.entry("Volumes").or_insert_with(|| json!({}));
                for w in words {
                    let v = exp(w)?;
                    if v.is_empty() {
                        return Err(df.error(w.at, "VOLUME needs a path"));
                    }
                    vols[v] = json!({});
                }
            }
            Kind::User(w) => {
                scope.config.insert("User".into(), json!(exp(w)?));
            }
            Kind::Cmd(c) => {
                scope.config.insert("Cmd".into(), command(c, &scope.shell));
                scope.args.insert("\u{0}cmd-set".into(), Some("1".into()));
            }
            Kind::Entrypoint(c) => {
                scope.config.insert("Entrypoint".into(), command(c, &scope.shell));
                // A CMD inherited from the base makes no sense with a new ENTRYPOINT.
                if !scope.args.contains_key("\u{0}cmd-set") {
                    scope.config.remove("Cmd");
                }
            }
            Kind::Shell(s) => {
                if s.is_empty() {
                    return Err(Error::Option("SHELL needs at least one argument".into()));
                }
                scope.shell = s.clone();
                scope.config.insert("Shell".into(), json!(s));
            }
            Kind::Stopsignal(w) => {
                scope.config.insert("StopSignal".into(), json!(exp(w)?));
            }
            Kind::Healthcheck(h) => {
                let v = match h {
                    None => json!({ "Test": ["NONE"] }),
                    Some(h) => {
                        let test = match &h.test {
                            CommandForm::Exec(a) => {
                                std::iter::once("CMD".to_owned()).chain(a.iter().cloned()).collect::<Vec<_>>()
                            }
                            CommandForm::Shell(s) => vec!["CMD-SHELL".to_owned(), s.clone()],
                        };
                        let mut v = json!({ "Test": test });
                        for (i, key) in ["Interval", "Timeout", "StartPeriod", "StartInterval"].iter().enumerate() {
                            if let Some(d) = h.durations[i] {
                                v[*key] = json!(d);
                            }
                        }
                        if let Some(r) = h.retries {
                            v["Retries"] = json!(r);
                        }
                        v
                    }
                };
                scope.config.insert("Healthcheck".into(), v);
            }
            Kind::Onbuild(text) => {
                let list = scope.config.entry("OnBuild").or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(text));
                }
            }
            Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) | Kind::Workdir(_) => {}
        }
        Ok(())
    }
}

/// `EXPOSE 80`, `80/udp`, `8000-8002/tcp` into `port/proto` keys.
fn expose_ports(s: &str) -> std::result::Result<Vec<String>, String> {
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

/// Expands `$VAR` in a heredoc body (no quote removal: quotes are content there).
fn expand_heredoc(
    content: &str,
    escape: char,
    look: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    // Quotes in a heredoc are plain characters: protect them, expand, restore.
    let protected = content.replace('\'', "\u{1}").replace('"', "\u{2}");
    let out = expand_word(&protected, escape, look).map_err(|e| e.message)?;
    Ok(out.replace('\u{1}', "'").replace('\u{2}', "\""))
}

/// `dir` joined to `base` (an absolute path), cleaned; a trailing `/` kept off.
pub fn join_path(base: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') { dir.to_owned() } else { format!("{base}/{dir}") };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_like_workdir() {
        assert_eq!(join_path("/", "app"), "/app");
        assert_eq!(join_path("/app", "src/"), "/app/src");
        assert_eq!(join_path("/app", "/opt"), "/opt");
        assert_eq!(join_path("/app", "../x/./y"), "/x/y");
    }

    #[test]
    fn expose_normalises_ports() {
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(expose_ports("8000-8002").unwrap(), ["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert!(expose_ports("http").is_err());
    }
}
