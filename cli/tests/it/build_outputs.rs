//! `berth build -o type=local` and `-o type=tar` on a base image with device nodes and fifos;
//! step layers kept as their snapshots until an output needs them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Command;

use crate::util::{build_store, p, run_tool, strict, Berth};

/// A base image whose rootfs has `/dev/null` (char 1:3), `/dev/zero` and a fifo, as a
/// debootstrapped base has: made with mknod and imported.
fn base_with_devices(b: &Berth, dir: &std::path::Path) {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("dev")).unwrap();
    std::fs::create_dir_all(tree.join("run")).unwrap();
    std::fs::write(tree.join("motd"), "hi\n").unwrap();
    run_tool(Command::new("mknod").args(["-m", "666", &p(&tree.join("dev/null")), "c", "1", "3"]));
    run_tool(Command::new("mknod").args(["-m", "666", &p(&tree.join("dev/zero")), "c", "1", "5"]));
    run_tool(Command::new("mkfifo").arg(tree.join("run/pipe")));
    let tar = dir.join("base.tar");
    run_tool(Command::new("tar").args(["-C", &p(&tree), "-cf", &p(&tar), "."]));
    b.ok(&["import", &p(&tar), "devbase:1"]);
}

#[test]
fn local_and_tar_outputs_keep_device_nodes_and_fifos_of_the_base() {
    if !rustix::process::geteuid().is_root() {
        assert!(!strict(), "berth build tests need root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: device nodes need root");
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    base_with_devices(&b, dir.path());
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM devbase:1\nCOPY hello /hello\n").unwrap();
    std::fs::write(ctx.join("hello"), "hello\n").unwrap();
    let local = dir.path().join("rootfs");
    let tar = dir.path().join("rootfs.tar");
    let out = b.output(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", p(&local)),
        "-o",
        &format!("type=tar,dest={}", p(&tar)),
        &p(&ctx),
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("WARNING"), "nothing is left out as root:\n{log}");
    assert_eq!(std::fs::read_to_string(local.join("hello")).unwrap(), "hello\n");
    let null = std::fs::symlink_metadata(local.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device(), "dev/null is not a char device in the local output");
    assert_eq!((rustix::fs::major(null.rdev()), rustix::fs::minor(null.rdev())), (1, 3));
    assert!(std::fs::symlink_metadata(local.join("run/pipe")).unwrap().file_type().is_fifo());
    // GNU tar lists a device as `crw-rw-rw- 0/0 1,3 DATE dev/null`.
    let listing = run_tool(Command::new("tar").args(["--numeric-owner", "-tvf", &p(&tar)]));
    let entry = |name: &str| {
        listing.lines().find(|l| l.trim_end().ends_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{listing}"))
    };
    let null = entry("dev/null");
    assert!(null.starts_with('c') && null.contains("1,3"), "{null}");
    assert!(entry("dev/zero").starts_with('c') && entry("dev/zero").contains("1,5"), "{listing}");
    assert!(entry("run/pipe").starts_with('p'), "{listing}");
    assert!(entry("hello").starts_with('-'), "{listing}");
}

#[test]
fn without_root_the_left_out_device_nodes_are_one_warning_line() {
    if !rustix::process::geteuid().is_root() {
        assert!(!strict(), "this test makes device nodes as root, then builds as nobody (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: needs root to make the base's device nodes");
        return;
    }
    if !crate::util::require_tool("setpriv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("dev")).unwrap();
    run_tool(Command::new("mknod").args(["-m", "666", &p(&tree.join("dev/null")), "c", "1", "3"]));
    let tar = dir.path().join("base.tar");
    run_tool(Command::new("tar").args(["-C", &p(&tree), "-cf", &p(&tar), "."]));
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM devbase:1\nCOPY hello /hello\n").unwrap();
    std::fs::write(ctx.join("hello"), "hello\n").unwrap();
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", env!("CARGO_BIN_EXE_berth")])
            .args(args)
            .env("BERTH_ROOT", dir.path().join("store"))
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "berth {args:?} as nobody failed:\n{err}");
        err
    };
    as_nobody(&["import", &p(&tar), "devbase:1"]);
    let local = dir.path().join("out");
    let log = as_nobody(&["build", "--progress", "plain", "-o", &format!("type=local,dest={}", p(&local)), &p(&ctx)]);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARNING")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("1 device node") && warnings[0].contains("needs root"), "{log}");
    assert_eq!(std::fs::read_to_string(local.join("hello")).unwrap(), "hello\n");
    assert!(!local.join("dev/null").exists());
}

/// True when some blob of `b`'s content store holds `bytes`.
fn stored(b: &Berth, bytes: &[u8]) -> bool {
    let blobs = b.root.path().join("content/blobs/sha256");
    std::fs::read_dir(blobs).unwrap().flatten().any(|e| {
        let data = std::fs::read(e.path()).unwrap();
        data.windows(bytes.len()).any(|w| w == bytes)
    })
}

#[test]
fn a_step_layer_is_made_from_its_snapshot_when_an_output_needs_it() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest AS a\nRUN mkdir /data && echo one > /data/f && echo two > /data/g\n\
         FROM busybox:latest\nCOPY --from=a /data/f /f\n",
    )
    .unwrap();
    b.ok(&["build", "-q", "-t", "def:1", &p(&ctx)]);
    // Stage a's layer is in no blob, plain or otherwise: only its snapshot holds it.
    assert!(!stored(&b, b"data/g\0"), "the intermediate stage's layer was stored");

    // A cache export makes it from the snapshot; a fresh store builds stage a from that.
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},mode=max", p(&cache));
    b.ok(&["build", "-q", "-t", "def:1", "--cache-to", &to, &p(&ctx)]);
    let fresh = Berth::new();
    assert!(fresh.busybox("busybox:latest"));
    let from = format!("type=local,src={}", p(&cache));
    let out = dir.path().join("a.tar");
    let tar_to = format!("type=tar,dest={}", p(&out));
    let built =
        fresh.ok(&["build", "--progress", "plain", "--cache-from", &from, "--target", "a", "-o", &tar_to, &p(&ctx)]);
    let listing = run_tool(Command::new("tar").args(["-xOf", &p(&out), "data/g"]));
    assert_eq!(listing, "two\n", "{built}");

    // A snapshot changed behind berth's back makes another layer: refused, not exported
    // under the old digest (zstd: the gzip twin made above is no longer made from it).
    let overlay = b.root.path().join("snapshots/overlay");
    let g = std::fs::read_dir(&overlay)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("fs/data/g"))
        .find(|g| g.exists())
        .expect("stage a's snapshot");
    std::fs::write(&g, "TWO\n").unwrap();
    let other = format!("type=local,dest={},mode=max,compression=zstd", p(&dir.path().join("other")));
    let out = b.output(&["build", "-q", "-t", "def:1", "--cache-to", &other, &p(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("again from its snapshot: the snapshot changed since the layer was made"), "{err}");
}
