//! Pull: the API check, blobs (with ranges) and manifests, present and absent.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::util::Client;

#[tokio::test]
async fn api_version_check() {
    let c = Client::new();
    let r = c.get("/v2/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
}

#[tokio::test]
async fn get_and_head_blob() {
    let c = Client::new();
    let d = c.push_blob("a/b", b"some blob content").await;
    let r = c.get(&format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"some blob content");
    assert_eq!(r.header("docker-content-digest"), d);
    let r = c.send(Method::HEAD, &format!("/v2/a/b/blobs/{d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "17");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn blob_range_requests() {
    let c = Client::new();
    let d = c.push_blob("r", b"0123456789").await;
    let r = c.send(Method::GET, &format!("/v2/r/blobs/{d}"), &[("range", "bytes=2-5")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), "bytes 2-5/10");
    let r = c.send(Method::GET, &format!("/v2/r/blobs/{d}"), &[("range", "bytes=20-30")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn unknown_blob_is_blob_unknown() {
    let c = Client::new();
    let d = c.push_blob("has", b"x").await;
    // Known to the registry, but not in this repository.
    let r = c.get(&format!("/v2/other/blobs/{d}")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    let r = c.get("/v2/has/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
}

#[tokio::test]
async fn get_manifest_by_tag_and_by_digest() {
    let c = Client::new();
    let d = c.push_image("app", "v1", b"layer").await;
    for reference in ["v1", d.as_str()] {
        let r = c.get(&format!("/v2/app/manifests/{reference}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), oci::media::OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), d);
        assert_eq!(oci::Digest::of(&r.body).to_string(), d);
        let h = c.send(Method::HEAD, &format!("/v2/app/manifests/{reference}"), &[], Body::empty()).await;
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.header("content-length"), r.body.len().to_string());
    }
}

#[tokio::test]
async fn unknown_manifest_is_manifest_unknown() {
    let c = Client::new();
    c.push_image("app", "v1", b"layer").await;
    for reference in ["nope", "sha256:0000000000000000000000000000000000000000000000000000000000000000"] {
        let r = c.get(&format!("/v2/app/manifests/{reference}")).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    }
}

#[tokio::test]
async fn invalid_names_and_digests() {
    let c = Client::new();
    let r = c.get("/v2/Bad_Name/manifests/latest").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "NAME_INVALID"));
    let r = c.get("/v2/a/blobs/sha256:xyz").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    let r = c.get("/v2/a/..%2f../manifests/latest").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_reference_that_is_not_a_tag_is_manifest_unknown() {
    let c = Client::new();
    c.push_image("badref", "v1", b"l").await;
    for method in [Method::GET, Method::HEAD] {
        let r = c.send(method.clone(), "/v2/badref/manifests/.INVALID_MANIFEST_NAME", &[], Body::empty()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
        if method == Method::GET {
            assert_eq!(r.code(), "MANIFEST_UNKNOWN");
        }
    }
    // A PUT of such a tag is still refused as invalid.
    let m = c.image_manifest("badref", b"l", None).await;
    let r = c
        .send(
            Method::PUT,
            "/v2/badref/manifests/.INVALID_MANIFEST_NAME",
            &[("content-type", oci::media::OCI_MANIFEST)],
            m,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"));
}
