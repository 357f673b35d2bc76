//! The exporters on an image made by hand in a temporary store: no root, no build needed
//! (the device-node checks differ by whether the tests run as root).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use oci::content::{ContentStore, Expected};
use oci::layer::{Compression, LayerWriter};
use oci::store::ImportOptions;
use oci::{ImageRecord, ImageStore};

use super::Exporter;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// The base layer: a file, `/dev/null` (char 1:3), a fifo, a symlink, and a file the
/// second layer deletes.
fn base_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["etc/", "dev/", "run/"] {
        b.append(&header(dir, tar::EntryType::Directory, 0o755, 0), std::io::empty()).unwrap();
    }
    b.append(&header("etc/motd", tar::EntryType::Regular, 0o644, 6), &b"hello\n"[..]).unwrap();
    b.append(&header("etc/old", tar::EntryType::Regular, 0o644, 4), &b"old\n"[..]).unwrap();
    let mut null = header("dev/null", tar::EntryType::Char, 0o666, 0);
    null.set_device_major(1).unwrap();
    null.set_device_minor(3).unwrap();
    null.set_cksum();
    b.append(&null, std::io::empty()).unwrap();
    b.append(&header("run/pipe", tar::EntryType::Fifo, 0o600, 0), std::io::empty()).unwrap();
    let mut link = header("etc/greeting", tar::EntryType::Symlink, 0o777, 0);
    link.set_link_name("motd").unwrap();
    link.set_cksum();
    b.append(&link, std::io::empty()).unwrap();
    b.into_inner().unwrap()
}

/// The second layer: deletes `etc/old`, adds `etc/new`.
fn top_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append(&header("etc/.wh.old", tar::EntryType::Regular, 0o644, 0), std::io::empty()).unwrap();
    b.append(&header("etc/new", tar::EntryType::Regular, 0o644, 4), &b"new\n"[..]).unwrap();
    b.into_inner().unwrap()
}

/// A two-layer image `app:1` in a fresh store.
fn image() -> (tempfile::TempDir, ImageStore, ImageRecord) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("root")).unwrap();
    let opts = ImportOptions {
        compression: Compression::Gzip,
        message: None,
        source: "test".into(),
        platform: None,
        config: None,
    };
    let base = store.import_rootfs(&base_tar()[..], None, &opts).unwrap();
    let base = store.image(&base.target).unwrap();
    let ingest = store.content().writer(oci::Algorithm::Sha256).unwrap();
    let mut w = LayerWriter::new(ingest, Compression::Zstd).unwrap();
    std::io::copy(&mut &top_tar()[..], &mut w).unwrap();
    let (ingest, info) = w.finish().unwrap();
    ingest.commit(Expected::exactly(&info.digest, info.size)).unwrap();
    let name: oci::Reference = "app:1".parse().unwrap();
    let rec = store.add_layer(&base, &info, "COPY new /etc/", "", Some(&name)).unwrap();
    (dir, store, rec)
}

/// Every entry of a tarball: (path, type, device major:minor).
fn entries(tar: &Path) -> Vec<(String, tar::EntryType, (u32, u32))> {
    let mut a = tar::Archive::new(std::fs::File::open(tar).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let dev = (h.device_major().ok().flatten().unwrap_or(0), h.device_minor().ok().flatten().unwrap_or(0));
            (e.path().unwrap().to_string_lossy().into_owned(), h.entry_type(), dev)
        })
        .collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("berth-tmp") || n.starts_with("export-"))
        .collect()
}

#[test]
fn local_export_applies_layers_and_keeps_special_files() {
    let (dir, store, rec) = image();
    let out = dir.path().join("rootfs");
    let done = Exporter::Local(out.clone()).export(&store, &rec).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("etc/motd")).unwrap(), "hello\n");
    assert_eq!(std::fs::read_to_string(out.join("etc/new")).unwrap(), "new\n");
    assert!(!out.join("etc/old").exists(), "the whiteout of the top layer was not applied");
    assert_eq!(std::fs::read_link(out.join("etc/greeting")).unwrap(), Path::new("motd"));
    assert!(std::fs::symlink_metadata(out.join("run/pipe")).unwrap().file_type().is_fifo());
    let null = std::fs::symlink_metadata(out.join("dev/null"));
    if is_root() {
        let null = null.unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!((rustix::fs::major(null.rdev()), rustix::fs::minor(null.rdev())), (1, 3));
        assert_eq!(done.skipped_devices, 0);
        assert_eq!(done.warning(), None);
    } else {
        assert!(null.is_err());
        assert_eq!(done.skipped_devices, 1);
        let w = done.warning().unwrap();
        assert!(w.contains("1 device node of the image left out") && w.contains("needs root"), "{w}");
    }
}

#[test]
fn tar_export_is_the_merged_filesystem_with_device_nodes_as_root() {
    let (dir, store, rec) = image();
    let out = dir.path().join("rootfs.tar");
    let done = Exporter::Tar(out.clone()).export(&store, &rec).unwrap();
    let listing = entries(&out);
    let find = |p: &str| listing.iter().find(|(path, ..)| path.trim_end_matches('/') == p);
    assert!(find("etc/motd").is_some() && find("etc/new").is_some(), "{listing:?}");
    assert!(find("etc/old").is_none() && find("etc/.wh.old").is_none(), "{listing:?}");
    assert_eq!(find("run/pipe").unwrap().1, tar::EntryType::Fifo);
    if is_root() {
        let (_, kind, dev) = find("dev/null").unwrap();
        assert_eq!((*kind, *dev), (tar::EntryType::Char, (1, 3)));
    } else {
        assert!(find("dev/null").is_none());
        assert_eq!(done.skipped_devices, 1);
    }
    // The scratch rootfs and the temporary file are gone.
    assert!(leftovers(&store.tmp_dir()).is_empty() && leftovers(dir.path()).is_empty());
}

#[test]
fn archive_exports_are_layouts_other_tools_read() {
    let (dir, store, rec) = image();
    let oci_tar = dir.path().join("app-oci.tar");
    let docker_tar = dir.path().join("app-docker.tar");
    Exporter::Oci(oci_tar.clone()).export(&store, &rec).unwrap();
    Exporter::Docker(docker_tar.clone()).export(&store, &rec).unwrap();
    let names = |p: &Path| entries(p).into_iter().map(|e| e.0).collect::<Vec<_>>();
    let oci_names = names(&oci_tar);
    assert!(oci_names.iter().any(|n| n == "oci-layout") && oci_names.iter().any(|n| n == "index.json"));
    let img = store.image(&rec.target).unwrap();
    for l in img.manifest.layers() {
        let blob = format!("blobs/sha256/{}", l.digest().to_string().trim_start_matches("sha256:"));
        assert!(oci_names.contains(&blob), "{blob} missing from {oci_names:?}");
    }
    let mut a = tar::Archive::new(std::fs::File::open(&docker_tar).unwrap());
    let mut manifest = String::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap() == Path::new("manifest.json") {
            e.read_to_string(&mut manifest).unwrap();
        }
    }
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m[0]["RepoTags"][0], "app:1");
    assert_eq!(m[0]["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn a_failed_export_leaves_no_destination_and_no_scratch() {
    let (dir, store, rec) = image();
    // A layer blob disappears (a prune raced the export): every exporter fails cleanly.
    let img = store.image(&rec.target).unwrap();
    let top = oci::manifest::descriptor_digest(img.manifest.layers().last().unwrap()).unwrap();
    assert!(store.content().delete(&top).unwrap());
    for e in [
        Exporter::Tar(dir.path().join("fs.tar")),
        Exporter::Oci(dir.path().join("oci.tar")),
        Exporter::Docker(dir.path().join("docker.tar")),
    ] {
        let err = e.export(&store, &rec).unwrap_err();
        assert!(err.to_string().contains(&top.to_string()[..12]) || err.to_string().contains("write"), "{err}");
        assert!(!e.dest().exists(), "{} was left behind", e.dest().display());
    }
    assert!(leftovers(&store.tmp_dir()).is_empty(), "{:?}", leftovers(&store.tmp_dir()));
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

#[test]
fn exporter_kinds_round_trip() {
    for kind in Exporter::KINDS {
        let e = Exporter::new(kind, "d".into()).unwrap();
        assert_eq!((e.kind(), e.dest()), (kind, Path::new("d")));
    }
    assert_eq!(Exporter::new("registry", "d".into()), None);
}
