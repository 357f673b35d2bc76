//! One function per distribution-spec endpoint; each turns HTTP into a domain call and back.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use oci::Digest;
use serde_json::json;

use super::{body_stream, AppState};
use crate::auth::Action;
use crate::domain::{paginate, parse_digest, RepoName, UploadId};
use crate::error::{ErrorCode, RegistryError, Result};

/// Reads one query parameter, percent-decoded.
pub fn query_param(uri: &Uri, key: &str) -> Option<String> {
    query_params(uri).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn query_params(uri: &Uri) -> Vec<(String, String)> {
    let Some(q) = uri.query() else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn response(status: StatusCode, headers: &[(&'static str, String)], body: Body) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "building a response");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

/// `GET /v2/`: the client's check that this is a v2 registry (and that it may use it).
pub fn api_version_check() -> Response {
    response(
        StatusCode::OK,
        &[("Docker-Distribution-API-Version", "registry/2.0".into()), ("Content-Type", "application/json".into())],
        Body::from("{}"),
    )
}

/// Parses `Range: bytes=a-b` against a blob of `size` bytes.
fn parse_range(h: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>> {
    let Some(v) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let bad = || {
        RegistryError::new(ErrorCode::RangeInvalid, format!("unsatisfiable range {v:?}"))
            .with_header("Content-Range", format!("bytes */{size}"))
    };
    let spec = v.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| bad())?;
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (a, "") => (a.parse().map_err(|_| bad())?, size.saturating_sub(1)),
        (a, b) => (a.parse().map_err(|_| bad())?, b.parse::<u64>().map_err(|_| bad())?.min(size.saturating_sub(1))),
    };
    if start > end || start >= size {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`, with `Range` support.
pub async fn get_blob(
    state: &AppState,
    name: &RepoName,
    digest: &Digest,
    h: &HeaderMap,
    head: bool,
) -> Result<Response> {
    use futures_util::StreamExt;
    let size = state.registry.blob_size(name, digest).await?;
    let range = parse_range(h, size)?;
    let (status, start, len) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut headers = vec![
        ("Docker-Content-Digest", digest.to_string()),
        ("Content-Type", "application/octet-stream".into()),
        ("Content-Length", len.to_string()),
        ("Accept-Ranges", "bytes".into()),
        ("ETag", format!("\"{digest}\"")),
        ("Cache-Control", "max-age=31536000".into()),
    ];
    if range.is_some() {
        headers.push(("Content-Range", format!("bytes {start}-{}/{size}", start + len - 1)));
    }
    if head {
        return Ok(response(status, &headers, Body::empty()));
    }
    let stream = state.registry.blob_stream(digest, start).await?;
    // Stop after `len` bytes: the stream runs to the end of the blob.
    let limited = stream.scan(len, |left, chunk| {
        std::future::ready(match chunk {
            Ok(_) if *left == 0 => None,
            Ok(mut c) => {
                if c.len() as u64 > *left {
                    c.truncate(*left as usize);
                }
                *left -= c.len() as u64;
                Some(Ok(c))
            }
            Err(e) => Some(Err(e)),
        })
    });
    Ok(response(status, &headers, Body::from_stream(limited)))
}

/// `DELETE /v2/<name>/blobs/<digest>`.
pub async fn delete_blob(state: &AppState, name: &RepoName, digest: &Digest) -> Result<Response> {
    state.registry.delete_blob(name, digest).await?;
    Ok(response(StatusCode::ACCEPTED, &[("Content-Length", "0".into())], Body::empty()))
}

fn upload_headers(name: &RepoName, id: &UploadId, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("Range", crate::domain::range_header(size)),
        ("Docker-Upload-UUID", id.to_string()),
        ("Content-Length", "0".into()),
    ]
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    response(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/blobs/{digest}")),
            ("Docker-Content-Digest", digest.to_string()),
            ("Content-Length", "0".into()),
        ],
        Body::empty(),
    )
}

/// `POST /v2/<name>/blobs/uploads/`: a cross-repository mount (`mount`, `from`), a
/// monolithic upload (`digest`), or a new session.
pub async fn start_upload(state: &AppState, name: &RepoName, req: Request) -> Result<Response> {
    let uri = req.uri().clone();
    if let Some(mount) = query_param(&uri, "mount") {
        let digest = parse_digest(&mount)?;
        let from = query_param(&uri, "from").map(|f| f.parse::<RepoName>()).transpose()?;
        let headers = req.headers().clone();
        let auth = state.auth.clone();
        let may_pull = move |repo: &RepoName| auth.authorize(&headers, &[(repo.clone(), Action::Pull)], false).is_ok();
        let check: Option<&(dyn Fn(&RepoName) -> bool + Send + Sync)> =
            if state.auth.is_off() { None } else { Some(&may_pull) };
        if state.registry.mount_blob(name, &digest, from.as_ref(), check).await? {
            return Ok(blob_created(name, &digest));
        }
    } else if let Some(d) = query_param(&uri, "digest") {
        let digest = parse_digest(&d)?;
        state.registry.put_blob(name, &digest, body_stream(req.into_body())).await?;
        return Ok(blob_created(name, &digest));
    }
    let id = state.registry.start_upload(name).await?;
    Ok(response(StatusCode::ACCEPTED, &upload_headers(name, &id, 0), Body::empty()))
}

/// Parses `Content-Range: <start>-<end>` (with or without `bytes=`).
fn content_range(h: &HeaderMap) -> Result<Option<(u64, u64)>> {
    let Some(raw) = h.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    // A non-ASCII value is as malformed as any other: refused, never ignored.
    let v = raw.to_str().map_err(|_| RegistryError::new(ErrorCode::RangeInvalid, "invalid Content-Range"))?;
    let bad = || RegistryError::new(ErrorCode::RangeInvalid, format!("invalid Content-Range {v:?}"));
    let v2 = v.trim_start_matches("bytes=").trim_start_matches("bytes ");
    let (a, b) = v2.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) =
        (a.trim().parse().map_err(|_| bad())?, b.trim().split('/').next().unwrap_or("").parse().map_err(|_| bad())?);
    if b < a {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: a chunk, in order (416 otherwise), or a stream.
pub async fn patch_upload(state: &AppState, name: &RepoName, id: &UploadId, req: Request) -> Result<Response> {
    let range = content_range(req.headers())?;
    if let (Some((a, b)), Some(len)) =
        (range, req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()))
    {
        if b - a + 1 != len {
            return Err(RegistryError::new(
                ErrorCode::RangeInvalid,
                format!("Content-Range {a}-{b} does not match Content-Length {len}"),
            ));
        }
    }
    let size = state.registry.append_upload(name, id, range.map(|r| r.0), body_stream(req.into_body())).await?;
    Ok(response(StatusCode::ACCEPTED, &upload_headers(name, id, size), Body::empty()))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: the last chunk (maybe empty) and the digest.
pub async fn put_upload(state: &AppState, name: &RepoName, id: &UploadId, req: Request) -> Result<Response> {
    let digest = query_param(req.uri(), "digest")
        .ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid, "digest query parameter is required"))?;
    let digest = parse_digest(&digest)?;
    if let Some((start, _)) = content_range(req.headers())? {
        let size = state.registry.upload_size(name, id).await?;
        if start != size {
            return Err(RegistryError::new(
                ErrorCode::RangeInvalid,
                format!("chunk starts at {start}, upload is at {size}"),
            ));
        }
    }
    state.registry.finish_upload(name, id, &digest, Some(body_stream(req.into_body()))).await?;
    Ok(blob_created(name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how far the upload got.
pub async fn get_upload_status(state: &AppState, name: &RepoName, id: &UploadId) -> Result<Response> {
    let size = state.registry.upload_size(name, id).await?;
    Ok(response(StatusCode::NO_CONTENT, &upload_headers(name, id, size), Body::empty()))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`.
pub async fn delete_upload(state: &AppState, name: &RepoName, id: &UploadId) -> Result<Response> {
    state.registry.cancel_upload(name, id).await?;
    Ok(response(StatusCode::NO_CONTENT, &[("Content-Length", "0".into())], Body::empty()))
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
pub async fn get_manifest(state: &AppState, name: &RepoName, reference: &str, head: bool) -> Result<Response> {
    let m = state.registry.get_manifest(name, reference).await?;
    let headers = [
        ("Content-Type", m.media_type.clone()),
        ("Docker-Content-Digest", m.digest.to_string()),
        ("Content-Length", m.bytes.len().to_string()),
        ("ETag", format!("\"{}\"", m.digest)),
    ];
    let body = if head { Body::empty() } else { Body::from(m.bytes) };
    Ok(response(StatusCode::OK, &headers, body))
}

/// `PUT /v2/<name>/manifests/<reference>`, with optional `tag` parameters (each answered
/// by an `OCI-Tag` header).
pub async fn put_manifest(state: &AppState, name: &RepoName, reference: &str, req: Request) -> Result<Response> {
    let mut tags: Vec<String> =
        query_params(req.uri()).into_iter().filter(|(k, _)| k == "tag").map(|(_, t)| t).collect();
    crate::domain::check_tag_count(tags.len())?;
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let limit = oci::manifest::MAX_MANIFEST_SIZE;
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| RegistryError::new(ErrorCode::TooLarge, "manifest larger than 4 MiB"))?;
    let (digest, subject) =
        state.registry.put_manifest_tagged(name, reference, content_type.as_deref(), bytes, &tags).await?;
    let mut headers = vec![
        ("Location", format!("/v2/{name}/manifests/{digest}")),
        ("Docker-Content-Digest", digest.to_string()),
        ("Content-Length", "0".into()),
    ];
    headers.extend(tags.into_iter().map(|t| ("OCI-Tag", t)));
    if let Some(s) = subject {
        headers.push(("OCI-Subject", s.to_string()));
    }
    Ok(response(StatusCode::CREATED, &headers, Body::empty()))
}

/// `DELETE /v2/<name>/manifests/<reference>`: a tag, or a manifest by digest.
pub async fn delete_manifest(state: &AppState, name: &RepoName, reference: &str) -> Result<Response> {
    state.registry.delete_manifest(name, reference).await?;
    Ok(response(StatusCode::ACCEPTED, &[("Content-Length", "0".into())], Body::empty()))
}

fn page_params(uri: &Uri) -> Result<(Option<usize>, Option<String>)> {
    let n = query_param(uri, "n")
        .map(|n| {
            n.parse::<usize>().map_err(|_| {
                RegistryError::new(ErrorCode::PaginationNumberInvalid, format!("invalid page size n={n:?}"))
            })
        })
        .transpose()?;
    Ok((n, query_param(uri, "last")))
}

fn link_header(path: &str, n: Option<usize>, last: Option<&String>) -> Option<(&'static str, String)> {
    let (n, last) = (n?, last?);
    Some(("Link", format!("<{path}?n={n}&last={last}>; rel=\"next\"")))
}

/// `GET /v2/<name>/tags/list` with `n` and `last`.
pub async fn list_tags(state: &AppState, name: &RepoName, uri: &Uri) -> Result<Response> {
    let (n, last) = page_params(uri)?;
    let (tags, more) = paginate(state.registry.tags(name).await?, n, last.as_deref());
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if more {
        headers.extend(link_header(&format!("/v2/{name}/tags/list"), n, tags.last()));
    }
    let body = json!({ "name": name.as_str(), "tags": tags });
    Ok(response(StatusCode::OK, &headers, Body::from(body.to_string())))
}

/// `GET /v2/_catalog` with `n` and `last`.
pub async fn catalog(state: &AppState, uri: &Uri, req_headers: &HeaderMap) -> Result<Response> {
    let (n, last) = page_params(uri)?;
    let visible = state.auth.pullable(req_headers, state.registry.catalog().await?);
    let (repos, more) = paginate(visible, n, last.as_deref());
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if more {
        headers.extend(link_header("/v2/_catalog", n, repos.last()));
    }
    Ok(response(StatusCode::OK, &headers, Body::from(json!({ "repositories": repos }).to_string())))
}

/// `GET /v2/<name>/referrers/<digest>`, optionally filtered by `artifactType`.
pub async fn list_referrers(state: &AppState, name: &RepoName, digest: &Digest, uri: &Uri) -> Result<Response> {
    let filter = query_param(uri, "artifactType");
    let index = state.registry.referrers(name, digest, filter.as_deref()).await?;
    let mut headers = vec![("Content-Type", oci::media::OCI_INDEX.to_owned())];
    if filter.is_some() {
        headers.push(("OCI-Filters-Applied", "artifactType".to_owned()));
    }
    Ok(response(StatusCode::OK, &headers, Body::from(index.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let uri: Uri = "/x?mount=sha256%3Aab&from=a%2Fb&n=".parse().unwrap();
        assert_eq!(query_param(&uri, "mount").unwrap(), "sha256:ab");
        assert_eq!(query_param(&uri, "from").unwrap(), "a/b");
        assert_eq!(query_param(&uri, "n").unwrap(), "");
        assert_eq!(query_param(&uri, "missing"), None);
    }

    #[test]
    fn malformed_content_ranges_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range(&h).unwrap(), None);
        h.insert(header::CONTENT_RANGE, "0-4".parse().unwrap());
        assert_eq!(content_range(&h).unwrap(), Some((0, 4)));
        h.insert(header::CONTENT_RANGE, axum::http::HeaderValue::from_bytes("0-4\u{e9}".as_bytes()).unwrap());
        assert_eq!(content_range(&h).unwrap_err().code, ErrorCode::RangeInvalid);
    }

    #[test]
    fn page_sizes_must_be_numbers() {
        for bad in ["-1", "99999999999999999999", "x"] {
            let uri: Uri = format!("/v2/a/tags/list?n={bad}").parse().unwrap();
            let e = page_params(&uri).unwrap_err();
            assert_eq!(
                (e.code, e.code.status().as_u16(), e.code.as_str()),
                (ErrorCode::PaginationNumberInvalid, 400, "PAGINATION_NUMBER_INVALID")
            );
        }
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, "bytes=2-5".parse().unwrap());
        assert_eq!(parse_range(&h, 10).unwrap(), Some((2, 5)));
        h.insert(header::RANGE, "bytes=-3".parse().unwrap());
        assert_eq!(parse_range(&h, 10).unwrap(), Some((7, 9)));
        h.insert(header::RANGE, "bytes=8-".parse().unwrap());
        assert_eq!(parse_range(&h, 10).unwrap(), Some((8, 9)));
        h.insert(header::RANGE, "bytes=10-12".parse().unwrap());
        assert_eq!(parse_range(&h, 10).unwrap_err().code, ErrorCode::RangeInvalid);
    }
}
