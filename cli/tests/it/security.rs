//! Seccomp and capabilities (issue 14): what a root process in a container may reach of the
//! host's kernel. A static probe (probe.c, built here with cc) makes the raw syscalls
//! inside containers made by `berth run` and by a RUN step of `berth build`.

use std::path::{Path, PathBuf};

use crate::util::{p, require_tool, strict, Berth};

/// Docker's default capability set, as /proc/self/status prints it.
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// An empty capability set, as /proc/self/status prints it.
const NO_CAPS: &str = "0000000000000000";

/// A store with the busybox image and the probe built into `dir`, where this test can run.
fn setup(dir: &Path) -> Option<(Berth, PathBuf)> {
    if !rustix::process::geteuid().is_root() {
        assert!(!strict(), "the security tests need root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: berth run needs root");
        return None;
    }
    if !require_tool("cc") {
        return None;
    }
    let probe = dir.join("probe");
    let source = dir.join("probe.c");
    std::fs::write(&source, include_str!("probe.c")).unwrap();
    let out =
        std::process::Command::new("cc").args(["-static", "-O2", "-o", &p(&probe), &p(&source)]).output().unwrap();
    assert!(out.status.success(), "cc -static probe.c: {}", String::from_utf8_lossy(&out.stderr));
    let b = Berth::new();
    b.busybox("busybox:latest").then_some((b, probe))
}

/// `berth run [flags] busybox /probe CHECKS...` with the probe bound in; the probe's lines
/// as `name -> result`.
fn probe(b: &Berth, probe: &Path, flags: &[&str], checks: &[&str]) -> std::collections::HashMap<String, String> {
    let volume = format!("{}:/probe:ro", p(probe));
    let mut args = vec!["run", "-v", &volume];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "/probe"]);
    args.extend_from_slice(checks);
    parse(&b.ok(&args))
}

fn parse(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('=').or_else(|| l.split_once(":\t")))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

const EPERM: &str = "err1";

/// A key in the host root's user keyring (the one a container's uid 0 shares when nothing
/// stops it), invalidated when dropped.
struct HostKey(i64);

impl HostKey {
    fn add(desc: &str, secret: &str) -> HostKey {
        let (ty, desc_c) = (c"user", std::ffi::CString::new(desc).unwrap());
        // SAFETY: add_key with NUL-terminated strings and a buffer of the length given.
        let id = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                ty.as_ptr(),
                desc_c.as_ptr(),
                secret.as_ptr(),
                secret.len(),
                -4i32, /* KEY_SPEC_USER_KEYRING */
            )
        };
        assert!(id > 0, "add_key on the host: {}", std::io::Error::last_os_error());
        HostKey(id)
    }
}

impl Drop for HostKey {
    fn drop(&mut self) {
        // SAFETY: keyctl(KEYCTL_INVALIDATE, id) takes integers only.
        unsafe {
            libc::syscall(libc::SYS_keyctl, 21 /* KEYCTL_INVALIDATE */, self.0)
        };
    }
}

#[test]
fn a_container_cannot_read_or_plant_keys_in_the_hosts_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    let desc = format!("berth-test-{}", std::process::id());
    let _key = HostKey::add(&desc, "host-secret");
    let check = format!("keyring:{desc}");
    let confined = probe(&b, &probe_bin, &[], &[&check, "add_key"]);
    assert_eq!(confined[&check], EPERM, "{confined:?}");
    assert_eq!(confined["add_key"], EPERM, "{confined:?}");
    // The attack the filter stops: without it, the container reads the host's secret.
    let open = probe(&b, &probe_bin, &["--security-opt", "seccomp=unconfined"], &[&check]);
    assert_eq!(open[&check], "ok:host-secret", "{open:?}");
}

#[test]
fn docker_refusals_hold_and_unconfined_leaves_only_the_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    let checks = [
        "unshare_user",
        "perf",
        "personality",
        "mount",
        "ptrace",
        "clone_newns",
        "clone3",
        "io_uring",
        "chroot",
        "status",
    ];
    let r = probe(&b, &probe_bin, &[], &checks);
    for refused in ["unshare_user", "perf", "personality", "mount", "ptrace", "clone_newns", "io_uring"] {
        assert_eq!(r[refused], EPERM, "{refused}: {r:?}");
    }
    assert_eq!(r["clone3"], format!("err{}", libc::ENOSYS), "clone3 is ENOSYS, so libc falls back to clone");
    assert_eq!(r["chroot"], "ok", "SYS_CHROOT is in the set, so chroot is allowed");
    assert_eq!(r["Seccomp"], "2");
    assert_eq!(r["NoNewPrivs"], "0", "docker's default: no_new_privs only when asked for");
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(r[set], DEFAULT_CAPS, "{set}: {r:?}");
    }
    assert_eq!((r["CapInh"].as_str(), r["CapAmb"].as_str()), (NO_CAPS, NO_CAPS), "docker's since CVE-2022-24769");
    // Unconfined, only the kernel's own checks remain: no CAP_SYS_ADMIN for a mount, no
    // CAP_SYS_PTRACE to trace another user's process; what needs no capability works.
    let u = probe(&b, &probe_bin, &["--security-opt", "seccomp=unconfined"], &checks);
    assert_eq!(u["Seccomp"], "0");
    assert_eq!((u["personality"].as_str(), u["unshare_user"].as_str()), ("ok", "ok"), "{u:?}");
    assert_eq!((u["mount"].as_str(), u["ptrace"].as_str()), (EPERM, EPERM), "{u:?}");
    assert_eq!(u["CapBnd"], DEFAULT_CAPS);
}

#[test]
fn cap_add_cap_drop_and_privileged_set_every_capability_set() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    let admin = probe(
        &b,
        &probe_bin,
        &["--cap-add", "SYS_ADMIN", "--cap-add", "cap_sys_ptrace"],
        &["mount", "ptrace", "status"],
    );
    assert_eq!((admin["mount"].as_str(), admin["ptrace"].as_str()), ("ok", "ok"), "{admin:?}");
    let with = format!("{:016x}", 0xa80425fbu64 | 1 << 21 | 1 << 19);
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(admin[set], with, "{set}: {admin:?}");
    }
    assert_eq!(admin["CapInh"], NO_CAPS);
    assert_eq!(admin["Seccomp"], "2", "--cap-add keeps the filter, with the capability's syscalls opened");
    let none = probe(&b, &probe_bin, &["--cap-drop", "ALL", "--cap-add", "CHOWN"], &["chroot", "status"]);
    assert_eq!(none["chroot"], EPERM, "no SYS_CHROOT: chroot is refused");
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(none[set], "0000000000000001", "{set}: {none:?}");
    }
    let all = probe(&b, &probe_bin, &["--privileged"], &["mount", "status"]);
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let host_bnd = parse(&host)["CapBnd"].clone();
    assert_eq!(
        (all["Seccomp"].as_str(), all["CapBnd"].as_str(), all["mount"].as_str()),
        ("0", host_bnd.as_str(), "ok")
    );
    let err = b.fails(&["run", "--cap-add", "SYS_WIZARD", "busybox", "true"]);
    assert!(err.contains("SYS_WIZARD"), "{err}");
}

#[test]
fn a_non_root_user_keeps_only_the_bounding_set() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    let r = probe(&b, &probe_bin, &["-u", "1000"], &["status"]);
    assert_eq!(r["CapBnd"], DEFAULT_CAPS, "{r:?}");
    assert_eq!((r["CapPrm"].as_str(), r["CapEff"].as_str()), ("0000000000000000", "0000000000000000"));
    assert_eq!(r["Seccomp"], "2");
}

#[test]
fn a_profile_in_dockers_format_is_applied_and_a_bad_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", p(&profile));
    let r = probe(&b, &probe_bin, &["--security-opt", &opt], &["uname", "personality", "status"]);
    assert_eq!(r["uname"], format!("err{}", libc::EACCES), "{r:?}");
    assert_eq!((r["personality"].as_str(), r["Seccomp"].as_str()), ("ok", "2"), "everything else is allowed");
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_WHATEVER"}"#).unwrap();
    let err = b.fails(&["run", "--security-opt", &opt, "busybox", "true"]);
    assert!(err.contains("SCMP_ACT_WHATEVER"), "{err}");
    let err = b.fails(&["run", "--security-opt", "apparmor=docker-default", "busybox", "true"]);
    assert!(err.contains("unsupported --security-opt"), "{err}");
}

#[test]
fn a_run_step_sees_the_same_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    let desc = format!("berth-test-build-{}", std::process::id());
    let _key = HostKey::add(&desc, "host-secret");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(&probe_bin, ctx.join("probe")).unwrap();
    let checks = format!("keyring:{desc} add_key unshare_user personality mount status");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox:latest\nCOPY probe /probe\nRUN /probe {checks} > /result\n"),
    )
    .unwrap();
    b.ok(&["build", "-q", "-t", "probed:1", &p(&ctx)]);
    let r = parse(&b.ok(&["run", "probed:1", "cat", "/result"]));
    for refused in
        [format!("keyring:{desc}"), "add_key".into(), "unshare_user".into(), "personality".into(), "mount".into()]
    {
        assert_eq!(r[&refused], EPERM, "{refused}: {r:?}");
    }
    assert_eq!(r["Seccomp"], "2");
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(r[set], DEFAULT_CAPS, "{set}: {r:?}");
    }
    assert_eq!(r["CapInh"], NO_CAPS);
}

/// An image `suid:1` whose /probe is set-uid root, and whose last RUN step ran it as user
/// 1000 into /built (ids and status).
fn setuid_probe_image(b: &Berth, dir: &Path, probe_bin: &Path) {
    let ctx = dir.join("suid-ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(probe_bin, ctx.join("probe")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest\nCOPY probe /probe\nRUN chmod 4755 /probe && mkdir -m 777 /out\n\
         USER 1000\nRUN /probe ids status > /out/built\n",
    )
    .unwrap();
    b.ok(&["build", "-q", "-t", "suid:1", &p(&ctx)]);
}

#[test]
fn a_setuid_program_raises_its_user_unless_no_new_privileges_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    setuid_probe_image(&b, dir.path(), &probe_bin);
    // `berth run -u 1000 IMG PROG`: (uid, euid, NoNewPrivs, Seccomp).
    let ids = |flags: &[&str]| {
        let mut args = vec!["run", "--rm", "-u", "1000"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["suid:1", "/probe", "ids", "status"]);
        let r = parse(&b.ok(&args));
        [&r["uid"], &r["euid"], &r["NoNewPrivs"], &r["Seccomp"]].map(|v| v.clone())
    };
    // Before: berth always set no_new_privs, so sudo failed where docker runs it. The filter
    // stays on in both modes: without no_new_privs it is loaded before the user changes.
    let raised = ["1000", "0", "0", "2"].map(String::from);
    let kept = ["1000", "1000", "1", "2"].map(String::from);
    assert_eq!(ids(&[]), raised);
    assert_eq!(ids(&["--init"]), raised, "the init forks under the filter too");
    for off in ["no-new-privileges=false", "no-new-privileges:false"] {
        assert_eq!(ids(&["--security-opt", off]), raised, "{off}");
    }
    for on in ["no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"] {
        assert_eq!(ids(&["--security-opt", on]), kept, "{on}");
    }
    assert_eq!(ids(&["--init", "--security-opt", "no-new-privileges"]), kept);
    let err = b.fails(&["run", "--security-opt", "no-new-privileges=maybe", "busybox", "true"]);
    assert!(err.contains("no-new-privileges"), "{err}");
    // exec follows the container's own setting.
    for (flags, want) in [(&[][..], &raised), (&["--security-opt", "no-new-privileges"][..], &kept)] {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["suid:1", "sleep", "60"]);
        let id = b.ok(&args).trim().to_owned();
        let r = parse(&b.ok(&["exec", "-u", "1000", &id, "/probe", "ids", "status"]));
        let got = [&r["uid"], &r["euid"], &r["NoNewPrivs"], &r["Seccomp"]].map(|v| v.clone());
        b.ok(&["rm", "-f", &id]);
        assert_eq!(&got, want, "exec in a container run with {flags:?}");
    }
    // runc and crun get the same setting in config.json.
    for runtime in ["runc", "crun"].into_iter().filter(|r| require_tool(r)) {
        assert_eq!(ids(&["--runtime", runtime]), raised, "{runtime}");
        assert_eq!(ids(&["--runtime", runtime, "--security-opt", "no-new-privileges"]), kept, "{runtime}");
    }
}

#[test]
fn a_user_that_root_switches_to_gets_no_capability_through_the_inheritable_set() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    if !require_tool("setcap") {
        return;
    }
    // busybox with a probe whose file capabilities are inheritable only (CHOWN, NET_RAW),
    // imported from a tar that keeps the xattr.
    let rootfs = dir.path().join("rootfs");
    let made = std::process::Command::new(crate::util::repo_root().join("fixtures/make-busybox-image"))
        .args(["--rootfs-only", &p(&rootfs)])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::copy(&probe_bin, rootfs.join("capprobe")).unwrap();
    crate::util::run_tool(
        std::process::Command::new("setcap").args(["cap_chown,cap_net_raw+i", &p(&rootfs.join("capprobe"))]),
    );
    let tar = dir.path().join("rootfs.tar");
    crate::util::run_tool(std::process::Command::new("tar").args([
        "--xattrs",
        "--xattrs-include=security.*",
        "-C",
        &p(&rootfs),
        "-cf",
        &p(&tar),
        ".",
    ]));
    b.ok(&["import", &p(&tar), "fcaps:1"]);
    // Before: root's inheritable set (the container's capabilities) survived `su`, and
    // without no_new_privs the exec gave user 1000 CHOWN and NET_RAW as permitted ones.
    for flags in [&[][..], &["--security-opt", "no-new-privileges"][..]] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["fcaps:1", "su", "berth", "-s", "/bin/sh", "-c", "/capprobe ids status"]);
        let r = parse(&b.ok(&args));
        assert_eq!(r["uid"], "1000", "{r:?}");
        assert_eq!((r["CapPrm"].as_str(), r["CapInh"].as_str()), (NO_CAPS, NO_CAPS), "{flags:?}: {r:?}");
    }
}

#[test]
fn a_run_step_can_use_a_setuid_program_as_buildkit_allows() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    // `USER app` then `RUN sudo ...`: BuildKit sets no no_new_privs for a step.
    setuid_probe_image(&b, dir.path(), &probe_bin);
    let r = parse(&b.ok(&["run", "--rm", "suid:1", "cat", "/out/built"]));
    assert_eq!((r["uid"].as_str(), r["euid"].as_str()), ("1000", "0"), "{r:?}");
    assert_eq!((r["NoNewPrivs"].as_str(), r["Seccomp"].as_str()), ("0", "2"), "{r:?}");
    assert_eq!(r["CapEff"], DEFAULT_CAPS, "a set-uid root program gets the step's capabilities: {r:?}");
}

#[test]
fn runc_gets_the_same_filter_and_capabilities_in_its_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    if !require_tool("runc") {
        return;
    }
    let r = probe(&b, &probe_bin, &["--runtime", "runc"], &["add_key", "personality", "status"]);
    assert_eq!((r["add_key"].as_str(), r["personality"].as_str()), (EPERM, EPERM), "{r:?}");
    assert_eq!(r["Seccomp"], "2");
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(r[set], DEFAULT_CAPS, "{set}: {r:?}");
    }
    assert_eq!(r["CapInh"], NO_CAPS);
    let u = probe(&b, &probe_bin, &["--runtime", "runc", "--security-opt", "seccomp=unconfined"], &["status"]);
    assert_eq!(u["Seccomp"], "0");
}

#[test]
fn run_security_insecure_needs_the_entitlement() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(&probe_bin, ctx.join("probe")).unwrap();
    // What the step sees of the system paths: loop-control, /proc/keys and /proc/sys mounted
    // over, /sys read-only or not.
    std::fs::write(
        ctx.join("paths.sh"),
        "test -c /dev/loop-control && echo loop || echo no-loop\n\
         grep -c ' /proc/keys ' /proc/self/mountinfo; grep -c ' /proc/sys ' /proc/self/mountinfo\n\
         awk '$2 == \"/sys\" { split($4, o, \",\"); print \"sys \" o[1] }' /proc/self/mounts\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest\nCOPY probe /probe\nCOPY paths.sh /paths.sh\n\
         RUN --security=insecure /probe mount status > /result\n\
         RUN --security=insecure sh /paths.sh > /insecure-paths\nRUN sh /paths.sh > /paths\n",
    )
    .unwrap();
    // Refused where the Dockerfile says it, with a pointer to the line.
    let out = b.output(&["build", "-q", "-t", "insecure:1", &p(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("needs the entitlement `--allow security.insecure`"), "{err}");
    b.ok(&["build", "-q", "--allow", "security.insecure", "-t", "insecure:1", &p(&ctx)]);
    let r = parse(&b.ok(&["run", "insecure:1", "cat", "/result"]));
    let host = parse(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert_eq!((r["Seccomp"].as_str(), r["CapBnd"].as_str()), ("0", host["CapBnd"].as_str()), "{r:?}");
    assert_eq!(r["mount"], "ok", "an insecure step has CAP_SYS_ADMIN");
    // BuildKit's insecure mode: its devices (loop-control and the loop devices among them),
    // no masked or read-only paths, /sys writable; a plain step keeps them all.
    if std::path::Path::new("/dev/loop-control").exists() {
        assert_eq!(b.ok(&["run", "insecure:1", "cat", "/insecure-paths"]), "loop\n0\n0\nsys rw\n");
    }
    assert_eq!(b.ok(&["run", "insecure:1", "cat", "/paths"]), "no-loop\n1\n1\nsys ro\n");
}

/// `berth ARGS` with its stdio on a pseudo-terminal (util-linux `script`), as from a user's
/// interactive shell; what it printed.
fn in_a_terminal(b: &Berth, args: &[&str]) -> String {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_berth"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let out = std::process::Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .env("BERTH_ROOT", b.root.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

#[test]
fn a_container_cannot_type_into_the_terminal_berth_was_started_from() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, probe_bin)) = setup(dir.path()) else { return };
    if !require_tool("script") {
        return;
    }
    // Before: the container shared berth's session, so the user's terminal (its stdout) was
    // its controlling terminal, and TIOCSTI typed commands into the shell that ran berth.
    let volume = format!("{}:/probe:ro", p(&probe_bin));
    for user in ["0", "1000"] {
        let r = parse(&in_a_terminal(
            &b,
            &["run", "--rm", "-u", user, "-v", &volume, "busybox", "/probe", "tty", "tiocsti"],
        ));
        assert_eq!(r["tty"], "err6", "no controlling terminal (ENXIO) as user {user}: {r:?}");
        assert_ne!(r["tiocsti"], "ok", "TIOCSTI is refused as user {user}: {r:?}");
    }
    // A RUN step under --isolation chroot (no namespaces) has its own session too.
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(&probe_bin, ctx.join("probe")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest\nCOPY probe /probe\nRUN mkdir -p /dev && mknod -m 666 /dev/tty c 5 0 && /probe tty\n",
    )
    .unwrap();
    let log = in_a_terminal(&b, &["build", "--isolation", "chroot", "--no-cache", "--progress", "plain", &p(&ctx)]);
    assert!(log.contains("tty=err6"), "{log}");
}

#[test]
fn a_container_gets_none_of_its_callers_groups_ignored_signals_or_memory() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, _)) = setup(dir.path()) else { return };
    if !require_tool("setpriv") {
        return;
    }
    // Groups: root's from the image's /etc/group, not those of whoever ran berth.
    let out = std::process::Command::new("setpriv")
        .args(["--groups", "6,42"])
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--rm", "busybox", "id", "-G"])
        .env("BERTH_ROOT", b.root.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{}", String::from_utf8_lossy(&out.stderr));
    // Signals ignored by the caller (`nohup`, `cmd &`) are the container's defaults again.
    let script = format!(
        "trap '' INT QUIT HUP; exec {} run --rm busybox grep SigIgn /proc/self/status",
        env!("CARGO_BIN_EXE_berth")
    );
    let out = std::process::Command::new("sh").args(["-c", &script]).env("BERTH_ROOT", b.root.path()).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SigIgn:\t0000000000000000");
    // --init is a fork of berth: its environment and memory are not the container's to read.
    let out = b
        .cmd(&["run", "--rm", "--init", "busybox", "sh", "-c", "cat /proc/1/environ; head -c 64 /proc/1/mem"])
        .env("BERTH_TEST_HOST_SECRET", "s3cr3t")
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(!seen.contains("s3cr3t") && !seen.contains("BERTH_ROOT"), "{seen}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}

#[test]
fn a_container_with_a_user_dies_with_berth() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, _)) = setup(dir.path()) else { return };
    // Before: the kernel cleared the parent-death signal when the user changed, so a
    // container with `-u` kept running after berth was killed.
    let marker = format!("{}", 100000 + std::process::id() % 800000);
    for user in ["1000", "0:1000"] {
        let mut berth = b.cmd(&["run", "--rm", "-u", user, "busybox", "sleep", &marker]).spawn().unwrap();
        let running = || sleeping(&marker);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(running(), "the container started");
        berth.kill().unwrap();
        berth.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!running(), "the container of user {user} died with berth");
    }
}

/// Whether a `sleep ARG` process runs on this machine.
fn sleeping(arg: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == format!("sleep\0{arg}\0").as_bytes()))
}

#[test]
fn no_other_user_of_the_machine_reaches_a_setuid_program_of_a_stored_image() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, _)) = setup(dir.path()) else { return };
    if !require_tool("runuser") {
        return;
    }
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox:latest\nRUN cp /bin/busybox /suid && chmod 4755 /suid\n")
        .unwrap();
    b.ok(&["build", "-q", "-t", "suid:1", &p(&ctx)]);
    let found = std::process::Command::new("find")
        .args([&p(&b.root.path().join("snapshots")), "-name", "suid", "-perm", "-4000"])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&found.stdout).lines().next().expect("the setuid file is stored").to_owned();
    // Before: every directory on the way was 0755, so `nobody` could run it, as root.
    let out = std::process::Command::new("runuser").args(["-u", "nobody", "--", &path, "id", "-u"]).output().unwrap();
    assert!(!out.status.success(), "nobody ran {path}: {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    for d in ["snapshots", "tmp"] {
        let mode =
            std::fs::metadata(b.root.path().join(d)).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert!(mode.as_ref().is_ok_and(|m| m & 0o077 == 0), "{d}: {mode:?}");
    }
}

#[test]
fn the_user_is_the_one_in_the_passwd_file_the_container_reads() {
    let dir = tempfile::tempdir().unwrap();
    let Some((b, _)) = setup(dir.path()) else { return };
    // Before: each layer's /etc/passwd was read on its own, so a link to a file of another
    // layer fell through to an older layer's file, which made `app` root.
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest
RUN echo 'app:x:0:0:legacy:/root:/bin/sh' >> /etc/passwd
RUN mkdir -p /usr/share/acct && grep -v '^app:' /etc/passwd > /usr/share/acct/passwd \\
    && echo 'app:x:4242:4242:app:/home/app:/bin/sh' >> /usr/share/acct/passwd
RUN ln -sf /usr/share/acct/passwd /etc/passwd
USER app
RUN id -u > /tmp/built-as
",
    )
    .unwrap();
    b.ok(&["build", "-q", "-t", "acct:1", &p(&ctx)]);
    let out = b.ok(&["run", "--rm", "acct:1", "sh", "-c", "id -u; cat /tmp/built-as; echo $HOME"]);
    assert_eq!(out, "4242\n4242\n/home/app\n", "the RUN step and the container run as the passwd they see");
}
