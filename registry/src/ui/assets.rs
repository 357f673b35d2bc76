//! The UI's stylesheet and script, embedded in the binary: no CDN, works offline.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// `/static/<file>`: the two assets, cached by browsers for an hour.
pub(super) async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut resp = body.into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static(kind));
    resp.headers_mut().insert("cache-control", HeaderValue::from_static("public, max-age=3600"));
    resp
}
