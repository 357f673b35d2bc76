//! RUN through [`LocalWorker`] without a sandbox: a fake [`Executor`] records the spec it is
//! asked to run, looks at the host side of its mounts while "running", and writes files into
//! the rootfs as a process would; the copy snapshotter keeps the snapshots in a tempdir.
//! What is checked is what a user relies on: the mounts and environment a step gets, the
//! secrets' mode and owner and that they leave no trace, the layer holding only what the
//! step wrote, and how a failing step is reported.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use oci::content::ContentStore;
use runner::exec::Executor;
use runner::sandbox::{SandboxError, Spec};
use runner::snapshot::{CopySnapshotter, Mount, Result as SnapResult, Scaffold, Snapshotter};
use runner::unpack::Whiteouts;

use super::{LocalWorker, Secret};
use crate::cache::remote::export::Codec;
use crate::cache::{CacheStore, MemoryCache};
use crate::context::{Context, Ignore};
use crate::dockerfile::mount::MountSpec;
use crate::error::Error;
use crate::graph::{ExecMount, ExecOp, Op, Vertex, VertexId};
use crate::progress::NoProgress;
use crate::solver::{State, Worker};

const SECRET: &str = "s3cr3t-value-4f1d";
/// No `--build-context`s.
static NAMED: std::collections::BTreeMap<String, crate::context::NamedContext> = std::collections::BTreeMap::new();

/// What the fake process does: it gets the spec and the rootfs directory.
type Act = dyn Fn(&Spec, &Path) -> i32 + Send + Sync;

/// An executor that runs nothing: it records each spec and calls `act` "inside" the step.
struct FakeExecutor {
    specs: Mutex<Vec<Spec>>,
    act: Box<Act>,
    output: &'static str,
}

impl FakeExecutor {
    fn new(act: impl Fn(&Spec, &Path) -> i32 + Send + Sync + 'static) -> FakeExecutor {
        FakeExecutor { specs: Mutex::new(vec![]), act: Box::new(act), output: "" }
    }
}

impl Executor for FakeExecutor {
    fn run(&self, spec: &Spec, output: &mut dyn FnMut(&[u8])) -> Result<i32, SandboxError> {
        self.specs.lock().unwrap().push(spec.clone());
        let [Mount::Bind { source, .. }] = spec.rootfs.as_slice() else { panic!("copy snapshots are binds") };
        // What the sandbox does first: create the mount targets the rootfs lacks.
        let targets = spec.volumes.iter().map(|v| v.container.clone()).chain(spec.tmpfs.iter().cloned());
        for t in targets.chain(runner::sandbox::MOUNTPOINTS.map(|(rel, _)| rel.to_owned())) {
            let p = source.join(t.trim_start_matches('/'));
            if !p.exists() {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let is_file = spec.volumes.iter().any(|v| v.container == t && v.host.is_file());
                if is_file || t.starts_with("etc/") {
                    std::fs::write(&p, "").unwrap()
                } else {
                    std::fs::create_dir(&p).unwrap()
                }
            }
        }
        output(self.output.as_bytes());
        Ok((self.act)(spec, source))
    }
}

/// What a step runs with beside the fixture's store and secrets.
struct Step<'a> {
    snapshotter: &'a dyn Snapshotter,
    cache: &'a MemoryCache,
    twin_codec: &'a (dyn Fn(VertexId) -> Option<Codec> + Sync),
}

/// The copy snapshotter claiming it can write a committed snapshot's layer again, as
/// overlay can (so a step keeps its layer as a digest only), counting the diffs it writes.
struct Rediffing<'a> {
    inner: &'a CopySnapshotter,
    diffs: AtomicUsize,
}

impl Snapshotter for Rediffing<'_> {
    fn prepare(&self, key: &str, parent: Option<&str>) -> SnapResult<Vec<Mount>> {
        self.inner.prepare(key, parent)
    }
    fn mounts(&self, key: &str) -> SnapResult<Vec<Mount>> {
        self.inner.mounts(key)
    }
    fn view(&self, key: &str, parent: Option<&str>) -> SnapResult<Vec<Mount>> {
        self.inner.view(key, parent)
    }
    fn commit(&self, name: &str, key: &str) -> SnapResult<()> {
        self.inner.commit(name, key)
    }
    fn remove(&self, key: &str) -> SnapResult<()> {
        self.inner.remove(key)
    }
    fn diff(&self, key: &str, out: &mut dyn std::io::Write) -> SnapResult<()> {
        self.diffs.fetch_add(1, Ordering::Relaxed);
        self.inner.diff(key, out)
    }
    fn upper(&self, key: &str) -> SnapResult<PathBuf> {
        self.inner.upper(key)
    }
    fn whiteouts(&self) -> Whiteouts {
        self.inner.whiteouts()
    }
    fn exists(&self, name: &str) -> bool {
        self.inner.exists(name)
    }
    fn scaffold(&self, key: &str, targets: &[String]) -> SnapResult<Scaffold> {
        self.inner.scaffold(key, targets)
    }
    fn remove_scaffold(&self, key: &str, scaffold: &Scaffold) -> SnapResult<()> {
        self.inner.remove_scaffold(key, scaffold)
    }
    fn rediffs(&self) -> bool {
        true
    }
}

/// A worker on temp dirs, with the secret `tok` given as a file.
struct Fixture {
    root: tempfile::TempDir,
    snapshots: CopySnapshotter,
    store: oci::ImageStore,
    secret_file: PathBuf,
    context: Option<Context>,
}

impl Fixture {
    fn new() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let snapshots = CopySnapshotter::new(&root.path().join("snapshots")).unwrap();
        let store = oci::ImageStore::open(root.path().join("store")).unwrap();
        let secret_file = root.path().join("user-secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        Fixture { root, snapshots, store, secret_file, context: None }
    }

    /// Runs `RUN /bin/sh -c make` with `mounts` on `parent` through `executor`.
    fn run(&self, executor: &FakeExecutor, mounts: &[&str], parent: &State) -> crate::error::Result<State> {
        let step = Step { snapshotter: &self.snapshots, cache: &MemoryCache::default(), twin_codec: &|_| None };
        self.run_step(executor, mounts, parent, &step)
    }

    /// [`Fixture::run`] with the snapshotter, cache and twin codecs of `step`.
    fn run_step(
        &self,
        executor: &FakeExecutor,
        mounts: &[&str],
        parent: &State,
        step: &Step<'_>,
    ) -> crate::error::Result<State> {
        self.worker(executor, step).execute(1, &vertex(mounts), std::slice::from_ref(parent))
    }

    /// The worker a step of this fixture runs on.
    fn worker<'a>(&'a self, executor: &'a FakeExecutor, step: &Step<'a>) -> LocalWorker<'a> {
        let secrets = HashMap::from([("tok".to_owned(), Secret::File(self.secret_file.clone()))]);
        LocalWorker {
            store: &self.store,
            snapshotter: step.snapshotter,
            executor,
            context: self.context.as_ref(),
            named: &NAMED,
            cache: step.cache,
            progress: &NoProgress,
            root: self.root.path().join("berth"),
            secrets,
            ssh: HashMap::new(),
            dockerfile: ("Dockerfile", "FROM scratch\nRUN make\n"),
            fetch: &|_: &str, _: &Path| Ok(()),
            downloads: Mutex::new(HashMap::new()),
            lazy: &crate::cache::remote::NoLazy,
            twin_codec: step.twin_codec,
        }
    }

    /// What is left in berth's temp dir (nothing, after any step).
    fn leftovers(&self) -> Vec<PathBuf> {
        let tmp = self.root.path().join("berth/tmp");
        std::fs::read_dir(tmp).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
    }

    /// The entries and the whole text of a layer.
    fn layer(&self, state: &State) -> (Vec<String>, Vec<u8>) {
        let digest = &state.layers.last().expect("a layer").digest;
        let mut bytes = Vec::new();
        oci::content::ContentStore::reader(self.store.content(), digest).unwrap().read_to_end(&mut bytes).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&bytes[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_owned())
            .collect();
        names.sort();
        (names, bytes)
    }
}

fn vertex(mounts: &[&str]) -> Vertex {
    let mounts = mounts.iter().map(|m| ExecMount { spec: MountSpec::parse(m).unwrap(), input: None }).collect();
    let exec = ExecOp {
        args: vec!["/bin/sh".into(), "-c".into(), "make".into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: "/".into(),
        user: None,
        platform: "linux/amd64".into(),
        host_network: false,
        extra_hosts: vec![],
        insecure: false,
        mounts,
        script: None,
        proxy_env: vec![],
    };
    Vertex { op: Op::Exec(exec), inputs: vec![0], name: "[2/2] RUN make".into(), at: 13, no_cache: false }
}

/// A first step that makes a small base (/etc, /usr/bin/tool) to run on.
fn base(f: &Fixture) -> State {
    let exec = FakeExecutor::new(|_, root| {
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/tool"), "#!").unwrap();
        0
    });
    f.run(&exec, &[], &State { layers: vec![] }).unwrap()
}

#[test]
fn run_gets_its_mounts_and_env_and_its_layer_holds_only_what_it_wrote() {
    let f = Fixture::new();
    let parent = base(&f);
    let seen = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let exec = FakeExecutor::new(move |spec, root| {
        let mut log = log.lock().unwrap();
        for v in &spec.volumes {
            let m = std::fs::metadata(&v.host).unwrap();
            let content = std::fs::read_to_string(&v.host).unwrap_or_default();
            log.push(format!(
                "{} {:o}:{}:{} ro={} {content}",
                v.container,
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                v.read_only
            ));
            if v.host.is_file() {
                let dir = std::fs::metadata(v.host.parent().unwrap()).unwrap();
                log.push(format!("dir {:o}", dir.mode() & 0o7777));
            }
        }
        std::fs::create_dir(root.join("out")).unwrap();
        std::fs::write(root.join("out/result"), "built").unwrap();
        0
    });
    let mounts = [
        "type=secret,id=tok",
        "type=secret,id=tok,target=/etc/app/key,mode=0440,uid=1000,gid=1001",
        "type=secret,id=tok,env=TOKEN",
        "type=tmpfs,target=/scratch",
    ];
    let state = f.run(&exec, &mounts, &parent).unwrap();
    let spec = exec.specs.lock().unwrap().pop().unwrap();
    assert_eq!(spec.args, ["/bin/sh", "-c", "make"]);
    assert_eq!(spec.env, ["PATH=/usr/bin:/bin".to_owned(), format!("TOKEN={SECRET}")]);
    assert_eq!(spec.tmpfs, ["/scratch"]);
    assert_eq!(spec.hostname, "buildkitsandbox");
    let root = rustix::process::geteuid().is_root();
    let seen = seen.lock().unwrap().clone();
    // Without root the copy cannot be given away: it keeps the building user.
    let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    let me = if root { "0:0".to_owned() } else { format!("{uid}:{gid}") };
    assert_eq!(seen[0], format!("/run/secrets/tok 400:{me} ro=true {SECRET}"), "BuildKit's default: 0400 root");
    assert_eq!(seen[1], "dir 700", "secret copies live in a 0700 directory");
    if root {
        assert_eq!(seen[2], format!("/etc/app/key 440:1000:1001 ro=true {SECRET}"), "mode=, uid=, gid= as given");
    }
    let user_file = std::fs::metadata(&f.secret_file).unwrap();
    assert_eq!(user_file.mode() & 0o777, 0o644, "the user's secret file is not touched");
    let (names, bytes) = f.layer(&state);
    assert_eq!(names, ["out", "out/result"], "mount targets and their parents are no change");
    assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
    assert_eq!(f.leftovers(), Vec::<PathBuf>::new(), "the secret copies and the work dir are gone");
}

#[test]
fn a_failing_run_names_its_whole_argv_and_leaves_nothing_behind() {
    let f = Fixture::new();
    let parent = base(&f);
    let mut exec = FakeExecutor::new(|_, root| {
        std::fs::write(root.join("half-written"), "x").unwrap();
        2
    });
    exec.output = "cc -o app main.c\nmake: *** [Makefile:2: app] Error 1\n";
    let err = f.run(&exec, &["type=secret,id=tok"], &parent).unwrap_err();
    let text = err.to_string();
    assert!(
        text.ends_with("process \"/bin/sh -c make\" did not complete successfully: exit code: 2"),
        "as BuildKit says it: {text}"
    );
    let Error::StepFailed { code, tail, at, .. } = err else { panic!("{text}") };
    assert_eq!(code, 2);
    assert_eq!(tail.last().map(String::as_str), Some("make: *** [Makefile:2: app] Error 1"));
    assert_eq!(at.line, 2);
    assert_eq!(f.leftovers(), Vec::<PathBuf>::new());
}

#[test]
fn a_missing_required_secret_is_named_and_nothing_runs() {
    let f = Fixture::new();
    let exec = FakeExecutor::new(|_, _| 0);
    let err = f.run(&exec, &["type=secret,id=npmrc,required"], &State { layers: vec![] }).unwrap_err();
    assert!(err.to_string().contains("\"npmrc\"") && err.to_string().contains("--secret id=npmrc"), "{err}");
    assert!(exec.specs.lock().unwrap().is_empty());
    // Not required: the step runs without it.
    f.run(&exec, &["type=secret,id=npmrc"], &State { layers: vec![] }).unwrap();
    assert!(exec.specs.lock().unwrap()[0].volumes.is_empty());
}

#[test]
fn a_context_bind_shows_only_what_dockerignore_admits_and_its_key_covers_exactly_that() {
    let mut f = Fixture::new();
    let ctx_dir = tempfile::tempdir().unwrap();
    for (name, body) in [("app.py", "print()"), (".env", "PASSWORD=x"), ("src/lib.py", "x"), ("src/.env", "y")] {
        std::fs::create_dir_all(ctx_dir.path().join(name).parent().unwrap()).unwrap();
        std::fs::write(ctx_dir.path().join(name), body).unwrap();
    }
    f.context = Some(Context::new(ctx_dir.path(), Ignore::parse("**/.env\n").unwrap()).unwrap());
    let seen = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let exec = FakeExecutor::new(move |spec, _| {
        let v = &spec.volumes[0];
        let mut names: Vec<String> = walk(&v.host);
        names.sort();
        log.lock().unwrap().extend(names);
        assert!(v.read_only && v.container == "/src");
        0
    });
    f.run(&exec, &["type=bind,target=/src"], &State { layers: vec![] }).unwrap();
    assert_eq!(*seen.lock().unwrap(), ["app.py", "src", "src/lib.py"]);
    assert_eq!(f.leftovers(), Vec::<PathBuf>::new(), "the filtered view is unmounted and removed");
    // The key: an ignored file's change is invisible, an admitted one's is not.
    let key = || {
        let (cache, fetch) = (MemoryCache::default(), |_: &str, _: &Path| Ok(()));
        let worker = LocalWorker {
            store: &f.store,
            snapshotter: &f.snapshots,
            executor: &exec,
            context: f.context.as_ref(),
            named: &std::collections::BTreeMap::new(),
            cache: &cache,
            progress: &NoProgress,
            root: f.root.path().join("berth"),
            secrets: HashMap::new(),
            ssh: HashMap::new(),
            dockerfile: ("Dockerfile", ""),
            fetch: &fetch,
            downloads: Mutex::new(HashMap::new()),
            lazy: &crate::cache::remote::NoLazy,
            twin_codec: &|_| None,
        };
        worker.sources_digest(&vertex(&["type=bind,target=/src"]), &[]).unwrap().unwrap()
    };
    let before = key();
    std::fs::write(ctx_dir.path().join(".env"), "PASSWORD=changed").unwrap();
    std::fs::write(ctx_dir.path().join("src/.env"), "changed").unwrap();
    assert_eq!(key(), before);
    std::fs::write(ctx_dir.path().join("src/lib.py"), "changed").unwrap();
    assert_ne!(key(), before);
}

#[test]
fn a_step_a_cache_export_carries_makes_its_compressed_twin_from_the_one_diff_of_its_layer() {
    let f = Fixture::new();
    let parent = base(&f);
    let snapshots = Rediffing { inner: &f.snapshots, diffs: AtomicUsize::new(0) };
    let cache = MemoryCache::default();
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let written = text.clone();
    let exec = FakeExecutor::new(move |_, root| {
        std::fs::create_dir(root.join("out")).unwrap();
        std::fs::write(root.join("out/data"), &written).unwrap();
        0
    });
    let gzip = Codec::from(oci::layer::Compression::Gzip);
    let step = Step { snapshotter: &snapshots, cache: &cache, twin_codec: &|id| (id == 1).then_some(gzip) };
    let state = f.run_step(&exec, &[], &parent, &step).unwrap();
    let plain = state.layers.last().unwrap().clone();
    assert_eq!(plain.media_type, oci::layer::Compression::None.oci_media_type());
    assert_eq!(plain.digest, plain.diff_id);
    assert_eq!(snapshots.diffs.load(Ordering::Relaxed), 1, "the step's changes are read once");
    let content = f.store.content();
    assert!(!content.contains(&plain.digest).unwrap(), "the plain layer is left to its snapshot");

    // The twin: stored, remembered under the codec's name, and the same layer gzipped.
    let twin = cache.compressed(&plain.diff_id, "gzip-1").unwrap().expect("the twin is remembered");
    assert_eq!(twin.media_type, oci::layer::Compression::Gzip.oci_media_type());
    assert_eq!(twin.diff_id, plain.diff_id);
    let mut gz = Vec::new();
    content.reader(&twin.digest).unwrap().read_to_end(&mut gz).unwrap();
    assert_eq!((oci::Digest::of(&gz), gz.len() as u64), (twin.digest.clone(), twin.size));
    assert!(twin.size < plain.size / 4, "{} of {} bytes", twin.size, plain.size);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut tar).unwrap();
    assert_eq!((oci::Digest::of(&tar), tar.len() as u64), (plain.diff_id.clone(), plain.size));
    let mut entries = tar::Archive::new(&tar[..]);
    let mut data = entries.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path().unwrap().ends_with("out/data"));
    let mut got = String::new();
    data.as_mut().expect("out/data is in the layer").read_to_string(&mut got).unwrap();
    assert_eq!(got, text);

    // A step no export carries makes no twin.
    let other = FakeExecutor::new(|_, root| {
        std::fs::write(root.join("other"), "x".repeat(4096)).unwrap();
        0
    });
    let step = Step { snapshotter: &snapshots, cache: &cache, twin_codec: &|id| (id == 2).then_some(gzip) };
    let state = f.run_step(&other, &[], &parent, &step).unwrap();
    let plain = state.layers.last().unwrap();
    assert_eq!(cache.compressed(&plain.diff_id, "gzip-1").unwrap(), None);
    assert!(!content.contains(&plain.digest).unwrap(), "the plain layer is left to its snapshot");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
        }
        out.push(name);
    }
    out
}

#[test]
fn a_context_copy_a_cache_export_carries_as_a_skeleton_is_written_back_from_the_context_byte_for_byte() {
    use crate::cache::remote::skeleton;
    use crate::graph::{CopyFrom, CopyOp, CopySrc};
    let mut f = Fixture::new();
    let parent = base(&f);
    let ctx_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ctx_dir.path().join("src/lib")).unwrap();
    let noise: Vec<u8> = (0..400_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(ctx_dir.path().join("src/lib/data.bin"), &noise).unwrap();
    std::fs::write(ctx_dir.path().join("src/main.py"), "print('hi')\n").unwrap();
    f.context = Some(Context::new(ctx_dir.path(), Ignore::default()).unwrap());
    let copy = CopyOp {
        from: CopyFrom::Context,
        sources: vec![CopySrc::Path("src/".into())],
        dest: "/app/".into(),
        dest_is_dir: true,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: vec![],
        unpack_archives: false,
    };
    let v =
        Vertex { op: Op::Copy(copy), inputs: vec![0], name: "[2/2] COPY src/ /app/".into(), at: 13, no_cache: false };
    assert!(skeleton::eligible(&v));
    let snapshots = Rediffing { inner: &f.snapshots, diffs: AtomicUsize::new(0) };
    let cache = MemoryCache::default();
    let codec = Codec::from(oci::layer::Compression::Gzip).skeleton();
    let exec = FakeExecutor::new(|_, _| 0);
    let twin_codec = |_| Some(codec);
    let worker = f.worker(&exec, &Step { snapshotter: &snapshots, cache: &cache, twin_codec: &twin_codec });
    worker.sources_digest(&v, std::slice::from_ref(&parent)).unwrap(); // the key hashes the files
    let state = worker.execute(1, &v, std::slice::from_ref(&parent)).unwrap();
    let plain = state.layers.last().unwrap().clone();
    assert_eq!(snapshots.diffs.load(Ordering::Relaxed), 1, "the copy's changes are read once");
    assert!(!f.store.content().contains(&plain.digest).unwrap(), "the plain layer is left to its snapshot");

    let skel = cache.compressed(&plain.diff_id, skeleton::TWIN_NAME).unwrap().expect("the skeleton is remembered");
    assert_eq!((skel.media_type.as_str(), &skel.diff_id), (skeleton::MEDIA_TYPE, &plain.diff_id));
    assert!(skel.size < plain.size / 20, "a skeleton of {} bytes for a layer of {}", skel.size, plain.size);
    // Another checkout of the same files: the layer comes back the same bytes.
    let files = f.context.as_ref().unwrap().files();
    let mut tar = Vec::new();
    skeleton::rebuild(f.store.content().reader(&skel.digest).unwrap(), files, &mut tar).unwrap();
    assert_eq!((oci::Digest::of(&tar), tar.len() as u64), (plain.diff_id.clone(), plain.size));
}
