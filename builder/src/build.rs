//! One build from start to image: convert, solve, and write the image into the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use oci::content::ContentStore;
use oci::layer::Compression;
use oci::{ImageStore, Target};
use serde_json::{json, Value};

use crate::cache::remote::early::{Early, EarlyWorker};
use crate::cache::remote::export::{Codec, MountLayer};
use crate::cache::remote::skeleton::ContextFiles;
use crate::cache::remote::{self, ExportSpec, ImportSpec, Imported, Layered, LazyBlobs, Location};
use crate::cache::CacheStore;
use crate::context::Context;
use crate::convert::{self, BaseImage, ImageOut, Inputs};
use crate::dockerfile::mount::MountType;
use crate::dockerfile::Dockerfile;
use crate::error::{Error, Result};
use crate::graph::{Layer, Op, VertexId};
use crate::ops::{LocalWorker, Secret};
use crate::progress::{Event, Progress};
use crate::solver::{Solver, State};

/// Everything a build is asked to do, as `berth build`'s flags give it.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The parsed Dockerfile.
    pub dockerfile: Dockerfile,
    /// The build context, with its ignore rules (None: a build without context).
    pub context: Option<Context>,
    /// `--build-context NAME=VALUE`s: images and local directories by name.
    pub named_contexts: BTreeMap<String, crate::context::NamedContext>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform`: the platforms the image is built for, one image each (the host's if
    /// none); several make an image index.
    pub platforms: Vec<oci::Platform>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`.
    pub no_cache_filter: Vec<String>,
    /// `--network`: RUN steps get the host's network (the default) or none.
    pub host_network: bool,
    /// `--allow security.insecure`: `RUN --security=insecure` may run unconfined.
    pub allow_insecure: bool,
    /// `--add-host HOST:IP` lines in every RUN step's /etc/hosts.
    pub extra_hosts: Vec<String>,
    /// `--secret`s by id.
    pub secrets: HashMap<String, Secret>,
    /// `--ssh` sockets by id.
    pub ssh: HashMap<String, PathBuf>,
    /// `--compression`.
    pub compression: Compression,
    /// `--cache-from`, first hit wins.
    pub cache_from: Vec<ImportSpec>,
    /// `--cache-to`.
    pub cache_to: Vec<ExportSpec>,
    /// The image's layers must be in the local store when the build ends (false for a
    /// `--push`-only build: see `push_registries`).
    pub load: bool,
    /// The registries a `--push`-only build pushes to: a layer imported from a registry
    /// cache on one of them stays there (the push mounts or skips it); any other imported
    /// layer is fetched, since the push must upload it.
    pub push_registries: Vec<String>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image manifest in the local store (the image index, for several platforms).
    pub manifest: Target,
    /// The image config's digest (docker's image ID); the index's digest for several
    /// platforms, as BuildKit reports it.
    pub config: oci::Digest,
    /// Cache exports that failed (without `ignore-error`), one line each: the image is
    /// built and stored, and the caller fails after naming and pushing it.
    pub cache_errors: Vec<String>,
    /// For several platforms: each platform's image, in the order asked (empty for one).
    pub platforms: Vec<(oci::Platform, Built)>,
}

/// The machinery a build runs on.
pub struct Machine<'a> {
    /// The local image store (base images, new layers, the result).
    pub store: &'a ImageStore,
    /// `$BERTH_ROOT`.
    pub root: PathBuf,
    /// The build cache.
    pub cache: &'a dyn CacheStore,
    /// Snapshots.
    pub snapshotter: &'a dyn runner::snapshot::Snapshotter,
    /// RUN's executor.
    pub executor: &'a dyn runner::exec::Executor,
    /// Resolves a base image reference, pulling it when needed.
    pub resolve: &'a (dyn Fn(&str, &oci::Platform) -> Result<BaseImage> + Sync),
    /// Where events go.
    pub progress: &'a dyn Progress,
    /// Downloads a URL into a file, for ADD.
    pub fetch: &'a (dyn Fn(&str, &std::path::Path) -> Result<()> + Sync),
    /// The registry client and runtime remote caches use (None: local caches only).
    pub net: Option<remote::Net<'a>>,
}

/// Builds the target stage for each platform and stores the image, or for several
/// platforms the image index (untagged; the caller names it). Every platform is one graph
/// in one solver: platforms build in parallel, and a step that does not depend on the
/// platform runs once.
pub fn build(m: &Machine<'_>, opts: &BuildOptions) -> Result<Built> {
    for h in &opts.extra_hosts {
        h.parse::<runner::sandbox::ExtraHost>().map_err(|e| crate::Error::Invalid(format!("--add-host: {e}")))?;
    }
    let inputs = Inputs {
        build_args: &opts.build_args,
        target_platforms: distinct(&opts.platforms),
        no_cache: opts.no_cache,
        no_cache_filter: &opts.no_cache_filter,
        host_network: opts.host_network,
        allow_insecure: opts.allow_insecure,
        extra_hosts: &opts.extra_hosts,
        resolve: m.resolve,
        named: &opts.named_contexts,
    };
    let converted = convert::convert(&opts.dockerfile, opts.target.as_deref(), &inputs)?;
    for p in &converted.run_platforms {
        runner::emulation::check(p, &runner::emulation::binfmt_dir()).map_err(Error::Emulation)?;
    }
    let mut imported = import_caches(m, &opts.cache_from)?;
    lazy_bases(m, &converted.graph, &mut imported)?;
    imported.defer_to(crate::cache::deferred::Deferred { cache: m.cache, snapshotter: m.snapshotter });
    let context_files = opts.context.as_ref().map(|c| c.files().clone());
    if let Some(files) = &context_files {
        imported.rebuild_from(files.clone());
    }
    let cache = Layered { local: m.cache, imported: &imported, store: m.store };
    let targets: Vec<VertexId> = converted.images.iter().map(|i| i.stage().vertex).collect();
    // Registry caches get each new layer while the build runs; the export at the end sends
    // what is left and the manifest.
    let early = Early::new(&converted.graph, &targets, &opts.cache_to, m.net);
    let twin_codec = |id| early.codec_of(id);
    let worker = LocalWorker {
        store: m.store,
        snapshotter: m.snapshotter,
        executor: m.executor,
        context: opts.context.as_ref(),
        named: &opts.named_contexts,
        cache: &cache,
        progress: m.progress,
        root: m.root.clone(),
        secrets: opts.secrets.clone(),
        ssh: opts.ssh.clone(),
        dockerfile: (&opts.dockerfile.file, &opts.dockerfile.text),
        fetch: m.fetch,
        downloads: std::sync::Mutex::new(HashMap::new()),
        lazy: &imported,
        twin_codec: &twin_codec,
    };
    // The early export's thread and the image's export may want one twin at once: made once.
    let twins = crate::cache::KeyedLocks::default();
    let files = context_files.as_deref();
    let compress =
        |l: &Layer, c: Codec| twins.with((l.diff_id.clone(), c), |()| compress_layer(m, &imported, files, l, c));
    let exporter = remote::export::Exporter {
        store: m.store,
        cache: m.cache,
        imported: &imported,
        progress: m.progress,
        compress: &compress,
    };
    let worker = EarlyWorker { inner: &worker, early: &early };
    let (solver, mut built) = std::thread::scope(|s| {
        early.start(s, m.store, &compress);
        let made = (|| {
            let (solver, states) = solve(m, opts, &converted.graph, &targets, &worker, &cache, &imported)?;
            m.progress.event(Event::Note { text: "exporting layers".into() });
            let mut images = Vec::with_capacity(states.len());
            for (image, state) in converted.images.iter().zip(states) {
                let made = ImageMade { graph: &converted.graph, image, solver: &solver, state };
                images.push((image.platform.clone(), made.write(m, opts, &exporter, &compress)?));
            }
            let built = match images.len() {
                1 => images.pop().map(|(_, b)| b).ok_or_else(|| Error::Internal("no image was built".into()))?,
                _ => index_of(m.store, images)?,
            };
            Ok((solver, built))
        })();
        let unfinished = early.close(made.is_err());
        made.map(|m| (m, unfinished))
    })
    .map(|(made, unfinished)| {
        // The scope has waited for the early export's threads.
        if let Some(text) = unfinished.note() {
            m.progress.event(Event::Note { text });
        }
        made
    })?;
    built.cache_errors = export_caches(m, &exporter, &converted.graph, &solver, &targets, &imported, opts);
    Ok(built)
}

/// `platforms` without repeats, in the order first given: the images of a build.
pub fn distinct(platforms: &[oci::Platform]) -> Vec<oci::Platform> {
    let mut seen = BTreeSet::new();
    platforms.iter().filter(|p| seen.insert((*p).clone())).cloned().collect()
}

/// Every `--cache-to` but inline, each carrying the steps of every platform's image: the
/// failures, one line each (warnings for those with `ignore-error`).
fn export_caches(
    m: &Machine<'_>,
    exporter: &remote::export::Exporter<'_>,
    graph: &crate::graph::Graph,
    solver: &Solver<'_>,
    targets: &[VertexId],
    imported: &Imported<'_>,
    opts: &BuildOptions,
) -> Vec<String> {
    let mounts = mount_layers(m, graph, solver, imported, &opts.cache_to);
    let skeletons = skeleton_layers(graph, solver, targets);
    let mut errors = Vec::new();
    for spec in opts.cache_to.iter().filter(|c| c.location != Location::Inline) {
        let steps = solver.steps(targets, spec.mode);
        let skeletons = if spec.mode == remote::Mode::Max { skeletons.clone() } else { HashSet::new() };
        if let Err(e) = export_cache(m, exporter, spec, &steps, &mounts, &skeletons) {
            let line = format!("cache export to {} failed: {}", spec.location.describe(), oci::error::chain(&e));
            match spec.ignore_error {
                true => m.progress.event(Event::Warning { text: format!("{line} (ignore-error=true)") }),
                false => errors.push(line),
            }
        }
    }
    errors
}

/// One platform's image once its target is solved: what [`ImageMade::write`] stores.
struct ImageMade<'a, 's> {
    graph: &'a crate::graph::Graph,
    image: &'a ImageOut,
    solver: &'a Solver<'s>,
    state: State,
}

impl ImageMade<'_, '_> {
    /// Compresses the image's layers as `--compression` wants them (build steps leave plain
    /// tars), adds the inline cache if asked, and stores config and manifest.
    fn write(
        self,
        m: &Machine<'_>,
        opts: &BuildOptions,
        exporter: &remote::export::Exporter<'_>,
        compress: &(dyn Fn(&Layer, Codec) -> Result<Layer> + Sync),
    ) -> Result<Built> {
        let layers =
            self.state.layers.iter().map(|l| compress(l, opts.compression.into())).collect::<Result<Vec<_>>>()?;
        let inline = match opts.cache_to.iter().any(|c| c.location == Location::Inline) {
            true => {
                let steps = self.solver.steps(&[self.image.stage().vertex], remote::Mode::Min);
                let config = exporter.config(&steps, &[], opts.compression.into(), &HashSet::new())?;
                Some(remote::export::inline(&config, &layers))
            }
            false => None,
        };
        let built = write_image(m.store, &self, &State { layers }, &opts.labels, inline)?;
        m.progress.event(Event::Note { text: format!("writing image {} done", built.config) });
        Ok(built)
    }
}

/// Solves `targets` and returns their states. Layers that came from a cache and were never
/// needed during the build are fetched here, once each: all of them for the local store,
/// else the ones the push cannot mount or skip.
fn solve<'s>(
    m: &Machine<'s>,
    opts: &BuildOptions,
    graph: &'s crate::graph::Graph,
    targets: &[VertexId],
    worker: &'s dyn crate::solver::Worker,
    cache: &'s dyn CacheStore,
    imported: &Imported<'_>,
) -> Result<(Solver<'s>, Vec<State>)> {
    // A layer the push mounts or skips from the registry it came from, without fetching it.
    let mounted =
        |l: &Layer| !opts.load && imported.registry_of(&l.digest).is_some_and(|r| opts.push_registries.contains(&r));
    let solved = loop {
        let solver = Solver::new(graph, worker, cache, m.progress);
        let solved = solver.solve(targets).and_then(|states| {
            for l in states.iter().flat_map(|s| s.layers.iter()) {
                // Layers kept as snapshots here are compressed from them at export: not stored now.
                if imported.made_here(&l.digest) {
                    continue;
                }
                match mounted(l) {
                    // Its cache must still hold it.
                    true => imported.vouch(m.store, &l.digest)?,
                    false => imported.ensure(m.store, &l.digest)?,
                }
            }
            Ok(states)
        });
        match solved {
            // A cache whose blob failed to arrive or to verify is dropped, never used for
            // content; the steps that ran are in the local cache, so the retry is cheap.
            Err(e) if imported.drop_failed() => {
                m.progress
                    .event(Event::Warning { text: format!("{}; building again without it", oci::error::chain(&e)) });
            }
            other => break other.map(|states| (solver, states)),
        }
    };
    let _ = std::fs::remove_dir_all(m.root.join("tmp").join(format!("downloads-{}", std::process::id())));
    let (solver, states) = solved?;
    if states.len() != targets.len() {
        return Err(Error::Internal("the solver returned no state for a target".into()));
    }
    Ok((solver, states))
}

/// Registers the layers of base images that were pulled without them (see the CLI's
/// `base_image`) as lazy blobs, fetched from the repository the pull remembered.
fn lazy_bases<'a>(m: &Machine<'a>, graph: &crate::graph::Graph, imported: &mut Imported<'a>) -> Result<()> {
    let Some(net) = m.net else { return Ok(()) };
    let mut by_repo: BTreeMap<String, Vec<(oci::Digest, u64)>> = BTreeMap::new();
    let layers =
        graph.vertices.iter().filter_map(|v| if let Op::Image { layers, .. } = &v.op { Some(layers) } else { None });
    for l in layers.flatten() {
        if m.store.content().contains(&l.digest).map_err(Error::image(format!("look up blob {}", l.digest)))? {
            continue;
        }
        let sources = m.store.sources(&l.digest).map_err(Error::image(format!("look up blob {}", l.digest)))?;
        for repo in sources {
            by_repo.entry(repo).or_default().push((l.digest.clone(), l.size));
        }
    }
    for (repo, layers) in by_repo {
        if let Some(backend) = remote::open(&Location::Registry { reference: repo }, Some(net))? {
            imported.add_base_layers(backend, &layers);
        }
    }
    Ok(())
}

/// Reads every `--cache-from` source's manifest and config (never a layer). A source that
/// cannot even be opened (a bad ref, S3 without a region) is a warning, as any other
/// unusable source.
fn import_caches<'a>(m: &Machine<'a>, specs: &[ImportSpec]) -> Result<Imported<'a>> {
    let mut sources = Vec::new();
    for spec in specs {
        match remote::open(&spec.location, m.net) {
            Ok(Some(b)) => sources.push(b),
            Ok(None) => {}
            Err(e) => {
                let text = format!("cache {} not used: {}", spec.location.describe(), oci::error::chain(&e));
                m.progress.event(Event::Warning { text });
            }
        }
    }
    Ok(Imported::import(sources, m.store, m.progress))
}

/// One `--cache-to` (not inline): the records of `steps` to its backend.
fn export_cache(
    m: &Machine<'_>,
    exporter: &remote::export::Exporter<'_>,
    spec: &ExportSpec,
    steps: &[remote::export::Step],
    mounts: &[MountLayer],
    skeletons: &HashSet<oci::Digest>,
) -> Result<()> {
    let Some(backend) = remote::open(&spec.location, m.net)? else { return Ok(()) };
    let mounts: Vec<MountLayer> = mounts.iter().filter(|l| spec.mounts.includes(&l.id)).cloned().collect();
    let config = exporter.config(steps, &mounts, spec.codec(), skeletons)?;
    exporter.publish(backend.as_ref(), &config).map(drop)
}

/// The layers a `mode=max` export may carry as skeletons: those of the COPY steps from the
/// build context that are not in a final image (whose layers travel whole, for a push to
/// mount or skip them).
fn skeleton_layers(graph: &crate::graph::Graph, solver: &Solver<'_>, targets: &[VertexId]) -> HashSet<oci::Digest> {
    let candidates = remote::skeleton::candidates(graph, targets);
    let image: HashSet<oci::Digest> =
        targets.iter().filter_map(|t| solver.state(*t)).flat_map(|s| s.layers.into_iter().map(|l| l.digest)).collect();
    let own_layer = |v: VertexId| {
        let below = graph.vertices[v].inputs.first().and_then(|i| solver.state(*i)).map_or(0, |s| s.layers.len());
        solver.state(v).filter(|s| s.layers.len() > below).and_then(|mut s| s.layers.pop())
    };
    (0..graph.vertices.len())
        .filter(|v| candidates[*v])
        .filter_map(own_layer)
        .map(|l| l.digest)
        .filter(|d| !image.contains(d))
        .collect()
}

/// The cache mounts some `--cache-to` carries (`mounts=`), packed once for all of them: the
/// ids of the cache mounts of the RUN steps this build ran or hit (never secrets or ssh).
/// Packing happens after the solve, when no step has the directories mounted; a mount that
/// cannot be packed is left out with a warning.
fn mount_layers(
    m: &Machine<'_>,
    graph: &crate::graph::Graph,
    solver: &Solver<'_>,
    imported: &Imported<'_>,
    specs: &[ExportSpec],
) -> Vec<MountLayer> {
    let ids: BTreeSet<String> = (0..graph.vertices.len())
        .filter(|v| solver.state(*v).is_some())
        .filter_map(|v| if let Op::Exec(e) = &graph.vertices[v].op { Some(e) } else { None })
        .flat_map(|e| e.mounts.iter().filter(|mt| mt.spec.kind == MountType::Cache))
        .map(|mt| mt.spec.id.clone().unwrap_or_default())
        .filter(|id| specs.iter().any(|s| s.location != Location::Inline && s.mounts.includes(id)))
        .collect();
    let mut out = Vec::new();
    for id in ids {
        match remote::mounts::export_layer(m.store, &m.root, &id, imported) {
            Ok(Some(layer)) => {
                let text = format!("exporting cache mount {id}: {:.1} MB", layer.layer.size as f64 / 1e6);
                m.progress.event(Event::Note { text });
                out.push(layer);
            }
            Ok(None) => {}
            Err(e) => {
                let text = format!("cache mount {id} not exported: {}", oci::error::chain(&e));
                m.progress.event(Event::Warning { text });
            }
        }
    }
    out
}

/// One layer as `codec` wants it: a plain tar compressed, once per layer and codec (the
/// twin is remembered in the cache); a layer that is compressed already, as it is.
fn compress_layer(
    m: &Machine<'_>,
    lazy: &dyn LazyBlobs,
    files: Option<&ContextFiles>,
    l: &Layer,
    codec: Codec,
) -> Result<Layer> {
    if codec.skeleton {
        if let Some(s) = files.map(|f| skeleton_of(m, lazy, f, l)).transpose()?.flatten() {
            return Ok(s);
        }
        return compress_layer(m, lazy, files, l, codec.whole());
    }
    let compression = codec.compression;
    let Some((name, level)) = codec.twin() else {
        // A plain layer is its own twin: stored if it was kept as its snapshot alone.
        return lazy.ensure(m.store, &l.digest).map(|()| l.clone());
    };
    let name = name.as_str();
    if l.media_type != Compression::None.oci_media_type() {
        return Ok(l.clone());
    }
    if let Some(c) = remembered_twin(m, l, name)? {
        return Ok(c);
    }
    let ingest = m.store.content().writer(oci::Algorithm::Sha256).map_err(Error::image("start a layer"))?;
    let mut w =
        oci::layer::LayerWriter::into_ingest(ingest, compression, level).map_err(Error::image("start a layer"))?;
    let from_snapshot = write_plain_tar(m, lazy, l, &mut w)?;
    let (ingest, info) = w.finish().map_err(Error::image("finish a layer"))?;
    if info.diff_id != l.diff_id && from_snapshot {
        // The snapshot no longer makes the layer: its note goes, so the next build reruns it.
        crate::cache::deferred::Deferred { cache: m.cache, snapshotter: m.snapshotter }.forget(&l.digest)?;
        return Err(crate::cache::deferred::changed(&l.digest));
    }
    if info.diff_id != l.diff_id {
        return Err(Error::Internal(format!("layer {} changed while it was compressed", l.digest)));
    }
    ingest.commit(oci::content::Expected::exactly(&info.digest, info.size)).map_err(Error::image("store a layer"))?;
    let c = Layer {
        digest: info.digest,
        diff_id: info.diff_id,
        size: info.size,
        media_type: info.compression.oci_media_type().to_owned(),
    };
    m.cache.set_compressed(&l.diff_id, name, &c)?;
    Ok(c)
}

/// The twin of `l` remembered under `name`, when its blob is still stored.
fn remembered_twin(m: &Machine<'_>, l: &Layer, name: &str) -> Result<Option<Layer>> {
    let known = m.cache.compressed(&l.diff_id, name)?;
    Ok(known.filter(|c| m.store.content().info(&c.digest).is_ok_and(|i| i.is_some())))
}

/// Writes the plain tar of `l` to `out`: from its snapshot when it was kept as that alone
/// (true), else from its blob, fetched if need be (false).
fn write_plain_tar(m: &Machine<'_>, lazy: &dyn LazyBlobs, l: &Layer, out: &mut dyn std::io::Write) -> Result<bool> {
    let present = m.store.content().contains(&l.digest).map_err(Error::image(format!("look up {}", l.digest)))?;
    if !present && lazy.write_plain(&l.digest, out)? {
        return Ok(true);
    }
    lazy.ensure(m.store, &l.digest)?;
    let mut blob = m.store.content().reader(&l.digest).map_err(Error::image(format!("read layer {}", l.digest)))?;
    std::io::copy(&mut blob, out).map_err(Error::io(format!("read layer {}", l.digest)))?;
    Ok(false)
}

/// The skeleton of the plain layer `l` (see [`remote::skeleton`]), made once and
/// remembered; None when it is not plain or holds a file the build context lacks.
fn skeleton_of(m: &Machine<'_>, lazy: &dyn LazyBlobs, files: &ContextFiles, l: &Layer) -> Result<Option<Layer>> {
    if l.media_type != Compression::None.oci_media_type() {
        return Ok(None);
    }
    if let Some(s) = remembered_twin(m, l, remote::skeleton::TWIN_NAME)? {
        return Ok(Some(s));
    }
    let ingest = m.store.content().writer(oci::Algorithm::Sha256).map_err(Error::image("start a skeleton"))?;
    let mut skeleton = remote::skeleton::Writer::new(ingest, files).map_err(Error::io("start a skeleton"))?;
    let mut tar = oci::digest::HashingWriter::new(&mut skeleton, oci::Algorithm::Sha256);
    write_plain_tar(m, lazy, l, &mut tar)?;
    let (_, diff_id, tar_size) = tar.finish();
    // A snapshot that no longer makes the layer is the whole codec's to report.
    let size = if diff_id == l.diff_id { tar_size } else { 0 };
    let made = remote::skeleton::commit(skeleton, &l.diff_id, size)?;
    if let Some(s) = &made {
        m.cache.set_compressed(&l.diff_id, remote::skeleton::TWIN_NAME, s)?;
    }
    Ok(made)
}

/// The history of a stage: its base's, then one entry per step (empty_layer where the step made no layer).
///
/// Each step is dated when its result was made (a cache hit keeps the first run's time, so a
/// cached rebuild writes the same config and image ID); a step without a vertex (ENV, LABEL,
/// ...) takes the time of the step before it. `SOURCE_DATE_EPOCH` dates them all.
fn history(made: &ImageMade<'_, '_>, stage: usize) -> Vec<Value> {
    let (graph, solver) = (made.graph, made.solver);
    let Some(out) = made.image.stages.get(&stage) else { return vec![] };
    let mut hist = match out.from_stage {
        Some(j) => history(made, j),
        None => out.base_history.clone(),
    };
    let epoch = crate::cache::source_date_epoch().map(|_| oci::store::created_now());
    let mut last = hist.last().and_then(|e| e["created"].as_str()).map(str::to_owned);
    for (created_by, vertex) in &out.steps {
        let made_layer = vertex.is_some_and(|v| {
            let after = solver.state(v).map_or(0, |s| s.layers.len());
            let before = graph.vertices[v].inputs.first().and_then(|i| solver.state(*i)).map_or(0, |s| s.layers.len());
            after > before
        });
        let when = epoch
            .clone()
            .or_else(|| vertex.and_then(|v| solver.created(v)))
            .or_else(|| last.clone())
            .unwrap_or_else(|| UNIX_EPOCH.to_owned());
        let mut e = json!({ "created": when, "created_by": created_by, "comment": "buildkit.dockerfile.v0" });
        if !made_layer {
            e["empty_layer"] = json!(true);
        }
        last = Some(when);
        hist.push(e);
    }
    hist
}

/// The `created` of a history without any dated entry (a stage of metadata on `scratch`).
const UNIX_EPOCH: &str = "1970-01-01T00:00:00Z";

/// Stores one image's config (history, rootfs, labels, inline cache) and manifest.
fn write_image(
    store: &ImageStore,
    made: &ImageMade<'_, '_>,
    state: &State,
    labels: &BTreeMap<String, String>,
    inline: Option<remote::format::CacheConfig>,
) -> Result<Built> {
    let stage = made.image.stage();
    let history = history(made, made.image.target);
    // The image is as old as its newest step: a cached rebuild keeps its ID.
    let when = history.last().and_then(|e| e["created"].as_str()).unwrap_or(UNIX_EPOCH).to_owned();
    let mut config = stage.config.clone();
    config["created"] = json!(when);
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": state.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
    });
    config["history"] = json!(history);
    if let Some(inline) = inline {
        // BuildKit's inline cache sits in the config too (`moby.buildkit.cache.v0`).
        config[remote::format::INLINE_FIELD] =
            serde_json::to_value(&inline).map_err(|source| Error::Json { what: "the inline cache".into(), source })?;
    }
    if !labels.is_empty() {
        let l = &mut config["config"]["Labels"];
        if !l.is_object() {
            *l = json!({});
        }
        for (k, v) in labels {
            l[k] = json!(v);
        }
    }
    let bytes =
        serde_json::to_vec(&config).map_err(|source| Error::Json { what: "write the image config".into(), source })?;
    let config_digest = store.content().put(&bytes).map_err(Error::image("store the image config"))?;
    let descs: Vec<(&str, &oci::Digest, u64)> =
        state.layers.iter().map(|l: &Layer| (l.media_type.as_str(), &l.digest, l.size)).collect();
    let manifest = oci::manifest::oci_manifest((&config_digest, bytes.len() as u64), &descs)
        .map_err(Error::image("write the manifest"))?;
    let target = store.put_manifest(&manifest, oci::media::OCI_MANIFEST).map_err(Error::image("store the manifest"))?;
    Ok(Built { manifest: target, config: config_digest, cache_errors: vec![], platforms: vec![] })
}

/// The image index of a build for several platforms: one entry per platform's image, in the
/// order given, stored in the local store. Its digest stands for the build (`--iidfile`),
/// as BuildKit reports an index's.
fn index_of(store: &ImageStore, builds: Vec<(oci::Platform, Built)>) -> Result<Built> {
    let entries: Vec<oci::index::Entry> =
        builds.iter().map(|(p, b)| oci::index::Entry { target: b.manifest.clone(), platform: p.clone() }).collect();
    let target = oci::index::write(store, &entries).map_err(Error::image("store the image index"))?;
    Ok(Built { config: target.digest.clone(), manifest: target, cache_errors: vec![], platforms: builds })
}

/// A base image from the local store, as docker uses one: by name, else by ID.
pub fn base_from_store(store: &ImageStore, reference: &str, platform: &oci::Platform) -> Result<Option<BaseImage>> {
    let rec = match store.resolve(reference) {
        Ok(r) => r,
        Err(e) if e.kind() == oci::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::image(format!("look up {reference}"))(e)),
    };
    match store.image_for(&rec.target, platform) {
        // An index without this platform's image: the registry may have it.
        Err(e) if e.kind() == oci::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::image(format!("read {reference}"))(e)),
        // An image of another platform under this name (pulled or imported for it): so is
        // the platform's own, in the registry.
        Ok(image) if !built_for(&image.config, platform) => Ok(None),
        Ok(_) => base_of(store, &rec.target, reference, platform).map(Some),
    }
}

/// Whether an image config says it runs on `platform` (one that names no architecture is
/// taken for any).
fn built_for(config: &oci::spec::ImageConfiguration, platform: &oci::Platform) -> bool {
    config.architecture().to_string().is_empty() || oci::Platform::of_config(config) == *platform
}

/// The base image whose manifest (or index) is `target`, for `platform` (its layers need not
/// be in the store yet).
pub fn base_of(store: &ImageStore, target: &Target, reference: &str, platform: &oci::Platform) -> Result<BaseImage> {
    let image = store.image_for(target, platform).map_err(Error::image(format!("read {reference}")))?;
    let config: Value = serde_json::from_slice(&image.config_bytes)
        .map_err(|source| Error::Json { what: format!("{reference}: image config"), source })?;
    let layers = image
        .manifest
        .layers()
        .iter()
        .zip(image.config.rootfs().diff_ids())
        .map(|(d, diff)| {
            Ok(Layer {
                digest: oci::manifest::descriptor_digest(d).map_err(Error::image(format!("read {reference}")))?,
                diff_id: diff.parse().map_err(|e: oci::Error| Error::image(format!("read {reference}"))(e))?,
                size: d.size(),
                media_type: d.media_type().to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(BaseImage { manifest: image.manifest_digest.clone(), layers, config })
}
