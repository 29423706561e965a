//! `osm policy` (placeholder: filled in by the cluster-verbs work).

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {}

pub fn run(_global: &crate::Global, command: PolicyCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {}
}
