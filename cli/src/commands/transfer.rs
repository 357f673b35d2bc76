//! Commands that talk to registries: pull, push, login, logout.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::open_store;
use crate::progress::{Display, Mode};
use oci::client::credentials::{self, Credential};
use oci::client::{Client, ClientOptions, ManifestFormat, PullOptions, PushOptions};
use oci::layer::Compression;
use oci::{ImageStore, Reference, Target};

/// Options every registry command shares.
#[derive(Debug, Args)]
pub struct Remote {
    /// Allow plain HTTP and unverified TLS to every registry (localhost and 127.0.0.0/8 always are)
    #[arg(long)]
    insecure: bool,
}

/// berth's own settings file: `$BERTH_CONFIG`, else `~/.config/berth/config.toml`.
fn config_file() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".config"));
    base.join("berth/config.toml")
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Registries reached over plain HTTP or unverified TLS, as docker's daemon.json has them.
    #[serde(default)]
    insecure_registries: Vec<String>,
}

impl Remote {
    /// A registry client with berth's settings and these flags.
    pub fn client(&self) -> Result<Client> {
        let settings = settings()?;
        let opts =
            ClientOptions { insecure: settings.insecure_registries, insecure_all: self.insecure, ..Default::default() };
        Ok(Client::new(opts)?)
    }
}

/// berth's settings file, or the defaults where there is none.
fn settings() -> Result<Settings> {
    let path = config_file();
    match std::fs::read_to_string(&path) {
        Ok(t) => toml::from_str(&t).with_context(|| format!("parse {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// The registries berth's settings file allows over plain HTTP, for `berth info`.
pub fn insecure_registries() -> Result<Vec<String>> {
    Ok(settings()?.insecure_registries)
}

/// A runtime for the client's async calls.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the async runtime")
}

/// Download an image from a registry
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth pull busybox\n  berth pull --platform linux/arm64 ghcr.io/org/app:1.2\n  berth pull localhost:5000/app@sha256:3f57..."
)]
pub struct Pull {
    /// The image: NAME[:TAG|@DIGEST]
    image: String,
    /// Pick this platform from a multi-platform image: os/arch[/variant]
    #[arg(long)]
    platform: Option<oci::Platform>,
    /// Print only the image name
    #[arg(short, long)]
    quiet: bool,
    /// Progress output: auto, tty, plain or quiet
    #[arg(long, value_enum, default_value = "auto")]
    progress: Mode,
    #[command(flatten)]
    remote: Remote,
}

impl Pull {
    /// Pulls into the local store and names the image.
    pub fn run(self, root: &Path) -> Result<()> {
        let reference: Reference = self.image.parse()?;
        let store = open_store(root)?;
        let client = self.remote.client()?;
        let display = Display::new(self.progress, self.quiet, "Downloading");
        if !self.quiet {
            // docker's first line: the tag, or the digest, then the repository.
            let what =
                reference.digest().map_or_else(|| reference.tag().unwrap_or("latest").to_owned(), ToString::to_string);
            println!("{what}: Pulling from {}", reference.familiar_name());
        }
        let opts = PullOptions { platform: self.platform.clone(), ..Default::default() };
        // A digest names its content: present before means up to date, as docker says.
        let had = reference
            .digest()
            .map(|d| oci::content::ContentStore::contains(store.content(), d))
            .transpose()?
            .unwrap_or(false);
        let before = store.get(&reference)?.map(|t| t.digest);
        let pulled = runtime()?.block_on(oci::client::pull(&client, &store, &reference, &opts, &display));
        display.finish();
        let pulled = pulled.with_context(|| format!("pull {}", reference.familiar()))?;
        if self.quiet {
            println!("{reference}");
        } else {
            // docker's words: the name already pointed at this manifest, or now does.
            let status = match had || before == Some(pulled.record.target.digest.clone()) {
                true => "Image is up to date for",
                false => "Downloaded newer image for",
            };
            println!("Digest: {}\nStatus: {status} {}\n{reference}", pulled.digest, reference.familiar());
        }
        Ok(())
    }
}

/// Upload an image to a registry
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth tag app:ci localhost:5000/team/app:1.0 && berth push localhost:5000/team/app:1.0\n  berth push localhost:5000/team/app:1.0 localhost:5000/team/app:latest\n  berth push --format docker registry.example.com/app:1"
)]
pub struct Push {
    /// Local images to push, each to the name it has: NAME[:TAG] or NAME@DIGEST
    #[arg(required = true, value_name = "NAME[:TAG]")]
    images: Vec<String>,
    /// Manifest media types: oci (as stored) or docker (schema 2)
    #[arg(long, default_value = "oci", value_parser = ["oci", "docker"])]
    format: String,
    #[command(flatten)]
    compress: Compress,
    /// Print only the pushed digests
    #[arg(short, long)]
    quiet: bool,
    /// Push every tag the store has of each repository named (NAME without a tag)
    #[arg(short, long)]
    all_tags: bool,
    /// Progress output: auto, tty, plain or quiet
    #[arg(long, value_enum, default_value = "auto")]
    progress: Mode,
    #[command(flatten)]
    remote: Remote,
}

impl Push {
    /// Pushes each named image to its registry.
    pub fn run(mut self, root: &Path) -> Result<()> {
        let store = open_store(root)?;
        if self.all_tags {
            self.images = self.tags_of_repositories(&store)?;
        }
        let client = self.remote.client()?;
        let rt = runtime()?;
        let format = if self.format == "docker" { ManifestFormat::Docker } else { ManifestFormat::Oci };
        let opts = PushOptions { format, ..Default::default() };
        if format == ManifestFormat::Docker && self.compress.compression()? == Compression::Zstd {
            bail!("--compression-format zstd needs --format oci: Docker schema 2 has no zstd layers");
        }
        for image in &self.images {
            // As docker: a push names its destination; an image ID is not one.
            let named: Reference =
                image.parse().with_context(|| format!("{image} is not a name to push to: berth tag it first"))?;
            let rec = store.resolve(image)?;
            let dest = rec.name.clone().filter(|n| n.repository() == named.repository()).with_context(|| {
                format!("{image} is not a name to push to (it matches an image ID): berth tag the image first")
            })?;
            if !self.quiet {
                println!("The push refers to repository [{}]", dest.repository());
            }
            let display = Display::new(self.progress, self.quiet, "Pushing");
            let target = self.compress.target(&store, &rec.target, &dest, &display)?;
            let pushed =
                rt.block_on(oci::client::push(&client, &store, &target, std::slice::from_ref(&dest), &opts, &display));
            display.finish();
            let digest = pushed.with_context(|| format!("push {}", dest.familiar()))?;
            Compress::pushed(&store, &dest, &rec.target, &target)?;
            // The registry has this manifest now: one of the image's repo digests.
            store.add_source(&digest, &dest.repository())?;
            if self.quiet {
                println!("{digest}");
            } else {
                println!("{}: digest: {digest}", dest.tag().unwrap_or("(digest)"));
            }
        }
        Ok(())
    }
}

impl Push {
    /// `--all-tags`: the names of the store's tags of each repository given, in tag order.
    fn tags_of_repositories(&self, store: &ImageStore) -> Result<Vec<String>> {
        let records = store.list()?;
        let mut out = Vec::new();
        for image in &self.images {
            let repo: Reference = image.parse()?;
            if repo.digest().is_some() || image.rsplit('/').next().is_some_and(|last| last.contains(':')) {
                bail!("tag can't be used with --all-tags/-a");
            }
            let mut tags: Vec<String> = records
                .iter()
                .filter_map(|r| r.name.as_ref())
                .filter(|n| n.repository() == repo.repository() && n.tag().is_some())
                .map(ToString::to_string)
                .collect();
            if tags.is_empty() {
                bail!("An image does not exist locally with the tag: {}", repo.familiar_name());
            }
            tags.sort();
            out.extend(tags);
        }
        Ok(out)
    }
}

/// `--compression-format`: how `push` and `manifest push` send plain layers.
#[derive(Debug, Args)]
pub struct Compress {
    /// How plain (uncompressed) layers are sent, as a loaded docker archive keeps them: gzip,
    /// zstd (needs --format oci) or uncompressed (as stored)
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "uncompressed"])]
    compression_format: String,
}

impl Compress {
    fn compression(&self) -> Result<Compression> {
        self.compression_format.parse().map_err(anyhow::Error::msg)
    }

    /// What to push to `dest` for the local `target`: as docker and podman push, plain layers
    /// compressed (see [`oci::twin`]). A push by digest sends the very document it names.
    pub fn target(&self, store: &ImageStore, target: &Target, dest: &Reference, display: &Display) -> Result<Target> {
        if dest.digest().is_some() {
            return Ok(target.clone());
        }
        oci::twin::compressed(store, target, self.compression()?, display)
            .with_context(|| format!("push {}", dest.familiar()))
    }

    /// After `pushed` went up for the local `original`: the local name `dest`, when it names
    /// `original`, now names what the registry has (the same image ID), so `images
    /// --digests` shows the registry's digest and a pull finds the image up to date.
    pub fn pushed(store: &ImageStore, dest: &Reference, original: &Target, pushed: &Target) -> Result<()> {
        if pushed != original && store.get(dest)?.as_ref() == Some(original) {
            store.set_name(dest, pushed)?;
        }
        Ok(())
    }
}

/// Log in to a registry
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth login localhost:5000 -u ci\n  echo \"$TOKEN\" | berth login ghcr.io -u bot --password-stdin"
)]
pub struct Login {
    /// The registry [default: docker.io]
    server: Option<String>,
    /// Username
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin: arguments are visible to other users)
    #[arg(short, long)]
    password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    remote: Remote,
}

/// The registry domain a `login`/`logout` argument names (`https://ghcr.io/` -> `ghcr.io`).
fn server_domain(s: Option<&str>) -> String {
    let s = s.unwrap_or("docker.io");
    let s = s.trim_start_matches("https://").trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.to_owned(),
    }
}

fn prompt(label: &str, echo: bool) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("cannot prompt for {label}: stdin is not a terminal (use --password-stdin)");
    }
    eprint!("{label}: ");
    std::io::stderr().flush()?;
    let saved = if echo {
        None
    } else {
        let t = rustix::termios::tcgetattr(&stdin).context("read terminal settings")?;
        let mut quiet = t.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet).context("turn off echo")?;
        Some(t)
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t)
            .context("restore the terminal")?;
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

impl Login {
    /// Checks the credentials against the registry, then saves them as docker does.
    pub fn run(self, _root: &Path) -> Result<()> {
        let domain = server_domain(self.server.as_deref());
        let client = self.remote.client()?;
        if self.username.is_none() && self.password.is_none() && !self.password_stdin {
            // As docker: a bare `login HOST` tries what is saved before it asks.
            if let Some(saved) = credentials::lookup(&domain)? {
                println!("Authenticating with existing credentials...");
                match runtime()?.block_on(client.check_login(&domain, saved)) {
                    Ok(()) => {
                        println!("Login Succeeded");
                        return Ok(());
                    }
                    Err(e) => eprintln!("Login did not succeed, error: {e:#}"),
                }
            }
        }
        let username = match self.username {
            Some(u) => u,
            None => prompt("Username", true)?,
        };
        let password = match (self.password, self.password_stdin) {
            (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
            (Some(p), false) => p,
            (None, true) => {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s).context("read the password from stdin")?;
                s.trim_end_matches(['\n', '\r']).to_owned()
            }
            (None, false) => prompt("Password", false)?,
        };
        if username.is_empty() || password.is_empty() {
            bail!("username and password must not be empty");
        }
        let cred = Credential { username, secret: password };
        runtime()?.block_on(client.check_login(&domain, cred.clone())).with_context(|| format!("login to {domain}"))?;
        credentials::store(&domain, &cred)?;
        println!("Login Succeeded");
        Ok(())
    }
}

/// Log out from a registry
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth logout localhost:5000")]
pub struct Logout {
    /// The registry [default: docker.io]
    server: Option<String>,
}

impl Logout {
    /// Removes the saved credentials.
    pub fn run(self, _root: &Path) -> Result<()> {
        let domain = server_domain(self.server.as_deref());
        if credentials::erase(&domain)? {
            println!("Removing login credentials for {domain}");
        } else {
            println!("Not logged in to {domain}");
        }
        Ok(())
    }
}
