//! `berth build` on what users write: an imported base without PATH, stable image IDs across
//! cached rebuilds, and a Debian bookworm base made with debootstrap, with real apt installs
//! and a gcc multi-stage build (skipped when Debian's mirror is unreachable, failed under
//! BERTH_TEST_STRICT=1).

use std::path::Path;
use std::process::Command;

use crate::util::{build_store, p, repo_root, steps_that_ran, strict, Berth};

/// A store with `debian:bookworm` from fixtures/make-debian-image (debootstrap, cached), as root.
fn debian_store() -> Option<Berth> {
    if !rustix::process::geteuid().is_root() {
        assert!(!strict(), "the Debian base needs root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: debootstrap and berth build need root");
        return None;
    }
    let b = Berth::new();
    let out = Command::new(repo_root().join("fixtures/make-debian-image"))
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_ROOT", b.root.path())
        .output()
        .expect("run fixtures/make-debian-image");
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        assert!(!strict(), "the Debian base is required under BERTH_TEST_STRICT=1: {err}");
        eprintln!("skipping: {}", err.trim());
        return None;
    }
    assert!(out.status.success(), "make-debian-image: {err}");
    Some(b)
}

/// Builds `dockerfile` in a context holding `files`; returns (success, log, image ID).
fn build_in(b: &Berth, ctx: &Path, dockerfile: &str, files: &[(&str, &str)], tag: &str) -> (bool, String, String) {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        std::fs::write(ctx.join(name), content).unwrap();
    }
    let iid = ctx.join("../iid");
    let _ = std::fs::remove_file(&iid);
    let out = b.output(&["build", "--progress", "plain", "--iidfile", &p(&iid), "-t", tag, &p(ctx)]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), log, std::fs::read_to_string(&iid).unwrap_or_default())
}

fn context() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    (dir, ctx)
}

/// The image config's `config` object, from `berth inspect`.
fn config(b: &Berth, image: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", image])).unwrap();
    v[0]["Config"].clone()
}

fn manifest_digest(b: &Berth, image: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", image])).unwrap();
    v[0]["Descriptor"]["digest"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_fully_cached_rebuild_gives_the_same_image_id_and_manifest() {
    let Some(b) = build_store() else { return };
    let (_dir, ctx) = context();
    let df = "FROM busybox\nCOPY a.txt /a.txt\nRUN echo built > /built\nENV MODE=prod\nLABEL x=y\n";
    let (ok, log, first) = build_in(&b, &ctx, df, &[("a.txt", "one")], "app:1");
    assert!(ok, "{log}");
    let first_manifest = manifest_digest(&b, "app:1");
    // A second later, so that a time taken from the clock would show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (ok, log, again) = build_in(&b, &ctx, df, &[("a.txt", "one")], "app:2");
    assert!(ok, "{log}");
    assert!(!first.is_empty());
    assert_eq!(first, again, "a no-change rebuild keeps the image ID\n{log}");
    assert_eq!(first_manifest, manifest_digest(&b, "app:2"), "and the manifest digest");
    let images = b.ok(&["images", "--format", "json"]);
    assert!(!images.contains("<none>"), "no dangling image piles up: {images}");

    let (ok, log, changed) = build_in(&b, &ctx, df, &[("a.txt", "two")], "app:3");
    assert!(ok, "{log}");
    assert_ne!(first, changed, "a changed input gives a new image ID");
}

#[test]
fn an_imported_base_gets_dockers_default_path() {
    let Some(b) = build_store() else { return };
    let (_dir, ctx) = context();
    // busybox:latest comes from `berth import`: no PATH in its config.
    assert!(config(&b, "busybox")["Env"].as_array().is_none_or(|e| e.is_empty()));
    let df = "FROM busybox\nENV PATH=/opt/app/bin:$PATH\nRUN mkdir -p /opt/app/bin && chmod 755 /opt/app/bin\n";
    let (ok, log, _) = build_in(&b, &ctx, df, &[], "withpath");
    assert!(ok, "the RUN after ENV PATH=...:$PATH finds chmod:\n{log}");
    let env = config(&b, "withpath")["Env"].clone();
    assert_eq!(
        env,
        serde_json::json!(["PATH=/opt/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
        "$PATH expands to docker's default"
    );
    let (ok, log, _) = build_in(&b, &ctx, "FROM busybox\nENV A=1\n", &[], "plain");
    assert!(ok, "{log}");
    assert_eq!(
        config(&b, "plain")["Env"],
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1"]),
        "the default PATH is written into the image, first"
    );
}

/// What the issue's users wrote: apt installs, a non-root USER with a WORKDIR it must own, PATH
/// extended, then the image run.
#[test]
fn debian_apt_install_user_and_workdir() {
    let Some(b) = debian_store() else { return };
    let (_dir, ctx) = context();
    let df = r#"FROM debian:bookworm
ENV PATH=/opt/app/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3-minimal curl ca-certificates sudo \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home app && mkdir -p /opt/app/bin && printf '#!/bin/sh\necho hello from app\n' > /opt/app/bin/hello \
    && chmod 755 /opt/app/bin/hello && echo 'app ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/app
USER app
WORKDIR /work/sub
RUN touch made-by-app && python3 -c 'print("python ok")' && echo "sudo gives uid $(sudo -n id -u)"
CMD ["hello"]
"#;
    let (ok, log, first) = build_in(&b, &ctx, df, &[], "real");
    assert!(ok, "{log}");
    assert!(log.contains("python ok"), "{log}");
    // The devcontainer pattern: a setuid sudo after USER works, as under BuildKit.
    assert!(log.contains("sudo gives uid 0"), "{log}");
    let out = b.ok(&["run", "real"]);
    assert_eq!(out.trim(), "hello from app");
    let out = b.ok(&["run", "real", "sh", "-c", "stat -c '%U %G' /work/sub /work/sub/made-by-app; curl --version"]);
    assert!(out.starts_with("app app\napp app\n"), "WORKDIR made for USER app: {out}");
    assert!(out.contains("curl 7."), "{out}");
    let (ok, log, again) = build_in(&b, &ctx, df, &[], "real");
    assert!(ok, "{log}");
    assert_eq!(first, again, "the cached rebuild keeps the image ID");
}

/// A gcc multi-stage build: a comment-only change to the C file gives a byte-identical binary,
/// so the final stage's COPY --from is a cache hit and the image ID does not change.
#[test]
fn debian_gcc_multistage_copy_from_is_keyed_by_content() {
    let Some(b) = debian_store() else { return };
    let (_dir, ctx) = context();
    let df = r#"FROM debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY hello.c /src/hello.c
RUN gcc -O2 -o /src/hello /src/hello.c

FROM debian:bookworm
COPY --from=build /src/hello /usr/local/bin/hello
CMD ["hello"]
"#;
    let c = "#include <stdio.h>\nint main(void) { puts(\"hello, gcc\"); return 0; }\n";
    let (ok, log, first) = build_in(&b, &ctx, df, &[("hello.c", c)], "gcc");
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "gcc"]).trim(), "hello, gcc");
    let commented = format!("/* a comment only */\n{c}");
    let (ok, log, again) = build_in(&b, &ctx, df, &[("hello.c", &commented)], "gcc");
    assert!(ok, "{log}");
    assert!(steps_that_ran(&log).iter().any(|s| s.contains("RUN gcc")), "the compile step reran: {log}");
    assert!(!steps_that_ran(&log).iter().any(|s| s.contains("COPY --from")), "the final COPY was cached: {log}");
    assert_eq!(first, again, "the same binary gives the same final image\n{log}");
}
