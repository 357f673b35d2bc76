//! `--sysctl KEY=VALUE`: kernel settings of the container's own namespaces, as docker takes
//! them. Only settings a namespace holds are allowed (the IPC namespace's `kernel.msg*`,
//! `kernel.sem`, `kernel.shm*` and `fs.mqueue.*`; the network namespace's `net.*`); they are
//! written in the container's namespaces before its filesystem is built. As with docker, a
//! few `net.*` settings are the host's whatever namespace writes them (on some kernels
//! `net.netfilter.nf_conntrack_max`): Kubernetes calls those unsafe, docker allows them.

/// The IPC namespace's settings by name, as docker allows them.
const IPC: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Whether the setting `key` is the IPC namespace's (the others allowed are the network
/// namespace's).
pub fn in_ipc_namespace(key: &str) -> bool {
    IPC.contains(&key) || key.starts_with("fs.mqueue.")
}

/// A `--sysctl KEY=VALUE` split, with KEY checked against the namespaces the container has:
/// docker's rules, and `host_network` refuses `net.*` (it would change the host's).
pub fn parse(arg: &str, host_network: bool) -> Result<(String, String), String> {
    let (key, value) =
        arg.split_once('=').ok_or_else(|| format!("invalid argument {arg:?} for \"--sysctl\": expected KEY=VALUE"))?;
    let key = key.trim();
    // Dots between the parts, as docker takes them (a slash form could not name an
    // interface with a dot in its name).
    let well_formed = !key.is_empty()
        && key.split('.').all(|part| !part.is_empty())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !well_formed {
        return Err(format!("invalid sysctl name {key:?}: parts between dots, of letters, digits, _ and -"));
    }
    if key.starts_with("net.") {
        if host_network {
            return Err(format!("sysctl {key:?} not allowed in host network namespace"));
        }
    } else if !in_ipc_namespace(key) {
        return Err(format!("sysctl {key:?} is not in a separate kernel namespace"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// The file under /proc/sys that holds `key`.
pub fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Writes each setting in the calling process's namespaces (which must be the container's:
/// /proc/sys/net and the IPC settings are those of the writing process's namespaces).
pub(crate) fn write_all(sysctls: &[(String, String)]) -> std::io::Result<()> {
    for (key, value) in sysctls {
        // The error as the kernel gave it: its errno is all that crosses back to the parent.
        std::fs::write(path(key), value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_namespace_holds_is_allowed_as_in_docker() {
        let ok = |arg: &str| parse(arg, false).unwrap_or_else(|e| panic!("{arg}: {e}"));
        assert_eq!(ok("net.core.somaxconn=1024"), ("net.core.somaxconn".into(), "1024".into()));
        assert_eq!(ok("kernel.sem=250 32000 100 128").1, "250 32000 100 128");
        assert_eq!(ok("fs.mqueue.msg_max=64").0, "fs.mqueue.msg_max");
        assert_eq!(path("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward");
        let err = |arg: &str, host| parse(arg, host).unwrap_err();
        assert!(err("vm.swappiness=10", false).contains("not in a separate kernel namespace"));
        assert!(err("kernel.hostname=x", false).contains("not in a separate kernel namespace"));
        assert!(err("net.ipv4.ip_forward=1", true).contains("not allowed in host network namespace"));
        assert!(parse("kernel.shmmni=1", true).is_ok(), "IPC settings do not depend on the network");
        for bad in ["net", "net.ipv4", "=1", "net..x=1", "net.../x=1", "net.a b=1", "net/ipv4/ip_forward=1"] {
            assert!(parse(bad, false).is_err(), "{bad}");
        }
    }
}
