//! Builds for other platforms: busybox bases made from Debian's busybox-static of other
//! architectures, RUN steps through QEMU's binfmt_misc handlers, and the one-line refusal
//! where no emulator is registered.

use std::path::Path;
use std::process::Command;

use crate::registry::skopeo;
use crate::util::{p, repo_root, require_tool, steps_that_ran, strict, Berth, Server};

/// Imports busybox-static of Debian architecture `arch` as `name` (for its platform); false
/// (the test skips, or fails under BERTH_TEST_STRICT=1) when its .deb or an emulator for it is
/// missing.
fn foreign_busybox(b: &Berth, arch: &str, platform: &str, name: &str) -> bool {
    let deb = std::fs::read_dir("/var/cache/berth/debs")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(&format!("_{arch}.deb")));
    let emulated = runner_check(platform);
    if !deb || emulated.is_err() {
        let why = if deb { emulated.unwrap_err() } else { format!("busybox-static:{arch} is not downloaded") };
        assert!(!strict(), "{why} (BERTH_TEST_STRICT=1): run ./setup --deps");
        eprintln!("skipping: {why} (run ./setup --deps)");
        return false;
    }
    let out = Command::new(repo_root().join("fixtures/make-busybox-image"))
        .args(["--arch", arch, name])
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_ROOT", b.root.path())
        .output()
        .expect("run fixtures/make-busybox-image");
    assert!(out.status.success(), "make-busybox-image --arch {arch}: {}", String::from_utf8_lossy(&out.stderr));
    true
}

/// berth's own check, as a build makes it.
fn runner_check(platform: &str) -> Result<(), String> {
    let p: oci::Platform = platform.parse().map_err(|e| format!("{e}"))?;
    runner::emulation::check(&p, &runner::emulation::binfmt_dir())
}

/// The host's `uname -m`, with its newline.
fn host_machine() -> String {
    String::from_utf8(Command::new("uname").arg("-m").output().expect("uname").stdout).expect("utf-8")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

#[test]
fn a_foreign_platform_builds_and_runs_under_its_emulator() {
    for (arch, platform, machine) in [("arm64", "linux/arm64", "aarch64"), ("armhf", "linux/arm/v7", "armv7l")] {
        let b = Berth::new();
        if !foreign_busybox(&b, arch, platform, &format!("busybox:{arch}")) {
            return;
        }
        let ctx = tempfile::tempdir().expect("temp dir");
        write(
            ctx.path(),
            "Dockerfile",
            &format!(
                "FROM busybox:{arch}\nARG TARGETPLATFORM TARGETARCH\n\
                 RUN uname -m > /arch && echo \"$TARGETPLATFORM $TARGETARCH\" > /target\nCMD [\"cat\", \"/arch\"]\n"
            ),
        );
        b.ok(&["build", "-q", "--platform", platform, "-t", "app", &p(ctx.path())]);
        let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "app"])).expect("inspect json");
        let want_arch = platform.split('/').nth(1).expect("an arch");
        assert_eq!(inspect[0]["Architecture"], want_arch, "{inspect}");
        assert_eq!(b.ok(&["run", "--rm", "app"]).trim(), machine, "the RUN step ran as {platform}");
        let target = b.ok(&["run", "--rm", "app", "cat", "/target"]);
        assert_eq!(target.trim(), format!("{platform} {want_arch}"), "TARGETPLATFORM and TARGETARCH");
    }
}

#[test]
fn the_cross_compilation_pattern_runs_the_build_stage_on_the_host() {
    let b = Berth::new();
    if !b.busybox("busybox:latest") || !foreign_busybox(&b, "arm64", "linux/arm64", "busybox:arm64") {
        return;
    }
    let host = oci::Platform::host();
    let ctx = tempfile::tempdir().expect("temp dir");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETARCH BUILDARCH\n\
         RUN echo \"$(uname -m) $BUILDARCH for $TARGETARCH\" > /out\n\
         FROM busybox:arm64\nCOPY --from=build /out /out\nRUN uname -m >> /out\nCMD [\"cat\", \"/out\"]\n",
    );
    b.ok(&["build", "-q", "--platform", "linux/arm64", "-t", "cross", &p(ctx.path())]);
    let out = b.ok(&["run", "--rm", "cross"]);
    let host_machine = host_machine();
    assert_eq!(
        out,
        format!("{} {} for arm64\naarch64\n", host_machine.trim(), host.architecture),
        "the build stage ran natively, the final stage emulated"
    );
}

#[test]
fn without_an_emulator_a_foreign_build_fails_before_any_step() {
    let b = Berth::new();
    if !foreign_busybox(&b, "arm64", "linux/arm64", "busybox:arm64") {
        return;
    }
    let ctx = tempfile::tempdir().expect("temp dir");
    write(ctx.path(), "Dockerfile", "FROM busybox:arm64\nRUN touch /ran\n");
    let empty = tempfile::tempdir().expect("temp dir");
    let mut cmd = b.cmd(&["build", "--progress", "plain", "--platform", "linux/arm64", &p(ctx.path())]);
    let out = cmd.env("BERTH_BINFMT_MISC", empty.path()).output().expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("no emulator")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("linux/arm64") && line.contains("qemu-user-static"), "{line}");
    assert!(!err.contains("RUN touch"), "no step started: {err}");
    // A build of the same Dockerfile that needs no RUN step needs no emulator either.
    write(ctx.path(), "Dockerfile", "FROM busybox:arm64\nCOPY Dockerfile /\n");
    let mut cmd = b.cmd(&["build", "-q", "--platform", "linux/arm64", &p(ctx.path())]);
    let out = cmd.env("BERTH_BINFMT_MISC", empty.path()).output().expect("run berth");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn two_platforms_make_one_index_that_is_pushed_whole() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let host = oci::Platform::host();
    if !b.busybox(&format!("busybox:{}", host.architecture))
        || !foreign_busybox(&b, "arm64", "linux/arm64", "busybox:arm64")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    write(
        &ctx,
        "Dockerfile",
        "ARG TARGETARCH\nFROM busybox:$TARGETARCH\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n",
    );
    let server = Server::start(&dir.path().join("registry"), &[]);
    let image = format!("{}/team/app:multi", server.addr);
    let iidfile = dir.path().join("iid");
    let platforms = format!("{host},linux/arm64");
    let metafile = dir.path().join("meta.json");
    b.ok(&[
        "build",
        "-q",
        "--platform",
        &platforms,
        "-t",
        &image,
        "--push",
        "--iidfile",
        &p(&iidfile),
        "--metadata-file",
        &p(&metafile),
        &p(&ctx),
    ]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}")]);
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{raw}");
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    assert_eq!(archs, [host.architecture.as_str(), "arm64"], "{raw}");
    let iid = std::fs::read_to_string(&iidfile).expect("iidfile");
    assert_eq!(iid, format!("sha256:{}", sha256_hex(raw.as_bytes())), "--iidfile names the index as pushed");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metafile).expect("metadata file")).expect("metadata json");
    assert_eq!(meta["containerimage.digest"], iid.as_str(), "{meta}");
    assert_eq!(meta["containerimage.descriptor"]["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert!(meta.get("containerimage.config.digest").is_none(), "an index has no config: {meta}");
    let arm = skopeo(&["inspect", "--tls-verify=false", "--override-arch", "arm64", &format!("docker://{image}")]);
    let arm: serde_json::Value = serde_json::from_str(&arm).expect("inspect json");
    assert_eq!(arm["Architecture"], "arm64");
    let machine = host_machine();
    assert_eq!(b.ok(&["run", "--rm", &image]), machine, "run of the index picks the host's image");
    assert_eq!(b.ok(&["run", "--rm", "--platform", "linux/arm64", &image]), "aarch64\n", "--platform picks another");
    let out = b.output(&["run", "--rm", "--platform", "linux/s390x", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(last.contains("no image for platform linux/s390x"), "a platform the index lacks: {err}");
    // A store holding another platform's image under the name pulls the one asked for, as
    // docker 20.10 does.
    let c = Berth::new();
    c.ok(&["pull", "-q", "--platform", "linux/arm64", &image]);
    assert_eq!(c.ok(&["run", "--rm", "--platform", &host.to_string(), &image]), machine);
    let err = c.fails(&["run", "--rm", "--pull", "never", "--platform", "linux/arm64", &image]);
    assert!(err.contains("not for linux/arm64"), "the name moved to the platform pulled last: {err}");
}

#[test]
fn a_foreign_image_without_an_emulator_is_refused_in_one_line() {
    let b = Berth::new();
    if !foreign_busybox(&b, "arm64", "linux/arm64", "busybox:arm64") {
        return;
    }
    let empty = tempfile::tempdir().expect("temp dir");
    let out = b.cmd(&["run", "--rm", "busybox:arm64", "true"]).env("BERTH_BINFMT_MISC", empty.path()).output();
    let out = out.expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no emulator for linux/arm64") && err.contains("qemu-user-static"), "{err}");
    assert_eq!(b.ok(&["run", "--rm", "busybox:arm64", "uname", "-m"]), "aarch64\n", "with the host's handlers it runs");
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("stdin").write_all(bytes)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn berth_manifest_assembles_a_base_index_that_a_three_platform_build_uses() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    if !b.busybox("busybox:host")
        || !foreign_busybox(&b, "arm64", "linux/arm64", "busybox:arm64")
        || !foreign_busybox(&b, "armhf", "linux/arm/v7", "busybox:armhf")
    {
        return;
    }
    let host = oci::Platform::host();
    b.ok(&["manifest", "create", "busybox:multi", "busybox:host", "busybox:arm64"]);
    b.ok(&["manifest", "add", "busybox:multi", "busybox:armhf"]);
    let platforms = |b: &Berth| -> Vec<String> {
        let doc: serde_json::Value =
            serde_json::from_str(&b.ok(&["manifest", "inspect", "busybox:multi"])).expect("index json");
        let entries = doc["manifests"].as_array().expect("manifests").clone();
        entries
            .iter()
            .map(|m| {
                let p = &m["platform"];
                let v = p["variant"].as_str().map(|v| format!("/{v}")).unwrap_or_default();
                format!("{}/{}{v}", p["os"].as_str().unwrap_or(""), p["architecture"].as_str().unwrap_or(""))
            })
            .collect()
    };
    assert_eq!(platforms(&b), [host.to_string(), "linux/arm64".into(), "linux/arm/v7".into()]);
    b.ok(&["manifest", "annotate", "busybox:multi", "busybox:armhf", "--variant", "v6"]);
    assert_eq!(platforms(&b)[2], "linux/arm/v6", "annotate changes the recorded platform");
    b.ok(&["manifest", "annotate", "busybox:multi", "busybox:armhf", "--variant", "v7"]);
    let err = b.fails(&["manifest", "create", "busybox:multi", "busybox:host"]);
    assert!(err.contains("already exists"), "{err}");

    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    write(&ctx, "Dockerfile", "FROM busybox:multi\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n");
    let server = Server::start(&dir.path().join("registry"), &[]);
    let image = format!("{}/team/three:1", server.addr);
    let all = format!("{host},linux/arm64,linux/arm/v7");
    b.ok(&["build", "-q", "--platform", &all, "-t", &image, "--push", &p(&ctx)]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}")]);
    let pushed: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    assert_eq!(pushed["manifests"].as_array().map(Vec::len), Some(3), "{raw}");
    let machine = host_machine();
    for (platform, want) in
        [(host.to_string(), machine.trim()), ("linux/arm64".into(), "aarch64"), ("linux/arm/v7".into(), "armv7l")]
    {
        let got = b.ok(&["run", "--rm", "--platform", &platform, &image]);
        assert_eq!(got.trim(), want, "each platform's image was built on that platform's base");
    }

    // A platform the stored index lacks: the error says so before the registry's own error
    // (nothing listens on port 1).
    b.ok(&["tag", "busybox:multi", "127.0.0.1:1/library/busybox:multi"]);
    write(&ctx, "Dockerfile", "FROM 127.0.0.1:1/library/busybox:multi\nCOPY Dockerfile /\n");
    let out = b.output(&["build", "-q", "--platform", "linux/s390x", &p(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("127.0.0.1:1/library/busybox:multi in the local store has no linux/s390x image"),
        "{err}"
    );

    let base = format!("{}/library/busybox:multi", server.addr);
    b.ok(&["manifest", "push", "busybox:multi", &base]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{base}")]);
    assert!(raw.contains("\"arm64\"") && raw.contains("\"v7\""), "{raw}");
    b.ok(&["manifest", "rm", "busybox:multi"]);
    assert!(!b.output(&["manifest", "inspect", "busybox:multi"]).status.success(), "rm removes the name");
}

/// A store with busybox for the host's architecture (`busybox:<arch>`) and arm64, for
/// builds for both; None where the test skips.
fn two_platform_store() -> Option<(Berth, String)> {
    let b = Berth::new();
    let host = oci::Platform::host();
    let ok = b.busybox(&format!("busybox:{}", host.architecture))
        && foreign_busybox(&b, "arm64", "linux/arm64", "busybox:arm64");
    ok.then(|| (b, format!("{host},linux/arm64")))
}

#[test]
fn platforms_build_at_once_and_a_step_that_does_not_depend_on_them_runs_once() {
    let Some((b, platforms)) = two_platform_store() else { return };
    let host = oci::Platform::host();
    let ctx = tempfile::tempdir().expect("temp dir");
    // Each platform's RUN waits (30 s at most) until the other's has started: it finishes
    // only when both run at the same time.
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM --platform=$BUILDPLATFORM busybox:{0} AS build\nRUN echo shared > /out && date +%s%N >> /out\n\
             ARG TARGETARCH\nFROM busybox:$TARGETARCH\nARG TARGETARCH\nCOPY --from=build /out /out\n\
             RUN --mount=type=cache,target=/sync touch /sync/$TARGETARCH && i=0 && \
             while [ ! -e /sync/{0} ] || [ ! -e /sync/arm64 ]; do i=$((i+1)); [ $i -lt 300 ] || exit 9; sleep 0.1; done\n",
            host.architecture
        ),
    );
    let out = b.output(&["build", "--progress", "plain", "--platform", &platforms, "-t", "both", &p(ctx.path())]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "both platforms' steps ran at the same time: {log}");
    let shared: Vec<String> = steps_that_ran(&log).into_iter().filter(|s| s.contains("RUN echo shared")).collect();
    assert_eq!(shared, [format!("[{host} build 2/2] RUN echo shared > /out && date +%s%N >> /out")], "{log}");
    let out_of = |platform: &str| b.ok(&["run", "--rm", "--platform", platform, "both", "cat", "/out"]);
    assert_eq!(out_of(&host.to_string()), out_of("linux/arm64"), "one run of the shared step in both images");
}

#[test]
fn a_build_for_two_platforms_writes_both_to_oci_and_local_outputs_and_refuses_docker() {
    let Some((b, platforms)) = two_platform_store() else { return };
    if !require_tool("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "Dockerfile", "ARG TARGETARCH\nFROM busybox:$TARGETARCH\nRUN uname -m > /arch\n");
    let ctx = p(dir.path());
    let err = b.fails(&["build", "--platform", &platforms, "-o", "type=docker,dest=x.tar", &ctx]);
    assert!(err.contains("type=docker holds one platform's image") && err.contains("type=oci"), "{err}");
    let (oci, local) = (dir.path().join("app.oci.tar"), dir.path().join("fs"));
    let oci_out = format!("type=oci,dest={}", p(&oci));
    let local_out = format!("type=local,dest={}", p(&local));
    b.ok(&["build", "-q", "--platform", &platforms, "-o", &oci_out, "-o", &local_out, &ctx]);
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{}", p(&oci))]);
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    let host = oci::Platform::host();
    assert_eq!(archs, [host.architecture.as_str(), "arm64"], "the archive holds the index: {raw}");
    let arch_in = |sub: &str| std::fs::read_to_string(local.join(sub).join("arch")).expect("a platform's directory");
    assert_eq!(arch_in(&format!("linux_{}", host.architecture)), host_machine());
    assert_eq!(arch_in("linux_arm64"), "aarch64\n", "each platform's filesystem in its own directory");
}

#[test]
fn one_cache_export_carries_every_platform_and_a_platform_it_lacks_misses() {
    let Some((b, platforms)) = two_platform_store() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    write(&ctx, "Dockerfile", "ARG TARGETARCH\nFROM busybox:$TARGETARCH\nRUN uname -m > /arch\n");
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},mode=max", p(&cache));
    b.ok(&["build", "-q", "--platform", &platforms, "--cache-to", &to, &p(&ctx)]);

    // Another machine: the same bases, no local cache.
    let Some((fresh, _)) = two_platform_store() else { return };
    let from = format!("type=local,src={}", p(&cache));
    let build = |platform: &str| {
        let out =
            fresh.output(&["build", "--progress", "plain", "--platform", platform, "--cache-from", &from, &p(&ctx)]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        steps_that_ran(&log).into_iter().filter(|s| s.contains("RUN")).collect::<Vec<_>>()
    };
    assert_eq!(build(&platforms), Vec::<String>::new(), "both platforms' RUN steps come from the one export");
    assert!(foreign_busybox(&fresh, "armhf", "linux/arm/v7", "busybox:arm"), "armhf set up as arm64 was");
    let ran = build("linux/arm/v7");
    assert_eq!(ran.len(), 1, "a platform the cache does not hold runs its RUN step: {ran:?}");
}

#[test]
fn an_index_is_one_image_to_images_inspect_and_rmi() {
    let Some((b, platforms)) = two_platform_store() else { return };
    let host = oci::Platform::host();
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "Dockerfile", "ARG TARGETARCH\nFROM busybox:$TARGETARCH\nRUN uname -m > /arch\n");
    let iidfile = dir.path().join("iid");
    b.ok(&["build", "-q", "--platform", &platforms, "-t", "multi:1", "--iidfile", &p(&iidfile), &p(dir.path())]);
    let index = std::fs::read_to_string(&iidfile).expect("iidfile");

    let rows: Vec<serde_json::Value> = b
        .ok(&["images", "--no-trunc", "--format", "json", "multi"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a json row"))
        .collect();
    assert_eq!(rows.len(), 1, "one row for the index: {rows:?}");
    assert_eq!(rows[0]["ID"], index.as_str(), "{rows:?}");
    assert_eq!(rows[0]["Platforms"], serde_json::json!([host.to_string(), "linux/arm64"]), "{rows:?}");

    let doc: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "multi:1"])).expect("inspect json");
    let doc = &doc[0];
    assert_eq!(doc["Id"], index.as_str());
    assert_eq!(doc["Architecture"], host.architecture.as_str(), "the host's image, as docker shows it: {doc}");
    let children = doc["Manifests"].as_array().expect("Manifests");
    let archs: Vec<&str> =
        children.iter().filter_map(|c| c["Descriptor"]["platform"]["architecture"].as_str()).collect();
    assert_eq!(archs, [host.architecture.as_str(), "arm64"], "{doc}");
    assert!(children.iter().all(|c| c["Available"] == true), "{doc}");
    let child_ids: Vec<String> =
        children.iter().map(|c| c["ImageData"]["Id"].as_str().expect("an image id").to_owned()).collect();
    let child_manifests: Vec<String> =
        children.iter().map(|c| c["Descriptor"]["digest"].as_str().expect("a digest").to_owned()).collect();

    let out = b.ok(&["rmi", "multi:1"]);
    for id in std::iter::once(&index).chain(&child_ids) {
        assert!(out.contains(&format!("Deleted: {id}")), "{id} is reported deleted: {out}");
    }
    let blob = |d: &str| b.root.path().join("content/blobs/sha256").join(d.trim_start_matches("sha256:"));
    for d in child_manifests.iter().chain(&child_ids) {
        assert!(!blob(d).exists(), "{d}: the platforms' images went with the index");
    }
    assert!(b.ok(&["images", "-q", "multi"]).is_empty());
    assert_eq!(b.ok(&["run", "--rm", "busybox:arm64", "uname", "-m"]), "aarch64\n", "the bases stay");
}
