//! The berth builder: Dockerfile text in, OCI image out.
//!
//! Data flows one way: the Dockerfile is parsed into a syntax tree, typed into
//! `Instruction`s with variables expanded, converted into a neutral graph of `Op`s,
//! solved with a content-addressed cache (RUN executes through the runner on overlay
//! snapshots), and handed to an exporter (local image store, registry, tarballs).
//!
//! Nothing is built here yet: the builder lands with its own issue, on top of the
//! `oci` crate's content store and layer writer, which it will use unchanged.
