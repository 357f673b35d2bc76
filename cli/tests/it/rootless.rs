//! berth as a plain user: test users made by the test (`useradd`, a subordinate range with
//! `usermod --add-subuids`), each with a store of its own, against root's results.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use std::io::{Read, Write};

use crate::util::{p, require_tool, strict, Berth, Outside, Server};

/// A user this test suite made, and a store of its own.
struct Plain {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    root: tempfile::TempDir,
}

/// useradd and usermod edit /etc/passwd and /etc/subuid: one at a time.
static USERS: Mutex<()> = Mutex::new(());

/// The test user `name` (made if missing), with the subordinate range from `sub` (65536 IDs)
/// or none; `None` (a skip, or a failure under BERTH_TEST_STRICT=1) where the tests cannot
/// make users.
fn plain(name: &str, sub: Option<u32>) -> Option<Plain> {
    if !rustix::process::geteuid().is_root() || !Path::new("/usr/bin/newuidmap").exists() {
        assert!(!strict(), "the rootless tests need root (to make users) and newuidmap (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: the rootless tests need root (to make users) and uidmap's newuidmap");
        return None;
    }
    let _held = USERS.lock().unwrap_or_else(|e| e.into_inner());
    if !Command::new("id").arg(name).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success() {
        // Debian's useradd gives every new user a subordinate range unless told not to.
        let none = ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"];
        run(Command::new("useradd")
            .args(["-m", "-s", "/bin/sh"])
            .args(if sub.is_none() { &none[..] } else { &[] })
            .arg(name));
    }
    let listed =
        |f: &str| std::fs::read_to_string(f).unwrap_or_default().lines().any(|l| l.starts_with(&format!("{name}:")));
    if let Some(start) = sub {
        if !listed("/etc/subuid") || !listed("/etc/subgid") {
            let range = format!("{start}-{}", start + 65535);
            run(Command::new("usermod").args(["--add-subuids", &range, "--add-subgids", &range, name]));
        }
    } else {
        assert!(!listed("/etc/subuid"), "{name} must have no subordinate range");
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let home = PathBuf::from(format!("/home/{name}"));
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).unwrap();
    Some(Plain { name: name.to_owned(), uid, gid, home, root })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Plain {
    /// berth as this user: its own uid and gid, a clean environment, its store.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.args(args)
            .uid(self.uid)
            .gid(self.gid)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("BERTH_ROOT", self.root.path())
            .current_dir(self.root.path())
            .stdin(Stdio::null());
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, &[])
    }

    /// As [`Plain::ok`], with `env` set as well.
    fn ok_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.cmd(args).envs(env.iter().copied()).output().unwrap();
        assert!(out.status.success(), "{} berth {args:?}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A directory this user can write, removed with the store.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(self.uid), Some(self.gid)).unwrap();
        d
    }
}

/// Busybox saved to an archive every user can read and loaded into root's store `b`: the
/// same base, byte for byte, for root's store and the user's.
fn busybox_archive(b: &Berth, into: &Path) -> Option<String> {
    let maker = Berth::new();
    if !maker.busybox("busybox:latest") {
        return None;
    }
    let tar = into.join("busybox.tar");
    maker.ok(&["save", "-o", &p(&tar), "busybox:latest"]);
    std::fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    b.ok(&["load", "-i", &p(&tar)]);
    Some(p(&tar))
}

/// Root's store and `user`'s shared directory, with busybox in the archive both load from
/// (its path); `None` where busybox-static is missing (the test skips).
fn stores(user: &Plain) -> Option<(Berth, PathBuf, String)> {
    let b = Berth::new();
    let shared = user.dir("shared");
    let base = busybox_archive(&b, &shared)?;
    Some((b, shared, base))
}

/// A context with owners, a set-uid bit, deletions, USER and WORKDIR, and a step that leaves
/// processes running, one in a session of its own (the step ends with its first process): what
/// a layer must carry the same whoever builds it.
const DOCKERFILE: &str = r#"FROM busybox:latest
RUN echo "app:x:1000:1000::/home/app:/bin/sh" >> /etc/passwd && echo "app:x:1000:" >> /etc/group \
 && mkdir -p /srv/data && chown 1000:1000 /srv/data && echo hi > /srv/data/x && chown 1000:100 /srv/data/x \
 && cp /bin/busybox /srv/suid && chmod 4755 /srv/suid
COPY --chown=1000:1000 f.txt /srv/f.txt
RUN rm -rf /etc/motd /srv/data && mkdir -p /srv/data && touch /srv/data/new
USER app
WORKDIR /home/app/w
RUN echo made > m
RUN sleep 600 & setsid sleep 600 & echo a step that leaves processes running ends with its first process
"#;

fn context(dir: &Path) -> String {
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.join("f.txt"), "file\n").unwrap();
    p(dir)
}

#[test]
fn a_plain_user_builds_the_image_root_builds_and_runs_it() {
    let Some(user) = plain("berth-rl", Some(400000)) else { return };
    let Some((b, shared, base)) = stores(&user) else { return };
    user.ok(&["load", "-i", &base]);
    assert!(user.ok(&["images"]).contains("busybox"), "the user's store lists the loaded base");

    let ctx = context(&user.dir("ctx"));
    let (root_iid, user_iid) = (shared.join("root.iid"), shared.join("user.iid"));
    let build = |iid: &Path| ["build", "-q", "--iidfile", &p(iid), "-t", "app", &ctx].map(str::to_owned);
    let out = b.cmd(&build(&root_iid).each_ref().map(String::as_str)).env("SOURCE_DATE_EPOCH", "1700000000").output();
    assert!(out.unwrap().status.success(), "root's build");
    let mut cmd = user.cmd(&build(&user_iid).each_ref().map(String::as_str));
    let out = cmd.env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap();
    assert!(out.status.success(), "the user's build: {}", String::from_utf8_lossy(&out.stderr));
    let iid = std::fs::read_to_string(&root_iid).unwrap();
    assert_eq!(std::fs::read_to_string(&user_iid).unwrap(), iid, "the same image ID, rootless as root");
    let manifest = |json: String| -> String {
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v[0]["Descriptor"]["digest"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(manifest(user.ok(&["inspect", "app"])), manifest(b.ok(&["inspect", "app"])), "the same manifest");

    let script = "id -u; stat -c %u:%g:%a /srv/data /srv/suid /srv/f.txt; cat /srv/f.txt m; ls /srv/data";
    let seen = user.ok(&["run", "--rm", "--network", "none", "app", "sh", "-c", script]);
    assert_eq!(seen, "1000\n0:0:755\n0:0:4755\n1000:1000:644\nfile\nmade\nnew\n");
    let seen = user.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-u",
        "0",
        "app",
        "sh",
        "-c",
        "id -u; ls /sys/kernel >/dev/null && echo sys",
    ]);
    assert_eq!(seen, "0\nsys\n", "host network: the host's /sys, read-only");

    // RUN --mount of every kind (bind from a stage and the context, cache seeded from a
    // stage, tmpfs), --network=none and USER, as the runner's fixture has them.
    let mounts = user.dir("mounts");
    for f in std::fs::read_dir(crate::util::repo_root().join("fixtures/build/mounts")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), mounts.join(f.file_name())).unwrap();
    }
    user.ok(&["build", "-q", "-t", "mounts", &p(&mounts)]);
    let seen = user.ok(&["run", "--rm", "--network", "none", "mounts"]);
    assert!(seen.starts_with("tool-v1\n") && seen.ends_with("tool-v1\n"), "{seen}");

    let saved = shared.join("app.tar");
    user.ok(&["save", "-o", &p(&saved), "app"]);
    assert!(std::fs::metadata(&saved).unwrap().len() > 0);
}

#[test]
fn a_plain_user_on_fuse_overlayfs_builds_the_image_root_builds_and_runs_it() {
    // Kernels before 5.11 fall back to fuse-overlayfs rootless; this one is newer, so the
    // test asks for it by BuildKit's name.
    let Some(user) = plain("berth-rl", Some(400000)) else { return };
    if !require_tool("fuse-overlayfs") {
        return;
    }
    let Some((b, _shared, base)) = stores(&user) else { return };
    let fuse = |args: &[&str]| {
        user.ok_with(args, &[("BERTH_SNAPSHOTTER", "fuse-overlayfs"), ("SOURCE_DATE_EPOCH", "1700000000")])
    };
    fuse(&["load", "-q", "-i", &base]);
    let ctx = context(&user.dir("ctx"));
    let root_iid = roots_build(&b, &ctx);
    assert_eq!(
        fuse(&["build", "-q", "-t", "app", &ctx]).trim(),
        root_iid,
        "the same image ID on fuse-overlayfs as root's"
    );

    let script = "id -u; cat m; ls /srv/data; grep ' / ' /proc/self/mounts | cut -d' ' -f3";
    let seen = fuse(&["run", "--rm", "--network", "none", "app", "sh", "-c", script]);
    assert_eq!(seen, "1000\nmade\nnew\nfuse.fuse-overlayfs\n", "the container's root is fuse-overlayfs's");
}

#[test]
fn a_plain_user_pushes_and_pulls() {
    let Some(user) = plain("berth-rl", Some(400000)) else { return };
    let Some((_root, _shared, base)) = stores(&user) else { return };
    let reg_root = tempfile::tempdir().unwrap();
    let server = Server::start(reg_root.path(), &[]);
    user.ok(&["load", "-i", &base]);
    let name = format!("{}/team/busybox:1", server.addr);
    user.ok(&["tag", "busybox:latest", &name]);
    user.ok(&["push", "-q", &name]);
    user.ok(&["rmi", &name, "busybox:latest"]);
    user.ok(&["pull", "-q", &name]);
    assert_eq!(user.ok(&["run", "--rm", "--network", "none", &name, "echo", "pulled"]), "pulled\n");
}

#[test]
fn without_subordinate_ids_one_id_is_mapped_and_other_owners_are_refused_clearly() {
    let Some(user) = plain("berth-rl-nosub", None) else { return };
    let Some((_root, shared, base)) = stores(&user) else { return };
    user.ok(&["load", "-i", &base]);
    // busybox's layer has /home/berth owned by 1000: no single-ID map holds that.
    let out = user.output(&["run", "--rm", "--network", "none", "busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no subordinate IDs for berth-rl-nosub"), "the warning says why: {err}");
    assert!(err.contains("\"home/berth\" is owned by 1000:1000, which this user namespace does not map"), "{err}");

    // An image of root's files alone works.
    let rootfs = user.dir("rootfs");
    std::fs::create_dir(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let tar = shared.join("root-only.tar");
    run(Command::new("tar").args(["--owner=0", "--group=0", "-C", &p(&rootfs), "-cf", &p(&tar), "."]));
    std::fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    user.ok(&["import", &p(&tar), "rootonly"]);
    let id = user.ok(&["run", "--rm", "--network", "none", "rootonly", "/bin/busybox", "id", "-u"]);
    assert_eq!(id, "0\n");
    let out = user.output(&["run", "--rm", "--network", "none", "--user", "1000", "rootonly", "/bin/busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("this user namespace maps only ID 0, your own"), "{err}");
    let ctx = user.dir("ctx");
    std::fs::write(ctx.join("Dockerfile"), "FROM rootonly\nRUN [\"/bin/busybox\", \"touch\", \"/x\"]\n").unwrap();
    user.ok(&["build", "-q", "-t", "touched", &p(&ctx)]);
    std::fs::write(ctx.join("Dockerfile"), "FROM rootonly\nRUN [\"/bin/busybox\", \"chown\", \"1000\", \"/bin\"]\n")
        .unwrap();
    let out = user.output(&["build", "-q", &p(&ctx)]);
    assert!(!out.status.success(), "chown to an unmapped ID fails in the step");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RUN [\"/bin/busybox\", \"chown\"") && err.contains("exit code: 1"), "{err}");
}

#[test]
fn a_plain_users_containers_reach_the_network_through_slirp4netns() {
    let Some(user) = plain("berth-rl", Some(400000)) else { return };
    if !require_tool("slirp4netns") {
        return;
    }
    let Some((_root, _shared, base)) = stores(&user) else { return };
    user.ok(&["load", "-i", &base]);
    let outside = Outside::make(8);
    let server = outside.serve_once();
    let script =
        "ip -4 -o addr show tap0 | grep -o 'inet [0-9./]*'; grep nameserver /etc/resolv.conf; nc 10.91.8.1 9000";
    let out = user.ok(&["run", "--rm", "busybox", "sh", "-c", script]);
    server.join().unwrap();
    assert_eq!(out, "inet 10.0.2.100/24\nnameserver 10.0.2.3\npeer=10.91.8.2\n", "out through the user's own sockets");

    // RUN steps use the host's network (docker build's default), rootless too.
    let server = outside.serve_once();
    let ctx = user.dir("fetch");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN nc 10.91.8.1 9000 > /got\n").unwrap();
    user.ok(&["build", "-q", "-t", "fetched", &p(&ctx)]);
    server.join().unwrap();
    assert_eq!(user.ok(&["run", "--rm", "--network", "none", "fetched", "cat", "/got"]), "peer=10.91.8.2\n");

    // The host's loopback is out of reach: a service on 127.0.0.1 trusts local users.
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = local.local_addr().unwrap().port();
    let probe = format!("nc -w 2 10.0.2.2 {port} </dev/null && echo reached || echo refused");
    assert_eq!(user.ok(&["run", "--rm", "busybox", "sh", "-c", &probe]), "refused\n");

    // A published port reaches a detached container through its namespace's loopback.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let publish = format!("127.0.0.1:{port}:8080");
    user.ok(&["run", "-d", "--name", "web", "-p", &publish, "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"]);
    // Once httpd answers inside, every connection through the port gets the page, the
    // first ones too (a rootless supervisor once reset the first on each runtime thread).
    let inside = "for i in $(seq 100); do wget -q -O /dev/null http://127.0.0.1:8080/group && exit 0; sleep 0.1; done";
    user.ok(&["exec", "web", "sh", "-c", inside]);
    let get = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /group HTTP/1.0\r\n\r\n").ok()?;
        let mut got = String::new();
        s.read_to_string(&mut got).ok()?;
        got.contains("root:x:0:").then_some(got)
    };
    let pages: Vec<bool> = (0..6).map(|_| get().is_some()).collect();
    let page = pages.iter().all(|ok| *ok).then_some(());
    // exec joins the container's namespaces from another berth (another user namespace).
    let exec = user.output(&["exec", "web", "sh", "-c", "id -u; ip -4 -o addr show tap0 | grep -c 10.0.2.100"]);
    user.ok(&["rm", "-f", "web"]);
    assert!(page.is_some(), "the published port served the container's /etc/group each time: {pages:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "0\n1\n", "{}", String::from_utf8_lossy(&exec.stderr));
}

#[test]
fn a_plain_users_mistakes_are_named_with_what_fixes_them() {
    let Some(user) = plain("berth-rl", Some(400000)) else { return };
    let Some((_root, _shared, base)) = stores(&user) else { return };
    user.ok(&["load", "-i", &base]);
    let err = |args: &[&str]| {
        let out = user.output(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A range but no newuidmap on PATH: the warning says which is missing.
    let out = user.cmd(&["images", "-q"]).env("PATH", user.dir("bare-path")).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("newuidmap and newgidmap are not on PATH") && !e.contains("no subordinate IDs"), "{e}");
    // Limits need cgroups, which a plain user has none of: said before anything starts.
    for args in [
        &["run", "--rm", "--memory", "64m", "busybox", "true"][..],
        &["run", "-d", "--cpus", "1", "busybox", "sleep", "60"],
    ] {
        let e = err(args);
        assert!(e.contains("need cgroups, which belong to root: rootless berth cannot set them"), "{e}");
    }
    assert_eq!(user.ok(&["ps", "-aq"]), "", "nothing was left behind");
    // A privileged port: the hint names what a plain user can do.
    let e = err(&["run", "-d", "-p", "127.0.0.1:81:80", "busybox", "sleep", "60"]);
    assert!(e.contains("a plain user cannot bind ports below 1024"), "{e}");
    for id in user.ok(&["ps", "-aq"]).lines() {
        user.ok(&["rm", "-f", id]);
    }
    // A context file the user may not read: the error points at the COPY line.
    let ctx = user.dir("unreadable");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY secret.txt /\n").unwrap();
    std::fs::write(ctx.join("secret.txt"), "root's\n").unwrap();
    std::fs::set_permissions(ctx.join("secret.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let e = err(&["build", "-q", &p(&ctx)]);
    assert!(e.contains("Dockerfile:2") && e.contains("secret.txt") && e.contains("Permission denied"), "{e}");
    // An owner beyond the user's range: the error says what the namespace maps.
    let high = user.dir("high");
    std::fs::write(high.join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    let layer = high.join("layer.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&layer).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_path("far").unwrap();
    h.set_size(0);
    h.set_uid(70000);
    h.set_gid(70000);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, std::io::empty()).unwrap();
    tar.finish().unwrap();
    drop(tar);
    std::fs::set_permissions(&layer, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    user.ok(&["import", &p(&layer), "far:1"]);
    let e = err(&["run", "--rm", "far:1", "true"]);
    assert!(e.contains("\"far\" is owned by 70000:70000") && e.contains("(it maps IDs 0 to 65536)"), "{e}");
}

/// A root filesystem holding this berth (as /usr/local/bin/berth), its shared libraries and
/// busybox.
fn box_rootfs() -> tempfile::TempDir {
    let rootfs = tempfile::tempdir().unwrap();
    let put = |from: &Path, to: &str| {
        let dest = rootfs.path().join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest).unwrap();
    };
    let berth = Path::new(env!("CARGO_BIN_EXE_berth"));
    put(berth, "/usr/local/bin/berth");
    put(Path::new("/bin/busybox"), "/bin/busybox");
    std::os::unix::fs::symlink("busybox", rootfs.path().join("bin/sh")).unwrap();
    let ldd = Command::new("ldd").arg(berth).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = line.split("=>").last().unwrap().split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            put(Path::new(path), path);
        }
    }
    for d in ["tmp", "etc", "proc", "dev", "sys"] {
        std::fs::create_dir_all(rootfs.path().join(d)).unwrap();
    }
    rootfs
}

/// Root's build of `ctx` as `app`, with namespaces and `SOURCE_DATE_EPOCH`: its image ID.
fn roots_build(b: &Berth, ctx: &str) -> String {
    let out = b.cmd(&["build", "-q", "-t", "app", ctx]).env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap();
    assert!(out.status.success(), "root's build: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An image of [`box_rootfs`]: a build container.
fn berth_in_a_box(b: &Berth) -> String {
    let rootfs = box_rootfs();
    let tar = rootfs.path().with_extension("tar");
    run(Command::new("tar").args(["-C", &p(rootfs.path()), "-cf", &p(&tar), "."]));
    b.ok(&["import", &p(&tar), "berth-in-a-box"]);
    std::fs::remove_file(&tar).unwrap();
    "berth-in-a-box".into()
}

/// What a build in an unprivileged container is compared with: a directory holding the
/// context (`ctx`) and busybox (`busybox.tar`), root's image ID for that context built with
/// namespaces, and the build container's image. `None` where busybox-static or ldd is missing.
fn unprivileged_setup(b: &Berth) -> Option<(tempfile::TempDir, String, String)> {
    if !b.busybox("busybox:latest") || !require_tool("ldd") {
        return None;
    }
    let shared = tempfile::tempdir().unwrap();
    let ctx_dir = shared.path().join("ctx");
    std::fs::create_dir(&ctx_dir).unwrap();
    let root_iid = roots_build(b, &context(&ctx_dir));
    b.ok(&["save", "-o", &p(&shared.path().join("busybox.tar")), "busybox:latest"]);
    Some((shared, root_iid, berth_in_a_box(b)))
}

/// Runs `script` in a container of `image` as docker's default container is (no
/// CAP_SYS_ADMIN, docker's seccomp profile: no unshare, no mount), with `shared` at /in and
/// a store under /tmp; returns its output.
fn in_unprivileged_container(b: &Berth, image: &str, shared: &Path, script: &str, more: &[&str]) -> String {
    let volume = format!("{}:/in", p(shared));
    let args = ["run", "--rm", "-v", &volume, "-e", "BERTH_ROOT=/tmp/store", "-e", "SOURCE_DATE_EPOCH=1700000000"];
    b.ok(&[&args[..], more, &[image, "/bin/sh", "-c", script]].concat())
}

#[test]
fn an_unprivileged_container_builds_with_isolation_chroot_the_image_root_builds() {
    let b = Berth::new();
    let Some((shared, root_iid, image)) = unprivileged_setup(&b) else { return };
    let script = "berth load -q -i /in/busybox.tar >/dev/null && berth build -q --isolation chroot -t app /in/ctx; \
                  berth build -q --no-cache -t again /in/ctx 2>&1 | tail -1; berth run --rm app true 2>&1 | tail -1";
    let seen = in_unprivileged_container(&b, &image, shared.path(), script, &[]);
    let run_refused = seen.lines().nth(2).unwrap_or_default();
    assert!(run_refused.contains("needs CAP_SYS_ADMIN") && run_refused.ends_with("--isolation chroot"), "{seen}");
    let mut lines = seen.lines();
    assert_eq!(lines.next(), Some(root_iid.as_str()), "the same image ID as root's build with namespaces: {seen}");
    let build_refused = lines.next().unwrap_or_default();
    assert!(
        build_refused.starts_with("berth: ") && build_refused.ends_with("build with --isolation chroot"),
        "the default isolation names the one that works: {seen}"
    );
    // Kubernetes' restricted pods drop every capability, CAP_SYS_CHROOT too.
    let script =
        "berth load -q -i /in/busybox.tar >/dev/null && berth build -q --isolation chroot /in/ctx 2>&1 | tail -1";
    let seen = in_unprivileged_container(&b, &image, shared.path(), script, &["--cap-drop", "SYS_CHROOT"]);
    assert!(seen.trim_end().ends_with("build with --isolation none"), "without chroot, none is named: {seen}");
    // Without CAP_CHOWN no base image with files of other owners can be unpacked: said so.
    let seen = in_unprivileged_container(&b, &image, shared.path(), script, &["--cap-drop", "CHOWN"]);
    assert!(seen.contains("berth needs CAP_CHOWN to give a layer's files their owners"), "{seen}");
}

#[test]
fn an_unprivileged_container_builds_with_isolation_none_in_its_own_root_the_image_root_builds() {
    let b = Berth::new();
    let Some((shared, root_iid, image)) = unprivileged_setup(&b) else { return };
    // One build per container, as kaniko's: the steps replace the container's files (berth's
    // shared libraries among them) with the image's. The shell's builtins read what is left.
    let script = "berth load -q -i /in/busybox.tar >/dev/null && berth build -q --isolation none \
                  --iidfile /in/iid -t app /in/ctx && read made < /home/app/w/m && echo \"$made\" \
                  && test ! -e /usr/lib/x86_64-linux-gnu && test -d /tmp/store && echo kept";
    let seen = in_unprivileged_container(&b, &image, shared.path(), script, &[]);
    assert_eq!(seen.lines().collect::<Vec<_>>(), [root_iid.as_str(), "made", "kept"], "{seen}");
    let iid = std::fs::read_to_string(shared.path().join("iid")).unwrap();
    assert_eq!(iid.trim(), root_iid, "--iidfile, an output, is written where it was asked for");
}

#[test]
fn isolation_none_refuses_to_replace_a_machines_root_filesystem() {
    if !require_tool("ldd") || !require_tool("unshare") || !require_tool("chroot") {
        return;
    }
    // Contained, in case the check were broken: berth runs chrooted into a copy of a build
    // container's files, with this machine's /proc (its PIDs, kernel threads among them).
    let rootfs = box_rootfs();
    std::fs::create_dir(rootfs.path().join("ctx")).unwrap();
    std::fs::write(rootfs.path().join("ctx/Dockerfile"), "FROM busybox:latest\nRUN true\n").unwrap();
    let script = r#"mount -t proc proc "$1/proc" && exec chroot "$1" /usr/local/bin/berth build --isolation none /ctx"#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh", &p(rootfs.path())])
        .env("BERTH_ROOT", "/store")
        .env_remove("BERTH_FORCE_ISOLATION_NONE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(
        err.contains("looks like a machine, not a container") && err.contains("BERTH_FORCE_ISOLATION_NONE=1"),
        "{err}"
    );
    assert!(
        rootfs.path().join("bin/busybox").exists() && rootfs.path().join("ctx/Dockerfile").exists(),
        "nothing was removed"
    );
}

#[test]
fn without_user_namespaces_a_plain_user_gets_one_line_saying_what_is_missing() {
    let Some(user) = plain("berth-rl", Some(400000)) else { return };
    // A user namespace of the test's own with user.max_user_namespaces=0 in it, mapping root
    // and the user: berth started there by the user cannot make its own.
    let fifo = user.root.path().join("go");
    let inner = user.root.path().join("inner.sh");
    std::fs::write(
        &inner,
        format!(
            "echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --reuid {uid} --regid {gid} --clear-groups \
             env -i HOME={home} USER={name} PATH=/usr/bin:/bin BERTH_ROOT={root} {berth} images\n",
            uid = user.uid,
            gid = user.gid,
            home = p(&user.home),
            name = user.name,
            root = p(user.root.path()),
            berth = env!("CARGO_BIN_EXE_berth"),
        ),
    )
    .unwrap();
    // The second exec comes after the maps: only then is the shell root there, capabilities
    // and all.
    let script = format!(
        r#"mkfifo {fifo}
unshare --user sh -c 'read x < {fifo}; exec sh {inner}' &
pid=$!
while [ "$(readlink /proc/$pid/ns/user)" = "$(readlink /proc/self/ns/user)" ]; do sleep 0.01; done
printf '0 0 1\n{uid} {uid} 1\n' > /proc/$pid/uid_map
printf '0 0 1\n{gid} {gid} 1\n' > /proc/$pid/gid_map
echo go > {fifo}
wait $pid"#,
        fifo = p(&fifo),
        inner = p(&inner),
        uid = user.uid,
        gid = user.gid,
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("berth: cannot create a user namespace"), "{err}");
    assert!(err.contains("user.max_user_namespaces=0") && err.contains("--isolation chroot"), "{err}");
}
