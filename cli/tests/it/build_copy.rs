//! `berth build` COPY, ADD and WORKDIR: symbolic `--chmod`, ADD of URLs (timeouts, retries)
//! and of hostile archives, `COPY --from` keyed by content, WORKDIR owned by the USER.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::util::{build_store, p, Berth};

/// Builds `ctx` with plain progress and `env`; returns success and the whole log.
fn build(b: &Berth, ctx: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut full = vec!["build", "--progress", "plain"];
    full.extend_from_slice(args);
    let ctx = p(ctx);
    full.push(&ctx);
    let mut cmd = b.cmd(&full);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

/// True when the plain log shows the step whose header contains `step` as CACHED.
fn cached(log: &str, step: &str) -> bool {
    let Some(num) = log.lines().find(|l| l.contains(step) && l.contains(" [")).and_then(|l| l.split(' ').next()) else {
        return false;
    };
    log.lines().any(|l| l == format!("{num} CACHED"))
}

fn write(dir: &Path, name: &str, content: &str, mode: u32) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

#[test]
fn chmod_takes_symbolic_modes_applied_to_each_entry_on_copy_and_add() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "f600", "a\n", 0o600);
    write(ctx, "f640", "b\n", 0o640);
    write(ctx, "f664", "c\n", 0o664);
    write(ctx, "tree/plain", "d\n", 0o600);
    write(ctx, "tree/tool", "e\n", 0o700);
    std::fs::set_permissions(ctx.join("tree"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\n\
         COPY --chmod=u=rwx,go=rx f600 /m/sym\n\
         COPY --chmod=a+x f640 /m/ax\n\
         COPY --chmod=g-w f664 /m/gw\n\
         COPY --chmod=u=rwX,go=rX tree/ /m/tree/\n\
         COPY --chmod=640 f600 /m/octal\n\
         ADD --chmod=go+r,u+x f600 /m/added\n\
         COPY --chmod=o=u <<EOF /m/heredoc\nhi\nEOF\n\
         RUN cd /m && stat -c '%a %n' sym ax gw tree tree/plain tree/tool octal added heredoc > /modes\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "chmod:1"], &[]);
    assert!(ok, "{log}");
    assert_eq!(
        b.ok(&["run", "--rm", "chmod:1", "cat", "/modes"]),
        "755 sym\n751 ax\n644 gw\n755 tree\n644 tree/plain\n755 tree/tool\n640 octal\n744 added\n646 heredoc\n",
        "u=rwx,go=rx sets; a+x and g-w keep each file's other bits; X is for directories and executables"
    );
    // A bad mode is refused where it is written.
    write(ctx, "Dockerfile", "FROM busybox:latest\nCOPY --chmod=u+z f600 /x\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "chmod:2"], &[]);
    assert!(!ok, "{log}");
    assert!(log.contains("Dockerfile:2:14: invalid --chmod=u+z: 'z' at character 3 is not a permission"), "{log}");
}

/// A server on 127.0.0.1 answering the n-th request (from 0) with `answer(n)`, or holding
/// the connection silent for `None`; returns its address and the request count.
fn serve(answer: impl Fn(usize) -> Option<String> + Send + 'static) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.read(&mut [0u8; 4096]);
            match answer(seen.fetch_add(1, Ordering::SeqCst)) {
                Some(resp) => {
                    let _ = conn.write_all(resp.as_bytes());
                }
                None => held.push(conn),
            }
        }
    });
    (addr, count)
}

fn reply(status: &str, body: &str) -> Option<String> {
    Some(format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()))
}

#[test]
fn add_url_gives_up_on_a_silent_server_retries_failures_and_does_not_retry_a_404() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    // A server that never answers: the idle timeout ends it quickly, naming the URL.
    let (addr, count) = serve(|_| None);
    write(ctx, "Dockerfile", &format!("FROM busybox:latest\nADD http://{addr}/stall.bin /s\n"), 0o644);
    let started = std::time::Instant::now();
    let env = [("BERTH_ADD_IDLE_TIMEOUT", "1"), ("BERTH_ADD_RETRIES", "1"), ("BERTH_ADD_RETRY_BACKOFF", "0.1")];
    let (ok, log) = build(&b, ctx, &["-t", "url:1"], &env);
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!("Dockerfile:2:1: download http://{addr}/stall.bin: the server sent nothing for 1s"))
            && log.contains("after 2 attempts"),
        "{log}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // Two failures, then the file: the build succeeds with it.
    let (addr, count) =
        serve(|n| if n < 2 { reply("503 Service Unavailable", "busy") } else { reply("200 OK", "third time\n") });
    write(ctx, "Dockerfile", &format!("FROM busybox:latest\nADD http://{addr}/f.txt /f.txt\n"), 0o644);
    let patient = [("BERTH_ADD_RETRIES", "3"), ("BERTH_ADD_RETRY_BACKOFF", "0.1")];
    let (ok, log) = build(&b, ctx, &["-t", "url:2"], &patient);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "url:2", "cat", "/f.txt"]), "third time\n");
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // A 404 fails at once.
    let (addr, count) = serve(|_| reply("404 Not Found", "no"));
    write(ctx, "Dockerfile", &format!("FROM busybox:latest\nADD http://{addr}/missing /m\n"), 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "url:3"], &[("BERTH_ADD_RETRIES", "5")]);
    assert!(!ok, "{log}");
    assert!(log.contains(&format!("download http://{addr}/missing: the server answered 404 Not Found")), "{log}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "a 404 is not retried");
}

/// A tar entry written raw, so that the tar crate cannot tidy hostile names away.
fn raw_link(b: &mut tar::Builder<std::fs::File>, kind: tar::EntryType, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
}

fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn archive(path: &Path, fill: impl FnOnce(&mut tar::Builder<std::fs::File>)) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    fill(&mut b);
    b.finish().unwrap();
}

/// An octal tar number field of width N.
fn octal<const N: usize>(n: u64) -> [u8; N] {
    let s = format!("{n:0w$o}", w = N - 1);
    let mut out = [0u8; N];
    out[..N - 1].copy_from_slice(s.as_bytes());
    out
}

#[test]
fn add_archives_refuse_escapes_keep_long_pax_and_sparse_entries_and_are_capped() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    let gnu_long = format!("{}/{}.txt", "g".repeat(70), "l".repeat(60));
    let pax_long = format!("{}/{}.txt", "p".repeat(90), "x".repeat(80));
    archive(&ctx.join("good.tar"), |a| {
        a.append_data(&mut file_header(4), &gnu_long, &b"gnu\n"[..]).unwrap();
        let rec = format!("path={pax_long}\n");
        let rec = format!("{} {rec}", rec.len() + 4);
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(rec.len() as u64);
        x.set_path("PaxHeaders/long").unwrap();
        x.set_cksum();
        a.append(&x, rec.as_bytes()).unwrap();
        a.append_data(&mut file_header(4), "short", &b"pax\n"[..]).unwrap();
        // A GNU sparse file: 4 KiB of data after a 1 MiB hole.
        let mut h = file_header(4096);
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_path("sparse.img").unwrap();
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].offset = octal(1 << 20);
        g.sparse[0].numbytes = octal(4096);
        g.realsize = octal((1 << 20) + 4096);
        h.set_cksum();
        a.append(&h, &[7u8; 4096][..]).unwrap();
        raw_link(a, tar::EntryType::Symlink, "inside", "sparse.img");
        a.append_data(&mut file_header(6), "plain.txt", &b"plain\n"[..]).unwrap();
        raw_link(a, tar::EntryType::Link, "hard", "plain.txt");
    });
    write(
        ctx,
        "Dockerfile",
        &format!(
            "FROM busybox:latest\nADD good.tar /x/\nADD --chown=berth good.tar /y/\nRUN cd /x && cat {gnu_long} {pax_long} hard && stat -c '%s %F' sparse.img inside > /report && stat -c %u:%g /y/plain.txt plain.txt >> /report\n"
        ),
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "arch:1"], &[]);
    assert!(ok, "{log}");
    assert_eq!(
        b.ok(&["run", "--rm", "arch:1", "cat", "/report"]),
        "1052672 regular file\n10 symbolic link\n1000:1000\n0:0\n",
        "sizes and types survive; --chown owns the entries, else the archive does"
    );
    for (name, fill, want) in [
        (
            "symlink.tar",
            (|a| raw_link(a, tar::EntryType::Symlink, "up", "../../etc")) as fn(&mut tar::Builder<std::fs::File>),
            "entry \"up\" is a symlink to \"../../etc\", which leaves the destination; refused",
        ),
        (
            "hardlink.tar",
            |a| raw_link(a, tar::EntryType::Link, "h", "../../etc/shadow"),
            "entry \"h\" is a hardlink to \"../../etc/shadow\", outside the destination; refused",
        ),
        (
            "dotdot.tar",
            |a| raw_link(a, tar::EntryType::Symlink, "../evil", "x"),
            "entry \"../evil\" climbs out of the destination with '..'; refused",
        ),
    ] {
        archive(&ctx.join(name), fill);
        write(ctx, "Dockerfile", &format!("FROM busybox:latest\nADD {name} /x/\n"), 0o644);
        let (ok, log) = build(&b, ctx, &["-t", "arch:bad"], &[]);
        assert!(!ok, "{name}: {log}");
        assert!(log.contains(&format!("Dockerfile:2:1: {name}: {want}")), "{name}: {log}");
    }
    // A bomb: 2 MiB of zeros, over a 1 MiB cap.
    archive(&ctx.join("bomb.tar"), |a| {
        a.append_data(&mut file_header(2 << 20), "zeros", std::io::repeat(0).take(2 << 20)).unwrap();
    });
    write(ctx, "Dockerfile", "FROM busybox:latest\nADD bomb.tar /x/\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "arch:bomb"], &[("BERTH_ADD_MAX_EXPANDED", "1M")]);
    assert!(!ok, "{log}");
    assert!(log.contains("bomb.tar: the archive expands to more than 1048576 bytes (at entry \"zeros\")"), "{log}");
    let (ok, log) = build(&b, ctx, &["-t", "arch:bomb"], &[("BERTH_ADD_MAX_EXPANDED", "4M")]);
    assert!(ok, "under the cap it builds: {log}");
}

/// Runs `cmd` (a shell line) in `dir`, and asserts it succeeded.
fn sh(dir: &Path, cmd: &str) {
    let ok = std::process::Command::new("sh").args(["-c", cmd]).current_dir(dir).status().unwrap();
    assert!(ok.success(), "{cmd}");
}

#[test]
fn add_extracts_xz_and_bzip2_tars_by_content_and_caps_them_as_gzip_ones() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "src/app/bin.txt", "app\n", 0o644);
    sh(ctx, "tar -C src -cJf app.tar.xz app && tar -C src -cjf app.tar.bz2 app && rm -r src");
    write(ctx, "fake.tar.xz", "not an archive\n", 0o644);
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\nADD app.tar.xz /xz/\nADD app.tar.bz2 /bz/\nADD fake.tar.xz /fake/\n\
         RUN cat /xz/app/bin.txt /bz/app/bin.txt /fake/fake.tar.xz > /report\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "xzbz:1"], &[]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "xzbz:1", "cat", "/report"]), "app\napp\nnot an archive\n");
    // Bombs: 2 MiB of zeros, over a 1 MiB cap, in each format.
    write(ctx, "zeros/zeros", "", 0o644);
    sh(ctx, "head -c 2097152 /dev/zero > zeros/zeros && tar -C zeros -cJf bomb.tar.xz zeros && tar -C zeros -cjf bomb.tar.bz2 zeros");
    for name in ["bomb.tar.xz", "bomb.tar.bz2"] {
        write(ctx, "Dockerfile", &format!("FROM busybox:latest\nADD {name} /x/\n"), 0o644);
        let (ok, log) = build(&b, ctx, &["-t", "xzbz:bomb"], &[("BERTH_ADD_MAX_EXPANDED", "1M")]);
        assert!(!ok, "{log}");
        let want = format!("{name}: the archive expands to more than 1048576 bytes (at entry \"zeros\")");
        assert!(log.contains(&want), "{log}");
    }
}

#[test]
fn copy_from_a_stage_that_reran_with_the_same_output_is_cached() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "input.txt", "b\na\nc\n", 0o644);
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest AS gen\nCOPY input.txt /input.txt\nRUN sort /input.txt > /out.txt\n\
         FROM busybox:latest\nCOPY --from=gen /out.txt /out.txt\n",
        0o644,
    );
    let iid = ctx.join("iid");
    let iid_arg = p(&iid);
    let (ok, first) = build(&b, ctx, &["-t", "cf:1", "--iidfile", &iid_arg], &[]);
    assert!(ok, "{first}");
    let first_id = std::fs::read_to_string(&iid).unwrap();
    // Lines reordered: the stage reruns, its output is byte-identical.
    write(ctx, "input.txt", "c\nb\na\n", 0o644);
    let (ok, second) = build(&b, ctx, &["-t", "cf:1", "--iidfile", &iid_arg], &[]);
    assert!(ok, "{second}");
    assert!(!cached(&second, "RUN sort"), "the source stage should have rerun:\n{second}");
    assert!(cached(&second, "COPY --from=gen"), "COPY --from is keyed by content:\n{second}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), first_id, "the image ID changed");
    // A real change to the copied file is a miss.
    write(ctx, "input.txt", "c\nb\nz\n", 0o644);
    let (ok, third) = build(&b, ctx, &["-t", "cf:1", "--iidfile", &iid_arg], &[]);
    assert!(ok && !cached(&third, "COPY --from=gen"), "{third}");
    assert_eq!(b.ok(&["run", "--rm", "cf:1", "cat", "/out.txt"]), "b\nc\nz\n");
}

#[test]
fn workdir_under_user_is_created_owned_by_that_user_and_dated_now() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\n\
         RUN echo 'app:x:1234:2345::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:2345:' >> /etc/group\n\
         USER app\n\
         WORKDIR /work/sub\n\
         RUN touch x && stat -c '%u %g %a %Y %n' /work /work/sub /work/sub/x > /tmp/report\n\
         USER root\n\
         RUN mv /tmp/report /report\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "wd:1"], &[]);
    assert!(ok, "RUN touch under USER app in its WORKDIR: {log}");
    let report = b.ok(&["run", "--rm", "wd:1", "cat", "/report"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let lines: Vec<Vec<&str>> = report.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 3, "{report}");
    for (l, name) in lines.iter().zip(["/work", "/work/sub", "/work/sub/x"]) {
        assert_eq!((l[0], l[1], l[4]), ("1234", "2345", name), "{report}");
        let mtime: i64 = l[3].parse().unwrap();
        assert!((now - mtime).abs() < 600, "{name} is dated {mtime}, not near {now}: {report}");
    }
    assert_eq!(&lines[1][2], &"755", "{report}");
    // SOURCE_DATE_EPOCH dates it instead.
    write(ctx, "Dockerfile", "FROM busybox:latest\nWORKDIR /w\nRUN stat -c '%Y' /w > /when\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "wd:2"], &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "wd:2", "cat", "/when"]), "1700000000\n");
}

#[test]
fn chown_and_workdir_owners_follow_buildkits_rules_not_users() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "f", "f\n", 0o644);
    // uid 1001 is listed with gid 77: BuildKit still gives `1001` the gid 1001.
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\n\
         ARG OWNER\n\
         RUN echo 'app:x:1001:77::/:/bin/sh' >> /etc/passwd && echo 'web:x:33:50::/:/bin/sh' >> /etc/passwd \\\n\
           && echo 'devs:x:4242:' >> /etc/group\n\
         COPY --chown=1001 f /a\n\
         COPY --chown=:devs f /b\n\
         COPY --chown=nosuch f /c\n\
         COPY --chown=$OWNER f /d\n\
         COPY --chown=web f /e\n\
         COPY --chown=1001:nosuch f /g\n\
         USER 1001\n\
         WORKDIR /w1\n\
         USER nosuch\n\
         WORKDIR /w2\n\
         USER root\n\
         RUN stat -c '%u:%g %n' /a /b /c /d /e /g /w1 /w2 > /report\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "owners:1"], &[]);
    assert!(ok, "an unknown name is 0:0, not an error: {log}");
    assert_eq!(
        b.ok(&["run", "--rm", "owners:1", "cat", "/report"]),
        "1001:1001 /a\n0:4242 /b\n0:0 /c\n0:0 /d\n33:50 /e\n1001:1001 /g\n1001:1001 /w1\n0:0 /w2\n"
    );
}

#[test]
fn a_dockerignore_exception_under_an_excluded_directory_is_copied_with_the_directory() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, ".dockerignore", "target\n!target/*.jar\n", 0o644);
    for f in ["target/app.jar", "target/other.txt", "target/lib/x.jar"] {
        write(ctx, f, "x\n", 0o644);
    }
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\nCOPY target /t\nCOPY targe? /u/\nRUN find /t /u | sort > /report\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "reinc:1"], &[]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "reinc:1", "cat", "/report"]), "/t\n/t/app.jar\n/u\n/u/app.jar\n");
}

#[test]
fn a_symlink_copied_into_a_directory_keeps_its_name_and_an_empty_wildcard_copies_nothing() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "real.conf", "conf\n", 0o644);
    std::os::unix::fs::symlink("real.conf", ctx.join("app.conf")).unwrap();
    write(ctx, "package.json", "{}\n", 0o644);
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest AS build\n\
         RUN mkdir -p /usr/lib/x && echo so > /usr/lib/x/libfoo.so.1.2 && ln -s libfoo.so.1.2 /usr/lib/x/libfoo.so\n\
         FROM busybox:latest\n\
         COPY --from=build /usr/lib/x/libfoo.so /out/\n\
         COPY app.conf real.conf /etc/app/\n\
         COPY package.json yarn.lock* /app/\n\
         RUN ls /out /etc/app /app > /listing\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "names:1"], &[]);
    assert!(ok, "a wildcard that matches nothing is not an error, as in BuildKit: {log}");
    let listing = b.ok(&["run", "--rm", "names:1", "cat", "/listing"]);
    assert_eq!(listing, "/app:\npackage.json\n\n/etc/app:\napp.conf\nreal.conf\n\n/out:\nlibfoo.so\n", "{listing}");
    // A plain path that is missing is still an error.
    write(ctx, "Dockerfile", "FROM busybox:latest\nCOPY missing.txt /\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "names:2"], &[]);
    assert!(!ok && log.contains("missing.txt"), "{log}");
}

#[test]
fn home_comes_from_the_images_passwd_and_a_named_group_is_the_only_group() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\n\
         RUN echo 'app:x:1234:2345::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:2345:' >> /etc/group \
             && echo 'extra:x:1700:app' >> /etc/group && echo 'daemon2:x:77:' >> /etc/group\n\
         RUN echo \"root $HOME\" >> /report\n\
         USER app\n\
         RUN echo \"app $HOME $(id -G)\" > /tmp/r1\n\
         USER app:daemon2\n\
         RUN echo \"app:daemon2 $(id -G)\" > /tmp/r2\n\
         USER 4321\n\
         RUN echo \"4321 $HOME\" > /tmp/r3\n\
         USER root\n\
         RUN cat /tmp/r1 /tmp/r2 /tmp/r3 >> /report\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "home:1"], &[]);
    assert!(ok, "{log}");
    let report = b.ok(&["run", "--rm", "home:1", "cat", "/report"]);
    assert_eq!(report, "root /root\napp /home/app 2345 1700\napp:daemon2 77\n4321 /\n", "{report}");
    // `berth run` too, for a user the image names.
    let out = b.ok(&["run", "--rm", "-u", "app", "--entrypoint", "sh", "home:1", "-c", "echo $HOME"]);
    assert_eq!(out, "/home/app\n");
    // A HOME the image sets is kept.
    write(ctx, "Dockerfile", "FROM home:1\nENV HOME=/custom\nRUN echo $HOME > /set\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "home:2"], &[]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "home:2", "cat", "/set"]), "/custom\n");
}

#[test]
fn copy_parents_keeps_the_path_below_a_pivot() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "src/pkg/sub/g.go", "package sub\n", 0o644);
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\n\
         COPY --parents ./src/./pkg/sub/g.go /p2/\n\
         COPY --parents src/pkg/sub/g.go /p1/\n\
         RUN find /p1 /p2 -type f | sort > /found\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "pivot:1"], &[]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "pivot:1", "cat", "/found"]), "/p1/src/pkg/sub/g.go\n/p2/pkg/sub/g.go\n");
}

#[test]
fn a_run_step_without_its_shell_names_the_shell() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "Dockerfile", "FROM scratch\nRUN true\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "noshell:1"], &[]);
    assert!(!ok && log.contains("/bin/sh: No such file or directory"), "{log}");
}

/// The regular files under `rel` in the committed snapshots of `b`'s store that hold
/// `marker` at `rel/marker_file`: (files, files with more than one link).
fn snapshot_links(b: &crate::util::Berth, rel: &str, marker_file: &str, marker: &str) -> (usize, usize) {
    use std::os::unix::fs::MetadataExt;
    let overlay = b.root.path().join("snapshots/overlay");
    for snap in std::fs::read_dir(&overlay).unwrap().flatten() {
        let dir = snap.path().join("fs").join(rel);
        if std::fs::read_to_string(dir.join(marker_file)).ok().as_deref() != Some(marker) {
            continue;
        }
        let metas: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.metadata().unwrap()).collect();
        let files = metas.iter().filter(|m| m.is_file()).count();
        return (files, metas.iter().filter(|m| m.is_file() && m.nlink() > 1).count());
    }
    panic!("no snapshot holds {rel}/{marker_file} = {marker:?}");
}

#[test]
fn a_copy_with_one_changed_file_links_the_others_and_makes_the_layer_a_full_copy_makes() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    for i in 0..40 {
        write(ctx, &format!("tree/f{i:02}"), &format!("file {i}\n").repeat(100 + i), 0o644);
    }
    write(ctx, "Dockerfile", "FROM busybox:latest\nCOPY tree/ /src/\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "reuse:1"], &[]);
    assert!(ok, "{log}");
    // One file edited, one whose only change is its mode.
    write(ctx, "tree/f07", "edited\n", 0o644);
    std::fs::set_permissions(ctx.join("tree/f08"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (ok, log) = build(&b, ctx, &["-t", "reuse:2"], &[]);
    assert!(ok && !cached(&log, "COPY tree/"), "{log}");
    assert!(!log.contains("linking the unchanged files failed"), "{log}");
    assert_eq!(snapshot_links(&b, "src", "f07", "edited\n"), (40, 38), "the 38 unchanged files are links");
    assert_eq!(b.ok(&["run", "--rm", "reuse:2", "cat", "/src/f07"]), "edited\n");
    assert_eq!(b.ok(&["run", "--rm", "reuse:2", "stat", "-c", "%a %s", "/src/f08", "/src/f09"]), "600 756\n644 763\n");

    // The same layer as a full copy of the edited context into a fresh store.
    let diff_ids = |b: &crate::util::Berth, image: &str| b.ok(&["inspect", "-f", "{{.RootFS.Layers}}", image]);
    let fresh = crate::util::Berth::new();
    assert!(fresh.busybox("busybox:latest"));
    let (ok, log) = build(&fresh, ctx, &["-t", "reuse:2"], &[]);
    assert!(ok, "{log}");
    assert_eq!(diff_ids(&b, "reuse:2"), diff_ids(&fresh, "reuse:2"), "linked and written copies differ");

    // A RUN that writes to a linked file changes neither image it is shared with.
    let top = tempfile::tempdir().unwrap();
    write(top.path(), "Dockerfile", "FROM reuse:2\nRUN echo more >> /src/f01 && cat /src/f01 | tail -1\n", 0o644);
    let (ok, log) = build(&b, top.path(), &["-t", "reuse:3"], &[]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "reuse:3", "tail", "-n1", "/src/f01"]), "more\n");
    for image in ["reuse:1", "reuse:2"] {
        assert_eq!(b.ok(&["run", "--rm", image, "cat", "/src/f01"]), "file 1\n".repeat(101), "{image}");
    }

    // Something the links cannot account for (here a whiteout entry among the files): the
    // copy warns and writes every file, with the same result.
    write(ctx, "tree/f07", "edited again\n", 0o644);
    write(ctx, "tree/.wh.f39", "", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "reuse:4"], &[]);
    assert!(ok, "{log}");
    assert!(
        log.contains("linking the unchanged files failed (the copy holds whiteout entries); copying them all"),
        "{log}"
    );
    assert_eq!(snapshot_links(&b, "src", "f07", "edited again\n").1, 0, "{log}");
    assert_eq!(
        b.ok(&["run", "--rm", "reuse:4", "cat", "/src/f07", "/src/f00"]),
        format!("edited again\n{}", "file 0\n".repeat(100))
    );
}

#[test]
fn a_later_source_that_replaces_a_directory_wins_with_or_without_links() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "a/x/f", "f\n", 0o644);
    write(ctx, "c/x/g", "g\n", 0o644);
    write(ctx, "Dockerfile", "FROM busybox:latest\nCOPY a/ b/ c/ /dst/\n", 0o644);
    std::fs::create_dir(ctx.join("b")).unwrap();
    let (ok, log) = build(&b, ctx, &["-t", "over:1"], &[]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "over:1", "find", "/dst", "-type", "f"]), "/dst/x/f\n/dst/x/g\n");
    // Now b/x, a file, replaces the directory x that a/ made; c/ makes it again. The file f,
    // unchanged since the last copy, must not come back into the new x.
    write(ctx, "b/x", "file\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "over:2"], &[]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "over:2", "find", "/dst", "-type", "f"]), "/dst/x/g\n", "{log}");
    // Files only (no links to make): a file whose directory a later source replaced.
    write(ctx, "Dockerfile", "FROM busybox:latest\nCOPY a/ b/ /dst2/\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "over:3"], &[]);
    assert!(ok, "{log}");
    assert_eq!(b.ok(&["run", "--rm", "over:3", "cat", "/dst2/x"]), "file\n");
}

#[test]
fn copies_from_a_stage_keep_owners_and_chown_owns_the_directories_it_creates() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "package.json", "{}\n", 0o644);
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest AS build\n\
         RUN mkdir /out && echo x > /out/f && chown -R 1000:1001 /out && chown 1002:1003 /out/f\n\
         FROM busybox:latest\n\
         COPY --from=build /out /app\n\
         COPY --from=build --chown=7:8 /out /owned\n\
         COPY package.json /ctx/\n\
         COPY --chown=1000:1000 package.json /home/dev/app/\n\
         USER 1000\n\
         WORKDIR /home/dev/app\n\
         RUN mkdir node_modules\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "owners:1"], &[]);
    assert!(ok, "RUN mkdir under USER 1000 in the directory COPY --chown made: {log}");
    let report = b.ok(&[
        "run",
        "--rm",
        "owners:1",
        "stat",
        "-c",
        "%u:%g %n",
        "/app/f",
        "/owned/f",
        "/ctx/package.json",
        "/home/dev",
        "/home/dev/app",
        "/home/dev/app/package.json",
    ]);
    assert_eq!(
        report,
        "1002:1003 /app/f\n7:8 /owned/f\n0:0 /ctx/package.json\n1000:1000 /home/dev\n\
         1000:1000 /home/dev/app\n1000:1000 /home/dev/app/package.json\n",
        "a stage's files keep their owners, --chown overrides, context files are root's, \
         and the directories --chown creates are the new owner's"
    );
}

#[test]
fn add_of_a_tar_leaves_the_destination_directory_as_it_was() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    // A tar of a 0700 directory owned by 1001, `./` first, as `tar -C dir .` makes it.
    let src = dir.path().join("src");
    write(&src, "app.txt", "app\n", 0o644);
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let tar = std::process::Command::new("tar")
        .args(["--owner=1001", "--group=1001", "-C", &p(&src), "-cf", &p(&ctx.join("app.tar")), "."])
        .status()
        .unwrap();
    assert!(tar.success());
    write(ctx, "Dockerfile", "FROM busybox:latest\nRUN mkdir /app\nADD app.tar /app/\nADD app.tar /\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "dot:1"], &[]);
    assert!(ok, "{log}");
    let out = b.ok(&["run", "--rm", "dot:1", "stat", "-c", "%a %u:%g %n", "/app", "/", "/app/app.txt"]);
    assert_eq!(
        out, "755 0:0 /app\n755 0:0 /\n644 1001:1001 /app/app.txt\n",
        "the archive's ./ is skipped, as BuildKit does"
    );
}

#[test]
fn hard_links_within_a_copy_stay_links_from_the_context_and_from_a_stage() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "a/f", "linked\n", 0o644);
    std::fs::hard_link(ctx.join("a/f"), ctx.join("a/g")).unwrap();
    write(ctx, "a/h", "one\n", 0o644);
    let dockerfile = "FROM busybox:latest AS build\n\
                      RUN mkdir /out && echo hi > /out/one && ln /out/one /out/two\n\
                      FROM busybox:latest\nCOPY a /a\nCOPY --from=build /out /out\n";
    write(ctx, "Dockerfile", dockerfile, 0o644);
    // Each pair shares one inode (two names) in the image, as BuildKit copies them; a file
    // that merely has the same content does not.
    let links = |tag: &str| {
        let stat = "stat -c '%h %i' /a/f /a/g /a/h /out/one /out/two";
        let out = b.ok(&["run", "--rm", tag, "sh", "-c", stat]);
        let rows: Vec<(String, String)> =
            out.lines().map(|l| l.split_once(' ').map(|(n, i)| (n.to_owned(), i.to_owned())).unwrap()).collect();
        assert_eq!((rows[0].0.as_str(), rows[1].0.as_str(), rows[2].0.as_str()), ("2", "2", "1"), "{out}");
        assert_eq!(rows[0].1, rows[1].1, "{out}");
        assert_eq!((rows[3].0.as_str(), rows[4].0.as_str()), ("2", "2"), "{out}");
        assert_eq!(rows[3].1, rows[4].1, "{out}");
    };
    let (ok, log) = build(&b, ctx, &["-t", "links:1"], &[]);
    assert!(ok, "{log}");
    links("links:1");
    // Rebuilt after an edit of another file, the copy links its unchanged files from the
    // last snapshot: the linked pair must come out the same.
    write(ctx, "a/h", "two\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "links:2"], &[]);
    assert!(ok, "{log}");
    links("links:2");
    assert_eq!(b.ok(&["run", "--rm", "links:2", "cat", "/a/g", "/a/h"]), "linked\ntwo\n");
}

/// The extended attribute `name` of the copy of `/srv/FILE` in image `image`, read on the host
/// from a volume filled from the image.
fn xattr_in_image(b: &Berth, image: &str, file: &str, name: &str) -> Option<Vec<u8>> {
    let vol = format!("x{}", std::process::id());
    b.ok(&["run", "--rm", "-v", &format!("{vol}:/srv"), image, "true"]);
    let path = b.root.path().join("volumes").join(&vol).join("_data").join(file);
    let mut buf = vec![0u8; 256];
    let got = rustix::fs::lgetxattr(&path, name, &mut buf).ok().map(|n| buf[..n].to_vec());
    b.ok(&["volume", "rm", &vol]);
    got
}

#[test]
fn extended_attributes_are_copied_and_a_change_to_them_is_a_change() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "tagged", "t\n", 0o755);
    write(ctx, "plain", "p\n", 0o644);
    write(ctx, "Dockerfile", "FROM busybox:latest\nCOPY tagged plain /srv/\n", 0o644);
    let set = |v: &[u8]| rustix::fs::setxattr(ctx.join("tagged"), "user.berth", v, rustix::fs::XattrFlags::empty());
    if set(b"1").is_err() {
        eprintln!("skipping: no user xattrs on {}", p(ctx));
        return;
    }
    let (ok, log) = build(&b, ctx, &["-t", "xa:1"], &[]);
    assert!(ok, "{log}");
    assert_eq!(xattr_in_image(&b, "xa:1", "tagged", "user.berth").as_deref(), Some(&b"1"[..]));
    // Only the other file changed: the tagged one is written again with its attribute (before,
    // the rebuild failed with two PAX headers for one file).
    write(ctx, "plain", "p2\n", 0o644);
    let (ok, log) = build(&b, ctx, &["-t", "xa:2"], &[]);
    assert!(ok, "{log}");
    assert_eq!(xattr_in_image(&b, "xa:2", "tagged", "user.berth").as_deref(), Some(&b"1"[..]));
    // Only the attribute changed: a miss, and the image has the new value (before, a hit kept
    // the old one, a removed capability included).
    set(b"2").unwrap();
    let (ok, log) = build(&b, ctx, &["-t", "xa:3"], &[]);
    assert!(ok && !cached(&log, "COPY tagged"), "{log}");
    assert_eq!(xattr_in_image(&b, "xa:3", "tagged", "user.berth").as_deref(), Some(&b"2"[..]));
    rustix::fs::removexattr(ctx.join("tagged"), "user.berth").unwrap();
    let (ok, log) = build(&b, ctx, &["-t", "xa:4"], &[]);
    assert!(ok && !cached(&log, "COPY tagged"), "{log}");
    assert_eq!(xattr_in_image(&b, "xa:4", "tagged", "user.berth"), None);
}

#[test]
fn a_file_copied_onto_a_symlink_goes_where_it_points() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "zone", "Europe/Paris\n", 0o644);
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\n\
         RUN mkdir -p /usr/share/zi && echo old > /usr/share/zi/UTC && ln -s /usr/share/zi/UTC /etc/localtime \\\n\
          && ln -s /nowhere/new /dangling && mkdir /nowhere\n\
         COPY zone /etc/localtime\n\
         COPY zone /dangling\n\
         RUN { cat /usr/share/zi/UTC /nowhere/new; readlink /etc/localtime; readlink /dangling; } > /out\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "through:1"], &[]);
    assert!(ok, "{log}");
    let out = b.ok(&["run", "--rm", "through:1", "cat", "/out"]);
    assert_eq!(
        out, "Europe/Paris\nEurope/Paris\n/usr/share/zi/UTC\n/nowhere/new\n",
        "the links stay, their targets change"
    );
}

#[test]
fn a_destination_through_a_dangling_symlink_lands_where_the_link_points() {
    let Some(b) = build_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    write(ctx, "zone", "Europe/Paris\n", 0o644);
    std::fs::create_dir_all(ctx.join("dir")).unwrap();
    write(ctx, "dir/f", "in dir\n", 0o644);
    // Base images ship links to what is not there yet (nginx's logs to /dev/stdout, a
    // service's data directory): BuildKit copies into the link's target and keeps the link.
    write(
        ctx,
        "Dockerfile",
        "FROM busybox:latest\n\
         RUN ln -s /missing /app && ln -s /gone /w\n\
         COPY zone /app/\n\
         COPY dir/ /app/sub/\n\
         WORKDIR /w\n\
         RUN { cat /missing/zone /missing/sub/f; readlink /app; readlink /w; [ -d /gone ] && echo made; } > /out\n",
        0o644,
    );
    let (ok, log) = build(&b, ctx, &["-t", "dangling:1"], &[]);
    assert!(ok, "{log}");
    let out = b.ok(&["run", "--rm", "dangling:1", "cat", "/out"]);
    assert_eq!(out, "Europe/Paris\nin dir\n/missing\n/gone\nmade\n", "the links stay, their targets are made");
}
