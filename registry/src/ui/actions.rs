//! The actions: delete a tag, delete a manifest, collect garbage. Each is a confirmation
//! page (GET, safe to follow) and then a POST carrying a CSRF token; each checks the same
//! grants as the API and is logged with its account.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::session::Viewer;
use super::{view, UiState};
use crate::auth::Action;
use crate::domain::RepoName;
use crate::error::ErrorCode;
use crate::gc::{GcOptions, GcReport, DEFAULT_UPLOAD_AGE};

/// What to delete: a tag or a digest of a repository.
#[derive(Deserialize)]
pub(super) struct Target {
    repo: String,
    reference: String,
}

/// The delete form's fields.
#[derive(Deserialize)]
pub(super) struct DeleteForm {
    repo: String,
    reference: String,
    csrf: String,
}

fn refused(viewer: &Viewer) -> Response {
    view::error_page(viewer, StatusCode::FORBIDDEN, "Not allowed", "Your account may not do this here.")
}

/// Asks before deleting: says what goes (a tag, or a manifest with every tag on it).
pub(super) async fn confirm_delete(State(ui): State<UiState>, viewer: Viewer, Query(t): Query<Target>) -> Response {
    if !viewer.may(&ui.app.auth, &t.repo, Action::Delete) {
        return refused(&viewer);
    }
    let is_tag = !t.reference.contains(':');
    let back = format!("/r/{}", t.repo);
    let body = html! {
        p {
            @if is_tag { "Delete the tag " code { (t.reference) } " of " code { (t.repo) } "? The manifest it names stays, under its digest and any other tag." }
            @else { "Delete the manifest " code { (t.reference) } " from " code { (t.repo) } ", with every tag that names it? Garbage collection later frees its blobs." }
        }
        form.confirm method="post" action="/delete" {
            input type="hidden" name="repo" value=(t.repo);
            input type="hidden" name="reference" value=(t.reference);
            input type="hidden" name="csrf" value=(viewer.csrf);
            button.danger type="submit" { "Delete" }
            " "
            a.action href=(back) { "Cancel" }
        }
    };
    view::send(StatusCode::OK, view::page(&viewer, "Delete?", &[], body))
}

/// Deletes a tag or a manifest, then goes back to the repository's tags.
pub(super) async fn delete(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<DeleteForm>,
) -> Response {
    if let Some(refusal) = viewer.refuse_forged(&ui.app.auth, &headers, &f.csrf) {
        return refusal;
    }
    let account = viewer.account.as_deref().unwrap_or("anonymous");
    if !viewer.may(&ui.app.auth, &f.repo, Action::Delete) {
        tracing::warn!(account, repository = f.repo, reference = f.reference, "ui: delete refused");
        return refused(&viewer);
    }
    let Ok(name) = f.repo.parse::<RepoName>() else {
        return view::error_page(&viewer, StatusCode::BAD_REQUEST, "Bad request", "That is not a repository name.");
    };
    match ui.app.registry.delete_manifest(&name, &f.reference).await {
        Ok(()) => {
            ui.forget(name.as_str());
            tracing::info!(account, repository = %name, reference = f.reference, "ui: deleted");
            Redirect::to(&format!("/r/{name}?deleted={}", view::enc(&f.reference))).into_response()
        }
        Err(e)
            if matches!(e.code, ErrorCode::ManifestUnknown | ErrorCode::ManifestInvalid | ErrorCode::DigestInvalid) =>
        {
            view::error_page(
                &viewer,
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such tag or manifest (already deleted?).",
            )
        }
        Err(e) => {
            tracing::error!(account, repository = %name, reference = f.reference, error = %e, "ui: delete failed");
            view::error_page(
                &viewer,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Delete failed",
                "The registry could not delete it; see its log.",
            )
        }
    }
}

/// The gc page: what a collection does, and the dry-run button.
pub(super) async fn gc_form(State(ui): State<UiState>, viewer: Viewer) -> Response {
    if !viewer.may_collect() {
        return viewer.no_access("/gc");
    }
    let grace = view::duration(ui.config.gc_grace);
    let body = html! {
        p { "Garbage collection removes manifests no tag names (untagged revisions), blobs no manifest uses, and upload sessions abandoned for a week. Anything written in the last " (grace) " is spared, so pushes in flight are safe." }
        p { "A dry run lists what would go and deletes nothing." }
        (gc_button(&viewer, true))
    };
    view::send(StatusCode::OK, view::page(&viewer, "Garbage collection", &[], body))
}

fn gc_button(viewer: &Viewer, dry_run: bool) -> maud::Markup {
    html! {
        form.confirm method="post" action="/gc" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="mode" value=(if dry_run { "dry-run" } else { "run" });
            @if dry_run { button type="submit" { "Dry run" } }
            @else { button.danger type="submit" { "Delete these now" } }
        }
    }
}

/// The gc form's fields.
#[derive(Deserialize)]
pub(super) struct GcForm {
    csrf: String,
    mode: String,
}

/// Runs a collection (dry run or real) and shows its report.
pub(super) async fn gc(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<GcForm>,
) -> Response {
    if let Some(refusal) = viewer.refuse_forged(&ui.app.auth, &headers, &f.csrf) {
        return refusal;
    }
    let account = viewer.account.as_deref().unwrap_or("anonymous");
    if !viewer.may_collect() {
        tracing::warn!(account, "ui: gc refused");
        return refused(&viewer);
    }
    let Ok(_one_at_a_time) = ui.collecting.try_lock() else {
        return view::error_page(
            &viewer,
            StatusCode::CONFLICT,
            "Busy",
            "A collection is already running; try again when it is done.",
        );
    };
    let dry_run = f.mode != "run";
    let mirrored = ui.app.mirror.as_ref().map(|m| m.gc_scopes()).unwrap_or_default();
    let opts = GcOptions { dry_run, grace: ui.config.gc_grace, upload_age: DEFAULT_UPLOAD_AGE, mirrored };
    let report = match crate::gc::collect_with(&ui.app.registry, opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(account, error = %e, "ui: gc failed");
            return view::error_page(
                &viewer,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Collection failed",
                "See the registry's log.",
            );
        }
    };
    tracing::info!(
        account,
        dry_run,
        manifests = report.manifests.len(),
        blobs = report.blobs.len(),
        bytes = report.bytes,
        "ui: gc"
    );
    let title = if dry_run { "Garbage collection: dry run" } else { "Garbage collection: done" };
    let body = html! {
        (gc_report(&report, dry_run))
        @if dry_run && !(report.manifests.is_empty() && report.blobs.is_empty() && report.uploads.is_empty()) {
            (gc_button(&viewer, false))
        }
    };
    view::send(StatusCode::OK, view::page(&viewer, title, &[], body))
}

fn gc_report(r: &GcReport, dry_run: bool) -> maud::Markup {
    let verb = if dry_run { "Would remove" } else { "Removed" };
    html! {
        p role="status" #gc-summary {
            (verb) " " (view::count(r.manifests.len(), "manifest")) ", " (view::count(r.blobs.len(), "blob"))
            " (" (view::size(r.bytes)) ") and " (view::count(r.uploads.len(), "upload session")) "."
        }
        @if !r.manifests.is_empty() {
            h2 { "Manifests" }
            ul.plain { @for (repo, d) in &r.manifests { li { code { (repo) "@" (d.to_string()) } } } }
        }
        @if !r.blobs.is_empty() {
            h2 { "Blobs" }
            ul.plain { @for d in &r.blobs { li { code { (d.to_string()) } } } }
        }
        @if !r.uploads.is_empty() {
            h2 { "Upload sessions" }
            ul.plain { @for (repo, id) in &r.uploads { li { code { (repo) " " (id) } } } }
        }
    }
}
