//! `osm support` (placeholder: filled in by the cluster-verbs work).

#[derive(clap::Subcommand, Debug)]
pub enum SupportCommand {}

pub fn run(_global: &crate::Global, command: SupportCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {}
}
