//! berth pull, push, login and logout against berth's registry (plain, token auth) and
//! CNCF distribution (htpasswd), including interrupted transfers through a flaky proxy.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::registry::{busybox_archive, htpasswd_file, make_multi_arch, skopeo};
use crate::util::{http, p, require_tool, run_tool, Berth, Server};

fn inspect_id(b: &Berth, image: &str) -> String {
    serde_json::from_str::<serde_json::Value>(&b.ok(&["inspect", image])).unwrap()[0]["Id"].as_str().unwrap().to_owned()
}

/// A store with the busybox image tagged `name`; `None` (skip) without busybox-static.
fn with_busybox(name: &str) -> Option<Berth> {
    let b = Berth::new();
    if !b.busybox("busybox:latest") {
        return None;
    }
    b.ok(&["tag", "busybox", name]);
    Some(b)
}

/// Runs berth with stderr captured; returns (stdout, stderr).
fn run(b: &Berth, args: &[&str]) -> (String, String) {
    let out = b.output(args);
    assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn push_then_pull_keeps_the_image_id_and_skips_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("reg"), &[]);
    let name = format!("{}/team/busybox:1", server.addr);
    let Some(a) = with_busybox(&name) else { return };
    let repo_digest = |b: &Berth| b.ok(&["inspect", "--format", "{{index .RepoDigests 0}}", &name]);
    assert!(a.fails(&["inspect", "--format", "{{index .RepoDigests 0}}", &name]).contains("index out of range"));
    let (out, _) = run(&a, &["push", "--progress", "plain", &name]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    let digest = out.split("1: digest: ").nth(1).unwrap().trim().to_owned();
    let pinned = format!("{}/team/busybox@{digest}\n", server.addr);
    assert_eq!(repo_digest(&a), pinned, "the CI idiom for the pushed digest");
    let b = Berth::new();
    let (out, err) = run(&b, &["pull", "--progress", "plain", &name]);
    assert!(out.contains(&format!("Status: Downloaded newer image for {name}")), "{out}");
    assert_eq!(repo_digest(&b), pinned);
    assert!(err.contains("Complete"), "{err}");
    assert_eq!(inspect_id(&b, &name), inspect_id(&a, "busybox"));
    let (out, err) = run(&b, &["pull", "--progress", "plain", &name]);
    assert!(err.matches("Already exists").count() == 2, "a second pull downloads nothing: {err}");
    assert!(out.contains(&format!("Status: Image is up to date for {name}")), "docker's words: {out}");
    let (_, err) = run(&a, &["push", "--progress", "plain", &name]);
    assert!(err.matches("Already exists").count() == 2, "a second push uploads nothing: {err}");
}

#[test]
fn push_mounts_blobs_from_another_repository() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("reg"), &[]);
    let first = format!("{}/one/busybox:1", server.addr);
    let second = format!("{}/two/busybox:1", server.addr);
    let Some(a) = with_busybox(&first) else {
        return;
    };
    a.ok(&["tag", "busybox", &second]);
    run(&a, &["push", "--progress", "plain", &first]);
    let (_, err) = run(&a, &["push", "--progress", "plain", &second]);
    assert_eq!(err.matches("Mounted from one/busybox").count(), 2, "{err}");
}

#[test]
fn push_several_tags_by_digest_and_in_docker_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("reg"), &[]);
    let (t1, t2) = (format!("{}/app:1", server.addr), format!("{}/app:2", server.addr));
    let Some(a) = with_busybox(&t1) else { return };
    a.ok(&["tag", "busybox", &t2]);
    let out = a.ok(&["push", "-q", &t1, &t2]);
    let digests: Vec<&str> = out.lines().collect();
    assert_eq!(digests.len(), 2);
    assert_eq!(digests[0], digests[1]);
    let (_, _, body) = http(&server.addr, "GET", "/v2/app/tags/list", &[], b"");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["tags"], serde_json::json!(["1", "2"]));
    // By digest: the local name@digest resolves to the same image.
    let by_digest = format!("{}/app@{}", server.addr, digests[0]);
    assert_eq!(a.ok(&["push", "-q", &by_digest]).trim(), digests[0]);
    // Docker schema 2: another document, served with docker's media type.
    let t3 = format!("{}/app:docker", server.addr);
    a.ok(&["tag", "busybox", &t3]);
    let d = a.ok(&["push", "-q", "--format", "docker", &t3]);
    assert_ne!(d.trim(), digests[0]);
    let (status, h, _) =
        http(&server.addr, "GET", "/v2/app/manifests/docker", &[("Accept", oci::media::DOCKER_MANIFEST)], b"");
    assert_eq!(status, 200);
    assert_eq!(crate::util::header(&h, "content-type"), oci::media::DOCKER_MANIFEST);
    let b = Berth::new();
    b.ok(&["pull", "-q", &t3]);
    assert_eq!(inspect_id(&b, &t3), inspect_id(&a, "busybox"), "the docker manifest names the same config");
}

/// The pushed manifest of `reference` (`name:tag` on `addr`) and the first bytes of each layer.
fn pushed_layers(addr: &str, name: &str, tag: &str, accept: &str) -> Vec<(String, Vec<u8>)> {
    let (status, _, body) = http(addr, "GET", &format!("/v2/{name}/manifests/{tag}"), &[("Accept", accept)], b"");
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layers = m["layers"].as_array().unwrap().iter();
    layers
        .map(|l| {
            let path = format!("/v2/{name}/blobs/{}", l["digest"].as_str().unwrap());
            let (status, _, blob) = http(addr, "GET", &path, &[], b"");
            assert_eq!(status, 200);
            assert_eq!(blob.len() as u64, l["size"].as_u64().unwrap());
            (l["mediaType"].as_str().unwrap().to_owned(), blob[..2].to_vec())
        })
        .collect()
}

#[test]
fn a_loaded_docker_archive_is_pushed_with_gzip_layers_as_docker_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("reg"), &[]);
    let Some(a) = with_busybox("busybox:latest") else { return };
    let archive = dir.path().join("busybox.tar");
    a.ok(&["save", "--format", "docker", "-o", &p(&archive), "busybox"]);
    // A CI job that loads the archive another job saved, then pushes it.
    let b = Berth::new();
    b.ok(&["load", "-q", "-i", &p(&archive)]);
    let name = format!("{}/team/app:1", server.addr);
    b.ok(&["tag", "busybox", &name]);
    let (out, err) = run(&b, &["push", "--progress", "plain", &name]);
    assert!(err.contains("Compressing"), "{err}");
    let layers = pushed_layers(&server.addr, "team/app", "1", oci::media::OCI_MANIFEST);
    assert!(!layers.is_empty());
    for (media_type, head) in &layers {
        assert_eq!(media_type, oci::media::OCI_LAYER_GZIP);
        assert_eq!(head, &[0x1f, 0x8b], "a gzip stream");
    }
    // The local name now names what the registry has: its digest, and a pull is up to date.
    let pushed = out.lines().last().unwrap().rsplit(' ').next().unwrap().to_owned();
    let digests = b.ok(&["images", "--digests", "--format", "{{.Digest}}", &name]);
    assert_eq!(digests.trim(), pushed);
    let (pulled, _) = run(&b, &["pull", &name]);
    assert!(pulled.contains("Image is up to date"), "{pulled}");
    // Again, from the store as load left it: the same twins, the same manifest, nothing
    // uploaded or compressed.
    let again_name = format!("{}/team/app:again", server.addr);
    b.ok(&["tag", "busybox", &again_name]);
    let (again, err) = run(&b, &["push", "--progress", "plain", &again_name]);
    assert_eq!(again.lines().last().unwrap().rsplit(' ').next(), Some(pushed.as_str()), "the same digest");
    assert!(!err.contains("Compressing") && err.matches("Already exists").count() == 2, "{err}");
    // Pulled on a fresh runner: the same image.
    let c = Berth::new();
    c.ok(&["pull", "-q", &name]);
    assert_eq!(inspect_id(&c, &name), inspect_id(&a, "busybox"));
    // Docker schema 2 gets docker's gzip type; `uncompressed` sends the layers as stored.
    let docker = format!("{}/team/app:docker", server.addr);
    b.ok(&["tag", "busybox", &docker]);
    b.ok(&["push", "-q", "--format", "docker", &docker]);
    let layers = pushed_layers(&server.addr, "team/app", "docker", oci::media::DOCKER_MANIFEST);
    assert!(layers.iter().all(|(t, _)| t == oci::media::DOCKER_LAYER_GZIP), "{layers:?}");
    let plain = format!("{}/team/app:plain", server.addr);
    b.ok(&["tag", "busybox", &plain]);
    b.ok(&["push", "-q", "--compression-format", "uncompressed", &plain]);
    let layers = pushed_layers(&server.addr, "team/app", "plain", oci::media::OCI_MANIFEST);
    assert!(layers.iter().all(|(t, h)| t == oci::media::OCI_LAYER && h != &[0x1f, 0x8b]), "{layers:?}");
    let err = b.fails(&["push", "--format", "docker", "--compression-format", "zstd", &docker]);
    assert!(err.contains("zstd needs --format oci"), "{err}");
    // `manifest push` of an index of the loaded image compresses its layers too.
    b.ok(&["manifest", "create", "list:1", "busybox"]);
    let index = format!("{}/team/list:1", server.addr);
    b.ok(&["manifest", "push", "list:1", &index]);
    let (_, _, body) =
        http(&server.addr, "GET", "/v2/team/list/manifests/1", &[("Accept", oci::media::OCI_INDEX)], b"");
    let child = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["manifests"][0]["digest"].clone();
    let layers = pushed_layers(&server.addr, "team/list", child.as_str().unwrap(), oci::media::OCI_MANIFEST);
    assert!(layers.iter().all(|(t, h)| t == oci::media::OCI_LAYER_GZIP && h == &[0x1f, 0x8b]), "{layers:?}");
}

#[test]
fn pull_picks_a_platform_from_an_index_and_pulls_by_digest() {
    if !require_tool("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = Berth::new();
    let Some((tar, _)) = busybox_archive(&a, dir.path()) else {
        return;
    };
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run_tool(Command::new("tar").args(["-C", &p(&layout), "-xf", &p(&tar)]));
    make_multi_arch(&layout);
    let server = Server::start(&dir.path().join("reg"), &[]);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", p(&layout)),
        &format!("docker://{}/multi:all", server.addr),
    ]);
    let b = Berth::new();
    let arm = format!("{}/multi:all", server.addr);
    b.ok(&["pull", "-q", "--platform", "linux/arm64", &arm]);
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", &arm])).unwrap();
    assert_eq!(v[0]["Architecture"], "arm64");
    let err = b.fails(&["pull", "-q", "--platform", "linux/s390x", &arm]);
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    let digest = v[0]["Descriptor"]["digest"].as_str().unwrap().to_owned();
    let c = Berth::new();
    let pinned = format!("{}/multi@{digest}", server.addr);
    c.ok(&["pull", "-q", &pinned]);
    assert_eq!(inspect_id(&c, &pinned), v[0]["Id"].as_str().unwrap());

    // By tag, the host's image: docker's Digest line and repo digest are the index's.
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{arm}")]);
    let index = format!("sha256:{}", sha256_hex(raw.as_bytes()));
    let d = Berth::new();
    let out = d.ok(&["pull", &arm]);
    assert!(out.starts_with("all: Pulling from ") && out.contains(&format!("Digest: {index}\n")), "{out}");
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", &arm])).unwrap();
    assert_eq!(v[0]["Architecture"], "amd64");
    assert_eq!(v[0]["RepoDigests"], serde_json::json!([format!("{}/multi@{index}", server.addr)]), "{v}");
    let rows = d.ok(&["images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"]);
    assert_eq!(rows, format!("{}/multi all {index}\n", server.addr), "one row, the index's digest");
    // By the index's digest: in a store that has it, up to date; in a fresh one, the
    // host's image, named by the index's digest (before: refused as not the image's digest).
    let by_index = format!("{}/multi@{index}", server.addr);
    let out = d.ok(&["pull", &by_index]);
    assert!(
        out.starts_with(&format!("{index}: Pulling from ")) && out.contains("Status: Image is up to date"),
        "{out}"
    );
    let e = Berth::new();
    e.ok(&["pull", "-q", &by_index]);
    assert_eq!(inspect_id(&e, &by_index), v[0]["Id"].as_str().unwrap());
    let rows = e.ok(&["images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"]);
    assert_eq!(rows, format!("{}/multi <none> {index}\n", server.addr));
    // The tag's last name goes with its repo digest, and the image with them, as docker's.
    let out = d.ok(&["rmi", &arm]);
    assert!(out.contains(&format!("Untagged: {arm}\n")) && out.contains(&format!("Untagged: {by_index}\n")), "{out}");
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert_eq!(d.ok(&["images", "-q"]), "");
}

/// The hex SHA-256 of `bytes`, by sha256sum.
fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// CNCF distribution (Debian's docker-registry) with htpasswd auth, on a free port.
pub struct Distribution {
    child: Child,
    pub addr: String,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn distribution(dir: &Path, htpasswd: &Path) -> Option<Distribution> {
    if !require_tool("docker-registry") {
        return None;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            p(&dir.join("data")),
            p(htpasswd)
        ),
    )
    .unwrap();
    let mut child = Command::new("docker-registry")
        .args(["serve", &p(&config)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if TcpStream::connect(&addr).is_ok() {
            return Some(Distribution { child, addr });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("docker-registry did not start on {addr}");
}

pub fn login(b: &Berth, config: &Path, server: &str, user: &str, password: &str) -> std::process::Output {
    let mut child = b
        .cmd(&["login", server, "-u", user, "--password-stdin"])
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn with_docker_config(b: &Berth, config: &Path, args: &[&str]) -> std::process::Output {
    b.cmd(args).env("DOCKER_CONFIG", config).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn login_push_pull_against_cncf_distribution_with_htpasswd() {
    let dir = tempfile::tempdir().unwrap();
    let Some(htpasswd) = htpasswd_file(dir.path()) else {
        return;
    };
    let Some(dist) = distribution(dir.path(), &htpasswd) else {
        return;
    };
    let name = format!("{}/team/busybox:1", dist.addr);
    let Some(a) = with_busybox(&name) else { return };
    let config = dir.path().join("docker");
    let out = login(&a, &config, &dist.addr, "alice", "wrong");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("authentication to") && err.contains("failed"), "{err}");
    assert!(!config.join("config.json").exists(), "a failed login saves nothing");
    let out = login(&a, &config, &dist.addr, "alice", "s3cret");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Login Succeeded");
    let saved = std::fs::read_to_string(config.join("config.json")).unwrap();
    assert!(saved.contains(&dist.addr) && saved.contains("\"auth\""), "{saved}");
    // A bare `login HOST` (no terminal to prompt on) checks the saved credentials, as docker's.
    let out = with_docker_config(&a, &config, &["login", &dist.addr]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Authenticating with existing credentials...\nLogin Succeeded\n");
    let out = with_docker_config(&a, &config, &["push", "-q", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = Berth::new();
    let out = with_docker_config(&b, &config, &["pull", "-q", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(inspect_id(&b, &name), inspect_id(&a, "busybox"));
    let out = with_docker_config(&b, &config, &["logout", &dist.addr]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("Removing login credentials for {}", dist.addr));
    let out = with_docker_config(&b, &config, &["pull", "-q", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("berth login"), "tells the user what to do: {err}");
}

#[test]
fn login_push_pull_with_berth_bearer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let Some(htpasswd) = htpasswd_file(dir.path()) else {
        return;
    };
    let server = Server::start(
        &dir.path().join("reg"),
        &["--auth", "token", "--token-realm", "auto", "--htpasswd", &p(&htpasswd)],
    );
    let name = format!("{}/team/busybox:1", server.addr);
    let Some(a) = with_busybox(&name) else { return };
    let config = dir.path().join("docker");
    assert!(!login(&a, &config, &server.addr, "alice", "nope").status.success());
    assert!(login(&a, &config, &server.addr, "alice", "s3cret").status.success());
    let out = with_docker_config(&a, &config, &["push", "-q", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = Berth::new();
    let out = with_docker_config(&b, &config, &["pull", "-q", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(inspect_id(&b, &name), inspect_id(&a, "busybox"));
    // A second repository: the mount needs a token for both repositories.
    let second = format!("{}/team/copy:1", server.addr);
    a.ok(&["tag", "busybox", &second]);
    let out = with_docker_config(&a, &config, &["push", "--progress", "plain", &second]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Mounted from team/busybox"));
}

#[test]
fn push_refuses_an_image_id_and_a_pulled_digest_name_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("reg"), &[]);
    let name = format!("{}/app:1", server.addr);
    let Some(a) = with_busybox(&name) else { return };
    let id = inspect_id(&a, "busybox");
    let err = a.fails(&["push", &id[7..19]]);
    assert!(err.contains("not a name to push to"), "{err}");
    let digest = a.ok(&["push", "-q", &name]);
    let b = Berth::new();
    let pinned = format!("{}/app@{}", server.addr, digest.trim());
    b.ok(&["pull", "-q", &pinned]);
    assert_eq!(inspect_id(&b, &pinned), id);
    // What was pulled from app can be mounted into another repository.
    let other = format!("{}/other:1", server.addr);
    b.ok(&["tag", &pinned, &other]);
    let (_, err) = run(&b, &["push", "--progress", "plain", &other]);
    assert_eq!(err.matches("Mounted from app").count(), 2, "{err}");
}

/// A TCP proxy that cuts one connection once: an upload after `after` bytes of a PATCH,
/// or a download after `after` bytes of a blob GET response; `always` cuts every one.
struct Flaky {
    addr: String,
    cuts: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Cut {
    Upload,
    Download,
}

/// One connection's cutting rule, shared by its two directions.
#[derive(Clone)]
struct Cutter {
    cut: Cut,
    after: usize,
    always: bool,
    fired: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    /// The request now on the connection is the kind being cut.
    armed: Arc<AtomicBool>,
}

impl Cutter {
    /// Copies `from` to `to`. The client-to-server side (`upstream`) watches request heads;
    /// the side being cut forwards half of the chunk that crosses `after` and drops both.
    fn pump(&self, mut from: TcpStream, mut to: TcpStream, upstream: bool) {
        let mut buf = [0u8; 65536];
        let mut moved = 0;
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if upstream {
                let head = &buf[..n.min(64)];
                if head.starts_with(b"PATCH ") || head.starts_with(b"GET ") {
                    let blob_get = head.starts_with(b"GET ") && String::from_utf8_lossy(head).contains("/blobs/sha256");
                    let wanted = match self.cut {
                        Cut::Upload => head.starts_with(b"PATCH "),
                        Cut::Download => blob_get,
                    };
                    self.armed.store(wanted, Ordering::SeqCst);
                    moved = 0;
                }
            }
            let cutting_here = (self.cut == Cut::Upload) == upstream;
            if cutting_here && self.armed.load(Ordering::SeqCst) && (self.always || !self.fired.load(Ordering::SeqCst))
            {
                moved += n;
                if moved > self.after {
                    self.fired.store(true, Ordering::SeqCst);
                    self.cuts.fetch_add(1, Ordering::SeqCst);
                    let _ = to.write_all(&buf[..n / 2]);
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }
}

fn flaky(upstream: String, cut: Cut, after: usize, always: bool) -> Flaky {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cuts = Arc::new(AtomicUsize::new(0));
    let fired = Arc::new(AtomicBool::new(false));
    let shared = cuts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(500) {
            let Ok(client) = conn else { break };
            let Ok(server) = TcpStream::connect(&upstream) else { break };
            let cutter = Cutter {
                cut,
                after,
                always,
                fired: fired.clone(),
                cuts: shared.clone(),
                armed: Arc::new(AtomicBool::new(false)),
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = cutter.clone();
            std::thread::spawn(move || up.pump(c2, s2, true));
            std::thread::spawn(move || cutter.pump(server, client, false));
        }
    });
    Flaky { addr, cuts }
}

/// A store holding a 30 MB single-layer image named `name` (big enough for chunked pushes).
fn big_image(name: &str) -> Berth {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 30_000_000];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(dir.path().join("noise"), &data).unwrap();
    let tar = dir.path().join("r.tar");
    run_tool(Command::new("tar").args(["-C", &p(dir.path()), "-cf", &p(&tar), "noise"]));
    b.ok(&["import", &p(&tar), name]);
    b
}

#[test]
fn an_interrupted_push_resumes_from_the_servers_offset() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("reg"), &[]);
    let proxy = flaky(server.addr.clone(), Cut::Upload, 4_000_000, false);
    let name = format!("{}/big:1", proxy.addr);
    let a = big_image(&name);
    let (_, err) = run(&a, &["push", "--progress", "plain", &name]);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy cut the upload once");
    assert!(err.contains("retrying"), "{err}");
    let b = Berth::new();
    let direct = format!("{}/big:1", server.addr);
    b.ok(&["pull", "-q", &direct]);
    assert_eq!(inspect_id(&b, &direct), inspect_id(&a, &name), "the resumed blob is whole and verified");
}

#[test]
fn an_interrupted_pull_resumes_and_a_failed_one_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("reg"), &[]);
    let direct = format!("{}/big:1", server.addr);
    let a = big_image(&direct);
    a.ok(&["push", "-q", &direct]);
    let proxy = flaky(server.addr.clone(), Cut::Download, 5_000_000, false);
    let via = format!("{}/big:1", proxy.addr);
    let b = Berth::new();
    let (_, err) = run(&b, &["pull", "--progress", "plain", &via]);
    assert!(proxy.cuts.load(Ordering::SeqCst) >= 1);
    assert!(err.contains("retrying"), "{err}");
    assert_eq!(inspect_id(&b, &via), inspect_id(&a, &direct));

    let dead = flaky(server.addr.clone(), Cut::Download, 1_000_000, true);
    let c = Berth::new();
    let err = c.fails(&["pull", "-q", &format!("{}/big:1", dead.addr)]);
    assert!(err.contains("pull"), "{err}");
    assert_eq!(c.ok(&["images", "-q"]), "", "no image is named");
    let layers: Vec<_> = std::fs::read_dir(c.root.path().join("content/blobs/sha256"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().metadata().unwrap().len() > 1_000_000)
        .collect();
    assert!(layers.is_empty(), "no partial layer is stored under a digest");
    assert_eq!(std::fs::read_dir(c.root.path().join("content/ingest")).unwrap().count(), 0, "no ingest left behind");
}

/// `push -a`: every tag of the repository, none of another; a tag with -a is refused.
#[test]
fn push_all_tags_sends_every_tag_of_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("reg"), &[]);
    let repo = format!("{}/team/app", server.addr);
    let Some(a) = with_busybox(&format!("{repo}:1")) else { return };
    a.ok(&["tag", "busybox", &format!("{repo}:2")]);
    a.ok(&["tag", "busybox", &format!("{}/team/other:1", server.addr)]);
    let out = a.ok(&["push", "-a", "-q", &repo]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (status, _, body) = http(&server.addr, "GET", "/v2/team/app/tags/list", &[], b"");
    assert_eq!(status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1", "2"]));
    let (status, _, _) = http(&server.addr, "GET", "/v2/team/other/tags/list", &[], b"");
    assert_eq!(status, 404, "another repository is not pushed");
    assert!(a.fails(&["push", "--all-tags", &format!("{repo}:1")]).contains("tag can't be used with --all-tags/-a"));
    // docker's `manifest inspect` asks the registry, the idiom for "does this tag exist".
    let fresh = Berth::new();
    let doc: serde_json::Value =
        serde_json::from_str(&fresh.ok(&["manifest", "inspect", &format!("{repo}:2")])).unwrap();
    assert_eq!(doc["schemaVersion"], 2, "{doc}");
    assert!(doc["layers"].as_array().is_some_and(|l| !l.is_empty()), "{doc}");
    let err = fresh.fails(&["manifest", "inspect", &format!("{repo}:3")]);
    assert!(err.contains(&format!("no such manifest: {repo}:3")), "{err}");
}
