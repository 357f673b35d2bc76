//! Content management: deleting tags, manifests, blobs and uploads.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::util::Client;

#[tokio::test]
async fn delete_tag_keeps_the_manifest() {
    let c = Client::new();
    let d = c.push_image("del", "v1", b"l").await;
    c.push_image("del", "v2", b"l").await;
    let r = c.send(Method::DELETE, "/v2/del/manifests/v1", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(c.get("/v2/del/manifests/v1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&format!("/v2/del/manifests/{d}")).await.status, StatusCode::OK);
    assert_eq!(c.get("/v2/del/tags/list").await.json()["tags"], serde_json::json!(["v2"]));
}

#[tokio::test]
async fn delete_manifest_by_digest_removes_its_tags() {
    let c = Client::new();
    let d = c.push_image("del", "v1", b"l").await;
    // Read it first, so that its body is in the registry's cache: a deleted manifest must
    // be unknown all the same.
    assert_eq!(c.get("/v2/del/manifests/v1").await.status, StatusCode::OK);
    let r = c.send(Method::DELETE, &format!("/v2/del/manifests/{d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = c.get(&format!("/v2/del/manifests/{d}")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    assert_eq!(c.get("/v2/del/manifests/v1").await.status, StatusCode::NOT_FOUND);
    let r = c.send(Method::DELETE, &format!("/v2/del/manifests/{d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_a_referrer_removes_it_from_the_referrers_list() {
    let c = Client::new();
    let base = c.push_image("r", "v1", b"b").await;
    let size = c.get("/v2/r/manifests/v1").await.body.len();
    let sig = c.image_manifest("r", b"s", Some((&base, size))).await;
    let sd = c.push_manifest("r", &oci::Digest::of(&sig).to_string(), &sig).await;
    assert_eq!(c.get(&format!("/v2/r/referrers/{base}")).await.json()["manifests"].as_array().unwrap().len(), 1);
    c.send(Method::DELETE, &format!("/v2/r/manifests/{sd}"), &[], Body::empty()).await;
    assert_eq!(c.get(&format!("/v2/r/referrers/{base}")).await.json()["manifests"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn delete_blob() {
    let c = Client::new();
    let d = c.push_blob("b", b"bye").await;
    let r = c.send(Method::DELETE, &format!("/v2/b/blobs/{d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = c.get(&format!("/v2/b/blobs/{d}")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    let r = c.send(Method::DELETE, &format!("/v2/b/blobs/{d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_upload() {
    let c = Client::new();
    let r = c.send(Method::POST, "/v2/u/blobs/uploads/", &[], Body::empty()).await;
    let loc = r.header("location").to_owned();
    c.send(Method::PATCH, &loc, &[], b"partial".to_vec()).await;
    let r = c.send(Method::DELETE, &loc, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c.get(&loc).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"));
}
