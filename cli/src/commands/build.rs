//! `berth build`: a Dockerfile into an image, daemonless, with docker's flags.

mod flags;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use builder::context::stdin::Stdin;
use builder::context::{Context, Ignore};
use builder::export::Exporter;
use clap::Args;
use oci::client::Client;
use oci::Reference;

use super::open_store;
use super::transfer::{runtime, Remote};
use crate::progress::build::{BuildDisplay, BuildMode};

/// Build an image from a Dockerfile
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth build -t app .\n  berth build -f Dockerfile.prod -t app:1 --build-arg VERSION=1 .\n  berth build --target test --progress plain .\n  berth build -t localhost:5000/app --push .\n  berth build -o type=oci,dest=app.tar ."
)]
pub struct Build {
    /// The build context directory (`-`: a Dockerfile alone, or a tar of the context, plain or
    /// compressed, on stdin)
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
    /// Another context the Dockerfile reads as NAME (FROM NAME, COPY --from=NAME, RUN
    /// --mount from=NAME), in place of a stage or image of that name: NAME=DIR or
    /// NAME=docker-image://REF (repeatable)
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Add a line to RUN steps' /etc/hosts: HOST:IP (IP `host-gateway`: the host)
    #[arg(long = "add-host", value_name = "HOST:IP")]
    add_host: Vec<String>,
    /// Add a label to the image (KEY=VALUE)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Do not use the cache
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    no_cache: bool,
    /// Do not use the cache for these stages
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    no_cache_filter: Vec<String>,
    /// Always pull base images, even when the local store has them
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pull: bool,
    /// Target platforms (os/arch[/variant], comma-separated or repeated; several make an
    /// image index); another than the host's runs RUN steps through a QEMU emulator
    #[arg(long, value_delimiter = ',')]
    platform: Vec<oci::Platform>,
    /// Progress output: auto, tty, plain, quiet or rawjson
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Print only the image ID
    #[arg(short, long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    quiet: bool,
    /// Push the image to its registry after the build
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    push: bool,
    /// Keep the whole image in the local store, runnable here, also with --push (buildx's
    /// --load; without --push the image is always stored)
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    load: bool,
    /// Also write the image out: type=oci|docker|tar,dest=FILE or type=local,dest=DIR
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Write the image ID to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Write the build result metadata (JSON) to this file
    #[arg(long = "metadata-file")]
    metadata_file: Option<PathBuf>,
    /// Layer compression: gzip, zstd or uncompressed
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
    /// Import build cache: type=registry,ref=REF | type=local,src=DIR | type=s3,bucket=B,... | REF (repeatable; first hit wins)
    #[arg(long = "cache-from", value_name = "SOURCE")]
    cache_from: Vec<String>,
    /// Export build cache: type=registry,ref=REF | type=local,dest=DIR | type=inline | type=s3,bucket=B,... [,mode=min|max][,mounts=true]
    #[arg(long = "cache-to", value_name = "DEST")]
    cache_to: Vec<String>,
    /// Allow an entitlement: security.insecure (RUN --security=insecure), network.host
    #[arg(long, value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// How RUN steps are isolated: oci (namespaces), chroot (unprivileged containers) or none (in this container's own root filesystem, as kaniko; see docs/rootless.md)
    #[arg(long, env = "BERTH_ISOLATION", default_value = "oci", value_parser = clap::value_parser!(runner::exec::Isolation))]
    isolation: runner::exec::Isolation,
    /// With --isolation none: a path the steps' root filesystem swaps leave alone (repeatable), as kaniko's
    #[arg(long = "ignore-path", value_name = "PATH")]
    ignore_paths: Vec<PathBuf>,
    #[command(flatten)]
    remote: Remote,
}

impl Build {
    /// BuildKit's special build argument: `--build-arg SOURCE_DATE_EPOCH=N` pins the
    /// image's and its history's `created` and clamps the layers' mtimes, as the variable of
    /// that name in berth's environment does (the argument wins; `ARG SOURCE_DATE_EPOCH`
    /// still shows it to RUN steps). Called while berth has one thread: it sets the variable.
    pub fn source_date_epoch_to_env(&self) {
        let given = self.build_args.iter().rev().find_map(|a| match a.split_once('=') {
            Some(("SOURCE_DATE_EPOCH", v)) => Some(v.to_owned()),
            _ => None,
        });
        if let Some(v) = given {
            std::env::set_var("SOURCE_DATE_EPOCH", v);
        }
    }

    /// Runs the build: parse, solve, then name, export, push and report the image.
    pub fn run(mut self, root: &Path) -> Result<()> {
        let started = Instant::now();
        super::lifecycle::clean_up_on_signals()?;
        let stdin = (self.context.as_os_str() == "-").then(read_stdin).transpose()?;
        if let Some(Stdin::Dockerfile(_)) = &stdin {
            if self.file.is_some() {
                bail!("-f cannot be used when the Dockerfile comes on stdin (berth build -)");
            }
        }
        // A tar on stdin is the context, unpacked into a directory that lives as long as the build.
        if let Some(Stdin::Context(dir)) = &stdin {
            self.context = dir.path().to_owned();
        }
        let opts = self.options(stdin.as_ref())?;
        let tags = flags::tags(&self.tags)?;
        if self.push && tags.is_empty() {
            bail!("--push needs a name: give -t registry/repository:tag");
        }
        let outputs = self.outputs.iter().map(|o| flags::output(o)).collect::<Result<Vec<_>>>()?;
        if builder::build::distinct(&self.platform).len() > 1
            && outputs.iter().any(|o| matches!(o, Exporter::Docker(_)))
        {
            bail!("-o {}", Exporter::DOCKER_NO_INDEX);
        }
        let mode = BuildMode::parse(&self.progress, self.quiet, std::io::stderr().is_terminal())
            .map_err(anyhow::Error::msg)?;
        let session = Session {
            root,
            store: open_store(root)?,
            client: self.remote.client()?,
            rt: runtime()?,
            display: BuildDisplay::new(mode),
            pulled: Default::default(),
            isolation: self.isolation,
            keep: self.kept_paths(root, &outputs),
        };
        let built = session.solve(&opts, self.pull)?;
        session.name_bases()?;
        session.name(&built, &tags)?;
        session.export(&built, tags.first(), &outputs)?;
        if self.push {
            if let Err(e) = session.push(&built, &tags) {
                // A failed push must not hide the cache exports that failed too.
                for failed in &built.cache_errors {
                    eprintln!("berth: {failed}");
                }
                return Err(e);
            }
        }
        self.write_results(&built, &tags)?;
        if !built.cache_errors.is_empty() {
            // The image is built, named and pushed; the cache is what failed.
            bail!("{}", built.cache_errors.join("\n"));
        }
        session.display.finish(&built, started.elapsed());
        if mode == BuildMode::Quiet {
            println!("{}", built.config);
        }
        Ok(())
    }

    /// What an `--isolation none` build must leave alone in `/`: berth's store and registry
    /// credentials (the file `REGISTRY_AUTH_FILE` names, else the docker config directory),
    /// the context, the Dockerfile, every output, local cache directories and `--ignore-path`.
    fn kept_paths(&self, root: &Path, outputs: &[Exporter]) -> Vec<PathBuf> {
        use builder::cache::remote::{ExportSpec, ImportSpec, Location};
        let credentials = oci::client::credentials::config_path();
        let credentials = match std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
            Some(_) => credentials,
            None => credentials.parent().map_or(credentials.clone(), Path::to_owned),
        };
        let mut keep = vec![root.to_owned(), self.context.clone(), credentials];
        keep.extend(self.file.iter().filter(|f| *f != "-").map(PathBuf::from));
        keep.extend(outputs.iter().map(|o| o.dest().to_owned()));
        keep.extend(self.iidfile.iter().chain(&self.metadata_file).chain(&self.ignore_paths).cloned());
        // Named contexts' directories (a malformed value is reported by `options`).
        keep.extend(self.build_contexts.iter().filter_map(|c| c.split_once('=')).map(|(_, v)| PathBuf::from(v)));
        // Malformed values are reported by `options`.
        let from = self.cache_from.iter().filter_map(|s| ImportSpec::parse(s).ok().map(|s| s.location));
        let to = self.cache_to.iter().filter_map(|s| ExportSpec::parse(s).ok().map(|s| s.location));
        keep.extend(from.chain(to).filter_map(|l| match l {
            Location::Local { dir, .. } => Some(dir),
            _ => None,
        }));
        keep
    }

    /// What the builder needs from the flags: the parsed Dockerfile, the context and settings.
    fn options(&self, stdin: Option<&Stdin>) -> Result<builder::BuildOptions> {
        let (file_name, text, context) = match stdin {
            Some(Stdin::Dockerfile(text)) => ("Dockerfile".to_owned(), text.clone(), None),
            _ => {
                let (name, text) = self.dockerfile(stdin.is_some())?;
                (name, text, Some(Context::new(&self.context, self.ignore_file(stdin.is_some())?)?))
            }
        };
        let dockerfile = builder::dockerfile::parse(&file_name, &text)?;
        Ok(builder::BuildOptions {
            dockerfile,
            context,
            target: self.target.clone(),
            platforms: self.platform.clone(),
            build_args: flags::pairs(&self.build_args, "--build-arg", true)?,
            labels: flags::pairs(&self.labels, "--label", false)?,
            no_cache: self.no_cache,
            no_cache_filter: self.no_cache_filter.clone(),
            host_network: flags::host_network(&self.network)?,
            allow_insecure: flags::allow(&self.allow)?,
            extra_hosts: self.add_host.clone(),
            named_contexts: flags::build_contexts(&self.build_contexts)?,
            secrets: flags::secrets(&self.secret)?,
            ssh: flags::ssh(&self.ssh)?,
            compression: flags::compression(&self.compression)?,
            cache_from: self
                .cache_from
                .iter()
                .map(|s| builder::cache::remote::ImportSpec::parse(s))
                .collect::<builder::Result<_>>()?,
            cache_to: self
                .cache_to
                .iter()
                .map(|s| builder::cache::remote::ExportSpec::parse(s))
                .collect::<builder::Result<_>>()?,
            // A --push-only build leaves layers that came from a cache where they are.
            load: self.load || !self.push || !self.outputs.is_empty(),
            push_registries: match self.push {
                true => flags::tags(&self.tags)?.iter().map(|t| t.domain().to_owned()).collect(),
                false => vec![],
            },
        })
    }

    /// `--iidfile` and `--metadata-file`.
    fn write_results(&self, built: &builder::Built, tags: &[Reference]) -> Result<()> {
        let id = built.config.to_string();
        if let Some(p) = &self.iidfile {
            std::fs::write(p, &id).with_context(|| format!("write {}", p.display()))?;
        }
        if let Some(p) = &self.metadata_file {
            let mut meta = serde_json::json!({
                "containerimage.digest": built.manifest.digest.to_string(),
                "containerimage.descriptor": {
                    "mediaType": built.manifest.media_type,
                    "digest": built.manifest.digest.to_string(),
                    "size": built.manifest.size,
                },
                "image.name": tags.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            });
            // An index has no config of its own: BuildKit reports none for it.
            if built.platforms.is_empty() {
                meta["containerimage.config.digest"] = serde_json::json!(id);
            }
            std::fs::write(p, serde_json::to_vec_pretty(&meta)?).with_context(|| format!("write {}", p.display()))?;
        }
        Ok(())
    }

    /// The Dockerfile's name (for errors) and text: `-f` relative to the current directory,
    /// `-f -` from stdin, else `CONTEXT/Dockerfile`. For a context that came as a tar on
    /// stdin (`in_context`), `-f` names a file inside it, as docker reads it.
    fn dockerfile(&self, in_context: bool) -> Result<(String, String)> {
        match self.file.as_deref() {
            Some(f) if in_context => {
                // Resolved inside the unpacked tar: neither `..` nor a link in it leads out.
                let p = builder::context::resolve_in_root(&self.context, f)
                    .with_context(|| format!("find Dockerfile {f} in the context"))?;
                let text =
                    std::fs::read_to_string(&p).with_context(|| format!("read Dockerfile {f} in the context"))?;
                Ok((f.to_owned(), text))
            }
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

    /// `<Dockerfile>.dockerignore` beside the Dockerfile first (BuildKit's per-Dockerfile
    /// ignore file, `CONTEXT/Dockerfile.dockerignore` without `-f`), else
    /// `CONTEXT/.dockerignore`. A context that came as a tar on stdin (`from_tar`) is taken
    /// whole, as docker and BuildKit take it: ignore files only filter a directory.
    fn ignore_file(&self, from_tar: bool) -> Result<Ignore> {
        if from_tar {
            return Ok(Ignore::default());
        }
        let beside = match self.file.as_deref() {
            Some("-") => None,
            Some(f) => Some(PathBuf::from(format!("{f}.dockerignore"))),
            None => Some(self.context.join("Dockerfile.dockerignore")),
        };
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

/// What a build works with once the flags are parsed: the store, the registry client, the
/// async runtime for pulls and downloads, and the display.
struct Session<'a> {
    root: &'a Path,
    store: oci::ImageStore,
    client: Client,
    rt: tokio::runtime::Runtime,
    display: BuildDisplay,
    /// Base images pulled as manifest and config during the build: named once whole.
    pulled: std::sync::Mutex<Vec<(Reference, oci::Target)>>,
    /// How RUN steps are isolated (and so whether snapshots may be mounted).
    isolation: runner::exec::Isolation,
    /// The paths an `--isolation none` build leaves alone in `/`.
    keep: Vec<PathBuf>,
}

impl Session<'_> {
    /// Runs the builder on this machine: cache, snapshots, the namespace executor, base images
    /// from the store (pulled when missing or with `--pull`), ADD downloads.
    fn solve(&self, opts: &builder::BuildOptions, pull: bool) -> Result<builder::Built> {
        let store = &self.store;
        let cache = builder::cache::RocksCache::open(self.root)?;
        let executor = self.isolation.executor(&self.keep)?;
        let snapshotter = if executor.mounts() {
            runner::snapshot::for_build(self.root)?
        } else {
            runner::snapshot::for_build_without_mounts(self.root)?
        };
        let resolve = |reference: &str, platform: &oci::Platform| self.base_image(reference, platform, pull);
        let rt = &self.rt;
        let downloads = oci::client::Downloader::from_env()?;
        if self.isolation == runner::exec::Isolation::None {
            // The CA certificates are read before a step replaces the files they come from.
            self.client.warm()?;
            downloads.warm()?;
        }
        let fetch = |url: &str, dest: &Path| {
            rt.block_on(downloads.fetch(url, dest)).map(drop).map_err(builder::Error::image("ADD"))
        };
        let machine = builder::Machine {
            store,
            root: self.root.to_owned(),
            cache: &cache,
            snapshotter: snapshotter.as_ref(),
            executor: executor.as_ref(),
            resolve: &resolve,
            progress: &self.display,
            fetch: &fetch,
            net: Some(builder::cache::remote::Net { client: &self.client, rt: self.rt.handle() }),
        };
        let result = self.with_ticker(|| builder::build(&machine, opts));
        result.inspect_err(|e| self.display.failed(e)).map_err(Into::into)
    }

    /// Runs `f` while, on a terminal, a ticker redraws the live view so that running steps'
    /// timers move even while they print nothing.
    fn with_ticker<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.display.mode() != BuildMode::Tty {
            return f();
        }
        let finished = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !finished.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    self.display.tick();
                }
            });
            let out = f();
            finished.store(true, Ordering::Relaxed);
            out
        })
    }

    /// A base image for `platform`: from the store unless `pull`, else pulled from its registry.
    fn base_image(
        &self,
        reference: &str,
        platform: &oci::Platform,
        pull: bool,
    ) -> builder::Result<builder::convert::BaseImage> {
        if !pull {
            if let Some(b) = builder::build::base_from_store(&self.store, reference, platform)? {
                return Ok(b);
            }
        }
        let r: Reference = reference.parse().map_err(builder::Error::image(format!("base image {reference}")))?;
        self.display.note(format!("pulling {} (manifest and config; layers when a step needs them)", r.familiar()));
        // Layers stay in the registry until a step runs on them or the image is stored:
        // an all-hit build that pushes to the same registry never moves them.
        let opts = oci::client::PullOptions { lazy: true, platform: Some(platform.clone()), ..Default::default() };
        let pulled =
            self.rt.block_on(oci::client::pull(&self.client, &self.store, &r, &opts, &oci::client::NoProgress));
        let what = match !pull && self.store.resolve(reference).is_ok() {
            // The name is here for other platforms: that is what the user must know first.
            true => format!("{} in the local store has no {platform} image, and pulling it failed", r.familiar()),
            false => format!("pull {}", r.familiar()),
        };
        let rec = pulled.map_err(builder::Error::image(what))?.record;
        let base = builder::build::base_of(&self.store, &rec.target, reference, platform)?;
        self.pulled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((r, rec.target));
        Ok(base)
    }

    /// Names each base image the build pulled whose layers are now all in the store (the
    /// build stored an image on it), as `berth pull` would have; one whose layers stayed in
    /// the registry stays unnamed, and the next build resolves it again.
    fn name_bases(&self) -> Result<()> {
        let pulled = std::mem::take(&mut *self.pulled.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (r, target) in pulled {
            if self.store.is_whole(&target)? {
                self.store.set_name(&r, &target)?;
            }
        }
        Ok(())
    }

    /// Names the image, or keeps it as a dangling image as docker does for an untagged build.
    fn name(&self, built: &builder::Built, tags: &[Reference]) -> Result<()> {
        if tags.is_empty() {
            self.store.add_dangling(&built.manifest)?;
        }
        for t in tags {
            self.store.set_name(t, &built.manifest)?;
            self.display.note(format!("naming to {t}"));
        }
        Ok(())
    }

    /// Writes every `-o` output, warning about anything an output had to leave out.
    fn export(&self, built: &builder::Built, name: Option<&Reference>, outputs: &[Exporter]) -> Result<()> {
        let image = oci::ImageRecord { name: name.cloned(), target: built.manifest.clone() };
        for o in outputs {
            self.display.note(format!("exporting to {} {}", o.kind(), o.dest().display()));
            let platforms: Vec<(oci::Platform, oci::Target)> =
                built.platforms.iter().map(|(p, b)| (p.clone(), b.manifest.clone())).collect();
            let done = match platforms.is_empty() {
                true => o.export(&self.store, &image),
                false => o.export_platforms(&self.store, &image, &platforms),
            };
            let done = done.with_context(|| format!("--output type={}", o.kind()))?;
            if let Some(w) = done.warning() {
                self.display.warn(&w);
            }
        }
        Ok(())
    }

    /// `--push`: every name to its registry.
    fn push(&self, built: &builder::Built, tags: &[Reference]) -> Result<()> {
        let opts = oci::client::PushOptions::default();
        for t in tags {
            self.display.note(format!("pushing {t}"));
            self.rt
                .block_on(oci::client::push(
                    &self.client,
                    &self.store,
                    &built.manifest,
                    std::slice::from_ref(t),
                    &opts,
                    &oci::client::NoProgress,
                ))
                .with_context(|| format!("push {t}"))?;
        }
        Ok(())
    }
}

/// Reads stdin for `berth build -` (see [`builder::context::stdin::read`]).
fn read_stdin() -> Result<Stdin> {
    Ok(builder::context::stdin::read(std::io::stdin().lock())?)
}
