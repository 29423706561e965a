//! `osm proxy` (placeholder: filled in by the cluster-verbs work).

#[derive(clap::Subcommand, Debug)]
pub enum ProxyCommand {}

pub fn run(_global: &crate::Global, command: ProxyCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {}
}
