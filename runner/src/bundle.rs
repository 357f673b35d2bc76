//! An OCI runtime bundle (config.json + rootfs) for the same process, so that runc or
//! crun can run exactly what berth's own sandbox runs: the cross-check of `--runtime`.

use std::path::Path;

use crate::sandbox::{Network, Spec};

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
pub fn write(dir: &Path, spec: &Spec, ids: (u32, u32, Vec<u32>)) -> Result<(), BundleError> {
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
    v["process"]["noNewPrivileges"] = true.into();
    // The same limits berth's own sandbox sets; unlimited is RLIM_INFINITY.
    let rlimits: Vec<serde_json::Value> = crate::rlimit::effective(&spec.ulimits)
        .map_err(|e| BundleError::Spec(e.to_string()))?
        .iter()
        .map(|u| {
            serde_json::json!({"type": u.oci_type(), "soft": u.soft.unwrap_or(u64::MAX), "hard": u.hard.unwrap_or(u64::MAX)})
        })
        .collect();
    v["process"]["rlimits"] = serde_json::Value::Array(rlimits);
    v["root"] = serde_json::json!({"path": "rootfs", "readonly": spec.read_only});
    v["hostname"] = spec.hostname.clone().into();
    let mut namespaces = vec![
        serde_json::json!({"type": "pid"}),
        serde_json::json!({"type": "ipc"}),
        serde_json::json!({"type": "uts"}),
        serde_json::json!({"type": "mount"}),
    ];
    match spec.network {
        Network::None => namespaces.push(serde_json::json!({"type": "network"})),
        // The runtime joins the namespace berth made, through berth's own open fd.
        Network::Join(fd) => namespaces
            .push(serde_json::json!({"type": "network", "path": format!("/proc/{}/fd/{fd}", std::process::id())})),
        Network::Host => {}
    }
    v["linux"]["namespaces"] = serde_json::Value::Array(namespaces);
    // The same confinement as berth's own sandbox: capability sets (ambient empty) and the
    // resolved seccomp policy.
    let caps: Vec<String> = spec.security.capabilities.names().iter().map(|n| format!("CAP_{n}")).collect();
    v["process"]["capabilities"] = serde_json::json!({
        "bounding": caps, "permitted": caps, "effective": caps, "inheritable": caps, "ambient": []
    });
    match spec.security.policy().map_err(|e| BundleError::Spec(e.to_string()))? {
        Some(policy) => v["linux"]["seccomp"] = policy.to_oci(),
        None => {
            if let Some(linux) = v["linux"].as_object_mut() {
                linux.remove("seccomp");
            }
        }
    }
    if let Some(mounts) = v["mounts"].as_array_mut() {
        for vol in &spec.volumes {
            let mut options = vec!["rbind"];
            if vol.read_only {
                options.push("ro");
            }
            mounts.push(serde_json::json!({"destination": vol.container, "type": "bind", "source": vol.host, "options": options}));
        }
        for t in &spec.tmpfs {
            mounts.push(serde_json::json!({"destination": t, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
        }
    }
    // Round-trip through oci-spec: what runc gets is a spec oci-spec accepts.
    let checked: oci_spec::runtime::Spec = serde_json::from_value(v).map_err(|e| BundleError::Spec(e.to_string()))?;
    let bytes = serde_json::to_vec_pretty(&checked).map_err(|e| BundleError::Spec(e.to_string()))?;
    let config = dir.join("config.json");
    std::fs::write(&config, bytes).map_err(io_err("write", &config))?;
    Ok(())
}
