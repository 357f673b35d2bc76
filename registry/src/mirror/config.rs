//! A mirror entry's settings: the `[[mirror]]` tables of the config, and `--mirror
//! [PREFIX=]URL` on the command line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One upstream registry mirrored under a repository prefix (or at the root).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream: `https://registry-1.docker.io`, `https://ghcr.io`, `http://10.0.0.5:5000`.
    pub url: String,
    /// The repository prefix it serves (`hub` serves `hub/library/busybox` from the upstream's
    /// `library/busybox`); none: every repository, as `registry-mirrors` clients expect.
    pub prefix: Option<String>,
    /// The upstream account.
    pub username: Option<String>,
    /// Its password, inline.
    pub password: Option<String>,
    /// Its password, read from this file.
    pub password_file: Option<PathBuf>,
    /// Or a docker credential helper (`docker-credential-NAME get`) that holds them.
    pub credential_helper: Option<String>,
    /// How long a tag is served from storage before a HEAD asks the upstream whether it moved.
    #[serde(default = "tag_ttl", deserialize_with = "crate::server::duration")]
    pub tag_ttl: Duration,
    /// How long the upstream may take to answer (and between two chunks of a blob).
    #[serde(default = "timeout", deserialize_with = "crate::server::duration")]
    pub timeout: Duration,
    /// Reach the upstream without verifying its certificate (or over plain HTTP).
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file of CA certificates the upstream's certificate chains to.
    pub ca_file: Option<PathBuf>,
    /// The most bytes this mirror's content may hold: garbage collection evicts the
    /// manifests pulled least recently beyond it (`"50GB"`, `"20GiB"`, bytes).
    #[serde(default, deserialize_with = "size")]
    pub max_size: Option<u64>,
}

/// Reads `"50GB"`, `"20GiB"`, `"500MB"` or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("{text:?}: a size is a number with a unit, as \"50GB\""))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        u => return Err(format!("{text:?}: unknown unit {u:?}")),
    };
    Ok((n * factor as f64) as u64)
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_size(&text).map(Some).map_err(serde::de::Error::custom)
}

fn tag_ttl() -> Duration {
    Duration::from_secs(300)
}

fn timeout() -> Duration {
    Duration::from_secs(30)
}

impl MirrorConfig {
    /// Reads `--mirror URL` (the root) or `--mirror PREFIX=URL`.
    pub fn parse_flag(text: &str) -> Result<MirrorConfig, String> {
        let (prefix, url) = match text.split_once('=') {
            Some((p, u)) if !p.contains("://") => (Some(p.trim_matches('/').to_owned()), u),
            _ => (None, text),
        };
        let config = MirrorConfig {
            url: url.trim_end_matches('/').to_owned(),
            prefix,
            username: None,
            password: None,
            password_file: None,
            credential_helper: None,
            tag_ttl: tag_ttl(),
            timeout: timeout(),
            insecure: false,
            ca_file: None,
            max_size: None,
        };
        config.check()?;
        Ok(config)
    }

    /// Refuses a URL that is not `http(s)://HOST[:PORT]` and a prefix that is not a name.
    pub fn check(&self) -> Result<(), String> {
        let host = self.url.strip_prefix("https://").or_else(|| self.url.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.trim_end_matches('/').contains('/')) {
            return Err(format!("mirror {:?}: the upstream must be http(s)://HOST[:PORT]", self.url));
        }
        if host.is_some_and(|h| h.contains('@')) {
            return Err(format!(
                "mirror {:?}: put credentials in username and password_file, not in the URL",
                self.url
            ));
        }
        if let Some(p) = &self.prefix {
            oci::reference::check_repository_path(p).map_err(|e| format!("mirror prefix {p:?}: {e}"))?;
        }
        Ok(())
    }

    /// What garbage collection needs of this entry.
    pub fn scope(&self) -> crate::gc::MirrorScope {
        crate::gc::MirrorScope { prefix: self.prefix.clone(), max_size: self.max_size }
    }

    /// The upstream repository for `name`, when this entry serves it.
    pub fn upstream_repository<'a>(&self, name: &'a str) -> Option<&'a str> {
        match &self.prefix {
            None => Some(name),
            Some(p) => name.strip_prefix(p.as_str())?.strip_prefix('/'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_a_root_or_a_prefixed_upstream() {
        let root = MirrorConfig::parse_flag("https://registry-1.docker.io").unwrap();
        assert_eq!((root.prefix.as_deref(), root.url.as_str()), (None, "https://registry-1.docker.io"));
        assert_eq!(root.upstream_repository("library/busybox"), Some("library/busybox"));
        let ghcr = MirrorConfig::parse_flag("ghcr=https://ghcr.io/").unwrap();
        assert_eq!((ghcr.prefix.as_deref(), ghcr.url.as_str()), (Some("ghcr"), "https://ghcr.io"));
        assert_eq!(ghcr.upstream_repository("ghcr/org/app"), Some("org/app"));
        assert_eq!(ghcr.upstream_repository("ghcrx/app"), None);
        assert_eq!(ghcr.upstream_repository("ghcr"), None);
        assert!(MirrorConfig::parse_flag("registry-1.docker.io").is_err(), "a scheme is needed");
        assert!(MirrorConfig::parse_flag("hub=https://h/x").is_err(), "no path in the upstream");
        assert!(MirrorConfig::parse_flag("https://me:secret@h").is_err(), "no credentials in the URL");
        assert!(MirrorConfig::parse_flag("Bad=https://h").is_err(), "a prefix is a repository name");
        assert_eq!(parse_size("50GB"), Ok(50_000_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5 MB"), Ok(1_500_000));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("12 parsecs").is_err());
    }
}
