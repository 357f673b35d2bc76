//! Tags and the catalog of repositories.

use super::{Registry, RepoName};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::paths;

impl Registry {
    /// A repository's tags, sorted; NAME_UNKNOWN when the repository does not exist.
    pub async fn tags(&self, name: &RepoName) -> Result<Vec<String>> {
        if !self.repository_exists(name).await? {
            return Err(RegistryError::new(ErrorCode::NameUnknown, format!("repository {name} not known to registry")));
        }
        self.list_or_empty(&paths::tags_dir(name.as_str())).await
    }

    /// Every repository that holds a manifest, sorted.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        self.repositories_with("_manifests").await
    }

    /// Repository names whose directory holds `marker` (`_manifests`: those with content;
    /// `_uploads`: those with upload sessions, which gc looks at), sorted.
    pub async fn repositories_with(&self, marker: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        let root = paths::repositories();
        while let Some(prefix) = stack.pop() {
            let dir = if prefix.is_empty() { root.clone() } else { format!("{root}/{prefix}") };
            let children = self.list_or_empty(&dir).await?;
            if children.iter().any(|c| c == marker) {
                out.push(prefix.clone());
            }
            for c in children.into_iter().filter(|c| !c.starts_with('_')) {
                stack.push(if prefix.is_empty() { c } else { format!("{prefix}/{c}") });
            }
        }
        out.sort();
        Ok(out)
    }
}
