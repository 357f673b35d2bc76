//! `berth`: build, store, push and run OCI images without a daemon.
//!
//! This crate is only the command line: clap parses arguments into the structs in
//! [`commands`], each of which calls into the library crates (`oci`, `builder`,
//! `registry`, `runner`) and prints. Errors travel up as `anyhow` and are printed as one
//! line: `berth: <what failed>: <why>`, exit status 1 (125 for `run`, as docker's).

mod commands;
mod format;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Global options every command shares.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Build, store and run OCI images: a daemonless builder, a registry and a runner"
)]
#[command(
    after_help = "Examples:\n  berth import rootfs.tar busybox:latest\n  berth images\n  berth save -o app.tar --format oci app:latest\n  berth registry serve --addr 127.0.0.1:5000"
)]
struct Cli {
    /// The local image store [env: BERTH_ROOT] [default: /var/lib/berth as root, else $XDG_DATA_HOME/berth or ~/.local/share/berth]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Build(Box<commands::build::Build>),
    Images(commands::images::Images),
    Tag(commands::images::Tag),
    Rmi(commands::images::Rmi),
    Inspect(commands::images::Inspect),
    History(commands::images::History),
    Prune(commands::images::Prune),
    Save(commands::archive::Save),
    Load(commands::archive::Load),
    Import(commands::archive::Import),
    Pull(commands::transfer::Pull),
    Push(commands::transfer::Push),
    Login(commands::transfer::Login),
    Manifest(commands::manifest::ManifestCmd),
    Logout(commands::transfer::Logout),
    Registry(commands::registry::RegistryCmd),
    Run(Box<commands::run::Run>),
    Create(Box<commands::run::Create>),
    Ps(commands::container::Ps),
    Logs(commands::container::Logs),
    Exec(commands::exec::Exec),
    Stop(commands::container::Stop),
    Kill(commands::container::Kill),
    Pause(commands::container::Pause),
    Unpause(commands::container::Unpause),
    Wait(commands::container::Wait),
    Start(commands::container::Start),
    Restart(commands::container::Restart),
    Diff(commands::container::Diff),
    Rm(commands::container::Rm),
    Commit(commands::container::Commit),
    Cp(commands::container::Cp),
    Port(commands::container::Port),
    Export(commands::container::Export),
    Rename(commands::container::Rename),
    Update(commands::resources::Update),
    Stats(commands::stats::Stats),
    Top(commands::top::Top),
    #[command(name = "__supervise", hide = true)]
    Supervise(commands::container::Supervise),
    Network(commands::network::NetworkCmd),
    Volume(commands::volume::VolumeCmd),
    System(commands::system::SystemCmd),
    Builder(commands::buildcache::BuilderCmd),
    Version(commands::info::Version),
    Info(commands::info::Info),
    Container(commands::groups::ContainerCmd),
    Image(commands::groups::ImageCmd),
    /// `container prune`, which has no top-level verb (docker's `prune` is the image one).
    #[command(skip)]
    ContainerPrune(commands::container::Prune),
}

impl Command {
    /// A group's verb as the top-level command it names: `container ls` is `ps`, `image rm`
    /// is `rmi`, and `container inspect` is `inspect --type container`.
    fn ungrouped(self) -> Command {
        use commands::groups::{ContainerSub as C, ImageSub as I};
        match self {
            Command::Container(g) => match g.command {
                C::Ls(c) => Command::Ps(c),
                C::Run(c) => Command::Run(c),
                C::Create(c) => Command::Create(c),
                C::Start(c) => Command::Start(c),
                C::Stop(c) => Command::Stop(c),
                C::Restart(c) => Command::Restart(c),
                C::Kill(c) => Command::Kill(c),
                C::Pause(c) => Command::Pause(c),
                C::Unpause(c) => Command::Unpause(c),
                C::Wait(c) => Command::Wait(c),
                C::Logs(c) => Command::Logs(c),
                C::Exec(c) => Command::Exec(c),
                C::Rm(c) => Command::Rm(c),
                C::Prune(c) => Command::ContainerPrune(c),
                C::Inspect(c) => Command::Inspect(c.only("container")),
                C::Commit(c) => Command::Commit(c),
                C::Cp(c) => Command::Cp(c),
                C::Diff(c) => Command::Diff(c),
                C::Port(c) => Command::Port(c),
                C::Export(c) => Command::Export(c),
                C::Rename(c) => Command::Rename(c),
                C::Update(c) => Command::Update(c),
                C::Stats(c) => Command::Stats(c),
                C::Top(c) => Command::Top(c),
            },
            Command::Image(g) => match g.command {
                I::Ls(c) => Command::Images(c),
                I::Build(c) => Command::Build(c),
                I::Tag(c) => Command::Tag(c),
                I::Rm(c) => Command::Rmi(c),
                I::Prune(c) => Command::Prune(c),
                I::Inspect(c) => Command::Inspect(c.only("image")),
                I::History(c) => Command::History(c),
                I::Pull(c) => Command::Pull(c),
                I::Push(c) => Command::Push(c),
                I::Save(c) => Command::Save(c),
                I::Load(c) => Command::Load(c),
                I::Import(c) => Command::Import(c),
            },
            other => other,
        }
    }

    /// The command touches snapshots or containers, whose files belong to many users: a
    /// plain user runs it in a user namespace. Talking to registries alone does not.
    fn needs_ids(&self) -> bool {
        !matches!(self, Command::Registry(_) | Command::Login(_) | Command::Logout(_) | Command::Version(_))
    }
}

/// The status `berth run` exits with when berth itself fails (a bad flag, a missing image),
/// as docker's 125: scripts tell it from the container's own exit code. Every command's
/// usage errors exit with it too, as docker's do.
const BERTH_ERROR: u8 = 125;

fn main() -> ExitCode {
    let mut cli = match boolish_flags(Cli::command()).try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => {
            let _printed = e.print();
            // As docker's CLI: a usage error (an unknown flag, a missing argument) is 125 for
            // every command; `--help` and `--version` are not errors.
            return if e.use_stderr() { ExitCode::from(BERTH_ERROR) } else { ExitCode::from(e.exit_code() as u8) };
        }
    };
    cli.command = cli.command.ungrouped();
    if let Command::Build(b) = &cli.command {
        // Still the only thread: the environment may change.
        b.source_date_epoch_to_env();
    }
    // docker's: `run` fails with 125, `create` (like the other commands) with 1.
    let failure = if matches!(cli.command, Command::Run(_)) { ExitCode::from(BERTH_ERROR) } else { ExitCode::FAILURE };
    // default_root reads BERTH_ROOT (an empty value counts as unset).
    let root = cli.root.clone().filter(|r| !r.as_os_str().is_empty()).unwrap_or_else(oci::ImageStore::default_root);
    if cli.command.needs_ids() {
        // A plain user's berth goes on in a user namespace of its own (docs/rootless.md);
        // exec joins the one its container was started in.
        let join = match &cli.command {
            Command::Exec(e) if runner::userns::outside() => e.supervisor(&root),
            _ => None,
        };
        if let Err(e) = runner::userns::enter_rootless(&root, join) {
            eprintln!("berth: {e}");
            return failure;
        }
    }
    if let Command::Version(v) = cli.command {
        // Only about the binary: no store is opened or swept.
        return finish(v.run(), failure);
    }
    commands::lifecycle::sweep(&root);
    let result = match cli.command {
        Command::Build(c) => c.run(&root),
        Command::Images(c) => c.run(&root),
        Command::Tag(c) => c.run(&root),
        Command::Rmi(c) => c.run(&root),
        Command::Inspect(c) => c.run(&root),
        Command::History(c) => c.run(&root),
        Command::Prune(c) => c.run(&root),
        Command::Save(c) => c.run(&root),
        Command::Load(c) => c.run(&root),
        Command::Import(c) => c.run(&root),
        Command::Pull(c) => c.run(&root),
        Command::Push(c) => c.run(&root),
        Command::Login(c) => c.run(&root),
        Command::Manifest(c) => c.run(&root),
        Command::Logout(c) => c.run(&root),
        Command::Registry(c) => c.run(&root),
        Command::Run(c) => c.run(&root),
        Command::Create(c) => c.run(&root),
        Command::Ps(c) => c.run(&root),
        Command::Logs(c) => c.run(&root),
        Command::Exec(c) => c.run(&root),
        Command::Stop(c) => c.run(&root),
        Command::Kill(c) => c.run(&root),
        Command::Pause(c) => c.run(&root),
        Command::Unpause(c) => c.run(&root),
        Command::Wait(c) => c.run(&root),
        Command::Start(c) => c.run(&root),
        Command::Restart(c) => c.run(&root),
        Command::Diff(c) => c.run(&root),
        Command::Supervise(c) => c.run(&root),
        Command::Rm(c) => c.run(&root),
        Command::Commit(c) => c.run(&root),
        Command::Cp(c) => c.run(&root),
        Command::Port(c) => c.run(&root),
        Command::Export(c) => c.run(&root),
        Command::Rename(c) => c.run(&root),
        Command::Update(c) => c.run(&root),
        Command::Stats(c) => c.run(&root),
        Command::Top(c) => c.run(&root),
        Command::Network(c) => c.run(&root),
        Command::Volume(c) => c.run(&root),
        Command::System(c) => c.run(&root),
        Command::Builder(c) => c.run(&root),
        Command::ContainerPrune(c) => c.run(&root),
        Command::Info(c) => c.run(&root),
        Command::Version(_) => unreachable!("run above"),
        Command::Container(_) | Command::Image(_) => unreachable!("ungrouped above"),
    };
    finish(result, failure)
}

/// Every on/off flag of every command also takes a value, as docker's (pflag's) do:
/// `--rm=false`, `-t=$TTY`, `-d=true`; a bare `--rm` or `-dit` still means true. The value
/// must follow `=`, so a flag never eats the next word (`--rm busybox`).
fn boolish_flags(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_subcommands(boolish_flags);
    let flags: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| matches!(a.get_action(), clap::ArgAction::SetTrue))
        .map(|a| a.get_id().clone())
        .collect();
    flags.into_iter().fold(cmd, |cmd, id| {
        cmd.mut_arg(id, |a| {
            a.action(clap::ArgAction::Set)
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .default_value("false")
                .hide_default_value(true)
                .hide_possible_values(true)
                .value_name("true|false")
                .value_parser(clap::builder::BoolishValueParser::new())
        })
    })
}

/// The exit status of a command's result, its error printed as one line.
fn finish(result: anyhow::Result<()>, failure: ExitCode) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`berth images | head`) is not a failure worth a message.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("berth: {e:#}");
            failure
        }
    }
}
