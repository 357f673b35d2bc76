//! `berth registry serve` with real clients: skopeo over plain HTTP, basic auth, bearer
//! tokens and TLS; multi-arch indexes; two processes on one root; a killed server.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{busybox_layout, header, http, p, read_response, require_tool, run_tool, Berth, Server};

/// A busybox image saved as an OCI archive, and its image ID.
pub(crate) fn busybox_archive(b: &Berth, dir: &Path) -> Option<(PathBuf, String)> {
    if !b.busybox("busybox:latest") {
        return None;
    }
    let tar = dir.join("bb.tar");
    b.ok(&["save", "--format", "oci", "-o", &p(&tar), "busybox"]);
    let id = serde_json::from_str::<serde_json::Value>(&b.ok(&["inspect", "busybox"])).unwrap()[0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    Some((tar, id))
}

/// Copies an OCI archive to a plain-HTTP registry with skopeo (`image` is `docker://...`).
fn push_archive(tar: &Path, image: &str) {
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(tar)), image]);
}

pub(crate) fn skopeo(args: &[&str]) -> String {
    run_tool(Command::new("skopeo").args(args))
}

/// Pulls `image` back with skopeo into a fresh store and returns the loaded image's ID.
fn pull_back(image: &str, tls: &[&str], dir: &Path) -> String {
    let out = dir.join(format!("pulled-{}", uuid_like()));
    let mut args = vec!["copy"];
    args.extend_from_slice(tls);
    let dest = format!("oci:{}:x", p(&out));
    args.extend([image, dest.as_str()]);
    skopeo(&args);
    let c = Berth::new();
    c.ok(&["load", "-i", &p(&out)]);
    c.ok(&["images", "-q", "--no-trunc"]).trim().to_owned()
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[test]
fn skopeo_pushes_and_pulls_over_plain_http() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some((tar, id)) = busybox_archive(&b, dir.path()) else {
        return;
    };
    let server = Server::start(&dir.path().join("registry"), &[]);
    let image = format!("docker://{}/library/busybox:1.35", server.addr);
    push_archive(&tar, &image);
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &image])).unwrap();
    assert_eq!(inspect["RepoTags"], serde_json::json!(["1.35"]));
    assert_eq!(pull_back(&image, &["--src-tls-verify=false"], dir.path()), id);
    let (status, _, body) = http(&server.addr, "GET", "/v2/_catalog", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["repositories"],
        serde_json::json!(["library/busybox"])
    );
}

#[test]
fn skopeo_and_berth_pull_through_a_mirror_and_push_beside_it() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some((tar, id)) = busybox_archive(&b, dir.path()) else {
        return;
    };
    let upstream = Server::start(&dir.path().join("upstream"), &[]);
    push_archive(&tar, &format!("docker://{}/library/busybox:1.35", upstream.addr));
    let mirror_flag = format!("hub=http://{}", upstream.addr);
    let mirror = Server::start(&dir.path().join("mirror"), &["--mirror", &mirror_flag]);
    let through = format!("docker://{}/hub/library/busybox:1.35", mirror.addr);
    assert_eq!(pull_back(&through, &["--src-tls-verify=false"], dir.path()), id, "skopeo through the mirror");
    let c = Berth::new();
    c.ok(&["pull", &format!("{}/hub/library/busybox:1.35", mirror.addr)]);
    let pulled = c.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(pulled.trim(), id, "berth pull through the mirror");
    let beside = format!("docker://{}/team/busybox:1", mirror.addr);
    push_archive(&tar, &beside);
    // While the upstream answers: a blob pushed beside the mirror is not the mirrored
    // repository's (the upstream has no library/mine), so skopeo goes on to upload it.
    let into = format!("docker://{}/hub/library/mine:1", mirror.addr);
    let refused = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", p(&tar)), &into])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "no push into the mirrored prefix");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("mirrored from"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    drop(upstream);
    let again = Berth::new();
    again.ok(&["pull", &format!("{}/hub/library/busybox:1.35", mirror.addr)]);
    assert_eq!(again.ok(&["images", "-q", "--no-trunc"]).trim(), id, "served from storage with the upstream gone");
}

#[test]
fn a_mirror_of_cncf_distribution_with_htpasswd_uses_its_credentials() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(htpasswd) = htpasswd_file(dir.path()) else { return };
    let Some(dist) = crate::client::distribution(dir.path(), &htpasswd) else { return };
    let Some((tar, id)) = busybox_archive(&b, dir.path()) else { return };
    let upstream_image = format!("docker://{}/library/busybox:1.35", dist.addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &format!("oci-archive:{}", p(&tar)),
        &upstream_image,
    ]);
    let password = dir.path().join("dist.pass");
    std::fs::write(&password, "s3cret\n").unwrap();
    let config = dir.path().join("mirror.toml");
    let entry = |prefix: &str, file: &Path| {
        format!("[[mirror]]\nprefix = \"{prefix}\"\nurl = \"http://{}\"\nusername = \"alice\"\npassword_file = \"{}\"\ntimeout = \"5s\"\n", dist.addr, p(file))
    };
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "nope").unwrap();
    std::fs::write(&config, format!("{}\n{}", entry("dist", &password), entry("bad", &wrong))).unwrap();
    let mirror = Server::start(&dir.path().join("mirror"), &["-c", &p(&config)]);
    let through = format!("docker://{}/dist/library/busybox:1.35", mirror.addr);
    assert_eq!(pull_back(&through, &["--src-tls-verify=false"], dir.path()), id, "through the htpasswd upstream");
    let (status, _, body) = http(
        &mirror.addr,
        "GET",
        "/v2/bad/library/busybox/manifests/1.35",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(status, 503, "wrong upstream credentials: {}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("UNAVAILABLE"));
}

/// A containerd of the test's own (its socket, root and state in `dir`), stopped on drop.
struct Containerd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn containerd(dir: &Path) -> Option<Containerd> {
    if !require_tool("containerd") || !require_tool("ctr") {
        return None;
    }
    if !rustix::process::geteuid().is_root() {
        assert!(!crate::util::strict(), "the containerd test needs root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: containerd needs root");
        return None;
    }
    let socket = dir.join("containerd.sock");
    let config = dir.join("containerd.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n",
            p(&dir.join("root")),
            p(&dir.join("state")),
            p(&socket)
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ctd = Containerd { child, socket };
    for _ in 0..100 {
        let up = Command::new("ctr").arg("--address").arg(&ctd.socket).arg("version").output().unwrap();
        if up.status.success() {
            return Some(ctd);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("containerd did not start: {}", std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default());
}

#[test]
fn containerd_pulls_docker_hub_names_through_berth_as_its_mirror() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(ctd) = containerd(dir.path()) else { return };
    let Some((tar, _)) = busybox_archive(&b, dir.path()) else { return };
    // The upstream stands in for Docker Hub; berth mirrors it at the root, as containerd asks.
    let upstream = Server::start(&dir.path().join("upstream"), &[]);
    push_archive(&tar, &format!("docker://{}/library/busybox:1.35", upstream.addr));
    let mirror = Server::start(&dir.path().join("mirror"), &["--mirror", &format!("http://{}", upstream.addr)]);
    let hosts = dir.path().join("certs.d/docker.io");
    std::fs::create_dir_all(&hosts).unwrap();
    std::fs::write(
        hosts.join("hosts.toml"),
        format!("server = \"https://registry-1.docker.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", mirror.addr),
    )
    .unwrap();
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&ctd.socket)
        .args(["images", "pull", "--hosts-dir"])
        .arg(dir.path().join("certs.d"))
        .arg("docker.io/library/busybox:1.35")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr pull: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = Command::new("ctr").arg("--address").arg(&ctd.socket).args(["images", "ls", "-q"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("docker.io/library/busybox:1.35"));
    let (_, _, metrics) = http(&mirror.addr, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let misses = metrics.lines().find(|l| l.starts_with("berth_mirror_misses_total")).unwrap_or_default();
    assert!(!misses.ends_with(" 0"), "the pull went through the mirror: {misses}");
}

pub(crate) fn htpasswd_file(dir: &Path) -> Option<PathBuf> {
    if !require_tool("htpasswd") {
        return None;
    }
    let out = run_tool(Command::new("htpasswd").args(["-Bbn", "alice", "s3cret"]));
    let path = dir.join("htpasswd");
    std::fs::write(&path, out).unwrap();
    Some(path)
}

/// Starts a registry with `--auth MODE`, checks that a wrong password is refused and the
/// right one pushes and pulls the busybox image; `check` sees the server first.
fn skopeo_auth_round_trip(mode: &str, check: impl FnOnce(&Server)) {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(htpasswd) = htpasswd_file(dir.path()) else { return };
    let Some((tar, id)) = busybox_archive(&b, dir.path()) else { return };
    let server = Server::start(
        &dir.path().join("registry"),
        &["--auth", mode, "--token-realm", "auto", "--htpasswd", &p(&htpasswd)],
    );
    check(&server);
    let image = format!("docker://{}/team/busybox:1", server.addr);
    let src = format!("oci-archive:{}", p(&tar));
    let wrong = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", "alice:wrong", &src, &image])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(err.contains("unauthorized") || err.contains("invalid username or password"), "{err}");
    skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret", &src, &image]);
    assert_eq!(pull_back(&image, &["--src-tls-verify=false", "--src-creds", "alice:s3cret"], dir.path()), id);
}

#[test]
fn skopeo_with_basic_auth_and_a_wrong_password() {
    skopeo_auth_round_trip("htpasswd", |_| {});
}

#[test]
fn skopeo_with_bearer_tokens() {
    skopeo_auth_round_trip("token", |server| {
        let (status, headers, _) = http(&server.addr, "GET", "/v2/", &[], b"");
        assert_eq!(status, 401);
        let realm = format!("Bearer realm=\"http://{}/token\"", server.addr);
        assert!(header(&headers, "www-authenticate").starts_with(&realm));
    });
}

#[test]
fn token_auth_takes_its_realm_from_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let Some(htpasswd) = htpasswd_file(dir.path()) else { return };
    let root = dir.path().join("registry");
    let base = ["registry", "serve", "--addr", "127.0.0.1:0", "--auth", "token", "--htpasswd", &p(&htpasswd)];
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(base).arg("--root").arg(&root).output().unwrap();
    assert!(!out.status.success(), "token auth without a realm must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-realm") && err.contains("auto"), "says how to set the realm: {err}");
    let realm = "https://registry.example.com/token";
    let server = Server::start(&root, &["--auth", "token", "--htpasswd", &p(&htpasswd), "--token-realm", realm]);
    let (status, headers, _) = http(&server.addr, "GET", "/v2/", &[], b"");
    assert_eq!(status, 401);
    let challenge = header(&headers, "www-authenticate");
    assert!(challenge.starts_with(&format!("Bearer realm=\"{realm}\"")), "the configured realm, not Host: {challenge}");
}

#[test]
fn metrics_can_move_to_their_own_address() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["registry", "serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--root"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr_after = |prefix: &str| {
        let line = lines.next().unwrap().unwrap();
        line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?}")).to_owned()
    };
    let (api, metrics) = (addr_after("listening on "), addr_after("metrics on "));
    assert_eq!(http(&api, "GET", "/v2/", &[], b"").0, 200);
    assert_eq!(http(&api, "GET", "/metrics", &[], b"").0, 404, "not on the registry's address");
    let (status, _, body) = http(&metrics, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("route=\"base\""), "counts the API's requests");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_web_ui_is_served_under_the_root_unless_no_ui() {
    let dir = tempfile::tempdir().unwrap();
    let on = Server::start(dir.path(), &[]);
    let (status, _, body) = http(&on.addr, "GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("<h1>Repositories</h1>"), "the UI's first page");
    assert_eq!(http(&on.addr, "GET", "/static/ui.css", &[], b"").0, 200, "assets are in the binary");
    let off = Server::start(dir.path(), &["--no-ui"]);
    assert_eq!(http(&off.addr, "GET", "/", &[], b"").0, 404);
    assert_eq!(http(&off.addr, "GET", "/v2/", &[], b"").0, 200, "the API stays");
}

#[test]
fn skopeo_over_tls_with_a_verified_certificate() {
    if !require_tool("skopeo") || !require_tool("openssl") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some((tar, id)) = busybox_archive(&b, dir.path()) else {
        return;
    };
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let (crt, key) = (certs.join("ca.crt"), dir.path().join("tls.key"));
    run_tool(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        &p(&key),
        "-out",
        &p(&crt),
    ]));
    let server = Server::start(&dir.path().join("registry"), &["--tls-cert", &p(&crt), "--tls-key", &p(&key)]);
    let image = format!("docker://{}/secure/busybox:1", server.addr);
    let cert_dir = format!("--dest-cert-dir={}", p(&certs));
    skopeo(&["copy", &cert_dir, &format!("oci-archive:{}", p(&tar)), &image]);
    let src_cert_dir = format!("--src-cert-dir={}", p(&certs));
    assert_eq!(pull_back(&image, &[&src_cert_dir], dir.path()), id);
    // Without the CA, verification fails: the server really speaks TLS with that certificate.
    let unverified = Command::new("skopeo").args(["inspect", &image]).output().unwrap();
    assert!(!unverified.status.success());
}

#[test]
fn skopeo_copies_a_multi_arch_index() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(layout) = busybox_layout(&b, dir.path()) else {
        return;
    };
    make_multi_arch(&layout);
    let server = Server::start(&dir.path().join("registry"), &[]);
    let image = format!("docker://{}/multi/busybox:all", server.addr);
    skopeo(&["copy", "--all", "--dest-tls-verify=false", &format!("oci:{}:multi", p(&layout)), &image]);
    let raw: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &image])).unwrap();
    let archs: Vec<&str> =
        raw["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    let out = dir.path().join("back");
    skopeo(&["copy", "--all", "--src-tls-verify=false", &image, &format!("oci:{}:back", p(&out))]);
    // Each platform's manifest is served by digest too.
    for m in raw["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        let (status, _, _) = http(&server.addr, "GET", &format!("/v2/multi/busybox/manifests/{d}"), &[], b"");
        assert_eq!(status, 200);
    }
}

#[test]
fn skopeo_pushes_a_referrer_and_the_referrers_api_lists_it() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(layout) = busybox_layout(&b, dir.path()) else {
        return;
    };
    let (subject, sbom) = add_sbom_referrer(&layout);
    let server = Server::start(&dir.path().join("registry"), &[]);
    let repo = format!("{}/app/busybox", server.addr);
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:latest", p(&layout)), &format!("docker://{repo}:1")]);
    // --preserve-digests: skopeo must push the artifact byte for byte, subject included.
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:sbom", p(&layout)),
        &format!("docker://{repo}:sbom"),
    ]);
    let path = format!("/v2/app/busybox/referrers/{subject}");
    let (status, headers, body) = http(&server.addr, "GET", &path, &[], b"");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), oci::media::OCI_INDEX);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["manifests"][0]["digest"], sbom.as_str(), "{listed}");
    assert_eq!(listed["manifests"][0]["artifactType"], "application/spdx+json");
    let (_, _, body) = http(&server.addr, "GET", &format!("{path}?artifactType=application/vnd.example"), &[], b"");
    let filtered: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(filtered["manifests"], serde_json::json!([]), "the artifactType filter applies");
    // And skopeo pulls the referrer back unchanged.
    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{repo}@{sbom}"),
        &format!("oci:{}:sbom", p(&back)),
    ]);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], sbom.as_str());
}

/// Adds an SBOM artifact (empty config, one JSON layer) whose subject is the layout's image,
/// tagged `sbom`; returns the subject's digest and the artifact's.
fn add_sbom_referrer(layout: &Path) -> (String, String) {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let subject = index["manifests"][0].clone();
    let put = |bytes: &[u8]| {
        let d = oci::Digest::of(bytes);
        std::fs::write(layout.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        d.to_string()
    };
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"busybox"}"#;
    let artifact = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::media::OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": put(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": put(sbom), "size": sbom.len()}],
        "subject": {"mediaType": subject["mediaType"], "digest": subject["digest"], "size": subject["size"]},
    });
    let bytes = serde_json::to_vec(&artifact).unwrap();
    let digest = put(&bytes);
    index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": oci::media::OCI_MANIFEST, "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "sbom"},
    }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    (subject["digest"].as_str().unwrap().to_owned(), digest)
}

/// Adds an arm64 twin of the layout's image and an index of both, tagged `multi`.
pub(crate) fn make_multi_arch(layout: &Path) {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"][0].clone();
    let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let put = |bytes: &[u8]| {
        let d = oci::Digest::of(bytes);
        std::fs::write(layout.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        d.to_string()
    };
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(desc["digest"].as_str().unwrap())).unwrap()).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap()).unwrap();
    config["architecture"] = "arm64".into();
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put(&config).into();
    manifest["config"]["size"] = config.len().into();
    let arm = serde_json::to_vec(&manifest).unwrap();
    let arm_d = put(&arm);
    let idx = serde_json::json!({"schemaVersion": 2, "mediaType": oci::media::OCI_INDEX, "manifests": [
        {"mediaType": oci::media::OCI_MANIFEST, "digest": desc["digest"], "size": desc["size"], "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": oci::media::OCI_MANIFEST, "digest": arm_d, "size": arm.len(), "platform": {"architecture": "arm64", "os": "linux"}},
    ]});
    let idx = serde_json::to_vec(&idx).unwrap();
    let idx_d = put(&idx);
    let top = serde_json::json!({"schemaVersion": 2, "mediaType": oci::media::OCI_INDEX, "manifests": [
        {"mediaType": oci::media::OCI_INDEX, "digest": idx_d, "size": idx.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}},
    ]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
}

#[test]
fn two_processes_on_one_root_serve_each_others_pushes() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some((tar, id)) = busybox_archive(&b, dir.path()) else {
        return;
    };
    let root = dir.path().join("registry");
    let (a, c) = (Server::start(&root, &[]), Server::start(&root, &[]));
    push_archive(&tar, &format!("docker://{}/shared/bb:1", a.addr));
    assert_eq!(pull_back(&format!("docker://{}/shared/bb:1", c.addr), &["--src-tls-verify=false"], dir.path()), id);
}

#[test]
fn upload_resumes_after_the_server_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let (first, rest) = data.split_at(1_234_567);
    let server = Server::start(&root, &[]);
    let (status, h, _) = http(&server.addr, "POST", "/v2/resume/blobs/uploads/", &[], b"");
    assert_eq!(status, 202);
    let loc = header(&h, "location").to_owned();
    let range = format!("0-{}", first.len() - 1);
    let (status, _, _) = http(&server.addr, "PATCH", &loc, &[("Content-Range", &range)], first);
    assert_eq!(status, 202);
    server.signal("KILL");
    drop(server);
    let server = Server::start(&root, &[]);
    let (status, h, _) = http(&server.addr, "GET", &loc, &[], b"");
    assert_eq!((status, header(&h, "range")), (204, range.as_str()));
    let next = format!("{}-{}", first.len(), data.len() - 1);
    let (status, _, _) = http(&server.addr, "PATCH", &loc, &[("Content-Range", &next)], rest);
    assert_eq!(status, 202);
    let d = oci::Digest::of(&data);
    let (status, _, body) = http(&server.addr, "PUT", &format!("{loc}?digest={d}"), &[], b"");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = http(&server.addr, "GET", &format!("/v2/resume/blobs/{d}"), &[], b"");
    assert_eq!(status, 200);
    assert!(body == data, "the blob is whole and exact");
}

#[test]
fn sigterm_finishes_the_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let (_, h, _) = http(&server.addr, "POST", "/v2/g/blobs/uploads/", &[], b"");
    let loc = header(&h, "location").to_owned();
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "PATCH {loc} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\nhello").unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b"world").unwrap();
    let (status, h, _) = read_response(&mut s);
    assert_eq!((status, header(&h, "range")), (202, "0-9"));
    let mut server = server;
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
}

#[test]
fn registry_gc_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    let server = Server::start(&root, &[]);
    let d = oci::Digest::of(b"orphan");
    let (status, _, _) = http(&server.addr, "POST", &format!("/v2/o/blobs/uploads/?digest={d}"), &[], b"orphan");
    assert_eq!(status, 201);
    drop(server);
    let b = Berth::new();
    let out = b.ok(&["registry", "gc", "--root", &p(&root), "--dry-run", "--grace", "0s"]);
    assert!(out.contains(&format!("would delete blob {d}")), "{out}");
    let out = b.ok(&["registry", "gc", "--root", &p(&root), "--grace", "0s"]);
    assert!(out.contains("0 manifests, 1 blobs"), "{out}");
    let out = b.ok(&["registry", "gc", "--root", &p(&root), "--grace", "0s"]);
    assert!(out.contains("0 manifests, 0 blobs"), "{out}");
    // An upload left behind is purged once it is older than --upload-age.
    let server = Server::start(&root, &[]);
    let (status, _, _) = http(&server.addr, "POST", "/v2/o/blobs/uploads/", &[], b"");
    assert_eq!(status, 202);
    drop(server);
    let out = b.ok(&["registry", "gc", "--root", &p(&root)]);
    assert!(out.contains("and 0 abandoned uploads"), "a fresh upload is kept: {out}");
    let out = b.ok(&["registry", "gc", "--root", &p(&root), "--upload-age", "0s"]);
    assert!(out.contains("deleted upload o/") && out.contains("and 1 abandoned uploads"), "{out}");
}

/// Pushes a one-layer image over plain HTTP as `repo:tag`; returns the manifest's and the
/// layer's digests.
fn push_tiny_image(addr: &str, repo: &str, tag: &str) -> (String, String) {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    let mut digests = vec![];
    for blob in [&config[..], &layer[..]] {
        let d = oci::Digest::of(blob).to_string();
        let (status, _, body) = http(addr, "POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], blob);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        digests.push(d);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::media::OCI_MANIFEST,
        "config": {"mediaType": oci::media::OCI_CONFIG, "digest": digests[0], "size": config.len()},
        "layers": [{"mediaType": oci::media::OCI_LAYER_GZIP, "digest": digests[1], "size": layer.len()}],
    });
    let ct = [("Content-Type", oci::media::OCI_MANIFEST)];
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let (status, h, body) = http(addr, "PUT", &format!("/v2/{repo}/manifests/{tag}"), &ct, &bytes);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    (header(&h, "docker-content-digest").to_owned(), digests.swap_remove(1))
}

/// The requests of the attack: the tag, the manifest by digest, and its layer.
fn delete_paths(repo: &str, tag: &str, manifest: &str, layer: &str) -> [String; 3] {
    [
        format!("/v2/{repo}/manifests/{tag}"),
        format!("/v2/{repo}/manifests/{manifest}"),
        format!("/v2/{repo}/blobs/{layer}"),
    ]
}

/// The attack that worked before: a registry started with no flags took anonymous DELETEs of
/// manifests, tags and blobs (202). Now it answers as distribution does with
/// `storage.delete.enabled` unset, and everything is still there.
#[test]
fn anonymous_deletes_are_refused_by_default_and_delete_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let (manifest, layer) = push_tiny_image(&server.addr, "victim/app", "1.0");
    for path in delete_paths("victim/app", "1.0", &manifest, &layer) {
        let (status, _, body) = http(&server.addr, "DELETE", &path, &[], b"");
        assert_eq!(status, 405, "DELETE {path}: {}", String::from_utf8_lossy(&body));
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(err["errors"][0]["code"], "UNSUPPORTED", "DELETE {path}");
        assert_eq!(err["errors"][0]["message"], "The operation is unsupported.", "DELETE {path}");
    }
    for path in ["/v2/victim/app/manifests/1.0".to_owned(), format!("/v2/victim/app/manifests/{manifest}")] {
        let (status, _, _) = http(&server.addr, "GET", &path, &[("Accept", oci::media::OCI_MANIFEST)], b"");
        assert_eq!(status, 200, "{path} is still there");
    }
    let (status, _, body) = http(&server.addr, "GET", &format!("/v2/victim/app/blobs/{layer}"), &[], b"");
    assert_eq!((status, body), (200, b"layer of victim/app:1.0".to_vec()), "the layer is still there");
    // Cancelling one's own upload is not a delete of content, and stays allowed.
    let (status, h, _) = http(&server.addr, "POST", "/v2/victim/app/blobs/uploads/", &[], b"");
    assert_eq!(status, 202);
    let (status, _, _) = http(&server.addr, "DELETE", header(&h, "location"), &[], b"");
    assert_eq!(status, 204, "an upload can be cancelled");
}

/// `--delete-enabled` (and its config spelling `storage.delete.enabled`) turns the API's
/// deletes on: the same requests are accepted and the content goes.
#[test]
fn delete_enabled_lets_clients_delete_manifests_tags_and_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("registry.toml");
    std::fs::write(&config, "[storage.delete]\nenabled = true\n").unwrap();
    let by_flag = ["--delete-enabled"];
    let by_file = ["-c", &p(&config)];
    for (i, extra) in [&by_flag[..], &by_file[..]].into_iter().enumerate() {
        let server = Server::start(&dir.path().join(format!("registry-{i}")), extra);
        let (manifest, layer) = push_tiny_image(&server.addr, "team/app", "1.0");
        // The tag first (the manifest stays under its digest), then the manifest, then a blob.
        for path in delete_paths("team/app", "1.0", &manifest, &layer) {
            let (status, _, body) = http(&server.addr, "DELETE", &path, &[], b"");
            assert_eq!(status, 202, "{extra:?} DELETE {path}: {}", String::from_utf8_lossy(&body));
        }
        let (status, _, _) = http(&server.addr, "GET", "/v2/team/app/manifests/1.0", &[], b"");
        assert_eq!(status, 404, "{extra:?}: the tag is gone");
        let (status, _, _) = http(&server.addr, "GET", &format!("/v2/team/app/manifests/{manifest}"), &[], b"");
        assert_eq!(status, 404, "{extra:?}: the manifest is gone");
        let (status, _, _) = http(&server.addr, "GET", &format!("/v2/team/app/blobs/{layer}"), &[], b"");
        assert_eq!(status, 404, "{extra:?}: the layer is gone from the repository");
    }
}
