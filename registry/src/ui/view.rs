//! The HTML every page shares: the layout (landmarks, skip link, navigation), tables,
//! pagination, pull commands and action buttons. maud escapes every value it is given.

use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::session::Viewer;

/// A whole page: `title` in `<title>` and as the one `<h1>`.
pub(super) fn page(viewer: &Viewer, title: &str, crumbs: &[(String, String)], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · berth registry" }
                link rel="stylesheet" href="/static/ui.css";
                script src="/static/ui.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "berth registry" }
                    nav aria-label="Main" {
                        ul {
                            li { a href="/" { "Repositories" } }
                            @if viewer.gc_link { li { a href="/gc" { "Garbage collection" } } }
                            (account_links(viewer))
                        }
                    }
                }
                main #main tabindex="-1" {
                    @if !crumbs.is_empty() {
                        nav.crumbs aria-label="Breadcrumb" {
                            ol { @for (href, text) in crumbs { li { a href=(href) { (text) } } } }
                        }
                    }
                    h1 { (title) }
                    (body)
                }
                footer { "berth registry · the API is under " code { "/v2/" } }
            }
        }
    }
}

fn account_links(viewer: &Viewer) -> Markup {
    html! {
        @if let Some(account) = &viewer.account {
            li.account { "Signed in as " strong { (account) } }
            li {
                form.inline method="post" action="/logout" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button.link type="submit" { "Sign out" }
                }
            }
        } @else if viewer.auth_on {
            li { a href="/login" { "Sign in" } }
        }
    }
}

/// Sends a page with a status.
pub(super) fn send(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page that says what went wrong.
pub(super) fn error_page(viewer: &Viewer, status: StatusCode, title: &str, message: &str) -> Response {
    send(status, page(viewer, title, &[], html! { p.notice.error role="alert" { (message) } }))
}

/// The sign-in form.
pub(super) fn login_page(viewer: &Viewer, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        @if let Some(e) = error { p.notice.error role="alert" { (e) } }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label for="username" { "Username" }
            input #username type="text" name="username" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
    };
    send(status, page(viewer, "Sign in", &[], body))
}

/// Previous/next links and where the reader is, for a list of `total` items shown `per` a page.
pub(super) fn pagination(base: &str, page: usize, per: usize, total: usize) -> Markup {
    let pages = total.div_ceil(per).max(1);
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pages aria-label="Pages" {
            @if page > 1 { a rel="prev" href=(format!("{base}{sep}page={}", page - 1)) { "← Previous" } }
            span { "Page " (page) " of " (pages) " · " (total) " in all" }
            @if page < pages { a rel="next" href=(format!("{base}{sep}page={}", page + 1)) { "Next →" } }
        }
    }
}

/// `docker pull` and `berth pull` lines with copy buttons.
pub(super) fn pull_commands(host: &str, name: &str, reference: &str) -> Markup {
    let sep = if reference.contains(':') { '@' } else { ':' };
    let image = format!("{host}/{name}{sep}{reference}");
    html! {
        section aria-labelledby="pull-h" {
            h2 #pull-h { "Pull" }
            @for tool in ["berth", "docker"] {
                @let line = format!("{tool} pull {image}");
                div.pull {
                    code { (line) }
                    button.copy type="button" data-copy=(line) aria-label=(format!("Copy: {line}")) { "Copy" }
                }
            }
        }
    }
}

/// A link to the confirmation page of deleting `reference` from `repo`: `text` on screen,
/// "Delete `what`" for screen readers.
pub(super) fn delete_link(repo: &str, reference: &str, what: &str, text: &str) -> Markup {
    let href = format!("/delete?repo={}&reference={}", enc(repo), enc(reference));
    html! { a.action.danger href=(href) aria-label=(format!("Delete {what}")) { (text) } }
}

/// The link to a manifest's page.
pub(super) fn manifest_href(repo: &str, reference: &str) -> String {
    format!("/r/{repo}/manifests/{reference}")
}

/// `sha256:0123456789ab`: enough of a digest to tell it apart on screen.
pub(super) fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(12, |i| i + 13).min(digest.len());
    &digest[..end]
}

/// A size in binary units: `812 B`, `4.9 KiB`, `1.2 GiB`.
pub(super) fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut unit) = (bytes as f64, 0);
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// `1 manifest`, `3 manifests`.
pub(super) fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A duration in its largest whole unit: `1 hour`, `90 minutes`, `45 seconds`.
pub(super) fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        _ if s >= 3600 && s.is_multiple_of(3600) => (s / 3600, "hour"),
        _ if s >= 60 && s.is_multiple_of(60) => (s / 60, "minute"),
        _ => (s, "second"),
    };
    count(n as usize, unit)
}

/// A storage time as `2026-12-04 19:45 UTC`.
pub(super) fn time(t: Option<SystemTime>) -> String {
    t.map(|t| chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// An image config's RFC 3339 date as [`time`] writes dates; other text as it is.
pub(super) fn created(text: Option<&str>) -> String {
    match text {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|_| t.to_owned()),
        None => "—".into(),
    }
}

/// A media type as people say it.
pub(super) fn kind(media_type: &str) -> &'static str {
    match media_type {
        oci::media::OCI_INDEX | oci::media::DOCKER_MANIFEST_LIST => "index",
        oci::media::OCI_MANIFEST | oci::media::DOCKER_MANIFEST => "image",
        _ => "artifact",
    }
}

/// Percent-encodes a query value.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_digests_and_query_values() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(5000), "4.9 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(short("sha256:0123456789abcdef0123"), "sha256:0123456789ab");
        assert_eq!(enc("a b&c=<d>"), "a%20b%26c%3D%3Cd%3E");
        assert_eq!(count(1, "blob"), "1 blob");
        assert_eq!(count(0, "blob"), "0 blobs");
        assert_eq!(duration(std::time::Duration::from_secs(3600)), "1 hour");
        assert_eq!(duration(std::time::Duration::from_secs(5400)), "90 minutes");
    }
}
