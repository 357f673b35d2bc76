//! The mirror on S3: two replicas over one bucket fill the same blob at once.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use bytes::Bytes;

use super::{Mirror, MirrorConfig};
use crate::api::AppState;
use crate::auth::Auth;
use crate::domain::{BodyStream, Registry, RepoName};
use crate::driver::s3::tests::TestS3;
use crate::driver::{MemoryDriver, S3Driver};

fn body(b: &[u8]) -> BodyStream {
    let b = Bytes::copy_from_slice(b);
    Box::pin(futures_util::stream::once(async move { Ok(b) }))
}

/// Serves `state` on 127.0.0.1; returns the address.
async fn serve(state: AppState) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::server::serve(listener, crate::api::app(state), None, std::future::pending()));
    addr
}

fn state(registry: Registry, mirror: Option<Mirror>) -> AppState {
    AppState {
        registry,
        auth: Arc::new(Auth::none()),
        metrics: Arc::default(),
        read_only: false,
        delete_enabled: false,
        mirror: mirror.map(Arc::new),
    }
}

/// An upstream holding `library/app:1.0` with one layer; returns its address and the layer.
async fn upstream() -> (std::net::SocketAddr, Vec<u8>, oci::Digest) {
    let registry = Registry::new(Arc::new(MemoryDriver::new()));
    let name: RepoName = "library/app".parse().unwrap();
    let layer: Vec<u8> = (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (ld, cd) = (oci::Digest::of(&layer), oci::Digest::of(config));
    registry.put_blob(&name, &ld, body(&layer)).await.unwrap();
    registry.put_blob(&name, &cd, body(config)).await.unwrap();
    let manifest =
        oci::manifest::oci_manifest((&cd, config.len() as u64), &[(oci::media::OCI_LAYER, &ld, layer.len() as u64)])
            .unwrap();
    registry
        .put_manifest_tagged(&name, "1.0", Some(oci::media::OCI_MANIFEST), Bytes::from(manifest), &[])
        .await
        .unwrap();
    (serve(state(registry, None)).await, layer, ld)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_bucket_fill_the_same_blob_and_leave_one_good_copy() {
    let (up, layer, digest) = upstream().await;
    let s3 = TestS3::start();
    let mut replicas = vec![];
    for _ in 0..2 {
        let registry = Registry::new(Arc::new(S3Driver::new(s3.config()).await.unwrap()));
        let mirror = Mirror::new(vec![MirrorConfig::parse_flag(&format!("http://{up}")).unwrap()], registry.clone());
        replicas.push(serve(state(registry, Some(mirror.await.unwrap()))).await);
    }
    let client = reqwest::Client::new();
    let pulls = replicas.iter().cycle().take(6).map(|r| {
        let client = client.clone();
        let digest = digest.clone();
        async move {
            let m = client
                .get(format!("http://{r}/v2/library/app/manifests/1.0"))
                .header("accept", oci::media::OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(m.status(), 200);
            let b = client.get(format!("http://{r}/v2/library/app/blobs/{digest}")).send().await.unwrap();
            assert_eq!(b.status(), 200);
            b.bytes().await.unwrap()
        }
    });
    for got in futures_util::future::join_all(pulls).await {
        assert!(got == layer, "every client of either replica gets the whole layer");
    }
    // A third process over the bucket reads one good blob.
    let reader = Registry::new(Arc::new(S3Driver::new(s3.config()).await.unwrap()));
    let name: RepoName = "library/app".parse().unwrap();
    assert_eq!(reader.blob_size(&name, &digest).await.unwrap(), layer.len() as u64);
    let stream = reader.blob_stream(&digest, 0).await.unwrap();
    let stored: Vec<u8> = futures_util::TryStreamExt::try_fold(stream, Vec::new(), |mut all, c| async move {
        all.extend_from_slice(&c);
        Ok(all)
    })
    .await
    .unwrap();
    assert_eq!(oci::Digest::of(&stored), digest);
}
