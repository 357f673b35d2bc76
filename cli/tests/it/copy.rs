//! `berth create`, `start -a` and `berth cp`: the CI pattern of a test container whose
//! results are copied out, and fixtures copied in, by docker's path rules, without a
//! container's symlinks ever reaching the host's files.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::util::{container_store as setup, p};

/// The entry names of a tar archive, in order.
fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn create_then_start_attached_prints_the_output_and_exits_with_the_code() {
    let Some(b) = setup() else { return };
    let id = b.ok(&["create", "--name", "t", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let status = b.ok(&["ps", "-a", "--filter", "name=^t$", "--format", "{{.State}}"]);
    assert_eq!(status, "created\n");
    let out = b.output(&["start", "-a", "t"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // Again: only this run's output, not the first one's from the log.
    let out = b.output(&["start", "-a", "t"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()), (Some(3), "out\n".into()));
    assert_eq!(b.ok(&["logs", "t"]), "out\nout\n", "both runs are in the log");
    // With --rm: the exit code and output still reach start -a, then the container is gone.
    b.ok(&["create", "--rm", "--name", "once", "busybox", "sh", "-c", "echo hi; exit 5"]);
    let out = b.output(&["start", "-a", "once"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()), (Some(5), "hi\n".into()));
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.ok(&["ps", "-aq", "--filter", "name=^once$"]).is_empty() {
        assert!(std::time::Instant::now() < gone, "--rm did not remove it");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A running container is joined; berth's signals are passed on to it (docker's sig-proxy).
    b.ok(&["run", "-d", "--name", "late", "busybox", "sh", "-c", "sleep 1; echo late; exit 4"]);
    let out = b.output(&["start", "-a", "late"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()), (Some(4), "late\n".into()));
    let trap = "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done";
    b.ok(&["create", "--name", "sp", "busybox", "sh", "-c", trap]);
    let attached = b.cmd(&["start", "-a", "sp"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let ready = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.ok(&["logs", "sp"]).contains("ready") {
        assert!(std::time::Instant::now() < ready, "sp did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = rustix::process::Pid::from_child(&attached);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = attached.wait_with_output().unwrap();
    assert_eq!(
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()),
        (Some(9), "ready\ngot-term\n".into())
    );
    let err = b.fails(&["start", "-a", "t", "t"]);
    assert!(err.contains("multiple containers"), "{err}");
    let err = b.fails(&["create", "-d", "busybox", "true"]);
    assert!(err.contains("berth start"), "{err}");
    // A taken name: exit 1, as docker create's (run's is 125).
    let taken = b.output(&["create", "--name", "t", "busybox", "true"]);
    assert_eq!(taken.status.code(), Some(1), "{taken:?}");
}

#[test]
fn cp_follows_dockers_rules_out_of_and_into_a_stopped_container() {
    let Some(b) = setup() else { return };
    let script =
        "mkdir -p /out/sub && echo report > /out/report.xml && echo deep > /out/sub/d && ln -sf /etc/passwd /out/pw";
    b.ok(&["run", "--name", "t", "busybox", "sh", "-c", script]);
    let host = tempfile::tempdir().unwrap();
    let h = |rel: &str| host.path().join(rel);

    // A file: to a new name, into a directory, over a file.
    b.ok(&["cp", "t:/out/report.xml", &p(&h("r.xml"))]);
    assert_eq!(read(&h("r.xml")), "report\n");
    std::fs::create_dir(h("dir")).unwrap();
    b.ok(&["cp", "t:out/report.xml", &p(&h("dir"))]);
    assert_eq!(read(&h("dir/report.xml")), "report\n", "a relative container path is from its root");
    std::fs::write(h("r.xml"), "old old old\n").unwrap();
    b.ok(&["cp", "t:/out/sub/d", &p(&h("r.xml"))]);
    assert_eq!(read(&h("r.xml")), "deep\n");
    // A directory: as a new one, into one, its contents with `/.`; a symlink stays a link.
    b.ok(&["cp", "t:/out", &p(&h("res"))]);
    assert_eq!(read(&h("res/sub/d")), "deep\n");
    assert_eq!(std::fs::read_link(h("res/pw")).unwrap(), Path::new("/etc/passwd"));
    b.ok(&["cp", "t:/out", &p(&h("dir"))]);
    assert!(h("dir/out/report.xml").exists());
    std::fs::create_dir(h("flat")).unwrap();
    b.ok(&["cp", "t:/out/.", &p(&h("flat"))]);
    assert!(h("flat/report.xml").exists() && h("flat/sub/d").exists() && !h("flat/out").exists());
    // -L copies what a symlink points to (the container's /etc/passwd).
    b.ok(&["cp", "-L", "t:/out/pw", &p(&h("passwd"))]);
    assert!(read(&h("passwd")).starts_with("root:x:0:0:"), "{}", read(&h("passwd")));
    // To stdout: a tar of the path.
    let tar = b.cmd(&["cp", "t:/out/sub", "-"]).output().unwrap();
    let names = tar_names(&tar.stdout);
    assert_eq!(names, ["sub/", "sub/d"]);

    // Into the container: a file, a directory; `start` then sees them.
    std::fs::write(h("fixture.txt"), "fixture\n").unwrap();
    std::fs::create_dir_all(h("data/more")).unwrap();
    std::fs::write(h("data/more/x"), "x\n").unwrap();
    b.ok(&["cp", &p(&h("fixture.txt")), "t:/out/"]);
    b.ok(&["cp", &p(&h("data")), "t:/srv"]);
    // A host directory's contents with `/.`, relative to the working directory too.
    b.cmd(&["cp", "data/.", "t:/out/sub"]).current_dir(host.path()).status().unwrap();
    let flat = b.cmd(&["cp", "t:/out/sub", "-"]).output().unwrap();
    let flat = tar_names(&flat.stdout);
    assert!(flat.contains(&"sub/more/x".to_owned()) && !flat.iter().any(|n| n.starts_with("sub/data")), "{flat:?}");
    let out = b.output(&["start", "-a", "t"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = b.ok(&["cp", "t:/out/fixture.txt", "-"]);
    assert!(seen.contains("fixture\n"), "{seen}");
    b.ok(&["cp", "t:/srv/more/x", &p(&h("x"))]);
    assert_eq!(read(&h("x")), "x\n");

    // docker's errors.
    assert!(b.fails(&["cp", "t:/nope", &p(&h("n"))]).contains("could not find /nope in container t"));
    assert!(b.fails(&["cp", "t:/out", &p(&h("r.xml"))]).contains("cannot copy a directory to a file"));
    assert!(b.fails(&["cp", "t:/out/report.xml", &p(&h("new/"))]).contains("must exist"));
    assert!(b.fails(&["cp", &p(&h("x")), &p(&h("y"))]).contains("at least one container"));
    assert!(b.fails(&["cp", "nobody:/x", &p(&h("y"))]).contains("no such container"));
}

#[test]
fn cp_reaches_a_running_container_and_keeps_owners_only_with_a() {
    let Some(b) = setup() else { return };
    let script = "echo live > /tmp/state; while :; do echo line >> /tmp/app.log; done";
    b.ok(&["run", "-d", "--name", "svc", "busybox", "sh", "-c", script]);
    let host = tempfile::tempdir().unwrap();
    let owned = host.path().join("owned.txt");
    std::fs::write(&owned, "mine\n").unwrap();
    std::os::unix::fs::chown(&owned, Some(1234), Some(5678)).unwrap();
    b.ok(&["cp", &p(&owned), "svc:/tmp/plain"]);
    b.ok(&["cp", "-a", &p(&owned), "svc:/tmp/kept"]);
    // Seen by the running process, through its own mounts.
    let ls = b.ok(&["exec", "svc", "sh", "-c", "cat /tmp/plain; stat -c '%u:%g' /tmp/plain /tmp/kept"]);
    assert_eq!(ls, "mine\n0:0\n1234:5678\n", "root owns a copy in, unless -a");
    let back = host.path().join("state");
    b.ok(&["cp", "svc:/tmp/state", &p(&back)]);
    assert_eq!(read(&back), "live\n");
    // Out, the copy is the caller's, `-a` or not (as docker's), and never set-id on the host.
    b.ok(&["exec", "svc", "sh", "-c", "cp /bin/busybox /tmp/suid && chmod 4755 /tmp/suid"]);
    b.ok(&["cp", "-a", "svc:/tmp/kept", &p(&host.path().join("kept"))]);
    b.ok(&["cp", "svc:/tmp/suid", &p(&host.path().join("suid"))]);
    assert_eq!(std::fs::metadata(host.path().join("kept")).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(host.path().join("suid")).unwrap().mode() & 0o7777, 0o755, "setuid dropped");
    // A file the container is still writing is copied as it was (docker's), every time: whole
    // lines, but for the last, which a write crossing a page may have half done when the
    // size was taken (the kernel grows the file a page at a time).
    for round in 0..5 {
        let to = host.path().join(format!("app-{round}.log"));
        b.ok(&["cp", "svc:/tmp/app.log", &p(&to)]);
        let text = read(&to);
        let lines: Vec<&str> = text.lines().collect();
        let (last, whole) = lines.split_last().unwrap();
        assert!(whole.iter().all(|l| *l == "line") && "line".starts_with(last), "round {round}: {last:?}");
    }
    // /proc and /sys are the kernel's, not the container's files: never read (the host's
    // kernel log is /proc/kmsg); a copy of the root leaves them out.
    let kmsg = b.output(&["cp", "svc:/proc/kmsg", "-"]);
    assert!(!kmsg.status.success() && kmsg.stdout.is_empty());
    assert!(String::from_utf8_lossy(&kmsg.stderr).contains("kernel filesystem"), "{kmsg:?}");
    let root = b.cmd(&["cp", "svc:/", "-"]).output().unwrap();
    assert!(root.status.success(), "{}", String::from_utf8_lossy(&root.stderr));
    let names = tar_names(&root.stdout);
    assert!(names.contains(&"tmp/app.log".to_owned()) && !names.iter().any(|n| n.starts_with("proc/1")));
    assert!(names.contains(&"proc/".to_owned()), "the mount point stays, empty");
}

#[test]
fn a_containers_symlinks_cannot_lead_a_copy_to_the_hosts_files() {
    let Some(b) = setup() else { return };
    // The host's files an attack would aim at.
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let target = host.path().join("target");
    std::fs::create_dir(&target).unwrap();
    // The container's links point at those absolute host paths.
    let script = format!("ln -s {} /leak; ln -s {} /drop", p(&secret), p(&target));
    b.ok(&["run", "--name", "evil", "busybox", "sh", "-c", &script]);
    let out = host.path().join("out");
    // Out through a link: the container has no such file (the host's is not read).
    let err = b.fails(&["cp", "-L", "evil:/leak", &p(&out)]);
    assert!(err.contains("could not find /leak"), "{err}");
    assert!(!out.exists());
    // In through a link: the file lands in the container's own tree, not in the host's directory.
    let payload = host.path().join("payload");
    std::fs::write(&payload, "planted\n").unwrap();
    let outcome = b.output(&["cp", &p(&payload), "evil:/drop/planted"]);
    assert!(std::fs::read_dir(&target).unwrap().next().is_none(), "nothing written on the host: {outcome:?}");
    // Running, through /proc/<pid>/root, the same.
    b.ok(&["start", "evil"]);
    b.ok(&["run", "-d", "--name", "evil2", "busybox", "sh", "-c", &format!("{script}; sleep 60")]);
    let _ = b.output(&["cp", &p(&payload), "evil2:/drop/planted"]);
    assert!(std::fs::read_dir(&target).unwrap().next().is_none(), "nothing written on the host");
    assert!(b.fails(&["cp", "-L", "evil2:/leak", &p(&out)]).contains("could not find"));
    assert!(!out.exists());
}

#[test]
fn export_writes_the_tree_without_what_is_mounted_on_it_and_port_says_where_ports_are() {
    let Some(b) = setup() else { return };
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("host-only"), "x").unwrap();
    let volume = format!("{}:/vol", p(vol.path()));
    let script = "echo made > /made; sleep 60";
    b.ok(&["run", "-d", "--name", "w", "-p", "127.0.0.1::8080", "-v", &volume, "busybox", "sh", "-c", script]);
    // port: every published port, or one of them.
    let bindings = b.ok(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", "w"]);
    assert_eq!(bindings.trim(), r#"{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":""}]}"#, "as asked");
    let all = b.ok(&["port", "w"]);
    let host = b.ok(&["port", "w", "8080"]);
    assert!(host.starts_with("127.0.0.1:") && all == format!("8080/tcp -> {host}"), "{all} / {host}");
    assert!(b.fails(&["port", "w", "81/udp"]).contains("no public port '81/udp' published for w"));
    // export, running: its files and changes; /proc, /sys, /dev and the volume only as the
    // directories they are mounted on.
    let running = b.cmd(&["export", "w"]).output().unwrap();
    assert!(running.status.success(), "{}", String::from_utf8_lossy(&running.stderr));
    let listed = tar_names(&running.stdout);
    for want in ["bin/busybox", "made", "proc/", "sys/", "vol/", "etc/passwd"] {
        assert!(listed.iter().any(|n| n == want), "{want} missing");
    }
    assert!(!listed.iter().any(|n| n.starts_with("proc/1") || n.starts_with("vol/host-only")), "mounts were gone into");
    // Stopped, to a file: the same tree.
    b.ok(&["stop", "-t", "1", "w"]);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("w.tar");
    b.ok(&["export", "-o", &p(&file), "w"]);
    let stopped = tar_names(&std::fs::read(&file).unwrap());
    assert!(stopped.contains(&"made".to_owned()) && stopped.contains(&"bin/busybox".to_owned()));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1, "no partial file left");
}
