//! The UI in headless Chromium: what a person does with it, checked as they would see it.

use std::path::PathBuf;

use super::webdriver::{available, Browser};
use super::*;

const TAB: &str = "\u{E004}";

/// Where screenshots go: the test's output directory.
fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Skips (or, under BERTH_TEST_STRICT=1, fails) where Chromium is missing.
fn browser_missing() -> bool {
    if available() {
        return false;
    }
    assert!(!strict(), "chromium and chromium-driver are missing: run ./setup");
    eprintln!("skipped: chromium and chromium-driver are not installed (./setup installs them)");
    true
}

/// Checks what every page must have: landmarks, one h1, no sideways scrolling at this
/// width, and text with at least 4.5:1 contrast against its background.
async fn check_page(b: &Browser, what: &str) {
    let facts = b
        .script(
            r#"
            const q = (s) => document.querySelectorAll(s).length;
            const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
            const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
                .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
            const bg = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor); if (c.length === 3 || c[3] > 0) return c; } return [255, 255, 255]; };
            let worst = 21, where = "";
            for (const el of document.querySelectorAll("a, button, td, th, p, dt, dd, li, label, h1, h2, h3, code, span, footer")) {
              if (!el.offsetParent || !el.textContent.trim() || el.closest(".sr, .skip")) continue;
              const [l1, l2] = [lum(rgb(getComputedStyle(el).color)), lum(bg(el))];
              const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
              if (ratio < worst) { worst = ratio; where = el.outerHTML.slice(0, 80); }
            }
            return { header: q("header"), nav: q("nav[aria-label=Main]"), main: q("main"), footer: q("footer"), h1: q("h1"),
                     skip: q("a.skip[href='#main']"), scroll: document.documentElement.scrollWidth, width: window.innerWidth,
                     contrast: worst, worstAt: where, lang: document.documentElement.lang };
            "#,
        )
        .await;
    for landmark in ["header", "nav", "main", "footer", "h1", "skip"] {
        assert_eq!(facts[landmark], 1, "{what}: one {landmark}: {facts}");
    }
    assert_eq!(facts["lang"], "en", "{what}");
    assert!(facts["scroll"].as_f64() <= facts["width"].as_f64(), "{what}: the page scrolls sideways: {facts}");
    assert!(facts["contrast"].as_f64().unwrap() >= 4.5, "{what}: contrast below 4.5:1: {facts}");
}

/// Checks the page and takes its screenshot at desktop and phone sizes.
async fn shoot(b: &mut Browser, name: &str) {
    for (w, h) in [(1280, 800), (390, 844)] {
        b.viewport(w, h).await;
        check_page(b, &format!("{name} at {w}x{h}")).await;
        std::fs::write(shots_dir().join(format!("{name}-{w}x{h}.png")), b.screenshot().await).unwrap();
    }
    b.viewport(1280, 800).await;
}

async fn sign_in(b: &Browser, base: &str, who: (&str, &str)) {
    b.goto(&format!("{base}/")).await;
    assert!(b.url().await.contains("/login"), "an anonymous visitor is sent to the sign-in form");
    b.type_into(&b.find("#username").await, who.0).await;
    b.type_into(&b.find("#password").await, who.1).await;
    b.click(&b.find("form.login button").await).await;
    assert!(b.body_text().await.contains(&format!("Signed in as {}", who.0)));
}

/// Tabs through the page from the top and returns what took the focus, in order, checking
/// that each focused element shows a visible outline.
async fn tab_order(b: &Browser, presses: usize) -> Vec<String> {
    let here = b.url().await;
    b.goto(&here).await;
    let mut seen = vec![];
    for _ in 0..presses {
        b.press(TAB).await;
        let v = b
            .script(
                "const e = document.activeElement; const s = getComputedStyle(e);
                 if (e === document.body) return ['(page)', 'body', ''];
                 return [e.getAttribute('aria-label') || e.textContent.trim(), s.outlineStyle, s.outlineWidth];",
            )
            .await;
        let label = v[0].as_str().unwrap().to_owned();
        assert!(v[1] != "none" && v[2] != "0px", "{label:?} has no visible focus: {v}");
        seen.push(label);
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_browses_deletes_and_collects_in_a_real_browser() {
    if browser_missing() {
        return;
    }
    let s = serve(Setup::default()).await;
    let base = format!("http://{}", s.addr);
    let mut b = Browser::start(1280, 800).await;
    sign_in(&b, &base, ADMIN).await;
    shoot(&mut b, "repositories").await;
    let repos = b.strings("return [...document.querySelectorAll('table.repos tbody a')].map(a => a.textContent)").await;
    assert_eq!(repos, ["app/multi", "app/web", "lib/one", "lib/two"]);
    b.type_into(&b.find("#q").await, "mult").await;
    b.click(&b.find("form.search button").await).await;
    let found = b.find_all("table.repos tbody tr").await;
    assert_eq!(found.len(), 1);
    b.click(&b.find("table.repos tbody a").await).await;
    assert!(b.url().await.ends_with("/r/app/multi"));
    browse_index(&mut b).await;
    browse_image(&mut b, &base).await;
    let untagged = delete_a_tag(&mut b, &base).await;
    collect_garbage(&mut b, &base, &untagged).await;
}

async fn browse_index(b: &mut Browser) {
    b.click(&b.find("#tags tbody a").await).await;
    let text = b.body_text().await;
    assert!(text.contains("linux/amd64") && text.contains("linux/arm64"), "an index lists its platforms: {text}");
    shoot(b, "index").await;
    let arm =
        b.script("return [...document.querySelectorAll('a')].find(a => a.textContent === 'linux/arm64').href").await;
    b.goto(arm.as_str().unwrap()).await;
    assert!(b.body_text().await.contains("linux/arm64"), "the child's own config says arm64");
}

async fn browse_image(b: &mut Browser, base: &str) {
    b.goto(&format!("{base}/r/app/web")).await;
    let tags = b.strings("return [...document.querySelectorAll('#tags tbody tr')].map(r => r.dataset.name)").await;
    assert_eq!(tags, ["1.0", "latest", "old"]);
    shoot(b, "tags").await;
    b.type_into(&b.find("#filter").await, "lat").await;
    let visible =
        b.script("return [...document.querySelectorAll('#tags tbody tr')].filter(r => !r.hidden).length").await;
    assert_eq!(visible, 1, "the filter box narrows the rows");
    let reached = tab_order(b, 40).await;
    for action in ["Skip to content", "Delete tag 1.0", "Delete tag latest", "Delete tag old", "1.0", "Sign out"] {
        assert!(reached.iter().any(|r| r == action), "Tab never reaches {action:?}: {reached:?}");
    }
    let first = reached.iter().find(|r| *r != "(page)");
    assert_eq!(first.map(String::as_str), Some("Skip to content"), "the skip link comes first: {reached:?}");
    b.goto(&format!("{base}/r/app/web/manifests/1.0")).await;
    let text = b.body_text().await;
    for shown in
        ["[\"/bin/web\"]", "MODE=prod", "8080/tcp", "COPY web /bin/web", "ENV MODE=prod", "/srv", "org.example.team"]
    {
        assert!(text.contains(shown), "the image page shows {shown}: {text}");
    }
    assert!(text.contains("docker pull") && text.contains(&format!("{}/app/web:1.0", &base[7..])));
    let layers = b.find_all(".history tbody code[title^='sha256:']").await;
    assert_eq!(layers.len(), 2, "both layers, beside the steps that made them");
    assert!(text.contains("application/spdx+json"), "the SBOM is listed under its artifact type");
    shoot(b, "image").await;
    b.click(&b.find("#referrers-h ~ ul a").await).await;
    let text = b.body_text().await;
    assert!(text.contains("Refers to") && text.contains("application/spdx+json"));
    assert!(text.contains("Blobs") && !text.contains("Configuration"), "an artifact is not shown as an image");
    shoot(b, "referrer").await;
}

/// Deletes the tag `old` and returns the digest it named, now untagged.
async fn delete_a_tag(b: &mut Browser, base: &str) -> String {
    let head = client()
        .head(format!("{base}/v2/app/web/manifests/old"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    let digest = head.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    b.goto(&format!("{base}/r/app/web")).await;
    b.click(&b.find("a[aria-label='Delete tag old']").await).await;
    assert!(b.body_text().await.contains("Delete the tag old of app/web?"));
    shoot(b, "confirm").await;
    b.click(&b.find("form.confirm button").await).await;
    assert!(b.body_text().await.contains("Deleted old."));
    assert!(b.find_all("tr[data-name='old']").await.is_empty());
    let r = client()
        .get(format!("{base}/v2/app/web/manifests/old"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the API no longer knows the tag");
    digest
}

/// The status of a GET of `app/web`'s manifest `reference` through the API.
async fn manifest_status(base: &str, reference: &str) -> u16 {
    let r = client()
        .get(format!("{base}/v2/app/web/manifests/{reference}"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

async fn collect_garbage(b: &mut Browser, base: &str, untagged: &str) {
    b.goto(&format!("{base}/gc")).await;
    b.click(&b.find("form.confirm button").await).await;
    let summary = b.text(&b.find("#gc-summary").await).await;
    assert!(summary.starts_with("Would remove 1 manifest,"), "the untagged 'old' manifest: {summary}");
    assert!(b.body_text().await.contains(&format!("app/web@{untagged}")), "the report names it");
    shoot(b, "gc").await;
    assert_eq!(manifest_status(base, untagged).await, 200, "a dry run changes nothing");
    b.click(&b.find("form.confirm button.danger").await).await;
    let summary = b.text(&b.find("#gc-summary").await).await;
    assert!(summary.starts_with("Removed 1 manifest,"), "{summary}");
    assert_eq!(manifest_status(base, untagged).await, 404, "the real run removed it");
    assert_eq!(manifest_status(base, "1.0").await, 200, "and nothing tagged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_sees_no_actions_and_a_cross_site_form_deletes_nothing() {
    if browser_missing() {
        return;
    }
    let s = serve(Setup::default()).await;
    let base = format!("http://{}", s.addr);
    let b = Browser::start(1280, 800).await;
    sign_in(&b, &base, VIEWER).await;
    b.goto(&format!("{base}/r/app/web")).await;
    assert!(b.find_all("a.danger, button.danger").await.is_empty(), "no delete action for a viewer");
    assert!(b.find_all("a[href='/gc']").await.is_empty(), "no gc link for a viewer");
    // The viewer's own page posts a delete with its valid token: refused all the same.
    let status = b
        .script(
            "const t = document.querySelector('input[name=csrf]').value;
                 const x = new XMLHttpRequest(); x.open('POST', '/delete', false);
                 x.setRequestHeader('content-type', 'application/x-www-form-urlencoded');
                 x.send('repo=app%2Fweb&reference=latest&csrf=' + encodeURIComponent(t)); return x.status;",
        )
        .await;
    assert_eq!(status, 403);
    // An admin signed in, then lured to another site whose form posts to the registry.
    sign_out(&b).await;
    sign_in(&b, &base, ADMIN).await;
    let evil = evil_site(&base).await;
    b.goto(&evil).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = client()
        .get(format!("{base}/v2/app/web/manifests/latest"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the cross-site form deleted nothing");
}

async fn sign_out(b: &Browser) {
    b.click(&b.find("form.inline button").await).await;
    assert!(b.url().await.contains("/login"));
}

/// A page on another origin (another port) that submits a delete form to the registry as
/// soon as it loads: the classic CSRF attack.
async fn evil_site(registry: &str) -> String {
    let html = format!(
        r#"<!doctype html><form id=f method=post action="{registry}/delete">
           <input name=repo value="app/web"><input name=reference value="latest"><input name=csrf value="x"></form>
           <script>document.getElementById('f').submit()</script>"#
    );
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(html) }));
    let l = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/")
}
