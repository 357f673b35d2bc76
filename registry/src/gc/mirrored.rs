//! Mirrored repositories in a collection. A mirror serves a manifest it fetched by digest
//! forever, so none of a mirrored repository's manifests is garbage for being untagged;
//! but a mirror entry may cap its content (`max_size`), and then the manifests pulled least
//! recently are evicted (unlinked with their tags) until what the rest reach fits. A
//! manifest's last pull is its revision link's time, which the mirror touches when it
//! serves it.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use oci::{Digest, Manifest};

use crate::domain::Registry;
use crate::error::Result;
use crate::paths;

/// A mirror entry's repositories, as a collection sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorScope {
    /// The repository prefix it serves; None: every repository no other entry serves.
    pub prefix: Option<String>,
    /// The most bytes its manifests may reach (blobs counted once); None: no cap.
    pub max_size: Option<u64>,
}

/// The scope a repository belongs to: the longest prefix that matches, else a root scope.
pub(super) fn scope_of<'a>(scopes: &'a [MirrorScope], repo: &str) -> Option<&'a MirrorScope> {
    let prefixed = scopes
        .iter()
        .filter(|s| s.prefix.as_deref().is_some_and(|p| repo.strip_prefix(p).is_some_and(|r| r.starts_with('/'))))
        .max_by_key(|s| s.prefix.as_ref().map_or(0, String::len));
    prefixed.or_else(|| scopes.iter().find(|s| s.prefix.is_none()))
}

/// One manifest of a mirrored repository.
struct Revision {
    repo: String,
    digest: Digest,
    pulled: SystemTime,
    /// The blobs it reaches: itself, its config and layers (or children).
    blobs: Vec<Digest>,
}

/// The manifests to evict, as (repository, digest), so that each capped scope fits.
pub(super) async fn evictions(
    registry: &Registry,
    scopes: &[MirrorScope],
    repos: &[String],
) -> Result<HashSet<(String, Digest)>> {
    let mut out = HashSet::new();
    for scope in scopes {
        let Some(max) = scope.max_size else { continue };
        let mine = repos.iter().filter(|r| scope_of(scopes, r) == Some(scope));
        let mut revisions = Vec::new();
        for repo in mine {
            revisions.extend(read_revisions(registry, repo).await?);
        }
        out.extend(least_recently_pulled(registry, revisions, max).await?);
    }
    Ok(out)
}

async fn read_revisions(registry: &Registry, repo: &str) -> Result<Vec<Revision>> {
    let mut out = Vec::new();
    let mut digests = Vec::new();
    for alg in [oci::Algorithm::Sha256, oci::Algorithm::Sha512] {
        for hex in super::list(registry, &paths::revisions_dir(repo, alg)).await? {
            digests.extend(Digest::new(alg, &hex).ok());
        }
    }
    for digest in digests {
        let pulled = match registry.driver().stat(&paths::revision_link(repo, &digest)).await {
            Ok(i) => i.modified,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let refs = match registry.driver().get(&paths::blob_data(&digest)).await {
            Ok(bytes) => Manifest::parse(&bytes, None).and_then(|m| m.references()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let blobs = std::iter::once(digest.clone()).chain(refs).collect();
        out.push(Revision { repo: repo.to_owned(), digest, pulled, blobs });
    }
    Ok(out)
}

/// Evicts the oldest pulls first until the blobs the others reach hold at most `max` bytes.
async fn least_recently_pulled(
    registry: &Registry,
    mut revisions: Vec<Revision>,
    max: u64,
) -> Result<Vec<(String, Digest)>> {
    let mut users: HashMap<Digest, usize> = HashMap::new();
    for r in &revisions {
        for b in &r.blobs {
            *users.entry(b.clone()).or_default() += 1;
        }
    }
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    for b in users.keys() {
        // A blob not stored yet (a layer nobody pulled) takes no room.
        let size = registry.driver().stat(&paths::blob_data(b)).await.map(|i| i.size).unwrap_or(0);
        sizes.insert(b.clone(), size);
    }
    let mut total: u64 = sizes.values().sum();
    revisions.sort_by_key(|r| r.pulled);
    let mut evicted = Vec::new();
    for r in revisions {
        if total <= max {
            break;
        }
        for b in &r.blobs {
            if let Some(n) = users.get_mut(b) {
                *n -= 1;
                if *n == 0 {
                    total = total.saturating_sub(sizes.get(b).copied().unwrap_or(0));
                }
            }
        }
        evicted.push((r.repo, r.digest));
    }
    Ok(evicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_belongs_to_its_longest_prefix_or_the_root() {
        let s = |p: Option<&str>| MirrorScope { prefix: p.map(str::to_owned), max_size: None };
        let scopes = [s(Some("hub")), s(Some("hub/library")), s(None)];
        assert_eq!(scope_of(&scopes, "hub/library/busybox"), Some(&scopes[1]));
        assert_eq!(scope_of(&scopes, "hub/user/app"), Some(&scopes[0]));
        assert_eq!(scope_of(&scopes, "hubx/app"), Some(&scopes[2]));
        assert_eq!(scope_of(&scopes[..2], "team/app"), None, "no root scope: a private repository");
    }
}
