//! An OCI runtime bundle (config.json + rootfs) for the same process, so that runc or
//! crun can run exactly what berth's own sandbox runs: the cross-check of `--runtime`.

use std::os::fd::AsRawFd;
use std::path::Path;

use crate::sandbox::{Ipc, Namespace, Network, Pid, Spec};

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The runtime spec did not come out valid.
    #[error("runtime spec: {0}")]
    Spec(String),
    /// Writing or mounting failed.
    #[error("{op} {path}")]
    Io {
        /// The step.
        op: &'static str,
        /// Where.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(op: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = p.display().to_string();
    move |source| BundleError::Io { op, path, source }
}

/// Writes `dir/config.json` for `spec` (with resolved `ids`), starting from oci-spec's
/// default runtime spec (runc's defaults: mounts, masked paths) with the spec's
/// capabilities and seccomp policy, and mounts
/// the rootfs at `dir/rootfs`. Call it inside a private mount namespace: the mount then
/// disappears with the process.
pub fn write(dir: &Path, spec: &Spec, ids: (u32, u32, Vec<u32>), device_cgroup: bool) -> Result<(), BundleError> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(io_err("create", &rootfs))?;
    spec.rootfs[0].mount(&rootfs).map_err(|e| BundleError::Io {
        op: "mount",
        path: rootfs.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    let base = oci_spec::runtime::Spec::default();
    let mut v = serde_json::to_value(&base).map_err(|e| BundleError::Spec(e.to_string()))?;
    let (uid, gid, groups) = ids;
    v["process"]["args"] = serde_json::json!(spec.args);
    v["process"]["env"] = serde_json::json!(spec.env);
    v["process"]["cwd"] = serde_json::json!(spec.cwd);
    v["process"]["terminal"] = false.into();
    v["process"]["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": groups});
    // docker's default is off, so set-uid programs work; the runtime then loads the filter
    // before it changes the user, as berth's own sandbox does.
    v["process"]["noNewPrivileges"] = spec.security.no_new_privs.into();
    // The same limits berth's own sandbox sets; unlimited is RLIM_INFINITY.
    let rlimits: Vec<serde_json::Value> = crate::rlimit::effective(&spec.ulimits)
        .map_err(|e| BundleError::Spec(e.to_string()))?
        .iter()
        .map(|u| {
            serde_json::json!({"type": u.oci_type(), "soft": u.soft.unwrap_or(u64::MAX), "hard": u.hard.unwrap_or(u64::MAX)})
        })
        .collect();
    v["process"]["rlimits"] = serde_json::Value::Array(rlimits);
    if let Some(adj) = spec.oom_score_adj {
        v["process"]["oomScoreAdj"] = adj.into();
    }
    v["root"] = serde_json::json!({"path": "rootfs", "readonly": spec.read_only});
    let mut namespaces = vec![serde_json::json!({"type": "mount"})];
    let own_fd = |fd: i32| format!("/proc/{}/fd/{fd}", std::process::id());
    match &spec.pid {
        Pid::Own => namespaces.push(serde_json::json!({"type": "pid"})),
        // The runtime joins another container's through berth's own open fd, as the network's.
        Pid::Join(ns) => namespaces.push(serde_json::json!({"type": "pid", "path": own_fd(ns.as_raw_fd())})),
        Pid::Host => {}
    }
    // A host name is only set in a namespace of the container's own (runc refuses it else).
    if spec.uts == Namespace::Own {
        namespaces.push(serde_json::json!({"type": "uts"}));
        v["hostname"] = spec.hostname.clone().into();
    } else if let Some(fields) = v.as_object_mut() {
        // oci-spec's default names one.
        fields.remove("hostname");
    }
    match &spec.ipc {
        Ipc::Own { .. } => namespaces.push(serde_json::json!({"type": "ipc"})),
        // Its /dev/shm is a mount of the other container's namespace, which only berth's
        // sandbox can copy in.
        Ipc::Join { .. } => {
            return Err(BundleError::Spec("--ipc container:NAME works with berth's own runtime only".into()))
        }
        Ipc::Host => {}
    }
    match spec.network {
        Network::None => {
            namespaces.push(serde_json::json!({"type": "network"}));
            // The runtime writes them in the new namespace, as berth's own sandbox does.
            let sysctls = crate::network::NAMESPACE_SYSCTLS.iter().map(|(k, v)| (k.to_string(), (*v).into()));
            v["linux"]["sysctl"] = serde_json::Value::Object(sysctls.collect());
        }
        // The runtime joins the namespace berth made, through berth's own open fd.
        Network::Join(fd) => namespaces.push(serde_json::json!({"type": "network", "path": own_fd(fd)})),
        Network::Host => {}
    }
    v["linux"]["namespaces"] = serde_json::Value::Array(namespaces);
    set_confinement(&mut v, spec, device_cgroup)?;
    set_system_paths(&mut v, &spec.security);
    add_devices(&mut v, &spec.devices, spec.security.all_devices);
    for (key, value) in &spec.sysctls {
        v["linux"]["sysctl"][key] = value.clone().into();
    }
    add_mounts(&mut v, dir, spec)?;
    // Round-trip through oci-spec: what runc gets is a spec oci-spec accepts.
    let checked: oci_spec::runtime::Spec = serde_json::from_value(v).map_err(|e| BundleError::Spec(e.to_string()))?;
    let bytes = serde_json::to_vec_pretty(&checked).map_err(|e| BundleError::Spec(e.to_string()))?;
    let config = dir.join("config.json");
    std::fs::write(&config, bytes).map_err(io_err("write", &config))?;
    Ok(())
}

/// The mounts berth adds to the runtime's defaults: /dev/shm as `--shm-size` and `--ipc`
/// have it, the volumes, the tmpfs and the /etc files.
fn add_mounts(v: &mut serde_json::Value, dir: &Path, spec: &Spec) -> Result<(), BundleError> {
    if let Some(mounts) = v["mounts"].as_array_mut() {
        set_shm_size(mounts, spec.shm_size.unwrap_or(crate::sandbox::DEFAULT_SHM_SIZE));
        // `--ipc`'s /dev/shm: none, or the host's bound over the tmpfs.
        match &spec.ipc {
            Ipc::Own { shm: false } => mounts.retain(|m| m["destination"] != "/dev/shm"),
            Ipc::Host => {
                for m in mounts.iter_mut().filter(|m| m["destination"] == "/dev/shm") {
                    *m = serde_json::json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                        "options": ["bind", "nosuid", "nodev", "noexec"]});
                }
            }
            Ipc::Own { shm: true } | Ipc::Join { .. } => {}
        }
        for vol in &spec.volumes {
            use crate::sandbox::BindRecursive;
            let mut options = vec![if vol.recursive == BindRecursive::Disabled { "bind" } else { "rbind" }];
            if vol.read_only {
                // `ro` for the top, which a runtime older than `rro` still honours; `rro`
                // (runc 1.1, crun) for every mount below, where the kernel has mount_setattr
                // (5.12): without it `enabled` stays top-only, as docker's does, and
                // `readonly` fails.
                options.push("ro");
                let below = matches!(vol.recursive, BindRecursive::Enabled | BindRecursive::Readonly);
                if below && crate::sys::has_mount_setattr() {
                    options.push("rro");
                } else if vol.recursive == BindRecursive::Readonly {
                    return Err(BundleError::Spec(format!(
                        "bind-recursive=readonly for {}: this kernel cannot make a bind read-only \
                         all the way down for runc or crun (Linux 5.12 can)",
                        vol.container
                    )));
                }
            }
            mounts.push(serde_json::json!({"destination": vol.container, "type": "bind", "source": vol.host, "options": options}));
        }
        for t in &spec.tmpfs {
            // `PATH[:OPTIONS]`: the runtime takes the same words, later ones winning.
            let (path, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
            let mut options = vec!["nosuid", "nodev"];
            options.extend(opts.split(',').filter(|o| !o.is_empty()));
            if !options.iter().any(|o| o.starts_with("mode=")) {
                options.push("mode=1777");
            }
            mounts
                .push(serde_json::json!({"destination": path, "type": "tmpfs", "source": "tmpfs", "options": options}));
        }
        // The /etc files last, as berth's own sandbox binds them (after a volume on /etc).
        mounts.extend(etc_mounts(dir, spec)?);
    }
    Ok(())
}

/// docker's `--privileged` and `systempaths=unconfined` as the runtime takes them: no
/// masked or read-only paths, and /sys with its cgroups writable.
fn set_system_paths(v: &mut serde_json::Value, security: &crate::security::Security) {
    if security.unmasked_paths {
        v["linux"]["maskedPaths"] = serde_json::json!([]);
        v["linux"]["readonlyPaths"] = serde_json::json!([]);
    }
    if !security.writable_sys {
        return;
    }
    for m in v["mounts"].as_array_mut().into_iter().flatten() {
        if matches!(m["destination"].as_str(), Some("/sys" | "/sys/fs/cgroup")) {
            if let Some(options) = m["options"].as_array_mut() {
                options.retain(|o| o != "ro");
            }
        }
    }
}

/// The same confinement as berth's own sandbox: capability sets (inheritable and ambient
/// empty, as docker has them since CVE-2022-24769) and the resolved seccomp policy. Without
/// a device cgroup (crun as berth runs it) and without berth's nodev mounts, a node made in
/// the container would open the host's device: no CAP_MKNOD there.
fn set_confinement(v: &mut serde_json::Value, spec: &Spec, device_cgroup: bool) -> Result<(), BundleError> {
    let mknod_unsafe = !device_cgroup && !spec.security.all_devices;
    let caps: Vec<String> = spec
        .security
        .capabilities
        .names()
        .iter()
        .filter(|n| !(mknod_unsafe && **n == "MKNOD"))
        .map(|n| format!("CAP_{n}"))
        .collect();
    v["process"]["capabilities"] = serde_json::json!({
        "bounding": caps, "permitted": caps, "effective": caps, "inheritable": [], "ambient": []
    });
    match spec.security.policy().map_err(|e| BundleError::Spec(e.to_string()))? {
        Some(policy) => v["linux"]["seccomp"] = policy.to_oci(),
        None => {
            if let Some(linux) = v["linux"].as_object_mut() {
                linux.remove("seccomp");
            }
        }
    }
    Ok(())
}

/// `--device`s as the runtime makes them: a node in `linux.devices`, and a device cgroup
/// rule in `linux.resources.devices` that lets the container open it; with `all`
/// (`--privileged`), a rule that opens every device, as docker's.
fn add_devices(v: &mut serde_json::Value, devices: &[crate::device::Device], all: bool) {
    if all {
        v["linux"]["resources"]["devices"] = serde_json::json!([{"allow": true, "access": "rwm"}]);
    }
    for d in devices {
        let (kind, major, minor) = (d.kind.to_string(), d.major, d.minor);
        let node = serde_json::json!({"path": d.container, "type": kind, "major": major, "minor": minor, "fileMode": d.mode, "uid": d.uid, "gid": d.gid});
        let rule = serde_json::json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": d.access});
        match v["linux"]["devices"].as_array_mut() {
            Some(nodes) => nodes.push(node),
            None => v["linux"]["devices"] = serde_json::json!([node]),
        }
        match v["linux"]["resources"]["devices"].as_array_mut() {
            Some(rules) => rules.push(rule),
            None => v["linux"]["resources"]["devices"] = serde_json::json!([rule]),
        }
    }
}

/// The binds of berth's /etc files (hosts, resolv.conf, hostname), written into the bundle
/// directory `dir`; read-only with a read-only root, as docker's.
fn etc_mounts(dir: &Path, spec: &Spec) -> Result<Vec<serde_json::Value>, BundleError> {
    let Some(files) = &spec.etc else { return Ok(Vec::new()) };
    let mut mounts = Vec::new();
    for (name, content) in files.entries() {
        let staged = dir.join(format!("etc-{name}"));
        std::fs::write(&staged, content).map_err(io_err("write", &staged))?;
        let mut options = vec!["rbind", "rprivate"];
        if spec.read_only {
            options.push("ro");
        }
        mounts.push(serde_json::json!({"destination": format!("/etc/{name}"), "type": "bind", "source": staged, "options": options}));
    }
    Ok(mounts)
}

/// Runs `spec` through the OCI runtime `runtime` (runc or crun): a bundle at `bundle` with
/// the same process and rootfs, in a private mount namespace of the calling process's, so
/// the rootfs mount goes away with it. The caller must be single-threaded.
pub fn spawn(runtime: &str, spec: &Spec, bundle: &Path, id: &str) -> std::io::Result<std::process::Child> {
    use crate::sandbox::User;
    // SAFETY: the caller is single-threaded (documented above).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )?;
    let mut ids = match &spec.user {
        Some(User(u)) => crate::sandbox::resolve_user(&spec.rootfs, u).map_err(std::io::Error::other)?,
        None => (0, 0, vec![0]),
    };
    crate::sandbox::add_groups(&spec.rootfs, &spec.group_add, &mut ids.2).map_err(std::io::Error::other)?;
    // runc always keeps a device cgroup; berth runs crun without its cgroup manager.
    write(bundle, spec, ids, runtime != "crun").map_err(std::io::Error::other)?;
    let mut cmd = std::process::Command::new(runtime);
    if runtime == "crun" {
        cmd.arg("--cgroup-manager=disabled");
        hide_unified_controllers()?;
    }
    cmd.args(["run", "--bundle"]).arg(bundle).arg(format!("berth-{id}"));
    cmd.spawn()
}

/// Sets the size of the default spec's /dev/shm tmpfs (runc's default is docker's 64 MiB).
fn set_shm_size(mounts: &mut [serde_json::Value], bytes: u64) {
    for m in mounts.iter_mut().filter(|m| m["destination"] == "/dev/shm") {
        if let Some(options) = m["options"].as_array_mut() {
            options.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("size=")));
            options.push(format!("size={bytes}").into());
        }
    }
}

/// crun 1.8 refuses every container on hybrid cgroups (v1 plus cgroup2 at
/// /sys/fs/cgroup/unified) once that cgroup2 tree has a controller, before it reads
/// `--cgroup-manager=disabled`; on this kind of host the hierarchy has hugetlb. In the
/// private mount namespace of [`spawn`] an empty file is bound over that list, so crun sees
/// no controller there. Nothing outside the caller changes.
fn hide_unified_controllers() -> std::io::Result<()> {
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    match std::fs::read_to_string(controllers) {
        Ok(list) if !list.trim().is_empty() => rustix::mount::mount_bind("/dev/null", controllers)
            .map_err(|e| std::io::Error::other(format!("hide {} from crun: {e}", controllers.display()))),
        _ => Ok(()),
    }
}

/// Removes what running under runc or crun left: the mountpoint and the bundle beside it.
pub fn remove(mountpoint: &Path) {
    let _ = std::fs::remove_dir(mountpoint);
    let bundle = mountpoint.with_extension("bundle");
    if bundle.exists() {
        // Unmount the rootfs first: removing the bundle must never walk into it.
        let _ = crate::snapshot::unmount(&bundle.join("rootfs"));
        let _ = std::fs::remove_file(bundle.join("config.json"));
        for name in crate::sandbox::EtcFiles::NAMES {
            let _ = std::fs::remove_file(bundle.join(format!("etc-{name}")));
        }
        let _ = std::fs::remove_dir(bundle.join("rootfs"));
        let _ = std::fs::remove_dir(&bundle);
    }
}
