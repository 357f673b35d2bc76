//! `berth run` on the busybox image: exit codes, namespaces, user, env, network,
//! hostile layers, and nothing left behind.

use crate::util::{p, strict, Berth};
use std::collections::BTreeSet;
use std::path::Path;

/// A store with the busybox image, when running as root with busybox-static.
fn setup() -> Option<Berth> {
    if !rustix::process::geteuid().is_root() {
        assert!(!strict(), "berth run tests need root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: berth run needs root");
        return None;
    }
    let b = Berth::new();
    b.busybox("busybox:latest").then_some(b)
}

fn run(b: &Berth, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let out = b.output(&full);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_pass_through() {
    let Some(b) = setup() else { return };
    assert_eq!(run(&b, &["busybox", "true"]).0, 0);
    assert_eq!(run(&b, &["busybox", "sh", "-c", "exit 7"]).0, 7);
    let (code, out, _) = run(&b, &["busybox", "sh", "-c", "sh -c 'kill -9 $$'; echo $?"]);
    assert_eq!((code, out.trim()), (0, "137"), "a child killed by SIGKILL is 128+9");
    let (code, _, err) = run(&b, &["busybox", "/no/such/program"]);
    assert_eq!(code, 127, "docker's code for a program that is not there");
    assert!(err.contains("No such file"), "{err}");
    // berth's own failures are docker's 125, a bad flag included.
    assert_eq!(run(&b, &["--no-such-flag", "busybox", "true"]).0, 125);
    let (code, _, err) = run(&b, &["--env-file", "/no/such/env", "busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert_eq!(b.output(&["rmi", "no-such-image:1"]).status.code(), Some(1), "other commands keep 1");
    // A container that cannot be set up is berth's failure (125), said as such, not the
    // command's (126/127): a volume onto a path /proc cannot have, a file over a
    // directory, a working directory that is a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let (vol, over) = (format!("{}:/proc/x", p(dir.path())), format!("{}:/bin", p(&file)));
    for (args, says) in [
        // Refused before anything is made, now: nothing may be mounted under /proc.
        (vec!["-v", vol.as_str(), "busybox", "true"], "/proc/x is the kernel's"),
        (vec!["-v", over.as_str(), "busybox", "true"], "mount the container's filesystem"),
        (vec!["-w", "/etc/passwd", "busybox", "true"], "enter the working directory"),
    ] {
        let (code, _, err) = run(&b, &args);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains(says) && !err.contains("true:"), "{args:?} names the step, not the command: {err}");
    }
}

#[test]
fn env_files_and_bare_names_read_as_dockers() {
    let Some(b) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let envf = dir.path().join("env");
    std::fs::write(&envf, "  LEAD=1\nTRAIL=x  \n  # comment\nQ=\"q\"\nFROM_BERTH\nNOT_IN_BERTH\n").unwrap();
    let out = b
        .cmd(&[
            "run",
            "--rm",
            "--env-file",
            &p(&envf),
            "-e",
            "PATH",
            "-e",
            "ALSO_NOT",
            "busybox",
            "/bin/busybox",
            "env",
        ])
        .env("FROM_BERTH", "given")
        .env_remove("PATH")
        .env_remove("NOT_IN_BERTH")
        .env_remove("ALSO_NOT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut env: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
    env.retain(|l| !l.starts_with("HOSTNAME=") && !l.starts_with("HOME="));
    env.sort();
    // The image's PATH is gone (`-e PATH` where berth has none); the names berth lacks are not set.
    assert_eq!(env, ["FROM_BERTH=given", "LEAD=1", "Q=\"q\"", "TRAIL=x  "]);
    std::fs::write(&envf, "A=1\nBAD VAR=2\n").unwrap();
    let (code, _, err) = run(&b, &["--env-file", &p(&envf), "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains(":2: variable 'BAD VAR' contains whitespaces"), "{err}");
}

#[test]
fn the_process_is_pid_1_in_its_own_namespaces() {
    let Some(b) = setup() else { return };
    let (_, out, _) =
        run(&b, &["--hostname", "smoke", "busybox", "sh", "-c", "echo $$ $(hostname) $(ls /proc | grep -c '^[0-9]')"]);
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[0], "1");
    assert_eq!(f[1], "smoke");
    assert!(f[2].parse::<u32>().unwrap() <= 5, "only the container's processes are visible: {out}");
    // no_new_privs as docker has it: off unless asked for.
    let (_, out, _) = run(&b, &["busybox", "sh", "-c", "cat /proc/self/status | grep NoNewPrivs"]);
    assert_eq!(out.trim(), "NoNewPrivs:\t0", "{out}");
    let (_, out, _) =
        run(&b, &["--security-opt", "no-new-privileges", "busybox", "sh", "-c", "grep NoNewPrivs /proc/self/status"]);
    assert_eq!(out.trim(), "NoNewPrivs:\t1", "{out}");
    // Mount, UTS, IPC, PID and cgroup namespaces of its own (net: see the network test).
    let (_, out, _) =
        run(&b, &["busybox", "sh", "-c", "for n in mnt uts ipc pid cgroup; do readlink /proc/self/ns/$n; done"]);
    for (line, ns) in out.lines().zip(["mnt", "uts", "ipc", "pid", "cgroup"]) {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(line, host.to_string_lossy(), "{ns} namespace is the host's");
    }
    assert_eq!(out.lines().count(), 5, "{out}");
    let (_, out, _) = run(&b, &["busybox", "sh", "-c", "echo hi > /dev/null && head -c 4 /dev/zero | wc -c"]);
    assert_eq!(out.trim(), "4");
}

#[test]
fn the_host_name_is_dockers_the_short_id_or_the_hosts_own_on_its_network() {
    let Some(b) = setup() else { return };
    let id = b.ok(&["run", "-d", "--name", "named-host", "busybox", "sleep", "30"]);
    let short = &id.trim()[..12];
    let seen =
        b.ok(&["exec", "named-host", "sh", "-c", "hostname; echo $HOSTNAME; cat /etc/hostname; tail -1 /etc/hosts"]);
    b.ok(&["rm", "-f", "named-host"]);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[..3], [short, short, short], "{seen}");
    assert!(lines[3].ends_with(&format!("\t{short}")), "the container's address names it: {seen}");
    // On the host's network: the host's name and a copy of its /etc/hosts.
    let (_, out, _) = run(&b, &["--network", "host", "busybox", "sh", "-c", "hostname; cat /etc/hosts"]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(out, format!("{host}{}", std::fs::read_to_string("/etc/hosts").unwrap()));
    let (_, out, _) = run(&b, &["--network", "host", "--hostname", "given", "busybox", "hostname"]);
    assert_eq!(out, "given\n");
}

#[test]
fn the_environment_comes_in_dockers_order() {
    let Some(b) = setup() else { return };
    let (_, out, err) = run(&b, &["-e", "ZED=1", "-e", "ALPHA=2", "busybox", "env"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}{err}");
    assert_eq!(lines[0], "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    assert!(lines[1].starts_with("HOSTNAME=") && lines[1].len() == "HOSTNAME=".len() + 12, "{out}");
    // Before, std's Command sorted them: ALPHA, HOME, HOSTNAME, PATH, ZED.
    assert_eq!(lines[2..], ["ZED=1", "ALPHA=2", "HOME=/root"], "{out}");
}

#[test]
fn user_workdir_and_env_are_applied() {
    let Some(b) = setup() else { return };
    let (_, out, _) =
        run(&b, &["-u", "berth", "-w", "/tmp", "-e", "FOO=bar", "busybox", "sh", "-c", "id; pwd; echo $FOO"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "uid=1000(berth) gid=1000(berth) groups=10(wheel),1000(berth)");
    assert_eq!(lines[1], "/tmp");
    assert_eq!(lines[2], "bar");
    let (_, out, _) = run(&b, &["-u", "65534:65534", "busybox", "id", "-u"]);
    assert_eq!(out.trim(), "65534");
    let (code, _, err) = run(&b, &["-u", "nosuchuser", "busybox", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("unable to find user nosuchuser"), "{err}");
}

#[test]
fn network_none_has_only_loopback_and_host_has_more() {
    let Some(b) = setup() else { return };
    let ifaces = |net: &str| -> Vec<String> {
        let (_, out, _) = run(&b, &["--network", net, "busybox", "cat", "/proc/net/dev"]);
        out.lines().skip(2).filter_map(|l| l.split(':').next()).map(|s| s.trim().to_owned()).collect()
    };
    assert_eq!(ifaces("none"), ["lo"]);
    let host = ifaces("host");
    assert!(host.len() > 1 || host != ["lo"], "{host:?}");
    // No route out with none (checked from the routing table: no packet leaves the machine),
    // while the loopback is up and answers.
    let (_, routes, _) = run(&b, &["--network", "none", "busybox", "ip", "route"]);
    assert_eq!(routes.trim(), "", "network none has no route");
    let (_, routes, _) = run(&b, &["--network", "host", "busybox", "ip", "route"]);
    assert!(!routes.trim().is_empty(), "network host has the host's routes");
    let (code, out, _) = run(
        &b,
        &[
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "ip link show lo | grep -c UP && ping -c1 -W1 127.0.0.1 >/dev/null && echo pong",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "1\npong\n"));
}

#[test]
fn a_hostile_layer_is_refused_and_writes_nothing_outside() {
    let Some(b) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A layer whose second entry climbs out with '..', crafted byte for byte.
    let mut builder = tar::Builder::new(Vec::new());
    for name in ["ok", "../../../../../../tmp/berth-escape-test"] {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        builder.append(&h, &b"x"[..]).unwrap();
    }
    let tar = dir.path().join("evil.tar");
    std::fs::write(&tar, builder.into_inner().unwrap()).unwrap();
    let _ = std::fs::remove_file("/tmp/berth-escape-test");
    b.ok(&["import", &p(&tar), "evil"]);
    let (code, _, err) = run(&b, &["evil", "/ok"]);
    assert_ne!(code, 0);
    assert!(err.contains("refused entry") && err.contains(".."), "{err}");
    assert!(!std::path::Path::new("/tmp/berth-escape-test").exists());
}

#[test]
fn nothing_is_left_mounted_or_prepared() {
    let Some(b) = setup() else { return };
    assert_eq!(run(&b, &["busybox", "true"]).0, 0);
    let root = p(b.root.path());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&root), "a mount of the store is left: {mounts}");
    // Only the one empty directory every container's rootfs is mounted on, in its own namespace.
    let containers: Vec<_> = std::fs::read_dir(b.root.path().join("containers")).unwrap().flatten().collect();
    assert_eq!(containers.iter().map(|e| e.file_name()).collect::<Vec<_>>(), [".rootfs"]);
    assert_eq!(std::fs::read_dir(containers[0].path()).unwrap().count(), 0, "nothing is left under the mount point");
    // One committed snapshot for the one layer and one for the sandbox's mount points on
    // top of it (kept for the next run); the container's own is gone.
    let snaps = std::fs::read_dir(b.root.path().join("snapshots/overlay")).unwrap().count();
    assert_eq!(snaps, 2);
}

#[test]
fn an_unnamed_containers_writes_are_gone_when_it_exits() {
    let Some(b) = setup() else { return };
    let (code, out, _) = run(&b, &["busybox", "sh", "-c", "echo hi > /etc/new && rm /bin/ls && cat /etc/new"]);
    assert_eq!((code, out.as_str()), (0, "hi\n"));
    // Two containers at once each see only their own writes.
    let first = b
        .cmd(&["run", "busybox", "sh", "-c", "echo one > /mine; sleep 2; cat /mine"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (code, out, _) = run(&b, &["busybox", "sh", "-c", "echo two > /mine; cat /mine"]);
    assert_eq!((code, out.as_str()), (0, "two\n"));
    let first = first.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&first.stdout), "one\n");
    let (code, out, _) = run(&b, &["busybox", "sh", "-c", "ls /etc/new /mine 2>&1; test -e /bin/ls && echo ls-back"]);
    assert_eq!(code, 0);
    assert!(out.contains("ls-back") && !out.contains("hi") && out.matches("No such file").count() == 2, "{out}");
}

#[test]
fn an_image_without_a_command_says_so() {
    let Some(b) = setup() else { return };
    let err = b.fails(&["run", "busybox"]);
    assert!(err.contains("no command specified"), "{err}");
}

#[test]
fn a_plain_user_binds_low_ports_in_the_containers_own_network_but_the_hosts_settings_stay() {
    let Some(b) = setup() else { return };
    let host = || std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let before = host();
    // docker's sysctls in every namespace it makes: ip_unprivileged_port_start=0 and
    // ping_group_range "0 2147483647".
    let listen = "nc -l -p 80 & sleep .5; kill -0 $! && echo LISTENING; \
                  cat /proc/sys/net/ipv4/ping_group_range";
    for net in ["none", "bridge"] {
        let (code, out, err) = run(&b, &["--rm", "--network", net, "-u", "1000", "busybox", "sh", "-c", listen]);
        assert_eq!((code, out.as_str()), (0, "LISTENING\n0\t2147483647\n"), "--network {net}: {err}");
    }
    // The default network is the bridge.
    let (_, out, err) =
        run(&b, &["--rm", "-u", "1000", "busybox", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]);
    assert_eq!(out, "0\n", "{err}");
    // The host's network keeps the host's settings, and so does the host.
    let (_, out, err) =
        run(&b, &["--rm", "--network", "host", "busybox", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]);
    assert_eq!(out, before, "{err}");
    assert_eq!(host(), before, "the host's value is unchanged");
}

#[test]
fn volumes_tmpfs_read_only_and_env_files() {
    let Some(b) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), "from the host\n").unwrap();
    std::fs::write(dir.path().join("env"), "# comment\nA=1\nB=two\n").unwrap();
    let ro = format!("{}:/in:ro", p(dir.path()));
    let (code, out, _) =
        run(&b, &["-v", &ro, "busybox", "sh", "-c", "cat /in/data; touch /in/x 2>/dev/null || echo refused"]);
    assert_eq!((code, out.as_str()), (0, "from the host\nrefused\n"));
    let rw = format!("{}:/out", p(dir.path()));
    run(&b, &["-v", &rw, "busybox", "sh", "-c", "echo written > /out/result"]);
    assert_eq!(std::fs::read_to_string(dir.path().join("result")).unwrap(), "written\n");
    let envf = p(&dir.path().join("env"));
    let (_, out, _) = run(
        &b,
        &[
            "--read-only",
            "--tmpfs",
            "/scratch",
            "--env-file",
            &envf,
            "busybox",
            "sh",
            "-c",
            "touch /x 2>/dev/null || echo ro; touch /scratch/y && echo tmp; echo $A$B; \
             for f in hosts resolv.conf hostname; do echo x 2>/dev/null >> /etc/$f || echo $f ro; done",
        ],
    );
    // berth's /etc files too, as docker's under --read-only (they were writable).
    assert_eq!(out, "ro\ntmp\n1two\nhosts ro\nresolv.conf ro\nhostname ro\n");
    // A working directory that is missing is made before the root turns read-only, as docker's.
    let (code, out, _) = run(&b, &["--read-only", "-w", "/new/dir", "busybox", "pwd"]);
    assert_eq!((code, out.as_str()), (0, "/new/dir\n"));
    // Neither a path (absolute, or starting with `.`) nor a volume's name.
    let out = b.output(&["run", "-v", "relative/path:/x", "busybox", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid volume name"));
}

#[test]
fn etc_files_and_masked_paths() {
    let Some(b) = setup() else { return };
    let (_, out, _) = run(
        &b,
        &["--hostname", "box", "busybox", "sh", "-c", "cat /etc/hostname; grep -c box /etc/hosts; wc -c < /proc/keys"],
    );
    assert_eq!(out, "box\n1\n0\n", "hostname files written and /proc/keys masked");
    let (code, out, _) =
        run(&b, &["--network", "none", "busybox", "sh", "-c", "ls /sys/class/net; touch /sys/x || echo read-only"]);
    assert_eq!((code, out.as_str()), (0, "lo\nread-only\n"), "/sys is mounted read-only, with the container's devices");
    let (_, out, _) =
        run(&b, &["busybox", "sh", "-c", "echo 10.0.0.9 db >> /etc/hosts && grep -c '^10.0.0.9 db$' /etc/hosts"]);
    assert_eq!(out, "1\n", "/etc/hosts is writable, as docker's is");
}

#[test]
fn mount_points_stay_inside_the_rootfs_and_keep_the_images_owners() {
    let Some(b) = setup() else { return };
    // An image whose /proc and /dev are symlinks out of the rootfs, and whose /etc has its
    // own owner and mode: the sandbox must mount inside the rootfs and copy /etc up as is.
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("tree")).unwrap();
    std::os::unix::fs::symlink("/tmp/berth-proc-escape", ctx.join("tree/proc")).unwrap();
    std::os::unix::fs::symlink("../../../../tmp/berth-dev-escape", ctx.join("tree/dev")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox:latest\nRUN chmod 750 /etc && chown 7:7 /etc\nCOPY tree/ /\n")
        .unwrap();
    for host in ["/tmp/berth-proc-escape", "/tmp/berth-dev-escape"] {
        let _ = std::fs::remove_dir_all(host);
    }
    b.ok(&["build", "-q", "-t", "links", &p(&ctx)]);
    let (code, out, err) =
        run(&b, &["links", "sh", "-c", "stat -c %a:%u /etc; head -c 5 /proc/self/status; ls /dev/null"]);
    assert_eq!((code, out.as_str()), (0, "750:7\nName:/dev/null\n"), "{err}");
    for host in ["/tmp/berth-proc-escape", "/tmp/berth-dev-escape"] {
        assert!(!std::path::Path::new(host).exists(), "a mount point was made on the host at {host}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("berth-proc-escape") && !mounts.contains("berth-dev-escape"), "{mounts}");
}

#[test]
fn signals_timeouts_and_a_killed_berth() {
    let Some(b) = setup() else { return };
    let (code, _, err) = run(&b, &["--timeout", "1", "--stop-timeout", "1", "busybox", "sleep", "30"]);
    assert_eq!(code, 124);
    assert!(err.contains("--timeout"), "{err}");
    // SIGTERM is forwarded; a process that handles it exits its own way.
    let child = b.cmd(&["run", "busybox", "sh", "-c", "trap 'exit 3' TERM; sleep 30 & wait"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(3));
    // SIGHUP, SIGUSR1 (and SIGQUIT, SIGUSR2) are passed on as they come, as docker's
    // --sig-proxy does: a service reloads, rotates its logs, and goes on.
    let script = "trap 'echo hup' HUP; trap 'echo usr1; exit 4' USR1; echo ready; while :; do sleep 30 & wait; done";
    let mut child =
        b.cmd(&["run", "busybox", "sh", "-c", script]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "hup\n", "the container got SIGHUP and runs on");
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!((rest.as_str(), child.wait().unwrap().code()), ("usr1\n", Some(4)));
    // One that ignores it (sleep as PID 1) is killed after --stop-timeout.
    let child = b.cmd(&["run", "--stop-timeout", "1", "busybox", "sleep", "30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(137));
    // berth killed outright: its container dies with it and no mount stays.
    let marker = format!("sleep 31{}", std::process::id() % 10);
    let child = b.cmd(&["run", "busybox", "sh", "-c", &marker]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::KILL).unwrap();
    let _ = child.wait_with_output();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ps = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
    assert!(ps.stdout.is_empty(), "the container outlived berth");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&p(b.root.path())));
}

#[test]
fn init_reaps_orphans_and_forwards_signals_to_a_command_that_ignores_them_as_pid_1() {
    let Some(b) = setup() else { return };
    // An orphan is reparented to PID 1; `sleep` as PID 1 never reaps it, berth's init does.
    let script = "(sleep 0.1 &); (sleep 0.6; ps -o stat,comm | grep -c '^Z') & exec sleep 1";
    let (_, out, _) = run(&b, &["busybox", "sh", "-c", script]);
    assert_eq!(out.trim(), "1", "without --init the orphan stays a zombie");
    let (_, out, _) = run(&b, &["--init", "busybox", "sh", "-c", script]);
    assert_eq!(out.trim(), "0", "--init reaped the orphan");
    let (code, out, _) = run(&b, &["--init", "busybox", "sh", "-c", "echo $$; exit 7"]);
    assert_eq!((code, out.trim()), (7, "2"), "the command is PID 2 and its exit code passes through");
    // sleep as PID 1 ignores SIGTERM (it took --stop-timeout above); behind --init it dies at once.
    let child = b.cmd(&["run", "--init", "--stop-timeout", "20", "busybox", "sleep", "30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let sent = std::time::Instant::now();
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(143));
    assert!(sent.elapsed() < std::time::Duration::from_secs(10), "the signal reached the command");
}

#[test]
fn tty_gives_a_real_pty_and_interactive_attaches_stdin() {
    let Some(b) = setup() else { return };
    let (code, out, _) = run(&b, &["-t", "busybox", "tty"]);
    assert_eq!((code, out.as_str()), (0, "/dev/pts/0\r\n"), "a pty of the container's own devpts (onlcr on)");
    let (code, out, _) = run(&b, &["busybox", "tty"]);
    assert_eq!((code, out.trim()), (1, "not a tty"));
    // Without a terminal of berth's, the pty is docker's default 24x80.
    let (_, out, _) = run(&b, &["-t", "busybox", "stty", "size"]);
    assert_eq!(out.trim(), "24 80");
    let (code, out, _) = run(&b, &["-t", "--init", "busybox", "sh", "-c", "tty; exit 4"]);
    assert_eq!((code, out.trim()), (4, "/dev/pts/0"), "--init keeps the pty for the command");
    // -i streams stdin in; without it the container's stdin is empty.
    let feed = |args: &[&str]| {
        use std::io::Write;
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let mut child =
            b.cmd(&full).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"hello from stdin\n").unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(feed(&["-i", "busybox", "cat"]), (Some(0), "hello from stdin\n".to_owned()));
    assert_eq!(feed(&["busybox", "cat"]), (Some(0), String::new()));
    // -it reads a terminal: berth's stdin is one here.
    let read_line = ["run", "-i", "-t", "busybox", "sh", "-c", "read line; echo got $line; exit 5"];
    let (code, out) = crate::util::with_terminal_stdin(&b, &read_line, b"hello from stdin\n");
    assert_eq!(code, Some(5));
    assert!(out.contains("got hello from stdin"), "{out:?}");
}

#[test]
fn interactive_tty_with_piped_stdin_fails_at_once_as_dockers_and_tty_alone_runs() {
    let Some(b) = setup() else { return };
    use std::io::Write;
    let start = std::time::Instant::now();
    // Before, berth echoed the input through the pty and `cat` never saw its end.
    let mut child = b
        .cmd(&["run", "--rm", "-it", "busybox", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "docker's exit code: {err}");
    assert!(err.contains("the input device is not a TTY"), "{err}");
    assert!(out.stdout.is_empty(), "nothing ran");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    // -t without -i: stdin is not attached, so no terminal is needed there.
    let out =
        b.cmd(&["run", "--rm", "-t", "busybox", "echo", "ok"]).stdin(std::process::Stdio::piped()).output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "ok\r\n"));
}

#[test]
fn cgroup_limits_stop_a_fork_bomb_and_kill_a_memory_hog() {
    let Some(b) = setup() else { return };
    let (_, out, err) =
        run(&b, &["--pids-limit", "8", "busybox", "sh", "-c", "for i in $(seq 20); do sleep 3 & done; echo tried"]);
    assert!(err.contains("can't fork") || out.contains("can't fork"), "the pids limit held: {out} {err}");
    let (code, _, _) =
        run(&b, &["--memory", "32m", "busybox", "sh", "-c", "x=$(head -c 100m /dev/zero | tr '\\0' a); echo ${#x}"]);
    assert_eq!(code, 137, "the hog is killed");
    // Inside, its own cgroup namespace: every group it is in is its root.
    let (code, out, _) =
        run(&b, &["--memory", "64m", "--cpus", "0.5", "busybox", "sh", "-c", "grep -c berth /proc/self/cgroup"]);
    assert_eq!((code, out.trim()), (1, "0"), "the container sees its groups as /");
    // Its limits where runtimes (the JVM, Node.js, Go) read them: its own groups, read-only.
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    let files = match v1 {
        true => "/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
        false => "/sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max",
    };
    let script = format!("cat {files}; touch /sys/fs/cgroup/x 2>/dev/null && echo writable; ls /sys/fs/cgroup | wc -l");
    let (code, out, err) = run(&b, &["--memory", "64m", "--pids-limit", "50", "busybox", "sh", "-c", &script]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!((code, &lines[..2]), (0, &["67108864", "50"][..]), "{out}{err}");
    assert!(!out.contains("writable"), "{out}");
    if v1 {
        // docker's set, which the JVM needs all of before it believes any limit, and on a
        // hybrid host the unified hierarchy, where the group every container gets is.
        let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
        let want = if hybrid { "6" } else { "5" };
        assert_eq!(lines[2], want, "memory, cpu, cpuacct, cpuset and pids (and unified): {out}");
    }
    // A JVM believes them (it needs memory, cpu, cpuacct and cpuset on v1): its heap is a
    // quarter of 256 MiB, not of the host's memory. Where the host has one, bound in.
    let java = Path::new("/usr/lib/jvm/java-17-openjdk-amd64/bin/java");
    if java.exists() {
        let mut args = vec!["--memory", "256m", "--cpus", "1"];
        let binds = ["/usr/lib/jvm", "/lib/x86_64-linux-gnu", "/lib64", "/usr/lib/x86_64-linux-gnu"]
            .map(|d| format!("{d}:{d}:ro"));
        for bind in &binds {
            args.extend(["-v", bind.as_str()]);
        }
        args.extend(["busybox", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "-XX:+PrintFlagsFinal", "-version"]);
        let (code, out, err) = run(&b, &args);
        let heap = out.lines().find(|l| l.split_whitespace().nth(1) == Some("MaxHeapSize")).unwrap_or_default();
        assert!(code == 0 && heap.split_whitespace().nth(3) == Some("132120576"), "{heap}{err}");
    } else {
        eprintln!("no JVM at {}: the heap check is skipped", java.display());
    }
    // From the host: the process joined berth's memory and cpu groups.
    let child = b.cmd(&["run", "--memory", "64m", "--cpus", "0.5", "busybox", "sleep", "2"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let kids = std::process::Command::new("pgrep").args(["-P", &child.id().to_string()]).output().unwrap();
    let pid = String::from_utf8_lossy(&kids.stdout).lines().next().unwrap_or("").trim().to_owned();
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let _ = child.wait_with_output();
    let joined = groups.matches("/berth/").count();
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    // On v1, docker's five, and on a hybrid host the unified one every container gets.
    let want = if hybrid { 6 } else { 5 };
    assert!(if v1 { joined == want } else { joined >= 1 }, "joined docker's groups: {groups}");
    // Its groups are gone once it exited (other tests' containers may have groups now).
    let ids: BTreeSet<&str> = groups.lines().filter_map(|l| l.split("/berth/").nth(1)).collect();
    assert_eq!(ids.len(), 1, "{groups}");
    let mut left = vec![];
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().map(|e| e.unwrap().path()) {
        for dir in [hierarchy.join("berth"), hierarchy.clone()] {
            left.extend(ids.iter().map(|id| dir.join(id)).filter(|d| d.is_dir()));
        }
    }
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

#[test]
fn run_pulls_an_image_that_is_not_in_the_store() {
    let Some(a) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = crate::util::Server::start(&dir.path().join("reg"), &[]);
    let name = format!("{}/smoke/busybox:1", server.addr);
    a.ok(&["tag", "busybox", &name]);
    a.ok(&["push", "-q", &name]);
    let b = Berth::new();
    let (code, out, err) = run(&b, &[&name, "echo", "pulled and ran"]);
    assert_eq!((code, out.trim()), (0, "pulled and ran"), "{err}");
    assert!(err.contains("Unable to find image"), "{err}");
    assert!(b.ok(&["images"]).contains("smoke/busybox"));
}

#[test]
fn open_files_limit_is_dockers_but_never_above_the_hosts_hard_limit() {
    let Some(b) = setup() else { return };
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(u64::MAX).min(1_048_576);
    let (_, out, _) = run(&b, &["busybox", "sh", "-c", "ulimit -n; ulimit -Hn"]);
    assert_eq!(out, format!("{hard}\n{hard}\n"));
}

#[test]
fn a_device_node_made_in_the_container_opens_nothing_unless_privileged() {
    let Some(b) = setup() else { return };
    // CAP_MKNOD is docker's default, and berth has no device cgroup: a node for the host's
    // disk, made on the root, in /dev, in a volume or on a tmpfs asked for `dev`, would
    // read it. Each is nodev, so the nodes are made and open nothing; nor do they through a
    // read-only volume of the same directory.
    let disk = crate::util::host_disk();
    let mut dirs = vec!["/tmp", "/dev", "/tm"];
    let probe_dir = tempfile::tempdir().unwrap();
    let host_nodev =
        rustix::fs::statvfs(probe_dir.path()).unwrap().f_flag.contains(rustix::fs::StatVfsMountFlags::NODEV);
    if host_nodev {
        eprintln!("{} is nodev on the host: volumes are left out", p(probe_dir.path()));
    } else {
        dirs.push("/vol");
    }
    let through_ro = "(echo x > /ro/null2) 2>/dev/null && echo /ro opened || echo /ro refused; ";
    let volumes = |vol: &Path| {
        let at = |to: &str| ["-v".to_owned(), format!("{}:{to}", p(vol))];
        if host_nodev {
            vec![]
        } else {
            [at("/vol"), at("/ro:ro")].concat()
        }
    };
    // The nodes made and opened in each place, under `flags`, with fresh volumes; then `tail`.
    let nodes = |flags: &[&str], tail: &str| {
        let vol = tempfile::tempdir().unwrap();
        let script = crate::util::make_and_open_nodes(&dirs, disk) + if host_nodev { "" } else { through_ro } + tail;
        let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        args.extend(volumes(vol.path()));
        args.extend(["--tmpfs", "/tm:dev", "busybox", "sh", "-c", &script].map(String::from));
        let (code, out, err) = run(&b, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = nodes(&[], "grep CapEff /proc/self/status; echo ok > /dev/null && head -c 3 /dev/zero | wc -c");
    for d in &dirs {
        assert!(out.contains(&format!("{d} made\n{d} refused\n{d} refused\n")), "{d}: {out}");
    }
    assert!(host_nodev || out.contains("/ro refused"), "{out}");
    assert!(!out.contains("opened"), "{out}");
    // docker's default set (0xa80425fb), CAP_MKNOD (bit 27) with it.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.ends_with("3\n"), "the sandbox's own /dev nodes work: {out}");
    // The same script, privileged (docker's --privileged opens every device): what each
    // refusal above stopped.
    let out = nodes(&["--privileged"], "");
    for d in &dirs {
        assert!(out.contains(&format!("{d} made\n{d} opened\n{d} opened\n")), "{d}: {out}");
    }
    assert!(host_nodev || out.contains("/ro opened"), "{out}");
    // crun, which berth runs without a cgroup manager, so without a device cgroup: no
    // CAP_MKNOD there, or the node would open.
    if crate::util::require_tool("crun") {
        let script = "mknod /tmp/n c 1 3 2>/dev/null && echo made || echo refused";
        let (code, out, err) = run(&b, &["--runtime", "crun", "busybox", "sh", "-c", script]);
        assert_eq!((code, out.as_str()), (0, "refused\n"), "{err}");
    }
}

#[test]
fn device_gives_a_host_node_that_opens_where_a_volume_of_it_does_not() {
    let Some(b) = setup() else { return };
    // Made here, as root: a directory of nodes, one of them deeper down.
    let dir = tempfile::tempdir().unwrap();
    if rustix::fs::statvfs(dir.path()).unwrap().f_flag.contains(rustix::fs::StatVfsMountFlags::NODEV) {
        eprintln!("skipping: {} is nodev on the host, where no node made there opens", p(dir.path()));
        return;
    }
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for (name, minor) in [("zero", "5"), ("sub/full", "7")] {
        let node = p(&dir.path().join(name));
        crate::util::run_tool(std::process::Command::new("mknod").args(["-m", "666", &node, "c", "1", minor]));
    }
    std::fs::write(dir.path().join("plain"), "").unwrap();
    let zero = format!("{}/zero", p(dir.path()));
    let opens = |path: &str| format!("head -c 3 {path} 2>/dev/null | wc -c");
    let (code, out, err) = run(&b, &["busybox", "sh", "-c", "test -e /dev/z || echo absent"]);
    assert_eq!((code, out.as_str()), (0, "absent\n"), "{err}");
    // One node, at another path; a directory's nodes at their places under the target, and
    // only its nodes: the directory itself is not bound, so a node made there opens nothing.
    let script = format!(
        "ls -l /dev/z | cut -c1; {}; {}; test -e /dev/d/plain || echo no plain; \
         mknod /dev/d/null2 c 1 3 && {{ (echo x > /dev/d/null2) 2>/dev/null && echo opened || echo refused; }}",
        opens("/dev/z"),
        opens("/dev/d/sub/full")
    );
    let devs = format!("{zero}:/dev/z");
    let tree = format!("{}:/dev/d", p(dir.path()));
    let (code, out, err) = run(&b, &["--device", &devs, "--device", &tree, "busybox", "sh", "-c", &script]);
    assert_eq!((code, out.as_str()), (0, "c\n3\n3\nno plain\nrefused\n"), "{err}");
    // The same nodes through a writable volume: nodev, they open nothing.
    let vol = format!("{}:/vol", p(dir.path()));
    let (code, out, err) = run(&b, &["-v", &vol, "busybox", "sh", "-c", &opens("/vol/sub/full")]);
    assert_eq!((code, out.as_str()), (0, "0\n"), "{err}");
    // runc makes the node and allows it in its device cgroup.
    if crate::util::require_tool("runc") {
        let args = ["--runtime", "runc", "--device", &devs, "busybox", "sh", "-c"];
        let (code, out, err) = run(&b, &[&args[..], &[opens("/dev/z").as_str()]].concat());
        assert_eq!((code, out.as_str()), (0, "3\n"), "{err}");
    }
    // docker's HostConfig.Devices, as given.
    b.ok(&["create", "--name", "withdev", "--device", &devs, "busybox", "true"]);
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "withdev"])).unwrap();
    let d = &inspect[0]["HostConfig"]["Devices"][0];
    assert_eq!((d["PathOnHost"].as_str(), d["PathInContainer"].as_str()), (Some(zero.as_str()), Some("/dev/z")));
    assert_eq!(d["CgroupPermissions"], "rwm");
    // What cannot be given fails before the start, with docker's 125.
    for (arg, says) in [
        (format!("{zero}:/dev/z:r"), "no device cgroup"),
        ("/no/such/node".to_owned(), "error gathering device information"),
        (p(&dir.path().join("plain")), "not a device node"),
    ] {
        let (code, _, err) = run(&b, &["--device", &arg, "busybox", "true"]);
        assert_eq!(code, 125, "{arg}: {err}");
        assert!(err.contains(says), "{arg}: {err}");
    }
}

#[test]
fn sysctl_sets_the_containers_own_namespaces_and_never_the_hosts() {
    let Some(b) = setup() else { return };
    let read = |key: &str| std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap();
    // (The bridge sets the host's own ip_forward: only the other two are compared.)
    let host = (read("kernel/shmmni"), read("net/core/somaxconn"));
    let script = "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni /proc/sys/net/core/somaxconn";
    let settings =
        ["--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmni=1234", "--sysctl", "net.core.somaxconn=77"];
    for network in ["none", "bridge"] {
        let args = [&settings[..], &["--network", network, "busybox", "sh", "-c", script]].concat();
        let (code, out, err) = run(&b, &args);
        assert_eq!((code, out.as_str()), (0, "1\n1234\n77\n"), "{network}: {err}");
    }
    assert_eq!((read("kernel/shmmni"), read("net/core/somaxconn")), host);
    // runc writes them too (linux.sysctl).
    if crate::util::require_tool("runc") {
        let args = [&settings[..], &["--runtime", "runc", "--network", "none", "busybox", "sh", "-c", script]].concat();
        let (code, out, err) = run(&b, &args);
        assert_eq!((code, out.as_str()), (0, "1\n1234\n77\n"), "{err}");
    }
    // A detached container keeps them across a restart; inspect shows docker's map.
    let id = b.ok(&["run", "-d", "--sysctl", "kernel.shmmni=4321", "busybox", "sleep", "60"]).trim().to_owned();
    b.ok(&["restart", "-t", "0", &id]);
    assert_eq!(b.ok(&["exec", &id, "cat", "/proc/sys/kernel/shmmni"]), "4321\n");
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", &id])).unwrap();
    assert_eq!(inspect[0]["HostConfig"]["Sysctls"]["kernel.shmmni"], "4321");
    b.ok(&["rm", "-f", &id]);
    // What would change the host's kernel is refused before the start, with docker's 125.
    for (args, says) in [
        (vec!["--sysctl", "vm.swappiness=10"], "is not in a separate kernel namespace"),
        (vec!["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"], "not allowed in host network namespace"),
        (vec!["--sysctl", "net.ipv4.ip_forward"], "expected KEY=VALUE"),
        (vec!["--sysctl", "net/ipv4/ip_forward=1"], "invalid sysctl name"),
    ] {
        let (code, _, err) = run(&b, &[&args[..], &["busybox", "true"]].concat());
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A key the container's namespace lacks fails the start, with the kernel's reason.
    let (code, _, err) = run(&b, &["--sysctl", "net.core.no_such_key=1", "busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
}

#[test]
fn ulimits_are_set_and_capped_at_berths_own_hard_limit() {
    let Some(b) = setup() else { return };
    let script = "ulimit -u; ulimit -Hu; ulimit -c; ulimit -n";
    let args = ["--ulimit", "nproc=100:200", "--ulimit", "core=0", "--ulimit", "nofile=64:128", "busybox", "sh", "-c"];
    let mut full: Vec<&str> = args.to_vec();
    full.push(script);
    let (code, out, _) = run(&b, &full);
    assert_eq!((code, out.as_str()), (0, "100\n200\n0\n64\n"));
    // The same limits reach runc through the bundle's process.rlimits.
    if crate::util::require_tool("runc") {
        let mut with_runc = vec!["--runtime", "runc"];
        with_runc.extend_from_slice(&full);
        let (code, out, err) = run(&b, &with_runc);
        assert_eq!((code, out.as_str()), (0, "100\n200\n0\n64\n"), "{err}");
    }
    // Asking for more than berth's own hard limit gets that limit and a warning, not a failure.
    let host = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let (code, out, err) = run(&b, &["--ulimit", "nofile=-1", "busybox", "sh", "-c", "ulimit -Hn"]);
    assert_eq!(code, 0, "{err}");
    match host {
        Some(h) => {
            assert_eq!(out, format!("{h}\n"));
            assert!(err.contains("capped at berth's own"), "{err}");
        }
        None => assert_eq!(out, "unlimited\n"),
    }
    let out = b.output(&["run", "--ulimit", "nofile=10:5", "busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "a usage error of run, docker's 125: {err}");
    assert!(err.contains("invalid ulimit \"nofile=10:5\": the soft limit is above the hard limit"), "{err}");
}

#[test]
fn named_containers_are_kept_listed_committed_and_removed() {
    let Some(b) = setup() else { return };
    let script = "echo ready > /etc/motd; rm /bin/vi; echo out; echo err >&2; printf tail; exit 3";
    let (code, out, err) = run(&b, &["--name", "setup", "busybox", "sh", "-c", script]);
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\ntail", "err\n"), "passed on as it came");
    // Its output is in its log too, as docker keeps a foreground run's.
    assert_eq!(b.ok(&["logs", "setup"]), "out\ntail");
    let logs = b.output(&["logs", "setup"]);
    assert_eq!(String::from_utf8_lossy(&logs.stderr), "err\n");
    let ps = b.ok(&["ps", "-a"]);
    assert!(ps.contains("setup") && ps.contains("Exited (3)"), "{ps}");
    let err = b.fails(&["run", "--name", "setup", "busybox", "true"]);
    assert!(err.contains("already in use"), "{err}");
    let id = b.ok(&["commit", "-m", "add motd", "setup", "app:base"]);
    assert!(id.starts_with("sha256:"));
    let (_, out, _) = run(&b, &["app:base", "sh", "-c", "cat /etc/motd; test -e /bin/vi || echo vi-gone"]);
    assert_eq!(out, "ready\nvi-gone\n", "the commit holds the new file and the deletion");
    let history = b.ok(&["history", "app:base"]);
    assert!(history.contains("add motd") && history.contains("berth commit setup"), "{history}");
    assert_eq!(b.ok(&["rm", "setup"]).trim(), "setup");
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    let err = b.fails(&["commit", "setup"]);
    assert!(err.contains("no such container"), "{err}");
}

/// The smoke tests berth's own sandbox passes, under an OCI runtime through a bundle.
fn smoke_tests_under(runtime: &str) {
    let Some(b) = setup() else { return };
    if !crate::util::require_tool(runtime) {
        return;
    }
    let (code, out, err) = run(&b, &["--runtime", runtime, "busybox", "sh", "-c", "echo $$ $(hostname); exit 5"]);
    let short_id = |h: &str| h.len() == 12 && h.bytes().all(|c| c.is_ascii_hexdigit());
    assert!(code == 5 && out.starts_with("1 ") && short_id(out[2..].trim_end()), "{code} {out} {err}");
    let (_, out, err) = run(
        &b,
        &[
            "--runtime",
            runtime,
            "-u",
            "berth",
            "-w",
            "/tmp",
            "-e",
            "FOO=bar",
            "busybox",
            "sh",
            "-c",
            "id -u; pwd; echo $FOO",
        ],
    );
    assert_eq!(out, "1000\n/tmp\nbar\n", "{err}");
    let (_, out, err) = run(
        &b,
        &[
            "--runtime",
            runtime,
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "ls /proc/net/dev >/dev/null && tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        ],
    );
    assert_eq!(out, "lo\n", "network none under {runtime} too: {err}");
    // The bridge (the default): the runtime joins the namespace berth made, with its eth0.
    let (_, out, err) =
        run(&b, &["--runtime", runtime, "busybox", "sh", "-c", "ip -4 addr show eth0 | grep -c 10.90."]);
    assert_eq!(out, "1\n", "the bridge under {runtime}: {err}");
    // berth's /etc files are the runtime's too (before: the image's empty ones, no name server).
    let script = "grep -c \"$(hostname)\" /etc/hosts; grep -c '^nameserver ' /etc/resolv.conf; cat /etc/hostname";
    let (_, out, err) = run(&b, &["--runtime", runtime, "--hostname", "smoke", "busybox", "sh", "-c", script]);
    assert_eq!(out, "1\n1\nsmoke\n", "the /etc files under {runtime}: {err}");
    assert_eq!(std::fs::read_dir(b.root.path().join("containers")).unwrap().count(), 0, "no bundle left");
    let snaps = std::fs::read_dir(b.root.path().join("snapshots/overlay")).unwrap().count();
    assert_eq!(snaps, 2, "the layer and scaffold snapshots survive the bundle's removal");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&p(b.root.path())), "a mount of the store is left: {mounts}");
}

#[test]
fn the_same_smoke_tests_pass_under_runc() {
    smoke_tests_under("runc");
}

#[test]
fn the_same_smoke_tests_pass_under_crun() {
    smoke_tests_under("crun");
}

#[test]
fn no_file_descriptor_of_berths_reaches_the_container() {
    let Some(b) = setup() else { return };
    // berth itself is started with an extra descriptor that is not close-on-exec.
    let keep = std::fs::File::open("/dev/null").unwrap();
    let flags = rustix::io::fcntl_getfd(&keep).unwrap();
    rustix::io::fcntl_setfd(&keep, flags - rustix::io::FdFlags::CLOEXEC).unwrap();
    let inherited = std::os::fd::AsRawFd::as_raw_fd(&keep);
    // PID 1 (the shell, waiting for ls; no pipeline, whose pipe ends would show) lists its fds.
    let out = b.output(&["run", "busybox", "sh", "-c", "ls /proc/1/fd; true"]);
    let listed = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(listed, "0 1 2", "berth passed fd {inherited} or others on");
}

#[test]
fn words_after_the_image_go_to_the_container_even_when_they_start_with_a_dash() {
    let Some(b) = setup() else { return };
    // `--port` and `-e` after the image are the container's, not berth's flags.
    let (code, out, err) = run(&b, &["--rm", "busybox", "echo", "--port", "9000", "-e", "x"]);
    assert_eq!((code, out.as_str()), (0, "--port 9000 -e x\n"), "{err}");
    // A command that is itself a flag of berth's (`--rm`) after the image is passed on too.
    let (code, out, err) = run(&b, &["-e", "A=1", "busybox", "sh", "-c", "echo $A \"$@\"", "sh", "--rm", "-q"]);
    assert_eq!((code, out.as_str()), (0, "1 --rm -q\n"), "{err}");
}

#[test]
fn unpacking_a_layer_records_its_unpacked_size_for_images() {
    let Some(b) = setup() else { return };
    let sizes = b.root.path().join("layer-sizes");
    let read = || -> Vec<(std::ffi::OsString, String)> {
        let mut v: Vec<_> = std::fs::read_dir(&sizes)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name(), std::fs::read_to_string(e.path()).unwrap()))
            .collect();
        v.sort();
        v
    };
    let at_import = read();
    assert_eq!(at_import.len(), 1, "the import recorded its layer's size");
    // As after a pull or load: the store knows no unpacked size yet.
    std::fs::remove_dir_all(&sizes).unwrap();
    let (code, _, err) = run(&b, &["--rm", "busybox", "true"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read(), at_import, "the unpack for run recorded the same size");
}

#[test]
fn what_docker_makes_or_takes_works_a_working_directory_a_volume_source_tmpfs_words_shm_and_zero_limits() {
    let Some(b) = setup() else { return };
    // Before, each of these failed with "Invalid argument" and exit code 126.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("made/by/run");
    let volume = format!("{}:/data", p(&source));
    let (code, out, err) =
        run(&b, &["--rm", "-w", "/no/such/dir", "-v", &volume, "busybox", "sh", "-c", "pwd; touch /data/x"]);
    assert_eq!((code, out.trim()), (0, "/no/such/dir"), "{err}");
    assert!(source.join("x").exists(), "the missing volume source was made, as docker makes it");
    let (code, out, err) =
        run(&b, &["--rm", "--tmpfs", "/run:rw,noexec,nosuid,size=65536k", "busybox", "grep", " /run ", "/proc/mounts"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("noexec") && out.contains("nosuid") && out.contains("size=65536k"), "{out}");
    // What docker refuses is refused before the start, with docker's 125 and the reason.
    let (code, _, err) = run(&b, &["--rm", "--tmpfs", "/run:size=1m,bogus", "busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("--tmpfs /run:size=1m,bogus: invalid tmpfs option \"bogus\""), "{err}");
    let long = "h".repeat(65);
    let (code, _, err) = run(&b, &["--rm", "--hostname", &long, "busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("--hostname: 65 bytes, where the kernel takes at most 64"), "{err}");
    // A uid the image's passwd does not list gets group 0, as docker gives it (before: its uid).
    let (_, out, err) = run(&b, &["--rm", "-u", "4321", "busybox", "sh", "-c", "id -u; id -g"]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["4321", "0"], "{err}");
    // /dev/shm is a tmpfs any user may write, as docker's.
    let (code, _, err) = run(&b, &["--rm", "-u", "1000", "busybox", "touch", "/dev/shm/x"]);
    assert_eq!(code, 0, "{err}");
    // 0 is no limit; less than 6 MiB of memory is refused, as docker refuses it.
    let (code, _, err) =
        run(&b, &["--rm", "-m", "0", "--pids-limit", "0", "--cpus", "0", "busybox", "sh", "-c", "ls / | cat"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&b, &["--rm", "-m", "1k", "busybox", "true"]);
    assert!(code != 0 && err.contains("Minimum memory limit allowed is 6MB"), "{err}");
    let (code, _, err) = run(&b, &["--rm", "-v", &format!("{}:/", p(dir.path())), "busybox", "true"]);
    assert!(code != 0 && err.contains("destination can't be '/'"), "{err}");
}

#[test]
fn a_tmpfs_is_noexec_nosuid_nodev_as_dockers_unless_its_options_say_exec() {
    let Some(b) = setup() else { return };
    let copy_and_run = "cp /bin/busybox /x/; /x/busybox true; echo $?; grep ' /x ' /proc/mounts";
    let (code, out, err) = run(&b, &["--rm", "--tmpfs", "/x", "busybox", "sh", "-c", copy_and_run]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("126\n"), "a program on a default --tmpfs cannot run: {out}");
    assert!(out.contains("nosuid") && out.contains("nodev") && out.contains("noexec"), "{out}");
    let (_, out, err) = run(&b, &["--rm", "--tmpfs", "/x:size=8m", "busybox", "sh", "-c", copy_and_run]);
    assert!(out.starts_with("126\n") && out.contains("size=8192k"), "given options keep the defaults: {out}{err}");
    let (_, out, err) = run(&b, &["--rm", "--tmpfs", "/x:exec", "busybox", "sh", "-c", copy_and_run]);
    assert!(out.starts_with("0\n") && !out.contains("noexec"), "`exec` turns it on: {out}{err}");
}

/// The per-container cgroup directories berth has made, on every controller.
fn berth_cgroups() -> std::collections::BTreeSet<std::path::PathBuf> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut bases = vec![std::path::PathBuf::from("/sys/fs/cgroup/berth")];
    for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        bases.push(c.path().join("berth"));
    }
    for base in bases {
        for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
            if e.path().is_dir() && e.file_name().len() == 64 {
                dirs.insert(e.path());
            }
        }
    }
    dirs
}

/// Dates a cgroup directory two minutes back, as if it were left long ago.
fn backdate(dir: &std::path::Path) {
    let ok = std::process::Command::new("touch").args(["-d", "2 minutes ago"]).arg(dir).status().unwrap().success();
    assert!(ok, "touch {}", dir.display());
}

#[test]
fn the_cgroup_of_a_killed_foreground_run_goes_with_a_later_run_and_a_live_ones_stays() {
    let Some(b) = setup() else { return };
    let before = berth_cgroups();
    let mut child = b.cmd(&["run", "--rm", "-m", "64m", "busybox", "sleep", "60"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Ours: a new group holding a child of this berth (other tests make groups meanwhile).
    let ours = |d: &std::path::Path| {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        procs.lines().any(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["PPid:", &child.id().to_string()])
        })
    };
    let made = loop {
        let made: Vec<_> = berth_cgroups().difference(&before).filter(|d| ours(d)).cloned().collect();
        if !made.is_empty() || std::time::Instant::now() > deadline {
            break made;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!made.is_empty(), "the foreground run made no cgroup");
    // SIGKILL: berth has no time to clean up, the container dies with it (parent-death signal).
    child.kill().unwrap();
    child.wait().unwrap();
    let gone_or_empty =
        |d: &std::path::Path| std::fs::read_to_string(d.join("cgroup.procs")).map_or(true, |p| p.trim().is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !made.iter().all(|d| gone_or_empty(d)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(made.iter().all(|d| d.is_dir()), "the killed run's cgroup is left behind, as expected");
    let live_id = b.ok(&["run", "-d", "--name", "live-cg", "-m", "64m", "busybox", "sleep", "60"]);
    let live: Vec<_> = berth_cgroups().into_iter().filter(|d| d.ends_with(live_id.trim())).collect();
    for d in made.iter().chain(&live) {
        backdate(d);
    }
    // The next run with limits sweeps the empty leftovers, never a group with a process.
    let code = run(&b, &["--rm", "-m", "64m", "busybox", "true"]).0;
    let left: Vec<_> = made.iter().filter(|d| d.exists()).collect();
    let live_kept = !live.is_empty() && live.iter().all(|d| d.is_dir());
    b.ok(&["rm", "-f", "live-cg"]);
    assert_eq!(code, 0);
    assert!(left.is_empty(), "left: {left:?}");
    assert!(live_kept, "the running container's cgroup stays: {live:?}");
}

#[test]
fn shm_size_and_group_add_reach_the_process_exec_and_inspect() {
    let Some(b) = setup() else { return };
    let script = "df -k /dev/shm | tail -n 1 | awk '{print $2}'; id -G";
    let (code, out, err) = run(&b, &["--rm", "busybox", "sh", "-c", script]);
    assert_eq!((code, out.as_str()), (0, "65536\n0\n"), "{err}");
    let mut runtimes = vec!["berth"];
    runtimes.extend(["runc"].into_iter().filter(|r| crate::util::require_tool(r)));
    for runtime in runtimes {
        let args = ["--rm", "--runtime", runtime, "--shm-size", "96m", "--group-add", "4321", "--group-add"];
        let mut args = args.to_vec();
        args.extend(["nogroup", "-u", "berth", "busybox", "sh", "-c", script]);
        let (code, out, err) = run(&b, &args);
        assert_eq!((code, out.as_str()), (0, "98304\n1000 10 4321 65534\n"), "under {runtime}: {err}");
    }
    // A group name the image does not have is refused before the start, with docker's 125,
    // detached too (before: 126 and an exited container).
    for detach in [&[][..], &["-d"][..]] {
        let mut args = detach.to_vec();
        args.extend(["--rm", "--group-add", "nosuch", "busybox", "true"]);
        let (code, _, err) = run(&b, &args);
        assert_eq!(code, 125, "{detach:?}: {err}");
        assert!(err.contains("unable to find group nosuch"), "{err}");
    }
    assert_eq!(b.ok(&["ps", "-aq"]), "", "nothing is left of the refused container");
    // docker's size forms: fractions, MB, MiB.
    for (size, kib) in [("1.5m", "1536"), ("64MiB", "65536"), ("32MB", "32768")] {
        let (code, out, err) = run(&b, &["--rm", "--shm-size", size, "busybox", "sh", "-c", script]);
        assert_eq!((code, out.lines().next()), (0, Some(kib)), "--shm-size {size}: {err}");
    }
    // A detached container keeps both: exec's processes get the groups, inspect shows them.
    b.ok(&["run", "-d", "--name", "shm", "--shm-size", "1g", "--group-add", "5", "busybox", "sleep", "60"]);
    assert_eq!(b.ok(&["exec", "shm", "sh", "-c", script]), "1048576\n0 5\n");
    let shown = b.ok(&["inspect", "-f", "{{.HostConfig.ShmSize}} {{json .HostConfig.GroupAdd}}", "shm"]);
    assert_eq!(shown.trim(), "1073741824 [\"5\"]");
    b.ok(&["rm", "-f", "shm"]);
}

#[test]
fn pull_policy_and_the_container_id_file_are_dockers() {
    let Some(a) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    // --pull never: a missing image is an error, and nothing is fetched.
    let b = Berth::new();
    let (code, _, err) = run(&b, &["--pull", "never", "--rm", "nosuch:1", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("No such image: nosuch:1"), "{err}");
    // --pull always takes the registry's image even when one of that name is stored.
    let server = crate::util::Server::start(&dir.path().join("reg"), &[]);
    let name = format!("{}/smoke/pulled:1", server.addr);
    a.ok(&["tag", "busybox", &name]);
    a.ok(&["push", "-q", &name]);
    let (code, _, err) = run(&b, &["--rm", &name, "true"]);
    assert!(code == 0 && err.contains("Unable to find image"), "{err}");
    let file = dir.path().join("marker");
    std::fs::write(&file, "second\n").unwrap();
    a.ok(&["commit", "--change", "CMD cat /marker", &make_with(&a, &file), &name]);
    a.ok(&["push", "-q", &name]);
    let (_, out, _) = run(&b, &["--rm", &name, "sh", "-c", "cat /marker 2>/dev/null || echo stale"]);
    assert_eq!(out, "stale\n", "--pull missing uses the stored image");
    let (code, out, err) = run(&b, &["--rm", "--pull", "always", &name]);
    assert_eq!((code, out.as_str()), (0, "second\n"), "{err}");
    // -q: the same pull, not a word of it.
    let (code, out, err) = run(&b, &["--rm", "-q", "--pull", "always", &name]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "second\n", ""));
    // --cidfile: the ID, no newline; a file already there is refused and left as it was;
    // a run that fails before its container exists leaves no file.
    let cid = dir.path().join("cid");
    let id = a.ok(&["run", "-d", "--cidfile", &p(&cid), "--name", "c1", "busybox", "sleep", "60"]);
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id.trim());
    let (code, _, err) = run(&a, &["--cidfile", &p(&cid), "--rm", "busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("container ID file found"), "{err}");
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id.trim());
    let other = dir.path().join("cid2");
    let (code, _, _) = run(&a, &["--cidfile", &p(&other), "--pull", "never", "nosuch:1", "true"]);
    assert!(code == 125 && !other.exists(), "the ID file of a run that failed is removed");
    let (code, _, err) = run(&a, &["--cidfile", "", "--rm", "busybox", "true"]);
    assert_eq!(code, 0, "an empty --cidfile is none, as docker's: {err}");
    let (code, _, err) = run(&a, &["--cidfile", &p(&other), "--rm", "busybox", "true"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&other).unwrap().len(), 64, "a foreground run writes its ID too");
    a.ok(&["rm", "-f", "c1"]);
}

/// A stopped container of `a`'s busybox with `file` copied in as /marker, by name.
fn make_with(a: &Berth, file: &Path) -> String {
    a.ok(&["create", "--name", "marked", "busybox", "true"]);
    a.ok(&["cp", &p(file), "marked:/marker"]);
    "marked".into()
}

/// What a container sees of docker's system paths: whether the host's loop-control node is
/// there, whether /proc/keys and /proc/sys are mounted over (masked, read-only), and
/// whether /sys is read-only.
const SYSTEM_PATHS: &str = "test -c /dev/loop-control && echo loop || echo no-loop; \
    grep -c ' /proc/keys ' /proc/self/mountinfo; grep -c ' /proc/sys ' /proc/self/mountinfo; \
    awk '$2 == \"/sys\" { split($4, o, \",\"); print \"sys \" o[1] }' /proc/self/mounts";

#[test]
fn privileged_gives_the_hosts_devices_no_masked_paths_and_a_writable_sys_as_dockers() {
    let Some(b) = setup() else { return };
    if !Path::new("/dev/loop-control").exists() {
        assert!(!crate::util::strict(), "this host has no /dev/loop-control");
        return eprintln!("skipping: this host has no /dev/loop-control");
    }
    let confined = "no-loop\n1\n1\nsys ro\n";
    let privileged = "loop\n0\n0\nsys rw\n";
    let mut runtimes = vec!["berth"];
    if crate::util::require_tool("runc") {
        runtimes.push("runc");
    }
    for runtime in runtimes {
        let cases: [(&[&str], &str); 4] = [
            (&[], confined),
            // Before, --privileged kept the masks, a read-only /sys and /dev's six nodes.
            (&["--privileged"], privileged),
            (&["--security-opt", "systempaths=unconfined"], "no-loop\n0\n0\nsys ro\n"),
            // No AppArmor profile and no SELinux label is what berth does anyway.
            (&["--security-opt", "apparmor=unconfined", "--security-opt", "label=disable"], confined),
        ];
        for (flags, expected) in cases {
            let args = [&["--rm", "--runtime", runtime][..], flags, &["busybox", "sh", "-c", SYSTEM_PATHS]].concat();
            let (code, out, err) = run(&b, &args);
            assert_eq!((code, out.as_str()), (0, expected), "{runtime} {flags:?}: {err}");
        }
    }
    // A named privileged container gets the nodes again at each start, as they are then.
    b.ok(&["create", "--name", "p", "--privileged", "busybox", "sh", "-c", "test -c /dev/loop-control"]);
    b.ok(&["start", "-a", "p"]);
    for (opt, why) in [("apparmor=docker-default", "no AppArmor profile"), ("label=type:svirt_t", "SELinux label")] {
        let (code, _, err) = run(&b, &["--rm", "--security-opt", opt, "busybox", "true"]);
        assert!(code == 125 && err.contains(why), "{opt}: {code} {err}");
    }
}

#[test]
fn every_word_after_the_image_is_the_containers_even_one_that_is_a_berth_flag() {
    let Some(b) = setup() else { return };
    // `-c` is berth's `--cpu-shares`, `-m` its `--memory`, `-d` its `--detach`: after the
    // image they are the command's, as docker reads them.
    let (code, out, err) = run(&b, &["--rm", "--entrypoint", "sh", "busybox", "-c", "echo from sh"]);
    assert_eq!((code, out.as_str()), (0, "from sh\n"), "{err}");
    let (code, out, err) = run(&b, &["--rm", "--entrypoint", "echo", "busybox", "-m", "4", "-d", "--rm"]);
    assert_eq!((code, out.as_str()), (0, "-m 4 -d --rm\n"), "{err}");
    // Before the image, an unknown option is still refused.
    let (code, _, err) = run(&b, &["--rm", "--bogus", "busybox", "true"]);
    assert!(code == 125 && err.contains("unexpected argument '--bogus'"), "{code} {err}");
}
