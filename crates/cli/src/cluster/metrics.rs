//! `osm metrics` (placeholder: filled in by the cluster-verbs work).

#[derive(clap::Subcommand, Debug)]
pub enum MetricsCommand {}

pub fn run(_global: &crate::Global, command: MetricsCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {}
}
