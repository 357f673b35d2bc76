//! `berth build`: the fixtures under fixtures/build/ built, run, cached, exported and pushed.

use std::path::PathBuf;
use std::process::Stdio;

use crate::util::{build_store, p, repo_root, require_tool, run_tool, steps_that_ran, Berth};

fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures/build").join(name)
}

/// A copy of a fixture's context in a temp dir, for tests that change files.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status =
        std::process::Command::new("cp").arg("-a").arg(fixture(name)).arg(dir.path().join("f")).status().unwrap();
    assert!(status.success());
    dir
}

fn build(b: &Berth, args: &[&str]) -> (bool, String) {
    let mut full = vec!["build", "--progress", "plain"];
    full.extend_from_slice(args);
    let out = b.output(&full);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

/// The full fixture's build command, with what it asks for: a secret file, a secret from
/// the environment and an ssh agent socket (the listener must live as long as the build).
fn full_cmd(b: &Berth, extra: &[&str]) -> (std::process::Command, std::os::unix::net::UnixListener) {
    let token = b.root.path().join("token");
    std::fs::write(&token, "s3cret").unwrap();
    let sock = b.root.path().join("agent.sock");
    let _ = std::fs::remove_file(&sock);
    let agent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut args: Vec<String> = ["build", "--progress", "plain", "--secret"].map(String::from).to_vec();
    args.push(format!("id=token,src={}", p(&token)));
    args.extend(["--secret", "id=envtok,env=BERTH_TEST_TOKEN", "--ssh"].map(String::from));
    args.push(format!("default={}", p(&sock)));
    args.extend(["-f".to_owned(), p(&fixture("full/Dockerfile"))]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(p(&fixture("full/ctx")));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = b.cmd(&refs);
    cmd.env("BERTH_TEST_TOKEN", "fromenv");
    (cmd, agent)
}

fn full_build(b: &Berth, tag: &str, extra: &[&str]) -> String {
    let mut args = vec!["-t", tag];
    args.extend_from_slice(extra);
    let (mut cmd, _agent) = full_cmd(b, &args);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{log}");
    log
}

#[test]
fn every_instruction_builds_and_the_image_runs() {
    let Some(b) = build_store() else { return };
    full_build(&b, "full:1", &[]);
    let out = b.ok(&["run", "--rm", "full:1"]);
    assert_eq!(
        out,
        "one\ntwo\nversion 1.0 on amd64\nheredoc ran as 0\nscript by awk in /srv/app\nberth demo 1.0\npackaged\none.txt\nskip.log\nsub\nfrom cat 1.0\nraw ${VERSION}\nadded by heredoc\nssh and env secret ok\n",
        "the image's CMD output"
    );
    // --exclude kept the log out; --chmod/--chown applied; --parents kept app/sub.
    let ls = b.ok(&["run", "--rm", "--entrypoint", "ls", "full:1", "--", "-ln", "/app", "/parents/app/sub"]);
    assert!(!ls.contains("skip.log"), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with("-rwxr-x---") && l.contains(" 1000 ") && l.ends_with("one.txt")), "{ls}");
    assert!(ls.contains("two.txt"), "{ls}");
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "full:1"])).unwrap();
    let cfg = inspect
        .pointer("/0/Config")
        .or_else(|| inspect.pointer("/0/config/config"))
        .cloned()
        .unwrap_or(inspect.clone());
    let text = cfg.to_string();
    for want in [
        "\"User\":\"1000:1000\"",
        "\"8080/tcp\"",
        "\"53/udp\"",
        "\"/data\"",
        "SIGTERM",
        "\"Retries\":2",
        "\"Entrypoint\":[\"/bin/sh\",\"-c\"]",
    ] {
        assert!(text.contains(want), "config lacks {want}: {text}");
    }
    let history = b.ok(&["history", "--no-trunc", "full:1"]);
    assert!(history.contains("MAINTAINER berth team") && history.contains("buildkit.dockerfile.v0"), "{history}");
}

#[test]
fn a_second_build_is_all_cached_and_only_what_changed_reruns() {
    let Some(b) = build_store() else { return };
    let dir = copy_fixture("multistage");
    let ctx = dir.path().join("f");
    let (ok, first) = build(&b, &["-t", "ms:1", &p(&ctx)]);
    assert!(ok, "{first}");
    let (ok, again) = build(&b, &["-t", "ms:1", &p(&ctx)]);
    assert!(ok, "{again}");
    assert!(!again.contains(" DONE "), "a no-change rebuild ran a step:\n{again}");
    // Touching a file without changing it is still a hit.
    let f = std::fs::File::options().write(true).open(ctx.join("a/input.txt")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3)).unwrap();
    let (ok, touched) = build(&b, &["-t", "ms:1", &p(&ctx)]);
    assert!(ok && !touched.contains(" DONE "), "touch made a miss:\n{touched}");
    // A content change re-runs stage a's steps from the COPY on, not stage b's.
    std::fs::write(ctx.join("a/input.txt"), "changed\n").unwrap();
    let (ok, changed) = build(&b, &["-t", "ms:1", &p(&ctx)]);
    assert!(ok, "{changed}");
    let ran = steps_that_ran(&changed);
    assert!(ran.iter().any(|l| l.contains("[a ") && l.contains("COPY")), "{changed}");
    assert!(!ran.iter().any(|l| l.contains("[b ")), "stage b re-ran:\n{changed}");
    assert!(changed.contains("cache miss"), "--progress plain says why a step missed:\n{changed}");
    assert_eq!(b.ok(&["run", "--rm", "ms:1"]), "a: changed\nb: from b\n");
    // A chmod is a miss.
    std::fs::set_permissions(ctx.join("a/input.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (ok, chmodded) = build(&b, &["-t", "ms:1", &p(&ctx)]);
    assert!(ok && chmodded.contains(" DONE "), "chmod was a hit:\n{chmodded}");
    // --no-cache-filter runs that stage's steps only.
    let (ok, filtered) = build(&b, &["--no-cache-filter", "b", "-t", "ms:1", &p(&ctx)]);
    assert!(ok, "{filtered}");
    let ran = steps_that_ran(&filtered);
    assert!(ran.iter().any(|l| l.contains("[b ")) && !ran.iter().any(|l| l.contains("[a ")), "{filtered}");
    // --no-cache runs everything.
    let (ok, nocache) = build(&b, &["--no-cache", "-t", "ms:1", &p(&ctx)]);
    assert!(ok && nocache.matches(" DONE ").count() >= 5, "--no-cache used the cache:\n{nocache}");
}

#[test]
fn independent_stages_run_in_parallel() {
    let Some(b) = build_store() else { return };
    // Each stage waits for the other's marker in a shared cache mount: run one after
    // the other, both would time out.
    let (ok, out) = build(&b, &["-t", "par:1", &p(&fixture("parallel"))]);
    assert!(ok, "stages did not run at the same time:\n{out}");
    assert_eq!(b.ok(&["run", "--rm", "par:1"]), "a saw b\nb saw a\n");
}

#[test]
fn dockerfile_prod_uses_its_own_dockerignore_and_stdin_works() {
    let Some(b) = build_store() else { return };
    let ctx = fixture("prod");
    let df = p(&ctx.join("Dockerfile.prod"));
    let (ok, out) = build(&b, &["-f", &df, "-t", "prod:1", &p(&ctx)]);
    assert!(ok, "{out}");
    // Dockerfile.prod.dockerignore hides dev.env; the plain .dockerignore (which hides prod.env) is not read.
    assert_eq!(b.ok(&["run", "--rm", "prod:1", "ls", "/cfg"]), "prod.env\n");
    let mut cmd = b.cmd(&["build", "-q", "-f", "-", "-t", "stdin:1", &p(&ctx)]);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"FROM busybox:latest\nCOPY dev.env /x\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(id.starts_with("sha256:"), "-q prints the image ID: {id}");
}

/// Runs `berth ARGS` with `input` on stdin; returns success, stdout and stderr.
fn with_stdin(b: &Berth, args: &[&str], input: &[u8]) -> (bool, String, String) {
    with_stdin_in(b, None, args, input)
}

/// [`with_stdin`] in directory `cwd` (the test's own when `None`).
fn with_stdin_in(b: &Berth, cwd: Option<&std::path::Path>, args: &[&str], input: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = b.cmd(args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn build_dash_reads_a_dockerfile_or_a_tar_context_from_stdin_and_bool_flags_take_docker_values() {
    let Some(b) = build_store() else { return };
    // A Dockerfile alone: no context, so a COPY from it says so.
    let (ok, _, err) =
        with_stdin(&b, &["build", "-q", "-t", "dash:1", "-"], b"FROM busybox:latest\nRUN echo hi > /x\n");
    assert!(ok, "{err}");
    assert_eq!(b.ok(&["run", "--rm", "dash:1", "cat", "/x"]), "hi\n");
    let (ok, _, err) = with_stdin(&b, &["build", "-q", "-"], b"FROM busybox:latest\nCOPY a.txt /a\n");
    assert!(!ok && err.contains("Dockerfile:2:1: COPY from the context, but the build has no context"), "{err}");
    // A gzip tar: the context, with its Dockerfile (and -f naming one inside it).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM busybox:latest\nCOPY a.txt /a.txt\n").unwrap();
    std::fs::write(dir.path().join("Other"), "FROM busybox:latest\nCOPY a.txt /other.txt\n").unwrap();
    std::fs::write(dir.path().join("a.txt"), "from the tar\n").unwrap();
    let tgz = std::process::Command::new("tar").args(["-C", &p(dir.path()), "-czf", "-", "."]).output().unwrap();
    assert!(tgz.status.success());
    let (ok, _, err) = with_stdin(&b, &["build", "-q", "-t", "dash:2", "-"], &tgz.stdout);
    assert!(ok, "{err}");
    assert_eq!(b.ok(&["run", "--rm", "dash:2", "cat", "/a.txt"]), "from the tar\n");
    let (ok, _, err) = with_stdin(&b, &["build", "-q", "-f", "Other", "-t", "dash:3", "-"], &tgz.stdout);
    assert!(ok, "{err}");
    assert_eq!(b.ok(&["run", "--rm", "dash:3", "cat", "/other.txt"]), "from the tar\n");
    // docker's spellings of boolean flags.
    let ctx = p(dir.path());
    let (ok, out) = build(&b, &["--no-cache=true", "--pull=false", "-q=false", "-t", "dash:4", &ctx]);
    assert!(ok, "{out}");
    let copied = |out: &str| steps_that_ran(out).iter().any(|s| s.contains("COPY a.txt"));
    assert!(copied(&out), "--no-cache=true runs every step: {out}");
    let (ok, out) = build(&b, &["--no-cache=false", "-t", "dash:4", &ctx]);
    assert!(ok && !copied(&out), "--no-cache=false uses the cache: {out}");
}

#[test]
fn run_makes_device_nodes_as_buildkit_does_and_they_open_nothing() {
    let Some(b) = build_store() else { return };
    // BuildKit's RUN may mknod (its device cgroup keeps the nodes from opening); berth's
    // mounts are nodev instead. Before, CAP_MKNOD was dropped and the first RUN failed.
    let disk = crate::util::host_disk();
    let make = crate::util::make_and_open_nodes(&["/n"], disk);
    let probe =
        |path: &str, step: &str| format!("(echo x > {path}) 2>/dev/null && echo {step} opened || echo {step} refused");
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = [
        "FROM busybox:latest AS nodes".to_owned(),
        format!("RUN mkdir /n && {make}"),
        format!("RUN {}", probe("/n/null2", "later")),
        format!("RUN --security=insecure {}", probe("/n/null2", "insecure")),
        // Another stage's node, through a bind mount of the stage and of the node alone.
        "FROM busybox:latest".to_owned(),
        format!("RUN --mount=type=bind,from=nodes,target=/a {}", probe("/a/n/null2", "bound")),
        format!("RUN --mount=type=bind,from=nodes,source=/n/null2,target=/f {}", probe("/f", "file")),
        // A node made in a cache is left where only root may reach it on the host.
        format!("RUN --mount=type=cache,target=/c mknod /c/null2 c 1 3 && {}", probe("/c/null2", "cache")),
    ];
    std::fs::write(dir.path().join("Dockerfile"), dockerfile.join("\n") + "\n").unwrap();
    let (ok, out) = build(&b, &["--allow", "security.insecure", "--target", "nodes", "-t", "nodes:1", &p(dir.path())]);
    assert!(ok, "{out}");
    let said = |what: &str| said_in(&out, what);
    assert!(said("/n made") == 1 && said("/n refused") == 2, "{out}");
    assert!(said("later refused") == 1, "a node from an earlier step opens nothing either: {out}");
    assert!(said("insecure opened") == 1, "--security=insecure opens every device: {out}");
    // The nodes are in the image, as BuildKit's, and open nothing where it runs.
    let script = "ls -l /n/null2 | cut -c1; (echo x > /n/null2) 2>/dev/null && echo opened || echo refused";
    assert_eq!(b.ok(&["run", "--rm", "nodes:1", "sh", "-c", script]), "c\nrefused\n");
    let (ok, out) = build(&b, &["--allow", "security.insecure", &p(dir.path())]);
    assert!(ok, "{out}");
    for step in ["bound", "file", "cache"] {
        assert_eq!(said_in(&out, &format!("{step} refused")), 1, "{step}: {out}");
    }
    let cache = b.root.path().join("cache-mounts");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "{}", p(&cache));
    // A writable bind of a node would open it on the host to copy it: refused.
    std::fs::write(
        dir.path().join("Dockerfile.rw"),
        "FROM busybox:latest AS nodes\nRUN mknod /null2 c 1 3\nFROM busybox:latest\n\
         RUN --mount=type=bind,from=nodes,source=/null2,target=/f,rw true\n",
    )
    .unwrap();
    let rw = p(&dir.path().join("Dockerfile.rw"));
    let (ok, out) = build(&b, &["-f", &rw, &p(dir.path())]);
    assert!(!ok && out.contains("a writable bind mount's source must be a file or a directory"), "{out}");
}

/// How many lines a RUN step printed (`#N SECONDS TEXT` in a plain log) end with `what`.
fn said_in(out: &str, what: &str) -> usize {
    let printed = |l: &&str| l.split(' ').nth(1).is_some_and(|t| t.parse::<f64>().is_ok());
    out.lines().filter(printed).filter(|l| l.ends_with(what)).count()
}

#[test]
fn ignore_files_filter_a_directory_context_and_never_a_tar_on_stdin() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    for f in ["a.txt", "secret.txt", "keep.txt"] {
        std::fs::write(ctx.join(f), f).unwrap();
    }
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\n").unwrap();
    std::fs::write(ctx.join("sub/Dockerfile"), "FROM busybox:latest\nCOPY . /ctx/\n").unwrap();
    std::fs::write(ctx.join("sub/Dockerfile.dockerignore"), "a.txt\n").unwrap();
    let tar = std::process::Command::new("tar").args(["-C", &p(&ctx), "-cf", "-", "."]).output().unwrap();
    assert!(tar.status.success());
    // The current directory has an ignore file of the -f name that hides everything: it is
    // not the context's, and must not be read.
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(cwd.join("sub")).unwrap();
    std::fs::write(cwd.join("sub/Dockerfile.dockerignore"), "*\n").unwrap();
    let (ok, _, err) =
        with_stdin_in(&b, Some(&cwd), &["build", "-q", "-f", "sub/Dockerfile", "-t", "ign:1", "-"], &tar.stdout);
    assert!(ok, "{err}");
    // A tar is the context whole, as docker and BuildKit take it: its ignore files filter nothing.
    let listed = b.ok(&["run", "--rm", "ign:1", "ls", "-A", "/ctx"]);
    assert_eq!(listed, ".dockerignore\na.txt\nkeep.txt\nsecret.txt\nsub\n");
    // -f stays inside the tar: a link in it to a file of the host is not followed out.
    std::fs::write(cwd.join("host-only"), "FROM busybox:latest\n").unwrap();
    std::os::unix::fs::symlink(cwd.join("host-only"), ctx.join("sub/Linked")).unwrap();
    let tar = std::process::Command::new("tar").args(["-C", &p(&ctx), "-cf", "-", "."]).output().unwrap();
    let (ok, _, err) = with_stdin(&b, &["build", "-q", "-f", "sub/Linked", "-"], &tar.stdout);
    assert!(!ok && err.contains("sub/Linked"), "{err}");
    // Without -f, CONTEXT/Dockerfile.dockerignore wins over CONTEXT/.dockerignore, as in BuildKit.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox:latest\nCOPY . /ctx/\n").unwrap();
    std::fs::write(ctx.join("Dockerfile.dockerignore"), "keep.txt\nsub\n").unwrap();
    let (ok, out) = build(&b, &["-t", "ign:2", &p(&ctx)]);
    assert!(ok, "{out}");
    let listed = b.ok(&["run", "--rm", "ign:2", "ls", "-A", "/ctx"]);
    assert_eq!(listed, ".dockerignore\nDockerfile\nDockerfile.dockerignore\na.txt\nsecret.txt\n");
}

#[test]
fn bad_dockerfiles_and_failing_steps_say_where() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile.bad");
    std::fs::write(&df, "FROM busybox:latest\nRUN --bogus true\n").unwrap();
    let fails = |args: &[&str]| {
        let o = b.output(args);
        assert!(!o.status.success(), "berth {args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let out = fails(&["build", "-f", &p(&df), &p(dir.path())]);
    assert!(out.contains(&format!("{}:2:5: unknown flag for RUN: --bogus", p(&df))), "{out}");
    assert!(out.contains("RUN --bogus true"), "the offending line is shown: {out}");
    std::fs::write(&df, "FROM busybox:latest\nCOPY ../../etc/passwd /x\n").unwrap();
    let out = fails(&["build", "-f", &p(&df), &p(dir.path())]);
    assert!(out.contains("outside the build context") && out.contains(":2:1"), "{out}");
    std::fs::write(&df, "FROM busybox:latest\nRUN echo first-line && echo last words && exit 3\n").unwrap();
    let out = b.output(&["build", "--progress", "plain", "-f", &p(&df), &p(dir.path())]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exit code: 3") && err.contains("last words") && err.contains(":2:1"), "{err}");
    // A #! heredoc is mounted as a file; where nothing can be mounted, the error says what to write.
    std::fs::write(&df, "FROM busybox:latest\nRUN <<EOF\n#!/bin/sh\ntrue\nEOF\n").unwrap();
    let out = fails(&["build", "--isolation", "chroot", "-f", &p(&df), &p(dir.path())]);
    assert!(out.contains(":2:1: a heredoc that starts with #!") && out.contains("RUN python3 <<EOF"), "{out}");
}

#[test]
fn builds_are_reproducible_with_source_date_epoch() {
    let Some(one) = build_store() else { return };
    let Some(two) = build_store() else { return };
    let digest = |b: &Berth| {
        let meta = b.root.path().join("meta.json");
        let (mut cmd, _agent) = full_cmd(b, &["-q", "--metadata-file", &p(&meta)]);
        let out = cmd.env("SOURCE_DATE_EPOCH", "1700000000").stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
        m["containerimage.digest"].as_str().unwrap().to_owned()
    };
    let a = digest(&one);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = digest(&two);
    assert_eq!(a, b, "two clean builds in different roots at different times differ");
}

#[test]
fn source_date_epoch_as_a_build_arg_dates_the_image_as_buildkit_does() {
    let Some(b) = build_store() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = "FROM busybox:latest\nARG SOURCE_DATE_EPOCH\nRUN echo \"$SOURCE_DATE_EPOCH\" > /epoch\n";
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let (ok, out) = build(&b, &["--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "sde:1", &p(ctx.path())]);
    assert!(ok, "{out}");
    let f = |tpl: &str| b.ok(&["inspect", "--type", "image", "-f", tpl, "sde:1"]).trim().to_owned();
    assert_eq!(f("{{.Created}}"), "2023-11-14T22:13:20Z", "the config's created");
    assert_eq!(f("{{range .History}}{{.created}} {{end}}").split_whitespace().last(), Some("2023-11-14T22:13:20Z"));
    // Declared, the argument reaches RUN.
    assert_eq!(b.ok(&["run", "--rm", "sde:1", "cat", "/epoch"]), "1700000000\n");
}

#[test]
fn add_host_reaches_every_run_step_and_a_bad_one_fails_the_build_at_once() {
    let Some(b) = build_store() else { return };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox:latest\nRUN tail -n 3 /etc/hosts > /hosts\n").unwrap();
    let (ok, out) =
        build(&b, &["--add-host", "mirror:10.9.8.7", "--add-host", "gw:host-gateway", "-t", "ah:1", &p(ctx.path())]);
    assert!(ok, "{out}");
    assert_eq!(
        b.ok(&["run", "--rm", "ah:1", "cat", "/hosts"]),
        "10.9.8.7\tmirror\n127.0.0.1\tgw\n127.0.1.1\tbuildkitsandbox\n"
    );
    // As BuildKit, another address is not another key: the step is cached.
    let (ok, out) = build(&b, &["--add-host", "mirror:10.9.8.8", "-t", "ah:3", &p(ctx.path())]);
    assert!(ok && out.contains("CACHED"), "{out}");
    let (ok, out) = build(&b, &["--add-host", "mirror", "-t", "ah:2", &p(ctx.path())]);
    assert!(!ok && out.contains("--add-host: bad format for add-host"), "{out}");
}

#[test]
fn outputs_are_valid_images_for_other_tools() {
    let Some(b) = build_store() else { return };
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("app-oci.tar");
    let docker = out.path().join("app-docker.tar");
    let local = out.path().join("rootfs");
    let iid = out.path().join("iid");
    let rootfs_tar = out.path().join("rootfs.tar");
    let ctx = fixture("multistage");
    let (ok, log) = build(
        &b,
        &[
            "-t",
            "out:1",
            "--iidfile",
            &p(&iid),
            "-o",
            &format!("type=oci,dest={}", p(&oci)),
            "-o",
            &format!("type=docker,dest={}", p(&docker)),
            "-o",
            &format!("type=local,dest={}", p(&local)),
            "-o",
            &format!("type=tar,dest={}", p(&rootfs_tar)),
            &p(&ctx),
        ],
    );
    assert!(ok, "{log}");
    assert!(std::fs::read_to_string(&iid).unwrap().starts_with("sha256:"));
    assert_eq!(std::fs::read_to_string(local.join("out/a.txt")).unwrap(), "a: from a\n");
    let listing = run_tool(std::process::Command::new("tar").args(["-tf", &p(&rootfs_tar)]));
    assert!(listing.lines().any(|l| l.trim_start_matches("./") == "out/b.txt"), "{listing}");
    // zstd layers: the media type says so and the image still runs.
    let (ok, log) = build(&b, &["-t", "zstd:1", "--compression", "zstd", &p(&ctx)]);
    assert!(ok, "{log}");
    assert!(b.ok(&["inspect", "zstd:1"]).contains("tar+zstd"));
    assert_eq!(b.ok(&["run", "--rm", "zstd:1"]), "a: from a\nb: from b\n");
    if require_tool("skopeo") {
        let inspected =
            run_tool(std::process::Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", p(&oci))]));
        assert!(inspected.contains("\"Layers\""), "{inspected}");
        let inspected =
            run_tool(std::process::Command::new("skopeo").args(["inspect", &format!("docker-archive:{}", p(&docker))]));
        assert!(inspected.contains("\"Layers\""), "{inspected}");
    }
    if require_tool("oci-image-tool") {
        let unpacked = out.path().join("layout");
        std::fs::create_dir_all(&unpacked).unwrap();
        run_tool(std::process::Command::new("tar").args(["-xf", &p(&oci), "-C", &p(&unpacked)]));
        let v =
            run_tool(std::process::Command::new("oci-image-tool").args(["validate", "--type", "image", &p(&unpacked)]));
        assert!(v.contains("Validation succeeded"), "{v}");
    }
}

#[test]
fn push_sends_the_build_to_berths_registry_and_a_base_is_pulled_from_it() {
    let Some(b) = build_store() else { return };
    if !require_tool("skopeo") {
        return;
    }
    let reg = tempfile::tempdir().unwrap();
    let server = crate::util::Server::start(reg.path(), &[]);
    let name = format!("{}/team/ms:1", server.addr);
    let (ok, log) = build(&b, &["-t", &name, "--push", &p(&fixture("multistage"))]);
    assert!(ok, "{log}");
    let inspected = run_tool(std::process::Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]));
    assert!(inspected.contains("\"Layers\""), "{inspected}");
    // A second store without the base: FROM pulls it from the registry.
    let other = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {name}\nRUN cat /out/a.txt > /copy.txt\n")).unwrap();
    let (ok, log) = build(&other, &["-t", "derived:1", &p(dir.path())]);
    assert!(ok, "{log}");
    assert!(log.contains("pulling"), "{log}");
    assert_eq!(other.ok(&["run", "--rm", "derived:1", "cat", "/copy.txt"]), "a: from a\n");
    // Now the store has it: no pull, unless --pull asks for one.
    let (ok, log) = build(&other, &["-t", "derived:1", &p(dir.path())]);
    assert!(ok && !log.contains("pulling"), "{log}");
    let (ok, log) = build(&other, &["--pull", "-t", "derived:1", &p(dir.path())]);
    assert!(ok && log.contains("pulling"), "{log}");
}

/// Serves `body` to every GET on 127.0.0.1 (one thread, until the test ends); returns the address.
fn serve(body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ =
                write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    addr
}

#[test]
fn add_downloads_urls_and_checks_their_checksum() {
    let Some(b) = build_store() else { return };
    let body = "downloaded content\n";
    let addr = serve(body);
    let sum = oci::Digest::of(body.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM busybox:latest\nADD --checksum={sum} http://{addr}/files/data.txt /dl/\nADD http://{addr}/x/other.txt /other.txt\n"
        ),
    )
    .unwrap();
    let (ok, log) = build(&b, &["-t", "dl:1", &p(dir.path())]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "dl:1", "cat", "/dl/data.txt", "/other.txt"]), format!("{body}{body}"));
    let wrong = oci::Digest::of(b"something else");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM busybox:latest\nADD --checksum={wrong} http://{addr}/f /f\n"),
    )
    .unwrap();
    let (ok, log) = build(&b, &["-t", "dl:2", &p(dir.path())]);
    assert!(!ok && log.contains("checksum mismatch") && log.contains("Dockerfile:2:1"), "{log}");
}

#[test]
fn run_mounts_from_stages_stay_inside_them_and_rw_binds_are_discarded() {
    let Some(b) = build_store() else { return };
    let dir = copy_fixture("mounts");
    let ctx = dir.path().join("f");
    let (ok, log) = build(&b, &["-t", "mounts:1", &p(&ctx)]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "mounts:1"]), "tool-v1\ncontext file\ntool-v1\n");
    assert!(!ctx.join("new.txt").exists(), "a rw bind mount wrote into the build context");
    let ls = b.ok(&["run", "--rm", "mounts:1", "ls", "/"]);
    assert!(!ls.contains("new.txt"), "{ls}");
}

#[test]
fn built_images_run_under_runc() {
    let Some(b) = build_store() else { return };
    if !require_tool("runc") {
        return;
    }
    let (ok, log) = build(&b, &["-t", "ms:runc", &p(&fixture("multistage"))]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "--runtime", "runc", "ms:runc"]), "a: from a\nb: from b\n");
}

#[test]
fn rawjson_progress_is_one_json_object_per_line_and_quiet_prints_only_the_id() {
    let Some(b) = build_store() else { return };
    let ctx = p(&fixture("multistage"));
    let out = b.output(&["build", "--progress", "rawjson", "-t", "raw:1", &ctx]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = err.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(events.iter().any(|e| e["completed"] == true), "{err}");
    assert!(
        events
            .last()
            .is_some_and(|e| e["done"] == true && e["digest"].as_str().is_some_and(|d| d.starts_with("sha256:"))),
        "{err}"
    );
    let out = b.output(&["build", "-q", "-t", "raw:1", &ctx]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        id.starts_with("sha256:") && b.ok(&["images", "--no-trunc"]).contains(&id),
        "the -q ID is the image ID: {id}"
    );
}

#[test]
fn build_args_scope_like_docker() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        r#"ARG GLOBAL=g1
ARG BASE=busybox:latest
FROM ${BASE}
# A global ARG reaches a stage only through an ARG line; before it, it is unset.
RUN test -z "$GLOBAL"
ARG GLOBAL
ARG LOCAL=l1
ARG TARGETOS
RUN echo "global=$GLOBAL local=$LOCAL os=$TARGETOS undeclared=$UNDECLARED proxy=$HTTP_PROXY" > /args.txt
ENV LOCAL=from-env
RUN echo "env wins: $LOCAL" >> /args.txt
"#,
    )
    .unwrap();
    let (ok, log) = build(
        &b,
        &[
            "-t",
            "args:1",
            "--build-arg",
            "GLOBAL=override",
            "--build-arg",
            "UNDECLARED=nope",
            "--build-arg",
            "HTTP_PROXY=http://proxy.invalid:3128",
            &p(dir.path()),
        ],
    );
    assert!(ok, "{log}");
    assert_eq!(
        b.ok(&["run", "--rm", "args:1", "cat", "/args.txt"]),
        "global=override local=l1 os=linux undeclared= proxy=http://proxy.invalid:3128\nenv wins: from-env\n"
    );
    // The history names the build args a RUN saw, as docker's does; proxies stay out of it.
    let history = b.ok(&["history", "--no-trunc", "args:1"]);
    assert!(history.contains("RUN |3 GLOBAL=override LOCAL=l1 TARGETOS=linux"), "{history}");
    assert!(!history.contains("proxy.invalid"), "{history}");
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "args:1"])).unwrap();
    assert!(!inspect.to_string().contains("proxy.invalid"));
    // `RUN test ...` changed no file: no layer (the sandbox's mount targets are not content),
    // and its history entry says so.
    let diff_ids = inspect[0]["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(diff_ids, 3, "busybox + the two RUNs that wrote /args.txt: {inspect}");
    let empty = inspect[0]["History"].as_array().unwrap().iter().filter(|h| h["empty_layer"] == true).count();
    assert!(empty >= 3, "ARG-free RUN test, ENV: {inspect}");
}

#[test]
fn target_builds_only_that_stage_and_label_lands_in_the_config() {
    let Some(b) = build_store() else { return };
    let (ok, log) =
        build(&b, &["--target", "a", "--label", "org.example.ci=yes", "-t", "only-a:1", &p(&fixture("multistage"))]);
    assert!(ok, "{log}");
    let ran = steps_that_ran(&log);
    assert!(ran.iter().all(|l| l.contains("[a ")), "stages a does not need ran: {ran:?}");
    assert_eq!(b.ok(&["run", "--rm", "only-a:1", "cat", "/a.txt"]), "a: from a\n");
    let b_file = b.output(&["run", "--rm", "only-a:1", "test", "-e", "/b.txt"]);
    assert_eq!(b_file.status.code(), Some(1), "stage b's file is not in stage a");
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "only-a:1"])).unwrap();
    assert_eq!(inspect[0]["Config"]["Labels"]["org.example.ci"], "yes", "{inspect}");
    let out = b.output(&["build", "--target", "nosuch", &p(&fixture("multistage"))]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nosuch"));
}

#[test]
fn named_build_contexts_take_the_place_of_stages_and_images_as_buildx() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (ctx, docs, over) = (dir.path().join("ctx"), dir.path().join("docs"), dir.path().join("over"));
    for d in [&ctx, &docs.join("sub"), &over] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(ctx.join("main.txt"), "main\n").unwrap();
    std::fs::write(docs.join("a.md"), "doc one\n").unwrap();
    std::fs::write(docs.join("sub/b.md"), "doc two\n").unwrap();
    std::fs::write(over.join("stage"), "from a directory\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base AS b\nRUN echo from the stage > /stage\n\
         FROM base\nCOPY --from=docs . /docs/\nCOPY main.txt /\nCOPY --from=b /stage /from-b\n\
         RUN --mount=from=docs,target=/d cat /d/sub/b.md > /mounted\n",
    )
    .unwrap();
    let docs_arg = format!("docs={}", p(&docs));
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-q", "-t", "named", "--build-context", "base=docker-image://busybox:latest"];
        args.extend(["--build-context", &docs_arg]);
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        b.ok(&args)
    };
    let script = "cat /docs/a.md /docs/sub/b.md /main.txt /from-b /mounted";
    build(&[]);
    assert_eq!(
        b.ok(&["run", "--rm", "named", "sh", "-c", script]),
        "doc one\ndoc two\nmain\nfrom the stage\ndoc two\n"
    );
    // A context of a stage's name replaces the stage, as buildx's does.
    build(&["--build-context", &format!("b={}", p(&over))]);
    assert_eq!(b.ok(&["run", "--rm", "named", "cat", "/from-b"]), "from a directory\n");
    // A changed file in a named context is a cache miss for what reads it.
    std::fs::write(docs.join("a.md"), "doc one, changed\n").unwrap();
    build(&["--build-context", &format!("b={}", p(&over))]);
    assert_eq!(b.ok(&["run", "--rm", "named", "head", "-n1", "/docs/a.md"]), "doc one, changed\n");
    // FROM a directory: its files are the image's.
    std::fs::write(ctx.join("Dockerfile.dir"), "FROM docs\n").unwrap();
    let file = ctx.join("Dockerfile.dir");
    b.ok(&["build", "-q", "-t", "docsonly", "-f", &p(&file), "--build-context", &docs_arg, &p(&ctx)]);
    let saved = dir.path().join("docs.tar");
    b.ok(&["save", "-o", &p(&saved), "docsonly"]);
    let layer_files = run_tool(std::process::Command::new("sh").arg("-c").arg(format!(
        "cd {0} && mkdir x && tar -xf {1} -C x && for l in $(find x/blobs -type f); do tar -tf $l 2>/dev/null; done | sort",
        p(dir.path()),
        p(&saved)
    )));
    assert!(layer_files.contains("a.md") && layer_files.contains("sub/b.md"), "{layer_files}");
    // What buildx takes that berth does not is refused by name; a bad value says what is expected.
    let err = b.fails(&["build", "--build-context", "x=https://example.com/x.git", &p(&ctx)]);
    assert!(err.contains("https:// sources are not supported"), "{err}");
    assert!(b.fails(&["build", "--build-context", "x", &p(&ctx)]).contains("expected NAME=VALUE"));
}
