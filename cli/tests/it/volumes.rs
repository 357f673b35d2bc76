//! Volumes (`berth volume`, `run -v NAME:/path`, `--mount`, an image's `VOLUME`): data that
//! outlives its containers, filled once from the image as docker fills it, removed only
//! when no container uses it, and never a way for an image to reach the host's files.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{container_store as setup, p, ContainerStore};

/// `security.capability` for CAP_NET_RAW, effective and permitted (`setcap cap_net_raw=ep`):
/// a VFS_CAP_REVISION_2 `vfs_cap_data`.
const CAP_NET_RAW_EP: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Builds `seeded`: /data holds a file, a symlink to /etc/passwd, a set-uid copy of sh, owned
/// by 1000 with mode 0750, and `capped` (root's) with a file capability and a user attribute;
/// both /data and /logs are the image's VOLUMEs.
fn seeded_image(b: &ContainerStore) {
    let dir = tempfile::tempdir().unwrap();
    let capped = dir.path().join("capped");
    std::fs::write(&capped, "cap").unwrap();
    for (name, value) in [("security.capability", &CAP_NET_RAW_EP[..]), ("user.berth", b"kept")] {
        rustix::fs::setxattr(&capped, name, value, rustix::fs::XattrFlags::empty()).unwrap();
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox\n\
         RUN mkdir -p /data && echo seeded > /data/seed && ln -s /etc/passwd /data/link \\\n\
          && cp /bin/busybox /data/suid && chown -R 1000:1000 /data \\\n\
          && chmod 4755 /data/suid && chmod 750 /data\n\
         COPY capped /data/capped\n\
         VOLUME /data\n\
         VOLUME [\"/logs\"]\n",
    )
    .unwrap();
    b.ok(&["build", "-q", "-t", "seeded", &p(dir.path())]);
}

/// An extended attribute of `path`, not following a symlink.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn data(b: &ContainerStore, name: &str) -> PathBuf {
    b.root.path().join("volumes").join(name).join("_data")
}

fn names(b: &ContainerStore) -> Vec<String> {
    b.ok(&["volume", "ls", "-q"]).lines().map(String::from).collect()
}

#[test]
fn a_named_volume_outlives_its_containers_and_is_filled_from_the_image_once() {
    let Some(b) = setup() else { return };
    seeded_image(&b);
    let out = b.ok(&["run", "--rm", "-v", "pg:/data", "seeded", "sh", "-c", "cat /data/seed; echo more > /data/new"]);
    assert_eq!(out, "seeded\n");
    // What the image had, as it had it: owners, modes (set-uid too), the directory's own,
    // and a symlink as a symlink.
    let pg = data(&b, "pg");
    let dir = std::fs::metadata(&pg).unwrap();
    assert_eq!((dir.uid(), dir.gid(), dir.permissions().mode() & 0o7777), (1000, 1000, 0o750));
    assert_eq!(std::fs::metadata(pg.join("suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::read_link(pg.join("link")).unwrap(), Path::new("/etc/passwd"));
    // Extended attributes too, a file capability among them: the build's layer, the image's
    // snapshot and the volume each keep them (before, a program there lost its capabilities).
    assert_eq!(xattr(&pg.join("capped"), "security.capability").as_deref(), Some(&CAP_NET_RAW_EP[..]));
    assert_eq!(xattr(&pg.join("capped"), "user.berth").as_deref(), Some(&b"kept"[..]));
    // Another container, of another image, sees what the first wrote.
    assert_eq!(b.ok(&["run", "--rm", "-v", "pg:/data", "busybox", "cat", "/data/new", "/data/seed"]), "more\nseeded\n");
    // A volume that has files is never filled again.
    std::fs::write(pg.join("seed"), "changed\n").unwrap();
    std::fs::remove_file(pg.join("new")).unwrap();
    assert_eq!(b.ok(&["run", "--rm", "-v", "pg:/data", "seeded", "ls", "/data"]), "capped\nlink\nseed\nsuid\n");
    assert_eq!(std::fs::read_to_string(pg.join("seed")).unwrap(), "changed\n");
    // nocopy, and --mount's volume-nocopy: an empty volume stays empty.
    assert_eq!(b.ok(&["run", "--rm", "-v", "bare:/data:nocopy", "seeded", "ls", "-A", "/data"]), "");
    let m = "type=volume,source=bare2,target=/data,volume-nocopy";
    assert_eq!(b.ok(&["run", "--rm", "--mount", m, "seeded", "ls", "-A", "/data"]), "");
    assert_eq!(names(&b), ["bare", "bare2", "pg"], "the image's /logs went with each container");
    let inspected: serde_json::Value = serde_json::from_str(&b.ok(&["volume", "inspect", "pg"])).unwrap();
    assert_eq!(inspected[0]["Mountpoint"], p(&pg));
    assert_eq!(inspected[0]["Driver"], "local");
    let made = b.ok(&["volume", "create", "--label", "team=ci", "labelled"]);
    assert_eq!(made, "labelled\n");
    assert_eq!(b.ok(&["volume", "create", "labelled"]), "labelled\n", "a second create finds the first");
    assert_eq!(b.ok(&["volume", "ls", "-q", "--filter", "label=team=ci"]), "labelled\n");
    assert_eq!(b.ok(&["inspect", "--format", "{{.Name}} {{.Labels}}", "labelled"]), "labelled map[team:ci]\n");
}

#[test]
fn anonymous_volumes_go_with_their_container_when_asked() {
    let Some(b) = setup() else { return };
    seeded_image(&b);
    // An unnamed foreground container leaves nothing, its VOLUMEs included.
    assert_eq!(b.ok(&["run", "seeded", "cat", "/data/seed"]), "seeded\n");
    assert!(names(&b).is_empty(), "{:?}", names(&b));
    // A named one keeps them, anonymous, listed in its Mounts and Config.Volumes.
    b.ok(&["run", "--name", "keep", "-v", "/scratch", "seeded", "true"]);
    assert_eq!(names(&b).len(), 3);
    let anon = b.ok(&["volume", "ls", "-q", "--filter", "label=com.docker.volume.anonymous"]);
    assert_eq!(anon.lines().count(), 3, "{anon}");
    let mounts = b.ok(&["inspect", "--format", "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}", "keep"]);
    assert_eq!(mounts, "volume:/scratch volume:/data volume:/logs \n");
    let vols = b.ok(&["inspect", "--format", "{{json .Config.Volumes}}", "keep"]);
    assert_eq!(vols, "{\"/data\":{},\"/logs\":{},\"/scratch\":{}}\n");
    // In use: prune leaves them; `rm` without -v keeps them, as docker's; prune then takes them.
    assert_eq!(b.ok(&["volume", "prune", "-f"]), "Total reclaimed space: 0B\n");
    assert_eq!(b.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]), "");
    let df =
        || b.ok(&["system", "df", "--format", "{{if eq .Type \"Local Volumes\"}}{{.TotalCount}} {{.Active}}{{end}}"]);
    assert_eq!(df().trim(), "3 3");
    b.ok(&["rm", "keep"]);
    assert_eq!(b.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]).lines().count(), 3);
    assert_eq!(df().trim(), "3 0", "system df counts them, none active");
    b.ok(&["volume", "create", "named"]);
    let pruned = b.ok(&["volume", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Volumes:\n") && pruned.lines().count() == 6, "{pruned}");
    assert_eq!(names(&b), ["named"], "a named volume is pruned only with --all");
    assert!(b.ok(&["volume", "prune", "-af"]).contains("named\n"));
    assert!(names(&b).is_empty());
    // `rm -v` and `-d --rm` take a container's anonymous volumes, never its named ones.
    b.ok(&["run", "--name", "k2", "-v", "/scratch", "-v", "kept:/k", "busybox", "true"]);
    b.ok(&["rm", "-v", "k2"]);
    assert_eq!(names(&b), ["kept"]);
    b.ok(&["run", "-d", "--rm", "--name", "d", "-v", "/anon", "busybox", "true"]);
    let gone = Instant::now() + Duration::from_secs(10);
    while names(&b).len() != 1 {
        assert!(Instant::now() < gone, "--rm left {:?}", names(&b));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_volume_in_use_is_not_removed() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "--name", "c", "-v", "data:/d", "busybox", "sh", "-c", "echo x > /d/f"]);
    let err = b.fails(&["volume", "rm", "data"]);
    assert!(err.contains("remove data: volume is in use - [c]"), "{err}");
    assert_eq!(b.ok(&["ps", "-a", "--filter", "volume=data", "--format", "{{.Names}} {{.Mounts}}"]), "c data\n");
    assert_eq!(b.ok(&["ps", "-aq", "--filter", "volume=/d"]).lines().count(), 1, "by destination too");
    // A foreground container without a name has no record: it holds the volume while it runs.
    let mut running = b.cmd(&["run", "-v", "held:/x", "busybox", "sh", "-c", "touch /x/up; sleep 30"]).spawn().unwrap();
    let up = Instant::now() + Duration::from_secs(10);
    while !data(&b, "held").join("up").exists() {
        assert!(Instant::now() < up, "the container did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = b.fails(&["volume", "rm", "held"]);
    assert!(err.contains("in use - [a running container]"), "{err}");
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(b.ok(&["volume", "rm", "held"]), "held\n");
    // Removed with its container, the volume goes too; the error names the missing one.
    b.ok(&["rm", "c"]);
    assert_eq!(b.ok(&["volume", "rm", "data"]), "data\n");
    assert!(b.fails(&["volume", "rm", "data"]).contains("no such volume: data"));
    assert_eq!(b.ok(&["volume", "rm", "-f", "data"]), "data\n", "named, as docker names it");
}

#[test]
fn volume_names_and_mounts_are_checked_before_anything_is_made() {
    let Some(b) = setup() else { return };
    for (args, why) in [
        (&["run", "--rm", "-v", "a/b:/x", "busybox", "true"][..], "invalid volume name"),
        (&["run", "--rm", "-v", "vx:relative", "busybox", "true"], "not an absolute path"),
        (&["run", "--rm", "-v", "vol:/x:shared", "busybox", "true"], "propagation"),
        (&["run", "--rm", "--mount", "type=bind,src=/no/such/dir,dst=/x", "busybox", "true"], "does not exist"),
        (&["run", "--rm", "--mount", "type=volume,src=v1", "busybox", "true"], "target is required"),
        (&["volume", "create", "x"], "invalid volume name"),
        (&["volume", "create", "-o", "type=tmpfs", "opt"], "not supported"),
        (&["volume", "create", "-d", "nfs", "drv"], "not supported"),
        (&["volume", "inspect", "../../etc"], "no such volume"),
        (&["volume", "ls", "--filter", "dangling=maybe"], "dangling"),
    ] {
        let out = b.output(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
    }
    assert!(names(&b).is_empty(), "{:?}", names(&b));
    // --mount's other types: a read-only volume, a bind and a sized tmpfs.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from the host\n").unwrap();
    let bind = format!("type=bind,source={},target=/h,readonly", p(host.path()));
    let out = b.output(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=ro1,dst=/v,ro",
        "--mount",
        &bind,
        "--mount",
        "type=tmpfs,dst=/t,tmpfs-size=1m",
        "busybox",
        "sh",
        "-c",
        "cat /h/in; df -k /t | tail -1; touch /v/x",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("from the host\ntmpfs") && stdout.contains(" 1024 "), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"), "{out:?}");
}

#[test]
fn an_image_symlink_cannot_lead_a_volume_to_the_hosts_files() {
    let Some(b) = setup() else { return };
    // The attack: /data in the image is an absolute symlink to a host directory. Followed on
    // the host, the volume would be filled with the host's files (or mounted over them).
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("token"), "host secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM busybox\nRUN ln -s {} /data && ln -s ../../../../../../ /up\nVOLUME /data\n", p(secret.path())),
    )
    .unwrap();
    b.ok(&["build", "-q", "-t", "evil", &p(dir.path())]);
    let out =
        b.ok(&["run", "--name", "e", "-v", "loot:/data", "evil", "sh", "-c", "ls -A /data; echo planted > /data/f"]);
    assert_eq!(out, "", "the volume got nothing from the host");
    assert!(!data(&b, "loot").join("token").exists());
    assert_eq!(std::fs::read_dir(secret.path()).unwrap().count(), 1, "nothing was written to the host's directory");
    assert_eq!(std::fs::read_to_string(data(&b, "loot").join("f")).unwrap(), "planted\n");
    // A copy out of the stopped container's volume path reads the volume, not the host.
    let got = tempfile::tempdir().unwrap();
    b.ok(&["cp", "e:/up/data/.", &p(got.path())]);
    assert_eq!(std::fs::read_to_string(got.path().join("f")).unwrap(), "planted\n");
    assert!(!got.path().join("token").exists());
}

#[test]
fn cp_reaches_a_stopped_containers_volume() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "--name", "t", "-v", "results:/out", "busybox", "sh", "-c", "echo '<ok/>' > /out/report.xml"]);
    let host = tempfile::tempdir().unwrap();
    b.ok(&["cp", "t:/out/report.xml", &p(host.path())]);
    assert_eq!(std::fs::read_to_string(host.path().join("report.xml")).unwrap(), "<ok/>\n");
    std::fs::write(host.path().join("fixture"), "in\n").unwrap();
    b.ok(&["cp", &p(&host.path().join("fixture")), "t:/out/"]);
    assert_eq!(std::fs::read_to_string(data(&b, "results").join("fixture")).unwrap(), "in\n", "into the volume");
    // Read-only there: refused, as the container itself would be.
    b.ok(&["run", "--name", "r", "-v", "results:/out:ro", "busybox", "true"]);
    let out = b.output(&["cp", &p(&host.path().join("fixture")), "r:/out/again"]);
    assert!(!out.status.success(), "{out:?}");
    // export leaves volumes out, as docker's.
    let tar = b.cmd(&["export", "t"]).output().unwrap().stdout;
    let mut a = tar::Archive::new(&tar[..]);
    let paths: Vec<String> = a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(paths.iter().any(|p| p == "out/") && !paths.iter().any(|p| p.starts_with("out/report")), "{paths:?}");
}

#[test]
fn mounts_go_on_parents_first_and_each_path_once() {
    let Some(b) = setup() else { return };
    // Given child first: before, /n went on over /n/m and the file landed in `outer`.
    b.ok(&["run", "--rm", "-v", "keep:/n/m", "-v", "outer:/n", "busybox", "sh", "-c", "echo important > /n/m/db"]);
    assert_eq!(std::fs::read_to_string(data(&b, "keep").join("db")).unwrap(), "important\n");
    assert!(!data(&b, "outer").join("m/db").exists());
    // A tmpfs below a volume goes on after it, and a destination is made clean as docker's.
    let out = b.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/n/t",
        "-v",
        "outer:/n",
        "-v",
        "v2:/x/../y/",
        "busybox",
        "sh",
        "-c",
        "grep -c ' /n/t tmpfs' /proc/mounts; touch /y/f",
    ]);
    assert_eq!(out, "1\n");
    assert!(data(&b, "v2").join("f").exists());
    for (args, why) in [
        (&["-v", "a1:/x", "-v", "a2:/x/"][..], "Duplicate mount point: /x"),
        (&["-v", "a1:/x", "--tmpfs", "/x"], "Duplicate mount point: /x"),
        (&["-v", "a1:/x", "--mount", "type=volume,dst=/x"], "Duplicate mount point: /x"),
    ] {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["busybox", "true"]);
        let out = b.output(&all);
        assert_eq!(out.status.code(), Some(125), "{all:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{all:?}: {out:?}");
    }
    assert_eq!(b.ok(&["run", "--rm", "-v", "/same", "-v", "/same", "busybox", "true"]), "", "one anonymous volume");
}

#[test]
fn runs_filling_one_volume_and_prunes_beside_them_never_break_a_run() {
    let Some(b) = setup() else { return };
    seeded_image(&b);
    for round in 0..4 {
        let name = format!("race{round}");
        // Four at once on a new volume: one fills it, and every run sees it whole (before,
        // one could fail on a hard link another had made, or start on half the files).
        let children: Vec<_> = (0..4)
            .map(|_| {
                b.cmd(&["run", "--rm", "-v", &format!("{name}:/data"), "seeded", "sh", "-c", "ls /data | wc -l"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "4\n", "capped, link, seed, suid");
        }
    }
    // Unnamed foreground runs with their image's anonymous volumes, while prunes run: a volume
    // is held from the moment it is made, so no prune takes it from under a run.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                b.output(&["volume", "prune", "-af"]);
            }
        });
        for _ in 0..15 {
            let out = b.output(&["run", "seeded", "cat", "/data/seed"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "seeded\n");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn volumes_from_mounts_another_containers_volumes_at_their_paths() {
    let Some(b) = setup() else { return };
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("hf"), "").unwrap();
    let bind = format!("{}:/h:ro", p(host.path()));
    b.ok(&[
        "run",
        "--name",
        "src",
        "-v",
        "shared:/s",
        "-v",
        "/anon",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo one > /s/f; echo two > /anon/g",
    ]);
    let out = b.ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "src",
        "busybox",
        "sh",
        "-c",
        "cat /s/f /anon/g; ls /h; touch /h/x 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "one\ntwo\nhf\nro\n", "its volumes and binds, each as it had them");
    let out = b.output(&["run", "--rm", "--volumes-from", "src:ro", "busybox", "touch", "/s/new"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Read-only"), "{out:?}");
    // A mount given takes its path; the others still come.
    let out = b.ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "src",
        "-v",
        "other:/s",
        "busybox",
        "sh",
        "-c",
        "ls -A /s; cat /anon/g",
    ]);
    assert_eq!(out, "two\n");
    // The borrower's rm -v leaves them: they are src's.
    b.ok(&["run", "--name", "borrower", "--volumes-from", "src", "busybox", "true"]);
    b.ok(&["rm", "-v", "borrower"]);
    assert_eq!(names(&b).len(), 3, "shared, other and src's anonymous one: {:?}", names(&b));
    b.ok(&["rm", "-v", "src"]);
    assert_eq!(names(&b), ["other", "shared"], "src's own anonymous volume went with it");
    let err = b.output(&["run", "--rm", "--volumes-from", "nosuch", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("no such container: nosuch"), "{err:?}");
    let err = b.output(&["run", "--rm", "--volumes-from", "x:rx", "busybox", "true"]);
    assert!(!err.status.success());
}

#[test]
fn commit_keeps_dash_v_volumes_and_a_mount_bind_source_must_stay() {
    let Some(b) = setup() else { return };
    // `-v /path` is one of the container's Config.Volumes, and so of the committed image's;
    // an anonymous `--mount` volume is neither, as in docker.
    b.ok(&["run", "--name", "c", "-v", "/cache", "--mount", "type=volume,dst=/m", "busybox", "true"]);
    let vols = b.ok(&["inspect", "--format", "{{json .Config.Volumes}}", "c"]);
    assert_eq!(vols, "{\"/cache\":{}}\n");
    b.ok(&["commit", "c", "withvol"]);
    let image = b.ok(&["inspect", "--format", "{{json .Config.Volumes}}", "withvol"]);
    assert_eq!(image, "{\"/cache\":{}}\n");
    // A container of that image gets /cache as a volume of its own.
    let mounts = b.ok(&["run", "--rm", "withvol", "sh", "-c", "grep -c ' /cache ' /proc/mounts"]);
    assert_eq!(mounts, "1\n");
    // A --mount bind whose source is gone by the next start is refused, as docker refuses it;
    // a -v bind's source is made again.
    let dir = tempfile::tempdir().unwrap();
    let (mounted, given) = (dir.path().join("mounted"), dir.path().join("given"));
    std::fs::create_dir(&mounted).unwrap();
    let spec = format!("type=bind,src={},dst=/x", p(&mounted));
    b.ok(&["create", "--name", "m", "--mount", &spec, "busybox", "true"]);
    b.ok(&["create", "--name", "v", "-v", &format!("{}:/x", p(&given)), "busybox", "true"]);
    std::fs::remove_dir(&mounted).unwrap();
    let err = b.fails(&["start", "m"]);
    assert!(err.contains("bind source path does not exist: ") && err.contains("mounted"), "{err}");
    assert!(!mounted.exists(), "nothing made in its place");
    b.ok(&["start", "-a", "v"]);
    assert!(given.is_dir());
}

#[test]
fn a_killed_foreground_runs_anonymous_volume_goes_with_the_next_command() {
    let Some(b) = setup() else { return };
    let mut run = b.cmd(&["run", "-v", "/data", "busybox", "sleep", "60"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.ok(&["volume", "ls", "-q"]).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let volume = b.ok(&["volume", "ls", "-q"]);
    assert_eq!(volume.len(), 65, "the run's anonymous volume: {volume:?}");
    // While the run lives, the sweep of another command leaves its volume alone.
    assert_eq!(b.ok(&["volume", "ls", "-q"]), volume);
    run.kill().unwrap();
    run.wait().unwrap();
    // Before, the volume stayed for good (docker's daemon removes a --rm container's). The
    // run's own processes die of its death a moment after it (their parent-death signal):
    // the first command after that sweeps it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = b.ok(&["volume", "ls", "-q"]);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = b.ok(&["volume", "ls", "-q"]);
    }
    assert_eq!(left, "", "swept once the run's processes are gone");
    assert!(std::fs::read_dir(b.root.path().join("volumes"))
        .unwrap()
        .flatten()
        .all(|e| { e.file_name().to_string_lossy().starts_with('.') }));
}

/// A tmpfs mounted on the host for a test, detached when dropped (a failing test too).
struct HostMount(PathBuf);

impl HostMount {
    fn tmpfs(at: &Path) -> HostMount {
        rustix::mount::mount("tmpfs", at, "tmpfs", rustix::mount::MountFlags::empty(), None).unwrap();
        HostMount(at.to_owned())
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn a_read_only_bind_is_read_only_in_the_mounts_below_it_as_bind_recursive_asks() {
    let Some(b) = setup() else { return };
    // The host directory holds a mount, as a bind of /mnt or of a home directory may.
    let host = tempfile::tempdir().unwrap();
    let sub = host.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("under"), "").unwrap();
    let _mounted = HostMount::tmpfs(&sub);
    std::fs::write(sub.join("marker"), "").unwrap();
    let script = "for d in /v /v/sub; do touch $d/x 2>/dev/null && echo $d rw || echo $d ro; done; ls /v/sub";
    let src = p(host.path());
    let mount = |extra: &str| format!("type=bind,src={src},dst=/v{extra}");
    let cases = [
        // docker 25's -v ...:ro: read-only all the way down. Before, /v/sub was written.
        (vec!["-v".to_owned(), format!("{src}:/v:ro")], "/v ro\n/v/sub ro\nmarker\n"),
        (vec!["--mount".into(), mount(",readonly,bind-recursive=readonly")], "/v ro\n/v/sub ro\nmarker\n"),
        // writable: read-only at the top alone, as docker before 25.
        (vec!["--mount".into(), mount(",readonly,bind-recursive=writable")], "/v ro\n/v/sub rw\nmarker\nx\n"),
        // disabled: the mount below is left out, and its mount point shows what is under it.
        (vec!["--mount".into(), mount(",bind-recursive=disabled")], "/v rw\n/v/sub rw\nunder\nx\n"),
        (vec!["-v".to_owned(), format!("{src}:/v")], "/v rw\n/v/sub rw\nmarker\nx\n"),
    ];
    let mut runtimes = vec!["berth"];
    runtimes.extend(["runc", "crun"].into_iter().filter(|r| crate::util::require_tool(r)));
    for runtime in runtimes {
        for (args, expected) in &cases {
            for x in [host.path().join("x"), sub.join("x")] {
                let _ = std::fs::remove_file(x);
            }
            let mut full = vec!["run", "--rm", "--runtime", runtime];
            full.extend(args.iter().map(String::as_str));
            full.extend(["busybox", "sh", "-c", script]);
            assert_eq!(b.ok(&full), *expected, "{runtime} {args:?}");
        }
    }
    // berth cp goes through the container's volumes as the container sees them.
    let file = host.path().join("file");
    std::fs::write(&file, "in\n").unwrap();
    b.ok(&["create", "--name", "ro", "-v", &format!("{src}:/v:ro"), "busybox", "true"]);
    let err = b.fails(&["cp", &p(&file), "ro:/v/sub/"]);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!sub.join("file").exists());
    b.ok(&["create", "--name", "rw-below", "--mount", &mount(",ro,bind-recursive=writable"), "busybox", "true"]);
    b.ok(&["cp", &p(&file), "rw-below:/v/sub/"]);
    assert_eq!(std::fs::read_to_string(sub.join("file")).unwrap(), "in\n");
    // Refused before anything is made, as docker refuses them.
    for (bad, why) in [
        (mount(",bind-recursive=writable"), "is for a readonly bind"),
        (mount(",ro,bind-recursive=sometimes"), "enabled, disabled, writable or readonly"),
        ("type=volume,src=v1,dst=/v,bind-recursive=disabled".into(), "for type=bind"),
    ] {
        let out = b.output(&["run", "--rm", "--mount", &bad, "busybox", "true"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(125) && err.contains(why), "{bad}: {out:?}");
    }
}
