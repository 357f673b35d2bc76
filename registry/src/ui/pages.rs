//! The browsing pages: repositories, a repository's tags, and one manifest (an image with
//! its config, history and layers, or an index with its platforms), with referrers.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use maud::{html, Markup};
use serde::Deserialize;

use super::data::{self, Desc, ImageConfig, ManifestDoc, TagRow};
use super::session::Viewer;
use super::{request_host, view, UiState};
use crate::auth::Action;
use crate::domain::{RepoName, RepositorySummary};
use crate::error::ErrorCode;

/// Repositories shown per page.
const REPOS_PER_PAGE: usize = 50;
/// Tags shown per page.
const TAGS_PER_PAGE: usize = 100;

/// The list pages' query: search text, sort order, page number.
#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    q: Option<String>,
    sort: Option<String>,
    page: Option<usize>,
    deleted: Option<String>,
}

/// Which items of `total` a 1-based `page` of `per` shows, and the page clamped to those
/// that exist.
fn window(page: Option<usize>, per: usize, total: usize) -> (usize, std::ops::Range<usize>) {
    let last = total.div_ceil(per).max(1);
    let page = page.unwrap_or(1).clamp(1, last);
    let start = (page - 1) * per;
    (page, start..(start + per).min(total))
}

/// `/`: the repositories this viewer may pull, searchable by substring, a page at a time.
pub(super) async fn repositories(State(ui): State<UiState>, viewer: Viewer, Query(q): Query<ListQuery>) -> Response {
    let names = match ui.catalog_names().await {
        Ok(n) => n,
        Err(e) => return storage_error(&viewer, &e),
    };
    let needle = q.q.as_deref().unwrap_or("").trim().to_ascii_lowercase();
    let auth = &ui.app.auth;
    let shown: Vec<&String> = names
        .iter()
        .filter(|n| needle.is_empty() || n.contains(&needle))
        .filter(|n| viewer.may(auth, n, Action::Pull))
        .collect();
    if shown.is_empty() && needle.is_empty() && viewer.account.is_none() && viewer.auth_on {
        return viewer.no_access("/");
    }
    let (page, range) = window(q.page, REPOS_PER_PAGE, shown.len());
    let page_names: Vec<String> = shown[range].iter().map(|n| n.to_string()).collect();
    let rows: Vec<(String, Option<RepositorySummary>)> =
        futures_util::stream::iter(page_names).map(|n| summary(ui.clone(), n)).buffered(16).collect().await;
    let base = if needle.is_empty() { "/".to_owned() } else { format!("/?q={}", view::enc(&needle)) };
    let body = html! {
        form.search role="search" method="get" action="/" {
            label for="q" { "Search repositories" }
            input #q type="search" name="q" value=(needle) placeholder="name contains…";
            button type="submit" { "Search" }
        }
        @if shown.is_empty() {
            p { "No repositories" @if !needle.is_empty() { " match " code { (needle) } } "." }
        } @else {
            div.scroll {
                table.repos {
                    caption.sr { "Repositories" }
                    thead { tr { th scope="col" { "Repository" } th scope="col" { "Tags" } th scope="col" { "Last push" } } }
                    tbody {
                        @for (name, s) in &rows {
                            tr {
                                td { a href=(format!("/r/{name}")) { (name) } }
                                td.num { (s.map_or("—".to_owned(), |s| s.tags.to_string())) }
                                td { (view::time(s.and_then(|s| s.last_push))) }
                            }
                        }
                    }
                }
            }
            (view::pagination(&base, page, REPOS_PER_PAGE, shown.len()))
        }
    };
    view::send(StatusCode::OK, view::page(&viewer, "Repositories", &[], body))
}

async fn summary(ui: UiState, name: String) -> (String, Option<RepositorySummary>) {
    let Ok(repo) = name.parse::<RepoName>() else { return (name, None) };
    let registry = ui.app.registry.clone();
    let summary = ui.summaries.get(name.clone(), move || async move { registry.repository_summary(&repo).await }).await;
    (name, summary.ok())
}

fn storage_error(viewer: &Viewer, e: &crate::error::RegistryError) -> Response {
    tracing::error!(error = %e, "ui: storage read failed");
    view::error_page(
        viewer,
        StatusCode::SERVICE_UNAVAILABLE,
        "Storage unavailable",
        "The registry could not read its storage; try again.",
    )
}

/// `/r/<name>` (tags) and `/r/<name>/manifests/<reference>` (one manifest): the name holds
/// slashes, so the path is read from its end, as the API reads its own.
pub(super) async fn repository(
    State(ui): State<UiState>,
    viewer: Viewer,
    Path(path): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (name, reference) = match path.rsplit_once("/manifests/") {
        Some((n, r)) if !r.contains('/') => (n, Some(r)),
        _ => (path.as_str(), None),
    };
    let Ok(name) = name.parse::<RepoName>() else {
        return view::error_page(&viewer, StatusCode::NOT_FOUND, "Not found", "That is not a repository name.");
    };
    if !viewer.may(&ui.app.auth, name.as_str(), Action::Pull) {
        return viewer.no_access(&format!("/r/{path}"));
    }
    match reference {
        Some(r) => manifest_page(&ui, &viewer, &name, r, &headers).await,
        None => tags_page(&ui, &viewer, &name, q).await,
    }
}

fn crumbs(name: &RepoName) -> Vec<(String, String)> {
    vec![("/".into(), "Repositories".into()), (format!("/r/{name}"), name.to_string())]
}

async fn tags_page(ui: &UiState, viewer: &Viewer, name: &RepoName, q: ListQuery) -> Response {
    let (registry, repo) = (ui.app.registry.clone(), name.clone());
    let tags = match ui.tags.get(name.to_string(), move || data::tag_times(registry, repo)).await {
        Ok(t) => t,
        Err(e) if e.code == ErrorCode::NameUnknown => return viewer.no_access(&format!("/r/{name}")),
        Err(e) => return storage_error(viewer, &e),
    };
    let by_date = q.sort.as_deref() == Some("date");
    let total = tags.len();
    let (page, range) = window(q.page, TAGS_PER_PAGE, total);
    let timed: Vec<(String, Option<std::time::SystemTime>)> = if by_date {
        let mut all = tags.to_vec();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.drain(range).collect()
    } else {
        tags[range].to_vec()
    };
    let rows: Vec<TagRow> = futures_util::stream::iter(timed)
        .map(|(tag, pushed)| tag_row(ui.clone(), name.clone(), tag, pushed))
        .buffered(16)
        .collect()
        .await;
    let may_delete = viewer.may(&ui.app.auth, name.as_str(), Action::Delete);
    let sort = if by_date { "date" } else { "name" };
    let body = html! {
        @if let Some(d) = &q.deleted { p.notice role="status" { "Deleted " code { (d) } "." } }
        nav.sort aria-label="Sort tags" {
            "Sort by: "
            a href=(format!("/r/{name}?sort=name")) aria-current=[(!by_date).then_some("true")] { "name" }
            " · "
            a href=(format!("/r/{name}?sort=date")) aria-current=[by_date.then_some("true")] { "date pushed" }
        }
        label.filter for="filter" hidden { "Filter this page" input #filter type="search" data-filter="tags"; }
        div.scroll { (tags_table(name, &rows, may_delete)) }
        (view::pagination(&format!("/r/{name}?sort={sort}"), page, TAGS_PER_PAGE, total))
    };
    view::send(StatusCode::OK, view::page(viewer, name.as_str(), &crumbs(name), body))
}

async fn tag_row(ui: UiState, name: RepoName, tag: String, pushed: Option<std::time::SystemTime>) -> TagRow {
    let key = (name.to_string(), tag.clone(), pushed);
    let (loader, t) = (ui.clone(), tag.clone());
    // An unreadable manifest is not kept: the next view tries again.
    let load = move || async move {
        let m = data::tag_manifest(&loader.app.registry, &loader.configs, &name, &t).await;
        m.map(Some).ok_or_else(|| crate::error::RegistryError::new(ErrorCode::Internal, "manifest unreadable"))
    };
    let manifest = ui.rows.get(key, load).await.ok().flatten();
    TagRow { tag, pushed, manifest }
}

fn tags_table(name: &RepoName, rows: &[TagRow], may_delete: bool) -> Markup {
    html! {
        table #tags {
            caption.sr { "Tags of " (name) }
            thead { tr {
                th scope="col" { "Tag" } th scope="col" { "Digest" } th scope="col" { "Type" }
                th scope="col" { "Size" } th scope="col" { "Created" } th scope="col" { "Pushed" }
                th scope="col" { "Platforms" }
                @if may_delete { th scope="col" { span.sr { "Actions" } } }
            } }
            tbody {
                @for row in rows {
                    tr data-name=(row.tag) {
                        td { a href=(view::manifest_href(name.as_str(), &row.tag)) { (row.tag) } }
                        @if let Some(m) = &row.manifest {
                            td { a href=(view::manifest_href(name.as_str(), &m.digest.to_string())) { code { (view::short(&m.digest.to_string())) } } }
                            td { (view::kind(&m.media_type)) }
                            td.num { (m.size.map_or("—".to_owned(), view::size)) }
                            td { (view::created(m.created.as_deref())) }
                        } @else {
                            td colspan="4" { "manifest unreadable" }
                        }
                        td { (view::time(row.pushed)) }
                        td { @if let Some(m) = &row.manifest { (m.platforms.join(", ")) } }
                        @if may_delete { td { (view::delete_link(name.as_str(), &row.tag, &format!("tag {}", row.tag), "Delete")) } }
                    }
                }
            }
        }
    }
}

async fn manifest_page(
    ui: &UiState,
    viewer: &Viewer,
    name: &RepoName,
    reference: &str,
    headers: &HeaderMap,
) -> Response {
    let registry = &ui.app.registry;
    let stored = match registry.get_manifest(name, reference).await {
        Ok(m) => m,
        Err(e) if matches!(e.code, ErrorCode::ManifestUnknown | ErrorCode::NameUnknown | ErrorCode::DigestInvalid) => {
            return view::error_page(
                viewer,
                StatusCode::NOT_FOUND,
                "Not found",
                "This repository has no such manifest.",
            )
        }
        Err(e) => return storage_error(viewer, &e),
    };
    let doc = ManifestDoc::parse(&stored);
    let config = match data::image_config(registry, &ui.configs, name, &doc).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(repository = %name, error = %e, "ui: image config unreadable");
            None
        }
    };
    let referrers = match registry.referrers(name, &stored.digest, None).await {
        Ok(index) => serde_json::from_value::<ManifestDoc>(index).unwrap_or_default().manifests,
        Err(e) => return storage_error(viewer, &e),
    };
    let digest = &stored.digest.to_string();
    let may_delete = viewer.may(&ui.app.auth, name.as_str(), Action::Delete);
    let is_tag = !reference.contains(':');
    let body = html! {
        dl.facts {
            dt { "Digest" } dd { code { (digest) } }
            dt { "Media type" } dd { code { (stored.media_type) } }
            @if let Some(s) = doc.content_size() { dt { "Size" } dd { (view::size(s)) } }
            @if let Some(a) = &doc.artifact_type { dt { "Artifact type" } dd { code { (a) } } }
            @if let Some(s) = &doc.subject {
                dt { "Refers to" } dd { a href=(view::manifest_href(name.as_str(), &s.digest)) { code { (view::short(&s.digest)) } } }
            }
            @for (k, v) in &doc.annotations { dt { code { (k) } } dd { (v) } }
        }
        @if may_delete {
            div.actions {
                @if is_tag { (view::delete_link(name.as_str(), reference, &format!("tag {reference}"), "Delete tag")) " " }
                (view::delete_link(name.as_str(), digest, "this manifest and its tags", "Delete manifest"))
            }
        }
        (view::pull_commands(&request_host(headers), name.as_str(), reference))
        @if doc.is_index() { (platforms(name, &doc.manifests)) }
        @if let Some(c) = &config { (config_section(c)) (history_section("History and layers", c, &doc.layers)) }
        @else if !doc.layers.is_empty() { (history_section("Blobs", &ImageConfig::default(), &doc.layers)) }
        (referrers_section(name, &referrers))
    };
    let title = format!("{name}{}{reference}", if is_tag { ':' } else { '@' });
    view::send(StatusCode::OK, view::page(viewer, &title, &crumbs(name), body))
}

fn platforms(name: &RepoName, children: &[Desc]) -> Markup {
    html! {
        section aria-labelledby="platforms-h" {
            h2 #platforms-h { "Platforms" }
            div.scroll { table {
                thead { tr { th scope="col" { "Platform" } th scope="col" { "Manifest" } th scope="col" { "Size" } } }
                tbody { @for c in children { tr {
                    td { a href=(view::manifest_href(name.as_str(), &c.digest)) {
                        (c.platform.as_ref().map_or("unknown".to_owned(), |p| p.to_string()))
                    } }
                    td { code { (view::short(&c.digest)) } }
                    td.num { (view::size(c.size)) }
                } } }
            } }
        }
    }
}

fn config_section(c: &ImageConfig) -> Markup {
    let rc = &c.config;
    let joined = |v: &Option<Vec<String>>| v.as_ref().map(|v| serde_json::to_string(v).unwrap_or_default());
    let platform = match (&c.os, &c.architecture) {
        (Some(os), Some(arch)) => {
            Some(format!("{os}/{arch}{}", c.variant.as_ref().map_or(String::new(), |v| format!("/{v}"))))
        }
        _ => None,
    };
    let ports: Option<Vec<&String>> = rc.exposed_ports.as_ref().map(|p| p.keys().collect());
    html! {
        section aria-labelledby="config-h" {
            h2 #config-h { "Configuration" }
            dl.facts {
                @if let Some(p) = platform { dt { "Platform" } dd { (p) } }
                dt { "Created" } dd { (view::created(c.created.as_deref())) }
                @if let Some(e) = joined(&rc.entrypoint) { dt { "Entrypoint" } dd { code { (e) } } }
                @if let Some(e) = joined(&rc.cmd) { dt { "Cmd" } dd { code { (e) } } }
                @if let Some(u) = rc.user.as_ref().filter(|u| !u.is_empty()) { dt { "User" } dd { code { (u) } } }
                @if let Some(w) = rc.working_dir.as_ref().filter(|w| !w.is_empty()) { dt { "Workdir" } dd { code { (w) } } }
                @if let Some(p) = ports { dt { "Exposed ports" } dd { @for port in p { code { (port) } " " } } }
            }
            @if let Some(env) = rc.env.as_ref().filter(|e| !e.is_empty()) {
                h3 { "Environment" }
                ul.plain { @for e in env { li { code { (e) } } } }
            }
            @if let Some(labels) = rc.labels.as_ref().filter(|l| !l.is_empty()) {
                h3 { "Labels" }
                dl.facts { @for (k, v) in labels { dt { code { (k) } } dd { (v) } } }
            }
        }
    }
}

/// The history, each step that made a layer beside that layer's digest and size; layers
/// the history does not account for are listed after it.
fn history_section(title: &str, c: &ImageConfig, layers: &[Desc]) -> Markup {
    let mut layer_iter = layers.iter();
    let mut steps: Vec<(Option<&data::History>, Option<&Desc>)> = Vec::new();
    for h in &c.history {
        steps.push((Some(h), if h.empty_layer { None } else { layer_iter.next() }));
    }
    steps.extend(layer_iter.map(|l| (None, Some(l))));
    html! {
        section aria-labelledby="history-h" {
            h2 #history-h { (title) }
            div.scroll { table.history {
                thead { tr { th scope="col" { "Step" } th scope="col" { "Created" } th scope="col" { "Layer" } th scope="col" { "Size" } } }
                tbody { @for (h, l) in steps { tr {
                    td { code.step { (h.and_then(|h| h.created_by.as_deref().or(h.comment.as_deref())).unwrap_or("")) } }
                    td { (view::created(h.and_then(|h| h.created.as_deref()))) }
                    td { @if let Some(l) = l { code title=(l.digest) { (view::short(&l.digest)) } } @else { "—" } }
                    td.num { @if let Some(l) = l { (view::size(l.size)) } }
                } } }
            } }
        }
    }
}

/// Signatures, SBOMs and attestations that point at this manifest, grouped by artifact type.
fn referrers_section(name: &RepoName, referrers: &[Desc]) -> Markup {
    let mut groups: BTreeMap<&str, Vec<&Desc>> = BTreeMap::new();
    for r in referrers {
        groups.entry(r.artifact_type.as_deref().unwrap_or("(no artifact type)")).or_default().push(r);
    }
    html! {
        section aria-labelledby="referrers-h" {
            h2 #referrers-h { "Referrers" }
            @if groups.is_empty() { p { "Nothing refers to this manifest." } }
            @for (kind, items) in &groups {
                h3 { code { (kind) } }
                ul.plain { @for r in items { li {
                    a href=(view::manifest_href(name.as_str(), &r.digest)) { code { (view::short(&r.digest)) } }
                    " · " (view::size(r.size))
                    @if let Some(t) = r.annotations.get("org.opencontainers.image.created") { " · " (view::created(Some(t))) }
                } } }
            }
        }
    }
}
