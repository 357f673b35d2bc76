//! Cache mounts that travel (`--cache-to ...,mounts=true`): what a `RUN --mount=type=cache`
//! step put in its cache on one CI runner is there on a fresh runner that imports the cache,
//! an unchanged mount is not uploaded again, and `mounts=ID` carries only the ids it names.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::{build_store, p, Berth, Server};

/// Fills the cache mount `c`: lists what it held, then adds a log line and a stamp.
const FILL: &str = concat!(
    "FROM busybox:latest\n",
    "ARG V\n",
    "RUN --mount=type=cache,target=/cache,id=c sh -c 'ls /cache > /seen; echo $V >> /cache/log; date > /cache/stamp-$V'\n",
);

/// Only reads the cache mount `c`.
const READ: &str = concat!(
    "FROM busybox:latest\n",
    "ARG W\n",
    "RUN --mount=type=cache,target=/cache,id=c sh -c 'cat /cache/log > /log-$W'\n",
);

/// Builds `dockerfile` as `tag` with `args` (build args, cache flags); returns the log.
fn build(b: &Berth, dockerfile: &str, tag: &str, args: &[&str]) -> String {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let ctx_path = p(ctx.path());
    let mut all = vec!["build", "--progress", "plain", "-t", tag];
    all.extend_from_slice(args);
    all.push(&ctx_path);
    let o = b.output(&all);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build {tag} failed:\n{log}");
    log
}

fn to(dir: &Path, mounts: &str) -> String {
    format!("type=local,dest={},{mounts}", p(dir))
}

fn from(dir: &Path) -> String {
    format!("type=local,src={}", p(dir))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The cache config of the layout `dir`'s newest entry.
fn cache_config(dir: &Path) -> serde_json::Value {
    let index = json(&dir.join("index.json"));
    let blob = |d: &str| dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let manifest = json(&blob(index["manifests"].as_array().unwrap().last().unwrap()["digest"].as_str().unwrap()));
    json(&blob(manifest["config"]["digest"].as_str().unwrap()))
}

/// The digest of the blob holding cache mount `id` in the layout `dir`, if it carries it.
fn mount_blob(dir: &Path, id: &str) -> Option<String> {
    let config = cache_config(dir);
    let mounts = config["mounts"].as_array().cloned().unwrap_or_default();
    let m = mounts.iter().find(|m| m["id"] == id)?;
    let blob = &config["blobs"][m["blob"].as_u64().unwrap() as usize];
    Some(blob["digest"].as_str().unwrap().to_owned())
}

fn blob_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn a_cache_mount_filled_on_one_runner_is_there_on_a_fresh_runner() {
    let Some(a) = build_store() else { return };
    let Some(b) = build_store() else { return };
    let Some(c) = build_store() else { return };
    let cache = tempfile::tempdir().unwrap();
    let (first, second) = (cache.path().join("first"), cache.path().join("second"));
    build(&a, FILL, "fill:1", &["--build-arg", "V=1", "--cache-to", &to(&first, "mounts=true")]);
    assert_eq!(a.ok(&["run", "--rm", "fill:1", "cat", "/seen"]), "", "runner A starts with an empty cache");
    assert!(mount_blob(&first, "c").is_some(), "mounts=true exports the cache mount c");

    // Runner B: a changed build arg reruns the step, on A's cache files.
    let log = build(
        &b,
        FILL,
        "fill:2",
        &["--build-arg", "V=2", "--cache-from", &from(&first), "--cache-to", &to(&second, "mounts=true")],
    );
    assert!(log.contains("cache mount c: restored"), "{log}");
    assert_eq!(b.ok(&["run", "--rm", "fill:2", "cat", "/seen"]), "log\nstamp-1\n");

    // Runner C sees what A and B both put there.
    build(&c, FILL, "fill:3", &["--build-arg", "V=3", "--cache-from", &from(&second)]);
    assert_eq!(c.ok(&["run", "--rm", "fill:3", "cat", "/seen"]), "log\nstamp-1\nstamp-2\n");
}

#[test]
fn an_unchanged_cache_mount_is_not_uploaded_again() {
    let Some(a) = build_store() else { return };
    let Some(b) = build_store() else { return };
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    build(&a, FILL, "fill:1", &["--build-arg", "V=1", "--cache-to", &to(&dir, "mounts=true")]);
    let mount = mount_blob(&dir, "c").expect("the mount is exported");
    let blobs = blob_names(&dir);

    // The same build again on A: the mount is unchanged, every blob is there already.
    let log = build(&a, FILL, "fill:1", &["--build-arg", "V=1", "--cache-to", &to(&dir, "mounts=true")]);
    assert!(log.contains("(0 uploaded"), "{log}");
    assert_eq!(blob_names(&dir), blobs);
    assert_eq!(mount_blob(&dir, "c").as_ref(), Some(&mount));

    // Runner B restores the mount for a step that only reads it: its export packs the
    // restored files to the very blob A uploaded.
    let log = build(
        &b,
        READ,
        "read:1",
        &["--build-arg", "W=x", "--cache-from", &from(&dir), "--cache-to", &to(&dir, "mounts=true")],
    );
    assert_eq!(b.ok(&["run", "--rm", "read:1", "cat", "/log-x"]), "1\n");
    assert_eq!(mount_blob(&dir, "c").as_ref(), Some(&mount), "the restored mount packs the same:\n{log}");
}

#[test]
fn mounts_names_the_ids_an_export_carries() {
    let Some(a) = build_store() else { return };
    let cache = tempfile::tempdir().unwrap();
    let (other, none, named) = (cache.path().join("other"), cache.path().join("none"), cache.path().join("named"));
    build(&a, FILL, "fill:1", &["--build-arg", "V=1", "--cache-to", &to(&other, "mounts=other")]);
    assert_eq!(mount_blob(&other, "c"), None, "mounts=other leaves c out");
    assert!(cache_config(&other)["records"].as_array().is_some_and(|r| !r.is_empty()), "the records still go");
    build(&a, FILL, "fill:1", &["--build-arg", "V=1", "--cache-to", &format!("type=local,dest={}", p(&none))]);
    assert_eq!(mount_blob(&none, "c"), None, "without mounts= no mount is exported");
    build(&a, FILL, "fill:1", &["--build-arg", "V=1", "--cache-to", &to(&named, "mounts=other,c")]);
    assert!(mount_blob(&named, "c").is_some(), "mounts=other,c carries c");
}

#[test]
fn a_cache_mount_travels_through_a_registry() {
    let Some(a) = build_store() else { return };
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let reference = format!("{}/app:cache", server.addr);
    let export = format!("type=registry,ref={reference},mounts=true");
    build(&a, FILL, "fill:1", &["--build-arg", "V=1", "--cache-to", &export]);
    // The same build again: the unchanged mount (and everything else) is present.
    let log = build(&a, FILL, "fill:1", &["--build-arg", "V=1", "--cache-to", &export]);
    assert!(log.contains("(0 uploaded"), "{log}");
    build(&b, FILL, "fill:2", &["--build-arg", "V=2", "--cache-from", &format!("type=registry,ref={reference}")]);
    assert_eq!(b.ok(&["run", "--rm", "fill:2", "cat", "/seen"]), "log\nstamp-1\n");
}
