//! `--cache-to` / `--cache-from`: fresh stores act as CI runners that share a build cache
//! through berth's registry, CNCF distribution with htpasswd auth, a local directory and an
//! image's inline cache; lazy transfers counted at the registry; every failure of issue 15
//! item 7; secrets never exported.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::client::{distribution, free_port, login};
use crate::registry::htpasswd_file;
use crate::util::{build_store, http, p, run_tool, steps_that_ran, Berth, Server};

/// Three stages: `deps` and `build` feed the final image through `COPY --from`.
const DOCKERFILE: &str = "FROM busybox AS deps
COPY deps.txt /deps.txt
RUN cp /deps.txt /deps.out && echo deps >> /deps.out
FROM busybox AS build
COPY --from=deps /deps.out /deps.out
COPY src.txt /src.txt
RUN cat /deps.out /src.txt > /app
FROM busybox
COPY --from=build /app /app
RUN cat /app > /final && echo final >> /final
";

/// A checkout of the project at `dir/name` with `src.txt` = `src`.
fn checkout(dir: &Path, name: &str, src: &str) -> PathBuf {
    let ctx = dir.join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("deps.txt"), "libfoo 1.0\n").unwrap();
    std::fs::write(ctx.join("src.txt"), src).unwrap();
    ctx
}

/// What one build printed and made.
struct Build {
    log: String,
    iid: String,
}

/// `berth build --progress plain` on `ctx` with `extra` flags and `env`; asserts success.
fn build_env(b: &Berth, ctx: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Build {
    let iidfile = b.root.path().join("iid");
    let mut args = vec!["build", "--progress", "plain", "--iidfile"];
    let iid_arg = p(&iidfile);
    args.push(&iid_arg);
    args.extend_from_slice(extra);
    let ctx_arg = p(ctx);
    args.push(&ctx_arg);
    let mut cmd = b.cmd(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "berth {args:?} failed:\n{log}");
    Build { log, iid: std::fs::read_to_string(&iidfile).unwrap() }
}

fn build(b: &Berth, ctx: &Path, extra: &[&str]) -> Build {
    build_env(b, ctx, extra, &[])
}

/// The bytes of blobs a berth registry has served so far.
fn blob_bytes_sent(addr: &str) -> u64 {
    let (status, _, body) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let line = text.lines().find(|l| l.starts_with("berth_registry_bytes_sent_total{route=\"blob\"}"));
    line.and_then(|l| l.rsplit(' ').next()).map_or(0, |n| n.parse().unwrap())
}

/// A manifest of a berth registry.
fn manifest(addr: &str, repo: &str, reference: &str) -> serde_json::Value {
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let (status, _, body) = http(addr, "GET", &format!("/v2/{repo}/manifests/{reference}"), &accept, b"");
    assert_eq!(status, 200, "{repo}:{reference}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("WARNING:")).collect()
}

fn run_in(b: &Berth, image: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm", image];
    args.extend_from_slice(cmd);
    b.ok(&args)
}

#[test]
fn a_fresh_runner_hits_everything_through_berths_registry_and_moves_no_layer() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let reg = &server.addr;
    let cache = format!("type=registry,ref={reg}/app:cache,mode=max");
    let first = build(
        &a,
        &checkout(dir.path(), "runner-a/src", "v1\n"),
        &["-t", &format!("{reg}/app:a"), "--cache-to", &cache],
    );
    assert!(first.log.contains(&format!("exporting cache to registry {reg}/app:cache")), "{}", first.log);
    // Each step's layer went to the registry while the build ran: the export found them there.
    let line = first.log.lines().find(|l| l.contains("exporting cache to registry")).unwrap();
    let present: u32 = line.split("; ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
    assert!(present >= 5, "the steps' layers were not sent during the build: {line}");
    // N blobs (U uploaded, ...; P present): every blob is one or the other.
    let number_before = |marker: &str| -> u32 {
        let head = &line[..line.find(marker).unwrap()];
        head.rsplit(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty()).unwrap().parse().unwrap()
    };
    assert_eq!(number_before(" blobs"), number_before(" uploaded") + present, "{line}");
    // Runner B: another path, files owned by another user, an empty store but for the base.
    let b = build_store().unwrap();
    let ctx_b = checkout(dir.path(), "runner-b/work/checkout", "v1\n");
    run_tool(Command::new("chown").args(["-R", "1234:1234", &p(&ctx_b)]));
    let config_size = manifest(reg, "app", "cache")["config"]["size"].as_u64().unwrap();
    let before = blob_bytes_sent(reg);
    let from = format!("type=registry,ref={reg}/app:cache");
    let second = build(&b, &ctx_b, &["-t", &format!("{reg}/app:b"), "--push", "--cache-from", &from]);
    assert_eq!(steps_that_ran(&second.log), Vec::<String>::new(), "every step hits:\n{}", second.log);
    assert_eq!(second.iid, first.iid, "the same image, byte for byte");
    assert_eq!(blob_bytes_sent(reg) - before, config_size, "an all-hit build that pushes reads the cache config only");
    let pushed = manifest(reg, "app", "b");
    for l in pushed["layers"].as_array().unwrap() {
        let (status, _, _) = http(reg, "HEAD", &format!("/v2/app/blobs/{}", l["digest"].as_str().unwrap()), &[], b"");
        assert_eq!(status, 200, "the pushed image is whole in the registry");
    }
    // Runner C loads the image into its store: each layer it lacks is downloaded once.
    let c = build_store().unwrap();
    let before = blob_bytes_sent(reg);
    let third = build(&c, &ctx_b, &["-t", "app-c", "--cache-from", &format!("{reg}/app:cache")]);
    assert_eq!(steps_that_ran(&third.log), Vec::<String>::new(), "{}", third.log);
    let layers = blob_bytes_sent(reg) - before - config_size;
    assert!(layers > 0 && layers < 100_000, "the built layers, not the base image: {layers} bytes");
    assert_eq!(run_in(&c, "app-c", &["cat", "/final"]), "libfoo 1.0\ndeps\nv1\nfinal\n");
    let before = blob_bytes_sent(reg);
    build(&c, &ctx_b, &["-t", "app-c", "--cache-from", &format!("{reg}/app:cache")]);
    assert_eq!(blob_bytes_sent(reg) - before, 0, "nothing is downloaded twice, not even the config");
    // mode=max carried the stages that are not in the final image.
    let d = build_store().unwrap();
    let stage = build(&d, &ctx_b, &["--target", "build", "--cache-from", &from]);
    assert_eq!(steps_that_ran(&stage.log), Vec::<String>::new(), "{}", stage.log);
}

/// A stage that copies a large incompressible file from the context and reads it; the
/// final image takes only its digest. `SALT` changes the RUN without changing the COPY.
const SKELETON_DOCKERFILE: &str = "FROM busybox AS deps
COPY big.bin notes.txt /deps/
ARG SALT=1
RUN md5sum /deps/big.bin > /deps.sum && cat /deps/notes.txt >> /deps.sum
FROM busybox AS other
RUN echo other > /other
FROM busybox
COPY --from=other /other /other
COPY --from=deps /deps.sum /deps.sum
RUN cat /deps.sum /other > /final
";

/// A checkout for [`SKELETON_DOCKERFILE`] at `dir`, its files dated `stamp` and owned by `owner`.
fn skeleton_checkout(dir: &Path, stamp: &str, owner: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), SKELETON_DOCKERFILE).unwrap();
    // xorshift64: the same 4 MB everywhere, and gzip cannot shrink them.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..4_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    std::fs::write(dir.join("notes.txt"), "pinned deps\n").unwrap();
    run_tool(Command::new("touch").args(["-d", stamp, &p(&dir.join("big.bin")), &p(&dir.join("notes.txt"))]));
    run_tool(Command::new("chown").args(["-R", owner, &p(dir)]));
    dir.to_owned()
}

#[test]
fn mode_max_carries_the_context_copies_of_other_stages_as_skeletons_the_next_checkout_fills() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let reg = &server.addr;
    let cache = format!("type=registry,ref={reg}/app:cache,mode=max");
    let ctx_a = skeleton_checkout(&dir.path().join("runner-a/src"), "2024-01-02 03:04:05", "0:0");
    let first = build(&a, &ctx_a, &["-t", "app-a", "--cache-to", &cache]);
    assert!(first.log.contains("present; 1 skeleton) in"), "{}", first.log);
    let want = run_in(&a, "app-a", &["cat", "/final"]);
    // The 4 MB file does not travel: the COPY's layer is its skeleton, a few hundred bytes.
    let m = manifest(reg, "app", "cache");
    let layers = m["layers"].as_array().unwrap();
    let skeletons: Vec<_> =
        layers.iter().filter(|l| l["mediaType"] == "application/vnd.berth.build-cache.skeleton.v1+gzip").collect();
    assert_eq!(skeletons.len(), 1, "{m}");
    let total: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    assert!(total < 1_500_000, "the cache's layers take {total} bytes: the file went whole");
    let (status, _, config) =
        http(reg, "GET", &format!("/v2/app/blobs/{}", m["config"]["digest"].as_str().unwrap()), &[], b"");
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["version"], 2, "a cache with skeletons is format 2");
    let skeleton_diff =
        config["blobs"].as_array().unwrap().iter().find(|b| b["digest"] == skeletons[0]["digest"]).unwrap()["diffId"]
            .clone();

    // Runner B builds the stage itself from another checkout (other path, times, owner):
    // every step hits, and the COPY's layer is written again from B's files, the same bytes.
    let b = build_store().unwrap();
    let ctx_b = skeleton_checkout(&dir.path().join("runner-b/work"), "2025-06-07 08:09:10", "1234:1234");
    let before = blob_bytes_sent(reg);
    let from = format!("type=registry,ref={reg}/app:cache");
    let stage = build(&b, &ctx_b, &["-t", "deps-b", "--target", "deps", "--cache-from", &from]);
    assert_eq!(steps_that_ran(&stage.log), Vec::<String>::new(), "{}", stage.log);
    let read = blob_bytes_sent(reg) - before;
    assert!(read < 1_000_000, "{read} bytes read from the cache for a 4 MB file that runner B has");
    let diff_ids = b.ok(&["inspect", "-f", "{{json .RootFS.Layers}}", "deps-b"]);
    assert!(diff_ids.contains(skeleton_diff.as_str().unwrap()), "{diff_ids} lacks {skeleton_diff}");
    assert_eq!(run_in(&b, "deps-b", &["cat", "/deps.sum"]), run_in(&a, "app-a", &["cat", "/deps.sum"]));

    // Runner C changes the RUN on top of the copy: the copy hits, and its files come from
    // C's checkout into the snapshot the RUN reads.
    let c = build_store().unwrap();
    let before = blob_bytes_sent(reg);
    let salted = build(&c, &ctx_b, &["-t", "app-c", "--build-arg", "SALT=2", "--cache-from", &from]);
    let ran = steps_that_ran(&salted.log);
    assert!(ran.iter().any(|s| s.contains("RUN md5sum")) && !ran.iter().any(|s| s.contains("COPY big.bin")), "{ran:?}");
    assert!(blob_bytes_sent(reg) - before < 1_000_000);
    assert_eq!(run_in(&c, "app-c", &["cat", "/final"]), want);
}

#[test]
fn a_skeleton_that_does_not_make_its_layer_runs_the_steps_that_need_it_and_the_build_goes_on() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ctx = skeleton_checkout(&dir.path().join("src"), "2024-01-02 03:04:05", "0:0");
    build(&a, &ctx, &["--cache-to", &format!("type=local,dest={},mode=max", p(&cache))]);
    // The skeleton's record says another diffID: the runner's files cannot make that layer
    // (as when a context file changed between its hashing and its reading).
    rewrite_layout_config(&cache, |config| {
        let blobs = config["blobs"].as_array_mut().unwrap();
        let skeleton = blobs.iter_mut().find(|b| b["mediaType"].as_str().unwrap().contains("skeleton")).unwrap();
        skeleton["diffId"] = format!("sha256:{}", "cd".repeat(32)).into();
    });
    let b = build_store().unwrap();
    let out =
        build(&b, &ctx, &["-t", "deps", "--target", "deps", "--cache-from", &format!("type=local,src={}", p(&cache))]);
    let w = warnings(&out.log);
    assert!(w.len() == 1 && w[0].contains("building again without it"), "{}", out.log);
    assert!(w[0].contains("from its skeleton"), "{}", w[0]);
    assert!(steps_that_ran(&out.log).iter().any(|s| s.contains("COPY big.bin")), "{}", out.log);
    assert_eq!(run_in(&b, "deps", &["cat", "/deps/notes.txt"]), "pinned deps\n");
}

#[test]
fn a_skeleton_naming_files_the_checkout_lacks_runs_the_steps_that_need_it_and_no_other() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ctx = skeleton_checkout(&dir.path().join("src"), "2024-01-02 03:04:05", "0:0");
    build(&a, &ctx, &["--cache-to", &format!("type=local,dest={},mode=max", p(&cache))]);
    // A skeleton whose one file is one no checkout has.
    let mut bogus = b"berth-skeleton 1\nF".to_vec();
    bogus.extend_from_slice(&12u64.to_le_bytes());
    bogus.extend_from_slice(&[0xab; 32]);
    bogus.push(b'E');
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bogus).unwrap();
    let gz = gz.finish().unwrap();
    let digest = sha256(&gz);
    std::fs::write(cache.join("blobs/sha256").join(&digest[7..]), &gz).unwrap();
    rewrite_layout(&cache, |m, config| {
        let blobs = config["blobs"].as_array_mut().unwrap();
        let i = blobs.iter().position(|b| b["mediaType"].as_str().unwrap().contains("skeleton")).unwrap();
        for d in [&mut blobs[i], &mut m["layers"][i]] {
            d["digest"] = digest.clone().into();
            d["size"] = gz.len().into();
        }
    });
    // The RUN misses and runs on the copy's layer, written from the skeleton as it is read.
    let b = build_store().unwrap();
    let from = format!("type=local,src={}", p(&cache));
    let out = build(&b, &ctx, &["-t", "app", "--build-arg", "SALT=2", "--cache-from", &from]);
    let w = warnings(&out.log);
    assert!(w.len() == 1 && w[0].contains("building again without it"), "{}", out.log);
    assert!(w[0].contains("no file of the build context has the contents"), "{}", w[0]);
    assert!(w[0].starts_with(&format!("WARNING: cache local {}: layer sha256:", p(&cache))), "{}", w[0]);
    assert!(w[0].contains("from its skeleton and the build context"), "{}", w[0]);
    // Only the steps on that layer run; the rest of the cache is still used. Before, the
    // whole cache was dropped and stage `other` ran too.
    let ran = steps_that_ran(&out.log);
    assert!(ran.iter().any(|s| s.contains("COPY big.bin")), "{ran:?}");
    assert!(!ran.iter().any(|s| s.contains("RUN echo other")), "{ran:?}");
    assert_eq!(run_in(&b, "app", &["cat", "/final"]), run_in(&a, &a_image(&a, &ctx), &["cat", "/final"]));
}

/// The image of a plain build of `ctx` in `b`'s store (all hits there).
fn a_image(b: &Berth, ctx: &Path) -> String {
    build(b, ctx, &["-t", "plain", "--build-arg", "SALT=2"]);
    "plain".into()
}

#[test]
fn mode_min_carries_the_final_images_steps_only() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let reg = &server.addr;
    let ctx = checkout(dir.path(), "src", "v1\n");
    build(&a, &ctx, &["--cache-to", &format!("type=registry,ref={reg}/app:min")]);
    let from = format!("type=registry,ref={reg}/app:min");
    let b = build_store().unwrap();
    let whole = build(&b, &ctx, &["--cache-from", &from]);
    assert_eq!(
        steps_that_ran(&whole.log),
        Vec::<String>::new(),
        "the final image hits, its stages never run:\n{}",
        whole.log
    );
    let c = build_store().unwrap();
    let stage = build(&c, &ctx, &["--target", "build", "--cache-from", &from]);
    let ran = steps_that_ran(&stage.log);
    assert!(ran.iter().any(|s| s.contains("RUN cat /deps.out")), "min mode leaves the build stage out: {ran:?}");
}

#[test]
fn a_cache_in_cncf_distribution_with_htpasswd_auth() {
    let dir = tempfile::tempdir().unwrap();
    let Some(htpasswd) = htpasswd_file(dir.path()) else { return };
    let Some(a) = build_store() else { return };
    let Some(dist) = distribution(dir.path(), &htpasswd) else { return };
    let config = dir.path().join("docker");
    assert!(login(&a, &config, &dist.addr, "alice", "s3cret").status.success());
    let ctx = checkout(dir.path(), "src", "v1\n");
    let cache = format!("{}/team/app:buildcache", dist.addr);
    let env = [("DOCKER_CONFIG", config.as_path())];
    build_env(&a, &ctx, &["--cache-to", &format!("type=registry,ref={cache},mode=max")], &env);
    let b = build_store().unwrap();
    let hit = build_env(&b, &ctx, &["--cache-from", &cache], &env);
    assert_eq!(steps_that_ran(&hit.log), Vec::<String>::new(), "{}", hit.log);
    // Without credentials the cache cannot be read: one warning, and the build still works.
    let c = build_store().unwrap();
    let nobody = dir.path().join("nobody");
    let miss = build_env(&c, &ctx, &["--cache-from", &cache], &[("DOCKER_CONFIG", nobody.as_path())]);
    let w = warnings(&miss.log);
    assert_eq!(w.len(), 1, "{}", miss.log);
    assert!(w[0].contains(&cache), "{}", w[0]);
    assert!(!steps_that_ran(&miss.log).is_empty());
}

/// The digests of the files under a layout's `blobs/`.
fn layout_blobs(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

fn layout_json(dir: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap()
}

/// The index in the config's blobs of the top layer of the record whose step names `step`.
fn last_layer(config: &serde_json::Value, step: &str) -> usize {
    let records = config["records"].as_array().unwrap();
    let rec = records.iter().find(|r| r["step"].as_str().unwrap().contains(step)).unwrap();
    rec["layers"].as_array().unwrap().last().unwrap().as_u64().unwrap() as usize
}

/// Overwrites the bytes (not the size) of that layer's blob in the layout at `dir`.
fn spoil_last_layer(dir: &Path, config: &serde_json::Value, step: &str) {
    let blob = &config["blobs"][last_layer(config, step)];
    let path = dir.join("blobs/sha256").join(&blob["digest"].as_str().unwrap()[7..]);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![b'x'; len]).unwrap();
}

/// The (manifest, config) of the one entry of a cache layout.
fn layout_entry(dir: &Path) -> (serde_json::Value, serde_json::Value, String) {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one entry per tag: {index}");
    let digest = entries[0]["digest"].as_str().unwrap().to_owned();
    let m = layout_json(dir, &digest);
    let c = layout_json(dir, m["config"]["digest"].as_str().unwrap());
    (m, c, digest)
}

#[test]
fn compression_level_sets_how_the_cache_layers_are_compressed() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = checkout(dir.path(), "src", &"a line of source that compresses well\n".repeat(4000));
    let layers = |level: &str| {
        let dest = dir.path().join(format!("cache-{level}"));
        let to = format!("type=local,dest={},mode=max,compression=zstd,compression-level={level}", p(&dest));
        build(&a, &ctx, &["--cache-to", &to]);
        let (m, _, _) = layout_entry(&dest);
        let zstd: Vec<(String, u64)> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["mediaType"].as_str().unwrap().ends_with("+zstd"))
            .map(|l| (l["digest"].as_str().unwrap().to_owned(), l["size"].as_u64().unwrap()))
            .collect();
        assert!(!zstd.is_empty(), "compression=zstd gives zstd layers: {m}");
        zstd
    };
    let (fast, small) = (layers("1"), layers("19"));
    assert_eq!(fast.len(), small.len());
    assert_ne!(fast, small, "the level changes the compressed blobs");
    let total = |l: &[(String, u64)]| l.iter().map(|(_, n)| n).sum::<u64>();
    assert!(total(&small) <= total(&fast), "level 19 is no larger than level 1: {small:?} {fast:?}");
}

#[test]
fn a_local_cache_is_replaced_whole_keeps_only_what_it_uses_and_is_verified() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},mode=max", p(&cache));
    let from = format!("type=local,src={}", p(&cache));
    build(&a, &checkout(dir.path(), "v1", "v1\n"), &["--cache-to", &to]);
    let v1 = layout_blobs(&cache);
    let b = build_store().unwrap();
    let hit = build(&b, &checkout(dir.path(), "elsewhere", "v1\n"), &["--cache-from", &from]);
    assert_eq!(steps_that_ran(&hit.log), Vec::<String>::new(), "{}", hit.log);
    // A new commit replaces the entry; what only the old one used is gone.
    let v2_ctx = checkout(dir.path(), "v2", "v2\n");
    build(&a, &v2_ctx, &["--cache-to", &to]);
    let (m, config, digest) = layout_entry(&cache);
    let mut used: std::collections::BTreeSet<String> =
        m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect();
    used.insert(digest);
    used.insert(m["config"]["digest"].as_str().unwrap().to_owned());
    assert_eq!(layout_blobs(&cache), used, "the layout holds exactly what its entry uses");
    assert!(v1.difference(&used).count() > 0, "the old entry's own blobs were removed");
    // A blob whose bytes were changed is refused: the build warns, rebuilds, and is right.
    spoil_last_layer(&cache, &config, "RUN cat /app");
    let c = build_store().unwrap();
    let out = build(&c, &v2_ctx, &["-t", "app", "--cache-from", &from]);
    let w = warnings(&out.log);
    assert!(!w.is_empty() && w.iter().any(|l| l.contains("building again without it")), "{}", out.log);
    assert_eq!(run_in(&c, "app", &["cat", "/final"]), "libfoo 1.0\ndeps\nv2\nfinal\n", "never wrong content");
}

#[test]
fn a_local_export_removes_only_its_own_blobs_and_refuses_a_directory_that_is_not_a_layout() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = checkout(dir.path(), "v1", "v1\n");
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},mode=max", p(&cache));
    build(&a, &ctx, &["--cache-to", &to]);
    // Before: every file under blobs/ that no entry used was removed, through symlinks too,
    // and a stray file failed every later export.
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let precious = victim.join("f".repeat(128));
    std::fs::write(&precious, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, cache.join("blobs/sha512")).unwrap();
    let linked = cache.join("blobs/sha256").join("e".repeat(64));
    std::os::unix::fs::symlink(&precious, &linked).unwrap();
    std::fs::write(cache.join("blobs/README"), "notes").unwrap();
    build(&a, &checkout(dir.path(), "v2", "v2\n"), &["--cache-to", &to]);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious", "nothing is removed through a symlink");
    assert!(linked.symlink_metadata().is_ok() && cache.join("blobs/README").exists(), "only blobs are removed");
    // A directory with an index.json of its own (a web app's) is not a cache: refused, untouched.
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("blobs/assets")).unwrap();
    std::fs::write(app.join("blobs/assets/logo.png"), "png").unwrap();
    std::fs::write(app.join("index.json"), r#"{"name":"my-web-app"}"#).unwrap();
    let out = a.output(&["build", "--cache-to", &format!("type=local,dest={}", p(&app)), &p(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is not an OCI image layout"), "{err}");
    assert_eq!(std::fs::read_to_string(app.join("index.json")).unwrap(), r#"{"name":"my-web-app"}"#);
    assert!(app.join("blobs/assets/logo.png").exists());
    // An empty dest= (an unset CI variable) is refused before the build.
    let out = a.output(&["build", "--cache-to", "type=local,dest=,mode=max", &p(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("dest= is empty"), "{err}");
}

#[test]
fn a_fresh_runner_without_the_base_image_pulls_no_layer_for_an_all_hit_push() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &["--delete-enabled"]);
    let reg = &server.addr;
    let base = format!("{reg}/busybox:1");
    a.ok(&["tag", "busybox", &base]);
    a.ok(&["push", "-q", &base]);
    let ctx = checkout(dir.path(), "src", "v1\n");
    let dockerfile = DOCKERFILE.replace("FROM busybox", &format!("FROM {base}"));
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let cache = format!("type=registry,ref={reg}/app:cache");
    build(&a, &ctx, &["-t", &format!("{reg}/app:a"), "--push", "--cache-to", &format!("{cache},mode=max")]);
    // Runner B has nothing at all: the base's manifest and config, the cache's config, and
    // no layer come from the registry.
    let b = Berth::new();
    let before = blob_bytes_sent(reg);
    let second = build(&b, &ctx, &["-t", &format!("{reg}/app:b"), "--push", "--cache-from", &cache]);
    assert_eq!(steps_that_ran(&second.log), Vec::<String>::new(), "every step hits:\n{}", second.log);
    let configs = manifest(reg, "app", "cache")["config"]["size"].as_u64().unwrap()
        + manifest(reg, "busybox", "1")["config"]["size"].as_u64().unwrap();
    assert_eq!(blob_bytes_sent(reg) - before, configs, "only the two configs were read:\n{}", second.log);
    for l in manifest(reg, "app", "b")["layers"].as_array().unwrap() {
        let path = format!("/v2/app/blobs/{}", l["digest"].as_str().unwrap());
        assert_eq!(http(reg, "HEAD", &path, &[], b"").0, 200, "the pushed image is whole in the registry");
    }
    // Runner C stores the image: the base's layer is fetched then, and the image runs.
    let c = Berth::new();
    build(&c, &ctx, &["-t", "app", "--cache-from", &cache]);
    assert_eq!(run_in(&c, "app", &["cat", "/final"]), "libfoo 1.0\ndeps\nv1\nfinal\n");
    // `--push --load` (buildx's flag): pushed, and whole here too.
    let e = Berth::new();
    let pushed = format!("{reg}/app:e");
    build(&e, &ctx, &["-t", &pushed, "--push", "--load", "--cache-from", &cache]);
    assert_eq!(run_in(&e, &pushed, &["cat", "/final"]), "libfoo 1.0\ndeps\nv1\nfinal\n");
    // The cache's copy of the base layer is gone: the cache is dropped once and the layer
    // comes from the base's own repository. Before, the build retried without end.
    let base_layer = manifest(reg, "busybox", "1")["layers"][0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(http(reg, "DELETE", &format!("/v2/app/blobs/{base_layer}"), &[], b"").0, 202);
    let d = Berth::new();
    let v2 = checkout(dir.path(), "v2", "v2\n");
    std::fs::write(v2.join("Dockerfile"), DOCKERFILE.replace("FROM busybox", &format!("FROM {base}"))).unwrap();
    let mut child = d
        .cmd(&["build", "--progress", "plain", "-t", "app", "--cache-from", &cache, &p(&v2)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the build did not end in two minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(warnings(&log).len(), 1, "one warning for the dropped cache:\n{log}");
    assert_eq!(run_in(&d, "app", &["cat", "/final"]), "libfoo 1.0\ndeps\nv2\nfinal\n");
}

#[test]
fn an_all_hit_push_from_a_local_cache_uploads_whole_layers() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ctx = checkout(dir.path(), "src", "v1\n");
    build(&a, &ctx, &["--cache-to", &format!("type=local,dest={},mode=max", p(&cache))]);
    // A fresh runner hits every step; the registry cannot mount what lives in a directory,
    // so the push needs the layers' bytes.
    let b = build_store().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let image = format!("{}/app:1", server.addr);
    let from = format!("type=local,src={}", p(&cache));
    let out = build(&b, &ctx, &["-t", &image, "--push", "--cache-from", &from]);
    assert_eq!(steps_that_ran(&out.log), Vec::<String>::new(), "{}", out.log);
    for l in manifest(&server.addr, "app", "1")["layers"].as_array().unwrap() {
        let (status, _, _) =
            http(&server.addr, "HEAD", &format!("/v2/app/blobs/{}", l["digest"].as_str().unwrap()), &[], b"");
        assert_eq!(status, 200, "the pushed image is whole in the registry");
    }
}

#[test]
fn an_inline_cache_travels_inside_the_pushed_image() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let image = format!("{}/app:latest", server.addr);
    let ctx = checkout(dir.path(), "src", "v1\n");
    build(&a, &ctx, &["-t", &image, "--push", "--cache-to", "type=inline"]);
    let config = manifest(&server.addr, "app", "latest")["config"]["digest"].as_str().unwrap().to_owned();
    let (_, _, config) = http(&server.addr, "GET", &format!("/v2/app/blobs/{config}"), &[], b"");
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let records = config["berth.build-cache.v1"]["records"].as_array().map_or(0, Vec::len);
    assert!(records >= 2, "the image config carries the final image's records: {config}");
    let b = build_store().unwrap();
    let hit = build(&b, &ctx, &["--cache-from", &image]);
    assert_eq!(steps_that_ran(&hit.log), Vec::<String>::new(), "{}", hit.log);
    let err = b.fails(&["build", "--cache-to", "type=inline,mode=max", &p(&ctx)]);
    assert!(err.contains("mode=min only"), "{err}");
}

#[test]
fn when_the_first_cache_fails_the_next_ones_copy_of_a_step_is_used() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = checkout(dir.path(), "v1", "v1\n");
    let (branch, main) = (dir.path().join("branch"), dir.path().join("main"));
    for c in [&branch, &main] {
        build(&a, &ctx, &["--cache-to", &format!("type=local,dest={},mode=max", p(c))]);
    }
    // The branch cache's layer of the last step has its bytes changed (same size).
    let (_, config, _) = layout_entry(&branch);
    spoil_last_layer(&branch, &config, "RUN cat /app");
    // Before: the branch cache was dropped with every key it had, and every step ran again,
    // though the main cache held the same steps.
    let b = build_store().unwrap();
    let from = |c: &Path| format!("type=local,src={}", p(c));
    let out = build(&b, &ctx, &["-t", "app", "--cache-from", &from(&branch), "--cache-from", &from(&main)]);
    assert_eq!(warnings(&out.log).len(), 1, "{}", out.log);
    assert_eq!(steps_that_ran(&out.log), Vec::<String>::new(), "{}", out.log);
    assert_eq!(run_in(&b, "app", &["cat", "/final"]), "libfoo 1.0\ndeps\nv1\nfinal\n");
}

#[test]
fn a_cache_layer_whose_diff_id_is_wrong_drops_that_cache_and_the_build_goes_on() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    build(&a, &checkout(dir.path(), "v1", "v1\n"), &["--cache-to", &format!("type=local,dest={},mode=max", p(&cache))]);
    // The record of `COPY --from=deps` now says another diffID for its layer. A miss on top
    // of it (src.txt changed) unpacks that layer and finds out.
    rewrite_layout_config(&cache, |config| {
        let i = last_layer(config, "COPY --from=deps");
        config["blobs"][i]["diffId"] = format!("sha256:{}", "cd".repeat(32)).into();
    });
    // Before: "unpack the parent layers: layer ... has diffID ..." and the build failed, on
    // every runner, until someone deleted the cache.
    let b = build_store().unwrap();
    let out = build(
        &b,
        &checkout(dir.path(), "v2", "v2\n"),
        &["-t", "app", "--cache-from", &format!("type=local,src={}", p(&cache))],
    );
    let w = warnings(&out.log);
    assert!(w.len() == 1 && w[0].contains("building again without it"), "{}", out.log);
    assert_eq!(run_in(&b, "app", &["cat", "/final"]), "libfoo 1.0\ndeps\nv2\nfinal\n");
}

#[test]
fn a_push_build_whose_cache_registry_lost_a_layer_builds_it_again_and_pushes_a_whole_image() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &["--delete-enabled"]);
    let reg = &server.addr;
    let ctx = checkout(dir.path(), "src", "v1\n");
    let cache = format!("type=registry,ref={reg}/app:cache");
    build(&a, &ctx, &["-t", &format!("{reg}/app:a"), "--push", "--cache-to", &format!("{cache},mode=max")]);
    // The repository loses the final step's layer (a delete, a gc): the cache still lists it.
    let pushed = manifest(reg, "app", "a");
    let lost = pushed["layers"].as_array().unwrap().last().unwrap()["digest"].as_str().unwrap().to_owned();
    let cached = manifest(reg, "app", "cache");
    assert!(cached["layers"].as_array().unwrap().iter().any(|l| l["digest"] == lost.as_str()), "{cached}");
    assert_eq!(http(reg, "DELETE", &format!("/v2/app/blobs/{lost}"), &[], b"").0, 202);
    // Runner B pushes without fetching what the cache holds: it finds the layer gone before
    // the push, drops the cache and runs the steps. Before, the push failed: "blob ... not found".
    let b = build_store().unwrap();
    let out = build(&b, &ctx, &["-t", &format!("{reg}/app:b"), "--push", "--cache-from", &cache]);
    let w = warnings(&out.log);
    assert!(w.len() == 1 && w[0].contains("no longer there; building again without it"), "{}", out.log);
    assert!(!steps_that_ran(&out.log).is_empty(), "{}", out.log);
    for l in manifest(reg, "app", "b")["layers"].as_array().unwrap() {
        let path = format!("/v2/app/blobs/{}", l["digest"].as_str().unwrap());
        assert_eq!(http(reg, "HEAD", &path, &[], b"").0, 200, "the pushed image is whole in the registry");
    }
    let c = Berth::new();
    c.ok(&["pull", "-q", &format!("{reg}/app:b")]);
    assert_eq!(run_in(&c, &format!("{reg}/app:b"), &["cat", "/final"]), "libfoo 1.0\ndeps\nv1\nfinal\n");
}

/// A layout under `dir` whose `latest` entry is a berth cache manifest with `config`.
/// Changes the config of the one entry of the cache layout `cache` with `change`, and the
/// manifest and index with it.
fn rewrite_layout_config(cache: &Path, change: impl FnOnce(&mut serde_json::Value)) {
    rewrite_layout(cache, |_, config| change(config));
}

/// Changes the manifest and config of the one entry of the cache layout `cache`, and the
/// index with them.
fn rewrite_layout(cache: &Path, change: impl FnOnce(&mut serde_json::Value, &mut serde_json::Value)) {
    let (mut m, mut config, _) = layout_entry(cache);
    change(&mut m, &mut config);
    let bytes = serde_json::to_vec(&config).unwrap();
    let put = |b: &[u8]| {
        let d = sha256(b);
        std::fs::write(cache.join("blobs/sha256").join(&d[7..]), b).unwrap();
        d
    };
    m["config"]["digest"] = put(&bytes).into();
    m["config"]["size"] = bytes.len().into();
    let mbytes = serde_json::to_vec(&m).unwrap();
    let md = put(&mbytes);
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = md.into();
    index["manifests"][0]["size"] = mbytes.len().into();
    std::fs::write(cache.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn layout_with_config(dir: &Path, config: &[u8]) -> PathBuf {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let c = put(config);
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.berth.build-cache.config.v1+json", "digest": c, "size": config.len()}, "layers": []});
    let mbytes = serde_json::to_vec(&m).unwrap();
    let md = put(&mbytes);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": mbytes.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    dir.to_owned()
}

fn sha256(bytes: &[u8]) -> String {
    oci::Digest::of(bytes).to_string()
}

#[test]
fn unusable_sources_are_one_warning_and_failed_exports_one_line() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let reg = &server.addr;
    let ctx = checkout(dir.path(), "src", "v1\n");
    a.ok(&["tag", "busybox", &format!("{reg}/busybox:1")]);
    a.ok(&["push", "-q", &format!("{reg}/busybox:1")]);
    let newer = layout_with_config(&dir.path().join("newer"), br#"{"version":99,"blobs":[],"records":[]}"#);
    let corrupt = layout_with_config(&dir.path().join("corrupt"), b"{not json");
    let cases = [
        (format!("{reg}/app:nothing"), "no cache there yet"),
        (format!("{reg}/busybox:1"), "not a berth build cache"),
        (format!("type=local,src={}", p(&newer)), "newer than this berth reads"),
        (format!("type=local,src={}", p(&corrupt)), "corrupt cache config"),
        (format!("type=registry,ref={reg}/Not:A:Ref"), "not used"),
    ];
    for (from, why) in &cases {
        let out = build(&a, &ctx, &["--cache-from", from]);
        let w = warnings(&out.log);
        assert_eq!(w.len(), 1, "{from}: {}", out.log);
        assert!(w[0].contains(why), "{from}: {}", w[0]);
    }
    // A registry that is not there: the image is built and named, the build fails on one line.
    let dead = format!("127.0.0.1:{}", free_port());
    let to = format!("type=registry,ref={dead}/app:cache");
    let err = a.fails(&["build", "--progress", "quiet", "-t", "still-built", "--cache-to", &to, &p(&ctx)]);
    assert!(err.contains(&format!("cache export to registry {dead}/app:cache failed")), "{err}");
    assert!(a.ok(&["images"]).contains("still-built"), "the image itself is stored");
    let out = build(&a, &ctx, &["--cache-to", &format!("{to},ignore-error=true")]);
    let w = warnings(&out.log);
    assert!(w.len() == 1 && w[0].contains("ignore-error=true"), "{}", out.log);
    // A push that fails too does not hide the failed export (before, only the push's error).
    let image = format!("{dead}/app:1");
    let out = a.output(&["build", "--progress", "quiet", "-t", &image, "--push", "--cache-to", &to, &p(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    let export_failed = err.contains(&format!("cache export to registry {dead}/app:cache failed"));
    assert!(!out.status.success() && export_failed && err.contains(&format!("push {image}")), "{err}");
}

#[test]
fn secrets_never_enter_an_exported_cache() {
    let Some(a) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("src");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=tok sh -c 'test \"$(cat /run/secrets/tok)\" = \"$(cat /run/secrets/tok)\" && wc -c /run/secrets/tok > /len'\n",
    )
    .unwrap();
    let secret = dir.path().join("tok");
    let value = "berth-test-secret-7c1e9a";
    std::fs::write(&secret, value).unwrap();
    let cache = dir.path().join("cache");
    let s = format!("id=tok,src={}", p(&secret));
    build(&a, &ctx, &["--secret", &s, "--cache-to", &format!("type=local,dest={},mode=max", p(&cache))]);
    let mut checked = 0;
    for d in layout_blobs(&cache) {
        let path = cache.join("blobs/sha256").join(&d[7..]);
        let raw = std::fs::read(&path).unwrap();
        let mut plain = Vec::new();
        let reader = oci::layer::LayerReader::new(&raw[..], u64::MAX);
        let unpacked =
            reader.is_ok_and(|mut r| std::io::Read::read_to_end(&mut r, &mut plain).is_ok() && !plain.is_empty());
        for bytes in [&raw, &plain] {
            assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()), "{d} holds the secret");
        }
        checked += usize::from(unpacked);
    }
    assert!(checked > 0, "the layers were read");
}

#[test]
fn two_exports_to_one_ref_at_once_leave_one_whole_cache() {
    let Some(a) = build_store() else { return };
    let b = build_store().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let local = dir.path().join("cache");
    let to = [
        format!("type=registry,ref={}/app:cache,mode=max", server.addr),
        format!("type=local,dest={},mode=max", p(&local)),
    ];
    let (ca, cb) = (checkout(dir.path(), "a", "va\n"), checkout(dir.path(), "b", "vb\n"));
    std::thread::scope(|s| {
        let one = s.spawn(|| build(&a, &ca, &["--cache-to", &to[0], "--cache-to", &to[1]]));
        let two = s.spawn(|| build(&b, &cb, &["--cache-to", &to[0], "--cache-to", &to[1]]));
        one.join().unwrap();
        two.join().unwrap();
    });
    // Whichever won, a fresh runner reads a whole cache that hits for its commit.
    let (m, _, _) = layout_entry(&local);
    for l in m["layers"].as_array().unwrap() {
        assert!(local.join("blobs/sha256").join(&l["digest"].as_str().unwrap()[7..]).exists());
    }
    for from in [format!("type=registry,ref={}/app:cache", server.addr), format!("type=local,src={}", p(&local))] {
        let c = build_store().unwrap();
        let ra = build(&c, &ca, &["--cache-from", &from]);
        let rb = build(&build_store().unwrap(), &cb, &["--cache-from", &from]);
        assert!(warnings(&ra.log).is_empty() && warnings(&rb.log).is_empty(), "{}\n{}", ra.log, rb.log);
        let hits = [steps_that_ran(&ra.log).is_empty(), steps_that_ran(&rb.log).is_empty()];
        assert!(hits.iter().any(|h| *h), "one of the two commits hits fully from {from}");
    }
}
