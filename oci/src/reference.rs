//! Image references (`busybox`, `localhost:5000/a/b:tag`, `name@sha256:…`), parsed and
//! normalised as docker does.
//!
//! The grammar is the distribution project's (`reference/reference.go`):
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] remote-name
//! domain           := host [':' port-number]
//! host             := domain-name | IPv4address | \[ IPv6address \]
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! port-number      := /[0-9]+/
//! remote-name      := path-component ['/' path-component]*
//! path-component   := alpha-numeric [separator alpha-numeric]*
//! alpha-numeric    := /[a-z0-9]+/
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! ```
//!
//! Normalisation: the first component is a domain only if it contains `.` or `:` or is
//! `localhost`; otherwise the domain is `docker.io`, and a one-component name on docker.io
//! gets `library/`. A reference with neither tag nor digest gets the tag `latest`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry that names without a domain refer to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag that references without tag or digest get.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A fully normalised image reference: domain, repository path, and a tag, a digest or both.
///
/// ```
/// let r: oci::Reference = "busybox".parse().unwrap();
/// assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
/// assert_eq!(r.familiar(), "busybox:latest");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry host (and port), e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Domain and path: `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        check_tag(tag, tag)?;
        Ok(Reference { tag: Some(tag.to_owned()), digest: None, ..self.clone() })
    }

    /// The same repository pinned to a digest (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { tag: None, digest: Some(digest), ..self.clone() }
    }

    /// The repository as docker shows it: `busybox`, `user/app`, `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path.strip_prefix(OFFICIAL_PREFIX).filter(|p| !p.contains('/')).unwrap_or(&self.path).to_owned()
        } else {
            self.repository()
        }
    }

    /// The whole reference as docker shows it: `busybox:latest`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        s
    }
}

fn push_suffix(s: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.repository();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Reference> {
        let bad = |reason| Error::InvalidReference { input: input.to_owned(), reason };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse::<Digest>().map_err(|_| bad("invalid digest after '@'"))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(input, t)?;
        }
        if name.is_empty() {
            return Err(bad("missing repository name"));
        }
        if name.len() > NAME_MAX {
            return Err(bad("repository name longer than 255 characters"));
        }
        if digest.is_none() && is_full_hex_id(name) {
            return Err(bad("repository name cannot be a 64-character hex string (that is an image ID)"));
        }
        let (domain, path) = split_domain(name);
        if let Some(d) = domain {
            check_domain(input, d)?;
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        for component in path.split('/') {
            check_path_component(input, component)?;
        }
        let (domain, path) = match domain {
            None | Some(LEGACY_DOMAIN) | Some(DEFAULT_DOMAIN) => {
                let path = if path.contains('/') { path.to_owned() } else { format!("{OFFICIAL_PREFIX}{path}") };
                (DEFAULT_DOMAIN.to_owned(), path)
            }
            Some(d) => (d.to_owned(), path.to_owned()),
        };
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(bad("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Reference { domain, path, tag, digest })
    }
}

/// Checks a repository path (no domain) against the distribution grammar: lowercase
/// components separated by `/`, at most 255 characters. Registries use it on every
/// `<name>` in a URL, which also rules out `..` and empty components.
pub fn check_repository_path(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(Error::InvalidReference {
            input: name.to_owned(),
            reason: "repository name must be 1 to 255 characters",
        });
    }
    name.split('/').try_for_each(|c| check_path_component(name, c))
}

/// Splits off the domain as docker decides it: only a first component with `.` or `:`, or
/// `localhost`, is a domain (an uppercase first component is also one, so that it is refused
/// as a bad domain rather than a bad path).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn is_full_hex_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_tag(input: &str, tag: &str) -> Result<()> {
    let bad = |reason| Error::InvalidReference { input: input.to_owned(), reason };
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match tag.as_bytes() {
        [] => Err(bad("empty tag")),
        _ if tag.len() > TAG_MAX => Err(bad("tag longer than 128 characters")),
        [first, ..] if !word(*first) => Err(bad("tag must start with a letter, digit or '_'")),
        [_, rest @ ..] if !rest.iter().all(|&b| word(b) || b == b'.' || b == b'-') => {
            Err(bad("tag may only hold letters, digits, '_', '.' and '-'"))
        }
        _ => Ok(()),
    }
}

fn check_domain(input: &str, domain: &str) -> Result<()> {
    let bad = |reason| Error::InvalidReference { input: input.to_owned(), reason };
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unterminated IPv6 address in domain"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("invalid IPv6 address in domain"));
        }
        match after {
            "" => return Ok(()),
            p => (None, Some(p.strip_prefix(':').ok_or_else(|| bad("junk after IPv6 address in domain"))?)),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("port must be a number"));
        }
    }
    if let Some(host) = host {
        for c in host.split('.') {
            let b = c.as_bytes();
            let ok = !b.is_empty()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-';
            if !ok {
                return Err(bad("invalid domain name"));
            }
        }
    }
    Ok(())
}

fn check_path_component(input: &str, component: &str) -> Result<()> {
    let bad = |reason| Error::InvalidReference { input: input.to_owned(), reason };
    let b = component.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() {
        return Err(bad("empty path component"));
    }
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(bad("path components must start and end with a lowercase letter or digit"));
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(bad("path components are separated by '.', '_', '__' or dashes only"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn norm(s: &str) -> String {
        s.parse::<Reference>().unwrap_or_else(|e| panic!("{s:?}: {e}")).to_string()
    }

    #[test]
    fn normalises_as_docker_does() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("user/app/sub", "docker.io/user/app/sub:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
            ("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"),
            ("[::1]:5000/app:v1", "[::1]:5000/app:v1"),
            ("ghcr.io/org/app:1.0.0-rc.1", "ghcr.io/org/app:1.0.0-rc.1"),
            ("example.com/a__b/c-d/e.f/g---h:T_a.g-9", "example.com/a__b/c-d/e.f/g---h:T_a.g-9"),
        ];
        for (input, want) in cases.iter().filter(|(_, w)| !w.is_empty()) {
            assert_eq!(norm(input), *want, "{input}");
        }
    }

    #[test]
    fn digests_with_and_without_tags() {
        let r: Reference = format!("busybox@{D}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));

        let r: Reference = format!("localhost:5000/app:v2@{D}").parse().unwrap();
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.to_string(), format!("localhost:5000/app:v2@{D}"));
        assert_eq!(r.familiar(), format!("localhost:5000/app:v2@{D}"));
    }

    #[test]
    fn port_is_not_a_tag() {
        let r: Reference = "localhost:5000/app".parse().unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "app");
        assert_eq!(r.tag(), Some("latest"));
    }

    #[test]
    fn familiar_forms() {
        let f = |s: &str| s.parse::<Reference>().unwrap().familiar();
        assert_eq!(f("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(f("docker.io/user/app:1"), "user/app:1");
        assert_eq!(f("docker.io/library/a/b"), "library/a/b:latest");
        assert_eq!(f("quay.io/x/y:z"), "quay.io/x/y:z");
    }

    #[test]
    fn refuses_invalid_references_with_a_reason() {
        let cases = [
            ("", "empty reference"),
            (":tag", "missing repository name"),
            ("Busybox", "lowercase"),
            ("busy box", "path components"),
            ("a/../b", "path components"),
            ("../etc/passwd", "invalid domain"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("-a", "start and end"),
            ("a-", "start and end"),
            ("a..b", "separated"),
            ("a___b", "separated"),
            ("a._b", "separated"),
            ("busybox:", "empty tag"),
            ("busybox:-x", "start with"),
            ("busybox:a/b", "port must be a number"),
            ("busybox:a$b", "tag may only"),
            ("busybox@sha256:abc", "invalid digest"),
            ("busybox@md5:d41d8cd98f00b204e9800998ecf8427e", "invalid digest"),
            ("localhost:port/app", "port must be a number"),
            ("-bad.com/app", "invalid domain"),
            ("bad-.com/app", "invalid domain"),
            ("example.com/App", "lowercase"),
            ("[::1/app", "unterminated IPv6"),
            ("[zz::1]/app", "invalid IPv6"),
            ("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "image ID"),
        ];
        for (input, reason) in cases {
            match input.parse::<Reference>() {
                Err(Error::InvalidReference { reason: r, .. }) => {
                    assert!(r.contains(reason), "{input:?}: reason {r:?} does not mention {reason:?}")
                }
                other => panic!("{input:?} should be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn length_limits() {
        let tag = "t".repeat(128);
        assert!(format!("app:{tag}").parse::<Reference>().is_ok());
        assert!(format!("app:{tag}t").parse::<Reference>().is_err());
        let long = format!("example.com/{}", "a".repeat(244));
        assert_eq!(long.len(), 256);
        assert!(long.parse::<Reference>().is_err());
        assert!(format!("example.com/{}", "a".repeat(243)).parse::<Reference>().is_ok());
    }

    #[test]
    fn repository_paths_follow_the_grammar() {
        for ok in ["a", "library/busybox", "a-b/c__d/e.f", "x1/y2/z3"] {
            check_repository_path(ok).unwrap();
        }
        for bad in ["", "A", "a/../b", "../a", "a//b", "/a", "a/", "a..b", "a:b", &"a".repeat(256)] {
            assert!(check_repository_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn with_tag_and_digest() {
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(r.with_tag("v1").unwrap().to_string(), "docker.io/library/busybox:v1");
        assert!(r.with_tag("bad tag").is_err());
        assert_eq!(r.with_digest(D.parse().unwrap()).to_string(), format!("docker.io/library/busybox@{D}"));
    }
}
