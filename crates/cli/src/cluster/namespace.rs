//! `osm namespace` (placeholder: filled in by the cluster-verbs work).

#[derive(clap::Subcommand, Debug)]
pub enum NamespaceCommand {}

pub fn run(_global: &crate::Global, command: NamespaceCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {}
}
