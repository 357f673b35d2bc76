//! Dockerfile to graph: the only module that knows both.
//!
//! Stages are converted on demand from the target backwards, so a stage nothing needs
//! is never resolved or built. A stage starts from its base's config in a typed
//! [`scope::Scope`] (ARGs, ENV, USER, WORKDIR, SHELL, author, whether CMD was set); then
//! each instruction goes to its own `dispatch_*` method (in [`dispatch`]), as BuildKit's
//! Dockerfile frontend does: it is expanded in the scope (ENV over ARG, build args over
//! ARG defaults), becomes a vertex (RUN, COPY, ADD, WORKDIR) or a change to the scope,
//! and leaves one history step whose `created_by` text [`history::created_by`] writes.
//!
//! Progress names count as BuildKit counts them: only FROM and the steps that become
//! vertices are numbered (`[build 2/5] WORKDIR /srv/app`), a one-stage Dockerfile's
//! steps carry no stage name, and names show the expanded text.

mod dispatch;
mod history;
pub mod scope;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use oci::Platform;

use serde_json::{json, Value};

use crate::dockerfile::expand::expand_word;
use crate::dockerfile::{self, Dockerfile, Kind, Word};
use crate::error::{Error, Result};
use crate::graph::{CopyFrom, Graph, Layer, Op, Vertex, VertexId};
use scope::Scope;

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
    /// The platforms the target is built for (`--platform`), one image each, in order (the
    /// host's when empty); `BUILDPLATFORM` is the host's.
    pub target_platforms: Vec<Platform>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter` stage names.
    pub no_cache_filter: &'a [String],
    /// RUN's default network is the host's (`--network host|default`) or none.
    pub host_network: bool,
    /// `RUN --security=insecure` is allowed (`--allow security.insecure`).
    pub allow_insecure: bool,
    /// `--add-host` lines for every RUN step.
    pub extra_hosts: &'a [String],
    /// Resolves (and pulls when needed) a base image by reference.
    pub resolve: &'a (dyn Fn(&str, &Platform) -> Result<BaseImage> + Sync),
    /// `--build-context`s by name: they take the place of stages and images of that name.
    pub named: &'a BTreeMap<String, crate::context::NamedContext>,
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
    /// The ARGs the stage ends with, which a stage built FROM it inherits.
    pub args: scope::StageArgs,
}

/// The graph of a build and, per target platform, the converted stages.
pub struct Converted {
    /// The build graph, shared by every platform's stages (a step that does not depend on
    /// the platform is one vertex).
    pub graph: Graph,
    /// One image per target platform, in the order asked.
    pub images: Vec<ImageOut>,
    /// The platforms RUN steps execute for: each one not the host's needs an emulator.
    pub run_platforms: BTreeSet<Platform>,
}

/// The stages converted for one target platform.
pub struct ImageOut {
    /// The platform the image is for.
    pub platform: Platform,
    /// Stages converted (only those the target needs).
    pub stages: HashMap<usize, StageOut>,
    /// The target stage's index.
    pub target: usize,
}

impl ImageOut {
    /// The target stage.
    pub fn stage(&self) -> &StageOut {
        &self.stages[&self.target]
    }
}

/// docker's PATH for a container whose image sets none (BuildKit gives it to every stage).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args docker passes to RUN without an ARG line, and keeps out of the history and
/// the cache key (unless the Dockerfile declares them with ARG). Each is given in either
/// case and reaches RUN in both, as BuildKit passes them (`HTTP_PROXY` and `http_proxy`).
pub const PROXY_ARGS: [&str; 5] = ["HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY"];

/// The proxy variables a RUN gets from `build_args`: for each of [`PROXY_ARGS`] given in any
/// case (and not declared, as `declared` tells), both spellings.
fn proxy_env(build_args: &BTreeMap<String, String>, declared: impl Fn(&str) -> bool) -> Vec<String> {
    let mut env = Vec::new();
    for p in PROXY_ARGS {
        let given = build_args.iter().find(|(k, _)| k.eq_ignore_ascii_case(p) && !declared(k));
        if let Some((_, v)) = given {
            env.push(format!("{p}={v}"));
            env.push(format!("{}={v}", p.to_ascii_lowercase()));
        }
    }
    env
}

/// Platform ARGs every build defines, usable in FROM and after `ARG NAME` in a stage: the
/// `TARGET*` ones of `target`, the `BUILD*` ones of the host.
fn platform_args(target: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", &Platform::host())] {
        m.insert(format!("{prefix}PLATFORM"), p.to_string());
        m.insert(format!("{prefix}OS"), p.os.clone());
        m.insert(format!("{prefix}ARCH"), p.architecture.clone());
        m.insert(format!("{prefix}VARIANT"), p.variant.clone().unwrap_or_default());
    }
    m
}

/// Converts the stages `target` needs, for each target platform, into one graph.
pub fn convert(df: &Dockerfile, target: Option<&str>, inputs: &Inputs<'_>) -> Result<Converted> {
    let target = match target {
        None => df.stages.len() - 1,
        Some(t) => df.stage_index(t).ok_or_else(|| {
            let last = df.stages.last().map_or(0, |s| s.span.start);
            df.error(last, format!("target stage {t:?} could not be found (--target names a stage: FROM ... AS NAME)"))
        })?,
    };
    let platforms = match inputs.target_platforms.is_empty() {
        true => vec![Platform::host()],
        false => inputs.target_platforms.clone(),
    };
    let mut out = Converted { graph: Graph::default(), images: Vec::new(), run_platforms: BTreeSet::new() };
    let mut images = HashMap::new();
    for p in platforms {
        let mut c = Converter {
            df,
            inputs,
            platform: platform_args(&p),
            current: p.clone(),
            named_by_platform: inputs.target_platforms.len() > 1,
            target_platform: p,
            run_platforms: std::mem::take(&mut out.run_platforms),
            graph: std::mem::take(&mut out.graph),
            stages: HashMap::new(),
            images: std::mem::take(&mut images),
            global: BTreeMap::new(),
            visiting: Vec::new(),
        };
        c.target(target)?;
        out.images.push(ImageOut { platform: c.target_platform, stages: c.stages, target });
        (out.graph, out.run_platforms, images) = (c.graph, c.run_platforms, c.images);
    }
    Ok(out)
}

impl Converter<'_> {
    /// Converts the global ARGs, then stage `target` and those it needs.
    fn target(&mut self, target: usize) -> Result<()> {
        let (df, inputs) = (self.df, self.inputs);
        // Global ARGs: defaults expanded in order, overridden by --build-arg.
        for decl in &df.global_args {
            let value = match inputs.build_args.get(&decl.name) {
                Some(v) => Some(v.clone()),
                None => match &decl.default {
                    Some(w) => Some(self.expand_global(w)?),
                    None => self.platform.get(&decl.name).cloned(),
                },
            };
            self.global.insert(decl.name.clone(), value);
        }
        self.stage(target).map(drop)
    }
}

/// The conversion of one build: the graph so far and the stages done.
struct Converter<'a> {
    df: &'a Dockerfile,
    inputs: &'a Inputs<'a>,
    /// The platform ARGs (TARGETOS, BUILDPLATFORM, ...).
    platform: BTreeMap<String, String>,
    /// The platform of the image being converted.
    target_platform: Platform,
    /// The platform of the stage being converted (its `FROM --platform`, else the target's).
    current: Platform,
    /// Steps are named with their stage's platform (`[linux/arm64 build 2/5]`): a build for
    /// several platforms.
    named_by_platform: bool,
    /// The platforms RUN steps were converted for.
    run_platforms: BTreeSet<Platform>,
    graph: Graph,
    stages: HashMap<usize, StageOut>,
    /// Image vertices by reference and platform, so one image used twice is one vertex.
    images: HashMap<(String, Platform), (VertexId, Value)>,
    /// Global ARGs (before the first FROM), after `--build-arg`s.
    global: BTreeMap<String, Option<String>>,
    /// The stages being converted, to refuse a circle.
    visiting: Vec<usize>,
}

/// One instruction being dispatched: the Dockerfile it comes from (the build's, or an
/// ONBUILD trigger's), where it is, and its text as written.
struct Ins<'i> {
    df: &'i Dockerfile,
    at: usize,
    text: &'i str,
}

impl Ins<'_> {
    /// `w` expanded with `look`; an error points into the word.
    fn expand(&self, w: &Word, look: &dyn Fn(&str) -> Option<String>) -> Result<String> {
        expand_word(&w.raw, self.df.escape, look).map_err(|e| self.df.error(w.at + e.offset, e.message))
    }

    /// An error at this instruction.
    fn error(&self, message: impl Into<String>) -> Error {
        self.df.error(self.at, message)
    }
}

impl<'a> Converter<'a> {
    /// A FROM-line word: global ARGs and the platform's.
    fn expand_global(&self, w: &Word) -> Result<String> {
        let look = |n: &str| self.global.get(n).cloned().flatten().or_else(|| self.platform.get(n).cloned());
        expand_word(&w.raw, self.df.escape, &look).map_err(|e| self.df.error(w.at + e.offset, e.message))
    }

    fn no_cache(&self, stage: Option<&str>) -> bool {
        self.inputs.no_cache
            || stage.is_some_and(|s| self.inputs.no_cache_filter.iter().any(|f| f.eq_ignore_ascii_case(s)))
    }

    /// The vertex and config of an image used by reference (FROM, COPY --from, mount from),
    /// for the platform of the stage being converted.
    fn image(&mut self, reference: &str, at: usize) -> Result<(VertexId, Value)> {
        let key = (reference.to_owned(), self.current.clone());
        if let Some(hit) = self.images.get(&key) {
            return Ok(hit.clone());
        }
        let (op, name, config) = if reference == "scratch" {
            (Op::Scratch, "FROM scratch".to_owned(), json!({}))
        } else {
            let base = (self.inputs.resolve)(reference, &self.current).map_err(|e| match e {
                Error::Dockerfile { .. } => e,
                other => self.df.error(at, format!("base image {reference}: {}", oci::error::chain(&other))),
            })?;
            let name = format!("FROM {reference}@{}", base.manifest);
            (Op::Image { manifest: base.manifest, layers: base.layers }, name, base.config)
        };
        let v = self.graph.add(Vertex { op, inputs: vec![], name, at, no_cache: false });
        self.images.insert(key, (v, config.clone()));
        Ok((v, config))
    }

    /// The `--build-context` called `name`, if there is one: an image's vertex and config,
    /// or a local directory's files copied onto scratch (once per name and platform).
    fn named(&mut self, name: &str, at: usize) -> Result<Option<(VertexId, Value)>> {
        let dir = match self.inputs.named.get(name) {
            None => return Ok(None),
            Some(crate::context::NamedContext::Image(reference)) => return self.image(reference, at).map(Some),
            Some(crate::context::NamedContext::Dir(_)) => name,
        };
        // A key no image reference can be.
        let key = (format!("\0context {dir}"), self.current.clone());
        if let Some(hit) = self.images.get(&key) {
            return Ok(Some(hit.clone()));
        }
        let (scratch, _) = self.image("scratch", at)?;
        let op = Op::Copy(crate::graph::CopyOp {
            from: CopyFrom::Named(dir.to_owned()),
            sources: vec![crate::graph::CopySrc::Path(".".into())],
            dest: "/".into(),
            dest_is_dir: true,
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: Vec::new(),
            unpack_archives: false,
        });
        let name = format!("context {dir}");
        let v = self.graph.add(Vertex { op, inputs: vec![scratch], name, at, no_cache: self.inputs.no_cache });
        self.images.insert(key, (v, json!({})));
        Ok(Some((v, json!({}))))
    }

    /// A `--from` / `from=` value: a build context of that name, a stage name or index,
    /// else an image reference.
    fn source(&mut self, name: &str, at: usize) -> Result<VertexId> {
        if let Some((v, _)) = self.named(name, at)? {
            return Ok(v);
        }
        let idx = match name.parse::<usize>() {
            Ok(i) if i < self.df.stages.len() => Some(i),
            _ => self.df.stage_index(name),
        };
        match idx {
            Some(i) => Ok(self.stage(i)?.vertex),
            None => Ok(self.image(name, at)?.0),
        }
    }

    /// Converts stage `i` (once) and returns it.
    fn stage(&mut self, i: usize) -> Result<StageOut> {
        if let Some(done) = self.stages.get(&i) {
            return Ok(done.clone());
        }
        let df = self.df;
        let st = &df.stages[i];
        if self.visiting.contains(&i) {
            return Err(df.error(st.span.start, "stages refer to each other in a circle"));
        }
        self.visiting.push(i);
        let base_name = self.expand_global(&st.base)?;
        let platform = self.stage_platform(st)?;
        let outer = std::mem::replace(&mut self.current, platform);
        // FROM a build context of that name (before a stage of that name, as BuildKit), a
        // previous stage, or an image.
        let named = self.named(&base_name, st.base.at)?;
        let from_stage = df.stage_index(&base_name).filter(|j| *j < i && named.is_none());
        let (base_vertex, base_config, base_history, base_args) = match (from_stage, named) {
            (_, Some((v, cfg))) => {
                let hist = cfg.get("history").and_then(Value::as_array).cloned().unwrap_or_default();
                (v, cfg, hist, scope::StageArgs::default())
            }
            (Some(j), None) => {
                let out = self.stage(j)?;
                (out.vertex, out.config, Vec::new(), out.args)
            }
            (None, None) => {
                let (v, cfg) = self.image(&base_name, st.base.at)?;
                let hist = cfg.get("history").and_then(Value::as_array).cloned().unwrap_or_default();
                (v, cfg, hist, scope::StageArgs::default())
            }
        };
        let mut scope = Scope::from_base(&base_config);
        scope.inherit(base_args);
        // ONBUILD triggers of the base run first, in order, each parsed as its own Dockerfile.
        let mut triggers = Vec::new();
        for t in std::mem::take(&mut scope.triggers) {
            let file = format!("{} (ONBUILD of {base_name})", df.file);
            triggers.push(dockerfile::parse(&file, &format!("FROM scratch\n{t}\n"))?);
        }
        let steps = triggers.iter().flat_map(|t| &t.stages[0].instructions).chain(&st.instructions);
        let numbered = 1 + steps.filter(|ins| makes_vertex(&ins.kind)).count();
        let mut label = (df.stages.len() > 1).then(|| st.name.clone().unwrap_or_else(|| format!("stage-{i}")));
        if self.named_by_platform {
            let on = self.platform_label();
            label = Some(label.map_or_else(|| on.clone(), |l| format!("{on} {l}")));
        }
        scope.start_naming(label, numbered);
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
            args: scope::StageArgs::default(),
        };
        let stage_name = st.name.as_deref();
        for parsed in &triggers {
            for ins in &parsed.stages[0].instructions {
                self.dispatch(parsed, ins, &mut scope, &mut out, stage_name)?;
            }
        }
        for ins in &st.instructions {
            self.dispatch(df, ins, &mut scope, &mut out, stage_name)?;
        }
        out.args = scope.stage_args();
        out.config = scope.into_image(&self.current);
        self.current = outer;
        self.visiting.pop();
        self.stages.insert(i, out.clone());
        Ok(out)
    }

    /// A stage's platform: its `FROM --platform=` (global and platform ARGs expanded),
    /// else the target's.
    /// How a step's name shows the platforms of a multi-platform build, as BuildKit's: the
    /// stage's platform, then `->` and the target's architecture where the stage is pinned
    /// to another (`linux/amd64->arm64`), so that its runs for each target differ.
    fn platform_label(&self) -> String {
        if self.current == self.target_platform {
            return self.current.to_string();
        }
        let t = &self.target_platform;
        let target = t.variant.as_ref().map_or_else(|| t.architecture.clone(), |v| format!("{}/{v}", t.architecture));
        format!("{}->{target}", self.current)
    }

    fn stage_platform(&self, st: &dockerfile::Stage) -> Result<Platform> {
        let Some(p) = &st.platform else { return Ok(self.target_platform.clone()) };
        let text = self.expand_global(p)?;
        text.parse().map_err(|e: oci::Error| self.df.error(p.at, format!("FROM --platform: {e}")))
    }

    /// Sends one instruction to its `dispatch_*` method.
    fn dispatch(
        &mut self,
        df: &Dockerfile,
        ins: &dockerfile::Instruction,
        scope: &mut Scope,
        out: &mut StageOut,
        stage: Option<&str>,
    ) -> Result<()> {
        let i = Ins { df, at: ins.span.start, text: &ins.text };
        let no_cache = self.no_cache(stage);
        let step = dispatch::Step { no_cache };
        match &ins.kind {
            Kind::Run(run) => self.dispatch_run(&i, run, scope, out, &step),
            Kind::Copy(copy) => self.dispatch_copy(&i, copy, false, scope, out, &step),
            Kind::Add(copy) => self.dispatch_copy(&i, copy, true, scope, out, &step),
            Kind::Workdir(w) => self.dispatch_workdir(&i, w, scope, out, &step),
            Kind::Env(w) => dispatch::dispatch_env(&i, w, scope, out),
            Kind::Label(w) => dispatch::dispatch_label(&i, w, scope, out),
            Kind::Arg(decls) => self.dispatch_arg(&i, decls, scope, out),
            Kind::Maintainer(w) => dispatch::dispatch_maintainer(&i, w, scope, out),
            Kind::Expose(words) => dispatch::dispatch_expose(&i, words, scope, out),
            Kind::Volume(words) => dispatch::dispatch_volume(&i, words, scope, out),
            Kind::User(w) => dispatch::dispatch_user(&i, w, scope, out),
            Kind::Cmd(c) => dispatch::dispatch_cmd(c, scope, out),
            Kind::Entrypoint(c) => dispatch::dispatch_entrypoint(c, scope, out),
            Kind::Shell(s) => dispatch::dispatch_shell(&i, s, scope, out),
            Kind::Stopsignal(w) => dispatch::dispatch_stopsignal(&i, w, scope, out),
            Kind::Healthcheck(h) => dispatch::dispatch_healthcheck(&i, h.as_ref(), scope, out),
            Kind::Onbuild(text) => dispatch::dispatch_onbuild(&i, text, scope, out),
        }
    }
}

/// The instructions that become vertices (and so get a step number).
fn makes_vertex(kind: &Kind) -> bool {
    matches!(kind, Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) | Kind::Workdir(_))
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
