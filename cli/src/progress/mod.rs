//! What long work shows as it goes, one module per kind of work:
//! [`transfer`] (pull and push: a table of blobs) and [`build`] (BuildKit's tty, plain,
//! rawjson and quiet displays of a build's steps).

pub mod build;
pub mod transfer;

pub use transfer::{Display, Mode};
