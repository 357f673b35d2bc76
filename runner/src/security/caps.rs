//! Capability sets by name, and docker's `--cap-add`, `--cap-drop` and `--privileged` rules.

use super::SecurityError;

/// Linux capability names by number (`CAP_CHOWN` is 0), as `capabilities(7)` lists them.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default set. docker keeps MKNOD safe with a device cgroup that refuses to open
/// any node outside an allow-list; berth sets no device cgroup (it would cost every run a
/// cgroup) and mounts whatever a container can reach nodes on `nodev` instead (see
/// `Security::all_devices`), so a node made in the container (`mknod /tmp/sda b 8 0`) opens
/// nothing, and /dev's own nodes are the host's, bound.
const DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of capabilities, one bit per capability number: what a container's bounding,
/// permitted and effective sets are all set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities(pub u64);

impl Default for Capabilities {
    fn default() -> Capabilities {
        Capabilities(DEFAULT.iter().map(|n| bit(n).unwrap_or(0)).fold(0, |a, b| a | b))
    }
}

/// The bit of capability `name` (`SYS_ADMIN`, `CAP_SYS_ADMIN`, any case).
fn bit(name: &str) -> Option<u64> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| 1u64 << i)
}

impl Capabilities {
    /// Every capability this kernel knows that berth itself holds: what `ALL` and
    /// `--privileged` give (a capability berth lacks cannot be handed on).
    pub fn all() -> Capabilities {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(NAMES.len() as u32 - 1)
            .min(63);
        let known = if last == 63 { u64::MAX } else { (1u64 << (last + 1)) - 1 };
        let held = rustix::thread::capabilities(None).map(|s| s.permitted.bits()).unwrap_or(known);
        Capabilities(known & held)
    }

    /// docker's rules: `--privileged` is every capability; `--cap-add ALL` is every one but
    /// the dropped; `--cap-drop ALL` keeps only the added; otherwise the default set less
    /// the dropped plus the added. Names take `CAP_` or not, in any case; an unknown name,
    /// or one berth does not hold itself, is an error.
    pub fn docker(add: &[String], drop: &[String], privileged: bool) -> Result<Capabilities, SecurityError> {
        let all = Capabilities::all();
        if privileged {
            return Ok(all);
        }
        let parse = |names: &[String]| -> Result<(bool, u64), SecurityError> {
            let mut bits = 0;
            let mut every = false;
            for n in names {
                if n.eq_ignore_ascii_case("ALL") {
                    every = true;
                } else {
                    bits |= bit(n).ok_or_else(|| SecurityError::Capability(format!("unknown capability: {n:?}")))?;
                }
            }
            Ok((every, bits))
        };
        let (add_all, add_bits) = parse(add)?;
        let (drop_all, drop_bits) = parse(drop)?;
        let bits = if add_all {
            all.0 & !drop_bits
        } else if drop_all {
            add_bits
        } else {
            (Capabilities::default().0 & !drop_bits) | add_bits
        };
        if let Some(missing) = Capabilities(bits & !all.0).names().first() {
            return Err(SecurityError::Capability(format!("CAP_{missing} is not available: berth does not hold it")));
        }
        Ok(Capabilities(bits))
    }

    /// Whether the set holds `name` (`CAP_SYS_ADMIN` or `SYS_ADMIN`).
    pub fn has(&self, name: &str) -> bool {
        bit(name).is_some_and(|b| self.0 & b != 0)
    }

    /// The names in the set, without `CAP_`, by number.
    pub fn names(&self) -> Vec<&'static str> {
        NAMES.iter().enumerate().filter(|(i, _)| self.0 & (1u64 << i) != 0).map(|(_, n)| *n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_default_is_dockers_set() {
        let d = Capabilities::default();
        assert_eq!(d.0, 0xa80425fb, "{:?}", d.names());
        assert!(d.has("CAP_SYS_CHROOT") && d.has("net_raw") && d.has("MKNOD") && !d.has("SYS_ADMIN"));
    }

    #[test]
    fn add_and_drop_follow_dockers_rules() {
        let c = Capabilities::docker(&s(&["sys_ptrace"]), &s(&["CAP_NET_RAW"]), false).unwrap();
        assert!(c.has("SYS_PTRACE") && !c.has("NET_RAW") && c.has("CHOWN"));
        let only = Capabilities::docker(&s(&["CHOWN"]), &s(&["ALL"]), false).unwrap();
        assert_eq!(only.names(), ["CHOWN"]);
        assert_eq!(Capabilities::docker(&[], &s(&["all"]), false).unwrap().0, 0);
        let all = Capabilities::docker(&s(&["ALL"]), &s(&["SYS_ADMIN"]), false).unwrap();
        assert_eq!(all.0, Capabilities::all().0 & !(1 << 21));
        assert_eq!(Capabilities::docker(&s(&["CHOWN"]), &[], true).unwrap(), Capabilities::all());
        let err = Capabilities::docker(&s(&["SYS_WIZARD"]), &[], false).unwrap_err();
        assert!(err.to_string().contains("SYS_WIZARD"), "{err}");
    }
}
