//! Helpers shared by the integration tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// True when CI asked for every test to run: missing tools are failures, not skips.
pub fn strict() -> bool {
    std::env::var("BERTH_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// Returns whether `tool` is on PATH; without it, skips (or, when strict, fails) the test.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(!strict(), "{tool} is required (BERTH_TEST_STRICT=1): run ./setup --deps");
        eprintln!("skipping: {tool} is not installed (run ./setup --deps)");
    }
    found
}

/// The repository root (fixtures/ and friends live there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_owned()
}

/// A berth with its own empty image store, removed when dropped.
pub struct Berth {
    pub root: tempfile::TempDir,
}

impl Berth {
    pub fn new() -> Self {
        Berth { root: tempfile::tempdir().expect("temp dir") }
    }

    /// A `berth` command on this store.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.env("BERTH_ROOT", self.root.path()).env_remove("SOURCE_DATE_EPOCH").args(args);
        c
    }

    /// Runs berth and returns its output, whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().expect("run berth")
    }

    /// Runs berth, asserts success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs berth, asserts failure with one line on stderr, and returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(!out.status.success(), "berth {args:?} should have failed");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(err.lines().count(), 1, "one clear line expected, got: {err}");
        assert!(err.starts_with("berth: "), "{err}");
        err
    }

    /// Imports a small rootfs (one file) as `name`; returns the image ID line.
    pub fn import_tiny(&self, name: &str, content: &str) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let tar = tarball(dir.path(), "etc/motd", content, "");
        self.ok(&["import", &tar.to_string_lossy(), name]).trim().to_owned()
    }

    /// Makes the busybox base image with the fixture script, if busybox-static is there.
    pub fn busybox(&self, name: &str) -> bool {
        if !Path::new("/bin/busybox").exists() || !is_static("/bin/busybox") {
            assert!(!strict(), "busybox-static is required (BERTH_TEST_STRICT=1): run ./setup --deps");
            eprintln!("skipping: busybox-static is not installed (run ./setup --deps)");
            return false;
        }
        let out = Command::new(repo_root().join("fixtures/make-busybox-image"))
            .arg(name)
            .env("BERTH", env!("CARGO_BIN_EXE_berth"))
            .env("BERTH_ROOT", self.root.path())
            .output()
            .expect("run fixtures/make-busybox-image");
        assert!(out.status.success(), "make-busybox-image: {}", String::from_utf8_lossy(&out.stderr));
        true
    }
}

fn is_static(path: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("file -b {path} 2>/dev/null | grep -q static || ! ldd {path} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// A tarball `dir/rootfs.tar` (with `tar` flags such as `z`) holding one file `path`.
pub fn tarball(dir: &Path, path: &str, content: &str, flags: &str) -> PathBuf {
    let tree = dir.join("tree");
    let file = tree.join(path);
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&file, content).expect("write");
    let tar = dir.join(if flags.contains('z') { "rootfs.tar.gz" } else { "rootfs.tar" });
    let top = path.split('/').next().expect("a first component");
    run_tool(Command::new("tar").args(["-C", &p(&tree), &format!("-c{flags}f"), &p(&tar), top]));
    tar
}

/// The busybox image saved with `berth save --format oci` and extracted to `dir/layout`;
/// `None` (the test skips) without busybox-static.
pub fn busybox_layout(b: &Berth, dir: &Path) -> Option<PathBuf> {
    if !b.busybox("busybox:latest") {
        return None;
    }
    let tar = dir.join("busybox-oci.tar");
    b.ok(&["save", "--format", "oci", "-o", &p(&tar), "busybox"]);
    let layout = dir.join("layout");
    std::fs::create_dir(&layout).expect("mkdir layout");
    run_tool(Command::new("tar").args(["-C", &p(&layout), "-xf", &p(&tar)]));
    Some(layout)
}

/// Runs an external tool and asserts it succeeded; returns stdout.
pub fn run_tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `berth registry serve` process on 127.0.0.1 and an ephemeral port; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["registry", "serve", "--addr", "127.0.0.1:0", "--root", &root.to_string_lossy()])
            .args(extra)
            .env("BERTH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start berth registry serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read address");
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).to_owned();
        Server { child, addr }
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection; returns status, headers (lowercase) and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

pub fn read_response(s: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

pub fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A store with the busybox base image for `berth build` tests, when running as root with
/// busybox-static (RUN steps run in namespaces); None, with a message, where they must skip.
pub fn build_store() -> Option<Berth> {
    if !rustix::process::geteuid().is_root() {
        assert!(!strict(), "berth build tests need root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: berth build runs RUN steps in namespaces and needs root");
        return None;
    }
    let b = Berth::new();
    b.busybox("busybox:latest").then_some(b)
}

/// The host's block device under `/`, as (major, minor), where `/` is on one that this
/// process can read: what a container that could open a node it made would read the
/// host's disk through.
pub fn host_disk() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").ok()?.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let readable = std::fs::File::open(format!("/dev/block/{major}:{minor}")).is_ok();
    if !readable {
        eprintln!("the host's disk under / ({major}:{minor}) cannot be read here: the null device stands in");
    }
    readable.then_some((major, minor))
}

/// A shell script that makes a char node for the null device and a block node for `disk`
/// (or the null device again) in each of `dirs`, and prints for each `DIR made`, then
/// `DIR opened` or `DIR refused` for each node.
pub fn make_and_open_nodes(dirs: &[&str], disk: Option<(u32, u32)>) -> String {
    let (kind, major, minor) = disk.map_or(("c", 1, 3), |(a, i)| ("b", a, i));
    let mut script = String::new();
    for d in dirs {
        script.push_str(&format!(
            "mknod {d}/null2 c 1 3 && mknod {d}/disk {kind} {major} {minor} && echo {d} made;              (echo x > {d}/null2) 2>/dev/null && echo {d} opened || echo {d} refused;              head -c 1 {d}/disk >/dev/null 2>&1 && echo {d} opened || echo {d} refused; "
        ));
    }
    script
}

/// The names of the steps a plain-progress log shows as executed (`#N DONE`), not cached.
pub fn steps_that_ran(log: &str) -> Vec<String> {
    let mut names = std::collections::HashMap::new();
    let mut ran = Vec::new();
    for line in log.lines() {
        let Some((num, rest)) = line.split_once(' ') else { continue };
        if rest.starts_with('[') {
            names.insert(num.to_owned(), rest.to_owned());
        } else if rest.starts_with("DONE") {
            ran.extend(names.get(num).cloned());
        }
    }
    ran
}

/// A network namespace standing for "the outside world" (the test's own, removed on drop),
/// linked to the host by a veth pair: 10.91.N.1 inside, 10.91.N.2 on the host, for a
/// subnet N of the calling test's own.
pub struct Outside(String, u8);

impl Outside {
    pub fn make(n: u8) -> Outside {
        let name = format!("berth-test-{}-{n}", std::process::id());
        let out = Outside(name.clone(), n);
        let host = format!("bto{}-{n}", std::process::id() % 100_000);
        for cmd in [
            format!("netns add {name}"),
            format!("link add {host} type veth peer name peer0 netns {name}"),
            format!("addr add 10.91.{n}.2/24 dev {host}"),
            format!("link set {host} up"),
            format!("-n {name} addr add 10.91.{n}.1/24 dev peer0"),
            format!("-n {name} link set peer0 up"),
            format!("-n {name} link set lo up"),
        ] {
            let st = std::process::Command::new("ip").args(cmd.split(' ')).status().unwrap();
            assert!(st.success(), "ip {cmd}");
        }
        out
    }

    /// Accepts one connection on 10.91.N.1:9000 inside, answers with the peer's address.
    pub fn serve_once(&self) -> std::thread::JoinHandle<()> {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = format!("10.91.{}.1:9000", self.1);
        let t = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            rustix::thread::move_into_link_name_space(ns.as_fd(), None).unwrap();
            let l = std::net::TcpListener::bind(addr).unwrap();
            tx.send(()).unwrap();
            let (mut s, peer) = l.accept().unwrap();
            writeln!(s, "peer={}", peer.ip()).unwrap();
        });
        rx.recv().unwrap();
        t
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A new pty: (master, slave), the slave to be a process's terminal stdin.
pub fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::AsRawFd;
    let master = std::fs::OpenOptions::new().read(true).write(true).open("/dev/ptmx").expect("open /dev/ptmx");
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: unlockpt and ptsname_r on an open ptmx fd, with a buffer of the given length.
    let ok = unsafe {
        libc::unlockpt(master.as_raw_fd()) == 0
            && libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) == 0
    };
    assert!(ok, "unlock the pty: {}", std::io::Error::last_os_error());
    // SAFETY: ptsname_r wrote a NUL-terminated name into the buffer.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("open the pty's slave");
    (master, slave)
}

/// Runs berth with a terminal (a pty) as its stdin, types `input` into it, and returns the
/// exit code and stdout (a pipe).
pub fn with_terminal_stdin(b: &Berth, args: &[&str], input: &[u8]) -> (Option<i32>, String) {
    let (mut master, slave) = pty();
    let child = b.cmd(args).stdin(slave).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run berth");
    master.write_all(input).expect("type into the pty");
    // The master stays open until berth exits: closing it would hang up berth's stdin.
    let out = child.wait_with_output().expect("wait for berth");
    drop(master);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A store with the busybox image whose containers, then networks, are removed when it is
/// dropped: the fixture of the container, copy and network tests.
pub struct ContainerStore(pub Berth);

impl std::ops::Deref for ContainerStore {
    type Target = Berth;
    fn deref(&self) -> &Berth {
        &self.0
    }
}

impl Drop for ContainerStore {
    fn drop(&mut self) {
        let ids = self.0.output(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.0.output(&["rm", "-f", id]);
        }
        let _ = self.0.output(&["network", "prune", "-f"]);
    }
}

/// A [`ContainerStore`], as root; None (a skip, or a failure under `BERTH_TEST_STRICT=1`)
/// without root or the busybox image.
pub fn container_store() -> Option<ContainerStore> {
    if !rustix::process::geteuid().is_root() {
        assert!(!strict(), "container tests need root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: berth run needs root");
        return None;
    }
    let b = Berth::new();
    b.busybox("busybox:latest").then_some(ContainerStore(b))
}
