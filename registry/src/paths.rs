//! The storage layout: the only place that knows where anything lives in the driver.
//!
//! ```text
//! /v2
//! ├── blobs/<alg>/<hex[0:2]>/<hex>/data                  content, shared by all repositories
//! ├── _gc/claims/<id>                                     digests a request is about to link (see crate::gc)
//! ├── _gc/claims/<id>.done                                that request has finished
//! ├── _gc/sweeping                                        digests a garbage collection is deciding about now
//! └── repositories/<name>/
//!     ├── _layers/<alg>/<hex>/link                        "this repository has this blob"
//!     ├── _manifests/revisions/<alg>/<hex>/link           "this repository has this manifest"
//!     ├── _manifests/tags/<tag>/current/link              tag -> manifest digest
//!     ├── _referrers/<alg>/<subject hex>/<alg>/<hex>/link manifests whose subject is <subject>
//!     └── _uploads/<id>/
//!         ├── startedat                                   RFC 3339 start time
//!         └── data                                        the bytes so far (driver may keep state beside it)
//! ```
//!
//! A link file holds a digest as text. Everything, upload sessions included, lives in the
//! driver, so registry processes sharing one driver serve the same content.

use oci::Digest;

const ROOT: &str = "/v2";

/// Where a blob's bytes live.
pub fn blob_data(d: &Digest) -> String {
    format!("{ROOT}/blobs/{}/{}/{}/data", d.algorithm().as_str(), &d.hex()[..2], d.hex())
}

/// The directory holding every blob of one algorithm (for garbage collection).
pub fn blobs_dir(alg: oci::Algorithm) -> String {
    format!("{ROOT}/blobs/{}", alg.as_str())
}

/// The directory of claims: what requests link, for garbage collection to spare.
pub fn gc_claims_dir() -> String {
    format!("{ROOT}/_gc/claims")
}

/// One request's claim (`done` false) or the record that it finished (`done` true).
pub fn gc_claim(id: &str, done: bool) -> String {
    format!("{ROOT}/_gc/claims/{id}{}", if done { ".done" } else { "" })
}

/// The digests garbage collection is deciding about; present only while it decides and deletes.
pub fn gc_sweeping() -> String {
    format!("{ROOT}/_gc/sweeping")
}

/// The directory holding all repositories (for the catalog).
pub fn repositories() -> String {
    format!("{ROOT}/repositories")
}

/// A repository's directory.
pub fn repository(name: &str) -> String {
    format!("{ROOT}/repositories/{name}")
}

/// The link that puts a blob into a repository.
pub fn layer_link(name: &str, d: &Digest) -> String {
    format!("{ROOT}/repositories/{name}/_layers/{}/{}/link", d.algorithm().as_str(), d.hex())
}

/// The link that puts a manifest into a repository.
pub fn revision_link(name: &str, d: &Digest) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/revisions/{}/{}/link", d.algorithm().as_str(), d.hex())
}

/// The directory of a repository's manifest revisions of one algorithm.
pub fn revisions_dir(name: &str, alg: oci::Algorithm) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/revisions/{}", alg.as_str())
}

/// The directory of a repository's tags.
pub fn tags_dir(name: &str) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags")
}

/// A tag's directory (deleting it deletes the tag).
pub fn tag_dir(name: &str, tag: &str) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags/{tag}")
}

/// The link naming the manifest a tag points at.
pub fn tag_link(name: &str, tag: &str) -> String {
    format!("{}/current/link", tag_dir(name, tag))
}

/// The directory listing the referrers of `subject`.
pub fn referrers_dir(name: &str, subject: &Digest) -> String {
    format!("{ROOT}/repositories/{name}/_referrers/{}/{}", subject.algorithm().as_str(), subject.hex())
}

/// The link recording that `manifest` refers to `subject`.
pub fn referrer_link(name: &str, subject: &Digest, manifest: &Digest) -> String {
    format!("{}/{}/{}/link", referrers_dir(name, subject), manifest.algorithm().as_str(), manifest.hex())
}

/// A repository's upload sessions.
pub fn uploads_dir(name: &str) -> String {
    format!("{ROOT}/repositories/{name}/_uploads")
}

/// An upload session's directory.
pub fn upload_dir(name: &str, id: &str) -> String {
    format!("{ROOT}/repositories/{name}/_uploads/{id}")
}

/// The bytes of an upload session.
pub fn upload_data(name: &str, id: &str) -> String {
    format!("{}/data", upload_dir(name, id))
}

/// When an upload session started.
pub fn upload_started(name: &str, id: &str) -> String {
    format!("{}/startedat", upload_dir(name, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_drawing() {
        let d: Digest = "sha256:abcdef0000000000000000000000000000000000000000000000000000000000".parse().unwrap();
        assert_eq!(blob_data(&d), format!("/v2/blobs/sha256/ab/{}/data", d.hex()));
        assert_eq!(tag_link("a/b", "v1"), "/v2/repositories/a/b/_manifests/tags/v1/current/link");
        assert_eq!(layer_link("a", &d), format!("/v2/repositories/a/_layers/sha256/{}/link", d.hex()));
    }
}
