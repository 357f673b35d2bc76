//! `oci`: the vocabulary every berth crate shares.
//!
//! - [`Digest`] and [`Reference`]: validated names for content and for images.
//! - [`manifest`]: OCI manifests, indexes and configs through `oci-spec` (re-exported as
//!   [`spec`]), and Docker schema 2 documents, which share their shape.
//! - [`content`]: the content store, blobs by digest, written atomically and verified.
//! - [`layer`]: tar streams and their compression, diffID and digest in one pass.
//! - [`layout`] and [`archive`]: OCI image layouts (directory or tar) and `docker save`
//!   archives, both ways.
//! - [`index`]: image indexes made locally (multi-platform builds, `berth manifest`).
//! - [`store`]: the local image store under `$BERTH_ROOT`: the content store plus an index
//!   of image names.
//! - [`twin`]: compressed twins of plain layers, made before a push.
//! - [`client`]: the distribution client: pull and push against any registry, with
//!   docker's auth flows and credential files.
//!
//! Data flows from a tar stream or a registry, through the content store, to a named
//! image in the local store, and back out as an archive:
//!
//! ```text
//! rootfs tar --LayerWriter--> blob --ContentStore--> manifest --ImageStore (name)--> save/load
//! ```
//!
//! ```
//! let r: oci::Reference = "localhost:5000/app:v1".parse().unwrap();
//! assert_eq!(r.domain(), "localhost:5000");
//! ```

pub mod client;
pub mod content;
pub mod digest;
pub mod error;
pub mod index;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod media;
pub mod platform;
pub mod reference;
pub mod store;
pub mod twin;

pub use digest::{Algorithm, Digest};
pub use error::{Error, ErrorKind, Result};
pub use manifest::Manifest;
pub use oci_spec::image as spec;
pub use platform::Platform;
pub use reference::Reference;
pub use store::{Image, ImageRecord, ImageStore, Target};
