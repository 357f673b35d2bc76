//! docker's management groups, `berth container VERB` and `berth image VERB`: the same
//! commands as the top-level verbs (`container ls` is `ps`, `image rm` is `rmi`), for
//! scripts written against docker's longer spelling. Each group only maps its verbs onto
//! the top-level command they name; `container prune` is the one verb of its own.

use clap::{Args, Subcommand};

use super::{archive, build, container, exec, images, run, transfer};

/// Manage containers
#[derive(Debug, Args)]
pub struct ContainerCmd {
    #[command(subcommand)]
    pub command: ContainerSub,
}

/// `berth container VERB`.
#[derive(Debug, Subcommand)]
pub enum ContainerSub {
    #[command(visible_aliases = ["list", "ps"])]
    Ls(container::Ps),
    Run(Box<run::Run>),
    Create(Box<run::Create>),
    Start(container::Start),
    Stop(container::Stop),
    Restart(container::Restart),
    Kill(container::Kill),
    Pause(container::Pause),
    Unpause(container::Unpause),
    Wait(container::Wait),
    Logs(container::Logs),
    Exec(exec::Exec),
    Rm(container::Rm),
    Prune(container::Prune),
    Inspect(images::Inspect),
    Commit(container::Commit),
    Cp(container::Cp),
    Diff(container::Diff),
    Port(container::Port),
    Export(container::Export),
    Rename(container::Rename),
    Update(super::resources::Update),
    Stats(super::stats::Stats),
    Top(super::top::Top),
}

/// Manage images
#[derive(Debug, Args)]
pub struct ImageCmd {
    #[command(subcommand)]
    pub command: ImageSub,
}

/// `berth image VERB`.
#[derive(Debug, Subcommand)]
pub enum ImageSub {
    #[command(visible_aliases = ["list"])]
    Ls(images::Images),
    Build(Box<build::Build>),
    Tag(images::Tag),
    Rm(images::Rmi),
    Prune(images::Prune),
    Inspect(images::Inspect),
    History(images::History),
    Pull(transfer::Pull),
    Push(transfer::Push),
    Save(archive::Save),
    Load(archive::Load),
    Import(archive::Import),
}
