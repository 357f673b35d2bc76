//! The authorisation matrix: every kind of caller (anonymous, basic credentials, a bearer
//! token) against every action on a repository it is granted, another team's repository and
//! a repository that does not exist, with the status and error code each cell must answer.
//! Each cell runs on a fresh registry, so a delete in one cell cannot change another.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use base64::Engine;
use registry::auth::{Action, Auth, Grant, Mode, Realm};
use registry::driver::MemoryDriver;

use crate::util::{state_with, Client};

/// Who calls: the registry's mode follows (basic needs htpasswd mode, bearer token mode).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    /// No credentials, htpasswd mode.
    Anonymous,
    /// An anonymous token from `/token`, as docker fetches after a challenge (token mode).
    AnonymousToken,
    /// `dev`'s password, htpasswd mode.
    Basic,
    /// A token `dev` obtained for the scopes the request needs (token mode).
    Bearer,
}

#[derive(Debug, Clone, Copy)]
enum Act {
    Pull,
    Push,
    Delete,
    Tags,
    Referrers,
    MountFrom,
    MountAny,
}

/// Which repository a cell acts on, relative to the caller's grants.
#[derive(Debug, Clone, Copy)]
enum Repo {
    Granted,
    Other,
    Missing,
}

const ADMIN: (&str, &str) = ("admin", "admin-pw");
const DEV: (&str, &str) = ("dev", "dev-pw");

fn basic((user, pw): (&str, &str)) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn registry_for(mode: Mode) -> Client {
    let users: HashMap<String, String> =
        [ADMIN, DEV].iter().map(|(u, p)| ((*u).to_owned(), bcrypt::hash(p, 4).unwrap())).collect();
    let all = vec![Action::Pull, Action::Push, Action::Delete];
    let grants = vec![
        Grant { account: "admin".into(), repository: "*".into(), actions: all.clone() },
        Grant { account: "dev".into(), repository: "team/*".into(), actions: all },
        Grant { account: "anonymous".into(), repository: "public/*".into(), actions: vec![Action::Pull] },
    ];
    let auth = Auth::new(mode, users, grants, vec![5; 32], Realm::FromHost, "berth-test".into(), false);
    Client { state: state_with(Arc::new(MemoryDriver::new()), auth, false), auth_header: None }.deleting()
}

/// The repository name a cell uses: `dev` is granted team/*, anonymous public/*.
fn repo_name(caller: Caller, repo: Repo) -> &'static str {
    let dev = matches!(caller, Caller::Basic | Caller::Bearer);
    match (repo, dev) {
        (Repo::Granted, true) => "team/app",
        (Repo::Granted, false) => "public/app",
        (Repo::Other, _) => "secret/app",
        (Repo::Missing, true) => "team/ghost",
        (Repo::Missing, false) => "public/ghost",
    }
}

fn layer_of(repo: &str) -> Vec<u8> {
    format!("the layer of {repo}").into_bytes()
}

/// The admin's credentials for `scope`: basic, or in token mode a token for it.
async fn as_admin(c: &Client, mode: Mode, scope: &str) -> String {
    match mode {
        Mode::Token => format!("Bearer {}", token(c, Some(basic(ADMIN)), scope).await),
        _ => basic(ADMIN),
    }
}

/// Pushes team/app, public/app and secret/app (each with its own layer, tagged v1) as
/// admin, plus a referrer of each manifest; returns the manifest digests by repository.
async fn seed(c: &mut Client, mode: Mode) -> HashMap<&'static str, String> {
    let mut digests = HashMap::new();
    for repo in ["team/app", "public/app", "secret/app"] {
        c.auth_header = Some(as_admin(c, mode, &format!("repository:{repo}:pull,push")).await);
        let digest = c.push_image(repo, "v1", &layer_of(repo)).await;
        let size = c.get(&format!("/v2/{repo}/manifests/v1")).await.body.len();
        let referrer = c.image_manifest(repo, b"an sbom", Some((&digest, size))).await;
        c.push_manifest(repo, "sbom", &referrer).await;
        digests.insert(repo, digest);
    }
    c.auth_header = None;
    digests
}

async fn token(c: &Client, auth: Option<String>, scope: &str) -> String {
    let mut t = c.clone();
    t.auth_header = auth;
    let scope = scope.replace(' ', "%20");
    let r = t.get(&format!("/token?service=berth-test&scope={scope}")).await;
    assert_eq!(r.status, StatusCode::OK, "token: {}", String::from_utf8_lossy(&r.body));
    r.json()["token"].as_str().unwrap().to_owned()
}

/// The request of one cell: method, path, and the token scope a client would ask for.
fn request(act: Act, repo: &str, digest: &str) -> (Method, String, String) {
    let layer = oci::Digest::of(&layer_of(repo)).to_string();
    let target = "team/target";
    match act {
        Act::Pull => (Method::GET, format!("/v2/{repo}/manifests/v1"), format!("repository:{repo}:pull")),
        Act::Push => (Method::POST, format!("/v2/{repo}/blobs/uploads/"), format!("repository:{repo}:pull,push")),
        Act::Delete => (Method::DELETE, format!("/v2/{repo}/manifests/{digest}"), format!("repository:{repo}:delete")),
        Act::Tags => (Method::GET, format!("/v2/{repo}/tags/list"), format!("repository:{repo}:pull")),
        Act::Referrers => (Method::GET, format!("/v2/{repo}/referrers/{digest}"), format!("repository:{repo}:pull")),
        Act::MountFrom => (
            Method::POST,
            format!("/v2/{target}/blobs/uploads/?mount={layer}&from={repo}"),
            format!("repository:{target}:pull,push repository:{repo}:pull"),
        ),
        Act::MountAny => (
            Method::POST,
            format!("/v2/{target}/blobs/uploads/?mount={layer}"),
            format!("repository:{target}:pull,push"),
        ),
    }
}

/// Runs one cell on a fresh registry; returns the status, the error code (or "") and, for a
/// mount, whether the target can now serve the layer.
async fn run_cell(caller: Caller, act: Act, repo: Repo) -> (StatusCode, String, bool) {
    let mode = match caller {
        Caller::Anonymous | Caller::Basic => Mode::Htpasswd,
        Caller::AnonymousToken | Caller::Bearer => Mode::Token,
    };
    let mut c = registry_for(mode);
    let digests = seed(&mut c, mode).await;
    let name = repo_name(caller, repo);
    let digest = digests.get(name).cloned().unwrap_or_else(|| digests["team/app"].clone());
    let (method, path, scope) = request(act, name, &digest);
    c.auth_header = match caller {
        Caller::Anonymous => None,
        Caller::Basic => Some(basic(DEV)),
        Caller::AnonymousToken => Some(format!("Bearer {}", token(&c, None, &scope).await)),
        Caller::Bearer => Some(format!("Bearer {}", token(&c, Some(basic(DEV)), &scope).await)),
    };
    let r = c.send(method, &path, &[], Body::empty()).await;
    let code = if r.body.is_empty() || r.status.is_success() { String::new() } else { r.code() };
    let mounted = if matches!(act, Act::MountFrom | Act::MountAny) {
        let layer = oci::Digest::of(&layer_of(name));
        c.auth_header = Some(as_admin(&c, mode, "repository:team/target:pull").await);
        let head = c.send(Method::HEAD, &format!("/v2/team/target/blobs/{layer}"), &[], Body::empty()).await;
        head.status == StatusCode::OK
    } else {
        false
    };
    (r.status, code, mounted)
}

/// The expected answer of each cell: (status, error code, mounted).
fn expected(caller: Caller, act: Act, repo: Repo) -> (u16, &'static str, bool) {
    use {Act::*, Caller::*, Repo::*};
    // Callers who may not act: htpasswd answers 401 to the anonymous (log in) and 403 to an
    // account without the grant; token mode answers 401 with insufficient_scope to both.
    let refused = match caller {
        Anonymous => (401, "UNAUTHORIZED", false),
        Basic => (403, "DENIED", false),
        AnonymousToken | Bearer => (401, "UNAUTHORIZED", false),
    };
    let dev = matches!(caller, Basic | Bearer);
    match (act, repo) {
        // Anonymous callers may pull public/* and nothing else.
        (Push | Delete | MountFrom | MountAny, _) if !dev => refused,
        (Pull | Tags | Referrers, Other) => refused,
        (Push | Delete, Other) => refused,
        (Pull, Granted) | (Tags, Granted) | (Referrers, Granted) => (200, "", false),
        (Pull, Missing) => (404, "MANIFEST_UNKNOWN", false),
        (Tags, Missing) => (404, "NAME_UNKNOWN", false),
        // The referrers API answers an empty index for a subject it does not know.
        (Referrers, Missing) => (200, "", false),
        (Push, _) => (202, "", false),
        (Delete, Granted) => (202, "", false),
        (Delete, Missing) => (404, "MANIFEST_UNKNOWN", false),
        // A mount links the blob only from a repository the caller may pull; otherwise
        // (another team's layer, or a blob nobody has) it is an ordinary upload: 202.
        // A token opens only what it names: one for the target alone cannot show that the
        // caller may pull the blob's other repositories, so mounting without `from` uploads.
        (MountAny, Granted) if caller == Bearer => (202, "", false),
        (MountFrom | MountAny, Granted) => (201, "", true),
        (MountFrom | MountAny, Other | Missing) => (202, "", false),
    }
}

#[tokio::test]
async fn every_caller_action_and_repository_answers_as_the_policy_says() {
    let callers = [Caller::Anonymous, Caller::AnonymousToken, Caller::Basic, Caller::Bearer];
    let acts = [Act::Pull, Act::Push, Act::Delete, Act::Tags, Act::Referrers, Act::MountFrom, Act::MountAny];
    let mut wrong = Vec::new();
    for caller in callers {
        for act in acts {
            for repo in [Repo::Granted, Repo::Other, Repo::Missing] {
                let (status, code, mounted) = run_cell(caller, act, repo).await;
                let want = expected(caller, act, repo);
                if (status.as_u16(), code.as_str(), mounted) != want {
                    wrong.push(format!(
                        "{caller:?} {act:?} {repo:?}: got {status} {code} mounted={mounted}, want {want:?}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} cells differ:\n{}", wrong.len(), wrong.join("\n"));
}

#[tokio::test]
async fn the_catalog_answers_each_caller_with_what_it_may_pull() {
    for (caller, want_status, want) in [
        (Caller::Anonymous, 401, None),
        (Caller::AnonymousToken, 401, None),
        (Caller::Basic, 200, Some(vec!["team/app"])),
        (Caller::Bearer, 200, Some(vec!["team/app"])),
    ] {
        let token_mode = matches!(caller, Caller::AnonymousToken | Caller::Bearer);
        let mode = if token_mode { Mode::Token } else { Mode::Htpasswd };
        let mut c = registry_for(mode);
        seed(&mut c, mode).await;
        c.auth_header = match caller {
            Caller::Anonymous => None,
            Caller::Basic => Some(basic(DEV)),
            Caller::AnonymousToken => Some(format!("Bearer {}", token(&c, None, "registry:catalog:*").await)),
            Caller::Bearer => Some(format!("Bearer {}", token(&c, Some(basic(DEV)), "registry:catalog:*").await)),
        };
        let r = c.get("/v2/_catalog").await;
        assert_eq!(r.status.as_u16(), want_status, "{caller:?}");
        if let Some(want) = want {
            assert_eq!(r.json()["repositories"], serde_json::json!(want), "{caller:?} sees only its own");
        } else {
            assert_eq!(r.code(), "UNAUTHORIZED", "{caller:?}");
        }
    }
}
