//! The berth registry: an OCI distribution-spec server.
//!
//! A request flows from an HTTP handler named after its spec endpoint, through a domain
//! layer (blobs, uploads, manifests, tags, one `paths` module that owns the storage
//! layout), down to a `StorageDriver` that sees only paths and bytes (fs, s3, memory).
//!
//! Nothing is served yet: the registry lands with its own issue, reusing the `oci`
//! crate's `Digest`, `Reference` grammar and manifest types.
