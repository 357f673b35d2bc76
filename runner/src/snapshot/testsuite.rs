//! The one test suite both snapshotters pass; `suite!` instantiates it per snapshotter.

use std::collections::BTreeMap;
use std::io::Read;

use super::*;
use crate::unpack::{unpack, UnpackOptions};

fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, name, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn apply(s: &dyn Snapshotter, key: &str, parent: Option<&str>, files: &[(&str, &str)]) {
    s.prepare(key, parent).unwrap();
    let opts = UnpackOptions { whiteouts: s.whiteouts(), ..Default::default() };
    unpack(&layer(files)[..], &s.upper(key).unwrap(), &opts).unwrap();
}

fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{rel}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), &format!("{name}/"), out);
        } else {
            out.insert(name, std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
}

/// What a process would see through `mounts`: mounted for real as root, else read from a
/// lone bind source. `None` when that needs root and we are not.
fn merged(mounts: &[Mount]) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if rustix::process::geteuid().is_root() {
        let target = tempfile::tempdir().unwrap();
        mounts[0].mount(target.path()).unwrap();
        walk(target.path(), "", &mut out);
        unmount(target.path()).unwrap();
        return Some(out);
    }
    match mounts {
        [Mount::Bind { source, .. }] => {
            walk(source, "", &mut out);
            Some(out)
        }
        _ => None,
    }
}

/// A throwaway rootfs ([`Snapshotter::scratch`]) shows its parent, takes writes and
/// deletions, and leaves the parent's snapshot exactly as it was; snapshotters without one
/// say so with `None`.
pub fn scratch_leaves_the_snapshots_untouched(s: &dyn Snapshotter, needs_root: bool) {
    if needs_root && !root_or_skip("overlay snapshots") {
        return;
    }
    apply(s, "k1", None, &[("a/x", "x"), ("b/y", "y")]);
    s.commit("l1", "k1").unwrap();
    let before = merged(&s.view("v1", Some("l1")).unwrap());
    let Some(mounts) = s.scratch("l1").unwrap() else {
        assert!(!needs_root, "the overlay snapshotter offers a scratch rootfs");
        return;
    };
    assert!(matches!(s.scratch("missing"), Err(SnapshotError::NotFound(_))));
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let target = tempfile::tempdir().unwrap();
    let seen = crate::sandbox::in_private_mounts(|| {
        mounts[0].mount(target.path()).unwrap();
        std::fs::write(target.path().join("a/new"), "new").unwrap();
        std::fs::remove_file(target.path().join("b/y")).unwrap();
        let mut out = BTreeMap::new();
        walk(target.path(), "", &mut out);
        out
    })
    .unwrap();
    let want: BTreeMap<String, String> =
        [("a/x", "x"), ("a/new", "new")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(seen, want);
    // The mounts went with the namespace, and the snapshot kept its own files.
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
    assert_eq!(merged(&s.view("v2", Some("l1")).unwrap()), before);
}

fn root_or_skip(what: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert!(std::env::var("BERTH_TEST_STRICT").as_deref() != Ok("1"), "{what} needs root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: {what} needs root");
    }
    root
}

pub fn layers_stack_with_whiteouts(s: &dyn Snapshotter, needs_root: bool) {
    if needs_root && !root_or_skip("overlay snapshots") {
        return;
    }
    apply(s, "k1", None, &[("a/x", "x"), ("a/y", "y"), ("b/z", "z"), ("c/old", "old")]);
    s.commit("l1", "k1").unwrap();
    apply(s, "k2", Some("l1"), &[("a/.wh.x", ""), ("c/new", "new"), ("c/.wh..wh..opq", "")]);
    s.commit("l2", "k2").unwrap();
    assert!(s.exists("l1") && s.exists("l2") && !s.exists("k2"));
    let Some(seen) = merged(&s.view("v", Some("l2")).unwrap()) else { return };
    let want: BTreeMap<String, String> =
        [("a/y", "y"), ("b/z", "z"), ("c/new", "new")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(seen, want);
}

pub fn diff_turns_changes_into_a_layer(s: &dyn Snapshotter, needs_root: bool) {
    if needs_root && !root_or_skip("overlay snapshots") {
        return;
    }
    apply(s, "k1", None, &[("a/x", "x"), ("a/y", "y"), ("b/z", "z")]);
    s.commit("l1", "k1").unwrap();
    let mounts = s.prepare("work", Some("l1")).unwrap();
    let edit = |root: &Path| {
        std::fs::remove_file(root.join("a/x")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/new"), "new").unwrap();
        std::fs::write(root.join("b/z"), "changed").unwrap();
    };
    if rustix::process::geteuid().is_root() {
        let target = tempfile::tempdir().unwrap();
        mounts[0].mount(target.path()).unwrap();
        edit(target.path());
        unmount(target.path()).unwrap();
    } else {
        // Without root only the copy snapshotter gets here: its upper is the whole tree.
        edit(&s.upper("work").unwrap());
    }
    let mut tar = Vec::new();
    s.diff("work", &mut tar).unwrap();
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(&tar[..]);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut content = String::new();
        e.read_to_string(&mut content).unwrap();
        names.push((name, content));
    }
    let has = |n: &str| names.iter().any(|(x, _)| x.trim_end_matches('/') == n);
    assert!(has("a/.wh.x"), "deletion becomes a whiteout: {names:?}");
    assert!(has("d/new") && has("b/z"), "{names:?}");
    assert!(names.iter().any(|(n, c)| n == "b/z" && c == "changed"));
    assert!(!has("a/y"), "unchanged files are not in the diff: {names:?}");
    // The diff applied to the parent gives what the snapshot holds.
    apply(s, "replay", Some("l1"), &[]);
    let opts = UnpackOptions { whiteouts: s.whiteouts(), ..Default::default() };
    unpack(&tar[..], &s.upper("replay").unwrap(), &opts).unwrap();
    s.commit("l2", "replay").unwrap();
    if let Some(seen) = merged(&s.view("v", Some("l2")).unwrap()) {
        assert_eq!(seen.get("b/z").map(String::as_str), Some("changed"));
        assert!(!seen.contains_key("a/x") && seen.contains_key("d/new"));
    }
}

/// Both snapshotters write the same layer for the same changes: entries in byte order with
/// whiteouts in place, the directories on the way to a change, and a directory removed and
/// made again as one opaque whiteout (as overlayfs records it), not a whiteout per old entry.
pub fn diff_has_one_form_for_both_snapshotters(s: &dyn Snapshotter, needs_root: bool) {
    if needs_root && !root_or_skip("overlay snapshots") {
        return;
    }
    apply(s, "k1", None, &[("a/x", "x"), ("a/y", "y"), ("d/old", "o"), ("e/f/g", "g")]);
    s.commit("l1", "k1").unwrap();
    let mounts = s.prepare("work", Some("l1")).unwrap();
    let edit = |root: &Path| {
        std::fs::remove_file(root.join("a/x")).unwrap();
        std::fs::write(root.join("a/w"), "w").unwrap();
        std::fs::remove_dir_all(root.join("d")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/new"), "new").unwrap();
        std::fs::write(root.join("e/f/g"), "changed").unwrap();
        // overlayfs copies a link's unchanged source up before it links it.
        std::fs::hard_link(root.join("a/y"), root.join("a/z")).unwrap();
    };
    if rustix::process::geteuid().is_root() {
        let target = tempfile::tempdir().unwrap();
        crate::sandbox::in_private_mounts(|| {
            mounts[0].mount(target.path()).unwrap();
            edit(target.path());
        })
        .unwrap();
    } else {
        edit(&s.upper("work").unwrap());
    }
    let mut tar = Vec::new();
    s.diff("work", &mut tar).unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a/", "a/w", "a/.wh.x", "a/y", "a/z", "d/", "d/.wh..wh..opq", "d/new", "e/", "e/f/", "e/f/g"]);
}

/// What a sandbox creates to mount on (missing targets, and for overlay the parents it
/// copied up for them) leaves no trace in the diff; what the process wrote stays, and so do
/// targets that existed before.
pub fn scaffold_leaves_no_trace_in_the_diff(s: &dyn Snapshotter, needs_root: bool) {
    if needs_root && !root_or_skip("overlay snapshots") {
        return;
    }
    apply(s, "k1", None, &[("etc/passwd", "root"), ("var/lib/keep", "k"), ("srv/data/file", "f")]);
    s.commit("l1", "k1").unwrap();
    let mounts = s.prepare("run", Some("l1")).unwrap();
    let targets: Vec<String> = ["/proc", "/etc/hosts", "/var/lib/cache/deep", "/srv/data", "/run/secrets/x", "/out"]
        .map(String::from)
        .to_vec();
    let scaffold = s.scaffold("run", &targets).unwrap();
    let want =
        ["proc", "etc/hosts", "var/lib/cache/deep", "var/lib/cache", "run/secrets/x", "run/secrets", "run", "out"];
    assert_eq!(scaffold.targets(), want, "/srv/data exists in the parent");
    let sandbox = |root: &Path| {
        // What a sandbox does to mount on them, and what a step writes.
        for d in ["proc", "var/lib/cache/deep", "run/secrets", "out"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/hosts"), "").unwrap();
        std::fs::write(root.join("run/secrets/x"), "").unwrap();
        std::fs::write(root.join("out/result"), "made by the step").unwrap();
    };
    if rustix::process::geteuid().is_root() {
        let target = tempfile::tempdir().unwrap();
        crate::sandbox::in_private_mounts(|| {
            mounts[0].mount(target.path()).unwrap();
            sandbox(target.path());
        })
        .unwrap();
    } else {
        // Without root only the copy snapshotter gets here: its upper is the whole tree.
        sandbox(&s.upper("run").unwrap());
    }
    s.remove_scaffold("run", &scaffold).unwrap();
    let mut tar = Vec::new();
    s.diff("run", &mut tar).unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_owned());
    }
    names.sort();
    assert_eq!(names, ["out", "out/result"], "only the step's own change is in the diff");
}

pub fn lifecycle_errors(s: &dyn Snapshotter, _needs_root: bool) {
    s.prepare("k", None).unwrap();
    assert!(matches!(s.prepare("k", None), Err(SnapshotError::Exists(_))));
    assert!(matches!(s.prepare("k2", Some("missing")), Err(SnapshotError::NotFound(_))));
    assert!(matches!(s.commit("n", "missing"), Err(SnapshotError::NotFound(_))));
    s.commit("n", "k").unwrap();
    assert!(matches!(s.upper("n"), Err(SnapshotError::WrongKind { .. })));
    assert!(matches!(s.commit("n", "n"), Err(SnapshotError::WrongKind { .. })));
    s.remove("n").unwrap();
    assert!(!s.exists("n"));
    assert!(matches!(s.remove("n"), Err(SnapshotError::NotFound(_))));
}

/// Stops the fuse-overlayfs daemons of the snapshots under a test's directory when the test
/// ends, passed or not (a build's commits and removals stop theirs; a test leaves some).
struct StopDaemons(PathBuf);

impl Drop for StopDaemons {
    fn drop(&mut self) {
        for snapshot in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            super::fuse::stop(&snapshot.path());
        }
    }
}

/// A snapshotter or a boxed one, as the suite takes it.
trait AsDyn {
    fn as_dyn(&self) -> &dyn Snapshotter;
}

impl<S: Snapshotter> AsDyn for S {
    fn as_dyn(&self) -> &dyn Snapshotter {
        self
    }
}

impl AsDyn for Box<dyn Snapshotter> {
    fn as_dyn(&self) -> &dyn Snapshotter {
        self.as_ref()
    }
}

macro_rules! suite {
    ($modname:ident, $new:expr, $needs_root:expr) => {
        mod $modname {
            use super::*;
            suite!(@tests $new, $needs_root; layers_stack_with_whiteouts, diff_turns_changes_into_a_layer, lifecycle_errors,
                scratch_leaves_the_snapshots_untouched, scaffold_leaves_no_trace_in_the_diff,
                diff_has_one_form_for_both_snapshotters);
        }
    };
    (@tests $new:expr, $needs_root:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let _daemons = StopDaemons(dir.path().to_owned());
                let s = ($new)(dir.path()).unwrap();
                super::$name(s.as_dyn(), $needs_root);
            }
        )*
    };
}

suite!(overlay, OverlaySnapshotter::new, true);
suite!(overlay_volatile, |d: &Path| OverlaySnapshotter::new(d).map(OverlaySnapshotter::volatile), true);
suite!(copy, CopySnapshotter::new, false);
suite!(fuse_overlay, fuse_or_skip, false);

/// The fuse-overlayfs snapshotter where fuse-overlayfs can mount (`./setup` installs it and
/// opens /dev/fuse), else the copy snapshotter with a message (a failure under
/// BERTH_TEST_STRICT=1).
fn fuse_or_skip(dir: &Path) -> Result<Box<dyn Snapshotter>> {
    if super::fuse::available() {
        return Ok(Box::new(OverlaySnapshotter::new(dir)?.fuse()));
    }
    assert!(
        std::env::var("BERTH_TEST_STRICT").as_deref() != Ok("1"),
        "fuse-overlayfs is missing (BERTH_TEST_STRICT=1)"
    );
    eprintln!("fuse-overlayfs is missing: its suite runs on the copy snapshotter");
    Ok(Box::new(CopySnapshotter::new(dir)?))
}

/// A build step's snapshot is mounted `volatile` (its fsyncs are no-ops), and what it wrote is
/// in the committed snapshot, with the kernel's volatile marker gone with the work directory.
#[test]
fn volatile_overlay_mounts_volatile_and_commits_what_was_written() {
    if !root_or_skip("overlay snapshots") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = OverlaySnapshotter::new(dir.path()).unwrap().volatile();
    apply(&s, "k1", None, &[("etc/base", "base")]);
    s.commit("l1", "k1").unwrap();
    let mounts = s.prepare("step", Some("l1")).unwrap();
    let target = tempfile::tempdir().unwrap();
    mounts[0].mount(target.path()).unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().find(|l| l.contains(&*target.path().to_string_lossy())).unwrap().to_owned();
    let mut f = std::fs::File::create(target.path().join("etc/new")).unwrap();
    std::io::Write::write_all(&mut f, b"new").unwrap();
    f.sync_all().unwrap();
    drop(f);
    unmount(target.path()).unwrap();
    assert!(line.contains("volatile"), "{line}");
    let upper = s.upper("step").unwrap();
    assert!(upper.join("../work/work/incompat/volatile").exists(), "the kernel's marker");
    s.commit("l2", "step").unwrap();
    let seen = merged(&s.view("v", Some("l2")).unwrap()).unwrap();
    assert_eq!(seen.get("etc/new").map(String::as_str), Some("new"));
    assert_eq!(seen.get("etc/base").map(String::as_str), Some("base"));
}
