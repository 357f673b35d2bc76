//! docker's resource flags that `run`, `create` and `update` share, with docker's names,
//! short forms and value syntax (runner::resources says what each sets).

use anyhow::Context as _;
use clap::Args;

/// `--memory`, `--cpus`, `--cpu-shares`, `--cpuset-cpus`, `--pids-limit` and their kin.
#[derive(Debug, Clone, Default, Args)]
pub struct Resources {
    /// Memory limit (e.g. 64m, 1g; at least 6m; 0 for none)
    #[arg(short, long, value_name = "BYTES", value_parser = runner::cgroup::parse_size)]
    pub memory: Option<u64>,
    /// Memory plus swap (e.g. 1g; -1 for unlimited swap; default: twice --memory)
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true, value_parser = runner::resources::parse_swap)]
    pub memory_swap: Option<i64>,
    /// Soft memory limit, that the kernel reclaims towards when memory is short
    #[arg(long, value_name = "BYTES", value_parser = runner::cgroup::parse_size)]
    pub memory_reservation: Option<u64>,
    /// Number of CPUs (e.g. 0.5; 0 for no limit)
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// CPU shares: the weight against other containers (docker's default 1024)
    #[arg(short = 'c', long, value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// The CFS period in microseconds (with --cpu-quota)
    #[arg(long, value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CPU time per CFS period in microseconds (-1 for none)
    #[arg(long, value_name = "US", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPUs the container may run on (0-3, 0,1)
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may allocate from (0-3, 0,1)
    #[arg(long, value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (0 or -1 for no limit)
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = clap::value_parser!(i64).range(-1..))]
    pub pids_limit: Option<i64>,
}

impl Resources {
    /// The limits as given (a flag not given stays `None`; -1 processes is none, 0).
    pub fn limits(&self) -> runner::cgroup::Limits {
        runner::cgroup::Limits {
            memory: self.memory,
            memory_swap: self.memory_swap,
            memory_reservation: self.memory_reservation,
            pids: self.pids_limit.map(|p| p.max(0) as u64),
            cpus: self.cpus,
            cpu_shares: self.cpu_shares,
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            ..Default::default()
        }
    }
}

/// Update the resource limits or restart policy of one or more containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth update --memory 256m --memory-swap 512m web\n  berth update --cpus 1.5 \
                        --pids-limit -1 web worker\n  berth update --restart on-failure:3 job")]
pub struct Update {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
    #[command(flatten)]
    resources: Resources,
    /// Restart policy when the container exits: no, always, unless-stopped, on-failure[:MAX-RETRIES]
    #[arg(long, value_name = "POLICY")]
    restart: Option<runner::container::restart::Policy>,
}

impl Update {
    /// Records each container's new limits and policy, and sets a running one's limits at
    /// once; prints each name as given.
    pub fn run(self, root: &std::path::Path) -> anyhow::Result<()> {
        let change = runner::container::update::Change { limits: self.resources.limits(), restart: self.restart };
        if change.limits == runner::cgroup::Limits::default() && change.restart.is_none() {
            anyhow::bail!("you must provide one or more flags when using this command");
        }
        for warning in runner::cgroup::unsupported(&change.limits) {
            eprintln!("WARNING: {warning}");
        }
        super::container::each(&self.containers, |what| {
            let c = runner::container::find(root, what)?;
            runner::container::update::update(root, &c, &change)
                .with_context(|| format!("Cannot update container {what}"))?;
            Ok(true)
        })
    }
}
