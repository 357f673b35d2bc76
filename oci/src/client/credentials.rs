//! Registry credentials as docker keeps them: `config.json` with `auths` (base64
//! `user:password`), `credHelpers` and `credsStore` (`docker-credential-<name>`).
//!
//! Where the file is: `$REGISTRY_AUTH_FILE` (podman's name for the same format), else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// A user name and a secret (a password or an identity token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The account.
    pub username: String,
    /// The password or token.
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("username", &self.username).finish_non_exhaustive()
    }
}

/// The key docker uses for a registry host in `auths`: Docker Hub has a legacy URL.
pub fn auth_key(domain: &str) -> String {
    match domain {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/".to_owned(),
        d => d.to_owned(),
    }
}

/// The `auths` keys a registry's credential may be stored under, in the order `lookup`
/// tries them: docker's own key, then the scheme-prefixed and bare host names that other
/// tools (and older dockers) write.
fn auth_keys(domain: &str) -> Vec<String> {
    let mut keys = vec![auth_key(domain), format!("https://{domain}"), domain.to_owned(), format!("http://{domain}")];
    keys.dedup();
    keys
}

/// The config file berth reads and `berth login` writes.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".docker/config.json")
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers", skip_serializing_if = "BTreeMap::is_empty")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore", skip_serializing_if = "Option::is_none")]
    creds_store: Option<String>,
    /// Everything else docker keeps there (proxies, aliases, ...) survives a login.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identitytoken: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

fn read_config() -> Result<ConfigFile> {
    let path = config_path();
    match std::fs::read(&path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(ConfigFile::default()),
        Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::InvalidJson { what: "docker config.json", source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

fn write_config(cfg: &ConfigFile) -> Result<()> {
    let path = config_path();
    let dir = path.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).ctx(|| format!("create a file in {}", dir.display()))?;
    let bytes =
        serde_json::to_vec_pretty(cfg).map_err(|source| Error::InvalidJson { what: "docker config.json", source })?;
    tmp.write_all(&bytes).ctx(|| format!("write {}", path.display()))?;
    tmp.persist(&path).map_err(|e| Error::io(format!("write {}", path.display()), e.error))?;
    Ok(())
}

fn helper_for(cfg: &ConfigFile, domain: &str) -> Option<String> {
    cfg.cred_helpers.get(domain).or(cfg.cred_helpers.get(&auth_key(domain))).or(cfg.creds_store.as_ref()).cloned()
}

/// Runs `docker-credential-<helper> <verb>` with `input` on stdin.
fn run_helper(helper: &str, verb: &str, input: &str) -> Result<Vec<u8>> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx(|| format!("run {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).ctx(|| format!("write to {program}"))?;
    }
    let out = child.wait_with_output().ctx(|| format!("run {program}"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        return Err(Error::io(format!("{program} {verb}"), std::io::Error::other(msg)));
    }
    Ok(out.stdout)
}

/// What `docker-credential-<helper> get` holds for a registry domain: a server (the
/// registry's pull-through mirror) names its helper itself rather than through config.json.
pub fn from_helper(helper: &str, domain: &str) -> Result<Option<Credential>> {
    #[derive(Deserialize)]
    struct HelperCred {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    match run_helper(helper, "get", &auth_key(domain)) {
        Ok(out) => {
            let c: HelperCred = serde_json::from_slice(&out)
                .map_err(|source| Error::InvalidJson { what: "credential helper output", source })?;
            Ok(Some(Credential { username: c.username, secret: c.secret }))
        }
        // Helpers answer "credentials not found" with a failure: that is no credential.
        Err(Error::Io { source, .. }) if source.to_string().contains("not found") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The stored credential for a registry domain, if any.
pub fn lookup(domain: &str) -> Result<Option<Credential>> {
    let cfg = read_config()?;
    if let Some(helper) = helper_for(&cfg, domain) {
        return from_helper(&helper, domain);
    }
    let Some(entry) = auth_keys(domain).iter().find_map(|k| cfg.auths.get(k)) else { return Ok(None) };
    if let Some(auth) = &entry.auth {
        let raw = STANDARD.decode(auth.trim()).map_err(|_| Error::InvalidDocument {
            what: "docker config.json",
            reason: format!("auth for {domain} is not base64"),
        })?;
        let text = String::from_utf8_lossy(&raw);
        let (u, p) = text.split_once(':').ok_or_else(|| Error::InvalidDocument {
            what: "docker config.json",
            reason: format!("auth for {domain} is not user:password"),
        })?;
        return Ok(Some(Credential { username: u.to_owned(), secret: p.to_owned() }));
    }
    Ok(entry.identitytoken.clone().map(|t| Credential { username: "<token>".into(), secret: t }))
}

/// Saves a credential (through the configured helper, or base64 in `auths`).
pub fn store(domain: &str, cred: &Credential) -> Result<()> {
    let mut cfg = read_config()?;
    if let Some(helper) = helper_for(&cfg, domain) {
        let input =
            serde_json::json!({"ServerURL": auth_key(domain), "Username": cred.username, "Secret": cred.secret});
        run_helper(&helper, "store", &input.to_string())?;
        return Ok(());
    }
    let entry = cfg.auths.entry(auth_key(domain)).or_default();
    entry.auth = Some(STANDARD.encode(format!("{}:{}", cred.username, cred.secret)));
    entry.identitytoken = None;
    write_config(&cfg)
}

/// Removes a credential; `false` when there was none.
pub fn erase(domain: &str) -> Result<bool> {
    let mut cfg = read_config()?;
    if let Some(helper) = helper_for(&cfg, domain) {
        run_helper(&helper, "erase", &auth_key(domain))?;
        return Ok(true);
    }
    // Every key lookup reads, as docker's logout removes the scheme-prefixed ones too.
    let mut existed = false;
    for key in auth_keys(domain) {
        existed |= cfg.auths.remove(&key).is_some();
    }
    if existed {
        write_config(&cfg)?;
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests change process-wide variables; this keeps them from running at once.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn store_lookup_erase_round_trip_and_keep_other_keys() {
        let _g = ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(&file, r#"{"proxies":{"default":{"httpProxy":"x"}},"auths":{"other.io":{"auth":"dTpw"}}}"#)
            .unwrap();
        std::env::set_var("REGISTRY_AUTH_FILE", &file);
        store("localhost:5000", &Credential { username: "alice".into(), secret: "pa:ss".into() }).unwrap();
        let c = lookup("localhost:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("alice", "pa:ss"));
        assert_eq!(lookup("other.io").unwrap().unwrap().username, "u");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("proxies") && text.contains("YWxpY2U6cGE6c3M="), "{text}");
        assert!(erase("localhost:5000").unwrap());
        assert!(lookup("localhost:5000").unwrap().is_none());
        std::env::remove_var("REGISTRY_AUTH_FILE");
    }

    #[test]
    fn erase_removes_every_key_lookup_reads() {
        let _g = ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        let both = r#"{"auths":{"https://reg.io:5000":{"auth":"dTpw"},"http://reg.io:5000":{"auth":"dTpw"},"other.io":{"auth":"dTpw"}}}"#;
        std::fs::write(&file, both).unwrap();
        std::env::set_var("REGISTRY_AUTH_FILE", &file);
        assert_eq!(lookup("reg.io:5000").unwrap().unwrap().username, "u");
        let erased = erase("reg.io:5000").unwrap();
        let after = lookup("reg.io:5000").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let again = erase("reg.io:5000").unwrap();
        std::env::remove_var("REGISTRY_AUTH_FILE");
        assert!(erased, "a credential under https:// is a credential");
        assert!(after.is_none());
        assert!(!text.contains("reg.io") && text.contains("other.io"), "{text}");
        assert!(!again, "nothing left to remove");
    }

    #[test]
    fn docker_hub_uses_the_legacy_key() {
        assert_eq!(auth_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(auth_key("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn credential_helpers_are_asked() {
        let _g = ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(&helper, "#!/bin/sh\nread server\n[ \"$1\" = get ] && echo \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"bot\\\",\\\"Secret\\\":\\\"tok\\\"}\"\n").unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, r#"{"credHelpers":{"ghcr.io":"fake"}}"#).unwrap();
        std::env::set_var("REGISTRY_AUTH_FILE", &file);
        let old_path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{old_path}", dir.path().display()));
        let c = lookup("ghcr.io").unwrap().unwrap();
        std::env::set_var("PATH", old_path);
        std::env::remove_var("REGISTRY_AUTH_FILE");
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("bot", "tok"));
    }
}
