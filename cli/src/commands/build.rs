//! `berth build`: a Dockerfile into an image, daemonless, with docker's flags.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use builder::context::{Context, Ignore};
use builder::ops::Secret;
use builder::progress::{Event, Progress};
use clap::Args;
use oci::layer::Compression;
use oci::Reference;

use super::open_store;
use super::transfer::{runtime, Remote};

/// Build an image from a Dockerfile
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth build -t app .\n  berth build -f Dockerfile.prod -t app:1 --build-arg VERSION=1 .\n  berth build --target test --progress plain .\n  berth build -t localhost:5000/app --push .\n  berth build -o type=oci,dest=app.tar ."
)]
pub struct Build {
    /// The build context directory
    context: PathBuf,
    /// The Dockerfile (relative to the current directory; `-` reads it from stdin) [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Name the image (repeat for several names)
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Build this stage (and what it needs) instead of the last
    #[arg(long)]
    target: Option<String>,
    /// Set a build argument (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Add a label to the image (KEY=VALUE)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Do not use the cache
    #[arg(long)]
    no_cache: bool,
    /// Do not use the cache for these stages
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    no_cache_filter: Vec<String>,
    /// Always pull base images, even when the local store has them
    #[arg(long)]
    pull: bool,
    /// Target platform: the host's only (os/arch)
    #[arg(long)]
    platform: Option<String>,
    /// Progress output: auto, tty, plain, quiet or rawjson
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// Push the image to its registry after the build
    #[arg(long)]
    push: bool,
    /// Also write the image out: type=oci|docker|tar,dest=FILE or type=local,dest=DIR
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Write the image ID to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Write the build result metadata (JSON) to this file
    #[arg(long = "metadata-file")]
    metadata_file: Option<PathBuf>,
    /// Layer compression: gzip or zstd
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// A secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR
    #[arg(long)]
    secret: Vec<String>,
    /// An ssh agent socket for RUN --mount=type=ssh: default or ID=SOCKET
    #[arg(long)]
    ssh: Vec<String>,
    /// RUN's network: default (the host's), host or none
    #[arg(long, default_value = "default")]
    network: String,
    #[command(flatten)]
    remote: Remote,
}

impl Build {
    /// Runs the build.
    pub fn run(self, root: &Path) -> Result<()> {
        let started = Instant::now();
        let (file_name, text) = self.dockerfile()?;
        let dockerfile = builder::dockerfile::parse(&file_name, &text)?;
        if let Some(p) = &self.platform {
            let (os, arch) = oci::manifest::host_platform();
            if p != &format!("{os}/{arch}") {
                bail!("--platform {p}: berth builds for the host's platform ({os}/{arch}) only");
            }
        }
        let ignore = self.ignore_file()?;
        let context = Context::new(&self.context, ignore)?;
        let mode = match (self.quiet, self.progress.as_str()) {
            (true, _) | (_, "quiet") => Mode::Quiet,
            (_, "plain") => Mode::Plain,
            (_, "rawjson") => Mode::RawJson,
            (_, "tty") => Mode::Tty,
            (_, "auto") if std::io::stderr().is_terminal() => Mode::Tty,
            (_, "auto") => Mode::Plain,
            (_, other) => bail!("unknown --progress {other:?} (auto, tty, plain, quiet, rawjson)"),
        };
        let compression = match self.compression.as_str() {
            "gzip" => Compression::Gzip,
            "zstd" => Compression::Zstd,
            "uncompressed" => Compression::None,
            other => bail!("unknown --compression {other:?} (gzip, zstd, uncompressed)"),
        };
        let host_network = match self.network.as_str() {
            "default" | "host" => true,
            "none" => false,
            other => bail!("unknown --network {other:?} (default, host, none)"),
        };
        let tags: Vec<Reference> =
            self.tags.iter().map(|t| t.parse().with_context(|| format!("invalid tag {t:?}"))).collect::<Result<_>>()?;
        let outputs = self.outputs.iter().map(|o| Output::parse(o)).collect::<Result<Vec<_>>>()?;
        let opts = builder::BuildOptions {
            dockerfile,
            context: Some(context),
            target: self.target.clone(),
            build_args: pairs(&self.build_args, "--build-arg", true)?,
            labels: pairs(&self.labels, "--label", false)?,
            no_cache: self.no_cache,
            no_cache_filter: self.no_cache_filter.clone(),
            host_network,
            secrets: secrets(&self.secret)?,
            ssh: ssh(&self.ssh)?,
            compression,
        };
        let store = open_store(root)?;
        let cache = builder::cache::RocksCache::open(root)?;
        let snapshotter = runner::snapshot::for_root(root)?;
        let executor = runner::exec::NamespaceExecutor;
        let display = BuildDisplay::new(mode);
        let client = self.remote.client()?;
        let rt = runtime()?;
        let pull = self.pull;
        let resolve = |reference: &str| -> builder::Result<builder::convert::BaseImage> {
            if !pull {
                if let Some(b) = builder::build::base_from_store(&store, reference)? {
                    return Ok(b);
                }
            }
            let r: Reference = reference.parse().map_err(builder::Error::image(format!("base image {reference}")))?;
            display.event(Event::Note { text: format!("pulling {}", r.familiar()) });
            let rec = rt
                .block_on(oci::client::pull(&client, &store, &r, &Default::default(), &oci::client::NoProgress))
                .map_err(builder::Error::image(format!("pull {}", r.familiar())))?;
            builder::build::base_from_store(&store, &rec.target.digest.to_string())?
                .ok_or_else(|| builder::Error::NotFound { what: format!("image {reference}") })
        };
        let http = reqwest::Client::builder().build().context("start the HTTP client")?;
        let fetch = |url: &str, dest: &Path| -> builder::Result<()> {
            let download = async {
                use tokio::io::AsyncWriteExt;
                let mut resp = http.get(url).send().await?.error_for_status()?;
                let mut f = tokio::fs::File::create(dest).await?;
                while let Some(chunk) = resp.chunk().await? {
                    f.write_all(&chunk).await?;
                }
                f.sync_all().await?;
                Ok::<(), anyhow::Error>(())
            };
            rt.block_on(download).map_err(|e| builder::Error::Io {
                what: format!("download {url}"),
                source: std::io::Error::other(format!("{e:#}")),
            })
        };
        let machine = builder::Machine {
            store: &store,
            root: root.to_owned(),
            cache: &cache,
            snapshotter: snapshotter.as_ref(),
            executor: &executor,
            resolve: &resolve,
            progress: &display,
            fetch: &fetch,
        };
        let finished = std::sync::atomic::AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            if mode == Mode::Tty {
                // Running steps' timers move even while they print nothing.
                s.spawn(|| {
                    while !finished.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(250));
                        display.tick();
                    }
                });
            }
            let r = builder::build(&machine, &opts);
            finished.store(true, std::sync::atomic::Ordering::Relaxed);
            r
        });
        let built = match result {
            Ok(b) => b,
            Err(e) => {
                display.failed(&e);
                return Err(e.into());
            }
        };
        // Name it, or keep it as a dangling image as docker does for an untagged build.
        if tags.is_empty() {
            store.add_dangling(&built.manifest)?;
        }
        for t in &tags {
            store.set_name(t, &built.manifest)?;
            display.event(Event::Note { text: format!("naming to {t}") });
        }
        for o in &outputs {
            o.write(&store, &built, tags.first())?;
            display.event(Event::Note { text: format!("exporting to {}", o.dest.display()) });
        }
        if self.push {
            if tags.is_empty() {
                bail!("--push needs a name: give -t registry/repository:tag");
            }
            let opts = oci::client::PushOptions::default();
            for t in &tags {
                display.event(Event::Note { text: format!("pushing {t}") });
                rt.block_on(oci::client::push(
                    &client,
                    &store,
                    &built.manifest,
                    std::slice::from_ref(t),
                    &opts,
                    &oci::client::NoProgress,
                ))
                .with_context(|| format!("push {t}"))?;
            }
        }
        let id = built.config.to_string();
        if let Some(p) = &self.iidfile {
            std::fs::write(p, &id).with_context(|| format!("write {}", p.display()))?;
        }
        if let Some(p) = &self.metadata_file {
            let meta = serde_json::json!({
                "containerimage.digest": built.manifest.digest.to_string(),
                "containerimage.config.digest": id,
                "containerimage.descriptor": {
                    "mediaType": built.manifest.media_type,
                    "digest": built.manifest.digest.to_string(),
                    "size": built.manifest.size,
                },
                "image.name": tags.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            });
            std::fs::write(p, serde_json::to_vec_pretty(&meta)?).with_context(|| format!("write {}", p.display()))?;
        }
        display.finish(&built, started.elapsed());
        if mode == Mode::Quiet {
            println!("{id}");
        }
        Ok(())
    }

    /// The Dockerfile's name (for errors) and text: `-f` relative to the current directory,
    /// `-f -` from stdin, else `CONTEXT/Dockerfile`.
    fn dockerfile(&self) -> Result<(String, String)> {
        match self.file.as_deref() {
            Some("-") => {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("read the Dockerfile from stdin")?;
                Ok(("Dockerfile".into(), text))
            }
            Some(f) => {
                let text = std::fs::read_to_string(f).with_context(|| format!("read Dockerfile {f}"))?;
                Ok((f.to_owned(), text))
            }
            None => {
                let p = self.context.join("Dockerfile");
                let text = std::fs::read_to_string(&p).with_context(|| format!("read Dockerfile {}", p.display()))?;
                Ok(("Dockerfile".into(), text))
            }
        }
    }

    /// `<Dockerfile>.dockerignore` beside the Dockerfile first, else `CONTEXT/.dockerignore`.
    fn ignore_file(&self) -> Result<Ignore> {
        let beside = self.file.as_deref().filter(|f| *f != "-").map(|f| PathBuf::from(format!("{f}.dockerignore")));
        for p in beside.into_iter().chain([self.context.join(".dockerignore")]) {
            match std::fs::read_to_string(&p) {
                Ok(text) => return Ignore::parse(&text).with_context(|| format!("{}", p.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
            }
        }
        Ok(Ignore::default())
    }
}

/// `KEY=VALUE` pairs; with `from_env`, a bare `KEY` takes its value from the environment.
fn pairs(items: &[String], flag: &str, from_env: bool) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None if from_env => {
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
            None => bail!("{flag} {item:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

fn secrets(items: &[String]) -> Result<HashMap<String, Secret>> {
    let mut out = HashMap::new();
    for item in items {
        let mut id = None;
        let mut secret = None;
        for field in item.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => secret = Some(Secret::File(PathBuf::from(v))),
                Some(("env", v)) => secret = Some(Secret::Env(v.to_owned())),
                Some(("type", "file" | "env")) => {}
                _ => bail!("--secret {item:?}: expected id=ID,src=FILE or id=ID,env=VAR"),
            }
        }
        let id = id.with_context(|| format!("--secret {item:?}: id= is missing"))?;
        let secret = secret.unwrap_or_else(|| Secret::Env(id.clone()));
        if let Secret::File(p) = &secret {
            if !p.is_file() {
                bail!("--secret {item:?}: {} is not a file", p.display());
            }
        }
        out.insert(id, secret);
    }
    Ok(out)
}

fn ssh(items: &[String]) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    for item in items {
        let (id, path) = match item.split_once('=') {
            Some((id, p)) => (id.to_owned(), PathBuf::from(p)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK")
                    .with_context(|| format!("--ssh {item}: SSH_AUTH_SOCK is not set"))?;
                (item.clone(), PathBuf::from(sock))
            }
        };
        out.insert(id, path);
    }
    Ok(out)
}

/// One `--output`.
#[derive(Debug, Clone)]
struct Output {
    kind: String,
    dest: PathBuf,
}

impl Output {
    fn parse(s: &str) -> Result<Output> {
        let mut kind = None;
        let mut dest = None;
        for field in s.split(',') {
            match field.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_owned()),
                Some(("dest", v)) => dest = Some(PathBuf::from(v)),
                // `-o DIR` is docker's short form of type=local.
                None if kind.is_none() && dest.is_none() => {
                    kind = Some("local".to_owned());
                    dest = Some(PathBuf::from(field));
                }
                _ => bail!("--output {s:?}: expected type=oci|docker|tar|local,dest=PATH"),
            }
        }
        let kind = kind.with_context(|| format!("--output {s:?}: type= is missing"))?;
        if !["oci", "docker", "tar", "local"].contains(&kind.as_str()) {
            bail!("--output type={kind}: berth writes oci, docker, tar and local outputs");
        }
        let dest = dest.with_context(|| format!("--output {s:?}: dest= is missing"))?;
        Ok(Output { kind, dest })
    }

    fn write(&self, store: &oci::ImageStore, built: &builder::Built, name: Option<&Reference>) -> Result<()> {
        let rec = oci::ImageRecord { name: name.cloned(), target: built.manifest.clone() };
        match self.kind.as_str() {
            "oci" | "docker" => {
                let tmp = self.dest.with_extension("berth-tmp");
                let f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
                let mut sink = oci::layout::TarSink::new(std::io::BufWriter::new(f));
                if self.kind == "oci" {
                    oci::layout::write_oci(store, std::slice::from_ref(&rec), &mut sink)?;
                } else {
                    oci::layout::write_docker(store, std::slice::from_ref(&rec), &mut sink)?;
                }
                let mut w = sink.finish()?;
                w.flush()?;
                std::fs::rename(&tmp, &self.dest).with_context(|| format!("write {}", self.dest.display()))?;
            }
            "local" | "tar" => {
                let image = store.image(&built.manifest)?;
                let dir =
                    if self.kind == "local" { self.dest.clone() } else { self.dest.with_extension("berth-rootfs") };
                std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
                for desc in image.manifest.layers() {
                    let d = oci::manifest::descriptor_digest(desc)?;
                    let blob = oci::content::ContentStore::reader(store.content(), &d)?;
                    let reader = oci::layer::LayerReader::new(blob, u64::MAX)?;
                    let opts = runner::unpack::UnpackOptions::default();
                    runner::unpack::unpack(reader, &dir, &opts).with_context(|| format!("unpack layer {d}"))?;
                }
                if self.kind == "tar" {
                    let f =
                        std::fs::File::create(&self.dest).with_context(|| format!("create {}", self.dest.display()))?;
                    let opts = oci::layer::TarOptions::from_env();
                    oci::layer::tar_directory(&dir, std::io::BufWriter::new(f), &opts)?;
                    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tty,
    Plain,
    Quiet,
    RawJson,
}

/// BuildKit's displays: `#N [stage i/n] STEP`, `#N CACHED`, output lines under their step,
/// `#N DONE 0.4s`; rawjson prints one JSON object per event; quiet prints nothing.
struct BuildDisplay {
    mode: Mode,
    state: Mutex<DisplayState>,
    started: Instant,
}

#[derive(Default)]
struct DisplayState {
    /// Vertex -> the number the display gives it (#1, #2, ...).
    numbers: HashMap<usize, usize>,
    names: HashMap<usize, String>,
    partial: HashMap<usize, Vec<u8>>,
    /// The tty view: steps in the order they appeared, and how many lines are on screen.
    steps: Vec<TtyStep>,
    drawn: usize,
}

/// One step as the live tty view shows it.
struct TtyStep {
    id: usize,
    name: String,
    started: Instant,
    status: TtyStatus,
    last_line: String,
}

enum TtyStatus {
    Running,
    Cached,
    Done(std::time::Duration),
    Failed,
}

impl BuildDisplay {
    fn new(mode: Mode) -> BuildDisplay {
        BuildDisplay { mode, state: Mutex::new(DisplayState::default()), started: Instant::now() }
    }

    fn number(st: &mut DisplayState, id: usize) -> usize {
        let next = st.numbers.len() + 1;
        *st.numbers.entry(id).or_insert(next)
    }

    fn line(&self, s: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{s}");
    }

    fn failed(&self, e: &builder::Error) {
        if self.mode == Mode::Quiet {
            return;
        }
        if let builder::Error::StepFailed { step, tail, at, .. } = e {
            self.line(&format!("------\n > {step}:"));
            for l in tail {
                self.line(l);
            }
            self.line("------");
            self.line(&format!("{at}\n{:>5} | {}\n", at.line, at.excerpt));
        }
    }

    fn finish(&self, built: &builder::Built, took: std::time::Duration) {
        match self.mode {
            Mode::Quiet => {}
            Mode::RawJson => self.line(&serde_json::json!({ "done": true, "digest": built.manifest.digest.to_string(), "config": built.config.to_string(), "seconds": took.as_secs_f64() }).to_string()),
            Mode::Tty => {
                if let Ok(mut st) = self.state.lock() {
                    self.redraw(&mut st, true);
                }
                self.line(&format!(" => writing image {} done", built.config));
                self.line(&format!(" => manifest {} ({:.1}s)", built.manifest.digest, took.as_secs_f64()));
            }
            Mode::Plain => {
                self.line(&format!("#0 writing image {} done", built.config));
                self.line(&format!("#0 manifest {} ({:.1}s)", built.manifest.digest, took.as_secs_f64()));
            }
        }
    }
}

impl BuildDisplay {
    /// Redraws the live view (the tty ticker calls it).
    fn tick(&self) {
        if let Ok(mut st) = self.state.lock() {
            if !st.steps.is_empty() {
                self.redraw(&mut st, false);
            }
        }
    }

    /// The live view: a header and one line per step, redrawn in place (BuildKit's tty look).
    fn redraw(&self, st: &mut DisplayState, last: bool) {
        let mut out = String::new();
        if st.drawn > 0 {
            out.push_str(&format!("\x1b[{}A\x1b[J", st.drawn));
        }
        let done = st.steps.iter().filter(|s| !matches!(s.status, TtyStatus::Running)).count();
        let width = terminal_width();
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({done}/{}){}",
            self.started.elapsed().as_secs_f64(),
            st.steps.len(),
            if last { " FINISHED" } else { "" }
        )];
        for step in &st.steps {
            let (prefix, time) = match step.status {
                TtyStatus::Running => ("", format!("{:.1}s", step.started.elapsed().as_secs_f64())),
                TtyStatus::Cached => ("CACHED ", "0.0s".to_owned()),
                TtyStatus::Done(t) => ("", format!("{:.1}s", t.as_secs_f64())),
                TtyStatus::Failed => ("ERROR ", String::new()),
            };
            let mut line = format!(" => {prefix}{}", step.name);
            truncate(&mut line, width.saturating_sub(time.len() + 2));
            lines.push(format!("{line:<w$} {time}", w = width.saturating_sub(time.len() + 2)));
            if matches!(step.status, TtyStatus::Running) && !step.last_line.is_empty() {
                let mut l = format!(" => => {}", step.last_line);
                truncate(&mut l, width);
                lines.push(l);
            }
        }
        for l in &lines {
            out.push_str(l);
            out.push('\n');
        }
        st.drawn = lines.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }

    fn tty_event(&self, st: &mut DisplayState, e: Event) {
        match e {
            Event::Started { id, name } => st.steps.push(TtyStep {
                id,
                name,
                started: Instant::now(),
                status: TtyStatus::Running,
                last_line: String::new(),
            }),
            Event::Cached { id, name } => st.steps.push(TtyStep {
                id,
                name,
                started: Instant::now(),
                status: TtyStatus::Cached,
                last_line: String::new(),
            }),
            Event::Output { id, data } => {
                if let Some(step) = st.steps.iter_mut().find(|s| s.id == id) {
                    let text = String::from_utf8_lossy(&data);
                    if let Some(l) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                        step.last_line = l.trim_end().to_owned();
                    }
                }
            }
            Event::Done { id, took, error } => {
                if let Some(step) = st.steps.iter_mut().find(|s| s.id == id) {
                    step.status = if error.is_some() { TtyStatus::Failed } else { TtyStatus::Done(took) };
                }
            }
            Event::Miss { .. } | Event::Note { .. } => {}
        }
        self.redraw(st, false);
    }
}

fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .map(|w| usize::from(w.ws_col))
        .ok()
        .filter(|w| *w >= 40)
        .unwrap_or(100)
}

fn truncate(s: &mut String, max: usize) {
    if s.chars().count() > max {
        *s = s.chars().take(max.saturating_sub(1)).collect::<String>() + "…";
    }
}

impl Progress for BuildDisplay {
    fn event(&self, e: Event) {
        if self.mode == Mode::Quiet {
            return;
        }
        let Ok(mut st) = self.state.lock() else { return };
        if self.mode == Mode::Tty {
            self.tty_event(&mut st, e);
            return;
        }
        if self.mode == Mode::RawJson {
            let v = match &e {
                Event::Started { id, name } => serde_json::json!({ "vertex": id, "name": name, "started": true }),
                Event::Cached { id, name } => serde_json::json!({ "vertex": id, "name": name, "cached": true }),
                Event::Miss { id, reason } => serde_json::json!({ "vertex": id, "miss": reason }),
                Event::Output { id, data } => {
                    serde_json::json!({ "vertex": id, "output": String::from_utf8_lossy(data) })
                }
                Event::Done { id, took, error } => {
                    serde_json::json!({ "vertex": id, "completed": true, "seconds": took.as_secs_f64(), "error": error })
                }
                Event::Note { text } => serde_json::json!({ "note": text }),
            };
            self.line(&v.to_string());
            return;
        }
        let t = self.started.elapsed().as_secs_f64();
        match e {
            Event::Started { id, name } => {
                let n = Self::number(&mut st, id);
                st.names.insert(id, name.clone());
                self.line(&format!("#{n} {name}"));
            }
            Event::Cached { id, name } => {
                let n = Self::number(&mut st, id);
                self.line(&format!("#{n} {name}\n#{n} CACHED"));
            }
            Event::Miss { id, reason } => {
                if self.mode == Mode::Plain {
                    let n = Self::number(&mut st, id);
                    self.line(&format!("#{n} cache miss: {reason}"));
                }
            }
            Event::Output { id, data } => {
                let n = Self::number(&mut st, id);
                let buf = st.partial.entry(id).or_default();
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    self.line(&format!("#{n} {t:.3} {}", String::from_utf8_lossy(&line[..line.len() - 1])));
                }
            }
            Event::Done { id, took, error } => {
                let n = Self::number(&mut st, id);
                if let Some(rest) = st.partial.remove(&id).filter(|b| !b.is_empty()) {
                    self.line(&format!("#{n} {t:.3} {}", String::from_utf8_lossy(&rest)));
                }
                match error {
                    None => self.line(&format!("#{n} DONE {:.1}s", took.as_secs_f64())),
                    Some(err) => self.line(&format!("#{n} ERROR: {err}")),
                }
            }
            Event::Note { text } => self.line(&format!("#0 {text}")),
        }
    }
}
