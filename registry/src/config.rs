//! The registry's configuration: a TOML file, overridden by flags and `BERTH_REGISTRY_*`
//! variables (the CLI maps those onto this struct).
//!
//! ```toml
//! addr = "0.0.0.0:5000"
//! read_only = false
//! allow_sparse = false
//!
//! [storage]
//! driver = "filesystem"          # or "s3"
//! root = "/var/lib/berth-registry"
//!
//! [storage.delete]               # distribution's storage.delete.enabled
//! enabled = false                # true: the API's DELETE of manifests, tags and blobs works
//!
//! [storage.s3]                   # used when driver = "s3"
//! bucket = "registry"
//! prefix = "prod"
//! region = "us-east-1"
//! endpoint = "https://s3.example.com"
//! path_style = true
//!
//! [tls]
//! cert = "/etc/berth/registry.crt"
//! key = "/etc/berth/registry.key"
//!
//! [auth]
//! mode = "token"                 # none | htpasswd | token
//! htpasswd = "/etc/berth/htpasswd"
//! service = "berth-registry"
//! realm = "https://registry.example.com/token"   # or "auto": from the Host header
//! secret_file = "/etc/berth/token.key"   # share it between replicas
//! token_ttl = "5m"               # how long issued tokens live
//!
//! [[auth.grants]]
//! account = "ci"
//! repository = "team/*"
//! actions = ["pull", "push"]
//!
//! [metrics]
//! addr = "10.0.0.5:5001"         # /metrics here, without auth; else behind the registry's auth
//!
//! [[mirror]]                     # pull-through: hub/library/busybox from Docker Hub
//! prefix = "hub"                 # leave out to mirror at the root (registry-mirrors)
//! url = "https://registry-1.docker.io"
//! username = "me"                # or password_file, or credential_helper = "pass"
//! password = "..."
//! tag_ttl = "5m"                 # tags served from storage this long, then a HEAD
//! timeout = "30s"                # upstream answer (and between chunks)
//! max_size = "50GB"              # gc evicts the least recently pulled beyond it
//! # insecure = true; ca_file = "/etc/berth/upstream-ca.pem"
//!
//! [ui]                           # the web UI under / (the API stays under /v2/)
//! enabled = true
//! session_ttl = "8h"
//! gc_grace = "1h"                # gc from the UI spares what is younger
//!
//! [limits]                       # durations: "500ms", "30s", "5m", "1h"
//! header_read_timeout = "30s"
//! body_idle_timeout = "60s"      # per read/write: slow but moving transfers survive
//! keep_alive_timeout = "60s"
//! tls_handshake_timeout = "10s"
//! max_connections = 4096
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Grant, Mode};

/// Everything `berth registry serve` and `berth registry gc` need.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen (`HOST:PORT`).
    pub addr: Option<String>,
    /// Refuse all writes.
    #[serde(default)]
    pub read_only: bool,
    /// Accept image manifests whose layers were never pushed (sparse manifests, as a partial
    /// mirror keeps); off: such a push is MANIFEST_BLOB_UNKNOWN.
    #[serde(default)]
    pub allow_sparse: bool,
    /// Where content lives.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Authentication and grants.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Where `/metrics` is served.
    #[serde(default)]
    pub metrics: crate::metrics::MetricsConfig,
    /// The web UI.
    #[serde(default)]
    pub ui: crate::ui::UiConfig,
    /// Upstream registries mirrored (pull-through), each under a prefix or at the root.
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<crate::mirror::MirrorConfig>,
    /// Connection timeouts and the connection cap.
    #[serde(default)]
    pub limits: crate::server::Limits,
}

/// Which storage driver, and its settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `filesystem` (default) or `s3`.
    #[serde(default)]
    pub driver: DriverKind,
    /// The directory for the filesystem driver.
    pub root: Option<PathBuf>,
    /// The bucket and connection for the s3 driver.
    pub s3: Option<crate::driver::S3Config>,
    /// Whether clients may delete content through the API (distribution's
    /// `storage.delete.enabled`); off by default, as distribution has it.
    #[serde(default)]
    pub delete: DeleteConfig,
}

/// `[storage.delete]`: distribution's switch for the API's deletes, kept under its name so a
/// distribution config's intent carries over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteConfig {
    /// Accept `DELETE` of manifests, tags and blobs; off, they are `405 UNSUPPORTED` and an
    /// anonymous client (auth off) cannot wipe the registry. gc is not affected.
    #[serde(default)]
    pub enabled: bool,
}

/// The storage drivers a config can name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// Files under `root`.
    #[default]
    Filesystem,
    /// An S3 bucket.
    S3,
}

/// A PEM certificate chain and private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// How clients authenticate, and what each may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// none, htpasswd or token.
    #[serde(default)]
    pub mode: Mode,
    /// The htpasswd file (bcrypt entries).
    pub htpasswd: Option<PathBuf>,
    /// The token realm: the URL of `/token` as clients reach it, or `auto` for
    /// `http(s)://<Host header>/token`; token mode needs it.
    pub realm: Option<String>,
    /// The service name in challenges and tokens.
    pub service: Option<String>,
    /// A file whose bytes sign tokens; replicas must share it.
    pub secret_file: Option<PathBuf>,
    /// How long issued tokens live (default 5 minutes).
    #[serde(default, deserialize_with = "crate::server::duration_opt")]
    pub token_ttl: Option<Duration>,
    /// Who may do what; empty means any authenticated user may do anything.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

impl Config {
    /// Parses a TOML config file's text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::from_toml(&example).unwrap();
        assert_eq!(c.auth.mode, Mode::Token);
        assert_eq!(c.auth.grants.len(), 1);
        assert_eq!(c.auth.token_ttl, Some(Duration::from_secs(300)));
        assert_eq!(c.storage.driver, DriverKind::Filesystem);
        assert!(!c.storage.delete.enabled, "the example shows the default: deletes off");
        assert_eq!(c.limits, crate::server::Limits::default(), "the example shows the defaults");
    }

    #[test]
    fn deletes_are_off_unless_storage_delete_enabled_says_so() {
        assert!(!Config::default().storage.delete.enabled);
        assert!(!Config::from_toml("[storage]\nroot = \"/x\"").unwrap().storage.delete.enabled);
        let c = Config::from_toml("[storage.delete]\nenabled = true").unwrap();
        assert!(c.storage.delete.enabled);
        assert!(Config::from_toml("[storage.delete]\nenable = true").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("adr = \"x\"").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn a_token_ttl_needs_a_unit() {
        assert!(Config::from_toml("[auth]\ntoken_ttl = \"300\"").unwrap_err().contains("a unit"));
        let c = Config::from_toml("[auth]\ntoken_ttl = \"90s\"").unwrap();
        assert_eq!(c.auth.token_ttl, Some(Duration::from_secs(90)));
    }
}
