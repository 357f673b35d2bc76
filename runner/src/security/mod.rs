//! What a container may do inside its namespaces: its capability sets and its seccomp
//! filter, by default docker's (docker's capability set, docker's default seccomp profile
//! semantics), for `berth run` and every RUN step alike; and which device nodes it may
//! open, where docker has a device cgroup.
//!
//! Lifecycle: the CLI turns docker's flags into a [`Security`] ([`Security::docker`]); the
//! sandbox calls [`Security::prepare`] before its fork, which resolves the profile for
//! the final capability set and compiles it to BPF (or finds it compiled: libseccomp takes
//! tens of milliseconds for docker's three x86 ABIs, more than the rest of a start); in the
//! child, [`Confinement`] drops
//! the bounding set before the user changes and sets the other sets after. no_new_privs
//! follows docker: off unless `--security-opt no-new-privileges` asks for it, so set-uid
//! programs (sudo, su) work. The kernel takes a filter only from a process with no_new_privs
//! or CAP_SYS_ADMIN, so without no_new_privs the filter is loaded as runc loads it, right
//! after the bounding set while the child is still root, and with it last before exec.
//! Runtimes that take a bundle get the same [`Policy`](seccomp::Policy) as `linux.seccomp`
//! and `process.noNewPrivileges`.

pub mod caps;
pub mod seccomp;

pub use caps::Capabilities;
pub use seccomp::{Policy, Profile};

/// Why security options could not be honoured.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// An unknown or unavailable capability.
    #[error("{0}")]
    Capability(String),
    /// A seccomp profile that cannot be used.
    #[error("seccomp profile: {0}")]
    Profile(String),
    /// libseccomp could not build the filter.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// An unknown or unsupported `--security-opt`.
    #[error("{0}")]
    Option(String),
}

/// Which seccomp filter a container gets.
#[derive(Debug, Clone, Default)]
pub enum SeccompMode {
    /// berth's default profile (docker's semantics).
    #[default]
    Default,
    /// No filter (`--security-opt seccomp=unconfined`, `--privileged`).
    Unconfined,
    /// A profile in docker's format (`--security-opt seccomp=PROFILE.json`).
    Profile(Box<Profile>),
}

/// A container's confinement beyond namespaces: capabilities, seccomp and no_new_privs.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The bounding, permitted and effective sets (inheritable and ambient stay empty).
    pub capabilities: Capabilities,
    /// The seccomp filter.
    pub seccomp: SeccompMode,
    /// Whether no_new_privs is set, so that set-uid programs and file capabilities give
    /// nothing: off by default, as in docker and BuildKit (`sudo` in a RUN step works).
    pub no_new_privs: bool,
    /// Where compiled filters are kept between processes (`berth run`: `$BERTH_ROOT/seccomp`);
    /// without it a process compiles each policy once.
    pub filter_cache: Option<std::path::PathBuf>,
    /// Whether the container may open every device node it reaches (`--privileged`, `RUN
    /// --security=insecure`). Otherwise the sandbox mounts its rootfs, its /dev, its tmpfs
    /// and every volume `nodev`, with /dev's nodes bound from the host's: a node it makes
    /// with CAP_MKNOD opens nothing, as under docker's device cgroup.
    pub all_devices: bool,
    /// Whether docker's masked and read-only paths under /proc and /sys are left as the
    /// kernel shows them (`--privileged`, `--security-opt systempaths=unconfined`, `RUN
    /// --security=insecure`).
    pub unmasked_paths: bool,
    /// Whether /sys and the container's cgroup hierarchies are mounted writable, as
    /// docker's `--privileged` mounts them.
    pub writable_sys: bool,
}

impl Security {
    /// docker's `--cap-add`, `--cap-drop`, `--privileged` and `--security-opt`
    /// (`seccomp=unconfined|PROFILE.json`, `no-new-privileges[=BOOL]`, `systempaths=unconfined`;
    /// the last one given wins; `apparmor=unconfined` and `label=disable` are what berth does
    /// anyway, as it loads no AppArmor profile and sets no SELinux label).
    pub fn docker(
        cap_add: &[String],
        cap_drop: &[String],
        privileged: bool,
        security_opts: &[String],
    ) -> Result<Security, SecurityError> {
        let capabilities = Capabilities::docker(cap_add, cap_drop, privileged)?;
        let mut seccomp = if privileged { SeccompMode::Unconfined } else { SeccompMode::Default };
        let mut no_new_privs = false;
        let mut unmasked_paths = privileged;
        for opt in security_opts {
            // docker takes `key=value` and the older `key:value`.
            let (key, value) = opt.split_once(['=', ':']).map_or((opt.as_str(), None), |(k, v)| (k, Some(v)));
            match (key, value) {
                ("seccomp", Some("unconfined")) => seccomp = SeccompMode::Unconfined,
                // --privileged disables seccomp whatever profile is named, as docker does.
                ("seccomp", Some(_)) if privileged => {}
                ("seccomp", Some(path)) => {
                    let bytes = std::fs::read(path).map_err(|e| SecurityError::Profile(format!("read {path}: {e}")))?;
                    seccomp = SeccompMode::Profile(Box::new(Profile::parse(&bytes)?));
                }
                ("no-new-privileges", None) => no_new_privs = true,
                ("no-new-privileges", Some(value)) => {
                    no_new_privs = go_bool(value).ok_or_else(|| {
                        SecurityError::Option(format!("--security-opt {opt:?}: no-new-privileges takes true or false"))
                    })?;
                }
                ("systempaths", Some("unconfined")) => unmasked_paths = true,
                // No profile and no label is what every berth container gets.
                ("apparmor", Some("unconfined")) | ("label", Some("disable")) => {}
                ("apparmor", Some(_)) | ("label", Some(_)) => {
                    return Err(SecurityError::Option(format!(
                        "unsupported --security-opt {opt:?}: berth loads no AppArmor profile and sets no \
                         SELinux label (apparmor=unconfined and label=disable are what it does)"
                    )))
                }
                _ => {
                    return Err(SecurityError::Option(format!(
                        "unsupported --security-opt {opt:?} (seccomp=unconfined|PROFILE.json, \
                         no-new-privileges, systempaths=unconfined, apparmor=unconfined, label=disable)"
                    )))
                }
            }
        }
        Ok(Security {
            capabilities,
            seccomp,
            no_new_privs,
            filter_cache: None,
            all_devices: privileged,
            unmasked_paths,
            writable_sys: privileged,
        })
    }

    /// The seccomp policy for this container's capabilities, `None` when unconfined.
    pub fn policy(&self) -> Result<Option<Policy>, SecurityError> {
        match &self.seccomp {
            SeccompMode::Unconfined => Ok(None),
            SeccompMode::Default => Profile::default_profile().resolve(&self.capabilities).map(Some),
            SeccompMode::Profile(p) => p.resolve(&self.capabilities).map(Some),
        }
    }

    /// Everything the forked child needs, made before the fork: the capability bits and
    /// the compiled filter.
    pub fn prepare(&self) -> Result<Confinement, SecurityError> {
        let filter = match self.policy()? {
            Some(policy) => {
                let bytes = match &self.filter_cache {
                    Some(dir) => compiled_on_disk(dir, &policy)?,
                    None => compiled_in_memory(&policy)?,
                };
                Some(to_program(&bytes)?)
            }
            None => None,
        };
        Ok(Confinement { caps: self.capabilities.0, filter, no_new_privs: self.no_new_privs })
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it, which is how docker reads
/// `no-new-privileges=VALUE`.
fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The last policy compiled in this process: the RUN steps of a build compile it once.
fn compiled_in_memory(policy: &Policy) -> Result<Vec<u8>, SecurityError> {
    static LAST: std::sync::Mutex<Option<(Policy, Vec<u8>)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((p, bpf)) = last.as_ref() {
        if p == policy {
            return Ok(bpf.clone());
        }
    }
    let bpf = policy.compile()?;
    *last = Some((policy.clone(), bpf.clone()));
    Ok(bpf)
}

/// The compiled policy from `dir`, named by the sha256 of everything it depends on (the
/// resolved policy, the architecture, libseccomp's version); compiled and stored there
/// (under a temporary name, then renamed) when missing.
fn compiled_on_disk(dir: &std::path::Path, policy: &Policy) -> Result<Vec<u8>, SecurityError> {
    let version = libseccomp::ScmpVersion::current().map(|v| (v.major, v.minor, v.micro)).ok();
    let key = format!("{} {version:?} binary-tree {policy:?}", std::env::consts::ARCH);
    let name = format!("{}.bpf", oci::Digest::of(key.as_bytes()).hex());
    let path = dir.join(&name);
    if let Ok(bytes) = std::fs::read(&path) {
        if to_program(&bytes).is_ok() {
            return Ok(bytes);
        }
    }
    let bytes = policy.compile()?;
    let io = |what: &str| {
        let what = format!("{what} {}", dir.display());
        move |e: std::io::Error| SecurityError::Seccomp(format!("{what}: {e}"))
    };
    std::fs::create_dir_all(dir).map_err(io("create"))?;
    let tmp = dir.join(format!(".{}-{name}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(io("write into"))?;
    std::fs::rename(&tmp, &path).map_err(io("rename into"))?;
    Ok(bytes)
}

/// libseccomp's exported bytes as the program the kernel takes.
fn to_program(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SecurityError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) || bytes.len() / 8 > usize::from(u16::MAX) {
        return Err(SecurityError::Seccomp(format!("a filter of {} bytes", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// What the sandbox's child applies between fork and exec; only syscalls, no allocation.
pub struct Confinement {
    caps: u64,
    filter: Option<Vec<libc::sock_filter>>,
    no_new_privs: bool,
}

impl std::fmt::Debug for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.filter.as_ref().map(Vec::len);
        f.debug_struct("Confinement")
            .field("caps", &format_args!("{:#x}", self.caps))
            .field("filter", &len)
            .field("no_new_privs", &self.no_new_privs)
            .finish()
    }
}

impl Confinement {
    /// Drops every capability outside the container's set from the bounding set and
    /// clears the inheritable and ambient sets (whatever berth's caller left in them).
    /// Runs while the child still holds CAP_SETPCAP, before the user changes: a non-root
    /// user keeps only these sets, which must be right.
    pub fn restrict_bounding(&self) -> std::io::Result<()> {
        for cap in 0..64u32 {
            if self.caps & (1u64 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: past the kernel's last capability, nothing more to drop.
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(e);
            }
        }
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut sets = rustix::thread::capabilities(None).map_err(std::io::Error::from)?;
        sets.inheritable = rustix::thread::CapabilitySet::empty();
        rustix::thread::set_capabilities(None, sets).map_err(std::io::Error::from)
    }

    /// Sets permitted and effective to the container's set and leaves inheritable empty (as
    /// root). An inheritable set would survive a change to another user (su, gosu) and,
    /// without no_new_privs, turn a file's inheritable capabilities into permitted ones at
    /// exec: CVE-2022-24769, after which docker, runc and BuildKit set none.
    pub fn set_capabilities(&self) -> std::io::Result<()> {
        let caps = rustix::thread::CapabilitySet::from_bits_retain(self.caps);
        let none = rustix::thread::CapabilitySet::empty();
        let sets = rustix::thread::CapabilitySets { effective: caps, permitted: caps, inheritable: none };
        rustix::thread::set_capabilities(None, sets).map_err(std::io::Error::from)
    }

    /// Loads the filter early, while the child is root with CAP_SYS_ADMIN, when the container
    /// runs without no_new_privs (the kernel takes it from no other process): runc's order,
    /// so the user change, capabilities, limits, the init's fork, the pty, close_range and
    /// exec run under it. Returns whether it loaded it; if not, [`Self::finish`] does.
    pub fn load_seccomp_early(&self) -> std::io::Result<bool> {
        if self.no_new_privs || self.filter.is_none() {
            return Ok(false);
        }
        let caps = rustix::thread::capabilities(None).map_err(std::io::Error::from)?;
        if !caps.effective.contains(rustix::thread::CapabilitySet::SYS_ADMIN) {
            return Ok(false);
        }
        self.load_seccomp()?;
        Ok(true)
    }

    /// Sets no_new_privs when the container asks for it, or when a filter is still to be
    /// loaded by a process that lacks CAP_SYS_ADMIN (the filter matters more than set-uid
    /// programs; runc would fail the start instead).
    pub fn set_no_new_privs(&self, loaded_early: bool) -> std::io::Result<()> {
        if self.no_new_privs || (self.filter.is_some() && !loaded_early) {
            rustix::thread::set_no_new_privs(true).map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    /// Loads the seccomp filter unless [`Self::load_seccomp_early`] did: the last step
    /// before exec (or the init's fork), after [`Self::set_no_new_privs`].
    pub fn finish(&self, loaded_early: bool) -> std::io::Result<()> {
        if loaded_early {
            return Ok(());
        }
        self.load_seccomp()
    }

    /// Loads the seccomp filter, if there is one (the process must have no_new_privs or
    /// CAP_SYS_ADMIN).
    fn load_seccomp(&self) -> std::io::Result<()> {
        let Some(filter) = &self.filter else { return Ok(()) };
        let len = u16::try_from(filter.len()).map_err(|_| std::io::Error::other("seccomp filter too long"))?;
        let prog = libc::sock_fprog { len, filter: filter.as_ptr().cast_mut() };
        // SAFETY: the kernel copies the program; `prog` points into `filter`, alive here.
        let rc = unsafe {
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0 as libc::c_uint, &prog as *const _)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_opts_are_read_as_docker_spells_them() {
        let s = Security::docker(&[], &[], false, &["seccomp=unconfined".into(), "no-new-privileges".into()]).unwrap();
        assert!(matches!(s.seccomp, SeccompMode::Unconfined));
        assert!(s.policy().unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#).unwrap();
        let s = Security::docker(&[], &[], false, &[format!("seccomp:{}", path.display())]).unwrap();
        assert!(matches!(s.seccomp, SeccompMode::Profile(_)));
        let p = Security::docker(&[], &[], true, &[format!("seccomp={}", path.display())]).unwrap();
        assert!(matches!(p.seccomp, SeccompMode::Unconfined), "--privileged is unconfined");
        for bad in ["apparmor=x", "no-new-privileges=maybe", "no-new-privileges=", "seccomp=/nonexistent.json"] {
            assert!(Security::docker(&[], &[], false, &[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_new_privs_is_off_unless_asked_for_as_in_docker() {
        let nnp = |opts: &[&str]| {
            let opts: Vec<String> = opts.iter().map(|o| o.to_string()).collect();
            Security::docker(&[], &[], false, &opts).unwrap().no_new_privs
        };
        assert!(!nnp(&[]));
        assert!(!Security::docker(&[], &[], true, &[]).unwrap().no_new_privs, "--privileged leaves it alone");
        for on in ["no-new-privileges", "no-new-privileges=true", "no-new-privileges:true", "no-new-privileges=1"] {
            assert!(nnp(&[on]), "{on}");
            assert!(Security::docker(&[], &[], false, &[on.into()]).unwrap().prepare().unwrap().no_new_privs);
        }
        for off in ["no-new-privileges=false", "no-new-privileges:false", "no-new-privileges=0"] {
            assert!(!nnp(&[off]), "{off}");
        }
        assert!(!nnp(&["no-new-privileges", "no-new-privileges=false"]), "the last one wins");
        assert!(!Security::default().prepare().unwrap().no_new_privs);
    }

    #[test]
    fn a_compiled_filter_is_kept_on_disk_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp");
        let s = Security { filter_cache: Some(cache.clone()), ..Security::default() };
        let first = s.prepare().unwrap();
        let files: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let again = s.prepare().unwrap();
        assert_eq!(first.filter.as_ref().map(Vec::len), again.filter.as_ref().map(Vec::len));
        // Another capability set is another policy, so another file; a damaged file is remade.
        let admin = Security { capabilities: Capabilities(Capabilities::default().0 | 1 << 21), ..s.clone() };
        admin.prepare().unwrap();
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
        std::fs::write(&files[0], b"short").unwrap();
        s.prepare().unwrap();
        assert!(std::fs::read(&files[0]).unwrap().len().is_multiple_of(8));
    }

    #[test]
    fn the_default_filter_is_prepared_once_per_capability_set() {
        let a = Security::default().prepare().unwrap();
        let b = Security::default().prepare().unwrap();
        assert_eq!(a.filter.as_ref().map(Vec::len), b.filter.as_ref().map(Vec::len));
        assert!(a.filter.is_some());
        let u = Security { seccomp: SeccompMode::Unconfined, ..Security::default() }.prepare().unwrap();
        assert!(u.filter.is_none());
    }
}
