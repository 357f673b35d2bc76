//! Content management: deleting tags, manifests, blobs and uploads. Deletes need
//! `--delete-enabled` (distribution's `storage.delete.enabled`); without it they are refused.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::util::Client;

#[tokio::test]
async fn delete_tag_keeps_the_manifest() {
    let c = Client::new().deleting();
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
    let c = Client::new().deleting();
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
    let c = Client::new().deleting();
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
    let c = Client::new().deleting();
    let d = c.push_blob("b", b"bye").await;
    let r = c.send(Method::DELETE, &format!("/v2/b/blobs/{d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = c.get(&format!("/v2/b/blobs/{d}")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    let r = c.send(Method::DELETE, &format!("/v2/b/blobs/{d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// On a registry with deletes off (the default): distribution lets a client cancel its upload.
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

/// The default refuses every content delete as distribution does (`storage.delete.enabled`
/// unset): 405 UNSUPPORTED with the spec's message, and nothing goes, even a missing target.
#[tokio::test]
async fn deletes_are_refused_by_default_and_delete_nothing() {
    let c = Client::new();
    let d = c.push_image("keep", "v1", b"l").await;
    let blob = c.push_blob("keep", b"a blob").await;
    let missing = oci::Digest::of(b"never pushed").to_string();
    for uri in [
        format!("/v2/keep/manifests/{d}"),
        "/v2/keep/manifests/v1".to_owned(),
        format!("/v2/keep/blobs/{blob}"),
        format!("/v2/keep/manifests/{missing}"),
        "/v2/nothing/manifests/latest".to_owned(),
    ] {
        let r = c.send(Method::DELETE, &uri, &[], Body::empty()).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        let e = &r.json()["errors"][0];
        assert_eq!(
            (e["code"].as_str(), e["message"].as_str()),
            (Some("UNSUPPORTED"), Some("The operation is unsupported."))
        );
    }
    assert_eq!(c.get("/v2/keep/manifests/v1").await.status, StatusCode::OK);
    assert_eq!(c.get(&format!("/v2/keep/manifests/{d}")).await.status, StatusCode::OK);
    assert_eq!(c.get(&format!("/v2/keep/blobs/{blob}")).await.body, b"a blob");
}

/// Read-only mode still answers first, with its own message, whether deletes are on or off.
#[tokio::test]
async fn read_only_refuses_deletes_even_when_enabled() {
    let mut c = Client::new().deleting();
    let d = c.push_image("ro", "v1", b"l").await;
    c.state.read_only = true;
    let r = c.send(Method::DELETE, &format!("/v2/ro/manifests/{d}"), &[], Body::empty()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("read-only"));
    assert_eq!(c.get(&format!("/v2/ro/manifests/{d}")).await.status, StatusCode::OK);
}
