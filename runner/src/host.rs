//! Facts about the machine berth runs on, as `berth info` reports them: the kernel and the
//! operating system, the cgroup set-up, the snapshotter berth would choose, the OCI runtimes
//! found beside berth's own, and the confinement berth can apply.

use std::path::{Path, PathBuf};

/// What `berth info` says about this machine (docker's `info` fields of the same meaning).
#[derive(Debug, Clone)]
pub struct Facts {
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The distribution's name (`PRETTY_NAME` of os-release), `Linux` without one.
    pub os: String,
    /// The distribution's version (`VERSION_ID`), empty without one.
    pub os_version: String,
    /// The machine (`uname -m`: `x86_64`, `aarch64`).
    pub arch: String,
    /// The CPUs this process may use.
    pub cpus: usize,
    /// The machine's memory in bytes (`MemTotal`).
    pub mem_total: u64,
    /// The host name.
    pub hostname: String,
    /// The cgroup hierarchy containers are limited in.
    pub cgroup: CgroupSetup,
    /// The snapshotter berth's root uses here: `overlayfs`, `fuse-overlayfs` or `native`.
    pub snapshotter: &'static str,
    /// The runtimes `--runtime` takes, berth's own first, with where each program is.
    pub runtimes: Vec<(String, PathBuf)>,
    /// Whether berth runs in a user namespace of its own (rootless).
    pub rootless: bool,
    /// Whether the kernel filters system calls (seccomp), so the default profile applies.
    pub seccomp: bool,
}

/// Which cgroup hierarchies the machine mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupSetup {
    /// Only v1 controllers.
    V1,
    /// v1 controllers and the unified hierarchy beside them (`/sys/fs/cgroup/unified`).
    Hybrid,
    /// The unified hierarchy alone.
    V2,
    /// No cgroup file system: limits cannot be applied.
    None,
}

impl CgroupSetup {
    /// The version docker reports: 2 only for the unified hierarchy alone (a hybrid machine
    /// limits containers through its v1 controllers).
    pub fn version(self) -> &'static str {
        match self {
            CgroupSetup::V2 => "2",
            CgroupSetup::V1 | CgroupSetup::Hybrid => "1",
            CgroupSetup::None => "",
        }
    }

    /// The set-up read from `/sys/fs/cgroup`.
    fn detect(root: &Path) -> CgroupSetup {
        if root.join("cgroup.controllers").exists() {
            CgroupSetup::V2
        } else if root.join("unified/cgroup.controllers").exists() {
            CgroupSetup::Hybrid
        } else if std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_some()) {
            CgroupSetup::V1
        } else {
            CgroupSetup::None
        }
    }
}

/// The OCI runtimes `berth run --runtime NAME` finds on `PATH` besides berth's own.
const RUNTIMES: [&str; 2] = ["runc", "crun"];

/// This machine's facts, read now.
pub fn facts() -> Facts {
    let uname = rustix::system::uname();
    let release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let mut runtimes = vec![("berth".to_owned(), std::env::current_exe().unwrap_or_else(|_| "berth".into()))];
    runtimes.extend(RUNTIMES.iter().filter_map(|name| on_path(name).map(|p| ((*name).to_owned(), p))));
    Facts {
        kernel: uname.release().to_string_lossy().into_owned(),
        os: os_release_field(&release, "PRETTY_NAME").unwrap_or_else(|| "Linux".into()),
        os_version: os_release_field(&release, "VERSION_ID").unwrap_or_default(),
        arch: uname.machine().to_string_lossy().into_owned(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        mem_total: memory(),
        hostname: uname.nodename().to_string_lossy().into_owned(),
        cgroup: CgroupSetup::detect(Path::new("/sys/fs/cgroup")),
        snapshotter: crate::snapshot::kind_name(),
        runtimes,
        rootless: crate::userns::rootless(),
        seccomp: std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:"))),
    }
}

/// A field of an os-release file, its quotes removed.
fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(key)?.strip_prefix('=')?;
        let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        Some(unquoted.to_owned())
    })
}

/// The machine's memory in bytes (0 where /proc/meminfo cannot be read): `info`'s
/// `MemTotal`, and `stats`' limit for a container without one.
pub fn memory() -> u64 {
    mem_total(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Where `PATH` has the executable `name`.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fields_lose_their_quotes() {
        let text =
            "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(os_release_field(text, "PRETTY_NAME").as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(os_release_field(text, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(os_release_field(text, "ID").as_deref(), Some("debian"));
        // A key is matched whole: NAME is not PRETTY_NAME's tail.
        assert_eq!(os_release_field("PRETTY_NAME=x\n", "NAME"), None);
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        assert_eq!(mem_total("MemTotal:        4012345 kB\nMemFree: 1 kB\n"), 4012345 * 1024);
        assert_eq!(mem_total("garbage"), 0);
    }

    #[test]
    fn cgroup_setups_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CgroupSetup::detect(dir.path()), CgroupSetup::None);
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        assert_eq!(CgroupSetup::detect(dir.path()), CgroupSetup::V1);
        std::fs::create_dir(dir.path().join("unified")).unwrap();
        std::fs::write(dir.path().join("unified/cgroup.controllers"), "").unwrap();
        assert_eq!(CgroupSetup::detect(dir.path()), CgroupSetup::Hybrid);
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(CgroupSetup::detect(dir.path()), CgroupSetup::V2);
        assert_eq!(CgroupSetup::Hybrid.version(), "1");
    }
}
