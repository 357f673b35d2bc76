//! save, load and import against independent tools: skopeo, umoci, oci-image-tool.

use std::process::Command;

use crate::util::{busybox_layout, require_tool, run_tool, Berth};

fn p(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

#[test]
fn save_and_load_round_trip_in_both_formats() {
    let a = Berth::new();
    let id = a.import_tiny("example.com/app:v1", "hello");
    for format in ["docker", "oci"] {
        let tar = a.root.path().join(format!("{format}.tar"));
        a.ok(&["save", "--format", format, "-o", &p(&tar), "example.com/app:v1"]);
        let b = Berth::new();
        let out = b.ok(&["load", "-i", &p(&tar)]);
        assert_eq!(out.trim(), "Loaded image: example.com/app:v1", "{format}");
        let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "example.com/app:v1"])).unwrap();
        assert_eq!(inspect[0]["Id"], id, "{format}: the image ID survives");
    }
}

#[test]
fn one_image_loaded_from_both_archive_formats_is_one_image_by_its_id() {
    let a = Berth::new();
    let id = a.import_tiny("app", "hello");
    let (docker, oci) = (a.root.path().join("d.tar"), a.root.path().join("o.tar"));
    a.ok(&["save", "-o", &p(&docker), "app"]);
    a.ok(&["save", "--format", "oci", "-o", &p(&oci), "app"]);
    // Two manifests (docker's and OCI's media types) with one config: one image ID.
    let b = Berth::new();
    b.ok(&["load", "-i", &p(&oci)]);
    b.ok(&["tag", "app", "other:1"]);
    b.ok(&["load", "-i", &p(&docker)]);
    let short = &id[7..19];
    let rows = b.ok(&["images"]);
    assert_eq!(rows.lines().filter(|l| l.contains(short)).count(), 2, "{rows}");
    // Before, each of these was "ff4c30e64dab is ambiguous".
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", short])).unwrap();
    assert_eq!(inspect[0]["Id"], id);
    let err = b.fails(&["rmi", short]);
    assert!(err.contains("must be forced"), "{err}");
    let out = b.ok(&["rmi", "-f", short]);
    assert!(out.contains("Untagged: app:latest") && out.contains("Untagged: other:1"), "{out}");
    assert_eq!(b.ok(&["images", "-q"]), "");
    let blobs = std::fs::read_dir(b.root.path().join("content/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "both manifests and their blobs are gone");
}

#[test]
fn load_reads_compressed_archives_from_stdin() {
    let a = Berth::new();
    a.import_tiny("app", "x");
    let tar = a.root.path().join("app.tar");
    a.ok(&["save", "-o", &p(&tar), "app"]);
    assert!(Command::new("gzip").arg(&tar).status().unwrap().success());
    let b = Berth::new();
    let out = b.cmd(&["load"]).stdin(std::fs::File::open(a.root.path().join("app.tar.gz")).unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Loaded image: app:latest");
}

#[test]
fn load_refuses_a_tampered_archive_and_names_nothing() {
    let a = Berth::new();
    a.import_tiny("app", "original");
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("app.tar");
    a.ok(&["save", "--format", "oci", "-o", &p(&tar), "app"]);
    let unpacked = dir.path().join("x");
    std::fs::create_dir(&unpacked).unwrap();
    assert!(Command::new("tar").args(["-C", &p(&unpacked), "-xf", &p(&tar)]).status().unwrap().success());
    // Overwrite the largest blob (the layer) with other bytes of the same length.
    let blobs = unpacked.join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    let len = layer.metadata().unwrap().len() as usize;
    std::fs::write(&layer, vec![b'x'; len]).unwrap();
    let bad = dir.path().join("bad.tar");
    assert!(Command::new("tar").args(["-C", &p(&unpacked), "-cf", &p(&bad), "."]).status().unwrap().success());
    let b = Berth::new();
    let err = b.fails(&["load", "-i", &p(&bad)]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(b.ok(&["images", "-q"]), "");
}

#[test]
fn save_refuses_to_write_a_missing_image() {
    let b = Berth::new();
    let out = b.root.path().join("x.tar");
    let err = b.fails(&["save", "-o", &p(&out), "nosuch"]);
    assert!(err.contains("no such image"), "{err}");
    assert!(!out.exists(), "no partial archive is left behind");
}

#[test]
fn oci_archive_passes_oci_image_tool_validate() {
    if !require_tool("oci-image-tool") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(layout) = busybox_layout(&b, dir.path()) else { return };
    // Debian's oci-image-tool (1.0.0-rc1) calls an image layout `--type image`.
    let out = run_tool(Command::new("oci-image-tool").args(["validate", "--type", "image", &p(&layout)]));
    assert!(out.contains("Validation succeeded"), "{out}");
}

#[test]
fn oci_archive_unpacks_with_umoci() {
    if !require_tool("umoci") {
        return;
    }
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(layout) = busybox_layout(&b, dir.path()) else { return };
    let bundle = dir.path().join("bundle");
    run_tool(Command::new("umoci").args(["unpack", "--image", &format!("{}:latest", p(&layout)), &p(&bundle)]));
    let busybox = bundle.join("rootfs/bin/busybox");
    assert!(busybox.is_file(), "umoci unpacked no /bin/busybox");
    assert_eq!(std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(), std::path::Path::new("/bin/busybox"));
    assert!(bundle.join("rootfs/etc/passwd").is_file());
}

#[test]
fn skopeo_reads_our_archives() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    if !b.busybox("busybox:latest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("oci.tar");
    let docker = dir.path().join("docker.tar");
    b.ok(&["save", "--format", "oci", "-o", &p(&oci), "busybox"]);
    b.ok(&["save", "--format", "docker", "-o", &p(&docker), "busybox"]);
    let inspect = run_tool(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", p(&oci))]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    let copy = dir.path().join("copy");
    run_tool(Command::new("skopeo").args([
        "copy",
        &format!("docker-archive:{}", p(&docker)),
        &format!("oci:{}:bb", p(&copy)),
    ]));
    assert!(copy.join("index.json").is_file());
    // And the copy skopeo made from our docker archive loads back with the same image ID.
    let ours: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", "busybox"])).unwrap();
    let c = Berth::new();
    c.ok(&["load", "-i", &p(&copy)]);
    let list = c.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(list.trim(), ours[0]["Id"].as_str().unwrap());
}

#[test]
fn load_reads_archives_skopeo_writes() {
    if !require_tool("skopeo") {
        return;
    }
    let b = Berth::new();
    if !b.busybox("busybox:latest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.tar");
    b.ok(&["save", "--format", "oci", "-o", &p(&ours), "busybox"]);
    let id = serde_json::from_str::<serde_json::Value>(&b.ok(&["inspect", "busybox"])).unwrap()[0]["Id"].clone();
    let docker = dir.path().join("sk-docker.tar");
    let oci = dir.path().join("sk-oci.tar");
    let src = format!("oci-archive:{}", p(&ours));
    run_tool(Command::new("skopeo").args(["copy", &src, &format!("docker-archive:{}:sk/docker:1", p(&docker))]));
    run_tool(Command::new("skopeo").args(["copy", &src, &format!("oci-archive:{}:localhost/sk/oci:2", p(&oci))]));
    let c = Berth::new();
    assert_eq!(c.ok(&["load", "-i", &p(&docker)]).trim(), "Loaded image: sk/docker:1");
    assert_eq!(c.ok(&["load", "-i", &p(&oci)]).trim(), "Loaded image: localhost/sk/oci:2");
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["inspect", "sk/docker:1", "localhost/sk/oci:2"])).unwrap();
    assert_eq!(v[0]["Id"], id);
    assert_eq!(v[1]["Id"], id);
}

/// One file of a tar archive, as text.
fn member(tar: &std::path::Path, name: &str) -> String {
    run_tool(Command::new("tar").args(["-xOf", &p(tar), name]))
}

#[test]
fn save_by_id_writes_no_name_and_load_prints_the_id() {
    let a = Berth::new();
    let id = a.import_tiny("zz/app:1", "x");
    a.ok(&["tag", "zz/app:1", "aa/other:2"]);
    let short = &id[7..19];
    let (docker, oci, named) = (a.root.path().join("d.tar"), a.root.path().join("o.tar"), a.root.path().join("n.tar"));
    a.ok(&["save", "-o", &p(&docker), short]);
    a.ok(&["save", "--format", "oci", "-o", &p(&oci), short]);
    a.ok(&["save", "-o", &p(&named), "zz/app:1"]);
    let manifest: serde_json::Value = serde_json::from_str(&member(&docker, "manifest.json")).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::Value::Null, "docker writes null by ID: {manifest}");
    assert_eq!(member(&docker, "repositories").trim(), "{}");
    let index: serde_json::Value = serde_json::from_str(&member(&oci, "index.json")).unwrap();
    assert!(index["manifests"][0].get("annotations").is_none(), "{index}");
    let manifest: serde_json::Value = serde_json::from_str(&member(&named, "manifest.json")).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["zz/app:1"]), "by name, that name");
    for tar in [&docker, &oci] {
        let b = Berth::new();
        assert_eq!(b.ok(&["load", "-i", &p(tar)]).trim(), format!("Loaded image ID: {id}"));
        assert_eq!(b.ok(&["images", "-q"]).trim(), short);
        assert!(b.ok(&["images"]).contains("<none>"), "loaded without a name");
    }
}

#[test]
fn load_quiet_still_prints_what_it_loaded() {
    let a = Berth::new();
    let id = a.import_tiny("app:q", "x");
    let (named, unnamed) = (a.root.path().join("n.tar"), a.root.path().join("u.tar"));
    a.ok(&["save", "-o", &p(&named), "app:q"]);
    a.ok(&["save", "-o", &p(&unnamed), &id]);
    let b = Berth::new();
    assert_eq!(b.ok(&["load", "-q", "-i", &p(&named)]).trim(), "Loaded image: app:q");
    assert_eq!(b.ok(&["load", "--quiet", "-i", &p(&unnamed)]).trim(), format!("Loaded image ID: {id}"));
}
