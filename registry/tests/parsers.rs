//! Property tests of what the registry parses from clients: request paths
//! ([`Endpoint::parse`]) and token scopes ([`Scope::parse`]). Arbitrary input never panics,
//! and whatever parses prints back to text that parses to the same value.
//! `BERTH_PROPTEST_CASES` sets the number of cases (256 by default: seconds in the suite).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use proptest::prelude::*;
use registry::api::Endpoint;
use registry::auth::Scope;

fn config() -> ProptestConfig {
    let cases = std::env::var("BERTH_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// The path after `/v2` that names `e`.
fn path_of(e: &Endpoint) -> String {
    match e {
        Endpoint::Base => "/".into(),
        Endpoint::Catalog => "/_catalog".into(),
        Endpoint::Blob(n, d) => format!("/{n}/blobs/{d}"),
        Endpoint::Uploads(n) => format!("/{n}/blobs/uploads/"),
        Endpoint::Upload(n, id) => format!("/{n}/blobs/uploads/{id}"),
        Endpoint::Manifest(n, r) => format!("/{n}/manifests/{r}"),
        Endpoint::Tags(n) => format!("/{n}/tags/list"),
        Endpoint::Referrers(n, d) => format!("/{n}/referrers/{d}"),
    }
}

fn round_trips(path: &str) -> Result<(), TestCaseError> {
    if let Ok(e) = Endpoint::parse(path) {
        let again = Endpoint::parse(&path_of(&e));
        prop_assert_eq!(again.ok(), Some(e), "{}", path);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_as_a_path(s in any::<String>()) {
        round_trips(&s)?;
    }

    #[test]
    fn path_shaped_text(
        name in "[a-z0-9]{1,6}([._/-]{1,2}[a-z0-9]{1,6}){0,4}",
        kind in "(blobs|manifests|referrers|tags|blobs/uploads|_catalog|/)",
        last in "(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}|[A-Za-z0-9_.:-]{1,20}|list|[0-9a-f-]{36}|)",
        slash in "/?",
    ) {
        let path = format!("/{name}/{kind}/{last}{slash}");
        round_trips(&path)?;
        if let Ok(Endpoint::Manifest(n, r)) = Endpoint::parse(&path) {
            prop_assert_eq!(n.as_str(), name.as_str());
            prop_assert_eq!(r, last);
        }
    }

    #[test]
    fn any_text_as_a_scope(s in any::<String>()) {
        if let Some(scope) = Scope::parse(&s) {
            let text = scope.to_string();
            prop_assert_eq!(Scope::parse(&text), Some(scope));
        }
    }

    #[test]
    fn scope_shaped_text(
        kind in "(repository|registry|repository\\(plugin\\)|[a-z]{0,3})",
        name in "([a-z0-9.-]{1,10}(:[0-9]{1,5})?/)?[a-z0-9/_*]{0,12}",
        actions in "((pull|push|delete|\\*|[a-z]{0,4})(,(pull|push|delete|\\*|)){0,3})?",
    ) {
        let s = format!("{kind}:{name}:{actions}");
        match Scope::parse(&s) {
            Some(scope) => {
                prop_assert_eq!(scope.name, name.as_str(), "a host:port stays in the name");
                prop_assert!(scope.actions.iter().all(|a| !a.is_empty() && actions.split(',').any(|x| x == *a)));
                let text = scope.to_string();
                prop_assert_eq!(Scope::parse(&text), Some(scope));
            }
            None => prop_assert!(kind.is_empty() || kind.starts_with('(') || name.is_empty(), "{} refused", s),
        }
    }
}
