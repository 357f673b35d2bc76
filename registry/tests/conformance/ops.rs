//! Operations: metrics, health, request ids, garbage collection, restarts.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use registry::driver::{FsDriver, MemoryDriver};

use crate::util::Client;

#[tokio::test]
async fn metrics_count_requests_and_bytes() {
    let c = Client::new();
    c.push_image("m", "v1", b"0123456789").await;
    c.get("/v2/m/manifests/v1").await;
    c.get("/v2/m/manifests/nope").await;
    let r = c.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains("berth_registry_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("berth_registry_requests_total{route=\"manifest\",method=\"GET\",status=\"404\"} 1"));
    assert!(text.contains("berth_registry_bytes_received_total{route=\"upload\"}"));
    assert!(text.contains("berth_registry_upload_finish_seconds_count"));
}

/// The value of one counter line of `/metrics`.
async fn counter(c: &Client, line: &str) -> u64 {
    let text = String::from_utf8(c.get("/metrics").await.body).unwrap();
    let found = text.lines().find_map(|l| l.strip_prefix(line)).unwrap_or_else(|| panic!("{line} in {text}"));
    found.trim().parse().unwrap()
}

#[tokio::test]
async fn metrics_count_the_bytes_of_bodies_without_a_content_length() {
    let c = Client::new();
    // Monolithic, with no Content-Length header: counted as read.
    let first = vec![7u8; 10_000];
    let d = c.push_blob("m", &first).await;
    assert_eq!(counter(&c, "berth_registry_bytes_received_total{route=\"upload\"}").await, 10_000);
    assert_eq!(counter(&c, "berth_registry_bytes_sent_total{route=\"upload\"}").await, 0, "each route has both");
    // A streamed PATCH, as docker and skopeo send it (chunked: no length known up front).
    let r = c.send(Method::POST, "/v2/m/blobs/uploads/", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").to_owned();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        (0..3u8).map(|i| Ok(bytes::Bytes::from(vec![i; 5_000]))).collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let r = c.send(Method::PATCH, &location, &[("content-type", "application/octet-stream")], body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(counter(&c, "berth_registry_bytes_received_total{route=\"upload\"}").await, 25_000);
    // Sent: the blob's bytes, and nothing for a HEAD.
    assert_eq!(c.get(&format!("/v2/m/blobs/{d}")).await.body.len(), 10_000);
    c.send(Method::HEAD, &format!("/v2/m/blobs/{d}"), &[], Body::empty()).await;
    assert_eq!(counter(&c, "berth_registry_bytes_sent_total{route=\"blob\"}").await, 10_000);
}

#[tokio::test]
async fn health_and_request_ids() {
    let c = Client::new();
    let r = c.get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-request-id").len(), 36);
    let r = c.send(Method::GET, "/v2/", &[("x-request-id", "trace-me")], Body::empty()).await;
    assert_eq!(r.header("x-request-id"), "trace-me");
}

#[tokio::test]
async fn gc_sweeps_untagged_manifests_and_unreferenced_blobs() {
    let driver = Arc::new(MemoryDriver::new());
    let c = Client::over(driver.clone()).deleting();
    let keep = c.push_image("gc", "keep", b"kept layer").await;
    let gone = c.push_image("gc", "gone", b"doomed layer").await;
    c.send(Method::DELETE, "/v2/gc/manifests/gone", &[], Body::empty()).await;
    let stray = c.push_blob("gc", b"never referenced").await;
    let registry = c.state.registry.clone();

    // Within the grace period nothing goes: a push might be running.
    let r = registry::gc::collect(&registry, false, Duration::from_secs(3600)).await.unwrap();
    assert!(r.blobs.is_empty() && r.manifests.is_empty());
    // A dry run reports without deleting.
    let dry = registry::gc::collect(&registry, true, Duration::ZERO).await.unwrap();
    assert_eq!(dry.manifests.len(), 1);
    assert_eq!(c.get(&format!("/v2/gc/manifests/{gone}")).await.status, StatusCode::OK);

    let r = registry::gc::collect(&registry, false, Duration::ZERO).await.unwrap();
    assert_eq!(r.manifests, vec![("gc".to_owned(), gone.parse().unwrap())]);
    let swept: Vec<String> = r.blobs.iter().map(ToString::to_string).collect();
    assert!(swept.contains(&stray), "{swept:?}");
    assert!(swept.contains(&oci::Digest::of(b"doomed layer").to_string()));
    assert!(!swept.contains(&oci::Digest::of(b"kept layer").to_string()));
    assert_eq!(c.get("/v2/gc/manifests/keep").await.status, StatusCode::OK);
    assert_eq!(c.get(&format!("/v2/gc/manifests/{keep}")).await.status, StatusCode::OK);
    let layer = oci::Digest::of(b"kept layer");
    assert_eq!(c.get(&format!("/v2/gc/blobs/{layer}")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn gc_purges_abandoned_uploads_and_keeps_recent_ones() {
    let c = Client::new();
    let r = c.send(Method::POST, "/v2/up/blobs/uploads/", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.headers.get("location").and_then(|v| v.to_str().ok()).unwrap().to_owned();
    let registry = c.state.registry.clone();
    let aged = |upload_age| registry::gc::GcOptions {
        dry_run: false,
        grace: Duration::ZERO,
        upload_age,
        mirrored: Vec::new(),
    };
    // A session written to just now is not abandoned.
    let r = registry::gc::collect_with(&registry, aged(Duration::from_secs(3600))).await.unwrap();
    assert!(r.uploads.is_empty(), "{:?}", r.uploads);
    assert_eq!(c.get(&location).await.status, StatusCode::NO_CONTENT);
    // Past the upload age it is purged, and the client is told it is unknown.
    let r = registry::gc::collect_with(&registry, aged(Duration::ZERO)).await.unwrap();
    assert_eq!(r.uploads.len(), 1, "{:?}", r.uploads);
    assert_eq!(r.uploads[0].0, "up");
    let gone = c.get(&location).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&gone.body).contains("BLOB_UPLOAD_UNKNOWN"));
}

#[tokio::test]
async fn gc_keeps_children_of_tagged_indexes_and_referrers() {
    let c = Client::new();
    let child = c.image_manifest("gi", b"arm layer", None).await;
    let child_d = c.push_manifest("gi", &oci::Digest::of(&child).to_string(), &child).await;
    let idx = serde_json::json!({"schemaVersion": 2, "mediaType": oci::media::OCI_INDEX,
        "manifests": [{"mediaType": oci::media::OCI_MANIFEST, "size": child.len(), "digest": child_d}]});
    let idx = serde_json::to_vec(&idx).unwrap();
    let r = c.send(Method::PUT, "/v2/gi/manifests/multi", &[("content-type", oci::media::OCI_INDEX)], idx).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let sig = c.image_manifest("gi", b"sig", Some((&child_d, child.len()))).await;
    let sig_d = c.push_manifest("gi", &oci::Digest::of(&sig).to_string(), &sig).await;
    let r = registry::gc::collect(&c.state.registry, false, Duration::ZERO).await.unwrap();
    assert!(r.manifests.is_empty(), "{:?}", r.manifests);
    assert_eq!(c.get(&format!("/v2/gi/manifests/{child_d}")).await.status, StatusCode::OK);
    assert_eq!(c.get(&format!("/v2/gi/manifests/{sig_d}")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn resume_after_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Client::over(Arc::new(FsDriver::new(dir.path()).unwrap()));
    let r = first.send(Method::POST, "/v2/resume/blobs/uploads/", &[], Body::empty()).await;
    let loc = r.header("location").to_owned();
    first.send(Method::PATCH, &loc, &[("content-range", "0-5"), ("content-length", "6")], b"first ".to_vec()).await;
    drop(first);
    // A new process over the same directory: the session and its bytes are there.
    let second = Client::over(Arc::new(FsDriver::new(dir.path()).unwrap()));
    let r = second.get(&loc).await;
    assert_eq!((r.status, r.header("range")), (StatusCode::NO_CONTENT, "0-5"));
    second.send(Method::PATCH, &loc, &[("content-range", "6-11"), ("content-length", "6")], b"second".to_vec()).await;
    let d = oci::Digest::of(b"first second");
    let r = second.send(Method::PUT, &format!("{loc}?digest={d}"), &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(second.get(&format!("/v2/resume/blobs/{d}")).await.body, b"first second");
    // No upload directory is left behind.
    let uploads = dir.path().join("v2/repositories/resume/_uploads");
    assert_eq!(std::fs::read_dir(uploads).map(|d| d.count()).unwrap_or(0), 0);
}
