//! Content discovery: tags with pagination, referrers with filters, the catalog.

use axum::http::StatusCode;

use crate::util::Client;

#[tokio::test]
async fn tag_list_pagination_with_link_header() {
    let c = Client::new();
    for t in ["c", "a", "e", "b", "d"] {
        c.push_image("tags/repo", t, b"l").await;
    }
    let r = c.get("/v2/tags/repo/tags/list").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b", "c", "d", "e"]));
    assert_eq!(r.json()["name"], "tags/repo");
    let r = c.get("/v2/tags/repo/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(r.header("link"), "</v2/tags/repo/tags/list?n=2&last=b>; rel=\"next\"");
    let r = c.get("/v2/tags/repo/tags/list?n=2&last=b").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "d"]));
    let r = c.get("/v2/tags/repo/tags/list?n=2&last=d").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["e"]));
    assert_eq!(r.header("link"), "");
    let r = c.get("/v2/tags/repo/tags/list?n=0").await;
    assert_eq!(r.json()["tags"], serde_json::json!([]));
}

#[tokio::test]
async fn tags_of_an_unknown_repository() {
    let c = Client::new();
    let r = c.get("/v2/nobody/tags/list").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "NAME_UNKNOWN"));
}

#[tokio::test]
async fn referrers_with_artifact_type_filter() {
    let c = Client::new();
    let base = c.push_image("ref", "v1", b"base").await;
    let size = c.get("/v2/ref/manifests/v1").await.body.len();
    let mut sig: serde_json::Value =
        serde_json::from_slice(&c.image_manifest("ref", b"sig", Some((&base, size))).await).unwrap();
    sig["artifactType"] = "application/vnd.example.signature".into();
    sig["annotations"] = serde_json::json!({"org.example.signer": "ci"});
    let sig = serde_json::to_vec(&sig).unwrap();
    let sig_d = c.push_manifest("ref", &oci::Digest::of(&sig).to_string(), &sig).await;
    let sbom = c.image_manifest("ref", b"sbom", Some((&base, size))).await;
    let sbom_d = c.push_manifest("ref", &oci::Digest::of(&sbom).to_string(), &sbom).await;

    let r = c.get(&format!("/v2/ref/referrers/{base}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), oci::media::OCI_INDEX);
    let idx = r.json();
    let found: Vec<&str> = idx["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(found.len(), 2);
    assert!(found.contains(&sig_d.as_str()) && found.contains(&sbom_d.as_str()));
    let sig_desc = idx["manifests"].as_array().unwrap().iter().find(|m| m["digest"] == sig_d).unwrap();
    assert_eq!(sig_desc["artifactType"], "application/vnd.example.signature");
    assert_eq!(sig_desc["annotations"]["org.example.signer"], "ci");
    // Without artifactType, the config's media type stands in.
    let sbom_desc = idx["manifests"].as_array().unwrap().iter().find(|m| m["digest"] == sbom_d).unwrap();
    assert_eq!(sbom_desc["artifactType"], oci::media::OCI_CONFIG);

    let r = c.get(&format!("/v2/ref/referrers/{base}?artifactType=application/vnd.example.signature")).await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn referrers_of_a_digest_without_any() {
    let c = Client::new();
    c.push_image("ref", "v1", b"x").await;
    let r = c.get("/v2/ref/referrers/sha256:0000000000000000000000000000000000000000000000000000000000000000").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn catalog_with_pagination() {
    let c = Client::new();
    for repo in ["b", "a/x", "a", "c/d/e"] {
        c.push_image(repo, "t", b"l").await;
    }
    c.push_blob("only-blobs", b"no manifest").await;
    let r = c.get("/v2/_catalog").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["a", "a/x", "b", "c/d/e"]));
    let r = c.get("/v2/_catalog?n=2").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["a", "a/x"]));
    assert_eq!(r.header("link"), "</v2/_catalog?n=2&last=a/x>; rel=\"next\"");
    let r = c.get("/v2/_catalog?n=2&last=a/x").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["b", "c/d/e"]));
}

#[tokio::test]
async fn bad_page_sizes_are_400_pagination_number_invalid() {
    let c = Client::new();
    c.push_image("pages/repo", "v1", b"l").await;
    for path in ["/v2/pages/repo/tags/list", "/v2/_catalog"] {
        for n in ["-1", "99999999999999999999"] {
            let r = c.get(&format!("{path}?n={n}")).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
                "{path}?n={n}"
            );
        }
    }
}
