//! `berth version` and `berth info` (also `system info`): what CI logs print first with
//! docker, in docker's shapes. berth has no daemon, so there is no `Server` part: `info`
//! reports this machine and this store, as podman's does without a service.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::format;

/// The commit berth was built from (`unknown` outside a git checkout), set by build.rs.
const GIT_COMMIT: &str = env!("BERTH_GIT_COMMIT");
/// The compiler berth was built with, set by build.rs.
const RUSTC_VERSION: &str = env!("BERTH_RUSTC_VERSION");

/// Show the berth version information
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth version\n  berth version --format '{{.Client.Version}}'\n  berth version --format json"
)]
pub struct Version {
    /// Format the output: json, or a Go template over docker's fields (`{{.Client.Version}}`)
    #[arg(short, long)]
    format: Option<String>,
}

impl Version {
    /// Prints the version block, or the template over it.
    pub fn run(self) -> Result<()> {
        let platform = oci::Platform::host();
        let client = json!({
            "Platform": {"Name": "berth"},
            "Version": env!("CARGO_PKG_VERSION"),
            "GitCommit": GIT_COMMIT,
            "RustVersion": RUSTC_VERSION,
            "Os": platform.os,
            "Arch": platform.architecture,
        });
        let data = json!({ "Client": client });
        let text = match self.format.as_deref() {
            Some(f) => templated(f, &data)?,
            None => format!(
                "Client:\n Version:      {}\n Git commit:   {GIT_COMMIT}\n Rust version: {RUSTC_VERSION}\n OS/Arch:      {}/{}\n",
                env!("CARGO_PKG_VERSION"),
                platform.os,
                platform.architecture
            ),
        };
        print_out(&text)
    }
}

/// Display system-wide information
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth info\n  berth info --format '{{.Driver}} {{.CgroupVersion}}'\n  berth info --format json"
)]
pub struct Info {
    /// Format the output: json, or a Go template over docker's fields (`{{.Containers}}`)
    #[arg(short, long)]
    format: Option<String>,
}

impl Info {
    /// Prints this machine's and this store's facts.
    pub fn run(self, root: &Path) -> Result<()> {
        let data = gather(root)?;
        let text = match self.format.as_deref() {
            Some(f) => templated(f, &data)?,
            None => text(&data),
        };
        print_out(&text)
    }
}

/// `info`'s data, under docker's field names where the meaning is the same.
fn gather(root: &Path) -> Result<Value> {
    let host = runner::host::facts();
    let containers = runner::container::list(root).context("list containers")?;
    let states: Vec<_> = containers.iter().filter_map(|c| c.state().ok()).collect();
    let live = states.iter().filter(|s| s.status == runner::container::Status::Running);
    // docker counts a paused container as paused, not running.
    let (running, paused) = (live.clone().filter(|s| !s.paused).count(), live.filter(|s| s.paused).count());
    let store = super::open_store(root)?;
    let images: std::collections::HashSet<_> =
        store.list().context("list images")?.iter().map(|r| store.own_id(&r.target)).collect();
    let mut security = Vec::new();
    if host.seccomp {
        security.push("name=seccomp,profile=default".to_owned());
    }
    if host.rootless {
        security.push("name=rootless".to_owned());
    }
    let runtimes: serde_json::Map<String, Value> =
        host.runtimes.iter().map(|(name, path)| (name.clone(), json!({ "path": path }))).collect();
    Ok(json!({
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": containers.len() - running - paused,
        "Images": images.len(),
        "Driver": host.snapshotter,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": host.cgroup.version(),
        "Runtimes": runtimes,
        "DefaultRuntime": "berth",
        "SecurityOptions": security,
        "KernelVersion": host.kernel,
        "OperatingSystem": host.os,
        "OSVersion": host.os_version,
        "OSType": "linux",
        "Architecture": host.arch,
        "NCPU": host.cpus,
        "MemTotal": host.mem_total,
        "Name": host.hostname,
        "DockerRootDir": root,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "RegistryConfig": { "InsecureRegistryCIDRs": super::transfer::insecure_registries()? },
    }))
}

/// `info`'s text, in the order and spelling of docker's `Server:` part.
fn text(d: &Value) -> String {
    let s = |k: &str| d[k].as_str().map_or_else(|| d[k].to_string(), str::to_owned);
    let mut out = format!(
        "Containers: {}\n Running: {}\n Paused: {}\n Stopped: {}\nImages: {}\nVersion: {}\n",
        s("Containers"),
        s("ContainersRunning"),
        s("ContainersPaused"),
        s("ContainersStopped"),
        s("Images"),
        s("ServerVersion")
    );
    out += &format!(
        "Storage Driver: {}\nCgroup Driver: {}\nCgroup Version: {}\n",
        s("Driver"),
        s("CgroupDriver"),
        s("CgroupVersion")
    );
    let runtimes: Vec<&str> =
        d["Runtimes"].as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    out += &format!("Runtimes: {}\nDefault Runtime: {}\n", runtimes.join(" "), s("DefaultRuntime"));
    out += "Security Options:\n";
    for opt in d["SecurityOptions"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        // docker's: `seccomp` then its `Profile: default` below it.
        let mut fields = opt.split(',').filter_map(|f| f.split_once('='));
        if let Some((_, name)) = fields.next() {
            out += &format!(" {name}\n");
        }
        for (k, v) in fields {
            out += &format!("  {}{}: {v}\n", k[..1].to_uppercase(), &k[1..]);
        }
    }
    let memory = d["MemTotal"].as_u64().map_or_else(String::new, format::binary_size);
    out += &format!(
        "Kernel Version: {}\nOperating System: {}\nOSType: {}\nArchitecture: {}\nCPUs: {}\nTotal Memory: {memory}\nName: {}\nRoot Dir: {}\n",
        s("KernelVersion"),
        s("OperatingSystem"),
        s("OSType"),
        s("Architecture"),
        s("NCPU"),
        s("Name"),
        s("DockerRootDir")
    );
    out += "Insecure Registries:\n";
    for r in d["RegistryConfig"]["InsecureRegistryCIDRs"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        out += &format!(" {r}\n");
    }
    out
}

/// `--format`: `json` for the whole object on one line, else a Go template over it.
fn templated(f: &str, data: &Value) -> Result<String> {
    if f == "json" {
        return Ok(format!("{data}\n"));
    }
    let mut text = format::Template::parse(f)?.render(data)?;
    text.push('\n');
    Ok(text)
}

/// Writes to stdout (a closed pipe, `| head`, is not an error: see main.rs).
fn print_out(text: &str) -> Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes()).context("write to stdout")
}
