//! Push: every way a blob arrives, and manifests, with the errors for bad input.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use registry::driver::MemoryDriver;

use crate::util::Client;

fn digest(data: &[u8]) -> String {
    oci::Digest::of(data).to_string()
}

async fn start(c: &Client, repo: &str) -> String {
    let r = c.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), "0-0");
    assert!(!r.header("docker-upload-uuid").is_empty());
    r.header("location").to_owned()
}

#[tokio::test]
async fn monolithic_upload() {
    let c = Client::new();
    let d = digest(b"mono");
    let r = c.send(Method::POST, &format!("/v2/m/blobs/uploads/?digest={d}"), &[], b"mono".to_vec()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/m/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(c.get(&format!("/v2/m/blobs/{d}")).await.body, b"mono");
}

#[tokio::test]
async fn session_then_single_put() {
    let c = Client::new();
    let loc = start(&c, "s").await;
    let d = digest(b"whole");
    let r = c.send(Method::PUT, &format!("{loc}?digest={d}"), &[], b"whole".to_vec()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(c.get(&format!("/v2/s/blobs/{d}")).await.body, b"whole");
}

#[tokio::test]
async fn chunked_upload() {
    let c = Client::new();
    let loc = start(&c, "chunky").await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut offset = 0;
    for chunk in data.chunks(100_000) {
        let range = format!("{}-{}", offset, offset + chunk.len() - 1);
        let len = chunk.len().to_string();
        let r = c
            .send(
                Method::PATCH,
                &loc,
                &[("content-range", &range), ("content-length", &len), ("content-type", "application/octet-stream")],
                chunk.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&r.body));
        offset += chunk.len();
        assert_eq!(r.header("range"), format!("0-{}", offset - 1));
        let s = c.get(&loc).await;
        assert_eq!(s.status, StatusCode::NO_CONTENT);
        assert_eq!(s.header("range"), format!("0-{}", offset - 1));
    }
    let d = digest(&data);
    let r = c.send(Method::PUT, &format!("{loc}?digest={d}"), &[("content-length", "0")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(c.get(&format!("/v2/chunky/blobs/{d}")).await.body, data);
}

#[tokio::test]
async fn streamed_upload_without_content_range() {
    let c = Client::new();
    let loc = start(&c, "stream").await;
    let r = c.send(Method::PATCH, &loc, &[], b"streamed ".to_vec()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = c.send(Method::PATCH, &loc, &[], b"bytes".to_vec()).await;
    assert_eq!(r.header("range"), "0-13");
    let d = digest(b"streamed bytes");
    assert_eq!(c.send(Method::PUT, &format!("{loc}?digest={d}"), &[], Body::empty()).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn out_of_order_chunk_is_416() {
    let c = Client::new();
    let loc = start(&c, "ooo").await;
    c.send(Method::PATCH, &loc, &[("content-range", "0-2"), ("content-length", "3")], b"abc".to_vec()).await;
    let r = c.send(Method::PATCH, &loc, &[("content-range", "5-7"), ("content-length", "3")], b"fgh".to_vec()).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("range"), "0-2", "tells the client where to resume");
    let r = c.send(Method::PATCH, &loc, &[("content-range", "3-5"), ("content-length", "2")], b"de".to_vec()).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "range and length disagree");
    // The upload is intact and continues in order.
    let r = c.send(Method::PATCH, &loc, &[("content-range", "3-4"), ("content-length", "2")], b"de".to_vec()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let d = digest(b"abcde");
    assert_eq!(c.send(Method::PUT, &format!("{loc}?digest={d}"), &[], Body::empty()).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn non_ascii_content_range_is_416_and_nothing_is_appended() {
    let c = Client::new();
    let loc = start(&c, "nonascii").await;
    c.send(Method::PATCH, &loc, &[("content-range", "0-2"), ("content-length", "3")], b"abc".to_vec()).await;
    let r =
        c.send(Method::PATCH, &loc, &[("content-range", "3-4\u{e9}"), ("content-length", "2")], b"xx".to_vec()).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let s = c.get(&loc).await;
    assert_eq!(s.header("range"), "0-2", "the refused chunk was not appended");
}

#[tokio::test]
async fn wrong_digest_is_refused_and_nothing_is_stored() {
    let c = Client::new();
    let loc = start(&c, "w").await;
    let claimed = digest(b"claimed");
    let r = c.send(Method::PUT, &format!("{loc}?digest={claimed}"), &[], b"actual".to_vec()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    assert_eq!(c.get(&format!("/v2/w/blobs/{claimed}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&format!("/v2/w/blobs/{}", digest(b"actual"))).await.status, StatusCode::NOT_FOUND);
    let r = c.send(Method::POST, &format!("/v2/w/blobs/uploads/?digest={claimed}"), &[], b"actual".to_vec()).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = c.send(Method::PUT, &loc, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "PUT without digest");
}

#[tokio::test]
async fn unknown_upload_id() {
    let c = Client::new();
    for path in ["/v2/u/blobs/uploads/6a1b8c1e-1111-4222-8333-444455556666", "/v2/u/blobs/uploads/not-a-uuid"] {
        let r = c.get(path).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"));
        let r = c.send(Method::PATCH, path, &[], b"x".to_vec()).await;
        assert_eq!(r.code(), "BLOB_UPLOAD_UNKNOWN");
    }
}

#[tokio::test]
async fn sha512_blobs() {
    let c = Client::new();
    let mut h = oci::Algorithm::Sha512.hasher();
    h.update(b"five twelve");
    let d = h.finish().to_string();
    let r = c.send(Method::POST, &format!("/v2/x/blobs/uploads/?digest={d}"), &[], b"five twelve".to_vec()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(c.get(&format!("/v2/x/blobs/{d}")).await.body, b"five twelve");
    let loc = start(&c, "x").await;
    c.send(Method::PATCH, &loc, &[], b"five ".to_vec()).await;
    let r = c.send(Method::PUT, &format!("{loc}?digest={d}"), &[], b"twelve".to_vec()).await;
    assert_eq!(r.status, StatusCode::CREATED, "sha512 verified by re-reading the upload");
}

#[tokio::test]
async fn empty_blob() {
    let c = Client::new();
    let d = digest(b"");
    let r = c
        .send(Method::POST, &format!("/v2/e/blobs/uploads/?digest={d}"), &[("content-length", "0")], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = c.get(&format!("/v2/e/blobs/{d}")).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn cross_repo_mount() {
    let c = Client::new();
    let d = c.push_blob("source/repo", b"shared layer").await;
    let r = c
        .send(Method::POST, &format!("/v2/target/blobs/uploads/?mount={d}&from=source/repo"), &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/target/blobs/{d}"));
    assert_eq!(c.get(&format!("/v2/target/blobs/{d}")).await.body, b"shared layer");
}

#[tokio::test]
async fn cross_repo_mount_without_from() {
    let c = Client::new();
    let d = c.push_blob("somewhere", b"known blob").await;
    let r = c.send(Method::POST, &format!("/v2/elsewhere/blobs/uploads/?mount={d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/elsewhere/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(c.get(&format!("/v2/elsewhere/blobs/{d}")).await.body, b"known blob");
}

#[tokio::test]
async fn mount_of_a_missing_blob_falls_back_to_a_session() {
    let c = Client::new();
    let d = digest(b"never pushed");
    let r = c.send(Method::POST, &format!("/v2/t/blobs/uploads/?mount={d}&from=nowhere"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.header("location").starts_with("/v2/t/blobs/uploads/"));
}

#[tokio::test]
async fn push_manifest_by_tag_and_digest() {
    let c = Client::new();
    let m = c.image_manifest("p", b"layer", None).await;
    let d = digest(&m);
    let r = c
        .send(Method::PUT, &format!("/v2/p/manifests/{d}"), &[("content-type", oci::media::OCI_MANIFEST)], m.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/p/manifests/{d}"));
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(c.push_manifest("p", "latest", &m).await, d);
    // A digest reference that does not match the body.
    let wrong = digest(b"other");
    let r = c
        .send(Method::PUT, &format!("/v2/p/manifests/{wrong}"), &[("content-type", oci::media::OCI_MANIFEST)], m)
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn docker_schema2_manifests_and_lists() {
    let c = Client::new();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = c.push_blob("d", config).await;
    let ld = c.push_blob("d", b"docker layer").await;
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": oci::media::DOCKER_MANIFEST,
        "config": {"mediaType": oci::media::DOCKER_CONFIG, "size": config.len(), "digest": cd},
        "layers": [{"mediaType": oci::media::DOCKER_LAYER_GZIP, "size": 12, "digest": ld}],
    });
    let body = serde_json::to_vec(&m).unwrap();
    let r =
        c.send(Method::PUT, "/v2/d/manifests/v1", &[("content-type", oci::media::DOCKER_MANIFEST)], body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(c.get("/v2/d/manifests/v1").await.header("content-type"), oci::media::DOCKER_MANIFEST);
    let list = serde_json::json!({
        "schemaVersion": 2, "mediaType": oci::media::DOCKER_MANIFEST_LIST,
        "manifests": [{"mediaType": oci::media::DOCKER_MANIFEST, "size": body.len(), "digest": digest(&body),
                        "platform": {"architecture": "amd64", "os": "linux"}}],
    });
    let r = c
        .send(
            Method::PUT,
            "/v2/d/manifests/multi",
            &[("content-type", oci::media::DOCKER_MANIFEST_LIST)],
            serde_json::to_vec(&list).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(c.get("/v2/d/manifests/multi").await.header("content-type"), oci::media::DOCKER_MANIFEST_LIST);
}

#[tokio::test]
async fn manifest_with_a_missing_blob_is_refused() {
    let c = Client::new();
    let m = c.image_manifest("q", b"layer", None).await;
    let fresh = Client::new();
    let r = fresh.send(Method::PUT, "/v2/q/manifests/v1", &[("content-type", oci::media::OCI_MANIFEST)], m).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
}

#[tokio::test]
async fn invalid_manifests_are_refused() {
    let c = Client::new();
    for (body, ct) in [("not json", oci::media::OCI_MANIFEST), (r#"{"schemaVersion":1}"#, oci::media::OCI_MANIFEST)] {
        let r = c.send(Method::PUT, "/v2/bad/manifests/v1", &[("content-type", ct)], body).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"));
    }
    let r = c.send(Method::PUT, "/v2/bad/manifests/bad$tag", &[("content-type", oci::media::OCI_MANIFEST)], "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversized_manifest_is_413_and_large_one_is_accepted() {
    let c = Client::new();
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = c.send(Method::PUT, "/v2/big/manifests/v1", &[("content-type", oci::media::OCI_MANIFEST)], big).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"));
    // A manifest just under the limit, made large by an annotation, is fine.
    let mut m: serde_json::Value = serde_json::from_slice(&c.image_manifest("big", b"l", None).await).unwrap();
    m["annotations"] = serde_json::json!({"pad": "x".repeat(4 * 1024 * 1024 - 2048)});
    let body = serde_json::to_vec(&m).unwrap();
    assert!(body.len() < 4 * 1024 * 1024);
    c.push_manifest("big", "v1", &body).await;
}

#[tokio::test]
async fn manifest_with_subject_answers_oci_subject() {
    let c = Client::new();
    let base = c.push_image("sub", "v1", b"base").await;
    let base_len = c.get("/v2/sub/manifests/v1").await.body.len();
    let m = c.image_manifest("sub", b"signature", Some((&base, base_len))).await;
    let r = c
        .send(
            Method::PUT,
            &format!("/v2/sub/manifests/{}", digest(&m)),
            &[("content-type", oci::media::OCI_MANIFEST)],
            m,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("oci-subject"), base);
}

#[tokio::test]
async fn upload_started_on_one_replica_finishes_on_another() {
    let shared = Arc::new(MemoryDriver::new());
    let a = Client::over(shared.clone());
    let b = Client::over(shared);
    let loc = start(&a, "ha").await;
    a.send(Method::PATCH, &loc, &[("content-range", "0-4"), ("content-length", "5")], b"hello".to_vec()).await;
    // Replica b has no running hash for this upload: it verifies by re-reading.
    assert_eq!(b.get(&loc).await.header("range"), "0-4");
    let d = digest(b"hello world");
    let r = b.send(Method::PUT, &format!("{loc}?digest={d}"), &[], b" world".to_vec()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(a.get(&format!("/v2/ha/blobs/{d}")).await.body, b"hello world");
}

#[tokio::test]
async fn a_manifest_whose_media_type_disagrees_with_its_content_type_is_refused() {
    let c = Client::new();
    let m = c.image_manifest("ct", b"layer", None).await;
    let uri = "/v2/ct/manifests/v1";
    // An image manifest pushed as an index (CVE-2021-41190): clients would read it two ways.
    let r = c.send(Method::PUT, uri, &[("content-type", oci::media::OCI_INDEX)], m.clone()).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".to_owned()));
    assert!(String::from_utf8_lossy(&r.body).contains("is not its Content-Type"), "{:?}", r.body);
    assert_eq!(c.get(uri).await.status, StatusCode::NOT_FOUND, "nothing was stored");
    // The same bytes pushed as what they say they are, with a parameter on the type.
    let typed = format!("{}; charset=utf-8", oci::media::OCI_MANIFEST);
    let r = c.send(Method::PUT, uri, &[("content-type", typed.as_str())], m).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
}
