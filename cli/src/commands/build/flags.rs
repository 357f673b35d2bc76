//! `berth build`'s flag values parsed into the library's types, with docker's spellings.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use builder::context::{Context, Ignore, NamedContext};
use builder::export::Exporter;
use builder::ops::Secret;
use oci::layer::Compression;
use oci::Reference;

/// `-t` names.
pub fn tags(items: &[String]) -> Result<Vec<Reference>> {
    items.iter().map(|t| t.parse().with_context(|| format!("invalid tag {t:?}"))).collect()
}

/// `KEY=VALUE` pairs; with `from_env`, a bare `KEY` takes its value from the environment.
pub fn pairs(items: &[String], flag: &str, from_env: bool) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None if from_env => {
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
            None => bail!("{flag} {item:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

/// `--secret id=ID,src=FILE` or `id=ID,env=VAR` (a bare `id=ID` reads the variable `ID`).
pub fn secrets(items: &[String]) -> Result<HashMap<String, Secret>> {
    let mut out = HashMap::new();
    for item in items {
        let mut id = None;
        let mut secret = None;
        for field in item.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => secret = Some(Secret::File(PathBuf::from(v))),
                Some(("env", v)) => secret = Some(Secret::Env(v.to_owned())),
                Some(("type", "file" | "env")) => {}
                _ => bail!("--secret {item:?}: expected id=ID,src=FILE or id=ID,env=VAR"),
            }
        }
        let id = id.with_context(|| format!("--secret {item:?}: id= is missing"))?;
        let secret = secret.unwrap_or_else(|| Secret::Env(id.clone()));
        if let Secret::File(p) = &secret {
            if !p.is_file() {
                bail!("--secret {item:?}: {} is not a file", p.display());
            }
        }
        out.insert(id, secret);
    }
    Ok(out)
}

/// `--ssh default` (the agent at `$SSH_AUTH_SOCK`) or `--ssh ID=SOCKET`.
pub fn ssh(items: &[String]) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    for item in items {
        let (id, path) = match item.split_once('=') {
            Some((id, p)) => (id.to_owned(), PathBuf::from(p)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK")
                    .with_context(|| format!("--ssh {item}: SSH_AUTH_SOCK is not set"))?;
                (item.clone(), PathBuf::from(sock))
            }
        };
        out.insert(id, path);
    }
    Ok(out)
}

/// `--compression gzip|zstd|uncompressed`.
/// `--build-context NAME=VALUE`s, buildx's: `docker-image://REF` for an image, else a local
/// directory (buildx's other sources are refused by name).
pub fn build_contexts(items: &[String]) -> Result<BTreeMap<String, NamedContext>> {
    let mut named = BTreeMap::new();
    for item in items {
        let Some((name, value)) = item.split_once('=').filter(|(n, v)| !n.is_empty() && !v.is_empty()) else {
            bail!("--build-context {item}: expected NAME=VALUE (docker-image://REF or a directory)");
        };
        let context = if let Some(reference) = value.strip_prefix("docker-image://") {
            reference.parse::<Reference>().with_context(|| format!("--build-context {item}"))?;
            NamedContext::Image(reference.to_owned())
        } else if let Some(scheme) = ["oci-layout://", "target:", "input:", "https://", "http://", "git@"]
            .into_iter()
            .find(|s| value.starts_with(s))
        {
            bail!("--build-context {item}: {scheme} sources are not supported; use docker-image://REF or a directory")
        } else {
            NamedContext::Dir(
                Context::new(Path::new(value), Ignore::default()).with_context(|| format!("--build-context {item}"))?,
            )
        };
        if named.insert(name.to_owned(), context).is_some() {
            bail!("--build-context {name}: given twice");
        }
    }
    Ok(named)
}

pub fn compression(s: &str) -> Result<Compression> {
    Ok(match s {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "uncompressed" => Compression::None,
        other => bail!("unknown --compression {other:?} (gzip, zstd, uncompressed)"),
    })
}

/// `--network default|host|none`: whether RUN steps get the host's network.
pub fn host_network(s: &str) -> Result<bool> {
    Ok(match s {
        "default" | "host" => true,
        "none" => false,
        other => bail!("unknown --network {other:?} (default, host, none)"),
    })
}

/// `--allow`: BuildKit's entitlements; whether `RUN --security=insecure` may run. RUN
/// steps may always use the host's network, so `network.host` is granted already.
pub fn allow(entitlements: &[String]) -> Result<bool> {
    let mut insecure = false;
    for e in entitlements.iter().flat_map(|e| e.split(',')) {
        match e {
            "security.insecure" => insecure = true,
            "network.host" => {}
            other => bail!("unknown --allow {other:?} (security.insecure, network.host)"),
        }
    }
    Ok(insecure)
}

/// One `-o`: `type=oci|docker|tar|local,dest=PATH`, or a bare `DIR` (docker's short form of
/// `type=local,dest=DIR`).
pub fn output(s: &str) -> Result<Exporter> {
    let mut kind = None;
    let mut dest = None;
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_owned()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            None if kind.is_none() && dest.is_none() => {
                kind = Some("local".to_owned());
                dest = Some(PathBuf::from(field));
            }
            _ => bail!("--output {s:?}: expected type=oci|docker|tar|local,dest=PATH"),
        }
    }
    let kind = kind.with_context(|| format!("--output {s:?}: type= is missing"))?;
    let dest = dest.with_context(|| format!("--output {s:?}: dest= is missing"))?;
    match Exporter::new(&kind, dest) {
        Some(e) => Ok(e),
        None => bail!("--output type={kind}: berth writes {} outputs", Exporter::KINDS.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_as_docker_spells_them() {
        assert_eq!(output("type=tar,dest=fs.tar").ok(), Some(Exporter::Tar("fs.tar".into())));
        assert_eq!(output("dest=o.tar,type=oci").ok(), Some(Exporter::Oci("o.tar".into())));
        assert_eq!(output("out").ok(), Some(Exporter::Local("out".into())));
        let e = |s: &str| output(s).map(|_| ()).unwrap_err().to_string();
        assert!(e("type=registry,dest=x").contains("berth writes oci, docker, tar, local outputs"));
        assert!(e("type=oci").contains("dest= is missing"));
        assert!(e("dest=x").contains("type= is missing"));
        assert!(e("type=oci,compression=zstd").contains("expected type="));
    }

    #[test]
    fn build_args_take_bare_names_from_the_environment_labels_do_not() {
        std::env::set_var("BERTH_FLAGS_TEST_ARG", "from-env");
        let args = pairs(&["A=1".into(), "BERTH_FLAGS_TEST_ARG".into(), "UNSET_BERTH_X".into()], "--build-arg", true);
        let args = args.unwrap_or_default();
        assert_eq!(args.get("A").map(String::as_str), Some("1"));
        assert_eq!(args.get("BERTH_FLAGS_TEST_ARG").map(String::as_str), Some("from-env"));
        assert!(!args.contains_key("UNSET_BERTH_X"));
        assert!(pairs(&["bare".into()], "--label", false).is_err());
    }
}
