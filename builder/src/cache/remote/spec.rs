//! `--cache-to` and `--cache-from` values, as buildx spells them:
//! `type=registry,ref=REF,mode=max`, `type=local,dest=DIR`, `type=inline`, `type=s3,...`,
//! and a bare image reference for `type=registry,ref=IMAGE`.

use std::path::PathBuf;

use oci::layer::Compression;

use crate::error::{Error, Result};

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A manifest in a registry (`type=registry,ref=...`).
    Registry {
        /// The reference, `REGISTRY/REPO:TAG`.
        reference: String,
    },
    /// An OCI image layout directory (`type=local,dest=DIR` / `src=DIR`).
    Local {
        /// The layout's directory.
        dir: PathBuf,
        /// `digest=`: this manifest rather than the layout's newest `tag` entry.
        digest: Option<oci::Digest>,
        /// `tag=` (default `latest`): the entry's name in `index.json`.
        tag: String,
    },
    /// The records inside the built image's config (`type=inline`); on import, an image.
    Inline,
    /// An S3 bucket (`type=s3,bucket=B,region=R,...`).
    S3(S3Location),
}

/// Where in S3 a cache lives, as BuildKit's s3 cache names the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `bucket=`.
    pub bucket: String,
    /// `region=` (else `AWS_REGION`/`AWS_DEFAULT_REGION` or the profile's).
    pub region: Option<String>,
    /// `endpoint_url=`: an S3-compatible service.
    pub endpoint_url: Option<String>,
    /// `prefix=`: put before every object name.
    pub prefix: String,
    /// `name=` (default `berth`): the cache's name under `manifests/`.
    pub name: String,
    /// `use_path_style=true`: bucket in the path, not the host name.
    pub use_path_style: bool,
}

/// `mode=`: which steps an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The steps of the final image.
    #[default]
    Min,
    /// Every step of every stage that ran.
    Max,
}

/// `mounts=`: which cache mounts an export carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mounts {
    /// None (the default).
    #[default]
    None,
    /// `mounts=true`: every cache mount the build used.
    All,
    /// `mounts=ID1,ID2` (in the value, ids are separated by `;` or given as repeated keys).
    Ids(Vec<String>),
}

impl Mounts {
    /// True when the mount `id` goes into the export.
    pub fn includes(&self, id: &str) -> bool {
        match self {
            Mounts::None => false,
            Mounts::All => true,
            Mounts::Ids(ids) => ids.iter().any(|i| i == id),
        }
    }
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// Where it goes.
    pub location: Location,
    /// `mode=min|max`.
    pub mode: Mode,
    /// `compression=gzip|zstd|uncompressed` of the layers written for it.
    pub compression: Compression,
    /// `compression-level=N` (gzip 1-9, zstd 1-19); None for berth's default.
    pub compression_level: Option<u32>,
    /// `ignore-error=true`: a failed export warns instead of failing the build.
    pub ignore_error: bool,
    /// `mounts=`.
    pub mounts: Mounts,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSpec {
    /// Where it is read from.
    pub location: Location,
}

impl Location {
    /// How progress lines and errors name it.
    pub fn describe(&self) -> String {
        match self {
            Location::Registry { reference } => format!("registry {reference}"),
            Location::Local { dir, .. } => format!("local {}", dir.display()),
            Location::Inline => "inline".into(),
            Location::S3(s) => format!("s3 {}/{}manifests/{}", s.bucket, s.prefix, s.name),
        }
    }
}

fn bad(flag: &str, value: &str, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{flag} {value:?}: {why}"))
}

/// The `key=value` fields of one flag value; `mounts=` may list several ids after it
/// (`mounts=a,b` reads as the ids `a` and `b` when `b` has no `=`).
fn fields<'a>(flag: &str, s: &'a str) -> Result<Vec<(&'a str, String)>> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for part in s.split(',') {
        match part.split_once('=') {
            Some((k, v)) => out.push((k.trim(), v.to_owned())),
            None if out.last().is_some_and(|(k, _)| *k == "mounts") => {
                if let Some(last) = out.last_mut() {
                    last.1 = format!("{};{part}", last.1);
                }
            }
            None => return Err(bad(flag, s, format!("{part:?} is not KEY=VALUE"))),
        }
    }
    Ok(out)
}

fn flag_bool(flag: &str, s: &str, key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(flag, s, format!("{key}={v}: expected true or false"))),
    }
}

/// Reads the location part of a value; other keys are handed back.
fn location(flag: &str, s: &str, fields: &[(&str, String)], exporting: bool) -> Result<Location> {
    let get = |k: &str| fields.iter().rev().find(|(f, _)| *f == k).map(|(_, v)| v.clone());
    let kind = get("type").ok_or_else(|| bad(flag, s, "type= is missing (registry, local, inline, s3)"))?;
    Ok(match kind.as_str() {
        "registry" => Location::Registry { reference: get("ref").ok_or_else(|| bad(flag, s, "ref= is missing"))? },
        "local" => {
            let key = if exporting { "dest" } else { "src" };
            let dir = get(key).ok_or_else(|| bad(flag, s, format!("{key}= is missing")))?;
            // An unset CI variable must not make the current directory the cache.
            if dir.trim().is_empty() {
                return Err(bad(flag, s, format!("{key}= is empty: name the cache directory")));
            }
            let digest = match get("digest") {
                Some(d) => Some(d.parse().map_err(|e| bad(flag, s, format!("digest=: {e}")))?),
                None => None,
            };
            Location::Local { dir: dir.into(), digest, tag: get("tag").unwrap_or_else(|| "latest".into()) }
        }
        "inline" => Location::Inline,
        "s3" => Location::S3(S3Location {
            bucket: get("bucket").ok_or_else(|| bad(flag, s, "bucket= is missing"))?,
            region: get("region"),
            endpoint_url: get("endpoint_url"),
            prefix: get("prefix").unwrap_or_default(),
            name: get("name").unwrap_or_else(|| "berth".into()),
            use_path_style: get("use_path_style")
                .map(|v| flag_bool(flag, s, "use_path_style", &v))
                .transpose()?
                .unwrap_or(false),
        }),
        "gha" | "azblob" => {
            return Err(bad(flag, s, format!("type={kind} is not supported here (registry, local, inline, s3)")))
        }
        other => return Err(bad(flag, s, format!("unknown type={other} (registry, local, inline, s3)"))),
    })
}

/// A `compression-level=` value, in the range its codec takes.
fn level(flag: &str, s: &str, compression: Compression, n: &str) -> Result<u32> {
    let range = match compression {
        Compression::Gzip => 1..=9,
        Compression::Zstd => 1..=19,
        Compression::None => return Err(bad(flag, s, "compression-level needs compression=gzip or zstd")),
    };
    match n.parse::<u32>() {
        Ok(l) if range.contains(&l) => Ok(l),
        _ => {
            Err(bad(flag, s, format!("compression-level={n}: {compression:?} takes {}-{}", range.start(), range.end())))
        }
    }
}

/// The keys every exporting type but inline takes.
const EXPORT_KEYS: [&str; 5] = ["mode", "compression", "compression-level", "ignore-error", "mounts"];
/// buildx keys a registry or local export accepts and ignores (berth always writes an OCI
/// image manifest with OCI media types).
const IGNORED_KEYS: [&str; 3] = ["oci-mediatypes", "image-manifest", "force-compression"];
/// Where an S3 cache is (both ways); the credential keys are accepted and ignored.
const S3_KEYS: [&str; 9] = [
    "bucket",
    "region",
    "endpoint_url",
    "prefix",
    "name",
    "use_path_style",
    "access_key_id",
    "secret_access_key",
    "session_token",
];

/// The keys each type takes, beside `type`.
fn known(kind: &str, exporting: bool) -> Vec<&'static str> {
    let (own, shared): (&[&str], &[&[&str]]) = match (kind, exporting) {
        ("registry", true) => (&["ref"], &[&EXPORT_KEYS, &IGNORED_KEYS]),
        ("registry", false) => (&["ref"], &[]),
        ("local", true) => (&["dest", "tag"], &[&EXPORT_KEYS, &IGNORED_KEYS]),
        ("local", false) => (&["src", "digest", "tag"], &[]),
        ("inline", true) => (&["mode", "ignore-error"], &[]),
        ("inline", false) => (&[], &[]),
        (_, true) => (&S3_KEYS, &[&EXPORT_KEYS]),
        (_, false) => (&S3_KEYS, &[]),
    };
    own.iter().chain(shared.iter().flat_map(|k| k.iter())).copied().collect()
}

fn check_keys(flag: &str, s: &str, fields: &[(&str, String)], exporting: bool) -> Result<()> {
    let kind = fields.iter().find(|(k, _)| *k == "type").map(|(_, v)| v.as_str()).unwrap_or("");
    let allowed = known(kind, exporting);
    for (k, _) in fields {
        if *k != "type" && !allowed.contains(k) {
            return Err(bad(flag, s, format!("type={kind} takes no {k}= (it takes {})", allowed.join(", "))));
        }
    }
    Ok(())
}

impl ImportSpec {
    /// One `--cache-from` value; a bare reference is `type=registry,ref=IT`.
    pub fn parse(s: &str) -> Result<ImportSpec> {
        const FLAG: &str = "--cache-from";
        if !s.contains('=') {
            if s.is_empty() {
                return Err(bad(FLAG, s, "empty"));
            }
            return Ok(ImportSpec { location: Location::Registry { reference: s.to_owned() } });
        }
        let f = fields(FLAG, s)?;
        let location = location(FLAG, s, &f, false)?;
        check_keys(FLAG, s, &f, false)?;
        if location == Location::Inline {
            return Err(bad(FLAG, s, "type=inline is written by --cache-to; read it with type=registry,ref=IMAGE"));
        }
        Ok(ImportSpec { location })
    }
}

impl ExportSpec {
    /// One `--cache-to` value.
    pub fn parse(s: &str) -> Result<ExportSpec> {
        const FLAG: &str = "--cache-to";
        let f = fields(FLAG, s)?;
        let location = location(FLAG, s, &f, true)?;
        check_keys(FLAG, s, &f, true)?;
        let get = |k: &str| f.iter().rev().find(|(x, _)| *x == k).map(|(_, v)| v.clone());
        let mode = match get("mode").as_deref() {
            None | Some("min") => Mode::Min,
            Some("max") if location == Location::Inline => {
                return Err(bad(
                    FLAG,
                    s,
                    "type=inline carries mode=min only (as BuildKit): use a registry cache for mode=max",
                ))
            }
            Some("max") => Mode::Max,
            Some(m) => return Err(bad(FLAG, s, format!("mode={m}: expected min or max"))),
        };
        let compression = match get("compression").as_deref() {
            None | Some("gzip") => Compression::Gzip,
            Some("zstd") => Compression::Zstd,
            Some("uncompressed") => Compression::None,
            Some(c) => return Err(bad(FLAG, s, format!("compression={c}: expected gzip, zstd or uncompressed"))),
        };
        let compression_level = match get("compression-level") {
            None => None,
            Some(n) => Some(level(FLAG, s, compression, &n)?),
        };
        let ignore_error =
            get("ignore-error").map(|v| flag_bool(FLAG, s, "ignore-error", &v)).transpose()?.unwrap_or(false);
        let mounts = match get("mounts").as_deref() {
            None | Some("false") => Mounts::None,
            Some("true") => Mounts::All,
            Some(ids) => Mounts::Ids(ids.split(';').filter(|i| !i.is_empty()).map(str::to_owned).collect()),
        };
        Ok(ExportSpec { location, mode, compression, compression_level, ignore_error, mounts })
    }

    /// How its plain layers are compressed.
    pub fn codec(&self) -> super::export::Codec {
        super::export::Codec { compression: self.compression, level: self.compression_level, skeleton: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_spellings_parse() {
        let e = ExportSpec::parse("type=registry,ref=localhost:5000/app:cache,mode=max,compression=zstd").unwrap();
        assert_eq!(e.location, Location::Registry { reference: "localhost:5000/app:cache".into() });
        assert_eq!((e.mode, e.compression, e.ignore_error), (Mode::Max, Compression::Zstd, false));
        let e = ExportSpec::parse("type=local,dest=/tmp/c,mounts=apt,pip,ignore-error=true").unwrap();
        assert_eq!(e.mounts, Mounts::Ids(vec!["apt".into(), "pip".into()]));
        assert!(e.ignore_error);
        assert_eq!(ExportSpec::parse("type=inline").unwrap().location, Location::Inline);
        let s3 = ExportSpec::parse(
            "type=s3,bucket=b,region=us-east-1,endpoint_url=http://127.0.0.1:9000,use_path_style=true,prefix=ci/",
        )
        .unwrap();
        let Location::S3(s) = s3.location else { panic!("not s3") };
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str(), s.name.as_str(), s.use_path_style),
            ("b", "ci/", "berth", true)
        );
        assert_eq!(
            ImportSpec::parse("app:latest").unwrap().location,
            Location::Registry { reference: "app:latest".into() }
        );
        let l = ImportSpec::parse(
            "type=local,src=/c,digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
        )
        .unwrap();
        assert!(matches!(l.location, Location::Local { digest: Some(_), .. }));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |r: Result<ExportSpec>| r.map(|_| ()).unwrap_err().to_string();
        assert!(err(ExportSpec::parse("type=inline,mode=max")).contains("mode=min only"));
        assert!(err(ExportSpec::parse("type=registry")).contains("ref= is missing"));
        assert!(err(ExportSpec::parse("type=registry,ref=a,mode=all")).contains("mode=all"));
        assert!(err(ExportSpec::parse("type=local,src=/x")).contains("dest= is missing"));
        assert!(err(ExportSpec::parse("type=local,dest=/x,tag=t,src=/y")).contains("takes no src="));
        assert!(err(ExportSpec::parse("type=gha")).contains("not supported"));
        let z = ExportSpec::parse("type=local,dest=/x,compression=zstd,compression-level=19").unwrap();
        assert_eq!((z.codec().compression, z.codec().level), (Compression::Zstd, Some(19)));
        assert_eq!(ExportSpec::parse("type=local,dest=/x,compression-level=9").unwrap().compression_level, Some(9));
        assert!(err(ExportSpec::parse("type=local,dest=/x,compression-level=12")).contains("takes 1-9"));
        assert!(err(ExportSpec::parse("type=local,dest=/x,compression=zstd,compression-level=x")).contains("1-19"));
        let none = ExportSpec::parse("type=local,dest=/x,compression=uncompressed,compression-level=1");
        assert!(err(none).contains("needs compression=gzip or zstd"));
        assert!(err(ExportSpec::parse("ref=x")).contains("type= is missing"));
        assert!(ImportSpec::parse("type=inline").is_err());
    }
}
