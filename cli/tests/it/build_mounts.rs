//! `berth build` RUN mounts, end to end: a context bind mount shows only what
//! `.dockerignore` admits and is keyed by exactly that; secrets are mounted as BuildKit
//! mounts them and never reach the image; a failing RUN names its shell.

use std::path::Path;
use std::process::Command;

use crate::util::{build_store, p, run_tool, Berth};

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, body) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
}

/// Builds `ctx` exporting its rootfs to `out` (replaced); returns the log on success.
fn build_to(b: &Berth, ctx: &Path, out: &Path, extra: &[&str]) -> String {
    let _ = std::fs::remove_dir_all(out);
    let dest = format!("type=local,dest={}", p(out));
    let mut args = vec!["build", "--progress", "plain", "-o", &dest];
    args.extend_from_slice(extra);
    let ctx = p(ctx);
    args.push(&ctx);
    let o = b.output(&args);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build failed:\n{log}");
    log
}

#[test]
fn a_context_bind_mount_sees_only_what_dockerignore_admits_and_is_keyed_by_it() {
    let Some(b) = build_store() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let rootfs = out.path().join("rootfs");
    write(
        ctx.path(),
        &[
            (
                "Dockerfile",
                concat!(
                    "FROM busybox:latest\n",
                    // The stamp changes whenever the step runs: equal stamps mean a cache hit.
                    "RUN --mount=type=bind,target=/ctx ls -aR /ctx > /listing && cat /ctx/app.txt > /app-copy",
                    " && cat /proc/sys/kernel/random/uuid > /stamp\n",
                    "RUN --mount=type=bind,target=/ctx sh -c 'if touch /ctx/x 2>/dev/null; then exit 1; fi'\n",
                    "RUN --mount=type=bind,target=/ctx,rw sh -c 'echo w > /ctx/x && test ! -e /ctx/.env'\n",
                ),
            ),
            ("app.txt", "v1"),
            (".env", "PASSWORD=hunter2"),
            ("conf/.env", "PASSWORD=hunter3"),
            ("conf/app.conf", "c"),
            (".dockerignore", "**/.env\n"),
        ],
    );
    build_to(&b, ctx.path(), &rootfs, &[]);
    let listing = std::fs::read_to_string(rootfs.join("listing")).unwrap();
    assert!(listing.contains("app.txt") && listing.contains("app.conf"), "{listing}");
    assert!(!listing.contains(".env"), "an ignored file is not visible in the RUN:\n{listing}");
    assert!(!ctx.path().join("x").exists(), "an rw bind's writes are thrown away");
    let stamp = std::fs::read_to_string(rootfs.join("stamp")).unwrap();
    // An ignored file's change leaves the step cached.
    write(ctx.path(), &[(".env", "PASSWORD=changed"), ("conf/.env", "changed too")]);
    build_to(&b, ctx.path(), &rootfs, &[]);
    assert_eq!(std::fs::read_to_string(rootfs.join("stamp")).unwrap(), stamp, "ignored files are not in the key");
    // An admitted file's change reruns it.
    write(ctx.path(), &[("app.txt", "v2")]);
    build_to(&b, ctx.path(), &rootfs, &[]);
    assert_ne!(std::fs::read_to_string(rootfs.join("stamp")).unwrap(), stamp);
    assert_eq!(std::fs::read_to_string(rootfs.join("app-copy")).unwrap(), "v2");
}

/// Every blob of an OCI tarball, decompressed (gzip and zstd through the system tools).
fn blobs(oci: &Path) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    run_tool(Command::new("tar").args(["-xf", &p(oci), "-C", &p(dir.path())]));
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let tool = match bytes.get(..4) {
            Some([0x1f, 0x8b, ..]) => Some("gzip"),
            Some([0x28, 0xb5, 0x2f, 0xfd]) => Some("zstd"),
            _ => None,
        };
        out.push(match tool {
            Some(t) => Command::new(t).arg("-dc").arg(&path).output().unwrap().stdout,
            None => bytes,
        });
    }
    out
}

#[test]
fn secrets_are_mounted_0400_root_or_as_asked_and_never_reach_the_image() {
    let Some(b) = build_store() else { return };
    let value = "s3cr3t-e2e-91c7";
    let ctx = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        &[
            (
                "Dockerfile",
                concat!(
                    "FROM busybox:latest\n",
                    "RUN --mount=type=secret,id=tok stat -c %a:%u:%g /run/secrets/tok > /default",
                    " && grep -q s3cr3t /run/secrets/tok\n",
                    "RUN --mount=type=secret,id=tok,target=/etc/key,mode=0440,uid=1000,gid=1001",
                    " stat -c %a:%u:%g /etc/key > /asked\n",
                    "RUN --mount=type=secret,id=tok,env=TOK sh -c 'test \"${#TOK}\" = 15 && echo ok > /env'\n",
                ),
            ),
            ("secret.txt", value),
        ],
    );
    let user_secret = ctx.path().join("secret.txt");
    std::fs::set_permissions(&user_secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let oci = out.path().join("image.tar");
    let rootfs = out.path().join("rootfs");
    let secret = format!("id=tok,src={}", p(&user_secret));
    let dest = format!("type=oci,dest={}", p(&oci));
    build_to(&b, ctx.path(), &rootfs, &["--secret", &secret, "-o", &dest, "-t", "secrets:1"]);
    assert_eq!(std::fs::read_to_string(rootfs.join("default")).unwrap().trim(), "400:0:0");
    assert_eq!(std::fs::read_to_string(rootfs.join("asked")).unwrap().trim(), "440:1000:1001");
    assert_eq!(std::fs::read_to_string(rootfs.join("env")).unwrap().trim(), "ok");
    assert!(!rootfs.join("run/secrets").exists() && !rootfs.join("etc/key").exists(), "no mount target is left");
    let mode = std::fs::metadata(&user_secret).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o644, "the user's file is untouched");
    let all = blobs(&oci);
    assert!(all.len() >= 4, "manifest, config and layers: {}", all.len());
    for blob in all {
        assert!(!String::from_utf8_lossy(&blob).contains(value), "the secret's value is in a blob of the image");
    }
    let tmp = b.root.path().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.iter().all(|l| !l.to_string_lossy().contains("build-run")), "temporary files left: {left:?}");
}

#[test]
fn a_failing_run_names_the_shell_it_ran_with() {
    let Some(b) = build_store() else { return };
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), &[("Dockerfile", "FROM busybox:latest\nRUN echo building && exit 3\n")]);
    let o = b.output(&["build", "--progress", "plain", &p(ctx.path())]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("process \"/bin/sh -c echo building && exit 3\" did not complete successfully: exit code: 3"),
        "{err}"
    );
}
