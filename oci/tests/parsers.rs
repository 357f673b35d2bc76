//! Property tests of the parsers that read what clients and registries send: arbitrary input
//! never panics, and whatever parses prints back to a string that parses to the same value.
//! `BERTH_PROPTEST_CASES` sets the number of cases (256 by default: seconds in the suite).

use oci::manifest::Manifest;
use oci::{Digest, Reference};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("BERTH_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_as_a_digest(s in any::<String>()) {
        if let Ok(d) = s.parse::<Digest>() {
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
    }

    #[test]
    fn digest_shaped_text(s in "(sha256|sha512|[a-z0-9+._-]{1,12}):[0-9a-fA-Fg=_+.-]{0,140}") {
        if let Ok(d) = s.parse::<Digest>() {
            prop_assert_eq!(d.to_string(), s.clone());
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
    }

    #[test]
    fn any_text_as_a_reference(s in any::<String>()) {
        if let Ok(r) = s.parse::<Reference>() {
            let again: Reference = r.to_string().parse().unwrap();
            prop_assert_eq!(again.to_string(), r.to_string());
        }
    }

    #[test]
    fn reference_shaped_text(
        domain in "(localhost(:[0-9]{1,5})?/|[a-z][a-z0-9-]{0,8}\\.[a-z]{2,4}(:[0-9]{1,5})?/|[A-Z:/.]{1,3})?",
        path in "[a-z0-9._-]{1,10}(/[a-z0-9._-]{1,10}){0,3}",
        tag in "(:[A-Za-z0-9_.-]{1,20})?",
        digest in "(@sha256:[0-9a-f]{64})?",
    ) {
        let s = format!("{domain}{path}{tag}{digest}");
        if let Ok(r) = s.parse::<Reference>() {
            let again: Reference = r.to_string().parse().unwrap();
            prop_assert_eq!(again.to_string(), r.to_string());
            prop_assert_eq!(again.familiar(), r.familiar());
        }
    }

    #[test]
    fn any_bytes_as_a_manifest(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        media in any::<Option<String>>(),
    ) {
        let _ = Manifest::parse(&bytes, media.as_deref());
    }

    #[test]
    fn json_shaped_manifests(
        schema in any::<i64>(),
        media in "(application/vnd\\.(oci|docker)\\.[a-z.+-]{0,40})?",
        layers in proptest::collection::vec(("[a-z0-9:]{0,72}", any::<i64>()), 0..4),
    ) {
        let layers: Vec<_> = layers
            .iter()
            .map(|(d, n)| {
                serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n })
            })
            .collect();
        let doc = serde_json::json!({
            "schemaVersion": schema,
            "mediaType": media,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:00", "size": 2 },
            "layers": layers,
            "manifests": layers,
        });
        let bytes = serde_json::to_vec(&doc).unwrap();
        let _ = Manifest::parse(&bytes, Some(&media));
        let _ = Manifest::parse(&bytes, None);
    }
}
