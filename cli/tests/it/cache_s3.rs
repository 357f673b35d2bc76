//! The S3 build cache (`--cache-to/--cache-from type=s3,...`) against a real S3 server
//! (s3s-fs, request signatures checked) started in the test process: two fresh roots as two
//! CI runners, a wrong secret key, and a blob object whose bytes were changed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::util::{build_store, p, steps_that_ran, Berth};

const BUCKET: &str = "ci-cache";
const ACCESS_KEY: &str = "berth-cache-access";
const SECRET_KEY: &str = "berth-cache-secret-0123456789";

/// A two-stage Dockerfile: stage `build` has a step the final image does not carry.
const DOCKERFILE: &str = "\
FROM busybox AS build
COPY input.txt /input.txt
RUN tr a-z A-Z < /input.txt > /upper.txt && echo scratch > /only-in-build.txt

FROM busybox
COPY --from=build /upper.txt /upper.txt
RUN cat /upper.txt > /final.txt
";

/// s3s-fs on 127.0.0.1 with one bucket, on its own thread and runtime; stopped on drop.
struct S3 {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3 {
    fn start() -> S3 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        res = listener.accept() => match res { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut stopped => break,
                    };
                    let conn =
                        http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        S3 { addr, dir, stop: Some(stop), thread: Some(thread) }
    }

    /// The cache's flag value, as a CI script writes it.
    fn spec(&self, extra: &str) -> String {
        format!(
            "type=s3,bucket={BUCKET},region=us-east-1,endpoint_url=http://{},use_path_style=true,prefix=ci/{extra}",
            self.addr
        )
    }

    /// The file s3s-fs keeps an object's bytes in.
    fn object(&self, key: &str) -> PathBuf {
        self.dir.path().join(BUCKET).join(key)
    }

    /// The digests of the layer blobs the cache manifest lists.
    fn layers(&self) -> Vec<String> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.object("ci/manifests/berth")).unwrap()).unwrap();
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A build context with the Dockerfile, under a directory of its own (`name` makes the path differ).
fn context(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("input.txt"), "shared through s3\n").unwrap();
    (dir, ctx)
}

/// `berth build` with AWS credentials in the environment (and nothing else from this
/// machine's AWS setup); `secret` is the secret key the build signs with.
fn build(b: &Berth, secret: &str, args: &[&str]) -> Output {
    let mut full = vec!["build"];
    full.extend_from_slice(args);
    b.cmd(&full)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/nonexistent/berth-test/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/berth-test/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// stderr then stdout, as one text.
fn log(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// Every blob of a berth root's content store hashes to its name.
fn assert_store_verified(b: &Berth) {
    let dir = b.root.path().join("content/blobs/sha256");
    let mut n = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap();
        let bytes = std::fs::read(f.path()).unwrap();
        let hex = oci::Digest::of(&bytes).hex().to_owned();
        assert_eq!(f.file_name().to_string_lossy(), hex, "a blob in {} is not its digest", dir.display());
        n += 1;
    }
    assert!(n > 0, "no blobs in {}", dir.display());
}

/// Runner A builds and exports every step (`mode=max`); returns its image ID.
fn runner_a(s3: &S3, a: &Berth, ctx: &Path) -> String {
    let iid = a.root.path().join("iid");
    let out = build(
        a,
        SECRET_KEY,
        &["--progress", "plain", "--cache-to", &s3.spec(",mode=max"), "--iidfile", &p(&iid), &p(ctx)],
    );
    let text = log(&out);
    assert!(out.status.success(), "runner A: {text}");
    assert!(text.contains(&format!("exporting cache to s3 {BUCKET}/ci/manifests/berth")), "{text}");
    std::fs::read_to_string(iid).unwrap()
}

#[test]
fn a_fresh_runner_hits_every_step_from_an_s3_cache() {
    let (Some(a), Some(b)) = (build_store(), build_store()) else { return };
    let s3 = S3::start();
    let (_da, ctx_a) = context("runner-a");
    let id_a = runner_a(&s3, &a, &ctx_a);
    assert!(s3.object("ci/manifests/berth").is_file(), "no manifest object");
    let layers = s3.layers();
    // mode=max: the build stage's own layers too (2 there, 2 in the final stage).
    assert!(layers.len() >= 4, "{layers:?}");
    for l in &layers {
        assert!(s3.object(&format!("ci/blobs/{l}")).is_file(), "blob {l} is not under ci/blobs/");
    }

    let (_db, ctx_b) = context("elsewhere/runner-b");
    let iid = b.root.path().join("iid");
    let out = build(
        &b,
        SECRET_KEY,
        &["--progress", "plain", "--cache-from", &s3.spec(""), "--iidfile", &p(&iid), &p(&ctx_b)],
    );
    let text = log(&out);
    assert!(out.status.success(), "runner B: {text}");
    assert!(text.contains("importing cache s3 "), "{text}");
    assert_eq!(steps_that_ran(&text), Vec::<String>::new(), "runner B ran steps:\n{text}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id_a, "runner B built another image");
    assert_store_verified(&b);

    // A second export finds every blob there and uploads only the manifest.
    let out = build(
        &b,
        SECRET_KEY,
        &["--progress", "plain", "--cache-from", &s3.spec(""), "--cache-to", &s3.spec(",mode=max"), &p(&ctx_b)],
    );
    let text = log(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("(0 uploaded, 0.0 MB;"), "a no-change export uploaded blobs:\n{text}");
}

#[test]
fn a_wrong_secret_key_warns_on_import_and_fails_the_export() {
    let Some(b) = build_store() else { return };
    let s3 = S3::start();
    let (_d, ctx) = context("ctx");
    let wrong = "not-the-secret-key-0123456789";

    let out = build(&b, wrong, &["--progress", "plain", "--cache-from", &s3.spec(""), &p(&ctx)]);
    let text = log(&out);
    assert!(out.status.success(), "an unreadable cache failed the build: {text}");
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARNING")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("s3 ci-cache/ci/manifests/berth") && warnings[0].contains("403"), "{}", warnings[0]);
    assert!(!steps_that_ran(&text).is_empty(), "{text}");

    // Nothing exported yet (the first build of a branch): a miss, said once.
    let out = build(&b, SECRET_KEY, &["-q", "--cache-from", &s3.spec(""), &p(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(out.status.success(), "an empty bucket failed the build: {err}");
    assert_eq!(err, "WARNING: cache s3 ci-cache/ci/manifests/berth: no cache there yet; not used");

    let out = build(&b, wrong, &["-q", "--cache-to", &s3.spec(""), &p(&ctx)]);
    assert!(!out.status.success(), "an export with a wrong key succeeded: {}", log(&out));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "one clear line expected, got: {err}");
    assert!(err.starts_with("berth: cache export to s3 ci-cache/ci/manifests/berth failed"), "{err}");
    assert!(err.contains("HTTP 403"), "{err}");

    let out = build(&b, wrong, &["-q", "--cache-to", &s3.spec(",ignore-error=true"), &p(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(out.status.success(), "ignore-error=true failed: {err}");
    assert!(err.starts_with("WARNING: cache export to s3 ") && err.contains("ignore-error=true"), "{err}");
    assert!(!s3.object("ci/manifests/berth").exists(), "a refused export wrote a manifest");

    // No region anywhere: a source that cannot be used, one warning naming what is missing
    // (an import is never an error).
    let no_region = s3.spec("").replace("region=us-east-1,", "");
    let mut cmd = b.cmd(&["build", "-q", "--cache-from", &no_region, &p(&ctx)]);
    let out = cmd
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent/berth-test/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/berth-test/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(out.status.success(), "a bucket with no region failed the build: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("WARNING: cache s3 ") && err.contains("no region: give region= or set AWS_REGION"),
        "{err}"
    );
}

#[test]
fn a_corrupt_blob_object_is_never_used() {
    let (Some(a), Some(b)) = (build_store(), build_store()) else { return };
    let s3 = S3::start();
    let (_da, ctx_a) = context("a");
    runner_a(&s3, &a, &ctx_a);
    // Every layer object keeps its size but not its bytes.
    for l in s3.layers() {
        let path = s3.object(&format!("ci/blobs/{l}"));
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::write(&path, vec![b'x'; len]).unwrap();
    }

    let (_db, ctx_b) = context("b");
    let iid = b.root.path().join("iid");
    let out = build(
        &b,
        SECRET_KEY,
        &["--progress", "plain", "--cache-from", &s3.spec(""), "--iidfile", &p(&iid), &p(&ctx_b)],
    );
    let text = log(&out);
    eprintln!("runner B on a corrupt cache (exit {:?}):\n{text}", out.status.code());
    assert!(text.contains("digest mismatch") || text.contains("sha256"), "{text}");
    assert_store_verified(&b);
    if out.status.success() {
        // A miss: the steps ran again and the image is the one A built from the same input.
        assert!(!steps_that_ran(&text).is_empty(), "{text}");
        assert_eq!(
            b.ok(&["run", "--rm", &std::fs::read_to_string(&iid).unwrap(), "cat", "/final.txt"]),
            "SHARED THROUGH S3\n"
        );
    } else {
        let err = text.lines().rfind(|l| l.starts_with("berth: ")).unwrap_or("");
        assert!(err.contains("s3 ci-cache/ci/manifests/berth") || err.contains("s3://"), "{text}");
    }
}
