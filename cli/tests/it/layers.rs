//! Images with many layers: 130 layer-producing build steps, and a 130-layer image loaded
//! from an OCI layout, build and run under berth's sandbox, runc and crun (docker's overlay2
//! allows 127; one overlay mount option string used to stop berth near 38).

use std::path::Path;

use crate::util::{build_store, busybox_layout, p, require_tool, strict, Berth};

/// How many layers the tests stack on busybox: past docker's 127.
const LAYERS: usize = 130;

/// `berth run` of `image` with `cmd`, on berth's sandbox and on every OCI runtime installed;
/// asserts each prints `want`.
fn runs_everywhere(b: &Berth, image: &str, cmd: &[&str], want: &str) {
    let mut args = vec!["run", "--rm", image];
    args.extend_from_slice(cmd);
    assert_eq!(b.ok(&args), want, "berth's sandbox");
    for runtime in ["runc", "crun"] {
        if !require_tool(runtime) {
            continue;
        }
        let mut args = vec!["run", "--rm", "--runtime", runtime, image];
        args.extend_from_slice(cmd);
        assert_eq!(b.ok(&args), want, "--runtime {runtime}");
    }
}

/// How many layers `image` has, as `berth inspect` shows its config.
fn layer_count(b: &Berth, image: &str) -> usize {
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", image])).unwrap();
    inspect[0]["RootFS"]["Layers"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_dockerfile_with_130_layer_steps_builds_and_runs() {
    let Some(b) = build_store() else { return };
    let ctx = tempfile::tempdir().unwrap();
    // RUN steps, every fifth a WORKDIR that makes a new directory: each step is a layer,
    // and each RUN mounts every layer below it.
    let mut df = String::from("FROM busybox\n");
    for i in 1..=LAYERS {
        if i % 5 == 0 {
            df.push_str(&format!("WORKDIR /w/{i}\n"));
        } else {
            df.push_str(&format!("RUN echo {i} > /layer-{i}\n"));
        }
    }
    df.push_str("RUN ls /w | wc -l > /workdirs\n");
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    b.ok(&["build", "-q", "-t", "tall:latest", &p(ctx.path())]);
    assert!(layer_count(&b, "tall") > LAYERS);
    let want = format!("1\n{}\n{}\n/w/{LAYERS}\n", LAYERS - 1, LAYERS / 5);
    let cmd = format!("cat /layer-1 /layer-{} /workdirs && pwd", LAYERS - 1);
    runs_everywhere(&b, "tall", &["sh", "-c", &cmd], &want);
}

/// Writes `bytes` as a blob of the layout; returns its digest.
fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = oci::Digest::of(bytes);
    std::fs::write(layout.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
    digest.to_string()
}

/// A layer tar with one file, `layers/<i>`, holding `i`.
fn layer_tar(i: usize) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let content = format!("{i}\n");
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    tar.append_data(&mut h, format!("layers/{i}"), content.as_bytes()).unwrap();
    tar.into_inner().unwrap()
}

/// The busybox layout with `extra` one-file layers stacked on its image, named `name`.
fn stack_layers(layout: &Path, extra: usize, name: &str) {
    let read = |d: &str| -> serde_json::Value {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    for i in 1..=extra {
        let tar = layer_tar(i);
        let digest = put_blob(layout, &tar);
        manifest["layers"].as_array_mut().unwrap().push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": tar.len()
        }));
        config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(digest.into());
        if let Some(history) = config["history"].as_array_mut() {
            history.push(serde_json::json!({"created_by": format!("layer {i}")}));
        }
    }
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put_blob(layout, &config).into();
    manifest["config"]["size"] = config.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    index["manifests"] = serde_json::json!([{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put_blob(layout, &manifest),
        "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": name}
    }]);
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_130_layer_image_loaded_from_an_oci_layout_runs() {
    if !rustix::process::geteuid().is_root() {
        assert!(!strict(), "berth run tests need root (BERTH_TEST_STRICT=1)");
        eprintln!("skipping: berth run needs root");
        return;
    }
    let made = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(layout) = busybox_layout(&made, dir.path()) else { return };
    stack_layers(&layout, LAYERS, "tall-oci:latest");
    let b = Berth::new();
    b.ok(&["load", "-i", &p(&layout)]);
    assert!(layer_count(&b, "tall-oci") > LAYERS);
    let want = format!("1\n{LAYERS}\n{LAYERS}\n");
    let cmd = format!("cat /layers/1 /layers/{LAYERS} && ls /layers | wc -l");
    runs_everywhere(&b, "tall-oci", &["sh", "-c", &cmd], &want);
}
