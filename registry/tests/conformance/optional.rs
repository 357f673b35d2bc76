//! The Go suite's optional checks, turned on: sparse manifests (data type `sparse`) and tag
//! parameters (`tag-param-sha256`, `tag-param-sha512`), sent as the suite sends them; and
//! that a tag naming a sha512 manifest holds through the referrers API and garbage collection.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use oci::media::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};
use serde_json::json;

use crate::util::{Client, Resp};

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

fn sha512(data: &[u8]) -> String {
    let mut h = oci::Algorithm::Sha512.hasher();
    h.update(data);
    h.finish().to_string()
}

async fn put(c: &Client, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
    let uri = format!("/v2/{repo}/manifests/{reference}");
    c.send(Method::PUT, &uri, &[("content-type", media_type)], body.to_vec()).await
}

/// What the suite checks after a push: GET and HEAD by each reference answer the bytes, the
/// media type, the length and `digest`.
async fn assert_pullable(c: &Client, repo: &str, references: &[&str], digest: &str, media_type: &str, body: &[u8]) {
    for reference in references {
        let uri = format!("/v2/{repo}/manifests/{reference}");
        let r = c.get(&uri).await;
        assert_eq!(r.status, StatusCode::OK, "GET {reference}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, body, "GET {reference}");
        assert_eq!((r.header("docker-content-digest"), r.header("content-type")), (digest, media_type));
        let r = c.send(Method::HEAD, &uri, &[], Body::empty()).await;
        assert_eq!((r.status, r.header("docker-content-digest")), (StatusCode::OK, digest), "HEAD {reference}");
        assert_eq!(r.header("content-length"), body.len().to_string(), "HEAD {reference}");
    }
}

fn oci_tags(r: &Resp) -> Vec<String> {
    let values = r.headers.get_all("oci-tag").iter().map(|v| v.to_str().unwrap().to_owned());
    values.flat_map(|v| v.split(',').map(|t| t.trim().to_owned()).collect::<Vec<_>>()).collect()
}

async fn tag_list(c: &Client, repo: &str) -> serde_json::Value {
    c.get(&format!("/v2/{repo}/tags/list")).await.json()["tags"].clone()
}

/// A config and one layer pushed, and an image manifest naming them and a second layer that
/// is never pushed, as the suite's `sparse-image`.
async fn sparse_image(c: &Client, repo: &str) -> Vec<u8> {
    let config = c.push_blob(repo, CONFIG).await;
    let pushed = c.push_blob(repo, b"pushed layer").await;
    let never = oci::Digest::of(b"never pushed layer").to_string();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": CONFIG.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": pushed, "size": 12},
                   {"mediaType": OCI_LAYER_GZIP, "digest": never, "size": 18}]}))
    .unwrap()
}

/// An index of a pushed image (amd64) and of a manifest that does not exist (arm64), as the
/// suite's `sparse-index`; returns the index and its pushed child's digest.
async fn index_with_missing_child(c: &Client, repo: &str) -> (Vec<u8>, String) {
    let child = c.image_manifest(repo, b"amd64 layer", None).await;
    let child_d = c.push_manifest(repo, &oci::Digest::of(&child).to_string(), &child).await;
    let absent = oci::Digest::of(&[7u8; 1024]).to_string();
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child_d, "size": child.len(),
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": absent, "size": 1024,
         "platform": {"architecture": "arm64", "os": "linux"}}]}))
    .unwrap();
    (index, child_d)
}

#[tokio::test]
async fn sparse_image_manifest_is_refused_unless_allowed() {
    let strict = Client::new();
    let m = sparse_image(&strict, "sp").await;
    let r = put(&strict, "sp", "sparse-image", OCI_MANIFEST, &m).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(strict.get("/v2/sp/manifests/sparse-image").await.status, StatusCode::NOT_FOUND);

    let c = Client::sparse();
    let m = sparse_image(&c, "sp").await;
    let d = oci::Digest::of(&m).to_string();
    let r = put(&c, "sp", &d, OCI_MANIFEST, &m).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        (r.header("location"), r.header("docker-content-digest")),
        (format!("/v2/sp/manifests/{d}").as_str(), d.as_str())
    );
    assert_eq!(put(&c, "sp", "sparse-image", OCI_MANIFEST, &m).await.status, StatusCode::CREATED);
    assert_pullable(&c, "sp", &["sparse-image", &d], &d, OCI_MANIFEST, &m).await;
    assert_eq!(tag_list(&c, "sp").await, json!(["sparse-image"]));
    // The registry does not pretend to have the layer.
    let never = oci::Digest::of(b"never pushed layer");
    let r = c.get(&format!("/v2/sp/blobs/{never}")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
}

#[tokio::test]
async fn sparse_image_manifest_still_needs_its_config() {
    let c = Client::sparse();
    let layer = c.push_blob("nc", b"layer").await;
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": oci::Digest::of(CONFIG).to_string(), "size": CONFIG.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer, "size": 5}]}))
    .unwrap();
    let r = put(&c, "nc", "v1", OCI_MANIFEST, &m).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
}

#[tokio::test]
async fn index_with_a_missing_child_is_accepted_without_allow_sparse() {
    let c = Client::new();
    let (index, child) = index_with_missing_child(&c, "si").await;
    let d = oci::Digest::of(&index).to_string();
    let r = put(&c, "si", &d, OCI_INDEX, &index).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), format!("/v2/si/manifests/{d}"));
    assert_eq!(put(&c, "si", "sparse-index", OCI_INDEX, &index).await.status, StatusCode::CREATED);
    assert_pullable(&c, "si", &["sparse-index", &d], &d, OCI_INDEX, &index).await;
    assert_eq!(tag_list(&c, "si").await, json!(["sparse-index"]));
    assert_eq!(c.get(&format!("/v2/si/manifests/{child}")).await.status, StatusCode::OK);
    let absent = oci::Digest::of(&[7u8; 1024]);
    let r = c.get(&format!("/v2/si/manifests/{absent}")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
}

#[tokio::test]
async fn tag_parameters_with_a_sha256_digest() {
    let c = Client::new();
    let m = c.image_manifest("tp", b"layer", None).await;
    let d = oci::Digest::of(&m).to_string();
    let r = put(
        &c,
        "tp",
        &format!("{d}?tag=tag-param-sha256&tag=tag-param-sha256-0&tag=tag-param-sha256"),
        OCI_MANIFEST,
        &m,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(oci_tags(&r), ["tag-param-sha256", "tag-param-sha256-0"], "one OCI-Tag per accepted tag");
    assert_pullable(&c, "tp", &["tag-param-sha256", "tag-param-sha256-0", &d], &d, OCI_MANIFEST, &m).await;
    assert_eq!(tag_list(&c, "tp").await, json!(["tag-param-sha256", "tag-param-sha256-0"]));
}

/// Pushes `data` under its sha512 digest; returns the digest.
async fn push_blob512(c: &Client, repo: &str, data: &[u8]) -> String {
    let d = sha512(data);
    let r = c.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data.to_vec()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    d
}

/// An image whose config and layer are pushed by sha512 digests, and its manifest (not pushed).
async fn image512(c: &Client, repo: &str, layer: &[u8], subject: Option<(&str, usize)>) -> Vec<u8> {
    let config = push_blob512(c, repo, CONFIG).await;
    let layer_d = push_blob512(c, repo, layer).await;
    let mut m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": CONFIG.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_d, "size": layer.len()}]});
    if let Some((d, size)) = subject {
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d, "size": size});
    }
    serde_json::to_vec(&m).unwrap()
}

/// PUT by sha512 digest with `tags` as parameters, checked as the suite checks it.
async fn put512(c: &Client, repo: &str, media_type: &str, body: &[u8], tags: &[&str]) -> String {
    let d = sha512(body);
    let params: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
    let r = put(c, repo, &format!("{d}?{}", params.join("&")), media_type, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), d, "stored under the sha512 digest it was pushed by");
    assert_eq!(r.header("location"), format!("/v2/{repo}/manifests/{d}"));
    assert_eq!(c.get(r.header("location")).await.body, body);
    assert_eq!(oci_tags(&r), tags);
    d
}

#[tokio::test]
async fn tag_parameters_with_a_sha512_digest() {
    let c = Client::new();
    let child = image512(&c, "t5", b"sha512 layer", None).await;
    let child_d = put512(&c, "t5", OCI_MANIFEST, &child, &["tag-param-sha512-0"]).await;
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child_d, "size": child.len()}]}))
    .unwrap();
    let d = put512(&c, "t5", OCI_INDEX, &index, &["tag-param-sha512", "tag-param-sha512-1"]).await;
    assert!(d.starts_with("sha512:"), "{d}");
    assert_pullable(&c, "t5", &["tag-param-sha512", "tag-param-sha512-1", &d], &d, OCI_INDEX, &index).await;
    assert_pullable(&c, "t5", &["tag-param-sha512-0", &child_d], &child_d, OCI_MANIFEST, &child).await;
    assert_eq!(tag_list(&c, "t5").await, json!(["tag-param-sha512", "tag-param-sha512-0", "tag-param-sha512-1"]));
    // Nothing was stored under the sha256 digest of the same bytes.
    let sha256 = oci::Digest::of(&index);
    assert_eq!(c.get(&format!("/v2/t5/manifests/{sha256}")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_tag_parameters_store_nothing() {
    let c = Client::new();
    let m = c.image_manifest("bt", b"layer", None).await;
    let d = oci::Digest::of(&m).to_string();
    for bad in ["ok&tag=bad%24tag", "ok&tag=sha256:abc", "ok&tag=", "ok&tag=.hidden"] {
        let r = put(&c, "bt", &format!("{d}?tag={bad}"), OCI_MANIFEST, &m).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"), "{bad}");
    }
    assert_eq!(c.get(&format!("/v2/bt/manifests/{d}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/v2/bt/manifests/ok").await.status, StatusCode::NOT_FOUND);
    // The spec asks for at least 10 tags a push; past 100 the push is refused whole.
    let many: Vec<String> = (0..=registry::domain::MAX_TAGS_PER_PUSH).map(|i| format!("tag=t{i}")).collect();
    let r = put(&c, "bt", &format!("{d}?{}", many.join("&")), OCI_MANIFEST, &m).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"));
    assert_eq!(c.get("/v2/bt/manifests/t0").await.status, StatusCode::NOT_FOUND);
    let ten = &many[..10].join("&");
    let r = put(&c, "bt", &format!("{d}?{ten}"), OCI_MANIFEST, &m).await;
    assert_eq!((r.status, oci_tags(&r).len()), (StatusCode::CREATED, 10));
    assert_eq!(tag_list(&c, "bt").await.as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn sha512_tags_hold_through_referrers_and_gc() {
    let c = Client::sparse();
    let base = image512(&c, "g5", b"base layer", None).await;
    let base_d = put512(&c, "g5", OCI_MANIFEST, &base, &["v1"]).await;
    let sig = image512(&c, "g5", b"signature", Some((&base_d, base.len()))).await;
    let sig_d = sha512(&sig);
    let r = put(&c, "g5", &sig_d, OCI_MANIFEST, &sig).await;
    assert_eq!((r.status, r.header("oci-subject")), (StatusCode::CREATED, base_d.as_str()));
    let doomed = image512(&c, "g5", b"untagged layer", None).await;
    let doomed_d = put512(&c, "g5", OCI_MANIFEST, &doomed, &[]).await;
    // Sparse content beside it: gc must neither fail on nor drop what is missing.
    let sparse = sparse_image(&c, "g5").await;
    assert_eq!(put(&c, "g5", "sparse", OCI_MANIFEST, &sparse).await.status, StatusCode::CREATED);
    let (index, _) = index_with_missing_child(&c, "g5").await;
    assert_eq!(put(&c, "g5", "multi", OCI_INDEX, &index).await.status, StatusCode::CREATED);

    let referrers = c.get(&format!("/v2/g5/referrers/{base_d}")).await.json();
    assert_eq!(referrers["manifests"][0]["digest"], sig_d.as_str(), "{referrers}");

    let report = registry::gc::collect(&c.state.registry, false, Duration::ZERO).await.unwrap();
    assert_eq!(report.manifests, vec![("g5".to_owned(), doomed_d.parse().unwrap())]);
    let swept: Vec<String> = report.blobs.iter().map(ToString::to_string).collect();
    assert!(swept.contains(&sha512(b"untagged layer")) && swept.contains(&doomed_d), "{swept:?}");
    assert_pullable(&c, "g5", &["v1", &base_d], &base_d, OCI_MANIFEST, &base).await;
    assert_pullable(&c, "g5", &[&sig_d], &sig_d, OCI_MANIFEST, &sig).await;
    for blob in [sha512(CONFIG), sha512(b"base layer"), sha512(b"signature")] {
        assert_eq!(c.get(&format!("/v2/g5/blobs/{blob}")).await.status, StatusCode::OK, "{blob}");
    }
    let referrers = c.get(&format!("/v2/g5/referrers/{base_d}")).await.json();
    assert_eq!(referrers["manifests"][0]["digest"], sig_d.as_str(), "{referrers}");
    assert_eq!(c.get("/v2/g5/manifests/sparse").await.body, sparse);
    assert_eq!(c.get("/v2/g5/manifests/multi").await.body, index);
    assert_eq!(tag_list(&c, "g5").await, json!(["multi", "sparse", "v1"]));
}
