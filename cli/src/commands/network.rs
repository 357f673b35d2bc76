//! `berth network create|ls|inspect|rm|prune`: user-defined networks, as docker's verbs and
//! output; the networks themselves are `runner::network::user`'s.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use runner::network::user::{self, Network};
use serde_json::{json, Value};

use crate::format;

/// Manage networks
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth network create ci\n  berth run -d --network ci --name db postgres:16\n  berth run --rm --network ci app:test ./selftest --db-host db\n  berth network rm ci"
)]
pub struct NetworkCmd {
    #[command(subcommand)]
    command: NetworkSub,
}

#[derive(Debug, Subcommand)]
enum NetworkSub {
    Create(Create),
    #[command(visible_alias = "list")]
    Ls(Ls),
    Inspect(InspectNet),
    #[command(visible_alias = "remove")]
    Rm(Rm),
    Prune(PruneNet),
}

impl NetworkCmd {
    /// Runs the subcommand.
    pub fn run(self, root: &Path) -> Result<()> {
        match self.command {
            NetworkSub::Create(c) => c.run(root),
            NetworkSub::Ls(c) => c.run(root),
            NetworkSub::Inspect(c) => c.run(root),
            NetworkSub::Rm(c) => c.run(root),
            NetworkSub::Prune(c) => c.run(root),
        }
    }
}

/// Create a network: a bridge of its own, where containers reach each other by name
#[derive(Debug, Args)]
pub struct Create {
    /// The network's name
    name: String,
    /// Driver (bridge only)
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form, e.g. 172.28.0.0/16 (default: a free /24 of 10.92.0.0-10.99.255.0)
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,
    /// The bridge's address, the containers' gateway (default: the subnet's first)
    #[arg(long, value_name = "IP")]
    gateway: Option<Ipv4Addr>,
    /// No route out: containers reach only each other
    #[arg(long)]
    internal: bool,
    /// Metadata, KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
}

impl Create {
    /// Makes the network and prints its ID.
    fn run(self, root: &Path) -> Result<()> {
        if self.driver != "bridge" {
            bail!("network driver {:?} is not supported: berth has bridge networks only", self.driver);
        }
        let subnet = self.subnet.as_deref().map(parse_cidr).transpose()?;
        let labels = self
            .label
            .iter()
            .map(|l| match l.split_once('=') {
                Some(("", _)) => bail!("invalid label {l:?}: the name is empty"),
                Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
                None => Ok((l.clone(), String::new())),
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let options = user::Options { subnet, gateway: self.gateway, internal: self.internal, labels };
        let network = user::create(root, &self.name, options)?;
        println!("{}", network.id);
        Ok(())
    }
}

/// `A.B.C.D/N`.
fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (ip, prefix) = s.split_once('/').with_context(|| format!("invalid subnet {s:?}: expected A.B.C.D/N"))?;
    let ip = ip.parse().with_context(|| format!("invalid subnet {s:?}: {ip:?} is not an IPv4 address"))?;
    let prefix =
        prefix.parse().ok().filter(|p| *p <= 32).with_context(|| format!("invalid subnet {s:?}: bad prefix length"))?;
    Ok((ip, prefix))
}

/// List networks
#[derive(Debug, Args)]
pub struct Ls {
    /// Only the IDs
    #[arg(short, long)]
    quiet: bool,
    /// Full IDs
    #[arg(long)]
    no_trunc: bool,
    /// name=NAME, id=ID, driver=DRIVER, label=KEY[=VALUE], type=custom|builtin (repeatable)
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// table, json, or a Go template per row ({{.Name}} {{.ID}} {{.Driver}} {{.Scope}})
    #[arg(long, default_value = "table")]
    format: String,
}

/// `network ls --format 'table ...'`'s column titles, docker's.
const LS_TITLES: [(&str, &str); 7] = [
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("CreatedAt", "CREATED AT"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
];

/// A network as `ls` and `inspect` see it: a predefined one or the store's.
struct Entry {
    id: String,
    name: String,
    driver: &'static str,
    network: Option<Network>,
}

/// The predefined networks (IDs made from their names, stable), then the store's.
fn entries(root: &Path) -> Result<Vec<Entry>> {
    let predefined = user::PREDEFINED.iter().map(|name| Entry {
        id: oci::Digest::of(format!("berth network {name}").as_bytes()).hex().to_owned(),
        name: (*name).to_owned(),
        driver: match *name {
            "none" => "null",
            "host" => "host",
            _ => "bridge",
        },
        network: None,
    });
    let users = user::list(root)?.into_iter().map(|n| Entry {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: "bridge",
        network: Some(n),
    });
    let mut all: Vec<Entry> = predefined.chain(users).collect();
    // docker's order: by name.
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

impl Entry {
    /// Whether the entry passes `filter` (`KEY=VALUE`, docker's `network ls` filters).
    fn matches(&self, filter: &str) -> Result<bool> {
        let (key, value) = filter.split_once('=').with_context(|| format!("bad filter {filter:?}: KEY=VALUE"))?;
        let labels = self.network.as_ref().map(|n| n.labels.clone()).unwrap_or_default();
        Ok(match key {
            "name" => self.name.contains(value),
            "id" => self.id.starts_with(value),
            "driver" => self.driver == value,
            "type" if value == "custom" => self.network.is_some(),
            "type" if value == "builtin" => self.network.is_none(),
            "type" => bail!("invalid filter 'type={value}': custom or builtin"),
            "label" => match value.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
                None => labels.contains_key(value),
            },
            _ => bail!("invalid filter {key:?}: name, id, driver, label or type"),
        })
    }

    /// The row's fields, docker's names (strings, as docker's list formatting gives them).
    fn row(&self, no_trunc: bool) -> Value {
        let id = if no_trunc { self.id.clone() } else { self.id[..12].to_owned() };
        let (created, internal, labels) = match &self.network {
            Some(n) => {
                let created = chrono::DateTime::parse_from_rfc3339(&n.created)
                    .map(|t| format::go_time(t.with_timezone(&chrono::Utc)))
                    .unwrap_or_default();
                let labels = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
                (created, n.internal, labels)
            }
            None => (String::new(), false, String::new()),
        };
        json!({"ID": id, "Name": self.name, "Driver": self.driver, "Scope": "local", "CreatedAt": created,
            "Internal": internal.to_string(), "IPv6": "false", "Labels": labels})
    }
}

impl Ls {
    fn run(self, root: &Path) -> Result<()> {
        let list_format = format::ListFormat::parse(&self.format)?;
        let mut shown = Vec::new();
        'entries: for e in entries(root)? {
            for f in &self.filter {
                if !e.matches(f)? {
                    continue 'entries;
                }
            }
            shown.push(e);
        }
        let rows: Vec<Value> = shown.iter().map(|e| e.row(self.no_trunc)).collect();
        let mut out = std::io::stdout().lock();
        if self.quiet {
            for r in &rows {
                writeln!(out, "{}", r["ID"].as_str().unwrap_or_default())?;
            }
            return Ok(());
        }
        if !matches!(list_format, format::ListFormat::Default) {
            write!(out, "{}", list_format.render(&LS_TITLES, &rows)?)?;
            return Ok(());
        }
        let mut table = vec![["NETWORK ID", "NAME", "DRIVER", "SCOPE"].map(String::from).to_vec()];
        for r in &rows {
            table.push(
                ["ID", "Name", "Driver", "Scope"]
                    .iter()
                    .map(|k| r[*k].as_str().unwrap_or_default().to_owned())
                    .collect(),
            );
        }
        write!(out, "{}", format::table(&table))?;
        Ok(())
    }
}

/// Display detailed information on one or more networks
#[derive(Debug, Args)]
pub struct InspectNet {
    /// Networks, by name or ID
    #[arg(required = true, value_name = "NETWORK")]
    networks: Vec<String>,
    /// A Go template per network instead of the JSON ({{.IPAM.Config}}, {{range .Containers}}...)
    #[arg(short, long)]
    format: Option<String>,
}

impl InspectNet {
    fn run(self, root: &Path) -> Result<()> {
        let tpl = self.format.as_deref().map(format::Template::parse).transpose()?;
        let found = self.networks.iter().map(|what| inspect_json(root, what)).collect();
        super::print_inspected(found, tpl.as_ref())
    }
}

/// `network inspect` of `what` (a name or an ID, or a unique start of one), docker's shape:
/// its IPAM configuration, options, labels and the running containers on it.
pub fn inspect_json(root: &Path, what: &str) -> Result<Value> {
    let entries = entries(root)?;
    let found = entries.iter().find(|e| e.name == what || e.id == what);
    let found =
        found.or_else(|| entries.iter().find(|e| e.network.is_some() && !what.is_empty() && e.id.starts_with(what)));
    let Some(e) = found else { bail!("network {what} not found") };
    let (created, config, internal, labels, bridge) = match &e.network {
        Some(n) => (
            n.created.clone(),
            json!([{"Subnet": format!("{}/{}", n.subnet, n.prefix), "Gateway": n.gateway.to_string()}]),
            n.internal,
            n.labels.clone(),
            // docker's user-defined networks show no options unless made with some.
            String::new(),
        ),
        None if e.name == "bridge" => (
            String::new(),
            json!([{"Subnet": format!("{}/{}", runner::network::Bridge::default_bridge().subnet(), runner::network::PREFIX),
                "Gateway": runner::network::GATEWAY.to_string()}]),
            false,
            BTreeMap::new(),
            runner::network::BRIDGE.to_owned(),
        ),
        None => (String::new(), json!([]), false, BTreeMap::new(), String::new()),
    };
    let options = if bridge.is_empty() { json!({}) } else { json!({"com.docker.network.bridge.name": bridge}) };
    Ok(json!({
        "Name": e.name, "Id": e.id, "Created": created, "Scope": "local", "Driver": e.driver,
        "EnableIPv6": false, "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": internal, "Attachable": false, "Ingress": false, "ConfigFrom": {"Network": ""},
        "ConfigOnly": false, "Containers": containers_on(root, &e.name)?, "Options": options, "Labels": labels,
    }))
}

/// The running containers on network `name`, by ID, as docker's `Containers`.
fn containers_on(root: &Path, name: &str) -> Result<Value> {
    let mut map = serde_json::Map::new();
    for c in runner::container::list(root)? {
        let state = c.state()?;
        if c.config.network != name || state.status != runner::container::Status::Running {
            continue;
        }
        let address = match (&state.ip, state.gateway()) {
            (Some(ip), Some((_, prefix))) => format!("{ip}/{prefix}"),
            _ => String::new(),
        };
        map.insert(
            c.config.id.clone(),
            json!({"Name": c.config.name, "EndpointID": "", "MacAddress": "", "IPv4Address": address, "IPv6Address": ""}),
        );
    }
    Ok(Value::Object(map))
}

/// Remove one or more networks
#[derive(Debug, Args)]
pub struct Rm {
    /// Networks, by name or ID
    #[arg(required = true, value_name = "NETWORK")]
    networks: Vec<String>,
    /// Do not fail when a network does not exist
    #[arg(short, long)]
    force: bool,
}

impl Rm {
    /// Removes each network, printing its name as given; a failure is told and the others
    /// are still removed, as docker does.
    fn run(self, root: &Path) -> Result<()> {
        let mut last = None;
        for what in &self.networks {
            let removed = (|| -> Result<()> {
                if user::PREDEFINED.contains(&what.as_str()) {
                    bail!("{what} is a pre-defined network and cannot be removed");
                }
                let network = match user::find(root, what) {
                    Err(user::Error::NotFound(_)) if self.force => return Ok(()),
                    found => found?,
                };
                user::remove(root, &network)?;
                println!("{what}");
                Ok(())
            })();
            if let Err(e) = removed {
                if let Some(e) = last.replace(e) {
                    eprintln!("berth: {e:#}");
                }
            }
        }
        last.map_or(Ok(()), Err)
    }
}

/// Removes every user-defined network no running container is on and `filters` let go:
/// their names. One that cannot be removed is reported and kept.
pub fn prune_unused(root: &Path, filters: &[super::prune_filter::PruneFilter]) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for network in user::list(root)? {
        if !super::prune_filter::PruneFilter::prunes(filters, &network.created, &network.labels) {
            continue;
        }
        match user::remove(root, &network) {
            Ok(()) => deleted.push(network.name),
            // In use: kept, as docker keeps it.
            Err(user::Error::Invalid(_)) => {}
            Err(e) => eprintln!("berth: {e}"),
        }
    }
    Ok(deleted)
}

/// Remove all networks that no container uses
#[derive(Debug, Args)]
pub struct PruneNet {
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
}

impl PruneNet {
    /// Removes every user-defined network that no running container is on, as docker's
    /// prune does (a stopped container's network goes too); asks first unless `-f`, reading
    /// the answer from stdin as docker does (`echo y | berth network prune`).
    fn run(self, root: &Path) -> Result<()> {
        if !self.force
            && !super::confirm("WARNING! This will remove all custom networks not used by at least one container.")?
        {
            return Ok(());
        }
        let deleted = prune_unused(root, &[])?;
        if !deleted.is_empty() {
            println!("Deleted Networks:\n{}\n", deleted.join("\n"));
        }
        Ok(())
    }
}
