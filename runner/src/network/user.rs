//! User-defined networks (`berth network create NAME`), as docker's: a bridge of their own,
//! isolated from berth's other bridges, on which containers reach each other by name
//! through a resolver at [`super::RESOLVER`] in each container (see [`super::attach_to`]).
//!
//! A network's definition is a JSON file in the store, `networks/<name>.json`, written once
//! by [`create`]; its bridge is host state made at once, made again by the first container
//! that needs it after a reboot, and removed by [`remove`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Bridge;

/// The networks every store has, that `network create` can't make or `network rm` remove.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// Where [`create`] looks for a free subnet: 10.92.0.0/24 to 10.99.255.0/24, one /24 each.
const POOL: std::ops::RangeInclusive<u32> = 0x0A5C_0000 >> 8..=0x0A63_FF00 >> 8;

/// A user-defined network, as `network inspect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The subnet's first address.
    pub subnet: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The bridge's address, the containers' gateway.
    pub gateway: Ipv4Addr,
    /// `--internal`: no traffic leaves the bridge.
    #[serde(default)]
    pub internal: bool,
    /// `--label` pairs.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What `network create` asks for beyond the name.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--subnet A.B.C.D/N`; else a free /24 of berth's pool.
    pub subnet: Option<(Ipv4Addr, u8)>,
    /// `--gateway`; else the subnet's first host.
    pub gateway: Option<Ipv4Addr>,
    /// `--internal`.
    pub internal: bool,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
}

/// Why a network command failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name or the options are refused.
    #[error("{0}")]
    Invalid(String),
    /// No network has that name or ID.
    #[error("network {0} not found")]
    NotFound(String),
    /// The host's network or the store failed.
    #[error("{what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        err: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |err| Error::Io { what, err }
}

impl Network {
    /// Its bridge on the host, in the store at `root`.
    pub fn bridge(&self, root: &Path) -> Bridge {
        Bridge::user_defined(self, definition(root, &self.name))
    }
}

/// The file that defines network `name`.
fn definition(root: &Path, name: &str) -> PathBuf {
    dir(root).join(format!("{name}.json"))
}

fn dir(root: &Path) -> PathBuf {
    root.join("networks")
}

/// docker's rule for a network's name: a letter or digit, then letters, digits, `_.-`.
fn check_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(Error::Invalid(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if PREDEFINED.contains(&name) {
        return Err(Error::Invalid(format!("network with name {name} already exists (a predefined network)")));
    }
    Ok(())
}

/// Makes network `name` and its bridge: the subnet given (checked against the host's routes
/// and the store's networks) or the first free /24 of berth's pool.
pub fn create(root: &Path, name: &str, options: Options) -> Result<Network, Error> {
    check_name(name)?;
    let dir = dir(root);
    crate::container::private_dir(&dir).map_err(io(format!("create {}", dir.display())))?;
    let lock = crate::container::open_private(&dir.join(".lock"), false).map_err(io("lock the networks"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io("lock the networks")(e.into()))?;
    let existing = list(root)?;
    if existing.iter().any(|n| n.name == name) {
        return Err(Error::Invalid(format!("network with name {name} already exists")));
    }
    let taken: Vec<(Ipv4Addr, u8)> = existing.iter().map(|n| (n.subnet, n.prefix)).collect();
    // Host-wide: two stores creating at once must not pick one subnet.
    let _host = super::network_lock().map_err(io("lock the host's networks"))?;
    let routes = super::routes().map_err(io("read the host's routes"))?;
    let free = |net: Ipv4Addr, prefix: u8| {
        let clash = routes.iter().find(|r| r.overlaps(net, prefix)).map(|r| format!("{} on {}", r.net(), r.iface));
        let ours = taken.iter().find(|t| super::overlaps(**t, (net, prefix))).map(|t| format!("{}/{}", t.0, t.1));
        clash.or(ours)
    };
    let (subnet, prefix) = match options.subnet {
        Some((net, prefix)) => {
            check_subnet(net, prefix)?;
            if let Some(other) = free(net, prefix) {
                return Err(Error::Invalid(format!("invalid pool request: {net}/{prefix} overlaps {other}")));
            }
            (net, prefix)
        }
        None => POOL
            .map(|n| Ipv4Addr::from(n << 8))
            .find(|net| free(*net, 24).is_none())
            .map(|net| (net, 24))
            .ok_or_else(|| Error::Invalid("no free subnet left in 10.92.0.0-10.99.255.0/24".into()))?,
    };
    let gateway = gateway(subnet, prefix, options.gateway)?;
    let network = Network {
        id: crate::container::new_id(),
        name: name.to_owned(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        subnet,
        prefix,
        gateway,
        internal: options.internal,
        labels: options.labels,
    };
    // Written first: the bridge is made only for a network that is defined.
    write(root, &network)?;
    if let Err(e) = network.bridge(root).ensure_locked() {
        let _ = std::fs::remove_file(definition(root, name));
        return Err(io(format!("make the bridge of network {name}"))(e));
    }
    Ok(network)
}

/// A subnet must be a network's first address, with room for a gateway and a container.
fn check_subnet(net: Ipv4Addr, prefix: u8) -> Result<(), Error> {
    if !(8..=30).contains(&prefix) {
        return Err(Error::Invalid(format!("invalid subnet {net}/{prefix}: the prefix length must be 8 to 30")));
    }
    if u32::from(net) & !super::mask(prefix) != 0 {
        let first = Ipv4Addr::from(u32::from(net) & super::mask(prefix));
        return Err(Error::Invalid(format!("invalid subnet {net}/{prefix}: did you mean {first}/{prefix}?")));
    }
    Ok(())
}

/// The gateway given (inside the subnet, not its first or last address), else its first host.
fn gateway(net: Ipv4Addr, prefix: u8, given: Option<Ipv4Addr>) -> Result<Ipv4Addr, Error> {
    let first = u32::from(net);
    let last = first | !super::mask(prefix);
    match given {
        None => Ok(Ipv4Addr::from(first + 1)),
        Some(g) if (first + 1..last).contains(&u32::from(g)) => Ok(g),
        Some(g) => Err(Error::Invalid(format!("invalid gateway {g}: not a host address of {net}/{prefix}"))),
    }
}

fn write(root: &Path, network: &Network) -> Result<(), Error> {
    let path = definition(root, &network.name);
    let tmp = dir(root).join(format!(".{}.json.tmp", network.name));
    let json = serde_json::to_vec_pretty(network).map_err(|e| io("encode the network")(e.into()))?;
    std::fs::write(&tmp, json).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("write {}", path.display())))
}

/// The store's user-defined networks, by name.
pub fn list(root: &Path) -> Result<Vec<Network>, Error> {
    let dir = dir(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("read {}", dir.display()))(e)),
    };
    let mut networks = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(format!("read {}", dir.display())))?.path();
        if path.extension().is_none_or(|e| e != "json")
            || path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let text = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
        let network = serde_json::from_slice(&text).map_err(|e| io(format!("read {}", path.display()))(e.into()))?;
        networks.push(network);
    }
    networks.sort_by(|a: &Network, b| a.name.cmp(&b.name));
    Ok(networks)
}

/// The network called `name`, or whose ID is or starts with it (one only).
pub fn find(root: &Path, name: &str) -> Result<Network, Error> {
    let networks = list(root)?;
    if let Some(n) = networks.iter().find(|n| n.name == name || n.id == name) {
        return Ok(n.clone());
    }
    let mut by_prefix = networks.iter().filter(|n| !name.is_empty() && n.id.starts_with(name));
    match (by_prefix.next(), by_prefix.next()) {
        (Some(n), None) => Ok(n.clone()),
        (Some(_), Some(_)) => {
            Err(Error::Invalid(format!("network {name} is ambiguous (more than one ID starts with it)")))
        }
        _ => Err(Error::NotFound(name.to_owned())),
    }
}

/// Removes `network`: its definition, then its bridge and rules, under the host's network
/// lock; refused while a container holds an address on it, as docker refuses a network with
/// active endpoints.
pub fn remove(root: &Path, network: &Network) -> Result<(), Error> {
    let path = definition(root, &network.name);
    network.bridge(root).remove(|| std::fs::remove_file(&path)).map_err(|e| match e.kind() {
        std::io::ErrorKind::ResourceBusy => {
            Error::Invalid(format!("error while removing network {}: {e}", network.name))
        }
        _ => io(format!("remove network {}", network.name))(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule_and_predefined_ones_are_refused() {
        for ok in ["ci", "a.b-c_d", "9net"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-x", "a b", "a/b", "é", "bridge", "host", "none"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn subnets_and_gateways_are_checked() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        check_subnet(ip("172.20.0.0"), 16).unwrap();
        let e = check_subnet(ip("172.20.1.0"), 16).unwrap_err().to_string();
        assert!(e.contains("did you mean 172.20.0.0/16"), "{e}");
        assert!(check_subnet(ip("10.0.0.0"), 31).is_err());
        assert_eq!(gateway(ip("172.20.0.0"), 16, None).unwrap(), ip("172.20.0.1"));
        assert_eq!(gateway(ip("172.20.0.0"), 16, Some(ip("172.20.9.9"))).unwrap(), ip("172.20.9.9"));
        assert!(gateway(ip("172.20.0.0"), 24, Some(ip("172.20.0.255"))).is_err(), "the broadcast address");
        assert!(gateway(ip("172.20.0.0"), 24, Some(ip("172.21.0.1"))).is_err(), "outside");
    }

    #[test]
    fn the_pool_is_10_92_to_10_99_in_24s() {
        assert_eq!(Ipv4Addr::from(*POOL.start() << 8), Ipv4Addr::new(10, 92, 0, 0));
        assert_eq!(Ipv4Addr::from(*POOL.end() << 8), Ipv4Addr::new(10, 99, 255, 0));
        assert!(super::super::overlaps((Ipv4Addr::new(10, 91, 0, 0), 16), (Ipv4Addr::new(10, 91, 3, 0), 24)));
        assert!(!super::super::overlaps((Ipv4Addr::new(10, 91, 2, 0), 24), (Ipv4Addr::new(10, 91, 3, 0), 24)));
    }

    #[test]
    fn a_network_is_found_by_name_id_or_unique_id_prefix() {
        let root = std::env::temp_dir().join(format!("berth-net-find-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(dir(&root)).unwrap();
        let net = |name: &str, id: &str| Network {
            id: id.to_owned(),
            name: name.to_owned(),
            created: String::new(),
            subnet: Ipv4Addr::new(10, 91, 0, 0),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 91, 0, 1),
            internal: false,
            labels: BTreeMap::new(),
        };
        write(&root, &net("ci", &format!("ab1{}", "0".repeat(61)))).unwrap();
        write(&root, &net("db", &format!("ab2{}", "0".repeat(61)))).unwrap();
        assert_eq!(find(&root, "db").unwrap().name, "db");
        assert_eq!(find(&root, "ab1").unwrap().name, "ci");
        assert!(matches!(find(&root, "ab"), Err(Error::Invalid(_))), "ambiguous");
        assert!(matches!(find(&root, "zz"), Err(Error::NotFound(_))));
        assert_eq!(list(&root).unwrap().len(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
