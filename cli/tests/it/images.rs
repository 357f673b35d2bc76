//! The local image store through the CLI: import, images, tag, rmi, inspect, history, prune.

use crate::util::Berth;

#[test]
fn import_then_images_shows_docker_columns() {
    let b = Berth::new();
    let id = b.import_tiny("app:v1", "hello");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let out = b.ok(&["images"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split("   ").map(str::trim).filter(|s| !s.is_empty()).collect();
    assert_eq!(header, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    let row = lines.next().unwrap();
    assert!(row.starts_with("app "), "{row}");
    assert!(row.contains(" v1 ") && row.contains(&id[7..19]), "{row}");
    assert!(row.contains("ago"), "{row}");
    assert_eq!(b.ok(&["images", "-q"]).trim(), &id[7..19]);
}

#[test]
fn images_format_json_is_one_object_per_line() {
    let b = Berth::new();
    b.import_tiny("one", "1");
    b.import_tiny("registry.example.com/team/two:2", "2");
    let out = b.ok(&["images", "--format", "json"]);
    let objs: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objs.len(), 2);
    let repos: Vec<&str> = objs.iter().map(|o| o["Repository"].as_str().unwrap()).collect();
    assert!(repos.contains(&"one") && repos.contains(&"registry.example.com/team/two"), "{repos:?}");
    assert!(objs.iter().all(|o| o["Digest"].as_str().unwrap().starts_with("sha256:")));
}

#[test]
fn images_filters_by_repository_and_tag() {
    let b = Berth::new();
    b.import_tiny("app:1", "1");
    b.import_tiny("app:2", "2");
    b.import_tiny("other", "3");
    assert_eq!(b.ok(&["images", "app"]).lines().count(), 3);
    assert_eq!(b.ok(&["images", "app:2"]).lines().count(), 2);
    assert_eq!(b.ok(&["images", "nothing"]).lines().count(), 1);
}

#[test]
fn tag_adds_a_name_and_rmi_removes_only_that_name() {
    let b = Berth::new();
    let id = b.import_tiny("app", "x");
    b.ok(&["tag", "app", "localhost:5000/app:ci"]);
    b.ok(&["tag", &id[7..19], "app:by-id"]);
    assert_eq!(b.ok(&["images", "-q"]).lines().count(), 1, "three names, one image");
    assert_eq!(b.ok(&["images"]).lines().count(), 4);
    let out = b.ok(&["rmi", "localhost:5000/app:ci"]);
    assert_eq!(out.trim(), "Untagged: localhost:5000/app:ci");
    assert!(b.ok(&["inspect", "app"]).contains(&id), "the image itself stays");
}

#[test]
fn rmi_by_id_needs_force_when_several_names_and_then_frees_blobs() {
    let b = Berth::new();
    let id = b.import_tiny("app", "x");
    b.ok(&["tag", "app", "app:two"]);
    let err = b.fails(&["rmi", &id[7..19]]);
    assert!(err.contains("must be forced"), "{err}");
    let out = b.ok(&["rmi", "-f", &id[7..19]]);
    assert!(out.contains("Untagged: app:latest") && out.contains("Untagged: app:two"), "{out}");
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert_eq!(b.ok(&["images", "-q"]), "");
    let blobs = std::fs::read_dir(b.root.path().join("content/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "rmi of the last name deletes the image's blobs");
}

#[test]
fn a_name_wins_over_an_id_prefix() {
    let b = Berth::new();
    let id = b.import_tiny("busybox", "one");
    let prefix = &id[7..11];
    b.ok(&["tag", "busybox", &format!("{prefix}:latest")]);
    let out = b.ok(&["rmi", prefix]);
    assert_eq!(out.trim(), format!("Untagged: {prefix}:latest"));
    b.ok(&["inspect", "busybox"]);
}

#[test]
fn moving_a_name_keeps_the_old_image_untagged() {
    let b = Berth::new();
    let old = b.import_tiny("app", "v1");
    b.import_tiny("app", "v2");
    let out = b.ok(&["images", "--no-trunc"]);
    assert!(out.lines().any(|l| l.starts_with("<none>") && l.contains(&old)), "{out}");
    let err = b.fails(&["rmi", "app@sha256:0000000000000000000000000000000000000000000000000000000000000000"]);
    assert!(err.contains("no such image"), "{err}");
}

#[test]
fn rmi_keeps_layers_another_image_shares() {
    let b = Berth::new();
    b.import_tiny("a", "same");
    b.import_tiny("b", "same");
    b.ok(&["rmi", "a"]);
    b.ok(&["history", "b"]);
    b.ok(&["save", "-o", &b.root.path().join("b.tar").to_string_lossy(), "b"]);
}

#[test]
fn inspect_prints_docker_fields() {
    let b = Berth::new();
    let id = b.import_tiny("app:v1", "x");
    let out = b.ok(&["inspect", "app:v1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let img = &v[0];
    assert_eq!(img["Id"], id);
    assert_eq!(img["RepoTags"][0], "app:v1");
    assert_eq!(img["Os"], "linux");
    assert_eq!(img["RootFS"]["Type"], "layers");
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(img.get("Author").is_none(), "no null fields");
}

#[test]
fn history_shows_the_import_with_its_message() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let tar = crate::util::tarball(dir.path(), "f", "x", "");
    b.ok(&["import", "-m", "base for CI", &tar.to_string_lossy(), "app"]);
    let out = b.ok(&["history", "app"]);
    assert!(out.starts_with("IMAGE"), "{out}");
    assert!(out.contains("berth import") && out.contains("base for CI"), "{out}");
    // docker's -H=false: bytes and RFC 3339 times.
    let row = b.ok(&["history", "-H=false", "--format", "{{.CreatedSince}} {{.Size}}", "app"]);
    let (when, size) = row.trim().split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(when).is_ok() && size.parse::<u64>().unwrap() > 0, "{row}");
    assert!(b.ok(&["history", "--human=false", "app"]).lines().nth(1).unwrap().contains(&format!(" {size} ")));
}

#[test]
fn import_reads_stdin_and_compressed_tarballs() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let tgz = crate::util::tarball(dir.path(), "f", "x", "z");
    let id = b.ok(&["import", &tgz.to_string_lossy(), "gz"]);
    let mut child = b
        .cmd(&["import", "--compression", "zstd", "-", "zst"])
        .stdin(std::fs::File::open(&tgz).unwrap())
        .output()
        .unwrap();
    assert!(child.status.success(), "{}", String::from_utf8_lossy(&child.stderr));
    child.stdout.pop();
    // Same rootfs, same diffID: the configs differ only in layer media type, not in content.
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "gz", "zst"])).unwrap();
    assert_eq!(inspect[0]["RootFS"]["Layers"], inspect[1]["RootFS"]["Layers"]);
    assert_eq!(inspect[0]["Id"].as_str().unwrap(), id.trim());
}

#[test]
fn same_tarball_and_source_date_epoch_give_the_same_image_id() {
    let dir = tempfile::tempdir().unwrap();
    let tar = crate::util::tarball(dir.path(), "f", "x", "");
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let b = Berth::new();
            let out = b
                .cmd(&["import", &tar.to_string_lossy(), "app"])
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .output()
                .unwrap();
            assert!(out.status.success());
            let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "app"])).unwrap();
            format!("{} {}", String::from_utf8(out.stdout).unwrap().trim(), inspect[0]["Descriptor"]["digest"])
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn bad_input_gets_one_clear_line_and_changes_nothing() {
    let b = Berth::new();
    b.import_tiny("app", "x");
    // Compared without the CREATED column, which ticks while the test runs.
    let listing = || {
        let out = b.ok(&["images", "--format", "json"]);
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {} {} {}", v["Repository"], v["Tag"], v["ID"], v["Digest"])
            })
            .collect::<Vec<_>>()
    };
    let before = listing();
    let err = b.fails(&["tag", "app", "Bad Name"]);
    assert!(err.contains("invalid reference"), "{err}");
    let err = b.fails(&["inspect", "nosuch:image"]);
    assert!(err.contains("no such image"), "{err}");
    let junk = b.root.path().join("junk.tar");
    std::fs::write(&junk, "this is not a tarball at all, not even close to one").unwrap();
    let err = b.fails(&["import", &junk.to_string_lossy(), "junk"]);
    assert!(err.contains("rootfs tarball"), "{err}");
    let err = b.fails(&["rmi", "nosuch"]);
    assert!(err.contains("no such image: nosuch"), "{err}");
    let out = b.output(&["rmi", "nosuch", "app:other"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 2 images could not be removed"));
    assert_eq!(listing(), before);
}

#[test]
fn prune_removes_untagged_images_and_unused_blobs() {
    let b = Berth::new();
    b.import_tiny("keep", "k");
    let dir = tempfile::tempdir().unwrap();
    let tar = crate::util::tarball(dir.path(), "f", "gone", "");
    let untagged = b.ok(&["import", &tar.to_string_lossy()]);
    assert!(b.ok(&["images"]).contains("<none>"));
    // Without -f the answer is read from stdin, as docker's: an empty one removes nothing.
    let mut asked = b.cmd(&["prune"]);
    asked.stdin(std::process::Stdio::null());
    let out = asked.output().unwrap();
    assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(b.ok(&["images"]).contains("<none>"), "nothing removed without a yes");
    // Within the grace period the blobs stay; the dangling image goes.
    let out = b.ok(&["prune", "-f"]);
    assert!(out.contains(untagged.trim()) || out.contains("deleted: sha256:"), "{out}");
    assert!(out.contains("Deleted blobs: 0"), "{out}");
    let out = b.ok(&["prune", "-f", "--grace", "0s"]);
    assert!(out.contains("Deleted blobs: 3"), "{out}");
    b.ok(&["history", "keep"]);
}

#[test]
fn concurrent_berth_processes_share_one_store() {
    let b = Berth::new();
    b.import_tiny("base", "x");
    let children: Vec<_> = (0..12)
        .map(|i| {
            if i % 3 == 0 {
                b.cmd(&["images"]).stdout(std::process::Stdio::null()).spawn().unwrap()
            } else {
                b.cmd(&["tag", "base", &format!("copy:{i}")]).spawn().unwrap()
            }
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(b.ok(&["images"]).lines().count(), 1 + 1 + 8);
}

#[test]
fn every_command_has_an_example_in_its_help() {
    let b = Berth::new();
    for cmd in ["images", "tag", "rmi", "inspect", "history", "prune", "save", "load", "import"] {
        let help = b.ok(&[cmd, "--help"]);
        assert!(help.contains("Examples:\n  berth "), "{cmd} --help has no example:\n{help}");
    }
}

#[test]
fn size_is_what_the_layers_take_unpacked_not_their_compressed_size() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("zeros"), vec![0u8; 1 << 20]).unwrap();
    let tgz = dir.path().join("rootfs.tar.gz");
    let tgz_s = tgz.to_string_lossy().into_owned();
    let tree_s = tree.to_string_lossy().into_owned();
    crate::util::run_tool(std::process::Command::new("tar").args(["-C", &tree_s, "-czf", &tgz_s, "zeros"]));
    let unpacked: u64 =
        crate::util::run_tool(std::process::Command::new("sh").args(["-c", "gzip -dc \"$0\" | wc -c", &tgz_s]))
            .trim()
            .parse()
            .unwrap();
    assert!(std::fs::metadata(&tgz).unwrap().len() < 16 * 1024, "1 MiB of zeros compresses to a few kB");
    b.ok(&["import", &tgz_s, "zeros:1"]);
    let size_of = |b: &Berth| -> (u64, String, u64) {
        let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "zeros:1"])).unwrap();
        let row: serde_json::Value = serde_json::from_str(b.ok(&["images", "--format", "json"]).trim()).unwrap();
        let history: serde_json::Value =
            serde_json::from_str(b.ok(&["history", "--format", "json", "zeros:1"]).lines().next().unwrap()).unwrap();
        let shown = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        assert_eq!(shown(&row["Size"]), shown(&history["Size"]), "one layer: history's size is the image's");
        (inspect[0]["Size"].as_u64().unwrap(), shown(&row["Size"]), unpacked)
    };
    let (inspected, shown, unpacked) = size_of(&b);
    assert_eq!(inspected, unpacked);
    assert_eq!(shown, "1.05MB", "docker shows 1048576+ bytes unpacked as 1.05MB");
    // Loaded elsewhere, where no size was recorded: the same (counted once from the layer).
    let saved = dir.path().join("saved.tar");
    b.ok(&["save", "-o", &saved.to_string_lossy(), "zeros:1"]);
    let other = Berth::new();
    other.ok(&["load", "-i", &saved.to_string_lossy()]);
    assert_eq!(size_of(&other).0, unpacked);
    assert_eq!(size_of(&other).0, unpacked, "and again, from the record");
}

/// The path of blob `digest` in `b`'s store.
fn blob_file(b: &Berth, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    let found = walkdir(b.root.path()).into_iter().find(|p| p.file_name().is_some_and(|n| n == hex));
    found.unwrap_or_else(|| panic!("blob {digest} not in the store"))
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_image_that_cannot_be_read_is_listed_with_a_warning_and_rmi_still_removes_it() {
    let b = Berth::new();
    let good = b.import_tiny("good:1", "1");
    let bad = b.import_tiny("bad:1", "2");
    std::fs::write(blob_file(&b, &bad), b"this is not json").unwrap();
    let out = b.cmd(&["images"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("good") && stdout.contains(&good[7..19]), "{stdout}");
    assert!(stderr.contains("WARNING: image bad:1"), "{stderr}");
    let out = b.ok(&["rmi", "bad:1"]);
    assert!(out.contains("Untagged: bad:1"), "{out}");
    let out = b.cmd(&["images"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "the bad image is gone");
}

#[test]
fn an_image_id_finds_the_image_not_a_manifest_list_that_holds_it() {
    let b = Berth::new();
    // `a/list` sorts before `z/img`: the list was found first when it answered to the ID.
    let id = b.import_tiny("z/img:1", "x");
    let short = &id[7..19];
    let list = b.ok(&["manifest", "create", "a/list:1", "z/img:1"]).trim().to_owned();
    assert_ne!(list, id);
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", short]).trim(), id);
    b.ok(&["tag", short, "x/y:1"]);
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", "x/y:1"]).trim(), id, "tag by ID names the image");
    let out = b.ok(&["rmi", "-f", short]);
    assert!(out.contains("Untagged: z/img:1") && out.contains("Untagged: x/y:1"), "{out}");
    assert!(!out.contains("a/list"), "the list that holds the image stays: {out}");
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", "a/list:1"]).trim(), list);
    // With no record of its own, the ID still reads the list, but rmi by it refuses.
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", short]).trim(), list);
    let err = b.fails(&["rmi", "-f", short]);
    assert!(err.contains("no such image") && err.contains("a/list:1"), "{err}");
    b.ok(&["inspect", "a/list:1"]);
}

#[test]
fn inspect_prints_what_it_found_and_fails_for_each_missing_name_as_docker_does() {
    let b = Berth::new();
    let id = b.import_tiny("app:v1", "hello");
    let out = b.output(&["inspect", "-f", "{{.Id}}", "nosuch", "app:v1", "other"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{id}\n"), "the found one is printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch") && err.contains("other"), "each missing name is named: {err}");
    let none = b.output(&["inspect", "nosuch"]);
    assert_eq!((none.status.code(), String::from_utf8_lossy(&none.stdout).trim()), (Some(1), "[]"));
}

#[test]
fn images_takes_go_templates_filters_and_all_as_docker_scripts_use_them() {
    let b = Berth::new();
    b.import_tiny("app:1", "1");
    b.import_tiny("team/tool:2", "2");
    let dir = tempfile::tempdir().unwrap();
    let tar = crate::util::tarball(dir.path(), "etc/motd", "3", "");
    let id = b.ok(&["import", &tar.to_string_lossy()]).trim().to_owned();
    let mut lines: Vec<String> =
        b.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["<none>:<none>", "app:1", "team/tool:2"]);
    assert_eq!(b.ok(&["images", "-a", "-q", "--filter", "dangling=true"]).trim(), &id[7..19]);
    assert_eq!(b.ok(&["images", "--filter", "reference=team/*", "--format", "{{.Repository}}"]), "team/tool\n");
    assert_eq!(b.ok(&["images", "--filter", "reference=app:1", "--format", "{{.Tag}}"]), "1\n");
    assert_eq!(b.ok(&["images", "--filter", "reference=*", "--format", "{{.Repository}}"]), "app\n", "* stops at /");
    let table = b.ok(&["images", "--filter", "reference=*/*", "--format", r"table {{.Repository}}\t{{.Tag}}"]);
    assert_eq!(table, "REPOSITORY   TAG\nteam/tool    2\n", "docker's titles, tabwriter's columns");
    let history = b.ok(&["history", "--format", "{{if .CreatedBy}}{{.CreatedBy}}{{else}}-{{end}}", "app:1"]);
    assert!(!history.is_empty() && !history.contains("{{"), "{history:?}");
    let bad = b.output(&["images", "--filter", "nope=x"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("invalid filter 'nope=x'"));
}

/// docker's `label=`, `before=` and `since=` filters, over images made at known times.
#[test]
fn images_filter_by_label_and_by_creation_before_or_since_an_image() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    for (name, epoch, label) in
        [("old:1", "1000", "tier=back"), ("mid:1", "2000", "tier=front"), ("new:1", "3000", "other=x")]
    {
        let tar = crate::util::tarball(dir.path(), &format!("{name}.txt").replace(':', "-"), name, "");
        let change = format!("LABEL {label}");
        let out = b
            .cmd(&["import", "-c", &change, &tar.to_string_lossy(), name])
            .env("SOURCE_DATE_EPOCH", epoch)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let names = |filter: &str| b.ok(&["images", "--filter", filter, "--format", "{{.Repository}}"]);
    assert_eq!(names("label=tier"), "mid\nold\n");
    assert_eq!(names("label=tier=back"), "old\n");
    assert_eq!(names("before=mid:1"), "old\n");
    assert_eq!(names("since=mid:1"), "new\n");
    assert!(b.fails(&["images", "--filter", "since=nosuch:1"]).contains("nosuch"));
}

#[test]
fn import_change_sets_the_config_as_docker_import_c() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let tar = crate::util::tarball(dir.path(), "etc/motd", "hi", "");
    let tar = tar.to_string_lossy();
    b.ok(&["import", "-c", "ENV A=1 B=two", "-c", "CMD [\"/bin/app\", \"serve\"]", "-c", "EXPOSE 8080", &tar, "imp:1"]);
    let f = |tpl: &str| b.ok(&["inspect", "--type", "image", "-f", tpl, "imp:1"]).trim().to_owned();
    assert_eq!(f("{{json .Config.Env}} {{json .Config.Cmd}}"), r#"["A=1","B=two"] ["/bin/app","serve"]"#);
    assert_eq!(f("{{json .Config.ExposedPorts}}"), r#"{"8080/tcp":{}}"#);
    let err = b.fails(&["import", "-c", "RUN make", &tar, "imp:2"]);
    assert!(err.contains("is not a valid change command"), "{err}");
}

/// One image is its ID, whatever manifests carry it: loading an image the store has (from
/// a docker archive, whose manifest differs) leaves no dangling `<none>` twin, so the usual
/// `rmi $(images -f dangling=true -q)` cannot take the tagged image with it; and `rmi` of
/// a name says `Deleted` only when the image's ID is gone.
#[test]
fn loading_an_image_again_leaves_no_dangling_twin_and_rmi_says_deleted_only_when_it_is() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str| {
        let archive = dir.path().join(format!("{name}.tar"));
        b.ok(&["save", "--format", "docker", "-o", &crate::util::p(&archive), name]);
        crate::util::p(&archive)
    };
    let solo = b.import_tiny("solo:1", "alone");
    let archive = save("solo:1");
    assert!(b.ok(&["load", "-i", &archive]).contains("Loaded image: solo:1"));
    assert_eq!(b.ok(&["images", "-f", "dangling=true", "-q"]), "", "{}", b.ok(&["images"]));
    assert_eq!(b.ok(&["rmi", "solo:1"]), format!("Untagged: solo:1\nDeleted: {solo}\n"));

    let id = b.import_tiny("app:v1", "hello");
    let archive = save("app:v1");
    b.ok(&["tag", "app:v1", "keep:1"]);
    assert!(b.ok(&["load", "-i", &archive]).contains("Loaded image: app:v1"));
    assert_eq!(
        b.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]),
        format!("app:v1 {0}\nkeep:1 {0}\n", &id[7..19])
    );
    // app:v1 now names the loaded manifest, keep:1 the imported one: one image, kept by keep:1.
    assert_eq!(b.ok(&["rmi", "app:v1"]), "Untagged: app:v1\n");
    let out = b.ok(&["rmi", "keep:1"]);
    assert_eq!(out, format!("Untagged: keep:1\nDeleted: {id}\n"));
    assert_eq!(b.ok(&["images", "-q"]), "");
}
