//! `RUN --mount=...`: the five mount types and their options, as the Dockerfile reference
//! lists them, parsed after variable expansion.

/// What a RUN mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// A directory from the context, a stage or an image (read-only unless `rw`; writes are discarded).
    Bind,
    /// A directory kept between builds under `$BERTH_ROOT/cache-mounts`.
    Cache,
    /// A fresh tmpfs.
    Tmpfs,
    /// A `--secret` file, never stored in a layer or a cache key.
    Secret,
    /// The `--ssh` agent socket.
    Ssh,
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Used by all at once.
    Shared,
    /// A second user gets a fresh directory.
    Private,
    /// Users take turns.
    Locked,
}

/// One `--mount` of a RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The type.
    pub kind: MountType,
    /// Where it appears in the container (absolute after resolving against WORKDIR).
    pub target: String,
    /// The path inside the source (bind, cache from) or the host file (none for others).
    pub source: Option<String>,
    /// `from=`: a stage or image for bind and cache mounts.
    pub from: Option<String>,
    /// Mounted read-only.
    pub read_only: bool,
    /// `id=`: the cache, secret or ssh id.
    pub id: Option<String>,
    /// `sharing=` for cache mounts.
    pub sharing: Sharing,
    /// `mode=`, `uid=`, `gid=` of a cache directory, secret file or ssh socket.
    pub mode: Option<u32>,
    /// Owner of the mounted directory or file.
    pub uid: Option<u32>,
    /// Group of the mounted directory or file.
    pub gid: Option<u32>,
    /// `size=` of a tmpfs in bytes.
    pub size: Option<u64>,
    /// `required=`: a missing secret or ssh agent is an error.
    pub required: bool,
    /// `env=`: a secret given as an environment variable instead of a file.
    pub env: Option<String>,
}

impl MountSpec {
    /// Parses the comma-separated `key=value` list (values may be quoted).
    pub fn parse(s: &str) -> Result<MountSpec, String> {
        let mut fields = Vec::new();
        for field in split_csv(s)? {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_owned())),
                None => (field.trim().to_ascii_lowercase(), None),
            };
            fields.push((k, v));
        }
        let kind = match fields.iter().find(|(k, _)| k == "type").map(|(_, v)| v.as_deref().unwrap_or("")) {
            None | Some("bind") => MountType::Bind,
            Some("cache") => MountType::Cache,
            Some("tmpfs") => MountType::Tmpfs,
            Some("secret") => MountType::Secret,
            Some("ssh") => MountType::Ssh,
            Some(other) => return Err(format!("unknown mount type {other:?} (bind, cache, tmpfs, secret, ssh)")),
        };
        let mut m = MountSpec {
            kind,
            target: String::new(),
            source: None,
            from: None,
            read_only: kind == MountType::Bind,
            id: None,
            sharing: Sharing::Shared,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            required: false,
            env: None,
        };
        for (k, v) in fields {
            let value = || v.clone().ok_or_else(|| format!("mount option {k} needs a value"));
            let boolean = || match v.as_deref() {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(other) => Err(format!("mount option {k} takes true or false, not {other:?}")),
            };
            match k.as_str() {
                "type" => {}
                "target" | "dst" | "destination" => m.target = value()?,
                "source" | "src" => m.source = Some(value()?),
                "from" => m.from = Some(value()?),
                "readonly" | "ro" => m.read_only = boolean()?,
                "readwrite" | "rw" => m.read_only = !boolean()?,
                "id" => m.id = Some(value()?),
                "sharing" => {
                    m.sharing = match value()?.as_str() {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        other => return Err(format!("unknown sharing {other:?} (shared, private, locked)")),
                    }
                }
                "mode" => {
                    let v = value()?;
                    m.mode = Some(u32::from_str_radix(&v, 8).map_err(|_| format!("invalid mode {v:?} (octal)"))?);
                }
                "uid" => m.uid = Some(value()?.parse().map_err(|_| "invalid uid".to_owned())?),
                "gid" => m.gid = Some(value()?.parse().map_err(|_| "invalid gid".to_owned())?),
                "size" => m.size = Some(parse_size(&value()?)?),
                "required" => m.required = boolean()?,
                "env" => m.env = Some(value()?),
                other => return Err(format!("unknown mount option {other:?}")),
            }
        }
        m.with_defaults()
    }

    /// Each type's defaults (ids, targets, read-only) and the options it needs.
    fn with_defaults(mut self) -> Result<MountSpec, String> {
        let m = &mut self;
        match m.kind {
            MountType::Secret => {
                if m.id.is_none() {
                    m.id = m.target.rsplit('/').next().filter(|s| !s.is_empty()).map(str::to_owned);
                }
                let id = m.id.clone().ok_or("a secret mount needs id= or target=")?;
                if m.target.is_empty() && m.env.is_none() {
                    m.target = format!("/run/secrets/{id}");
                }
                m.read_only = true;
            }
            MountType::Ssh => {
                m.id.get_or_insert_with(|| "default".to_owned());
                if m.target.is_empty() {
                    m.target = "/run/buildkit/ssh_agent.0".to_owned();
                }
                m.read_only = true;
            }
            MountType::Cache => {
                if m.target.is_empty() {
                    return Err("a cache mount needs target=".into());
                }
                m.id.get_or_insert_with(|| clean_path(&m.target));
            }
            MountType::Bind | MountType::Tmpfs => {
                if m.target.is_empty() {
                    return Err(format!(
                        "a {} mount needs target=",
                        if m.kind == MountType::Bind { "bind" } else { "tmpfs" }
                    ));
                }
            }
        }
        Ok(self)
    }
}

/// `64m`, `1g`, `1024` (bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let (num, scale) = match lower.trim_end_matches('b').chars().last() {
        Some('k') => (&lower[..lower.find('k').unwrap_or(0)], 1u64 << 10),
        Some('m') => (&lower[..lower.find('m').unwrap_or(0)], 1 << 20),
        Some('g') => (&lower[..lower.find('g').unwrap_or(0)], 1 << 30),
        _ => (lower.trim_end_matches('b'), 1),
    };
    num.parse::<u64>().map(|n| n * scale).map_err(|_| format!("invalid size {s:?}"))
}

/// Splits on commas outside double quotes, removing the quotes (the CSV BuildKit reads).
fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quote in mount {s:?}"));
    }
    out.push(cur);
    Ok(out.into_iter().filter(|f| !f.is_empty()).collect())
}

/// `path` cleaned lexically as Go's `path.Clean` does: repeated and trailing slashes, `.`
/// and `..` resolved (`..` at the root stays there; a relative path keeps leading `..`).
/// BuildKit's default id of a cache mount, so that `/root/.cache/` and `/root/.cache` share one.
fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            _ => parts.push(part),
        }
    }
    match (rooted, parts.is_empty()) {
        (true, _) => format!("/{}", parts.join("/")),
        (false, true) => ".".to_owned(),
        (false, false) => parts.join("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_mount_without_id_is_keyed_by_its_cleaned_target() {
        for (target, id) in [
            ("/root/.cache/", "/root/.cache"),
            ("//root//./.cache", "/root/.cache"),
            ("/a/../b", "/b"),
            ("/..", "/"),
            ("cache/", "cache"),
            ("../up/./x/..", "../up"),
        ] {
            let c = MountSpec::parse(&format!("type=cache,target={target}")).unwrap();
            assert_eq!(c.id.as_deref(), Some(id), "target {target}");
            assert_eq!(c.target, target, "the target itself stays as written");
        }
        let named = MountSpec::parse("type=cache,id=go,target=/root/.cache/").unwrap();
        assert_eq!(named.id.as_deref(), Some("go"));
    }

    #[test]
    fn every_type_parses_with_defaults() {
        let b = MountSpec::parse("target=/src,source=app").unwrap();
        assert_eq!((b.kind, b.read_only, b.source.as_deref()), (MountType::Bind, true, Some("app")));
        let c = MountSpec::parse("type=cache,target=/root/.cache,sharing=locked").unwrap();
        assert_eq!(
            (c.kind, c.read_only, c.id.as_deref(), c.sharing),
            (MountType::Cache, false, Some("/root/.cache"), Sharing::Locked)
        );
        let t = MountSpec::parse("type=tmpfs,dst=/tmp,size=64m").unwrap();
        assert_eq!((t.kind, t.size), (MountType::Tmpfs, Some(64 << 20)));
        let s = MountSpec::parse("type=secret,id=npmrc").unwrap();
        assert_eq!((s.target.as_str(), s.read_only), ("/run/secrets/npmrc", true));
        let s = MountSpec::parse("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert_eq!((s.env.as_deref(), s.required, s.target.as_str()), (Some("TOKEN"), true, ""));
        let h = MountSpec::parse("type=ssh").unwrap();
        assert_eq!((h.id.as_deref(), h.target.as_str()), (Some("default"), "/run/buildkit/ssh_agent.0"));
        let rw = MountSpec::parse("type=bind,target=/x,rw,from=build,mode=0755,uid=1,gid=2").unwrap();
        assert_eq!(
            (rw.read_only, rw.from.as_deref(), rw.mode, rw.uid, rw.gid),
            (false, Some("build"), Some(0o755), Some(1), Some(2))
        );
        let q = MountSpec::parse("type=bind,\"target=/a,b\"").unwrap();
        assert_eq!(q.target, "/a,b");
    }

    #[test]
    fn mistakes_are_refused_with_the_reason() {
        assert!(MountSpec::parse("type=nfs,target=/x").unwrap_err().contains("unknown mount type"));
        assert!(MountSpec::parse("type=cache").unwrap_err().contains("needs target"));
        assert!(MountSpec::parse("target=/x,colour=red").unwrap_err().contains("colour"));
        assert!(MountSpec::parse("type=cache,target=/x,sharing=sometimes").unwrap_err().contains("sharing"));
        assert!(MountSpec::parse("type=secret").unwrap_err().contains("id="));
    }
}
