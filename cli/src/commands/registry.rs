//! `berth registry serve` and `berth registry gc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use registry::api::AppState;
use registry::auth::{parse_htpasswd, Auth, Mode, Realm};
use registry::config::{Config, DriverKind, TlsConfig};
use registry::domain::Registry;
use registry::driver::{FsDriver, S3Driver, StorageDriver};

/// Run and maintain an OCI distribution registry
#[derive(Debug, Args)]
pub struct RegistryCmd {
    #[command(subcommand)]
    command: RegistrySub,
}

#[derive(Debug, Subcommand)]
enum RegistrySub {
    Serve(Serve),
    Gc(Gc),
}

/// Options shared by serve and gc: where the config and the content are.
#[derive(Debug, Args)]
struct Common {
    /// A TOML config file (see docs/registry/config.md); flags override it
    #[arg(long, short = 'c', env = "BERTH_REGISTRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Store content in this directory (filesystem driver) [default: /var/lib/berth-registry]
    #[arg(long, env = "BERTH_REGISTRY_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    /// The storage driver: filesystem or s3
    #[arg(long, env = "BERTH_REGISTRY_STORAGE", value_parser = ["filesystem", "s3"])]
    storage: Option<String>,
}

impl Common {
    fn load(&self) -> Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
                Config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => Config::default(),
        };
        if let Some(r) = &self.root {
            cfg.storage.root = Some(r.clone());
        }
        if let Some(s) = &self.storage {
            cfg.storage.driver = if s == "s3" { DriverKind::S3 } else { DriverKind::Filesystem };
        }
        Ok(cfg)
    }
}

async fn open_driver(cfg: &Config) -> Result<Arc<dyn StorageDriver>> {
    match cfg.storage.driver {
        DriverKind::Filesystem => {
            let root = cfg.storage.root.clone().unwrap_or_else(|| PathBuf::from("/var/lib/berth-registry"));
            Ok(Arc::new(FsDriver::new(&root).with_context(|| format!("open storage {}", root.display()))?))
        }
        DriverKind::S3 => {
            let Some(s3) = cfg.storage.s3.clone() else {
                bail!("storage driver s3 needs a [storage.s3] section in the config file")
            };
            let bucket = s3.bucket.clone();
            Ok(Arc::new(S3Driver::new(s3).await.with_context(|| format!("open s3 bucket {bucket}"))?))
        }
    }
}

/// Serve an OCI distribution registry (push, pull, referrers; delete with --delete-enabled)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth registry serve --addr 127.0.0.1:5000 --root /srv/registry\n  berth registry serve -c /etc/berth/registry.toml\n  berth registry serve --auth htpasswd --htpasswd /etc/berth/htpasswd --tls-cert crt.pem --tls-key key.pem"
)]
struct Serve {
    #[command(flatten)]
    common: Common,
    /// Listen on HOST:PORT [default: 0.0.0.0:5000]
    #[arg(long, env = "BERTH_REGISTRY_ADDR", value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Refuse every write (pushes and deletes)
    #[arg(long, env = "BERTH_REGISTRY_READ_ONLY")]
    read_only: bool,
    /// Let clients delete manifests, tags and blobs through the API and the web UI (off by
    /// default, as distribution's storage.delete.enabled: DELETE is 405 UNSUPPORTED)
    #[arg(long, env = "BERTH_REGISTRY_DELETE_ENABLED")]
    delete_enabled: bool,
    /// Accept image manifests whose layers were never pushed (sparse manifests, as partial
    /// mirrors keep); an index may always name child manifests the repository lacks
    #[arg(long, env = "BERTH_REGISTRY_ALLOW_SPARSE")]
    allow_sparse: bool,
    /// Serve HTTPS with this certificate chain (PEM)
    #[arg(long, env = "BERTH_REGISTRY_TLS_CERT", requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key for --tls-cert (PEM)
    #[arg(long, env = "BERTH_REGISTRY_TLS_KEY", requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Authentication: none, htpasswd (basic auth) or token (bearer tokens from /token)
    #[arg(long, env = "BERTH_REGISTRY_AUTH", value_parser = ["none", "htpasswd", "token"])]
    auth: Option<String>,
    /// The htpasswd file (bcrypt entries, as `htpasswd -B` writes them)
    #[arg(long, env = "BERTH_REGISTRY_HTPASSWD", value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    /// A file whose content signs tokens; replicas behind one address must share it
    #[arg(long, env = "BERTH_REGISTRY_TOKEN_SECRET_FILE", value_name = "FILE")]
    token_secret_file: Option<PathBuf>,
    /// The token endpoint URL clients are sent to (https://HOST/token), or `auto` to take it
    /// from each request's Host header
    #[arg(long, env = "BERTH_REGISTRY_TOKEN_REALM", value_name = "URL|auto")]
    token_realm: Option<String>,
    /// Serve /metrics on this HOST:PORT only, without auth (a monitoring network's address)
    #[arg(long, env = "BERTH_REGISTRY_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Mirror an upstream registry (pull-through): URL mirrors it at the root (for clients'
    /// registry-mirrors), PREFIX=URL under a repository prefix (hub=https://registry-1.docker.io)
    #[arg(long = "mirror", env = "BERTH_REGISTRY_MIRROR", value_delimiter = ',', value_name = "[PREFIX=]URL",
          value_parser = registry::mirror::MirrorConfig::parse_flag)]
    mirrors: Vec<registry::mirror::MirrorConfig>,
    /// Do not serve the web UI under / (the API under /v2/ is unchanged)
    #[arg(long, env = "BERTH_REGISTRY_NO_UI")]
    no_ui: bool,
    /// Serve at most N connections at once; more wait to be accepted [default: 4096]
    #[arg(long, env = "BERTH_REGISTRY_MAX_CONNECTIONS", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_connections: Option<u64>,
}

impl Serve {
    /// The config file's settings with the flags (and their variables) over them: a flag
    /// replaces a value, and a switch (`--read-only`, `--delete-enabled`) can only turn on.
    fn config(self) -> Result<Config> {
        let mut cfg = self.common.load()?;
        if let Some(a) = self.addr {
            cfg.addr = Some(a);
        }
        cfg.read_only |= self.read_only;
        cfg.storage.delete.enabled |= self.delete_enabled;
        cfg.allow_sparse |= self.allow_sparse;
        if self.no_ui {
            cfg.ui.enabled = false;
        }
        cfg.mirrors.extend(self.mirrors);
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            cfg.tls = Some(TlsConfig { cert, key });
        }
        if let Some(a) = self.auth {
            cfg.auth.mode = match a.as_str() {
                "htpasswd" => Mode::Htpasswd,
                "token" => Mode::Token,
                _ => Mode::None,
            };
        }
        if let Some(h) = self.htpasswd {
            cfg.auth.htpasswd = Some(h);
        }
        if let Some(s) = self.token_secret_file {
            cfg.auth.secret_file = Some(s);
        }
        if let Some(r) = self.token_realm {
            cfg.auth.realm = Some(r);
        }
        if let Some(m) = self.metrics_addr {
            cfg.metrics.addr = Some(m);
        }
        if let Some(n) = self.max_connections {
            cfg.limits.max_connections = usize::try_from(n)?;
        }
        Ok(cfg)
    }

    fn run(self) -> Result<()> {
        let cfg = self.config()?;
        let auth = build_auth(&cfg)?;
        let tls = cfg.tls.as_ref().map(|t| registry::server::tls_config(&t.cert, &t.key)).transpose()?;
        let addr = cfg.addr.clone().unwrap_or_else(|| "0.0.0.0:5000".into());
        let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
        rt.block_on(async move {
            let driver = open_driver(&cfg).await?;
            let registry = Registry::new(driver).allow_sparse(cfg.allow_sparse);
            let mirror = match cfg.mirrors.is_empty() {
                true => None,
                false => Some(Arc::new(
                    registry::mirror::Mirror::new(cfg.mirrors.clone(), registry.clone())
                        .await
                        .map_err(anyhow::Error::msg)?,
                )),
            };
            let state = AppState {
                registry,
                auth: Arc::new(auth),
                metrics: Arc::default(),
                read_only: cfg.read_only,
                delete_enabled: cfg.storage.delete.enabled,
                mirror,
            };
            let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listen on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(
                addr = %local,
                tls = cfg.tls.is_some(),
                read_only = cfg.read_only,
                delete_enabled = cfg.storage.delete.enabled,
                "registry listening"
            );
            // Tests and scripts read the bound address (useful with port 0) from stdout.
            println!("listening on {local}");
            registry::server::keep_freed_memory();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let metrics_here = cfg.metrics.addr.is_none();
            if let Some(metrics_addr) = &cfg.metrics.addr {
                let l = tokio::net::TcpListener::bind(metrics_addr)
                    .await
                    .with_context(|| format!("listen on {metrics_addr} for metrics"))?;
                println!("metrics on {}", l.local_addr()?);
                let router = registry::api::metrics_app(state.clone());
                let (stopped, limits) = (stopped.clone(), cfg.limits);
                tokio::spawn(async move {
                    let served = registry::server::serve_with_limits(l, router, None, limits, stop_when(stopped));
                    if let Err(e) = served.await {
                        tracing::error!(error = %e, "the metrics listener stopped");
                    }
                });
            }
            let router = registry::api::app_full(state, metrics_here, Some(cfg.ui.clone()));
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            registry::server::serve_with_limits(listener, router, tls, cfg.limits, stop_when(stopped)).await?;
            Ok(())
        })
    }
}

/// Resolves once `stop` says true (or its sender is gone): one shutdown for several listeners.
async fn stop_when(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn build_auth(cfg: &Config) -> Result<Auth> {
    let a = &cfg.auth;
    if a.mode == Mode::None {
        return Ok(Auth::none());
    }
    let path = a.htpasswd.as_ref().context("--auth htpasswd and token need --htpasswd FILE")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let users = parse_htpasswd(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let key = match &a.secret_file {
        Some(p) => std::fs::read(p).with_context(|| format!("read {}", p.display()))?,
        None => Vec::new(),
    };
    let service = a.service.clone().unwrap_or_else(|| "berth-registry".into());
    let realm = match (&a.realm, a.mode) {
        (Some(r), _) => Realm::parse(r).map_err(anyhow::Error::msg)?,
        (None, Mode::Token) => bail!(
            "token auth needs its realm: set auth.realm (or --token-realm) to the URL clients reach /token at, \
             such as https://registry.example.com/token, or to \"auto\" to take it from each request's Host header"
        ),
        (None, _) => Realm::FromHost,
    };
    let auth = Auth::new(a.mode, users, a.grants.clone(), key, realm, service, cfg.tls.is_some());
    Ok(auth.with_token_ttl(a.token_ttl.unwrap_or(registry::auth::DEFAULT_TOKEN_TTL)))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Delete untagged manifests, blobs no manifest uses and abandoned uploads
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth registry gc --root /srv/registry --dry-run\n  berth registry gc -c /etc/berth/registry.toml"
)]
struct Gc {
    #[command(flatten)]
    common: Common,
    /// Only report what would be deleted
    #[arg(long, short = 'd')]
    dry_run: bool,
    /// Spare anything written within this long (pushes running now stay safe)
    #[arg(long, default_value = "1h", value_parser = super::images::parse_duration)]
    grace: Duration,
    /// Purge upload sessions not written to for this long (distribution's uploadpurging age)
    #[arg(long, default_value = "7d", value_parser = super::images::parse_duration)]
    upload_age: Duration,
}

impl Gc {
    fn run(self) -> Result<()> {
        let cfg = self.common.load()?;
        let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
        let report = rt.block_on(async {
            let driver = open_driver(&cfg).await?;
            let opts = registry::gc::GcOptions {
                dry_run: self.dry_run,
                grace: self.grace,
                upload_age: self.upload_age,
                mirrored: cfg.mirrors.iter().map(registry::mirror::MirrorConfig::scope).collect(),
            };
            anyhow::Ok(registry::gc::collect_with(&Registry::new(driver), opts).await?)
        })?;
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        for (repo, d) in &report.manifests {
            println!("{verb} manifest {repo}@{d}");
        }
        for d in &report.blobs {
            println!("{verb} blob {d}");
        }
        for (repo, id) in &report.uploads {
            println!("{verb} upload {repo}/{id}");
        }
        println!(
            "{} manifests, {} blobs ({}) and {} abandoned uploads {verb}",
            report.manifests.len(),
            report.blobs.len(),
            crate::format::size(report.bytes),
            report.uploads.len()
        );
        Ok(())
    }
}

impl RegistryCmd {
    /// Runs the chosen registry subcommand.
    pub fn run(self, _root: &Path) -> Result<()> {
        init_logging();
        match self.command {
            RegistrySub::Serve(s) => s.run(),
            RegistrySub::Gc(g) => g.run(),
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _already =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
