//! Seccomp profiles in docker's JSON format (`--security-opt seccomp=PROFILE.json`, and
//! berth's own default in `default.json`), resolved for a container's capabilities and the
//! machine's architecture into a [`Policy`], and compiled to a BPF program by libseccomp.

use std::str::FromStr;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use serde::Deserialize;

use super::{Capabilities, SecurityError};

/// berth's default profile: docker's default semantics (an allow-list; EPERM for the rest,
/// ENOSYS for clone3; argument filters on clone, personality and socket; some syscalls
/// allowed only with the capability that governs them), written in docker's format.
const DEFAULT: &str = include_str!("default.json");

/// A profile as docker reads it: a default action and rules by syscall name, each rule
/// possibly limited to some capabilities, architectures or kernel versions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    /// The older form: the architectures themselves.
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// The older form: one name.
    #[serde(default)]
    name: Option<String>,
    action: String,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Only,
    #[serde(default)]
    excludes: Only,
}

/// A condition on one argument; for `SCMP_CMP_MASKED_EQ`, `value` is the mask and
/// `valueTwo` what the masked argument must equal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// Where a rule applies (`includes`) or does not (`excludes`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Only {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// What the kernel does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run it.
    Allow,
    /// Fail it with this errno.
    Errno(u32),
    /// Kill the thread.
    KillThread,
    /// Kill the process.
    KillProcess,
    /// Send SIGSYS.
    Trap,
    /// Hand it to a ptrace tracer.
    Trace(u32),
    /// Run it and log it.
    Log,
}

impl Action {
    fn parse(name: &str, errno: Option<u32>) -> Result<Action, SecurityError> {
        Ok(match name {
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(libc::EPERM as u32)),
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_TRACE" => Action::Trace(errno.unwrap_or(libc::EPERM as u32)),
            "SCMP_ACT_LOG" => Action::Log,
            other => return Err(SecurityError::Profile(format!("unsupported seccomp action {other:?}"))),
        })
    }

    fn scmp(self) -> ScmpAction {
        match self {
            Action::Allow => ScmpAction::Allow,
            Action::Errno(e) => ScmpAction::Errno(e as i32),
            Action::KillThread => ScmpAction::KillThread,
            Action::KillProcess => ScmpAction::KillProcess,
            Action::Trap => ScmpAction::Trap,
            Action::Trace(m) => ScmpAction::Trace(m as u16),
            Action::Log => ScmpAction::Log,
        }
    }

    /// The action and its errno as the OCI runtime spec writes them.
    fn oci(self) -> (&'static str, Option<u32>) {
        match self {
            Action::Allow => ("SCMP_ACT_ALLOW", None),
            Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
            Action::KillThread => ("SCMP_ACT_KILL", None),
            Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
            Action::Trap => ("SCMP_ACT_TRAP", None),
            Action::Trace(m) => ("SCMP_ACT_TRACE", Some(m)),
            Action::Log => ("SCMP_ACT_LOG", None),
        }
    }
}

/// A profile resolved for one container: its rules for this machine and these
/// capabilities, nothing conditional left. What the BPF program is compiled from, and what
/// runc and crun get as `linux.seccomp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// For every syscall no rule names.
    pub default: Action,
    /// `SCMP_ARCH_*`: the native architecture first, then those it also runs.
    pub arches: Vec<String>,
    /// `(names, action, conditions)`; all conditions of a rule must hold.
    pub rules: Vec<(Vec<String>, Action, Vec<Arg>)>,
}

/// The machine's architecture as docker names it in `includes.arches`, and libseccomp's name.
fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        "x86" => ("386", "SCMP_ARCH_X86"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        other => (other, "SCMP_ARCH_NATIVE"),
    }
}

fn version_at_least(min: &str, have: (u32, u32)) -> bool {
    let mut parts = min.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let want = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= want
}

impl Profile {
    /// berth's default profile.
    pub fn default_profile() -> Profile {
        // The embedded file is checked by a unit test; parsing it cannot fail at run time.
        serde_json::from_str(DEFAULT).unwrap_or_else(|e| unreachable!("runner/src/security/default.json: {e}"))
    }

    /// Parses a profile in docker's JSON format.
    pub fn parse(json: &[u8]) -> Result<Profile, SecurityError> {
        let profile: Profile =
            serde_json::from_slice(json).map_err(|e| SecurityError::Profile(format!("not a seccomp profile: {e}")))?;
        // Resolving checks every action and operator now, not when a container starts.
        profile.resolve(&Capabilities::default())?;
        Ok(profile)
    }

    /// The rules that apply to a container with `caps` on this machine, as docker picks them.
    pub fn resolve(&self, caps: &Capabilities) -> Result<Policy, SecurityError> {
        let (arch, scmp_arch) = native_arch();
        let kernel = crate::sys::kernel_version();
        let applies = |only: &Only, include: bool| {
            let caps_hit = |all: bool| {
                if all {
                    only.caps.iter().all(|c| caps.has(c))
                } else {
                    only.caps.iter().any(|c| caps.has(c))
                }
            };
            if include {
                (only.caps.is_empty() || caps_hit(true))
                    && (only.arches.is_empty() || only.arches.iter().any(|a| a == arch))
                    && only.min_kernel.as_deref().is_none_or(|m| version_at_least(m, kernel))
            } else {
                (!only.caps.is_empty() && caps_hit(false))
                    || only.arches.iter().any(|a| a == arch)
                    || only.min_kernel.as_deref().is_some_and(|m| version_at_least(m, kernel))
            }
        };
        let mut rules = Vec::new();
        for r in &self.syscalls {
            if !applies(&r.includes, true) || applies(&r.excludes, false) {
                continue;
            }
            let mut names = r.names.clone();
            names.extend(r.name.clone());
            for a in &r.args {
                op(&a.op, a.value)?;
            }
            rules.push((names, Action::parse(&r.action, r.errno_ret)?, r.args.clone()));
        }
        let mut arches: Vec<String> = self.architectures.clone();
        if let Some(m) = self.arch_map.iter().find(|m| m.architecture == scmp_arch) {
            arches = std::iter::once(m.architecture.clone())
                .chain(m.sub_architectures.clone().unwrap_or_default())
                .collect();
        }
        Ok(Policy { default: Action::parse(&self.default_action, self.default_errno_ret)?, arches, rules })
    }
}

/// libseccomp's comparison for a docker operator name.
fn op(name: &str, value: u64) -> Result<ScmpCompareOp, SecurityError> {
    Ok(match name {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(value),
        other => return Err(SecurityError::Profile(format!("unsupported seccomp operator {other:?}"))),
    })
}

fn lib_err(what: &'static str) -> impl FnOnce(libseccomp::error::SeccompError) -> SecurityError {
    move |e| SecurityError::Seccomp(format!("{what}: {e}"))
}

impl Policy {
    /// The BPF program as libseccomp exports it (8-byte `sock_filter`s in native byte
    /// order), made before the fork so that the child only hands it to the kernel. Names
    /// of syscalls this machine lacks are skipped, as runc and crun skip them.
    pub fn compile(&self) -> Result<Vec<u8>, SecurityError> {
        let mut ctx = ScmpFilterContext::new(self.default.scmp()).map_err(lib_err("new filter"))?;
        // A binary tree of syscall numbers instead of a list: the kernel runs the filter for
        // every syscall number when it loads it (to cache what is always allowed), so a
        // short path per syscall halves what loading costs (measured: 0.9 -> 0.4 ms of
        // system time to start busybox). libseccomp before 2.5 lacks it; the list it then
        // makes is as correct, only slower to load.
        let _optional = ctx.set_ctl_optimize(2);
        for a in &self.arches {
            let arch =
                ScmpArch::from_str(a).map_err(|_| SecurityError::Profile(format!("unknown architecture {a}")))?;
            if !ctx.is_arch_present(arch).map_err(lib_err("architecture"))? {
                ctx.add_arch(arch).map_err(lib_err("add an architecture"))?;
            }
        }
        for (names, action, args) in &self.rules {
            // libseccomp refuses a rule that does what the default does; it changes nothing.
            if *action == self.default {
                continue;
            }
            // Two conditions on one argument become two rules, as runc makes them.
            let repeated = args.iter().enumerate().any(|(i, a)| args[..i].iter().any(|b| b.index == a.index));
            let groups: Vec<Vec<&Arg>> =
                if repeated { args.iter().map(|a| vec![a]).collect() } else { vec![args.iter().collect()] };
            for name in names {
                let Ok(syscall) = ScmpSyscall::from_name(name) else { continue };
                for group in &groups {
                    let conds = group
                        .iter()
                        .map(|a| {
                            let datum = if a.op == "SCMP_CMP_MASKED_EQ" { a.value_two } else { a.value };
                            Ok(ScmpArgCompare::new(a.index, op(&a.op, a.value)?, datum))
                        })
                        .collect::<Result<Vec<_>, SecurityError>>()?;
                    ctx.add_rule_conditional(action.scmp(), syscall, &conds)
                        .map_err(|e| SecurityError::Seccomp(format!("rule for {name}: {e}")))?;
                }
            }
        }
        let memfd = rustix::fs::memfd_create("berth-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| SecurityError::Seccomp(format!("memfd: {e}")))?;
        ctx.export_bpf(&memfd).map_err(lib_err("export the filter"))?;
        let mut file = std::fs::File::from(memfd);
        let mut bytes = Vec::new();
        std::io::Seek::rewind(&mut file)
            .and_then(|_| std::io::Read::read_to_end(&mut file, &mut bytes))
            .map_err(|e| SecurityError::Seccomp(format!("read the filter: {e}")))?;
        Ok(bytes)
    }

    /// The policy as the OCI runtime spec's `linux.seccomp`, for runc and crun.
    pub fn to_oci(&self) -> serde_json::Value {
        let (default, default_errno) = self.default.oci();
        let syscalls: Vec<serde_json::Value> = self
            .rules
            .iter()
            .map(|(names, action, args)| {
                let (act, errno) = action.oci();
                let mut v = serde_json::json!({"names": names, "action": act});
                if let Some(e) = errno {
                    v["errnoRet"] = e.into();
                }
                if !args.is_empty() {
                    v["args"] = args
                        .iter()
                        .map(|a| serde_json::json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}))
                        .collect();
                }
                v
            })
            .collect();
        let mut v = serde_json::json!({"defaultAction": default, "architectures": self.arches, "syscalls": syscalls});
        if let Some(e) = default_errno {
            v["defaultErrnoRet"] = e.into();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_for<'a>(p: &'a Policy, name: &str) -> Vec<&'a (Vec<String>, Action, Vec<Arg>)> {
        p.rules.iter().filter(|(n, _, _)| n.iter().any(|x| x == name)).collect()
    }

    #[test]
    fn the_default_profile_refuses_what_docker_refuses() {
        let p = Profile::default_profile().resolve(&Capabilities::default()).unwrap();
        assert_eq!(p.default, Action::Errno(libc::EPERM as u32));
        for refused in ["add_key", "keyctl", "request_key", "io_uring_setup", "unshare", "mount", "setns", "bpf"] {
            assert!(rules_for(&p, refused).is_empty(), "{refused} is allowed");
        }
        assert!(rules_for(&p, "perf_event_open").is_empty());
        assert_eq!(rules_for(&p, "clone3")[0].1, Action::Errno(libc::ENOSYS as u32));
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].2[0].value, 0x7e02_0000, "clone without namespace flags only");
        assert_eq!(rules_for(&p, "personality").len(), 5);
        assert!(rules_for(&p, "chroot").len() == 1, "SYS_CHROOT is in the default set");
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(p.arches, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
            assert_eq!(rules_for(&p, "arch_prctl").len(), 1);
        }
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let caps = Capabilities::docker(&["SYS_ADMIN".into(), "SYS_PTRACE".into()], &[], false).unwrap();
        let p = Profile::default_profile().resolve(&caps).unwrap();
        assert!(rules_for(&p, "mount").iter().any(|r| r.1 == Action::Allow && r.2.is_empty()));
        assert!(rules_for(&p, "clone").iter().all(|r| r.2.is_empty()), "clone unconditional with SYS_ADMIN");
        assert!(rules_for(&p, "clone3").iter().all(|r| r.1 == Action::Allow));
        assert!(!rules_for(&p, "kcmp").is_empty());
    }

    #[test]
    fn a_policy_compiles_and_converts_for_runc() {
        let p = Profile::default_profile().resolve(&Capabilities::default()).unwrap();
        let bpf = p.compile().unwrap();
        assert!(bpf.len() > 800 && bpf.len() < 4096 * 8 && bpf.len().is_multiple_of(8), "{} bytes", bpf.len());
        let oci = p.to_oci();
        assert_eq!(oci["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(oci["defaultErrnoRet"], 1);
        let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(oci).unwrap();
        assert!(parsed.syscalls().as_ref().is_some_and(|s| s.len() == p.rules.len()));
    }

    #[test]
    fn a_profile_in_dockers_format_is_read_and_checked() {
        let p = Profile::parse(
            br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        )
        .unwrap();
        let policy = p.resolve(&Capabilities::default()).unwrap();
        assert_eq!(policy.rules, vec![(vec!["uname".to_string()], Action::Errno(13), vec![])]);
        policy.compile().unwrap();
        let bad = Profile::parse(br#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).unwrap_err();
        assert!(bad.to_string().contains("SCMP_ACT_NOTIFY"), "{bad}");
        assert!(Profile::parse(b"{").is_err());
    }
}
