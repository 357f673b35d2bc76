//! Snapshot lifecycle: a build stopped mid-RUN (SIGKILL, SIGTERM, SIGINT) leaves nothing
//! behind once the next command (or the build itself) has cleaned up; `prune` removes the
//! snapshots of removed images; `system df` and `builder prune` see and trim what is on disk.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::{build_store, p, steps_that_ran, Berth};

/// The snapshot directories and the build scratch directories of a root.
fn leftovers(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in ["snapshots/overlay", "snapshots/copy", "tmp"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            out.extend(entries.flatten().map(|e| format!("{dir}/{}", e.file_name().to_string_lossy())));
        }
    }
    out
}

/// Bytes allocated under `path`, each inode once (as `du`).
fn du(path: &Path) -> u64 {
    let (mut seen, mut total, mut stack) = (BTreeSet::new(), 0, vec![path.to_owned()]);
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    total
}

/// [`du`] of a root without its two rocksdb databases (the build cache and the index),
/// whose logs and preallocated files grow with every open and are not a stopped build's leftovers.
fn du_data(root: &Path) -> u64 {
    du(root) - du(&root.join("buildcache")) - du(&root.join("index"))
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// A build whose RUN writes 20 MB, marks itself ready, then sleeps; started in the
/// background and returned once the RUN is running (its marker is in a snapshot).
fn start_sleeping_build(b: &Berth, ctx: &Path) -> Child {
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest\nRUN dd if=/dev/zero of=/big bs=1M count=20 && touch /lifecycle-ready && exec sleep 300\n",
    )
    .unwrap();
    let mut child = b
        .cmd(&["build", "--progress", "plain", "-t", "slow:1", &p(ctx)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = ["snapshots/overlay", "snapshots/copy"].iter().any(|d| {
            std::fs::read_dir(b.root.path().join(d))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().join("fs/lifecycle-ready").exists())
        });
        if ready {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the build ended before its RUN was running: {status}");
        }
        assert!(Instant::now() < deadline, "the RUN step never started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The store after one build that unpacked busybox: the baseline a stopped build returns to.
fn warmed_store() -> Option<(Berth, tempfile::TempDir)> {
    let b = build_store()?;
    let ctx = context("FROM busybox:latest\nRUN true\n");
    b.ok(&["build", "-q", &p(ctx.path())]);
    Some((b, ctx))
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

#[test]
fn a_build_killed_mid_run_leaves_nothing_after_the_next_prune() {
    let Some((b, ctx)) = warmed_store() else { return };
    let root = b.root.path();
    let (before, size_before) = (leftovers(root), du_data(root));
    let mut build = start_sleeping_build(&b, ctx.path());
    assert!(du_data(root) > size_before + 20_000_000, "the RUN's 20 MB are on disk while it runs");
    signal(&build, rustix::process::Signal::KILL);
    build.wait().unwrap();
    assert_ne!(leftovers(root), before, "SIGKILL leaves the step's snapshot and scratch directory");
    let out = b.ok(&["prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(leftovers(root), before, "prune removed what the killed build left");
    let size_after = du_data(root);
    assert!(size_after < size_before + 1_000_000, "disk back to its size: {size_before} -> {size_after}");
}

#[test]
fn any_command_removes_what_a_killed_build_left() {
    let Some((b, ctx)) = warmed_store() else { return };
    let root = b.root.path();
    let before = leftovers(root);
    let mut build = start_sleeping_build(&b, ctx.path());
    signal(&build, rustix::process::Signal::KILL);
    build.wait().unwrap();
    b.ok(&["images"]);
    assert_eq!(leftovers(root), before);
}

#[test]
fn sigterm_and_sigint_stop_a_build_that_cleans_up_before_it_exits() {
    let Some((b, ctx)) = warmed_store() else { return };
    let root = b.root.path();
    let (before, size_before) = (leftovers(root), du_data(root));
    for (sig, code) in [(rustix::process::Signal::TERM, 143), (rustix::process::Signal::INT, 130)] {
        let mut build = start_sleeping_build(&b, ctx.path());
        signal(&build, sig);
        let status = build.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{sig:?}: exit status as a shell's");
        // No berth command in between: the build removed its own snapshot.
        assert_eq!(leftovers(root), before, "{sig:?}");
        let size_after = du_data(root);
        assert!(size_after < size_before + 1_000_000, "{sig:?}: {size_before} -> {size_after}");
    }
}

/// The `system df` line of a kind, as JSON.
fn df(b: &Berth, kind: &str) -> serde_json::Value {
    let out = b.ok(&["system", "df", "--format", "json"]);
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["Type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {out}"))
}

#[test]
fn rmi_then_prune_removes_the_images_layer_snapshots_and_df_follows() {
    let Some((b, _warm)) = warmed_store() else { return };
    let root = b.root.path();
    let before = leftovers(root);
    let snaps_before = df(&b, "Layer snapshots");
    let ctx = context("FROM busybox:latest\nRUN dd if=/dev/zero of=/big bs=1M count=8\n");
    b.ok(&["build", "-q", "-t", "big:1", &p(ctx.path())]);
    let built = df(&b, "Layer snapshots");
    // docker's fields are strings, with the share in Reclaimable; templates and bad formats.
    assert!(built["Reclaimable"].as_str().unwrap().ends_with("(0%)"), "{built}");
    let kinds = b.ok(&["system", "df", "--format", "{{.Type}}"]);
    assert_eq!(kinds, "Images\nLayer snapshots\nBuild cache\nContainers\nLocal Volumes\n");
    // As docker's: text without actions is printed per row; a broken template is an error.
    assert_eq!(b.ok(&["system", "df", "--format", "row"]), "row\nrow\nrow\nrow\nrow\n");
    assert!(!b.output(&["system", "df", "--format", "{{.Type"]).status.success());
    let count = |v: &serde_json::Value| v["TotalCount"].as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(count(&built), count(&snaps_before) + 1, "{built}");
    let grew = built["SizeBytes"].as_u64().unwrap() - snaps_before["SizeBytes"].as_u64().unwrap();
    assert!((8_000_000..12_000_000).contains(&grew), "df counts the new 8 MB layer's snapshot: {grew}");
    let on_disk = du(&root.join("snapshots"));
    let said = built["SizeBytes"].as_u64().unwrap();
    assert!(said <= on_disk && on_disk - said < 2_000_000, "df {said} vs du {on_disk}");
    assert_eq!(built["ReclaimableBytes"], 0, "the image uses its snapshots");
    b.ok(&["rmi", "big:1"]);
    assert!(df(&b, "Layer snapshots")["ReclaimableBytes"].as_u64().unwrap() >= 8_000_000);
    let out = b.ok(&["prune", "-f"]);
    assert!(out.contains("Deleted layer snapshots: 1"), "{out}");
    assert_eq!(leftovers(root), before);
    assert_eq!(df(&b, "Layer snapshots")["SizeBytes"], snaps_before["SizeBytes"]);
}

/// Builds `dockerfile` as `name`, returns the plain progress log.
fn build_log(b: &Berth, name: &str, dockerfile: &str) -> String {
    let ctx = context(dockerfile);
    let out = b.output(&["build", "--progress", "plain", "-t", name, &p(ctx.path())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const OLD: &str = "FROM busybox:latest\nRUN dd if=/dev/zero of=/old bs=1M count=3\n";
const NEW: &str = "FROM busybox:latest\nRUN dd if=/dev/zero of=/new bs=1M count=3\n";

#[test]
fn builder_prune_keep_storage_removes_the_least_recently_used_first() {
    let Some(b) = build_store() else { return };
    build_log(&b, "old:1", OLD);
    // Last-use times are kept to the second.
    std::thread::sleep(Duration::from_millis(1100));
    build_log(&b, "new:1", NEW);
    // An image's layers are the image's; without the images, the records hold them alone.
    b.ok(&["rmi", "old:1", "new:1"]);
    let cache = df(&b, "Build cache");
    assert!(cache["SizeBytes"].as_u64().unwrap() >= 6_000_000, "{cache}");
    let out = b.ok(&["builder", "prune", "-af", "--keep-storage", "4MB"]);
    assert!(out.contains("Total reclaimed space: 3"), "{out}");
    assert!(steps_that_ran(&build_log(&b, "new:1", NEW)).is_empty(), "the newer record is kept");
    assert_eq!(steps_that_ran(&build_log(&b, "old:1", OLD)).len(), 1, "the older record is gone");
}

#[test]
fn builder_prune_until_removes_only_records_unused_for_that_long() {
    let Some(b) = build_store() else { return };
    build_log(&b, "old:1", OLD);
    std::thread::sleep(Duration::from_secs(4));
    build_log(&b, "new:1", NEW);
    b.ok(&["builder", "prune", "-af", "--filter", "until=3s"]);
    assert!(steps_that_ran(&build_log(&b, "new:1", NEW)).is_empty(), "used within 3s: kept");
    assert_eq!(steps_that_ran(&build_log(&b, "old:1", OLD)).len(), 1, "unused for 4s: removed");
    let kept = b.ok(&["builder", "prune", "-af", "--filter", "until=1h"]);
    assert!(kept.contains("Total reclaimed space: 0B"), "{kept}");
}

#[test]
fn a_running_builds_records_survive_a_concurrent_builder_prune_all() {
    let Some((b, ctx)) = warmed_store() else { return };
    build_log(&b, "new:1", NEW);
    let mut build = start_sleeping_build(&b, ctx.path());
    let out = b.output(&["builder", "prune", "-af"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by a running build"));
    signal(&build, rustix::process::Signal::TERM);
    build.wait().unwrap();
    assert!(steps_that_ran(&build_log(&b, "new:1", NEW)).is_empty(), "records survive");
    // Without a build running, the same prune takes them.
    b.ok(&["builder", "prune", "-af"]);
    assert_eq!(steps_that_ran(&build_log(&b, "new:1", NEW)).len(), 1);
    let mut stdin_prune =
        b.cmd(&["builder", "prune", "-a"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    drop(stdin_prune.stdin.take().map(|mut s| s.write_all(b"")));
    assert!(stdin_prune.wait().unwrap().success(), "without a terminal there is no prompt");
}
