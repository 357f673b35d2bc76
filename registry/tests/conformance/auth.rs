//! Authentication and authorisation: htpasswd basic auth, bearer tokens, grants, read-only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use base64::Engine;
use registry::auth::{Action, Auth, Grant, Mode, Realm};
use registry::driver::MemoryDriver;

use crate::util::{state_with, Client};

fn users() -> HashMap<String, String> {
    let mut u = HashMap::new();
    u.insert("alice".to_owned(), bcrypt::hash("alice-pw", 4).unwrap());
    u.insert("bob".to_owned(), bcrypt::hash("bob-pw", 4).unwrap());
    u
}

fn grants() -> Vec<Grant> {
    vec![
        Grant {
            account: "alice".into(),
            repository: "*".into(),
            actions: vec![Action::Pull, Action::Push, Action::Delete],
        },
        Grant { account: "bob".into(), repository: "team/*".into(), actions: vec![Action::Pull] },
        Grant { account: "anonymous".into(), repository: "public/*".into(), actions: vec![Action::Pull] },
    ]
}

fn client(mode: Mode) -> Client {
    let auth = Auth::new(mode, users(), grants(), vec![9; 32], Realm::FromHost, "berth-test".into(), false);
    Client { state: state_with(Arc::new(MemoryDriver::new()), auth, false), auth_header: None }.deleting()
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

#[tokio::test]
async fn htpasswd_challenges_and_checks_passwords() {
    let mut c = client(Mode::Htpasswd);
    let r = c.get("/v2/").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(r.header("www-authenticate").starts_with("Basic realm="));
    c.auth_header = Some(basic("alice", "wrong"));
    let r = c.get("/v2/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "wrong password");
    c.auth_header = Some(basic("alice", "alice-pw"));
    assert_eq!(c.get("/v2/").await.status, StatusCode::OK);
    c.push_image("team/app", "v1", b"l").await;
}

#[tokio::test]
async fn grants_limit_what_each_account_does() {
    let mut c = client(Mode::Htpasswd);
    c.auth_header = Some(basic("alice", "alice-pw"));
    c.push_image("team/app", "v1", b"l").await;
    c.push_image("public/tool", "v1", b"l").await;
    c.auth_header = Some(basic("bob", "bob-pw"));
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.status, StatusCode::OK);
    let r = c.send(Method::DELETE, "/v2/team/app/manifests/v1", &[], Body::empty()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    let r = c.send(Method::POST, "/v2/team/app/blobs/uploads/", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get("/v2/other/manifests/v1").await.status, StatusCode::FORBIDDEN);
    c.auth_header = None;
    assert_eq!(c.get("/v2/public/tool/manifests/v1").await.status, StatusCode::OK, "anonymous pull grant");
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.status, StatusCode::UNAUTHORIZED);
}

async fn token(c: &Client, auth: Option<&str>, scope: &str) -> String {
    let mut t = c.clone();
    t.auth_header = auth.map(str::to_owned);
    let r = t.get(&format!("/token?service=berth-test&scope={scope}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["token"], j["access_token"]);
    assert!(j["expires_in"].as_u64().unwrap() > 0);
    j["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bearer_token_flow() {
    let mut c = client(Mode::Token);
    let r = c.get("/v2/team/app/tags/list").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer realm=\"http://registry.test/token\",service=\"berth-test\",scope=\"repository:team/app:pull\""
    );
    let t = token(&c, Some(&basic("alice", "alice-pw")), "repository:team/app:pull,push").await;
    c.auth_header = Some(format!("Bearer {t}"));
    c.push_image("team/app", "v1", b"layer").await;
    assert_eq!(c.get("/v2/team/app/tags/list").await.status, StatusCode::OK);
    // The token covers team/app only.
    let r = c.get("/v2/team/other/tags/list").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").contains("error=\"insufficient_scope\""));
}

#[tokio::test]
async fn token_without_push_scope_cannot_push() {
    let mut c = client(Mode::Token);
    // bob asks for push but is granted pull only.
    let t = token(&c, Some(&basic("bob", "bob-pw")), "repository:team/app:pull,push").await;
    c.auth_header = Some(format!("Bearer {t}"));
    let r = c.send(Method::POST, "/v2/team/app/blobs/uploads/", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").contains("scope=\"repository:team/app:push\""));
}

#[tokio::test]
async fn token_endpoint_refuses_a_wrong_password_and_forged_tokens_fail() {
    let mut c = client(Mode::Token);
    let mut t = c.clone();
    t.auth_header = Some(basic("alice", "nope"));
    let r = t.get("/token?service=berth-test&scope=repository:a:pull").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    let other = Auth::new(Mode::Token, users(), grants(), vec![1; 32], Realm::FromHost, "berth-test".into(), false);
    let forger = Client {
        state: state_with(Arc::new(MemoryDriver::new()), other, false),
        auth_header: Some(basic("alice", "alice-pw")),
    };
    let forged = forger.get("/token?service=berth-test&scope=repository:a:pull").await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.auth_header = Some(format!("Bearer {forged}"));
    let r = c.get("/v2/a/tags/list").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").contains("invalid_token"));
}

#[tokio::test]
async fn anonymous_token_for_public_repositories() {
    let mut c = client(Mode::Token);
    let t = token(&c, None, "repository:public/x:pull").await;
    c.auth_header = Some(format!("Bearer {t}"));
    let r = c.get("/v2/public/x/tags/list").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "authorised; the repository is just empty");
    let t = token(&c, None, "repository:team/x:pull").await;
    c.auth_header = Some(format!("Bearer {t}"));
    assert_eq!(c.get("/v2/team/x/tags/list").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn read_only_refuses_writes() {
    let c = Client { state: state_with(Arc::new(MemoryDriver::new()), Auth::none(), true), auth_header: None };
    let r = c.send(Method::POST, "/v2/a/blobs/uploads/", &[], Body::empty()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
    assert_eq!(c.get("/v2/").await.status, StatusCode::OK);
}

/// Users for the mount tests: `a` owns team-a, `b` may push only to team-b, `c` may push
/// to team-b and pull team-a.
fn mount_client() -> Client {
    let mut u = HashMap::new();
    for n in ["a", "b", "c"] {
        u.insert(n.to_owned(), bcrypt::hash(format!("{n}-pw"), 4).unwrap());
    }
    let g = |account: &str, repository: &str, actions: Vec<Action>| Grant {
        account: account.into(),
        repository: repository.into(),
        actions,
    };
    let grants = vec![
        g("a", "team-a/*", vec![Action::Pull, Action::Push]),
        g("b", "team-b/*", vec![Action::Push]),
        g("c", "team-b/*", vec![Action::Pull, Action::Push]),
        g("c", "team-a/*", vec![Action::Pull]),
    ];
    let auth = Auth::new(Mode::Htpasswd, u, grants, vec![9; 32], Realm::FromHost, "berth-test".into(), false);
    Client { state: state_with(Arc::new(MemoryDriver::new()), auth, false), auth_header: None }.deleting()
}

#[tokio::test]
async fn mount_never_links_a_blob_the_caller_may_not_pull() {
    let mut c = mount_client();
    c.auth_header = Some(basic("a", "a-pw"));
    let d = c.push_blob("team-a/x", b"team a's private layer").await;
    c.auth_header = Some(basic("b", "b-pw"));
    for query in [format!("mount={d}"), format!("mount={d}&from=team-a/x")] {
        let r = c.send(Method::POST, &format!("/v2/team-b/y/blobs/uploads/?{query}"), &[], Body::empty()).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{query}: an upload, not a mount");
        assert!(r.header("location").starts_with("/v2/team-b/y/blobs/uploads/"), "{query}");
        // Read it back as someone who may pull team-b: the blob was not linked.
        let mut reader = c.clone();
        reader.auth_header = Some(basic("c", "c-pw"));
        let r = reader.get(&format!("/v2/team-b/y/blobs/{d}")).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"), "{query}");
    }
}

#[tokio::test]
async fn mount_links_a_blob_the_caller_may_pull() {
    let mut c = mount_client();
    c.auth_header = Some(basic("a", "a-pw"));
    let d = c.push_blob("team-a/x", b"shared with c").await;
    c.auth_header = Some(basic("c", "c-pw"));
    for (repo, query) in [("team-b/y", format!("mount={d}")), ("team-b/z", format!("mount={d}&from=team-a/x"))] {
        let r = c.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/?{query}"), &[], Body::empty()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{query}");
        assert_eq!(r.header("location"), format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(r.header("docker-content-digest"), d);
        assert_eq!(c.get(&format!("/v2/{repo}/blobs/{d}")).await.body, b"shared with c");
    }
}

/// Issue 13 item 1: a `registry:catalog:*` token once satisfied pull, push and delete on a
/// repository named `catalog`, because grants were matched on name only.
#[tokio::test]
async fn catalog_token_does_not_grant_a_repository_named_catalog() {
    let mut c = client(Mode::Token);
    let t = token(&c, Some(&basic("alice", "alice-pw")), "repository:catalog:pull,push,delete").await;
    c.auth_header = Some(format!("Bearer {t}"));
    let digest = c.push_image("catalog", "v1", b"secret layer").await;
    // A repository grant on `catalog` does not open the catalog.
    let r = c.get("/v2/_catalog").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").contains("scope=\"registry:catalog:*\""));
    // bob has no grant on `catalog`, but any account gets a catalog token.
    let t = token(&c, Some(&basic("bob", "bob-pw")), "registry:catalog:*").await;
    c.auth_header = Some(format!("Bearer {t}"));
    for (method, uri) in [
        (Method::GET, "/v2/catalog/manifests/v1".to_owned()),
        (Method::HEAD, format!("/v2/catalog/manifests/{digest}")),
        (Method::GET, "/v2/catalog/tags/list".to_owned()),
        (Method::POST, "/v2/catalog/blobs/uploads/".to_owned()),
        (Method::PUT, "/v2/catalog/manifests/v2".to_owned()),
        (Method::DELETE, format!("/v2/catalog/manifests/{digest}")),
    ] {
        let r = c.send(method.clone(), &uri, &[], Body::empty()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri} with a catalog token");
        assert!(r.header("www-authenticate").contains("error=\"insufficient_scope\""), "{method} {uri}");
    }
    // The image is untouched, and the catalog token still opens the catalog.
    assert_eq!(c.get("/v2/_catalog").await.status, StatusCode::OK);
    c.auth_header =
        Some(format!("Bearer {}", token(&c, Some(&basic("alice", "alice-pw")), "repository:catalog:pull").await));
    assert_eq!(c.get("/v2/catalog/manifests/v1").await.status, StatusCode::OK);
}

fn names(r: &crate::util::Resp) -> Vec<String> {
    r.json()["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// Issue 13 item 3: the catalog names only what the caller may pull, and pages over that.
#[tokio::test]
async fn catalog_lists_only_pullable_repositories_and_pages_over_them() {
    for mode in [Mode::Htpasswd, Mode::Token] {
        let mut c = client(mode);
        let repos = ["other/x", "public/tool", "secret/db", "team/a", "team/b", "team/c"];
        let alice_scope =
            format!("{}%20registry:catalog:*", repos.map(|r| format!("repository:{r}:pull,push")).join("%20"));
        c.auth_header = Some(match mode {
            Mode::Token => format!("Bearer {}", token(&c, Some(&basic("alice", "alice-pw")), &alice_scope).await),
            _ => basic("alice", "alice-pw"),
        });
        for r in repos {
            c.push_image(r, "v1", r.as_bytes()).await;
        }
        let all = c.get("/v2/_catalog").await;
        assert_eq!(names(&all), repos, "{mode:?}: alice pulls everything");
        // bob pulls team/* only (public/* is granted to anonymous, not to bob).
        c.auth_header = Some(match mode {
            Mode::Token => format!("Bearer {}", token(&c, Some(&basic("bob", "bob-pw")), "registry:catalog:*").await),
            _ => basic("bob", "bob-pw"),
        });
        let r = c.get("/v2/_catalog").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(names(&r), ["team/a", "team/b", "team/c"], "{mode:?}");
        let r = c.get("/v2/_catalog?n=2").await;
        assert_eq!(names(&r), ["team/a", "team/b"], "{mode:?}");
        let link = r.header("link");
        assert!(link.starts_with("</v2/_catalog?") && link.contains("n=2"), "{mode:?}: {link}");
        assert!(link.contains("last=team/b") || link.contains("last=team%2Fb"), "{mode:?}: {link}");
        let r = c.get("/v2/_catalog?n=2&last=team/b").await;
        assert_eq!(names(&r), ["team/c"], "{mode:?}");
        assert!(r.headers.get("link").is_none(), "{mode:?}: last page");
        let r = c.get("/v2/_catalog?n=2&last=other/x").await;
        assert_eq!(names(&r), ["team/a", "team/b"], "{mode:?}: `last` need not be visible");
    }
}

/// The challenge's realm for a request sent with `host`, under `realm`.
async fn challenge_realm(realm: Realm, host: &str) -> String {
    use tower::ServiceExt;
    let auth = Auth::new(Mode::Token, users(), grants(), vec![9; 32], realm, "berth-test".into(), false);
    let state = state_with(Arc::new(MemoryDriver::new()), auth, false);
    let req = axum::http::Request::get("/v2/").header("host", host).body(Body::empty()).unwrap();
    let resp = registry::api::app(state).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let c = resp.headers()["www-authenticate"].to_str().unwrap();
    let realm = c.strip_prefix("Bearer realm=\"").and_then(|r| r.split_once('"')).map(|(r, _)| r);
    realm.unwrap_or_else(|| panic!("no realm in {c}")).to_owned()
}

#[tokio::test]
async fn a_configured_realm_ignores_the_host_header() {
    let fixed = Realm::parse("https://registry.example.com/token").unwrap();
    // A Host header chosen by the client (or rewritten by a proxy) must not decide where
    // clients send their credentials.
    assert_eq!(challenge_realm(fixed, "attacker.example").await, "https://registry.example.com/token");
    assert_eq!(challenge_realm(Realm::parse("auto").unwrap(), "reg.lan:5000").await, "http://reg.lan:5000/token");
    // Even with `auto`, a Host header cannot add challenge parameters.
    let hostile = "x\",service=\"evil";
    assert_eq!(challenge_realm(Realm::FromHost, hostile).await, "http://localhost/token");
}

#[test]
fn realm_settings_are_auto_or_an_http_url() {
    assert_eq!(Realm::parse("auto"), Ok(Realm::FromHost));
    assert!(matches!(Realm::parse("http://10.0.0.1:5000/token"), Ok(Realm::Url(_))));
    for bad in ["", "registry.example.com/token", "ftp://x/token", "https://", "https://a/\"t", "https://a b/token"] {
        assert!(Realm::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[tokio::test]
async fn metrics_need_an_account_when_auth_is_on() {
    for mode in [Mode::Htpasswd, Mode::Token] {
        let mut c = client(mode);
        let r = c.get("/metrics").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{mode:?}: anonymous scrape");
        assert!(r.header("www-authenticate").starts_with("Basic realm="), "a scraper can answer the challenge");
        c.auth_header = Some(basic("alice", "wrong"));
        assert_eq!(c.get("/metrics").await.status, StatusCode::UNAUTHORIZED, "{mode:?}: wrong password");
        c.auth_header = Some(basic("bob", "bob-pw"));
        let r = c.get("/metrics").await;
        assert_eq!(r.status, StatusCode::OK, "{mode:?}: basic credentials");
        assert!(String::from_utf8_lossy(&r.body).contains("berth_registry_requests_total"));
    }
    let mut c = client(Mode::Token);
    c.auth_header = Some(format!("Bearer {}", token(&c, Some(&basic("bob", "bob-pw")), "").await));
    assert_eq!(c.get("/metrics").await.status, StatusCode::OK, "a token of a known account");
    c.auth_header = Some(format!("Bearer {}", token(&c, None, "repository:public/x:pull").await));
    assert_eq!(c.get("/metrics").await.status, StatusCode::UNAUTHORIZED, "an anonymous token");
}

#[tokio::test]
async fn metrics_on_their_own_address_leave_the_api() {
    use tower::ServiceExt;
    let auth = Auth::new(Mode::Htpasswd, users(), grants(), vec![9; 32], Realm::FromHost, "berth-test".into(), false);
    let state = state_with(Arc::new(MemoryDriver::new()), auth, false);
    let get = |path: &str| axum::http::Request::get(path).body(Body::empty()).unwrap();
    let api = registry::api::app_with(state.clone(), false);
    assert_eq!(api.oneshot(get("/metrics")).await.unwrap().status(), StatusCode::NOT_FOUND);
    let monitoring = registry::api::metrics_app(state);
    assert_eq!(monitoring.clone().oneshot(get("/metrics")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(monitoring.oneshot(get("/v2/")).await.unwrap().status(), StatusCode::NOT_FOUND, "no API there");
}

/// With deletes off, auth answers first as in distribution (a caller without the grant gets
/// 401 or 403, as for any delete), and an account granted delete gets 405 UNSUPPORTED.
#[tokio::test]
async fn with_deletes_off_auth_answers_first_then_unsupported() {
    let mut c = client(Mode::Htpasswd);
    c.state.delete_enabled = false;
    c.auth_header = Some(basic("alice", "alice-pw"));
    let d = c.push_image("team/app", "v1", b"l").await;
    let uri = format!("/v2/team/app/manifests/{d}");
    let r = c.send(Method::DELETE, &uri, &[], Body::empty()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
    c.auth_header = Some(basic("bob", "bob-pw"));
    let r = c.send(Method::DELETE, &uri, &[], Body::empty()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    c.auth_header = None;
    assert_eq!(c.send(Method::DELETE, &uri, &[], Body::empty()).await.status, StatusCode::UNAUTHORIZED);
    c.auth_header = Some(basic("alice", "alice-pw"));
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.status, StatusCode::OK, "nothing was deleted");
}
