//! A cache in an S3 bucket (`type=s3,...`): being written (issue 15).

use super::spec::S3Location;
use super::CacheBackend;
use crate::error::{Error, Result};

/// A cache under `prefix` in an S3 bucket.
pub struct S3Cache;

impl S3Cache {
    /// Not available yet.
    pub fn new(_loc: &S3Location, _rt: &tokio::runtime::Handle) -> Result<Box<dyn CacheBackend>> {
        Err(Error::Invalid("type=s3 caches are not available in this build yet".into()))
    }
}
