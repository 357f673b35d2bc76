//! The UI read by plain HTTP: who sees what, forged and unauthorised actions, the session
//! cookie, read-only mode, `--no-ui`, and hostile text in images.

use reqwest::StatusCode;
use serde_json::json;

use super::*;

/// GETs a UI page as `who` (basic credentials) and returns its status and body.
async fn page(s: &Server, path: &str, who: Option<(&str, &str)>) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let mut req = client().get(format!("http://{}{path}", s.addr));
    if let Some((u, p)) = who {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, r.text().await.unwrap(), headers)
}

/// The CSRF token a page hands its forms.
fn csrf(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a form with a csrf token") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn tag_exists(s: &Server, repo: &str, tag: &str) -> bool {
    let r = client()
        .head(format!("http://{}/v2/{repo}/manifests/{tag}", s.addr))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    r.status() == StatusCode::OK
}

async fn post_delete(s: &Server, who: (&str, &str), token: &str, extra: &[(&str, &str)]) -> StatusCode {
    let mut req = client().post(format!("http://{}/delete", s.addr)).basic_auth(who.0, Some(who.1)).form(&[
        ("repo", "app/web"),
        ("reference", "latest"),
        ("csrf", token),
    ]);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_unauthorised_posts_are_refused_and_delete_nothing() {
    let s = serve(Setup::default()).await;
    let (st, viewer_page, _) = page(&s, "/r/app/web", Some(VIEWER)).await;
    assert_eq!(st, 200);
    assert!(!viewer_page.contains("Delete"), "a viewer without delete rights sees no delete action");
    let viewer_token = csrf(&viewer_page);
    assert_eq!(post_delete(&s, VIEWER, &viewer_token, &[]).await, StatusCode::FORBIDDEN, "no delete right");
    let (_, admin_page, _) = page(&s, "/r/app/web", Some(ADMIN)).await;
    assert!(admin_page.contains("Delete tag latest"), "the admin sees the action");
    let admin_token = csrf(&admin_page);
    assert_eq!(post_delete(&s, ADMIN, &viewer_token, &[]).await, StatusCode::FORBIDDEN, "another account's token");
    assert_eq!(post_delete(&s, ADMIN, "forged.token", &[]).await, StatusCode::FORBIDDEN, "a made-up token");
    let cross = [("sec-fetch-site", "cross-site")];
    assert_eq!(post_delete(&s, ADMIN, &admin_token, &cross).await, StatusCode::FORBIDDEN, "a cross-site form");
    let evil = [("origin", "http://evil.example")];
    assert_eq!(post_delete(&s, ADMIN, &admin_token, &evil).await, StatusCode::FORBIDDEN, "another origin");
    assert!(tag_exists(&s, "app/web", "latest").await, "nothing was deleted by refused requests");
    let origin = format!("http://{}", s.addr);
    let same = [("origin", origin.as_str()), ("sec-fetch-site", "same-origin")];
    assert_eq!(post_delete(&s, ADMIN, &admin_token, &same).await, StatusCode::SEE_OTHER);
    assert!(!tag_exists(&s, "app/web", "latest").await, "the admin's own request deletes the tag");
    assert!(tag_exists(&s, "app/web", "1.0").await, "the manifest stays under its other tag");
    let digest = page(&s, "/r/app/web/manifests/1.0", Some(ADMIN)).await.1;
    let digest = digest.split("<code>sha256:").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let r = client()
        .post(format!("http://{}/delete", s.addr))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .form(&[("repo", "app/web"), ("reference", &format!("sha256:{digest}")), ("csrf", &admin_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "delete a manifest by digest");
    assert!(!tag_exists(&s, "app/web", "1.0").await, "its tags went with it");
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_viewers_see_only_granted_repositories_and_hostile_labels_stay_text() {
    let grants = vec![Grant { account: "anonymous".into(), repository: "lib/*".into(), actions: vec![Action::Pull] }];
    let s = serve(Setup { grants, ..Setup::default() }).await;
    let base = format!("http://{}", s.addr);
    let hostile = push_image(&base, "lib/xss", "amd64", json!({"note": "<script>alert(1)</script>"})).await;
    push_manifest(&base, "lib/xss", "latest", &hostile).await;
    let (st, html, _) = page(&s, "/", None).await;
    assert_eq!(st, 200);
    assert!(html.contains("lib/one") && html.contains("lib/two"), "anonymous may pull lib/*");
    assert!(!html.contains("app/web") && !html.contains("app/multi"), "nothing else is named: {html}");
    let (st, _, headers) = page(&s, "/r/app/web", None).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/login?next=/r/app/web");
    let (st, html, headers) = page(&s, "/r/lib/xss/manifests/latest", None).await;
    assert_eq!(st, 200);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the label is shown as text");
    assert!(!html.contains("<script>alert"), "and never as markup");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let (_, html, _) = page(&s, "/?q=TWO", Some(ADMIN)).await;
    assert!(html.contains("lib/two") && !html.contains("lib/one"), "search is a case-insensitive substring");
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_sets_a_strict_http_only_cookie_that_cannot_be_forged() {
    for tls in [false, true] {
        let s = serve(Setup { tls, ..Setup::default() }).await;
        let login = |user: &str, pass: &str| {
            client().post(format!("http://{}/login", s.addr)).form(&[
                ("username", user),
                ("password", pass),
                ("next", "/r/app/web"),
            ])
        };
        assert_eq!(login(ADMIN.0, "wrong").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let r = login(ADMIN.0, ADMIN.1).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/r/app/web");
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
            assert!(cookie.contains(attr), "{attr} in {cookie}");
        }
        assert_eq!(cookie.contains("; Secure"), tls, "Secure exactly over TLS: {cookie}");
        let value = cookie.split(';').next().unwrap().to_owned();
        let get = |c: String| client().get(format!("http://{}/r/app/web", s.addr)).header("cookie", c).send();
        let r = get(value.clone()).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("Signed in as <strong>admin</strong>"));
        // The cookie names its account in base64: YWRtaW4 is admin, dmlld2Vy is viewer.
        assert!(value.contains("=YWRtaW4|"), "{value}");
        let forged = value.replacen("YWRtaW4|", "dmlld2Vy|", 1);
        assert_eq!(get(forged).await.unwrap().status(), StatusCode::SEE_OTHER, "an altered cookie is no session");
        let r =
            login(ADMIN.0, ADMIN.1).form(&[("username", ADMIN.0), ("password", ADMIN.1), ("next", "//evil.example/")]);
        assert_eq!(r.send().await.unwrap().headers()["location"], "/", "no redirect off the site");
        let lured = login(ADMIN.0, ADMIN.1).header("sec-fetch-site", "cross-site").send().await.unwrap();
        assert_eq!(lured.status(), StatusCode::FORBIDDEN, "no sign-in from another site's form");
        assert!(lured.headers().get("set-cookie").is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_mode_uses_the_same_accounts_and_grants() {
    let s = serve(Setup { mode: Mode::Token, ..Setup::default() }).await;
    let (st, html, _) = page(&s, "/r/app/web", Some(ADMIN)).await;
    assert_eq!(st, 200);
    assert!(html.contains("Delete tag old"));
    let (_, html, _) = page(&s, "/r/app/web", Some(VIEWER)).await;
    assert!(!html.contains("Delete"));
    assert_eq!(page(&s, "/gc", Some(VIEWER)).await.0, StatusCode::NOT_FOUND, "gc needs delete on every repository");
    assert_eq!(page(&s, "/gc", Some(ADMIN)).await.0, StatusCode::OK);
    assert_eq!(page(&s, "/", Some(("admin", "wrong"))).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_hides_every_action_and_no_ui_leaves_only_the_api() {
    let s = serve(Setup { read_only: true, ..Setup::default() }).await;
    let (st, html, _) = page(&s, "/r/app/web", Some(ADMIN)).await;
    assert_eq!(st, 200);
    assert!(!html.contains("Delete") && !html.contains("/gc"), "no action in read-only mode");
    assert_eq!(post_delete(&s, ADMIN, &csrf(&html), &[]).await, StatusCode::FORBIDDEN);
    assert!(tag_exists(&s, "app/web", "latest").await);
    let off = serve(Setup { ui: None, ..Setup::default() }).await;
    assert_eq!(page(&off, "/", Some(ADMIN)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(page(&off, "/v2/", Some(ADMIN)).await.0, StatusCode::OK, "the API is unchanged");
    let disabled =
        serve(Setup { ui: Some(UiConfig { enabled: false, ..UiConfig::default() }), ..Setup::default() }).await;
    assert_eq!(page(&disabled, "/", Some(ADMIN)).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_count_tags_page_through_repositories_and_sort_tags_by_name_or_date() {
    let s = serve(Setup::default()).await;
    let base = format!("http://{}", s.addr);
    for i in 0..55 {
        let repo = format!("many/r{i:02}");
        let m = push_image(&base, &repo, "amd64", json!({})).await;
        push_manifest(&base, &repo, "latest", &m).await;
    }
    let m = push_image(&base, "order/app", "amd64", json!({})).await;
    for tag in ["a", "c", "b"] {
        push_manifest(&base, "order/app", tag, &m).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, first, _) = page(&s, "/?q=many/", Some(ADMIN)).await;
    assert!(first.contains("many/r00") && first.contains("many/r49") && !first.contains("many/r50"), "50 a page");
    assert!(first.contains("Page 1 of 2 · 55 in all") && first.contains("/?q=many/&amp;page=2"), "a next link");
    let (_, second, _) = page(&s, "/?q=many/&page=2", Some(ADMIN)).await;
    assert!(second.contains("many/r50") && second.contains("many/r54") && !second.contains("many/r49"));
    let (_, repos, _) = page(&s, "/?q=app/web", Some(ADMIN)).await;
    let row = repos.split("app/web</a></td>").nth(1).unwrap();
    assert!(row.starts_with("<td class=\"num\">3</td>"), "app/web has 3 tags: {row}");
    assert!(!row[..80].contains("—"), "and a last push: {row}");
    let names = |html: &str| -> Vec<String> {
        html.split("data-name=\"").skip(1).map(|r| r.split('"').next().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&page(&s, "/r/order/app?sort=date", Some(ADMIN)).await.1), ["b", "c", "a"], "newest first");
    assert_eq!(names(&page(&s, "/r/order/app", Some(ADMIN)).await.1), ["a", "b", "c"], "by name");
}

/// Without `--delete-enabled` the UI is no way around the API's refusal: no delete action
/// shows, even to an account granted delete, and a well-formed POST deletes nothing. gc is
/// not a delete of content clients named, and stays.
#[tokio::test(flavor = "multi_thread")]
async fn deletes_off_hides_and_refuses_the_ui_delete_but_keeps_gc() {
    let s = serve(Setup { delete_enabled: false, ..Setup::default() }).await;
    let (st, html, _) = page(&s, "/r/app/web", Some(ADMIN)).await;
    assert_eq!(st, 200);
    assert!(!html.contains("Delete"), "no delete action while deletes are off");
    let confirm = page(&s, "/delete?repo=app/web&reference=latest", Some(ADMIN)).await.0;
    assert_eq!(confirm, StatusCode::FORBIDDEN);
    assert_eq!(post_delete(&s, ADMIN, &csrf(&html), &[]).await, StatusCode::FORBIDDEN);
    assert!(tag_exists(&s, "app/web", "latest").await, "nothing was deleted");
    assert_eq!(page(&s, "/gc", Some(ADMIN)).await.0, StatusCode::OK, "gc is not a client delete");
}
