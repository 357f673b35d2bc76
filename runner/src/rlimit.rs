//! Resource limits of the container's process: docker's default for open files and docker's
//! `--ulimit NAME=SOFT[:HARD]`, never above the hard limit berth itself was given.
//!
//! Raising a hard limit needs CAP_SYS_RESOURCE, and asking for more than the host allows is
//! what makes podman's runs fail on hosts with a low open-files limit (it asks for 1048576).
//! berth caps every limit at its own hard limit instead, and `berth run` says so when a
//! `--ulimit` was cut.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// docker's default open-files limit for a container, soft and hard.
pub const DEFAULT_NOFILE: u64 = 1_048_576;

/// One `--ulimit NAME=SOFT[:HARD]`; `-1` (or `unlimited`) is no limit, as in docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// docker's name of the resource: `nofile`, `nproc`, `core`, `stack`, ...
    pub name: String,
    /// The soft limit (None: unlimited).
    pub soft: Option<u64>,
    /// The hard limit (None: unlimited).
    pub hard: Option<u64>,
}

/// docker's resource names and the kernel's resources they stand for.
const NAMES: [(&str, Resource); 15] = [
    ("core", Resource::Core),
    ("cpu", Resource::Cpu),
    ("data", Resource::Data),
    ("fsize", Resource::Fsize),
    ("locks", Resource::Locks),
    ("memlock", Resource::Memlock),
    ("msgqueue", Resource::Msgqueue),
    ("nice", Resource::Nice),
    ("nofile", Resource::Nofile),
    ("nproc", Resource::Nproc),
    ("rss", Resource::Rss),
    ("rtprio", Resource::Rtprio),
    ("rttime", Resource::Rttime),
    ("sigpending", Resource::Sigpending),
    ("stack", Resource::Stack),
];

fn resource(name: &str) -> Option<Resource> {
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// `a <= b` where None is unlimited.
fn at_most(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a <= b,
    }
}

fn lower(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    if at_most(a, b) {
        a
    } else {
        b
    }
}

impl std::fmt::Display for Ulimit {
    /// `NAME=SOFT:HARD`, `-1` for unlimited: what [`Ulimit::from_str`](std::str::FromStr) reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: Option<u64>| x.map_or("-1".to_owned(), |n| n.to_string());
        write!(f, "{}={}:{}", self.name, v(self.soft), v(self.hard))
    }
}

impl std::str::FromStr for Ulimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Ulimit, String> {
        let (name, values) =
            s.split_once('=').ok_or_else(|| format!("invalid ulimit {s:?}: expected NAME=SOFT[:HARD]"))?;
        if resource(name).is_none() {
            let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            return Err(format!("invalid ulimit {s:?}: unknown resource {name:?} (one of {})", names.join(", ")));
        }
        let value = |v: &str| -> Result<Option<u64>, String> {
            match v {
                "-1" | "unlimited" => Ok(None),
                _ => v.parse::<u64>().map(Some).map_err(|_| format!("invalid ulimit {s:?}: {v:?} is not a number")),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (value(soft)?, value(hard)?),
            None => {
                let v = value(values)?;
                (v, v)
            }
        };
        if !at_most(soft, hard) {
            return Err(format!("invalid ulimit {s:?}: the soft limit is above the hard limit"));
        }
        Ok(Ulimit { name: name.to_owned(), soft, hard })
    }
}

impl Ulimit {
    /// The kernel's resource; an error for a name docker does not know (a hand-made value).
    fn resource(&self) -> std::io::Result<Resource> {
        resource(&self.name).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("unknown ulimit resource {:?}", self.name))
        })
    }

    /// The limit as it will be set: the hard limit at most berth's own, the soft limit at
    /// most the hard one. The second value is berth's hard limit when it cut the request.
    /// A name docker does not know is not capped (setting it then fails with a message).
    pub fn capped(&self) -> (Ulimit, Option<u64>) {
        let Ok(res) = self.resource() else { return (self.clone(), None) };
        let host = getrlimit(res).maximum;
        let hard = lower(self.hard, host);
        let soft = lower(self.soft, hard);
        let cut = (hard != self.hard).then_some(host).flatten();
        (Ulimit { name: self.name.clone(), soft, hard }, cut)
    }

    /// The OCI runtime spec's name of the resource (`RLIMIT_NOFILE`).
    pub fn oci_type(&self) -> String {
        format!("RLIMIT_{}", self.name.to_uppercase())
    }
}

/// Every limit the container gets, capped: docker's open-files default, then the `--ulimit`
/// flags in order (a later one for the same resource wins). An unknown name is an error.
pub fn effective(ulimits: &[Ulimit]) -> std::io::Result<Vec<Ulimit>> {
    let default = Ulimit { name: "nofile".into(), soft: Some(DEFAULT_NOFILE), hard: Some(DEFAULT_NOFILE) };
    let mut out: Vec<Ulimit> = Vec::new();
    for u in std::iter::once(&default).chain(ulimits) {
        u.resource()?;
        let (capped, _) = u.capped();
        out.retain(|o| o.name != capped.name);
        out.push(capped);
    }
    Ok(out)
}

/// Sets the limits of [`effective`] on the calling process (the container's, before exec).
pub fn apply(ulimits: &[Ulimit]) -> std::io::Result<()> {
    for u in effective(ulimits)? {
        setrlimit(u.resource()?, Rlimit { current: u.soft, maximum: u.hard }).map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Ulimit, String> {
        s.parse()
    }

    #[test]
    fn dockers_forms_parse() {
        let u = parse("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (Some(1024), Some(2048)));
        let u = parse("nproc=512").unwrap();
        assert_eq!((u.soft, u.hard), (Some(512), Some(512)));
        let u = parse("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        let u = parse("stack=8192:unlimited").unwrap();
        assert_eq!((u.soft, u.hard), (Some(8192), None));
        assert_eq!(u.oci_type(), "RLIMIT_STACK");
    }

    #[test]
    fn bad_ulimits_say_what_is_wrong() {
        assert!(parse("nofile").unwrap_err().contains("NAME=SOFT[:HARD]"));
        assert!(parse("files=10").unwrap_err().contains("unknown resource \"files\""));
        assert!(parse("nofile=ten").unwrap_err().contains("not a number"));
        assert!(parse("nofile=10:5").unwrap_err().contains("soft limit is above the hard limit"));
        assert!(parse("nofile=-1:5").unwrap_err().contains("soft limit is above the hard limit"));
    }

    #[test]
    fn limits_never_go_above_berths_own_hard_limit() {
        let host = getrlimit(Resource::Nofile).maximum;
        let (capped, cut) = parse("nofile=-1").unwrap().capped();
        assert_eq!(capped.hard, host);
        assert_eq!(capped.soft, host);
        assert_eq!(cut, host, "an unlimited request is cut wherever berth itself is limited");
        let (capped, cut) = parse("nofile=64:128").unwrap().capped();
        assert_eq!((capped.soft, capped.hard, cut), (Some(64), Some(128), None));
    }

    #[test]
    fn the_default_open_files_limit_comes_first_and_a_flag_replaces_it() {
        let all = effective(&[parse("nproc=100:200").unwrap(), parse("nofile=64").unwrap()]).unwrap();
        let names: Vec<&str> = all.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["nproc", "nofile"]);
        assert_eq!(all[1].hard, Some(64));
        let host = getrlimit(Resource::Nofile).maximum;
        let default = effective(&[]).unwrap();
        assert_eq!(default[0].hard, lower(Some(DEFAULT_NOFILE), host));
    }

    #[test]
    fn a_hand_made_limit_with_an_unknown_name_is_an_error_not_another_limit() {
        let typo = Ulimit { name: "nporc".into(), soft: Some(1), hard: Some(1) };
        let err = effective(std::slice::from_ref(&typo)).unwrap_err();
        assert!(err.to_string().contains("unknown ulimit resource \"nporc\""), "{err}");
        assert!(apply(&[typo]).is_err());
    }
}
